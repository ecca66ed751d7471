"""`pushserver replay` against real processes: nx-27017 (or PUSHSERVER_TEST_MONGO_URL), Redis, workers, pushservers."""

from __future__ import annotations

import os
import pty
import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import pytest
from celery import Celery
from pymongo import AsyncMongoClient, MongoClient

from dev.stack import BIN, free_port, http_get, http_status, is_ready, start_pushserver, wait_until
from pushserver import replay as replay_module
from pushserver.eventlog import COLLECTION, document_to_event, ensure_indexes, event_id, event_to_document
from pushserver.replay import EventFilter, MongoSource, Rejects, to_json_line
from tests.support.clients import Watcher
from tests.support.stack import PREFORK_QUEUE, Server, Stack

pytestmark = pytest.mark.integration

PUSHSERVER = str(BIN / "pushserver")
READY_STATES = {"SUCCESS", "FAILURE", "REVOKED", "REJECTED"}


def replay(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``pushserver replay`` with only the environment the test gives it."""
    return subprocess.run(
        [PUSHSERVER, "replay", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**hermetic_env(), **(env or {})},
    )


def hermetic_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("PUSHSERVER_", "CELERY_"))}


def lines(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


def ordered(documents: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events in the order replay reads the log: (timestamp, _id)."""
    return [document_to_event(d) for d in sorted(documents, key=lambda d: (d["timestamp"], d["_id"]))]


async def seed(mongo: str, db: str, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Record events the way pushserver does (same documents, same indexes), in shuffled order."""
    documents = [event_to_document(e) for e in events]
    shuffled = random.sample(documents, len(documents))
    client: AsyncMongoClient = AsyncMongoClient(mongo, serverSelectionTimeoutMS=3000)
    try:
        collection = client[db][COLLECTION]
        await ensure_indexes(collection, 7 * 86400)
        await collection.insert_many(shuffled)
    finally:
        await client.close()
    return documents


def recorded(mongo: str, db: str, task_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
    query = {"task_id": {"$in": list(task_ids)}} if task_ids is not None else {}
    with MongoClient(mongo, serverSelectionTimeoutMS=3000) as client:
        return list(client[db][COLLECTION].find(query))


def task_events(
    uuid: str, name: str, start: float, host: str = "celery@recorded-host", steps: int = 2, gap: float = 0.5
) -> list[dict[str, Any]]:
    """A recorded task life as the receiver delivered it (transport fields included)."""
    common = {"hostname": host, "pid": 4242, "utcoffset": 0}
    events = [
        {
            "type": "task-sent",
            "uuid": uuid,
            "name": name,
            "timestamp": start,
            "hostname": "gen77@client",
            "pid": 77,
            "clock": 1,
            "utcoffset": 0,
            "args": "()",
            "kwargs": "{}",
            "retries": 0,
            "eta": None,
            "expires": None,
            "queue": "celery",
            "root_id": uuid,
            "parent_id": None,
        },
        {
            "type": "task-received",
            "uuid": uuid,
            "name": name,
            "timestamp": start + gap / 2,
            "clock": 2,
            "args": "()",
            "kwargs": "{}",
            "retries": 0,
            "eta": None,
            "expires": None,
            "root_id": uuid,
            "parent_id": None,
            **common,
        },
        {"type": "task-started", "uuid": uuid, "timestamp": start + gap, "clock": 3, **common},
    ]
    for i in range(1, steps + 1):
        events.append(
            {
                "type": "task-progress",
                "uuid": uuid,
                "timestamp": start + gap * (1 + i),
                "clock": 3 + i,
                "current": i,
                "total": steps,
                "message": f"step {i}/{steps}",
                **common,
            }
        )
    events.append(
        {
            "type": "task-succeeded",
            "uuid": uuid,
            "timestamp": start + gap * (2 + steps),
            "clock": 4 + steps,
            "result": str(steps),
            "runtime": gap * (1 + steps),
            **common,
        }
    )
    return events


class EventTap:
    """A Celery event receiver in a thread, like any other consumer of the ``celeryev`` exchange.

    Keeps (monotonic arrival time, event) for events whose uuid starts with ``prefix``.
    """

    def __init__(self, broker: str, prefix: str) -> None:
        self.app = Celery("tap", broker=broker, set_as_current=False)
        self.prefix = prefix
        self.arrivals: list[tuple[float, dict[str, Any]]] = []
        self._probed = threading.Event()
        self._receiver: Any = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _on_event(self, event: dict[str, Any]) -> None:
        uuid = event.get("uuid") or ""
        if uuid == self.prefix + "probe":
            self._probed.set()
        elif uuid.startswith(self.prefix):
            self.arrivals.append((time.monotonic(), event))

    def _run(self) -> None:
        with self.app.connection_for_read() as conn:
            self._receiver = self.app.events.Receiver(conn, handlers={"*": self._on_event}, routing_key="#")
            self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def __enter__(self) -> EventTap:
        self._thread.start()
        with self.app.connection_for_write() as conn:
            dispatcher = self.app.events.Dispatcher(conn, hostname="tap@test")
            deadline = time.monotonic() + 20
            while not self._probed.wait(0.1):  # Redis pub/sub keeps nothing: probe until we listen
                assert time.monotonic() < deadline, "the event tap never heard its probe"
                # Not a task event, so no pushserver merges or records it.
                dispatcher.send("tap-probe", uuid=self.prefix + "probe")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._receiver is not None:
            self._receiver.should_stop = True
        self._thread.join(5)
        self.app.close()

    @property
    def events(self) -> list[dict[str, Any]]:
        return [event for _, event in self.arrivals]

    def wait_for(self, count: int, timeout: float = 30) -> list[dict[str, Any]]:
        wait_until(lambda: len(self.arrivals) >= count, timeout, f"{count} events at the tap")
        return self.events


def identity(event: dict[str, Any]) -> tuple[Any, ...]:
    return event["type"], event["uuid"], event["timestamp"], event.get("hostname")


# -- reading the log: order, filters, formats ---------------------------------------------------------


async def test_export_from_the_log_in_recorded_order_with_filters(
    stack: Stack, mongo: str, mongo_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    now = float(int(time.time()))  # whole seconds: ISO-8601 with microseconds states them exactly
    old = task_events("exp-old", "workers.tasks.predict", now - 3 * 3600)
    recent = task_events("exp-recent", "workers.tasks.resize_and_watermark", now - 1800)
    other = task_events("exp-other", "workers.tasks.predict", now - 1700, steps=1)
    # Two events at one timestamp: replay orders ties by _id, as MongoDB would sort (timestamp, _id).
    tie = {
        "type": "task-progress",
        "uuid": "exp-other",
        "timestamp": other[-2]["timestamp"],
        "hostname": "h",
        "current": 9,
        "total": 9,
    }
    documents = await seed(mongo, mongo_db, old + recent + other + [tie])
    source = ["--mongo", mongo, "--mongo-db", mongo_db]

    everything = replay(*source)
    assert everything.returncode == 0, everything.stderr
    assert lines(everything.stdout) == ordered(documents)
    assert everything.stderr.strip() == f"replayed {len(documents)} events (0 skipped)"
    assert [event_id(e) for e in lines(everything.stdout)] == [
        d["_id"] for d in sorted(documents, key=lambda d: (d["timestamp"], d["_id"]))
    ]

    def of(*task_ids: str) -> list[dict[str, Any]]:
        return ordered(d for d in documents if d["task_id"] in task_ids)

    assert lines(replay(*source, "--task", "exp-recent").stdout) == of("exp-recent")
    assert lines(replay(*source, "--task", "exp-recent", "--task", "exp-old").stdout) == of("exp-recent", "exp-old")
    # --name: every event of the tasks whose sent/received event has that name.
    assert lines(replay(*source, "--name", "workers.tasks.predict").stdout) == of("exp-old", "exp-other")
    assert lines(replay(*source, "--name", "workers.tasks.predict", "--task", "exp-old").stdout) == of("exp-old")
    assert lines(replay(*source, "--name", "no.such.task").stdout) == []
    # Relative and ISO-8601 windows.
    assert lines(replay(*source, "--since", "-2h").stdout) == of("exp-recent", "exp-other")
    assert lines(replay(*source, "--until", "-1h").stdout) == of("exp-old")
    start, end = recent[2]["timestamp"], recent[-1]["timestamp"]
    iso = [time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z" for t in (start, end)]
    window = lines(replay(*source, "--task", "exp-recent", "--since", iso[0], "--until", iso[1]).stdout)
    assert window == of("exp-recent")[2:]

    # Many tasks of one name are matched here rather than by a huge $in: same events, same count.
    monkeypatch.setattr(replay_module, "MAX_IN_IDS", 1)
    source_of_many = MongoSource(mongo, mongo_db, EventFilter(names=frozenset({"workers.tasks.predict"})))
    try:
        assert source_of_many.count() == len(of("exp-old", "exp-other"))
        assert list(source_of_many.events(Rejects(print))) == of("exp-old", "exp-other")
    finally:
        source_of_many.close()

    # The environment names the log when no --mongo is given, as for serve.
    from_env = replay("--task", "exp-old", env={"PUSHSERVER_MONGO_URL": mongo, "PUSHSERVER_MONGO_DB": mongo_db})
    assert lines(from_env.stdout) == of("exp-old")

    # --to FILE writes exactly what stdout shows, and --from reads it back unchanged.
    export = tmp_path / "all.jsonl"
    assert replay(*source, "--to", str(export)).returncode == 0
    assert export.read_text() == everything.stdout
    again = replay("--from", str(export))
    assert again.returncode == 0 and again.stdout == everything.stdout


async def test_a_document_that_is_not_an_event_is_skipped_and_named(stack: Stack, mongo: str, mongo_db: str):
    good = await seed(mongo, mongo_db, task_events("doc-ok", "n", time.time() - 60, steps=0))
    with MongoClient(mongo, serverSelectionTimeoutMS=3000) as client:
        client[mongo_db][COLLECTION].insert_many(
            [
                {"_id": "broken-1", "task_id": "doc-bad", "type": "task-started", "timestamp": time.time() - 30},
                {
                    "_id": "broken-2",
                    "task_id": "doc-bad",
                    "type": "task-started",
                    "timestamp": time.time() - 20,
                    "event": {"type": "task-started", "timestamp": time.time() - 20},
                },
            ]
        )
    done = replay("--mongo", mongo, "--mongo-db", mongo_db)
    assert done.returncode == 0
    assert lines(done.stdout) == ordered(good)
    assert f"{COLLECTION}/broken-1: not an event log document" in done.stderr
    assert f'{COLLECTION}/broken-2: not a task event: task-started without a string "uuid"' in done.stderr
    assert done.stderr.splitlines()[-1] == f"replayed {len(good)} events (2 skipped)"
    strict = replay("--mongo", mongo, "--mongo-db", mongo_db, "--strict")
    assert strict.returncode == 2 and f"{COLLECTION}/broken-1" in strict.stderr


def test_unreachable_mongodb_or_broker_is_one_line_and_exit_2(tmp_path: Path):
    nobody = free_port()
    started = time.monotonic()
    done = replay("--mongo", f"mongodb://127.0.0.1:{nobody}", "--task", "x")
    assert time.monotonic() - started < 15
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"pushserver: error: cannot reach MongoDB at mongodb://127.0.0.1:{nobody} (no server answered within 3 s)"
    )

    events = tmp_path / "e.jsonl"
    events.write_bytes(to_json_line({"type": "task-started", "uuid": "u", "timestamp": 1.0}))
    done = replay("--from", str(events), "--to", "broker", "--broker", f"redis://:hush@127.0.0.1:{nobody}/0")
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"pushserver: error: cannot reach the broker at redis://:**@127.0.0.1:{nobody}/0")


# -- republishing onto the broker --------------------------------------------------------------------


async def test_republished_events_arrive_as_recorded_and_the_log_stores_them_once(
    stack: Stack, server: Server, mongo: str, mongo_db: str
):
    originals = await seed(
        mongo,
        mongo_db,
        task_events("once-a", "workers.tasks.predict", time.time() - 100)
        + task_events("once-b", "workers.tasks.predict", time.time() - 99, host="celery@other"),
    )
    copy_db = mongo_db + "_copy"
    # Two recorders: one writes into the log the events came from, one into an empty one.
    same, same_url = start_pushserver(
        "replay-rec-same",
        stack.broker,
        stack.backend,
        stack.log_dir,
        secret=server.secret,
        extra=["--mongo", mongo, "--mongo-db", mongo_db],
    )
    fresh, fresh_url = start_pushserver(
        "replay-rec-copy",
        stack.broker,
        stack.backend,
        stack.log_dir,
        secret=server.secret,
        extra=["--mongo", mongo, "--mongo-db", copy_db],
    )
    try:
        for url in (same_url, fresh_url):
            wait_until(lambda: is_ready(url), 20, "recorder ready")
        with EventTap(stack.broker, "once-") as tap:
            done = replay(
                "--mongo", mongo, "--mongo-db", mongo_db, "--to", "broker", "--broker", stack.broker, "--speed", "max"
            )
            assert done.returncode == 0, done.stderr
            assert done.stderr.strip() == f"replayed {len(originals)} events (0 skipped)"
            received = tap.wait_for(len(originals))
        # Any receiver sees the recorded worker names and timestamps, and the same event identity.
        assert sorted(map(identity, received)) == sorted(identity(document_to_event(d)) for d in originals)
        assert sorted(event_id(e) for e in received) == sorted(d["_id"] for d in originals)

        wait_until(lambda: len(recorded(mongo, copy_db)) == len(originals), 20, "the copy recorded")
        assert {d["_id"] for d in recorded(mongo, copy_db)} == {d["_id"] for d in originals}
        wait_until(lambda: duplicates(same_url) >= len(originals), 20, "the original log to see duplicates")
        assert len(recorded(mongo, mongo_db)) == len(originals)  # stored once

        # A second replay into the copy changes nothing either.
        assert (
            replay(
                "--mongo", mongo, "--mongo-db", mongo_db, "--to", "broker", "--broker", stack.broker, "--speed", "max"
            ).returncode
            == 0
        )
        wait_until(lambda: duplicates(fresh_url) >= len(originals), 20, "the copy to see duplicates")
        assert len(recorded(mongo, copy_db)) == len(originals)
    finally:
        same.stop()
        fresh.stop()


def duplicates(url: str) -> float:
    for line in http_get(url + "/metrics")[1].decode().splitlines():
        if line.startswith("pushserver_eventlog_duplicates_total "):
            return float(line.split()[1])
    return 0.0


async def test_speed_10_keeps_the_order_and_a_tenth_of_the_gaps(stack: Stack, mongo: str, mongo_db: str):
    start = time.time() - 600
    events = (
        task_events("speed-a", "n", start, gap=1.0, steps=3)
        + task_events("speed-b", "n", start + 2.2, gap=1.5, steps=2)
        + task_events("speed-c", "n", start + 6.1, gap=1.1, steps=4)
    )
    documents = await seed(mongo, mongo_db, events)
    expected = ordered(documents)
    span = expected[-1]["timestamp"] - expected[0]["timestamp"]
    assert span / 10 >= 1.0
    with EventTap(stack.broker, "speed-") as tap:
        done = replay(
            "--mongo", mongo, "--mongo-db", mongo_db, "--to", "broker", "--broker", stack.broker, "--speed", "10"
        )
        assert done.returncode == 0, done.stderr
        tap.wait_for(len(expected))
    assert [identity(e) for e in tap.events] == [identity(e) for e in expected]
    took = tap.arrivals[-1][0] - tap.arrivals[0][0]
    assert 0.5 * span / 10 <= took <= 3 * span / 10, (took, span)
    # Each event is due at start + offset / 10; none may come early (allowing for timer and pub/sub jitter).
    first_arrival, first_stamp = tap.arrivals[0][0], expected[0]["timestamp"]
    for arrived, event in tap.arrivals:
        assert arrived - first_arrival >= (event["timestamp"] - first_stamp) / 10 - 0.05


def test_ctrl_c_stops_cleanly_with_a_count(stack: Stack, tmp_path: Path):
    stream = tmp_path / "slow.jsonl"
    start = time.time()
    stream.write_bytes(
        b"".join(
            to_json_line(
                {
                    "type": "task-progress",
                    "uuid": f"intr-{i}",
                    "timestamp": start + i * 0.3,
                    "hostname": "celery@slow",
                    "current": i,
                    "total": 30,
                }
            )
            for i in range(30)
        )
    )
    with EventTap(stack.broker, "intr-") as tap:
        # No --speed: republishing defaults to the recorded pace (9 s here).
        proc = subprocess.Popen(
            [PUSHSERVER, "replay", "--from", str(stream), "--to", "broker", "--broker", stack.broker],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=hermetic_env(),
        )
        try:
            tap.wait_for(3, timeout=30)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
        time.sleep(0.5)
    assert proc.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("replay interrupted: ") and last.endswith(" of 30 events sent"), err
    sent = int(last.split()[2])
    assert 3 <= sent < 30
    assert len(tap.events) == sent
    assert "Traceback" not in err


def test_progress_bar_only_on_a_terminal(tmp_path: Path):
    stream = tmp_path / "bar.jsonl"
    stream.write_bytes(
        b"".join(to_json_line({"type": "task-started", "uuid": f"bar-{i}", "timestamp": 1.0 + i}) for i in range(50))
    )
    piped = replay("--from", str(stream), "--to", str(tmp_path / "piped.jsonl"))
    assert piped.stderr == "replayed 50 events (0 skipped)\n"

    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            [PUSHSERVER, "replay", "--from", str(stream), "--to", str(tmp_path / "tty.jsonl")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=follower,
            env={**hermetic_env(), "TERM": "xterm-256color", "COLUMNS": "100"},
        )
        os.close(follower)
        output = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
        assert proc.wait(30) == 0
    finally:
        os.close(leader)
    text = output.decode(errors="replace")
    assert "50/50" in text and "replay" in text
    assert text.rstrip().endswith("replayed 50 events (0 skipped)")


async def test_events_of_tasks_the_server_never_saw_do_not_hurt_it(stack: Stack, server: Server, tmp_path: Path):
    """Odd but well-formed events for unknown tasks: the server merges what it can and stays healthy."""
    now = time.time()
    odd = [
        {
            "type": "task-succeeded",
            "uuid": "odd-done",
            "timestamp": now,
            "hostname": "celery@ghost",
            "result": "42",
            "runtime": 0.1,
        },
        {"type": "task-progress", "uuid": "odd-progress", "timestamp": now, "current": "three", "total": 0},
        {
            "type": "task-progress",
            "uuid": "odd-progress",
            "timestamp": now + 0.1,
            "current": 5,
            "total": 2,
            "message": {"nested": ["x"]},
        },
        {"type": "task-failed", "uuid": "odd-failed", "timestamp": now, "exception": None, "traceback": None},
        {"type": "task-retried", "uuid": "odd-retried", "timestamp": now, "exception": 7},
        {
            "type": "task-revoked",
            "uuid": "odd-revoked",
            "timestamp": now,
            "terminated": True,
            "signum": 15,
            "expired": False,
        },
        {"type": "task-rejected", "uuid": "odd-rejected", "timestamp": now, "requeue": False},
        {"type": "task-started", "uuid": "odd-done", "timestamp": now - 5},  # late: must not re-open it
        {"type": "task-received", "uuid": "odd-named", "timestamp": now, "name": 12345, "retries": "many"},
        {
            "type": "task-succeeded",
            "uuid": "odd-future",
            "timestamp": now + 86400 * 365,
            "result": {"a": 1},
            "runtime": "slow",
        },
        {"type": "task-succeeded", "uuid": "odd-past", "timestamp": 0, "result": None},
        {"type": "task-cancelled", "uuid": "odd-cancelled", "timestamp": now},
        {"type": "task-invented", "uuid": "odd-invented", "timestamp": now, "anything": [1, 2]},
        {"type": "task-succeeded", "uuid": "odd-big", "timestamp": now, "result": "x" * 200_000},
    ]
    stream = tmp_path / "odd.jsonl"
    stream.write_bytes(b"".join(to_json_line(e) for e in odd))
    fresh, url = start_pushserver("replay-odd", stack.broker, stack.backend, stack.log_dir, secret=server.secret)
    try:
        wait_until(lambda: is_ready(url), 20, "ready")
        ids = sorted({e["uuid"] for e in odd})
        w = await Watcher(url).connect(server.token(*ids))
        try:
            ack = await w.subscribe(ids)
            assert ack["ok"] is True
            done = replay("--from", str(stream), "--to", "broker", "--broker", stack.broker, "--speed", "max")
            assert done.returncode == 0, done.stderr
            assert (await w.wait_state("odd-done", "SUCCESS"))["result"] == "42"
            await w.wait_state("odd-revoked", "REVOKED")
            await w.wait_state("odd-big", "SUCCESS")
            await asyncio_sleep(1.0)
            states = [u["state"] for u in w.updates["odd-done"] if u["state"] != "PENDING"]
            assert set(states) == {"SUCCESS"}, states  # the late task-started did not re-open it
        finally:
            await w.close()
        assert http_status(url + "/healthz") == 200 and is_ready(url)
        assert http_status(server.url + "/healthz") == 200
    finally:
        fresh.stop()
    log = fresh.log()
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]


async def asyncio_sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


# -- the whole story: record, export, replay into a fresh server -----------------------------------------


async def test_record_export_and_replay_into_a_fresh_server_gives_the_same_final_states(
    stack: Stack, server: Server, mongo: str, mongo_db: str, tmp_path: Path
):
    recorder, rec_url = start_pushserver(
        "replay-recorder",
        stack.broker,
        stack.backend,
        stack.log_dir,
        secret=server.secret,
        extra=["--mongo", mongo, "--mongo-db", mongo_db],
    )
    try:
        wait_until(lambda: is_ready(rec_url), 20, "recorder ready")
        results = [
            stack.send("demo_progress", 3, 0.05),
            stack.send("demo_progress", 2, 0.05, queue=PREFORK_QUEUE),
            stack.send("fail", "replayed failure"),
            stack.send("flaky", 1, 0.2),
        ]
        ids = [r.id for r in results]
        # Wait through the result backend, not a subscription: subscribing to a running
        # task makes the server merge the backend's PROGRESS meta, stamped "now" (see the
        # report on this test), which can outrank the task's last progress event.
        for result in results:
            result.get(timeout=30, propagate=False)
        # Each task's terminal event is in the log (the writer batches in the background).
        wait_until(
            lambda: (
                {d["task_id"] for d in recorded(mongo, mongo_db, ids) if d["type"] in ("task-succeeded", "task-failed")}
                == set(ids)
            ),
            20,
            "terminal events logged",
        )
        time.sleep(0.5)
        first = await final_states(rec_url, server, ids)
        assert [first[i]["state"] for i in ids] == ["SUCCESS", "SUCCESS", "FAILURE", "SUCCESS"]
    finally:
        recorder.stop()

    export = tmp_path / "story.jsonl"
    args = ["--mongo", mongo, "--mongo-db", mongo_db, "--to", str(export)]
    for task_id in ids:
        args += ["--task", task_id]
    done = replay(*args)
    assert done.returncode == 0, done.stderr
    exported = lines(export.read_text())
    assert len(exported) == len(recorded(mongo, mongo_db, ids)) >= 4 * 4

    # A server that never saw these tasks, with an empty result backend: all it knows comes from the replay.
    empty_backend = f"redis://127.0.0.1:{stack.redis_port}/2"
    fresh, fresh_url = start_pushserver(
        "replay-fresh", stack.broker, empty_backend, stack.log_dir, secret=server.secret
    )
    try:
        wait_until(lambda: is_ready(fresh_url), 20, "fresh server ready")
        w = await Watcher(fresh_url).connect(server.token(*ids))
        try:
            ack = await w.subscribe(ids)
            assert [t["state"] for t in ack["tasks"]] == ["PENDING"] * len(ids)
            done = replay("--from", str(export), "--to", "broker", "--broker", stack.broker, "--speed", "max")
            assert done.returncode == 0, done.stderr
            assert done.stderr.strip() == f"replayed {len(exported)} events (0 skipped)"
            for task_id in ids:
                await w.wait_for(task_id, lambda s, t=task_id: s["state"] == first[t]["state"])
        finally:
            await w.close()
        second = await final_states(fresh_url, server, ids)
    finally:
        fresh.stop()
    for task_id in ids:
        assert second[task_id] == first[task_id]


async def final_states(url: str, server: Server, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Each task's snapshot once it is final, from a client that subscribes now."""
    w = await Watcher(url).connect(server.token(*ids))
    try:
        ack = await w.subscribe(ids)
        for state in ack["tasks"]:
            if state["state"] not in READY_STATES:
                await w.wait_for(state["task_id"], lambda s: s["state"] in READY_STATES)
        ack = await w.subscribe(ids)
        return {state["task_id"]: state for state in ack["tasks"]}
    finally:
        await w.close()
