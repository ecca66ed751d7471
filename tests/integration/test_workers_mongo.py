"""The example workers on MongoDB: real Celery workers (threads and prefork pools) against nx-27017.

The documents each test needs (users, task records as Express writes them)
are inserted here with pymongo, then the tasks run on the workers and the test
reads back what they wrote.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast

import pytest
import redis
from celery.result import AsyncResult
from pymongo import MongoClient
from pymongo.database import Database

from dev.stack import start_mongo, wait_until
from tests.support.smtp import smtp_sink
from tests.support.stack import PREFORK_QUEUE, Stack, environ, redis_stack
from workers import tasks

pytestmark = pytest.mark.integration

APP_DB = "app_test"
WORKERS_DB = "workers_test"


@dataclass
class MongoStack:
    stack: Stack
    url: str
    mongo: MongoClient[dict[str, Any]]

    @property
    def app(self) -> Database[dict[str, Any]]:
        return self.mongo[APP_DB]

    @property
    def workers(self) -> Database[dict[str, Any]]:
        return self.mongo[WORKERS_DB]

    def run(
        self,
        name: str,
        *args: object,
        queue: str = "celery",
        task_id: str | None = None,
        timeout: float = 30,
        **kwargs: object,
    ) -> AsyncResult:
        """Send ``workers.tasks.<name>`` and wait until it has finished (whatever the outcome)."""
        result = self.stack.send(name, *args, queue=queue, task_id=task_id, **kwargs)
        wait_until(lambda: result.ready(), timeout, f"{name} to finish (worker logs in {self.stack.log_dir})")
        return result

    def record(
        self,
        task: str,
        *,
        owner: str = "u-test",
        state: str = "PENDING",
        created_at: datetime | None = None,
        task_id: str | None = None,
    ) -> str:
        """Insert a task record as Express writes it before publishing; return its id."""
        task_id = task_id or str(uuid.uuid4())
        self.app.tasks.insert_one(
            {
                "_id": task_id,
                "owner": owner,
                "kind": task.rsplit(".", 1)[-1],
                "task": task,
                "args_summary": "",
                "state": state,
                "created_at": created_at or datetime.now(timezone.utc),
            }
        )
        return task_id

    def finished_record(self, task_id: str, timeout: float = 10) -> dict[str, Any]:
        """Task ``task_id``'s record once the worker has recorded its end.

        The worker records it in ``task_postrun``, which Celery sends after it has stored the
        result: a caller whose result is ready can still read the record as STARTED for a moment.
        """
        record = wait_until(
            lambda: self.app.tasks.find_one({"_id": task_id, "finished_at": {"$exists": True}}),
            timeout,
            f"the worker to record task {task_id}'s end (worker logs in {self.stack.log_dir})",
        )
        return cast(dict[str, Any], record)


@pytest.fixture(scope="module")
def mstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MongoStack]:
    log_dir = tmp_path_factory.mktemp("workers-mongo")
    stack = redis_stack(log_dir, name="workers-mongo")
    mongo_proc = None
    client: MongoClient[dict[str, Any]] | None = None
    try:
        mongo_proc, url = start_mongo(log_dir)
        with environ(MONGO_URL=url, MONGO_APP_DB=APP_DB, MONGO_WORKERS_DB=WORKERS_DB):
            stack.worker("mongo-threads", pool="threads", concurrency=4, wait=False)
            # Prefork: each child process must make its own MongoClient after the fork.
            stack.worker("mongo-prefork", pool="prefork", concurrency=2, queues=PREFORK_QUEUE, wait=False)
        stack.wait_workers("mongo-threads", "mongo-prefork", timeout=90)
        client = MongoClient(url, tz_aware=True)
        yield MongoStack(stack, url, client)
    finally:
        if client is not None:
            client.close()
        stack.close()
        if mongo_proc is not None:
            mongo_proc.stop()


@pytest.fixture
def clean(mstack: MongoStack) -> MongoStack:
    """Start each test on empty collections."""
    for collection in (mstack.app.users, mstack.app.tasks, mstack.workers.reports, mstack.workers.tasks_archive):
        collection.delete_many({})
    return mstack


def _add_user(mstack: MongoStack, username: str) -> str:
    user_id = str(uuid.uuid4())
    mstack.app.users.insert_one(
        {
            "_id": user_id,
            "username": username,
            "username_lower": username.lower(),
            "password_hash": "scrypt$unused",
            "created_at": datetime.now(timezone.utc),
        }
    )
    return user_id


# --- send_welcome_email ---------------------------------------------------


@pytest.mark.parametrize("queue", ["celery", PREFORK_QUEUE])
def test_welcome_email_reads_the_user_document(clean: MongoStack, queue: str) -> None:
    user_id = _add_user(clean, "ada")
    results = [clean.run("send_welcome_email", user_id, queue=queue) for _ in range(3)]
    for result in results:
        assert result.status == "SUCCESS", result.traceback
        assert result.result["user_id"] == user_id
        assert result.result["username"] == "ada"
        eml = Path(result.result["delivered_to"]).read_text()
        assert "Hello ada," in eml, "greeted by the username read from MongoDB"
    # Each pool process made its own client after the fork (pymongo warns when one crosses a fork).
    logs = "".join(proc.log() for proc in clean.stack.procs if proc.name.startswith("mongo-"))
    assert "MongoClient opened before fork" not in logs


def test_welcome_email_for_a_missing_user_fails_clearly_and_is_not_retried(clean: MongoStack) -> None:
    result = clean.run("send_welcome_email", "no-such-user")
    assert result.status == "FAILURE"
    assert type(result.result).__name__ == "UserNotFound"
    assert f"no user 'no-such-user' in MongoDB ({APP_DB}.users)" in str(result.result)
    assert "Retry" not in (result.traceback or "")


# --- resize_and_watermark and task states ------------------------------------


@pytest.mark.parametrize("queue", ["celery", PREFORK_QUEUE])
def test_resize_records_its_output_and_the_worker_records_states(clean: MongoStack, queue: str) -> None:
    task_id = clean.record("workers.tasks.resize_and_watermark")
    result = clean.run("resize_and_watermark", queue=queue, task_id=task_id, width=64, watermark="mern")
    assert result.status == "SUCCESS", result.traceback
    record = clean.finished_record(task_id)
    output = record["output"]
    assert {k: output[k] for k in ("path", "width", "height", "bytes")} == result.result
    assert output["width"] == 64 and output["watermark"] == "mern"
    assert isinstance(record["output_at"], datetime)
    assert Path(output["path"]).stat().st_size == output["bytes"]
    assert record["state"] == "SUCCESS"
    assert record["created_at"] <= record["started_at"] <= record["finished_at"] <= datetime.now(timezone.utc)


def test_a_failing_task_is_recorded_as_failure(clean: MongoStack) -> None:
    task_id = clean.record("workers.tasks.fail")
    assert clean.run("fail", "on purpose", task_id=task_id).status == "FAILURE"
    assert clean.finished_record(task_id)["state"] == "FAILURE"


def test_tasks_without_a_record_leave_the_collection_alone(clean: MongoStack) -> None:
    assert clean.run("demo_progress", 1, 0).status == "SUCCESS"
    assert clean.app.tasks.count_documents({}) == 0


# --- nightly_report ----------------------------------------------------------


def test_nightly_report_aggregates_the_day_and_archives_old_records(clean: MongoStack) -> None:
    now = datetime.now(timezone.utc)
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)  # BSON dates hold milliseconds
    today = {
        ("workers.tasks.predict", "SUCCESS"): 3,
        ("workers.tasks.predict", "FAILURE"): 1,
        ("workers.tasks.resize_and_watermark", "SUCCESS"): 2,
        ("workers.tasks.fail", "FAILURE"): 4,
        ("workers.tasks.demo_progress", "PENDING"): 1,
    }
    for (task, state), count in today.items():
        for i in range(count):
            clean.record(task, state=state, created_at=now - timedelta(hours=1 + i))
    # Older than a day but younger than the archive age: in neither the counts nor the archive.
    kept = [clean.record("workers.tasks.predict", state="SUCCESS", created_at=now - timedelta(days=d)) for d in (2, 29)]
    # Older than the default 30 days: archived, in several batches (500 a batch).
    old = [
        {
            "_id": f"old-{i}",
            "owner": "u-old",
            "kind": "predict",
            "task": "workers.tasks.predict",
            "args_summary": "",
            "state": "SUCCESS",
            "created_at": now - timedelta(days=31, minutes=i),
        }
        for i in range(1201)
    ]
    clean.app.tasks.insert_many(old)

    task_id = str(uuid.uuid4())
    progress = _ProgressListener(clean, task_id)
    try:
        result = clean.run("nightly_report", task_id=task_id, timeout=60)
    finally:
        messages = progress.close()
    assert result.status == "SUCCESS", result.traceback
    report = result.result
    assert {(row["task"], row["state"]): row["count"] for row in report["counts"]} == today
    assert report["counts"] == sorted(report["counts"], key=lambda r: (r["task"], r["state"]))
    assert report["total"] == sum(today.values())
    assert report["archived"] == 1201

    assert clean.app.tasks.count_documents({"_id": {"$regex": "^old-"}}) == 0
    assert clean.workers.tasks_archive.count_documents({}) == 1201
    archived = clean.workers.tasks_archive.find_one({"_id": "old-7"})
    assert archived is not None and archived["owner"] == "u-old" and archived["created_at"] == old[7]["created_at"]
    assert archived["archived_at"] >= archived["created_at"]
    assert {r["_id"] for r in clean.app.tasks.find({"_id": {"$in": kept}})} == set(kept)
    assert clean.app.tasks.count_documents({}) == sum(today.values()) + len(kept)

    (saved,) = list(clean.workers.reports.find({}, {"_id": 0}))
    assert saved["counts"] == report["counts"] and saved["archived"] == 1201
    assert saved["generated_at"].isoformat() == report["generated_at"]

    # Progress as it went: counting, each archived batch, the end.
    assert "counting the day's tasks" in messages
    assert [m for m in messages if m.startswith("archived ")] == [
        "archived 500 of 1201 records",
        "archived 1000 of 1201 records",
        "archived 1201 of 1201 records",
    ]
    assert messages[-1] == "report saved; archived 1201 records"


def test_nightly_report_archive_age_is_configurable(clean: MongoStack) -> None:
    now = datetime.now(timezone.utc)
    young = clean.record("workers.tasks.predict", created_at=now - timedelta(hours=2))
    older = clean.record("workers.tasks.predict", created_at=now - timedelta(days=3))
    result = clean.run("nightly_report", archive_after_days=1)
    assert result.status == "SUCCESS", result.traceback
    assert result.result["archived"] == 1
    assert [r["_id"] for r in clean.workers.tasks_archive.find()] == [older]
    assert [r["_id"] for r in clean.app.tasks.find()] == [young]
    # Run again: nothing left to move, a second report saved.
    assert clean.run("nightly_report", archive_after_days=1).result["archived"] == 0
    assert clean.workers.reports.count_documents({}) == 2


def test_nightly_report_refuses_a_bad_archive_age(clean: MongoStack) -> None:
    result = clean.run("nightly_report", archive_after_days=-1)
    assert result.status == "FAILURE"
    assert "ARCHIVE_AFTER_DAYS must be a number of days >= 0" in str(result.result)


class _ProgressListener:
    """Collects the PROGRESS messages the result backend publishes for one task id."""

    def __init__(self, mstack: MongoStack, task_id: str) -> None:
        self.client = redis.Redis.from_url(mstack.stack.backend)
        self.pubsub = self.client.pubsub()
        self.pubsub.subscribe(f"celery-task-meta-{task_id}")
        self.messages: list[str] = []

    def close(self) -> list[str]:
        # The last publish (SUCCESS) comes before result.ready() turns true: everything is queued by now.
        while (message := self.pubsub.get_message(timeout=0.5)) is not None:
            if message["type"] != "message":
                continue
            meta = json.loads(message["data"])
            if meta["status"] == "PROGRESS":
                self.messages.append(meta["result"]["message"])
        self.pubsub.close()
        self.client.close()
        return self.messages


# --- in-process, without a worker -------------------------------------------------


@pytest.fixture
def in_process(clean: MongoStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MongoStack:
    """Run task bodies in this process, on the module's MongoDB, writing files under ``tmp_path``."""
    for name, value in {
        "MONGO_URL": clean.url,
        "MONGO_APP_DB": APP_DB,
        "MONGO_WORKERS_DB": WORKERS_DB,
        "OUTBOX_DIR": str(tmp_path / "outbox"),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SMTP_URL", raising=False)
    return clean


def test_send_welcome_email_writes_to_the_outbox(in_process: MongoStack, tmp_path: Path) -> None:
    user_id = _add_user(in_process, "grace")
    result = tasks.send_welcome_email(user_id, "grace@example.org")
    assert result["user_id"] == user_id
    path = Path(result["delivered_to"])
    assert path.parent == tmp_path / "outbox" and path.suffix == ".eml"
    assert b"grace@example.org" in path.read_bytes()


def test_send_welcome_email_by_smtp(in_process: MongoStack, monkeypatch: pytest.MonkeyPatch) -> None:
    user_id = _add_user(in_process, "linus")
    with smtp_sink() as sink:
        monkeypatch.setenv("SMTP_URL", f"smtp://127.0.0.1:{sink.server_address[1]}")
        assert tasks.send_welcome_email(user_id) == {"user_id": user_id, "username": "linus", "delivered_to": "smtp"}
    (data,) = sink.messages  # type: ignore[attr-defined]
    assert f"To: user-{user_id}@example.com".encode() in data
    assert b"Hello linus," in data


def test_workers_without_mongo_url_say_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MONGO_URL", raising=False)
    with pytest.raises(RuntimeError, match="MONGO_URL is not set"):
        tasks.send_welcome_email("u1")


def test_a_mongodb_outage_pauses_state_recording_instead_of_holding_every_task(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from dev.stack import free_port
    from workers import records

    monkeypatch.setenv("MONGO_URL", f"mongodb://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("MONGO_TIMEOUT_MS", "300")
    monkeypatch.setattr(records, "_paused_until", 0.0)
    monkeypatch.setattr(records, "skipped", 0)
    started = time.monotonic()
    records._record_state("t-1", "STARTED", "started_at")
    first = time.monotonic() - started
    assert first >= 0.25, "the first attempt waited for server selection"
    assert "not recording states for 30 s" in caplog.text
    started = time.monotonic()
    for _ in range(20):
        records._record_state("t-2", "SUCCESS", "finished_at")
    assert time.monotonic() - started < 0.1, "later tasks are not held up"
    assert records.skipped == 20
