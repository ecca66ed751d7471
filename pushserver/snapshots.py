"""What a client is told a task looks like now: memory, else the result backend, else the event log.

One snapshot serves both ways a client asks — the ``subscribe`` ack
(sockets.py) and ``GET /tasks/{id}`` (http.py) — and the reconciliation after
the receiver (re)connects, which reads the result backend the same way. What
the result backend or the event log knows is merged into the store like any
event (through ``Ingest.merge``), so watchers of the task hear of it too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from .backend import ResultBackend
from .eventlog import EventLog
from .metrics import Metrics
from .policy import ForwardingPolicy
from .state import TaskState, TaskStore

log = logging.getLogger("pushserver.snapshots")

#: Merges events into the store, publishing what changed; returns how many changed (``Ingest.merge``).
Merge = Callable[[Iterable[dict[str, Any]]], int]


class MemoryView:
    """The tasks in memory as clients may see them: the forwarding policy applied to the store's TaskStates."""

    def __init__(self, store: TaskStore, policy: ForwardingPolicy) -> None:
        self.store = store
        self.policy = policy

    def of(self, task: TaskState) -> dict[str, Any]:
        """A TaskState as clients may see it."""
        return self.policy.task(task.to_dict(with_args=self.policy.args))

    def visible(self, task_id: str) -> dict[str, Any] | None:
        """The task's current TaskState as clients may see it, from memory only (None if not there)."""
        task = self.store.get(task_id)
        return self.of(task) if task is not None else None


class Snapshots:
    """Reads a task's current state through the three tiers, and corrects watched tasks after a reconnect."""

    def __init__(
        self, memory: MemoryView, backend: ResultBackend, eventlog: EventLog | None, merge: Merge, metrics: Metrics
    ) -> None:
        self.memory = memory
        self.store = memory.store
        self.backend = backend
        self.eventlog = eventlog
        self.merge = merge
        self.metrics = metrics

    async def snapshot(self, task_id: str) -> dict[str, Any]:
        """The current TaskState of a task: memory, else the result backend, else the event log, else PENDING."""
        task = self.store.get(task_id)
        if task is not None and task.ready:
            self.metrics.snapshots.labels("memory").inc()
            return self.memory.of(task)
        source = "memory"
        event = await self.backend.lookup(task_id)
        if event is not None:
            self.merge([event])
            source = "backend"
        elif task is None and self.eventlog is not None:
            # A replica that restarted while the task runs: rebuild from history.
            if self.merge(await self.eventlog.latest_events(task_id)):
                source = "eventlog"
        task = self.store.get(task_id)
        if task is not None:
            self.metrics.snapshots.labels(source).inc()
            return self.memory.of(task)
        self.metrics.snapshots.labels("pending").inc()
        return self.memory.of(TaskState(task_id))

    async def reconcile(self, watched: Iterable[str]) -> int:
        """Correct every watched unfinished task from the result backend; return how many changed.

        Run once the receiver (re)connects: Redis pub/sub keeps nothing for a
        disconnected subscriber, so what finished meanwhile is only there.
        """
        todo = [t for t in watched if not _is_ready(self.store.get(t))]
        changed = self.merge((await self.backend.lookup_many(todo)).values())
        self.metrics.reconciled.inc(changed)
        if todo:
            log.info("reconciled %d watched tasks from the result backend: %d changed", len(todo), changed)
        return changed


def _is_ready(task: TaskState | None) -> bool:
    return task is not None and task.ready
