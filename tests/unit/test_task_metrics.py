"""Task-level metrics: what a batch of events does to the exported families, and the caps on label sets."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pushserver.state import TaskStore
from pushserver.task_metrics import FORGET_OFFLINE_AFTER, TaskMetrics


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def samples(metrics: TaskMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(metrics)
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def feed(metrics: TaskMetrics, store: TaskStore, events: list[dict]) -> None:
    """What Ingest.ingest does: merge the batch, then account for it."""
    for event in events:
        if event["type"].startswith("task-"):
            store.merge_event(event)
    metrics.observe(events, store)


def task(uuid: str, name: str, end: str = "task-succeeded", runtime: float = 0.3, host: str = "w1@h") -> list[dict]:
    return [
        {"type": "task-received", "uuid": uuid, "name": name, "hostname": host, "timestamp": 1.0},
        {"type": "task-started", "uuid": uuid, "hostname": host, "timestamp": 2.0},
        {"type": end, "uuid": uuid, "hostname": host, "timestamp": 3.0, "runtime": runtime},
    ]


def test_finished_runtime_and_running_by_name() -> None:
    store, metrics = TaskStore(), TaskMetrics()
    feed(metrics, store, task("a", "app.add") + task("b", "app.add", runtime=7.0) + task("c", "app.add", "task-failed"))
    feed(metrics, store, task("d", "app.slow")[:2])
    s = samples(metrics)
    assert s[("pushserver_tasks_finished_total", (("name", "app.add"), ("state", "SUCCESS")))] == 2
    assert s[("pushserver_tasks_finished_total", (("name", "app.add"), ("state", "FAILURE")))] == 1
    assert s[("pushserver_task_runtime_seconds_count", (("name", "app.add"),))] == 2
    assert s[("pushserver_task_runtime_seconds_sum", (("name", "app.add"),))] == 7.3
    assert s[("pushserver_task_runtime_seconds_bucket", (("le", "0.25"), ("name", "app.add")))] == 0
    assert s[("pushserver_task_runtime_seconds_bucket", (("le", "1.0"), ("name", "app.add")))] == 1
    assert s[("pushserver_task_runtime_seconds_bucket", (("le", "+Inf"), ("name", "app.add")))] == 2
    assert s[("pushserver_tasks_running", (("name", "app.slow"),))] == 1
    assert s[("pushserver_tasks_running", (("name", "app.add"),))] == 0
    feed(metrics, store, task("d", "app.slow")[2:])
    assert samples(metrics)[("pushserver_tasks_running", (("name", "app.slow"),))] == 0


def test_retry_and_requeued_rejection_are_not_finished() -> None:
    store, metrics = TaskStore(), TaskMetrics()
    feed(metrics, store, task("a", "app.x", "task-retried"))
    events = task("b", "app.x", "task-rejected")
    events[2]["requeue"] = True
    feed(metrics, store, events)
    feed(metrics, store, task("c", "app.x", "task-rejected"))
    s = samples(metrics)
    finished = {k: v for k, v in s.items() if k[0] == "pushserver_tasks_finished_total"}
    assert finished == {("pushserver_tasks_finished_total", (("name", "app.x"), ("state", "REJECTED"))): 1}
    assert s[("pushserver_tasks_running", (("name", "app.x"),))] == 0


def test_a_task_whose_name_was_never_seen_is_unknown_and_a_bad_runtime_is_not_observed() -> None:
    store, metrics = TaskStore(), TaskMetrics()
    feed(
        metrics,
        store,
        [
            {"type": "task-succeeded", "uuid": "z", "timestamp": 1.0, "runtime": "fast"},
            {"type": "task-succeeded", "uuid": "y", "timestamp": 1.0, "runtime": float("nan")},
            {"type": "task-succeeded", "uuid": "x", "timestamp": 1.0, "runtime": 10**400},  # past any float
            {"type": "task-succeeded", "uuid": "w", "timestamp": 1.0, "runtime": -1},
        ],
    )
    s = samples(metrics)
    assert s[("pushserver_tasks_finished_total", (("name", "unknown"), ("state", "SUCCESS")))] == 4
    assert ("pushserver_task_runtime_seconds_count", (("name", "unknown"),)) not in s


def test_names_beyond_the_cap_are_folded_into_other_and_counted() -> None:
    store, metrics = TaskStore(), TaskMetrics(max_names=3)
    for i in range(50):
        feed(metrics, store, task(f"t{i}", f"forged.{i}"))
    s = samples(metrics)
    names = {dict(k[1])["name"] for k in s if k[0] == "pushserver_tasks_finished_total"}
    assert names == {"forged.0", "forged.1", "forged.2", "other"}
    assert s[("pushserver_tasks_finished_total", (("name", "other"), ("state", "SUCCESS")))] == 47
    # one fold per task: its name is looked up when it starts
    assert s[("pushserver_task_metric_labels_folded_total", (("label", "name"),))] == 47
    assert len(metrics._names) == 3


def test_running_tasks_are_bounded() -> None:
    store, metrics = TaskStore(), TaskMetrics(max_running=10)
    for i in range(100):
        feed(metrics, store, task(f"t{i}", "app.x")[:2])
    assert samples(metrics)[("pushserver_tasks_running", (("name", "app.x"),))] == 10


def test_worker_goes_offline_when_heartbeats_stop_like_celery_state() -> None:
    clock = Clock()
    store, metrics = TaskStore(), TaskMetrics(clock=clock)
    feed(
        metrics,
        store,
        [
            {"type": "worker-online", "hostname": "w1@h", "freq": 2.0},
            {"type": "worker-heartbeat", "hostname": "w2@h", "freq": 5.0},
        ],
    )
    feed(metrics, store, task("a", "app.x")[:2])  # running on w1@h
    s = samples(metrics)
    assert s[("pushserver_worker_online", (("worker", "w1@h"),))] == 1
    assert s[("pushserver_worker_online", (("worker", "w2@h"),))] == 1
    clock.now += 4.5  # past 2 x 2 s, within 2 x 5 s
    s = samples(metrics)
    assert s[("pushserver_worker_online", (("worker", "w1@h"),))] == 0
    assert s[("pushserver_worker_online", (("worker", "w2@h"),))] == 1
    assert s[("pushserver_tasks_running", (("name", "app.x"),))] == 0  # its worker is gone
    feed(metrics, store, [{"type": "worker-heartbeat", "hostname": "w1@h", "freq": 2.0}])
    assert samples(metrics)[("pushserver_worker_online", (("worker", "w1@h"),))] == 1
    feed(metrics, store, [{"type": "worker-offline", "hostname": "w1@h"}])
    assert samples(metrics)[("pushserver_worker_online", (("worker", "w1@h"),))] == 0
    clock.now += FORGET_OFFLINE_AFTER + 20  # w2 expired too, 5.5 s later than w1
    s = samples(metrics)
    assert not [k for k in s if k[0] == "pushserver_worker_online"]
    assert metrics._hosts == {}


def test_worker_hostnames_are_capped_too() -> None:
    store, metrics = TaskStore(), TaskMetrics(max_names=2)
    feed(metrics, store, [{"type": "worker-heartbeat", "hostname": f"w{i}@h", "freq": 2.0} for i in range(20)])
    s = samples(metrics)
    assert {dict(k[1])["worker"] for k in s if k[0] == "pushserver_worker_online"} == {"w0@h", "w1@h", "other"}
    assert s[("pushserver_task_metric_labels_folded_total", (("label", "worker"),))] == 18


def test_events_of_other_kinds_or_malformed_ones_change_nothing() -> None:
    store, metrics = TaskStore(), TaskMetrics()
    metrics.observe(
        [
            {"type": "task-progress", "uuid": "a"},
            {"type": None},
            {},
            {"type": "task-started"},
            {"type": "worker-heartbeat", "freq": "x"},
            {"type": "worker-heartbeat", "hostname": 5},
        ],
        store,
    )
    s = samples(metrics)
    assert not [
        k
        for k in s
        if k[0] in ("pushserver_tasks_running", "pushserver_tasks_finished_total", "pushserver_worker_online")
    ]
    feed(metrics, store, [{"type": "worker-heartbeat", "hostname": "w@h", "freq": "x"}])  # Celery's default freq
    assert samples(metrics)[("pushserver_worker_online", (("worker", "w@h"),))] == 1


def test_a_huge_hostname_is_cut() -> None:
    store, metrics = TaskStore(), TaskMetrics()
    feed(metrics, store, [{"type": "worker-heartbeat", "hostname": "w" * 1_000_000, "freq": 2.0}])
    assert [len(dict(k[1])["worker"]) for k in samples(metrics) if k[0] == "pushserver_worker_online"] == [255]


def test_a_restarted_worker_runs_none_of_its_earlier_tasks() -> None:
    store, metrics = TaskStore(), TaskMetrics()
    feed(metrics, store, task("a", "app.x", host="w1@h")[:2] + task("b", "app.x", host="w2@h")[:2])
    assert samples(metrics)[("pushserver_tasks_running", (("name", "app.x"),))] == 2
    feed(metrics, store, [{"type": "worker-online", "hostname": "w1@h", "freq": 2.0}])  # killed, started again
    assert samples(metrics)[("pushserver_tasks_running", (("name", "app.x"),))] == 1


def test_a_start_that_overtook_its_received_event_is_named_at_the_finish() -> None:
    store, metrics = TaskStore(), TaskMetrics()
    received, started, succeeded = task("a", "app.x")
    feed(metrics, store, [started])
    assert samples(metrics)[("pushserver_tasks_running", (("name", "unknown"),))] == 1
    feed(metrics, store, [received])
    feed(metrics, store, [succeeded])
    s = samples(metrics)
    assert s[("pushserver_tasks_finished_total", (("name", "app.x"), ("state", "SUCCESS")))] == 1
    assert s.get(("pushserver_tasks_running", (("name", "unknown"),)), 0) == 0
