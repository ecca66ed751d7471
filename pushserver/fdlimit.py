"""The process's open-files limit, which caps the connections one server can hold.

Every client connection is a file descriptor, and so is everything else the
server has open (the listening socket, Redis and result-backend connections,
the receiver's pipes, log files). Linux starts processes with a small *soft*
limit (often 1 024) under a larger *hard* one that any process may raise its
soft limit to, as servers do at start; beyond the hard limit only the
administrator can go (``ulimit -Hn``, systemd's ``LimitNOFILE=``, Docker's
``--ulimit nofile=``).
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("pushserver")

#: Descriptors kept for what is not a client connection (Redis, the backend, the receiver, logs, the HTTP
#: API's own requests), so the room for clients is the limit minus this.
RESERVED_FDS = 100
#: The kernel's ceiling for any open-files limit, read when the hard limit is "unlimited".
NR_OPEN = Path("/proc/sys/fs/nr_open")
DEFAULT_NR_OPEN = 1_048_576


@dataclass(frozen=True)
class OpenFilesLimit:
    """The soft open-files limit found at start (``before``), the one in force now (``soft``), and the hard one."""

    before: int
    soft: int
    hard: int

    @property
    def connections(self) -> int:
        """Client connections the limit leaves room for (RESERVED_FDS kept for everything else)."""
        return max(0, self.soft - RESERVED_FDS)


def _ceiling(hard: int) -> int:
    """What the soft limit can be raised to: the hard limit, or the kernel's nr_open when that is unlimited."""
    if hard != resource.RLIM_INFINITY:
        return hard
    try:
        return int(NR_OPEN.read_text())
    except (OSError, ValueError):
        return DEFAULT_NR_OPEN


def raise_open_files_limit() -> OpenFilesLimit:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (no privilege needed); the limits after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    before = soft
    target = _ceiling(hard)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return OpenFilesLimit(before, soft if soft != resource.RLIM_INFINITY else target, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as exc:
        log.warning("open files limit: could not raise the soft limit %d to %d (%s)", soft, target, exc)
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return OpenFilesLimit(before, soft, hard)


def describe(limit: OpenFilesLimit) -> str:
    """The limit in force, whether it was raised, and the connections it leaves room for."""
    raised = f" (raised from {limit.before:,})" if limit.soft > limit.before else ""
    capped = limit.soft < limit.hard and limit.hard != resource.RLIM_INFINITY
    return f"open files limit {limit.soft:,}{raised}: room for about {limit.connections:,} client connections" + (
        f"; hard limit {limit.hard:,}" if capped else ""
    )


def log_open_files_limit(limit: OpenFilesLimit, max_connections: int) -> None:
    """One line at start: the limit (INFO), or a warning when ``--max-connections`` asks for more than it allows."""
    if max_connections > limit.connections:
        log.warning(
            "--max-connections %d is more than the open files limit allows: %s; raise the hard limit"
            " (ulimit -Hn, systemd LimitNOFILE=, docker --ulimit nofile=)",
            max_connections,
            describe(limit),
        )
    else:
        log.info("%s", describe(limit))
