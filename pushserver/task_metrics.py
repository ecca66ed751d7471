"""Task-level metrics from the events the server already receives: runtimes, outcomes, running tasks, workers.

The labels are task *names* and worker hostnames, never task ids, and both
sets are capped (``--metrics-task-names``): a name or hostname met once the
cap is reached is counted under ``other``, and each event so folded is
counted, so forged events cannot grow ``/metrics`` without bound.

The hot path only updates plain dicts once per interesting event; the
Prometheus families are built when ``/metrics`` is scraped (a custom
collector, prometheus-client's hook for this).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from .state import finite_number

#: Upper bounds (seconds) of the runtime histogram: from a quick task to an hour-long job.
RUNTIME_BUCKETS = (0.05, 0.25, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
#: Longest hostname label (task names are already cut to this length by the store).
MAX_LABEL_LENGTH = 255
#: The label a name or hostname gets once the cap is reached.
OTHER = "other"
#: The name label of a task whose task-sent / task-received this server never saw.
UNKNOWN = "unknown"
#: Celery's HEARTBEAT_EXPIRE_WINDOW (celery.events.state): a worker is offline 2 x its heartbeat
#: interval after its last heartbeat.
HEARTBEAT_EXPIRE_FACTOR = 2.0
DEFAULT_HEARTBEAT_FREQ = 2.0  # seconds, Celery's worker_heartbeat default
#: An offline worker is reported (as 0) this long, then forgotten, so autoscaled hostnames do not pile up.
FORGET_OFFLINE_AFTER = 900.0

_FINISHED = {
    "task-succeeded": "SUCCESS",
    "task-failed": "FAILURE",
    "task-revoked": "REVOKED",
    "task-rejected": "REJECTED",
}
_WORKER_EVENTS = frozenset({"worker-online", "worker-heartbeat", "worker-offline"})
_OBSERVED = frozenset({"task-started", "task-retried", *_FINISHED, *_WORKER_EVENTS})


class _Task(Protocol):
    def value(self, name: str, default: Any = None) -> Any: ...


class TaskLookup(Protocol):
    """Where names come from: the store that already merged the batch (task-succeeded carries no name)."""

    def get(self, task_id: str) -> _Task | None: ...


class TaskMetrics(Collector):
    """Counts, per task name, finished tasks and runtimes; tracks running tasks and worker liveness."""

    def __init__(self, max_names: int = 200, max_running: int = 100_000, clock: Any = time.monotonic) -> None:
        if max_names < 1:
            raise ValueError("max_names must be at least 1")
        self.max_names = max_names
        self.max_running = max_running
        self._clock = clock
        self._names: dict[str, str] = {}  # raw task name -> its label (itself), at most max_names
        self._hosts: dict[str, str] = {}  # raw hostname -> its label
        self._finished: dict[tuple[str, str], int] = {}
        self._runtime_counts: dict[str, list[int]] = {}  # per name: count in each bucket (+Inf last)
        self._runtime_sums: dict[str, float] = {}
        self._running: dict[str, tuple[str, str]] = {}  # task id -> (name label, host label)
        self._worker_expires: dict[str, float] = {}  # host label -> monotonic time it goes offline
        self.folded = {"name": 0, "worker": 0}

    # -- the hot path --------------------------------------------------------

    def observe(self, batch: list[dict[str, Any]], tasks: TaskLookup) -> None:
        """Account for one batch of decoded Celery events, after ``tasks`` merged it."""
        now = None
        running = self._running
        for event in batch:
            kind = event.get("type")
            if kind not in _OBSERVED:
                continue  # most events: sent, received, progress
            if kind in _FINISHED or kind == "task-retried":
                task_id = event.get("uuid")
                started = running.pop(task_id, None) if isinstance(task_id, str) else None
                if kind == "task-retried" or (kind == "task-rejected" and event.get("requeue")):
                    continue  # the task goes back to the queue: not finished
                # Known at start, unless task-started overtook task-received: then ask the store again.
                name = started[0] if started is not None and started[0] != UNKNOWN else self._name_of(task_id, tasks)
                key = (name, _FINISHED[kind])
                self._finished[key] = self._finished.get(key, 0) + 1
                if kind == "task-succeeded":
                    self._observe_runtime(name, event.get("runtime"))
            elif kind == "task-started":
                task_id = event.get("uuid")
                if isinstance(task_id, str):
                    running[task_id] = (self._name_of(task_id, tasks), self._host_label(event.get("hostname")))
                    if len(running) > self.max_running:
                        del running[next(iter(running))]  # the oldest: most likely lost with its worker
            else:
                if now is None:
                    now = self._clock()
                self._worker_event(kind, event, now)

    def _name_of(self, task_id: Any, tasks: TaskLookup) -> str:
        task = tasks.get(task_id) if isinstance(task_id, str) else None
        raw = task.value("name") if task is not None else None
        if not isinstance(raw, str) or not raw:
            return UNKNOWN
        label = self._names.get(raw)
        if label is None:
            if len(self._names) >= self.max_names:
                self.folded["name"] += 1
                return OTHER
            label = self._names[raw] = raw
        return label

    def _host_label(self, raw: Any) -> str:
        if not isinstance(raw, str) or not raw:
            return UNKNOWN
        raw = raw[:MAX_LABEL_LENGTH]  # a forged megabyte hostname must not become a megabyte label
        label = self._hosts.get(raw)
        if label is None:
            if len(self._hosts) >= self.max_names:
                self.folded["worker"] += 1
                return OTHER
            label = self._hosts[raw] = raw
        return label

    def _observe_runtime(self, name: str, runtime: Any) -> None:
        runtime = finite_number(runtime)
        if runtime is None or runtime < 0:
            return  # a forged or missing runtime: the outcome still counts, the histogram does not
        counts = self._runtime_counts.get(name)
        if counts is None:
            counts = self._runtime_counts[name] = [0] * (len(RUNTIME_BUCKETS) + 1)
            self._runtime_sums[name] = 0.0
        counts[bisect_left(RUNTIME_BUCKETS, runtime)] += 1
        self._runtime_sums[name] += runtime

    def _worker_event(self, kind: str, event: Mapping[str, Any], now: float) -> None:
        raw = event.get("hostname")
        if not isinstance(raw, str) or not raw:
            return  # no worker to speak of
        host = self._host_label(raw)
        if kind == "worker-offline":
            self._worker_expires[host] = now
            return
        if kind == "worker-online":  # a (re)started worker runs nothing from before: tasks lost to a crash end here
            for task_id in [t for t, (_, h) in self._running.items() if h == host]:
                del self._running[task_id]
        freq = event.get("freq")
        if isinstance(freq, bool) or not isinstance(freq, (int, float)) or not 0.1 <= freq <= 3600:
            freq = DEFAULT_HEARTBEAT_FREQ
        self._worker_expires[host] = now + HEARTBEAT_EXPIRE_FACTOR * freq

    # -- the scrape ------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        """The Prometheus families, built from the counts (prometheus-client calls this on each scrape)."""
        now = self._clock()
        for host, expires in list(self._worker_expires.items()):
            if now - expires > FORGET_OFFLINE_AFTER:
                del self._worker_expires[host]
                self._hosts.pop(host, None)  # frees its slot under the cap
        offline = {host for host, expires in self._worker_expires.items() if expires <= now}
        if offline:  # a worker that stopped heartbeating runs nothing any more
            for task_id in [t for t, (_, host) in self._running.items() if host in offline]:
                del self._running[task_id]

        workers = GaugeMetricFamily(
            "pushserver_worker_online",
            "1 while a Celery worker heartbeats (offline 2 x its heartbeat interval after"
            " the last one, or at once on worker-offline)",
            labels=["worker"],
        )
        for host, expires in sorted(self._worker_expires.items()):
            workers.add_metric([host], 1.0 if expires > now else 0.0)
        yield workers

        running_by_name: dict[str, int] = dict.fromkeys(self._names.values(), 0)
        for name, _ in self._running.values():
            running_by_name[name] = running_by_name.get(name, 0) + 1
        running = GaugeMetricFamily(
            "pushserver_tasks_running", "Tasks started and not yet finished, by task name", labels=["name"]
        )
        for name, n in sorted(running_by_name.items()):
            running.add_metric([name], float(n))
        yield running

        finished = CounterMetricFamily(
            "pushserver_tasks_finished", "Tasks finished, by task name and final state", labels=["name", "state"]
        )
        for (name, state), n in sorted(self._finished.items()):
            finished.add_metric([name, state], float(n))
        yield finished

        runtime = HistogramMetricFamily(
            "pushserver_task_runtime_seconds",
            "Runtime of succeeded tasks as the worker reports it, by task name",
            labels=["name"],
        )
        bounds = [*(_le(b) for b in RUNTIME_BUCKETS), "+Inf"]
        for name, counts in sorted(self._runtime_counts.items()):
            cumulative, total = [], 0
            for bound, n in zip(bounds, counts):
                total += n
                cumulative.append((bound, float(total)))
            runtime.add_metric([name], cumulative, self._runtime_sums[name])
        yield runtime

        folded = CounterMetricFamily(
            "pushserver_task_metric_labels_folded",
            "Events counted under the 'other' label because --metrics-task-names distinct"
            " task names (label=name) or worker hostnames (label=worker) were already"
            " in use",
            labels=["label"],
        )
        for label, n in self.folded.items():
            folded.add_metric([label], float(n))
        yield folded


def _le(bound: float) -> str:
    """A bucket bound as prometheus-client writes it (``1.0``, ``0.25``)."""
    return repr(float(bound))
