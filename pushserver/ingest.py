"""Where events go once received: counted, merged into the store, recorded, and handed on as changes.

The receiver delivers batches of decoded Celery events to ``Ingest.ingest``.
Task events are merged into the TaskStore (state.py: order-independent,
idempotent); each visible change of a task someone watches goes to the
Coalescer (coalesce.py), which decides when it leaves through the fanout
(fanout.py). Every event and change also goes to the watched workflows
(workflow_watch.py: a chain's later steps join by ``root_id``, a member's
change updates its workflows), which send their ``workflow:update`` once per
batch. Every task event is also queued for the event log. Under
``--forward-results json`` a ``task-succeeded`` event first waits for its
value from the result backend (results.py) and then takes the same way.

Events read back from the result backend or the event log (snapshots.py)
come in through ``Ingest.merge``: merged and published the same way, but not
counted as received nor recorded again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from .backend import ResultReader
from .coalesce import Coalescer
from .eventlog import EventLog
from .metrics import Metrics
from .receiver import Batch
from .results import ResultResolver
from .state import EVENT_TO_STATE, TaskStore, is_task_event
from .subscriptions import Subscriptions
from .workflow_watch import WorkflowWatch

_WORKER_EVENTS = frozenset({"worker-online", "worker-heartbeat", "worker-offline"})


class Ingest:
    """The receiver's consumer: merges each batch into the store and publishes what changed for watched tasks."""

    def __init__(
        self,
        store: TaskStore,
        subscriptions: Subscriptions,
        coalescer: Coalescer,
        metrics: Metrics,
        eventlog: EventLog | None = None,
        *,
        results_from: ResultReader | None = None,
        max_result_bytes: int = 0,
        workflows: WorkflowWatch | None = None,
    ) -> None:
        self.store = store
        self.workflows = workflows
        self.subscriptions = subscriptions
        self.coalescer = coalescer
        self.metrics = metrics
        self.eventlog = eventlog
        # --forward-results json: task-succeeded events wait for their value from the result backend
        # (results.py), then come back through _merge_and_record like the rest of their batch.
        self.results: ResultResolver | None = None
        if results_from is not None:
            self.results = ResultResolver(results_from, self._merge_and_record, metrics, max_result_bytes)

    def ingest(self, batch: Batch) -> None:
        """Merge a batch of decoded Celery events from the receiver, publish what changed, and record it."""
        # One counter update per event type and batch, not per event: a Prometheus update
        # per event costs a good share of the merge (docs/benchmarks.md).
        by_type = Counter(event.get("type") for event in batch)
        for event_type, n in by_type.items():
            self.metrics.events[_type_label(event_type)].inc(n)
        task_events = [event for event in batch if is_task_event(event)]
        observed: list[dict[str, Any]] = batch
        if self.results is not None:
            task_events = self.results.split(task_events)  # SUCCESS events come back via _merge_and_record
            observed = [event for event in batch if not is_task_event(event)] + task_events
        self._merge_and_record(task_events, observed)

    def _merge_and_record(
        self, task_events: list[dict[str, Any]], observed: list[dict[str, Any]] | None = None
    ) -> None:
        """Merge task events, let the task-level metrics see them (``observed``: worker events too), record them."""
        self._merge_task_events(task_events)
        self.metrics.task_level.observe(task_events if observed is None else observed, self.store)
        if self.eventlog is not None:
            self.eventlog.record(task_events)

    def merge(self, events: Iterable[dict[str, Any]]) -> int:
        """Merge events read back from elsewhere (result backend, event log), publishing each change; count them."""
        return self._merge_task_events([event for event in events if is_task_event(event)])

    def _merge_task_events(self, events: list[dict[str, Any]]) -> int:
        # Shared by both doors, for events already known to be task events
        # (the receiver's are checked once, in ingest, not twice on the hot path).
        workflows = self.workflows
        changed = 0
        for event in events:
            if workflows is not None:
                # Every event, watched or not: a chain subscribed to later finds its
                # steps by the root_id its earlier events carried (RootIndex).
                workflows.observe(event)
            change = self.store.merge_event(event)
            if change is not None:
                changed += 1
                if self.subscriptions.is_watched(change.task.task_id):
                    self.coalescer.publish(change)
                if workflows is not None:
                    workflows.changed(change.task)
        if workflows is not None:
            workflows.flush()  # each workflow moved by the batch is sent once
        self.metrics.tasks.set(len(self.store))
        return changed


def _type_label(event_type: object) -> str:
    """A metrics label for an event type; anything unknown shares one, so forged types cannot grow /metrics."""
    if isinstance(event_type, str) and (event_type in EVENT_TO_STATE or event_type in _WORKER_EVENTS):
        return event_type
    return "other"
