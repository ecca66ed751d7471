"""The MongoDB event log: recorded once, read back page by page, and never in the way of delivery."""

from __future__ import annotations

import json
import time

import pytest
from pymongo import MongoClient

from dev.stack import Proc, http_get, restartable_port, start_mongo, start_pushserver, wait_until
from pushserver.eventlog import COLLECTION, event_to_document
from tests.fuzz.stack import EventPublisher
from tests.support.clients import Watcher
from tests.support.stack import Server, Stack

pytestmark = pytest.mark.integration


def events_of(url: str, db: str, task_id: str) -> list[dict]:
    with MongoClient(url, serverSelectionTimeoutMS=3000) as client:
        return list(client[db][COLLECTION].find({"task_id": task_id}).sort("timestamp", 1))


def serve_with_log(
    stack: Stack, secret: str, mongo: str, db: str, name: str, extra: list[str] | None = None
) -> tuple[Proc, str]:
    return start_pushserver(
        name,
        stack.broker,
        stack.backend,
        stack.log_dir,
        secret=secret,
        extra=["--mongo", mongo, "--mongo-db", db, *(extra or [])],
    )


def ready(url: str) -> dict:
    status, body = http_get(url + "/readyz")
    return json.loads(body) if status in (200, 503) else {}


async def test_two_replicas_record_each_event_once(stack: Stack, server: Server, mongo: str, mongo_db: str):
    a, url_a = serve_with_log(stack, server.secret, mongo, mongo_db, "log-replica-a")
    b, url_b = serve_with_log(stack, server.secret, mongo, mongo_db, "log-replica-b")
    try:
        wait_until(lambda: ready(url_a).get("ready") and ready(url_b).get("ready"), 20, "both replicas ready")
        result = stack.send("demo_progress", 3, 0.05)
        assert result.get(timeout=30) == 3
        wanted = {"task-sent", "task-received", "task-started", "task-progress", "task-succeeded"}
        wait_until(
            lambda: wanted <= {d["type"] for d in events_of(mongo, mongo_db, result.id)},
            20,
            "the task's events in MongoDB",
        )
        wait_until(lambda: b"pushserver_eventlog_duplicates_total" in http_get(url_b + "/metrics")[1], 5, "metrics")
        # Both replicas wrote; let the slower one finish before counting.
        time.sleep(0.5)
        docs = events_of(mongo, mongo_db, result.id)
        progress = [d for d in docs if d["type"] == "task-progress"]
        assert len(progress) == 3
        assert len(docs) == len({d["_id"] for d in docs}) == 7  # sent, received, started, 3 progress, succeeded
        assert all(d["hostname"] and d["recorded_at"] for d in docs)
    finally:
        a.stop()
        b.stop()


async def test_history_endpoint_pages_oldest_first(stack: Stack, server: Server, mongo: str, mongo_db: str):
    proc, url = serve_with_log(stack, server.secret, mongo, mongo_db, "log-history")
    try:
        wait_until(lambda: ready(url).get("ready"), 20, "ready")
        result = stack.send("demo_progress", 5, 0.02)
        result.get(timeout=30)
        wait_until(lambda: len(events_of(mongo, mongo_db, result.id)) == 9, 20, "9 events recorded")
        auth = {"Authorization": f"Bearer {server.token(result.id)}"}
        pages, cursor = [], None
        while True:
            query = "?limit=4" + (f"&after={cursor}" if cursor else "")
            status, body = http_get(f"{url}/tasks/{result.id}/events{query}", auth)
            assert status == 200, body
            page = json.loads(body)
            pages.append(page["events"])
            cursor = page["next"]
            if not cursor:
                break
        events = [e for page in pages for e in page]
        assert [len(p) for p in pages] == [4, 4, 1]
        assert len({e["id"] for e in events}) == 9
        stamps = [e["timestamp"] for e in events]
        assert stamps == sorted(stamps)
        # task-sent is stamped by the client after the message is published, so
        # under load it may follow the worker's first events; the worker's own
        # events keep their order.
        types = [e["type"] for e in events]
        assert sorted(set(types)) == ["task-progress", "task-received", "task-sent", "task-started", "task-succeeded"]
        worker_side = [t for t in types if t != "task-sent"]
        assert worker_side[:2] == ["task-received", "task-started"]
        assert worker_side[-1] == "task-succeeded"

        assert http_get(f"{url}/tasks/{result.id}/events")[0] == 401
        assert http_get(f"{url}/tasks/{result.id}/events?limit=0", auth)[0] == 400
        assert http_get(f"{url}/tasks/{result.id}/events?after=junk", auth)[0] == 400
    finally:
        proc.stop()


def test_history_is_503_when_the_log_is_off(stack: Stack, server: Server):
    status, body = http_get(f"{server.url}/tasks/x/events", {"Authorization": f"Bearer {server.token('x')}"})
    assert status == 503 and json.loads(body)["error"]["code"] == "unavailable"
    assert ready(server.url)["event_log"] == "off"


async def test_ttl_index_has_the_configured_retention(stack: Stack, server: Server, mongo: str, mongo_db: str):
    proc, url = serve_with_log(stack, server.secret, mongo, mongo_db, "log-ttl", ["--retention-days", "2"])
    try:
        wait_until(lambda: ready(url).get("ready"), 20, "ready")
        stack.send("demo_progress", 1, 0.0).get(timeout=30)

        def indexes() -> list[dict]:
            with MongoClient(mongo, serverSelectionTimeoutMS=3000) as client:
                return list(client[mongo_db][COLLECTION].list_indexes())

        wait_until(lambda: any(i.get("expireAfterSeconds") for i in indexes()), 20, "the TTL index")
        keys = {tuple(dict(i["key"]).keys()): i for i in indexes()}
        # Index names differ between nx-27017 and mongod: compare keys only.
        assert ("task_id", "timestamp") in keys and ("timestamp",) in keys
        assert keys[("recorded_at",)]["expireAfterSeconds"] == 2 * 86400
    finally:
        proc.stop()


async def test_snapshot_is_rebuilt_from_the_log_when_memory_and_backend_know_nothing(
    stack: Stack, server: Server, mongo: str, mongo_db: str
):
    """A replica restarted while a task runs, with no result-backend record: the log has its story."""
    task_id = f"from-the-log-{time.time_ns()}"
    now = time.time()
    recorded = [
        {
            "type": "task-received",
            "uuid": task_id,
            "timestamp": now - 3,
            "hostname": "celery@gone",
            "name": "workers.tasks.resize_and_watermark",
            "retries": 0,
        },
        {"type": "task-started", "uuid": task_id, "timestamp": now - 2, "hostname": "celery@gone"},
        {
            "type": "task-progress",
            "uuid": task_id,
            "timestamp": now - 1,
            "hostname": "celery@gone",
            "current": 2,
            "total": 4,
            "message": "resizing",
        },
    ]
    with MongoClient(mongo, serverSelectionTimeoutMS=3000) as client:
        client[mongo_db][COLLECTION].insert_many([event_to_document(e) for e in recorded])
    proc, url = serve_with_log(stack, server.secret, mongo, mongo_db, "log-rebuild")
    try:
        w = await Watcher(url).connect(server.token(task_id))
        ack = await w.subscribe(task_id)
        await w.close()
    finally:
        proc.stop()
    snapshot = ack["tasks"][0]
    assert snapshot["state"] == "PROGRESS"
    assert snapshot["progress"]["current"] == 2 and snapshot["worker"] == "celery@gone"
    assert snapshot["name"] == "workers.tasks.resize_and_watermark"


async def test_mongodb_outage_degrades_history_never_delivery(stack: Stack, server: Server, mongo_db: str):
    mongo_proc, mongo_url = start_mongo(stack.log_dir, restartable_port())  # MongoDB comes back on it
    port = int(mongo_url.rsplit(":", 1)[1])
    proc, url = serve_with_log(stack, server.secret, mongo_url, mongo_db, "log-outage")
    try:
        wait_until(lambda: ready(url).get("ready"), 20, "ready")
        before = stack.send("demo_progress", 1, 0.0)
        before.get(timeout=30)
        wait_until(lambda: events_of(mongo_url, mongo_db, before.id), 20, "events recorded before the outage")

        mongo_proc.stop()
        during = stack.send("demo_progress", 3, 0.05)
        w = await Watcher(url).connect(server.token(during.id))
        try:
            started = time.monotonic()
            await w.subscribe(during.id)
            final = await w.wait_state(during.id, "SUCCESS", timeout=30)
            assert final["result"] == 3
            assert time.monotonic() - started < 10  # delivery did not wait on MongoDB's timeouts
        finally:
            await w.close()
        wait_until(lambda: ready(url).get("event_log") == "degraded", 30, "/readyz to report the log degraded")
        assert ready(url)["ready"] is True  # degraded history is not unreadiness

        mongo_proc, _ = start_mongo(stack.log_dir, port=port)
        wait_until(lambda: ready(url).get("event_log") == "ok", 40, "the event log to recover")
        after = stack.send("demo_progress", 1, 0.0)
        after.get(timeout=30)
        wait_until(lambda: events_of(mongo_url, mongo_db, after.id), 20, "events recorded after MongoDB returned")
        # What queued during the outage was written once MongoDB came back.
        assert events_of(mongo_url, mongo_db, during.id)
        metrics = http_get(url + "/metrics")[1].decode()
        assert "pushserver_eventlog_dropped_total" in metrics
    finally:
        proc.stop()
        mongo_proc.stop()
    assert "Traceback" not in proc.log()


def metric_sum(url: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples in /metrics, optionally only those with these labels."""
    total = 0.0
    for line in http_get(url + "/metrics")[1].decode().splitlines():
        if not line.startswith(name) or line[len(name)] not in " {":
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


#: Events whose values MongoDB cannot store as kombu's JSON decoder hands them over, as JSON on the
#: wire: {"__type__": ...} objects become uuid.UUID, Decimal, date, time, datetime and bytes.
ODD_VALUES: dict[str, object] = {
    "uuid": {"__type__": "uuid", "__value__": {"hex": "12345678123456781234567812345678"}},
    "decimal": {"__type__": "decimal", "__value__": "3.14159265358979323846264338327950288"},
    "date": {"__type__": "date", "__value__": "2026-01-01"},
    "time": {"__type__": "time", "__value__": "10:00:00"},
    "datetime": {"__type__": "datetime", "__value__": "2026-01-01T10:00:00+05:30"},
    "bytes": {"__type__": "base64", "__value__": "AP8="},
    "bigint": 2**70,
    "nan": float("nan"),
    "surrogate": "\ud800",
    "nul-key": {"a\x00b": 1},
    "deep": json.loads("[" * 150 + "]" * 150),
    "huge": "h" * (2 << 20),
}


async def test_values_mongodb_cannot_store_neither_stop_nor_block_the_log(
    stack: Stack, server: Server, mongo: str, mongo_db: str
):
    """Each odd value is logged rewritten (or its event alone dropped, counted); the good events after
    them are all written, and the writer keeps running."""
    proc, url = serve_with_log(stack, server.secret, mongo, mongo_db, "log-odd-values")
    publisher = EventPublisher(stack.broker)
    run = f"odd-{time.time_ns()}"
    try:
        wait_until(lambda: ready(url).get("ready"), 20, "ready")
        for name, value in ODD_VALUES.items():
            publisher.publish(
                publisher.task_event("task-succeeded", f"{run}-{name}", result="'ok'", value=value),
                routing_key="task.succeeded",
            )
        good = [publisher.task_event("task-succeeded", f"{run}-good-{i}", result=f"'{i}'") for i in range(20)]
        publisher.publish(good)

        def logged(prefix: str) -> list[dict]:
            with MongoClient(mongo, serverSelectionTimeoutMS=3000) as client:
                return list(client[mongo_db][COLLECTION].find({"task_id": {"$regex": f"^{prefix}"}}))

        wait_until(lambda: len(logged(f"{run}-good-")) == 20, 20, "every good event after the odd ones written")
        stored = {d["task_id"][len(run) + 1 :]: d["event"].get("value") for d in logged(run)}
        # Nothing was lost: every odd event is in the log too, rewritten.
        assert set(ODD_VALUES) <= set(stored), sorted(set(ODD_VALUES) - set(stored))
        assert stored["uuid"] == "12345678-1234-5678-1234-567812345678"
        assert stored["decimal"] == "3.14159265358979323846264338327950288"
        assert stored["date"] == "2026-01-01" and stored["datetime"] == "2026-01-01T10:00:00+05:30"
        assert stored["bytes"] == {"__type__": "base64", "__value__": "AP8="}
        assert stored["bigint"] == str(2**70)
        assert stored["surrogate"] == "\\ud800"
        assert stored["nan"] == "NaN" or stored["nan"] != stored["nan"]  # nx-27017 keeps JSON; mongod a double
        assert len(stored["huge"]) == 16 * 1024
        assert ready(url)["event_log"] == "ok"
        rewritten = metric_sum(url, "pushserver_eventlog_sanitised_total")
        assert rewritten >= len(ODD_VALUES) - 1, rewritten  # the NaN one only where the server refused NaN
        assert metric_sum(url, "pushserver_eventlog_writer_running") == 1
        assert metric_sum(url, "pushserver_eventlog_dropped_total") == 0
        # The history endpoint serves them as JSON.
        status, body = http_get(
            f"{url}/tasks/{run}-uuid/events", {"Authorization": f"Bearer {server.token(f'{run}-uuid')}"}
        )
        assert status == 200, body
    finally:
        publisher.close()
        proc.stop()
    assert "Traceback" not in proc.log()


async def test_the_queue_held_during_an_outage_is_bounded_in_bytes(stack: Stack, server: Server, mongo_db: str):
    """MongoDB away, 32 MB of progress events arrive: the queue holds at most --event-log-queue-bytes,
    shedding the oldest progress (counted); the transitions are all written once MongoDB is back."""
    mongo_proc, mongo_url = start_mongo(stack.log_dir)
    port = int(mongo_url.rsplit(":", 1)[1])
    bound = 4 * 1024 * 1024
    proc, url = serve_with_log(
        stack, server.secret, mongo_url, mongo_db, "log-bounded", ["--event-log-queue-bytes", str(bound)]
    )
    publisher = EventPublisher(stack.broker)
    run = f"bounded-{time.time_ns()}"
    try:
        wait_until(lambda: ready(url).get("ready"), 20, "ready")
        mongo_proc.stop()
        for batch in range(16):  # 16 x 128 events x ~16 KB = 32 MB
            publisher.publish(
                [
                    publisher.task_event(
                        "task-progress", f"{run}-p", current=batch * 128 + i, total=2048, message="m" * 16_000
                    )
                    for i in range(128)
                ]
            )
        transitions = [publisher.task_event("task-succeeded", f"{run}-t{i}", result="'ok'") for i in range(50)]
        publisher.publish(transitions)
        wait_until(
            lambda: (
                metric_sum(url, "pushserver_events_ingested_total", type="task-progress") == 2048
                and metric_sum(url, "pushserver_events_ingested_total", type="task-succeeded") == 50
            ),
            30,
            "every event received",
        )
        assert metric_sum(url, "pushserver_eventlog_queued_bytes") <= bound
        assert metric_sum(url, "pushserver_eventlog_dropped_total", kind="transition") == 0
        shed = metric_sum(url, "pushserver_eventlog_dropped_total", kind="progress")
        assert shed >= 2048 - bound / 16_000, shed

        mongo_proc, _ = start_mongo(stack.log_dir, port=port)
        wait_until(
            lambda: ready(url).get("event_log") == "ok" and metric_sum(url, "pushserver_eventlog_queued") == 0,
            60,
            "the queue written out",
        )
        with MongoClient(mongo_url, serverSelectionTimeoutMS=3000) as client:
            docs = list(client[mongo_db][COLLECTION].find({"task_id": {"$regex": f"^{run}"}}, {"type": 1}))
        written = {"task-progress": 0, "task-succeeded": 0}
        for d in docs:
            written[d["type"]] += 1
        assert written["task-succeeded"] == 50
        # Every progress event is either written or counted as shed.
        assert written["task-progress"] + shed == 2048, (written, shed)
    finally:
        publisher.close()
        proc.stop()
        mongo_proc.stop()
    assert "Traceback" not in proc.log()
