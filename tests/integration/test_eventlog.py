"""The MongoDB event log: recorded once, read back page by page, and never in the way of delivery."""

from __future__ import annotations

import json
import time

import pytest
from pymongo import MongoClient

from dev.stack import Proc, http_get, start_mongo, start_pushserver, wait_until
from pushserver.eventlog import COLLECTION, event_to_document
from tests.support.stack import Server, Stack
from tests.support.clients import Watcher

pytestmark = pytest.mark.integration


def events_of(url: str, db: str, task_id: str) -> list[dict]:
    with MongoClient(url, serverSelectionTimeoutMS=3000) as client:
        return list(client[db][COLLECTION].find({"task_id": task_id}).sort("timestamp", 1))


def serve_with_log(stack: Stack, secret: str, mongo: str, db: str, name: str,
                   extra: list[str] | None = None) -> tuple[Proc, str]:
    return start_pushserver(name, stack.broker, stack.backend, stack.log_dir, secret=secret,
                            extra=["--mongo", mongo, "--mongo-db", db, *(extra or [])])


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
        wait_until(lambda: wanted <= {d["type"] for d in events_of(mongo, mongo_db, result.id)}, 20,
                   "the task's events in MongoDB")
        wait_until(lambda: b"pushserver_eventlog_duplicates_total" in http_get(url_b + "/metrics")[1], 5,
                   "metrics")
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
        assert sorted(set(types)) == ["task-progress", "task-received", "task-sent", "task-started",
                                      "task-succeeded"]
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
        stack: Stack, server: Server, mongo: str, mongo_db: str):
    """A replica restarted while a task runs, with no result-backend record: the log has its story."""
    task_id = f"from-the-log-{time.time_ns()}"
    now = time.time()
    recorded = [
        {"type": "task-received", "uuid": task_id, "timestamp": now - 3, "hostname": "celery@gone",
         "name": "workers.tasks.resize_and_watermark", "retries": 0},
        {"type": "task-started", "uuid": task_id, "timestamp": now - 2, "hostname": "celery@gone"},
        {"type": "task-progress", "uuid": task_id, "timestamp": now - 1, "hostname": "celery@gone",
         "current": 2, "total": 4, "message": "resizing"},
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
    mongo_proc, mongo_url = start_mongo(stack.log_dir)
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
            assert final["result"] == "3"
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
