"""Prometheus metrics of one server, kept in their own registry so several servers can live in one process."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from .task_metrics import TaskMetrics


class Children:
    """A one-label counter's children, each asked of prometheus-client once: ``children[value]``.

    ``labels()`` converts and looks up its values under a lock on every call;
    the per-event and per-update paths take the child from this dict instead.
    Only for values from a fixed set (event types, update kinds).
    """

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self._children: dict[str, Counter] = {}

    def __getitem__(self, value: str) -> Counter:
        child = self._children.get(value)
        if child is None:
            child = self._children[value] = self.counter.labels(value)
        return child


class Metrics:
    """The server's counters, gauges and histograms, and prometheus-client's ``process_*`` figures."""

    def __init__(self, max_tasks: int = 100_000, max_task_names: int = 200) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # Resident memory, CPU time and open file descriptors of this process (Linux /proc).
        ProcessCollector(registry=r)
        #: Task-level metrics (runtime, outcome, running, workers) from the same events, by task name.
        self.task_level = TaskMetrics(max_names=max_task_names, max_running=max_tasks)
        r.register(self.task_level)
        self.events = Children(
            Counter("pushserver_events_ingested_total", "Celery events received, by event type", ["type"], registry=r)
        )
        self.updates = Children(
            Counter(
                "pushserver_updates_emitted_total",
                "task:update messages emitted to rooms, by kind",
                ["kind"],
                registry=r,
            )
        )
        self.coalesced = Counter(
            "pushserver_progress_coalesced_total",
            "Progress updates replaced by a newer one before they were sent",
            registry=r,
        )
        self.clients = Gauge("pushserver_connected_clients", "Connected Socket.IO clients", registry=r)
        self.subscriptions = Gauge("pushserver_subscriptions", "Active task subscriptions", registry=r)
        self.tasks = Gauge("pushserver_tasks_in_memory", "Tasks held in the in-memory store", registry=r)
        capacity = Gauge(
            "pushserver_tasks_capacity",
            "Tasks the in-memory store holds before it evicts the least recently updated (--max-tasks)",
            registry=r,
        )
        capacity.set(max_tasks)
        self.receiver_connected = Gauge(
            "pushserver_receiver_connected", "1 while the event receiver is connected to the broker", registry=r
        )
        self.reconnects = Counter(
            "pushserver_receiver_reconnects_total", "Times the event receiver reconnected to the broker", registry=r
        )
        self.reconciled = Counter(
            "pushserver_reconciled_total",
            "Watched tasks whose state was corrected from the result backend after a receiver reconnect",
            registry=r,
        )
        self.quiet_checked = Counter(
            "pushserver_quiet_tasks_checked_total",
            "Watched unfinished tasks read from the result backend because no event had mentioned them for a while",
            registry=r,
        )
        self.quiet_reconciled = Counter(
            "pushserver_quiet_tasks_reconciled_total",
            "Quiet tasks whose state the result backend changed (their events were lost)",
            registry=r,
        )
        self.backend_reads = Counter(
            "pushserver_backend_reads_total",
            "Result-backend round trips, by kind (batch: one MGET for many tasks, reconciling;"
            " snapshot: one MGET for the snapshot lookups made meanwhile; single: one task,"
            " backends without MGET; result: the values of SUCCESS notices, --forward-results json)",
            ["kind"],
            registry=r,
        )
        self.refused = Counter(
            "pushserver_requests_refused_total",
            "Subscribe calls and HTTP requests refused, by error code",
            ["code"],
            registry=r,
        )
        self.messages_refused = Counter(
            "pushserver_client_messages_refused_total",
            "Client packets and sessions refused before any handler ran, by reason (event_name, binary, rate,"
            " flood, in_flight, unread, malformed, connections, connections_per_address)",
            ["reason"],
            registry=r,
        )
        self.expired = Counter(
            "pushserver_subscriptions_expired_total",
            "Subscriptions ended because their token expired (exp + leeway)",
            registry=r,
        )
        self.snapshots = Counter(
            "pushserver_snapshots_total", "Snapshots served, by where they came from", ["source"], registry=r
        )
        self.progress_shed = Counter(
            "pushserver_progress_shed_total",
            "Progress updates not queued to a client that is behind (it gets the newest once it catches up)",
            registry=r,
        )
        self.slow_consumers = Counter(
            "pushserver_slow_consumer_disconnects_total",
            "Clients disconnected for leaving too many updates unread",
            registry=r,
        )
        self.results = Counter(
            "pushserver_results_total",
            "SUCCESS results completed from the result backend, by outcome: json, too_large,"
            " no_value (repr kept), failed (backend error or timeout: repr kept), skipped"
            " (backend recently failing: repr kept)",
            ["outcome"],
            registry=r,
        )
        # Known label values start at 0, so rates and alerts have a series before the first one happens.
        for kind in ("transition", "progress"):
            self.updates[kind]
        for code in ("bad_request", "unauthorized", "forbidden", "too_many"):
            self.refused.labels(code)
        self.latency = Histogram(
            "pushserver_event_to_emit_seconds",
            "Time from a worker's event timestamp to its emit to subscribers",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=r,
        )

    def watch_store(self, evicted: Callable[[], float]) -> None:
        """Expose the store's count of tasks evicted to stay within --max-tasks."""
        self.registry.register(
            _CounterFunction(
                "pushserver_tasks_evicted",
                "Tasks evicted from the in-memory store (least recently updated first) to stay within --max-tasks",
                evicted,
            )
        )

    def watch_receiver(self, malformed: Callable[[], float], shed: Callable[[], float] | None = None) -> None:
        """Expose the receiver's counts of events it could not decode, and of progress events it shed."""
        gauge = Gauge(
            "pushserver_events_malformed",
            "Events dropped since start because they could not be decoded",
            registry=self.registry,
        )
        gauge.set_function(malformed)
        if shed is not None:
            shed_gauge = Gauge(
                "pushserver_events_shed",
                "task-progress events shed since start because the receiver"
                " was far behind Redis (state transitions are never shed)",
                registry=self.registry,
            )
            shed_gauge.set_function(shed)

    def watch_eventlog(self, queued: Callable[[], float], queued_bytes: Callable[[], float] | None = None) -> None:
        """Add the event log's metrics (only when the log is on)."""
        r = self.registry
        self.eventlog_written = Counter(
            "pushserver_eventlog_written_total", "Events written to the MongoDB event log", registry=r
        )
        self.eventlog_duplicates = Counter(
            "pushserver_eventlog_duplicates_total",
            "Events already in the log (another replica or a replay)",
            registry=r,
        )
        self.eventlog_dropped = Counter(
            "pushserver_eventlog_dropped_total",
            "Events not logged, by kind: progress and transition (shed from a"
            " full queue), refused (MongoDB refused the document), invalid"
            " (it could not be encoded)",
            ["kind"],
            registry=r,
        )
        self.eventlog_sanitised = Counter(
            "pushserver_eventlog_sanitised_total",
            "Events logged with values MongoDB cannot hold rewritten, or texts cut",
            registry=r,
        )
        for kind in ("transition", "progress", "refused", "invalid"):
            self.eventlog_dropped.labels(kind)
        self.eventlog_up = Gauge("pushserver_eventlog_up", "1 while MongoDB takes event-log writes", registry=r)
        self.eventlog_up.set(1)
        self.eventlog_writer_running = Gauge(
            "pushserver_eventlog_writer_running",
            "1 while the event log's writer runs (0: stopped, nothing more is written until a restart)",
            registry=r,
        )
        self.eventlog_writer_running.set(1)
        queue = Gauge("pushserver_eventlog_queued", "Events waiting to be written to MongoDB", registry=r)
        queue.set_function(queued)
        if queued_bytes is not None:
            size = Gauge(
                "pushserver_eventlog_queued_bytes",
                "Approximate bytes of the events waiting to be written (bounded by --event-log-queue-bytes)",
                registry=r,
            )
            size.set_function(queued_bytes)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class _CounterFunction(Collector):
    """A counter whose value another object keeps (prometheus-client's Counter has no set_function)."""

    def __init__(self, name: str, documentation: str, value: Callable[[], float]) -> None:
        self.name, self.documentation, self.value = name, documentation, value

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.documentation, value=self.value())
