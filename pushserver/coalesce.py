"""Which changes become updates, and when: transitions at once, progress at most ``--progress-hz`` per task.

A state transition (or a task reaching a ready state) is sent the moment it is
merged and cancels any progress still waiting. A progress-only change is sent
at once if the task's last progress went out at least ``1 / progress_hz``
seconds ago; otherwise one timer per task sends the newest progress when that
interval is up, and every change in between is counted as coalesced. So a
client always ends up with the newest state, and a chatty task cannot flood it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from .fanout import FanoutManager
from .metrics import Metrics
from .snapshots import MemoryView
from .state import Change, TaskState
from .subscriptions import Subscriptions


class Coalescer:
    """Turns each visible change of a watched task into a ``task:update`` on the fanout, progress rate-limited."""

    def __init__(
        self,
        memory: MemoryView,
        subscriptions: Subscriptions,
        fanout: FanoutManager,
        metrics: Metrics,
        progress_hz: float,
    ) -> None:
        self.memory = memory
        self.subscriptions = subscriptions
        self.fanout = fanout
        self.metrics = metrics
        self.progress_interval = 1.0 / progress_hz
        self._last_progress_emit: dict[str, float] = {}
        self._pending_progress: dict[str, asyncio.TimerHandle] = {}

    def publish(self, change: Change) -> None:
        """Send a merged change to the task's watchers: now for a transition, rate-limited for progress."""
        task_id = change.task.task_id
        if change.transition or change.task.ready:
            handle = self._pending_progress.pop(task_id, None)
            if handle is not None:
                handle.cancel()
            self._emit(change.task, "transition")
            return
        if task_id in self._pending_progress:
            self.metrics.coalesced.inc()  # the pending flush will send the newest
            return
        loop = asyncio.get_running_loop()
        due = self._last_progress_emit.get(task_id, float("-inf")) + self.progress_interval
        now = loop.time()
        if now >= due:
            self._last_progress_emit[task_id] = now
            self._emit(change.task, "progress")
        else:
            self._pending_progress[task_id] = loop.call_at(due, self._flush_progress, task_id)

    def forget(self, task_ids: Iterable[str]) -> None:
        """Drop the timers and rate state of tasks nobody watches any more."""
        for task_id in task_ids:
            self._last_progress_emit.pop(task_id, None)
            handle = self._pending_progress.pop(task_id, None)
            if handle is not None:
                handle.cancel()

    def _flush_progress(self, task_id: str) -> None:
        self._pending_progress.pop(task_id, None)
        task = self.memory.store.get(task_id)
        # The last watcher may have left while the timer ran.
        if task is not None and self.subscriptions.is_watched(task_id):
            self._last_progress_emit[task_id] = asyncio.get_running_loop().time()
            self._emit(task, "progress")

    def _emit(self, task: TaskState, kind: str) -> None:
        payload = self.memory.of(task)
        if self.fanout.send(task.task_id, payload, progress=kind == "progress"):
            self.metrics.updates[kind].inc()
            updated = payload.get("updated_at")
            if updated:
                self.metrics.latency.observe(max(0.0, time.time() - updated))
