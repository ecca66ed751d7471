"""Engine.IO's keep-alive pings for every connection from one timer, instead of a sleeping task per connection.

python-engineio sends each connection a PING every ``ping_interval`` from a task of the connection's own that
sleeps the interval through (``AsyncSocket.schedule_ping`` → ``_send_ping``), made anew on every PONG: 1.4 KB
per idle connection, and at 18 790 connections 750 tasks, coroutines, futures and timer handles made and
dropped a second, which the collector's young generations then scan (docs/benchmarks.md, "Idle connections
at the open-files limit"). Every connection waits the same interval, so their pings fall due in the order
they were scheduled: one deque and one timer serve them all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

from engineio import packet as eio_packet

log = logging.getLogger(__name__)

#: Pings due within this much of the timer are sent with it: at most ~100 wake-ups a second for any number
#: of connections, against a client that waits ping_interval + ping_timeout (45 s by default) for one.
SLACK = 0.01


class PingSchedule:
    """When each connection's next PING is due, and the one timer that sends them."""

    def __init__(self, interval: float, slack: float = SLACK) -> None:
        self.interval = interval
        self.slack = slack
        self._due: deque[tuple[float, Any]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._due)

    def add(self, sock: Any) -> None:
        """Send engineio socket ``sock`` a PING one interval from now, as its ``_send_ping`` task would."""
        loop = asyncio.get_running_loop()
        self._due.append((loop.time() + self.interval, sock))
        if self._timer is None:
            self._timer = loop.call_at(self._due[0][0], self._fire)

    def close(self) -> None:
        """Stop sending pings (the server is shutting down)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due.clear()

    def _fire(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        due = self._due
        try:
            while due and due[0][0] <= now + self.slack:
                _, sock = due.popleft()
                if not sock.closing and not sock.closed:
                    self._ping(sock)
        finally:
            # Rescheduled whatever happened: a timer that stopped would let every connection time out.
            self._timer = loop.call_at(max(due[0][0], now + self.slack), self._fire) if due else None

    @staticmethod
    def _ping(sock: Any) -> None:
        # _send_ping's body after its sleep. Its send() first checks the ping timeout, which cannot have
        # passed with last_ping just set; the queue is the connection's SendQueue, whose put never waits.
        try:
            sock.last_ping = time.time()
            sock.queue.put_nowait(eio_packet.Packet(eio_packet.PING))
        except Exception:
            log.exception("keep-alive ping for Engine.IO session %s failed", getattr(sock, "sid", "?"))
