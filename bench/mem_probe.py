"""Run ``pushserver`` with memory experiments switched on, alone or under bench/connections.py.

    PUSHSERVER_PROBE=arena2 .venv/bin/python -m bench.mem_probe connections --steps 1000 10000
    PUSHSERVER_PROBE=tracemalloc .venv/bin/python bench/mem_probe.py serve --insecure ...

``connections`` runs bench/connections.py (its arguments follow) with the
server started through this script; ``serve ...`` is ``pushserver serve ...``.
``PUSHSERVER_PROBE`` (a comma list) says what to change in the server
process, whose code is otherwise untouched:

- ``uvloop``: run on uvloop's event loop rather than asyncio's (through
  asyncio's event loop policy).
- ``tracemalloc``: trace allocations (25 frames); on SIGUSR1 the server
  writes a snapshot to ``$PUSHSERVER_PROBE_DIR/snap-<n>.pickle`` (default
  /tmp), for bench/mem_report.py.
- ``arena1`` / ``arena2``: glibc malloc with at most 1 (2) arenas
  (``mallopt(M_ARENA_MAX)``, as MALLOC_ARENA_MAX).
- ``malloc-trim``: glibc ``malloc_trim(0)`` on SIGUSR2.

To compare two versions of the server's code (say, before and after a
change to pushserver/eioserver.py), measure each revision as it is:
``python -m bench.run --only connections --server-rev REV``.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from pathlib import Path

PROBES = {p.strip() for p in os.environ.get("PUSHSERVER_PROBE", "").split(",") if p.strip()}
M_ARENA_MAX = -8


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL("libc.so.6")


def install() -> None:
    """Apply PUSHSERVER_PROBE to this (server) process."""
    if PROBES & {"arena1", "arena2"}:
        _libc().mallopt(M_ARENA_MAX, 1 if "arena1" in PROBES else 2)
    if "tracemalloc" in PROBES:
        import tracemalloc

        tracemalloc.start(25)
        count = [0]
        directory = os.environ.get("PUSHSERVER_PROBE_DIR", "/tmp")

        def dump(*_: object) -> None:
            count[0] += 1
            tracemalloc.take_snapshot().dump(os.path.join(directory, f"snap-{count[0]}.pickle"))

        signal.signal(signal.SIGUSR1, dump)
    if "malloc-trim" in PROBES:
        signal.signal(signal.SIGUSR2, lambda *_: _libc().malloc_trim(0))
    if "uvloop" in PROBES:
        import asyncio

        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def connections(argv: list[str]) -> int:
    """bench/connections.py, its server started through this script."""
    from bench import connections as conn

    return conn.main(argv, server_wrapper=[str(Path(__file__).resolve())])


if __name__ == "__main__":
    if sys.argv[1:2] == ["connections"]:
        sys.exit(connections(sys.argv[2:]))
    install()
    from pushserver.cli import main

    sys.argv[0] = "pushserver"
    sys.exit(main())
