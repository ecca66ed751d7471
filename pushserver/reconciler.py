"""Reconciling what went quiet: watched, unfinished tasks that no event has mentioned for a while are read from
the result backend, and what it knows is merged like any event.

Events can be lost while every process stays connected: a worker started
without ``-E``, events switched off with ``celery control disable_events``, a
worker that stops sending them for the tasks it holds after a broker
reconnect (celery/celery#8541), a pub/sub message Redis dropped. The result
backend still gets the outcome; this asks it.

The schedule adapts to how long a task has been quiet: the first read comes
``after`` seconds into the silence, the next when the silence has doubled,
and so on, at least every ``max_interval`` seconds. Any event for the task
starts the count again, so a task whose events flow is never read. Once a
``tick`` (1 s) the due tasks, most overdue first and at most ``batch`` of
them, are read together: one round trip (Redis ``MGET``) whatever their
number, so the cost stays at most one backend round trip a second.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("pushserver.reconciler")

#: Seconds between two log lines about quiet tasks found changed (a worker without events finds some every tick).
LOG_EVERY = 60.0

#: What ``marker_of`` returns for a task that needs no more reading (finished, or no longer watched).
SETTLED = object()

#: Watched tasks looked at between two yields to the event loop. A tick looks at every watched task; in one go,
#: 19 000 of them held the loop 100-190 ms each second, and every update waited behind it (docs/benchmarks.md,
#: idle connections at the open-files limit).
SCAN_CHUNK = 500


@dataclass(slots=True)
class _Quiet:
    """One watched task's silence: what it looked like, since when, and when to read it next."""

    marker: Hashable
    since: float
    due: float


class QuietReconciler:
    """Reads the result backend for watched unfinished tasks that went quiet, on an adaptive, bounded schedule.

    ``watched()`` yields ``(task_id, marker)`` for every watched unfinished
    task, where the marker changes whenever an event changes the task (its
    last event's stamp will do); ``marker_of(task_id)`` is the same for one
    task, or ``SETTLED``. ``read(ids)`` returns the events the backend knows
    (one round trip), ``merge(events)`` merges and pushes them.
    """

    def __init__(
        self,
        watched: Callable[[], Iterable[tuple[str, Hashable]]],
        marker_of: Callable[[str], Hashable],
        read: Callable[[list[str]], Awaitable[dict[str, dict[str, Any]]]],
        merge: Callable[[Iterable[dict[str, Any]]], int],
        *,
        after: float = 5.0,
        max_interval: float = 60.0,
        batch: int = 1000,
        tick: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        on_checked: Callable[[int, int], None] | None = None,
    ) -> None:
        self.watched = watched
        self.marker_of = marker_of
        self.read = read
        self.merge = merge
        self.after = after
        self.max_interval = max_interval
        self.batch = batch
        self.tick = tick
        self.clock = clock
        self.on_checked = on_checked  # (tasks read, tasks changed), after each read
        self._quiet: dict[str, _Quiet] = {}
        self._task: asyncio.Task[None] | None = None
        self._unlogged = 0  # changes found since the last log line (at most one a minute)
        self._logged_at = float("-inf")

    def interval(self, quiet_for: float) -> float:
        """Seconds until the next read of a task quiet for ``quiet_for`` seconds: the silence doubles."""
        return min(self.max_interval, max(self.after, quiet_for))

    async def due(self, now: float) -> list[str]:
        """Refresh what is quiet from ``watched()`` and return the tasks to read now, most overdue first.

        ``watched()`` is read lazily, SCAN_CHUNK tasks at a time with the event loop let run in between.
        """
        quiet = self._quiet
        current: dict[str, _Quiet] = {}
        # The ``batch`` most overdue, kept as the scan goes (a heap, the least overdue on top): sorting every
        # due task at the end held the loop ~6 ms at 22 000 of them, once a second (docs/benchmarks.md).
        chosen: list[tuple[float, str]] = []
        batch = self.batch
        for n, (task_id, marker) in enumerate(self.watched(), 1):
            entry = quiet.get(task_id)
            if entry is None or entry.marker != marker:
                entry = _Quiet(marker, now, now + self.after)  # heard from (or new): the silence starts now
            current[task_id] = entry
            if entry.due <= now:
                if len(chosen) < batch:
                    heapq.heappush(chosen, (-entry.due, task_id))
                elif -entry.due > chosen[0][0]:
                    heapq.heapreplace(chosen, (-entry.due, task_id))
            if n % SCAN_CHUNK == 0:
                await asyncio.sleep(0)
        self._quiet = current
        chosen.sort(reverse=True)  # most overdue first
        return [task_id for _, task_id in chosen]

    async def check(self) -> int:
        """One tick: read the due tasks in one batch, merge what the backend knows; return how many changed."""
        now = self.clock()
        ids = await self.due(now)
        if not ids:
            return 0
        found = await self.read(ids)
        changed = self.merge(found.values()) if found else 0
        # Reschedule on what the task looks like after the merge: a STARTED
        # read from the backend is not an event from the worker, and must
        # not restart the silence.
        after_read = self.clock()
        for task_id in ids:
            entry = self._quiet.get(task_id)
            if entry is None:
                continue
            marker = self.marker_of(task_id)
            if marker is SETTLED:
                del self._quiet[task_id]
                continue
            if marker != entry.marker and task_id not in found:
                entry.since = after_read  # an event came in while we read: the task is not quiet
            entry.marker = marker
            entry.due = after_read + self.interval(after_read - entry.since)
        if self.on_checked is not None:
            self.on_checked(len(ids), changed)
        self._unlogged += changed
        if self._unlogged and after_read - self._logged_at >= LOG_EVERY:
            log.info(
                "reconciled %d quiet task(s) from the result backend: their events were lost (a worker"
                " without -E, or events switched off?)",
                self._unlogged,
            )
            self._unlogged, self._logged_at = 0, after_read
        return changed

    def start(self) -> None:
        """Check every ``tick`` seconds on the running loop until ``stop``."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop checking."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            try:
                await self.check()
            except Exception:  # noqa: BLE001 - one failed tick must not end reconciliation
                log.exception("quiet-task reconciliation failed; trying again next tick")
