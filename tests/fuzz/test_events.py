"""Random event dicts injected on the private Redis's ``celeryev`` exchange, as a worker would publish them.

After every injected message a *sentinel* — a well-formed ``task-succeeded``
for a task the watcher has just subscribed to — is published behind it. Its
update reaching the watcher proves the server took the junk in its stride:
still receiving, still merging, still emitting, without a reconnect (a
receiver reconnect loses whatever was published meanwhile). Every update
the watcher gets on the way is checked to be a sane TaskState.
"""

from __future__ import annotations

import itertools
import json
import math
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from dev.metrics import scrape
from dev.stack import wait_until

from .model import STATES, TASK_STATE_FIELDS
from .stack import EventPublisher, FuzzStack, Server
from .strategies import TASK_EVENT_TYPES, celery_events, undecodable_events
from .support import LoopThread, SocketClient, count_case, fill, fuzz_settings, rss_mib

pytestmark = pytest.mark.integration

#: Task ids the injected events are about; the watcher subscribes to all of them, so every merge is emitted.
POOL = [f"fuzz-event-{i}" for i in range(6)] + [str(uuid.UUID(int=i)) for i in range(3)]
SENTINEL_WAIT = 2.5  # it normally takes milliseconds
#: The most each text of a task:update may hold, in bytes of UTF-8: the server cuts them there
#: (docs/security.md, "Limits"). A result is such a text when its format is "repr".
TEXT_BYTES = {"name": 255, "worker": 255, "exception_type": 255, "exception": 4096, "traceback": 16384}
RESULT_REPR_BYTES = 4096
RESULT_JSON_BYTES = 64 * 1024  # --max-result-bytes, as JSON
PROGRESS_MESSAGE_BYTES = 1024
#: The largest task:update but its result, as escaped JSON: each byte of text at most 6 characters
#: ("\u0000" for a control character), and 2 KiB for the rest.
MAX_UPDATE_BYTES = 6 * (sum(TEXT_BYTES.values()) + PROGRESS_MESSAGE_BYTES) + 2048
_sentinels = itertools.count()


@pytest.fixture(scope="module")
def publisher(fuzz_stack: FuzzStack) -> Iterator[EventPublisher]:
    p = EventPublisher(fuzz_stack.broker)
    yield p
    p.close()


@pytest.fixture(scope="module")
def watcher(main: Server, client_loop: LoopThread) -> Iterator[SocketClient]:
    """Connected with a token for every task."""
    w = SocketClient(client_loop, main.url, token=main.token(["*"], ttl=3600))
    assert w.connect(), w.connect_error
    yield w
    w.close()


def reconnects(server: Server) -> int:
    return int(server.readyz()["reconnects"])


def check_update(update: Any) -> None:
    """A task:update is a sane TaskState: all fields, a known state, finite numbers, bounded size."""
    assert isinstance(update, dict) and TASK_STATE_FIELDS <= set(update), update
    assert update["state"] in STATES, update
    assert isinstance(update["task_id"], str)
    json.dumps(update, allow_nan=False)  # raises on NaN/Infinity: a browser's JSON.parse would too
    rest = len(json.dumps({**update, "result": None}))
    assert rest <= MAX_UPDATE_BYTES, f"a {rest}-byte task:update (its result aside) for {update['task_id'][:40]!r}"
    for name, limit in TEXT_BYTES.items():
        check_text(update, name, update[name], limit)
    message = (update["progress"] or {}).get("message")
    check_text(update, "progress message", message, PROGRESS_MESSAGE_BYTES)
    if update["result_format"] == "json":
        size = len(orjson.dumps(update["result"]))
        assert size <= RESULT_JSON_BYTES, f"a {size}-byte JSON result for {update['task_id'][:40]!r}"
    else:
        check_text(update, "result", update["result"], RESULT_REPR_BYTES)
    for name in ("sent_at", "received_at", "started_at", "finished_at", "updated_at", "runtime"):
        value = update[name]
        assert value is None or (isinstance(value, (int, float)) and math.isfinite(value)), (name, value)


def check_text(update: dict[str, Any], name: str, value: Any, limit: int) -> None:
    """A text of a task:update is null or at most ``limit`` bytes of UTF-8 (encode() raises on a lone surrogate)."""
    size = None if value is None else len(value.encode())
    assert size is None or size <= limit, f"a {size}-byte {name} for {update['task_id'][:40]!r} (at most {limit})"


def ready(server: Server) -> None:
    """Wait out a receiver reconnect an earlier message caused, so it is not blamed on the next one."""
    wait_until(lambda: server.readyz()["ready"], 20, f"{server.name} to be ready")


def fresh_pool() -> dict[str, str]:
    """Per-example names for the pool's tasks: each example starts from tasks nobody has heard of, so a
    failing example fails again when Hypothesis replays it."""
    nonce = uuid.uuid4().hex[:8]
    return {task: f"{task}-{nonce}" for task in POOL}


def inject_and_check(
    server: Server,
    publisher: EventPublisher,
    watcher: SocketClient,
    body: Any,
    routing_key: str = "task.multi",
    watch: list[str] = (),
) -> None:
    """Publish ``body``, then a sentinel behind it; fail unless the sentinel's update arrives untroubled.

    ``watch``: tasks to subscribe to first, so that what ``body`` does to them is emitted too.
    """
    watcher.ensure_connected()
    status = server.readyz()
    if not status["ready"]:
        ready(server)
        status = server.readyz()
    before = int(status["reconnects"])
    sentinel = f"sentinel-{next(_sentinels)}-{uuid.uuid4().hex[:8]}"
    watched = [sentinel, *watch]
    assert watcher.call("subscribe", {"task_ids": watched}).ack[0]["ok"] is True
    try:
        watcher.received.clear()
        publisher.publish(body, routing_key=routing_key)
        publisher.publish(
            publisher.task_event("task-succeeded", sentinel, result="'sentinel'", runtime=0.01),
            routing_key="task.succeeded",
        )
        # Megabytes of JSON take the receiver a while to decode: a second more per MB.
        wait = SENTINEL_WAIT + len(json.dumps(body, default=str)) / 1e6
        got = watcher.wait_received(
            lambda e, d: (
                e == "task:update"
                and isinstance(d, dict)
                and d.get("task_id") == sentinel
                and d.get("state") == "SUCCESS"
            ),
            wait,
        )
        after = reconnects(server)
        assert after == before, (
            f"the event receiver reconnected ({before} -> {after}) after this message: events published"
            f" meanwhile are lost for good"
        )
        assert got is not None, (
            f"the sentinel's update never came: the server stopped delivering (alive: {server.proc.alive()})"
        )
        for name, data in watcher.received:
            if name == "task:update":
                check_update(data)
    finally:
        watcher.call("unsubscribe", {"task_ids": watched})


@fuzz_settings(1500)
@given(
    body=st.one_of(celery_events(POOL), st.lists(celery_events(POOL), min_size=1, max_size=4)),
    routing_key=st.sampled_from(["task.multi", "task.succeeded", "task.progress", "worker.heartbeat", "x"]),
)
@example(body={"type": "task-started", "uuid": POOL[2], "timestamp": math.nan}, routing_key="task.started")
@example(
    body={"type": "task-failed", "uuid": POOL[3], "timestamp": math.inf, "exception": None}, routing_key="task.failed"
)
@example(body={"type": "task-succeeded", "uuid": 12345}, routing_key="task.succeeded")
# 2 699 characters, 10 796 bytes: found over a 4 096-character limit, 32 774 bytes as escaped JSON.
@example(body={"type": "task-succeeded", "uuid": POOL[4], "result": "😀" * 2699}, routing_key="task.succeeded")
@example(body={"type": "task-failed", "uuid": POOL[5], "exception": "E('\ud800')"}, routing_key="task.failed")
def test_events_celery_can_decode(
    main: Server, publisher: EventPublisher, watcher: SocketClient, body: Any, routing_key: str
) -> None:
    """Anything Celery's receiver itself can decode: the server must merge or ignore it, and carry on."""
    count_case("events: decodable junk")
    event(str(body.get("type") if isinstance(body, dict) else "batch")[:20])
    pool = fresh_pool()
    body = fill(body, pool)
    # One assertion for everything, so that a failure whose first symptom depends on how events
    # fell into batches still reads as the same failure when Hypothesis replays it.
    problems = []
    try:
        inject_and_check(main, publisher, watcher, body, routing_key, watch=list(pool.values()))
    except AssertionError as exc:
        problems.append(str(exc).splitlines()[0])
    # The snapshot path serialises what the merge kept: never a 500.
    for event_ in body if isinstance(body, list) else [body]:
        task_id = event_.get("uuid")
        if (
            isinstance(task_id, str)
            and 0 < len(task_id) <= 255
            and not task_id.isspace()
            and not set(task_id) & set("{}")
        ):  # see test_http.py: ids with braces are unreachable
            status, text = main.get(
                f"/tasks/{quote(task_id, safe='')}", {"Authorization": "Bearer " + main.token(["*"])}
            )
            if status != 200:
                problems.append(f"GET /tasks/{{id}}: {status} {text[:80]!r}")
    assert not problems, "; ".join(problems)


@pytest.mark.parametrize(
    "fields",
    [
        {"type": "task-progress", "current": 2**70, "total": 3},
        {"type": "task-progress", "current": 1, "total": 2, "percent": -(2**63) - 1},
        {"type": "task-succeeded", "runtime": 2**64, "result": "'x'"},
    ],
    ids=["progress-current", "progress-percent", "runtime"],
)
def test_integers_beyond_64_bits(main: Server, publisher: EventPublisher, watcher: SocketClient, fields: dict) -> None:
    """JSON integers have no size limit and kombu's decoder keeps them exact; orjson, the server's encoder,
    stops at 64 bits. Such a number in an event must not stop the emit, the snapshot or the batch."""
    count_case("events: integers beyond 64 bits")
    task_id = f"bigint-{uuid.uuid4().hex[:8]}"
    assert watcher.call("subscribe", {"task_id": task_id}).ack[0]["ok"] is True
    body = publisher.task_event(fields["type"], task_id, **{k: v for k, v in fields.items() if k != "type"})
    problems = []
    try:
        inject_and_check(main, publisher, watcher, body)
    except AssertionError as exc:
        problems.append(f"delivery: {str(exc).splitlines()[0]}")
    status, text = main.get(f"/tasks/{task_id}", {"Authorization": "Bearer " + main.token([task_id])})
    if status != 200:
        problems.append(f"GET /tasks/{{id}}: {status} {text[:60]!r}")
    outcome = watcher.call("subscribe", {"task_id": task_id})
    if not outcome.acked:
        problems.append("subscribe: no ack (the snapshot cannot be encoded)")
    assert not problems, f"{fields}: " + "; ".join(problems)


@fuzz_settings(100, shrink=False)
@given(body=undecodable_events(POOL))
@example(body={"uuid": POOL[0], "hostname": "h", "clock": 1, "timestamp": 1.0, "utcoffset": 0})
@example(body={"type": "task-started", "uuid": POOL[0], "clock": "1", "timestamp": 1.0, "utcoffset": 0})
@example(body="hello")
def test_events_celery_cannot_decode(main: Server, publisher: EventPublisher, watcher: SocketClient, body: Any) -> None:
    """Messages that make ``Receiver.capture()`` itself raise (no ``type``, a text clock, a body that is
    not an object...). One bad message must cost that message, not a reconnect and everything in the gap."""
    count_case("events: undecodable messages")
    inject_and_check(main, publisher, watcher, body)


@pytest.mark.parametrize(
    "body,options",
    [
        ("not json at all", {"content_type": "application/json", "content_encoding": "utf-8", "serializer": None}),
        (
            b"\x80\x04K\x01.",
            {"content_type": "application/x-python-serialize", "content_encoding": "binary", "serializer": None},
        ),
        ("<xml/>", {"content_type": "application/xml", "content_encoding": "utf-8", "serializer": None}),
    ],
    ids=["invalid-json", "pickle", "unknown-content-type"],
)
def test_messages_the_receiver_refuses_to_decode(
    main: Server, publisher: EventPublisher, watcher: SocketClient, body: Any, options: dict
) -> None:
    """Bodies kombu cannot or must not decode (pickle is never accepted): dropped, nothing else lost."""
    count_case("events: undecodable content types")
    watcher.ensure_connected()
    before = reconnects(main)
    publisher.publish(body, routing_key="task.multi", **options)
    inject_and_check(main, publisher, watcher, publisher.task_event("task-started", POOL[0]))
    assert reconnects(main) == before


def test_unknown_event_types_do_not_grow_the_metrics(
    main: Server, publisher: EventPublisher, watcher: SocketClient
) -> None:
    """Each distinct event ``type`` must not become a new Prometheus series: label values come from the
    broker, and an unbounded label set is unbounded memory and an unusable /metrics."""
    count_case("events: unknown types")
    ready(main)
    publisher.publish(
        [
            {
                "type": f"junk-{uuid.uuid4().hex}",
                "uuid": "x",
                "hostname": "h",
                "clock": 1,
                "timestamp": time.time(),
                "utcoffset": 0,
            }
            for _ in range(300)
        ]
    )
    inject_and_check(main, publisher, watcher, publisher.task_event("task-started", POOL[1]))
    series = [s for s in scrape(main.url) if s.name == "pushserver_events_ingested_total"]
    known = len(TASK_EVENT_TYPES) + 3 + 2  # task events, worker-*, and a catch-all or two
    assert len(series) <= known, f"{len(series)} series of pushserver_events_ingested_total, e.g. {series[-1]}"


def test_a_huge_progress_message_is_not_pushed_whole(
    main: Server, publisher: EventPublisher, watcher: SocketClient
) -> None:
    """Results, exceptions and tracebacks are cut; a progress message of a megabyte must be too, or
    every subscriber receives the megabyte (pushserver.worker.report_progress cuts its own at 200 characters)."""
    count_case("events: huge progress message")
    ready(main)
    task_id = f"huge-progress-{uuid.uuid4().hex[:8]}"
    assert watcher.call("subscribe", {"task_id": task_id}).ack[0]["ok"] is True
    watcher.received.clear()
    publisher.publish(
        publisher.task_event("task-progress", task_id, current=1, total=2, message="m" * 1_000_000),
        routing_key="task.progress",
    )
    got = watcher.wait_received(
        lambda e, d: e == "task:update" and d.get("task_id") == task_id and d.get("event") == "task-progress", 5
    )
    assert got is not None, "no update for the progress event"
    assert got[1]["progress"]["message"] == "m" * PROGRESS_MESSAGE_BYTES
    check_update(got[1])


def test_oversized_task_ids_do_not_pin_memory(
    fuzz_stack: FuzzStack, main: Server, publisher: EventPublisher, watcher: SocketClient
) -> None:
    """No client can ever subscribe to a task id over 255 characters; events naming one must not be kept
    (64 events with 1 MiB ids would otherwise hold 64 MiB until evicted, and --max-tasks allows 100 000)."""
    count_case("events: oversized task ids")
    ready(main)
    before = rss_mib(main.proc.pid)
    for i in range(64):
        publisher.publish(
            publisher.task_event("task-started", f"{i:04d}" + "u" * (1 << 20)), routing_key="task.started"
        )
    inject_and_check(main, publisher, watcher, publisher.task_event("task-started", POOL[5]))
    grown = rss_mib(main.proc.pid) - before
    assert grown < 32, f"server memory grew by {grown:.0f} MiB after 64 events with 1 MiB task ids"


def test_a_real_task_after_the_storm(fuzz_stack: FuzzStack, main: Server, client_loop: LoopThread) -> None:
    """After everything above: a real Celery task, run by a real worker, reaches a fresh subscriber whole."""
    count_case("events: real task afterwards")
    assert main.get("/healthz")[0] == 200
    ready = main.readyz()
    assert main.is_ready() and ready["ready"] is True, ready
    result = fuzz_stack.celery.send_task("workers.tasks.demo_progress", args=(3, 0.2))
    client = SocketClient(client_loop, main.url)
    assert client.connect()
    try:
        ack = client.call("subscribe", {"task_id": result.id, "token": main.token([result.id])}).ack[0]
        assert ack["ok"] is True, ack
        done = client.wait_received(lambda e, d: e == "task:update" and d.get("state") == "SUCCESS", 30)
        assert done is not None, f"no SUCCESS; got {[d.get('state') for _, d in client.received]}"
        assert done[1]["result"] == 3 and done[1]["task_id"] == result.id, done
        states = [d["state"] for e, d in client.received if e == "task:update"]
        assert "PROGRESS" in states or ack["tasks"][0]["state"] in ("PROGRESS", "SUCCESS"), states
        assert result.get(timeout=10) == 3
    finally:
        client.close()
