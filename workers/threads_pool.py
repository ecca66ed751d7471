"""A worker bootstep that makes the threads pool pick up the next task promptly."""

from __future__ import annotations

from typing import Any

from celery import bootsteps
from celery.concurrency.thread import TaskPool as ThreadTaskPool

# How often the event loop wakes up on its own (see ThreadsPoolWakeup).
WAKEUP_INTERVAL = 0.05


def _wake_up() -> None:
    """Do nothing: firing a timer is what ends the event loop's poll."""


class ThreadsPoolWakeup(bootsteps.StartStopStep):
    """Wake the event loop every 50 ms under the threads pool; a no-op for other pools.

    With ``acks_late`` and prefetch 1, a task acknowledged from a pool thread
    does not wake the event loop, which only asks Redis for the next message
    at its next timer, up to ~2 s later: 40 tasks of 5 ms took 9.9 s on 4
    threads. A timer every 50 ms bounds that wait. (The threads pool's lost
    task events are fixed by ``pushserver.worker.enable_events``.)
    """

    requires = ("celery.worker.consumer.events:Events",)
    name = "workers.ThreadsPoolWakeup"

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self._timer_entry: Any = None

    def start(self, c: Any) -> None:
        if not isinstance(c.pool, ThreadTaskPool) or c.hub is None:
            return
        # A reconnect may have cleared the hub's timers: start afresh.
        self.stop(c)
        self._timer_entry = c.hub.call_repeatedly(WAKEUP_INTERVAL, _wake_up)

    def stop(self, c: Any) -> None:
        if self._timer_entry is not None:
            self._timer_entry.cancel()
            self._timer_entry = None
