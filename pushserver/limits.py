"""Per-connection and per-address limits: a token bucket for subscribe calls and a connection counter."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(slots=True)
class TokenBucket:
    """Allows ``rate`` calls per second on average, with bursts up to ``burst``."""

    rate: float
    burst: float
    tokens: float = field(default=-1.0)
    updated: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.burst

    def take(self, now: float | None = None) -> bool:
        """Spend one token if there is one; return whether the call may proceed."""
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class ConnectionCounter:
    """Counts open connections per client address and refuses past ``limit`` (0: no limit)."""

    def __init__(self, limit: int = 0) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    def acquire(self, address: str) -> bool:
        """Count a new connection from ``address``; False (and nothing counted) when over the limit."""
        count = self._open.get(address, 0)
        if self.limit and count >= self.limit:
            return False
        self._open[address] = count + 1
        return True

    def release(self, address: str) -> None:
        count = self._open.get(address, 0) - 1
        if count > 0:
            self._open[address] = count
        else:
            self._open.pop(address, None)


def client_address(remote: str | None, forwarded_for: str | None, trust_proxy: bool) -> str:
    """The client's address: the peer, or — behind a proxy we trust — the last X-Forwarded-For hop."""
    if trust_proxy and forwarded_for:
        # The right-most entry is the one our own proxy appended; anything
        # left of it was written by the client and proves nothing.
        hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
        if hops:
            return hops[-1]
    return remote or "unknown"
