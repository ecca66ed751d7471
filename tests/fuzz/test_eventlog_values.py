"""Oddly typed event values through a real pushserver into its MongoDB event log (nx-27017).

kombu's JSON decoder turns ``{"__type__": "uuid" | "decimal" | "date" | "time" | "datetime" | "bytes" |
"base64", "__value__": ...}`` objects into Python objects BSON cannot hold, and JSON itself carries
integers of any size, NaN, lone surrogates and texts of megabytes. Each example publishes a batch of
such task events and, behind it, a plain *sentinel* event; the sentinel's document reaching MongoDB
proves the writer is alive and not stuck behind the batch. Every odd event must be logged (rewritten)
or counted as dropped, never silently lost. Sets cannot cross: the event receiver accepts JSON only
(tests/unit/test_eventlog.py covers them).
"""

from __future__ import annotations

import base64
import itertools
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pymongo import MongoClient

from dev.metrics import metric_sum, scrape
from dev.stack import start_mongo, start_pushserver, wait_until
from pushserver.eventlog import COLLECTION

from .stack import ALLOWED_ORIGIN, AUDIENCE, ISSUER, EventPublisher, FuzzStack, Server
from .strategies import CHARS, TASK_EVENT_TYPES
from .support import count_case, fuzz_settings

pytestmark = pytest.mark.integration

DB = "pushserver_fuzz"
SENTINEL_WAIT = 15.0
_runs = itertools.count()


def envelope(kind: str, value: Any) -> dict[str, Any]:
    """How kombu's JSON encoder writes a value it has a type for; its decoder builds the object back."""
    return {"__type__": kind, "__value__": value}


KOMBU_TYPED = st.one_of(
    st.uuids().map(lambda u: envelope("uuid", {"hex": u.hex})),
    st.decimals(allow_nan=False, allow_infinity=False).map(lambda d: envelope("decimal", str(d))),
    st.dates().map(lambda d: envelope("date", d.isoformat())),
    st.times().map(lambda t: envelope("time", t.isoformat())),
    st.datetimes(timezones=st.none() | st.timezones()).map(lambda d: envelope("datetime", d.isoformat())),
    st.binary(max_size=64).map(lambda b: envelope("base64", base64.b64encode(b).decode())),
    st.text(CHARS, max_size=20).map(lambda s: envelope("bytes", s)),
)
ODD_SCALARS = st.one_of(
    KOMBU_TYPED,
    st.integers(min_value=2**63, max_value=2**300) | st.integers(min_value=-(2**300), max_value=-(2**63) - 1),
    st.sampled_from([float("nan"), float("inf"), float("-inf")]),
    st.text(st.characters(categories=("Cs",)), min_size=1, max_size=3),  # lone surrogates
    st.integers(min_value=16 * 1024, max_value=2 << 20).map(lambda n: "h" * n),  # over the stored text limit
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=10),
)
KEYS = st.one_of(st.text(CHARS, max_size=8), st.sampled_from(["a\x00b", "$where", "a.b", "", "__type__"]))
ODD_VALUES = st.recursive(
    ODD_SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4), max_leaves=8
)
#: Fields the server reads, besides those it only logs.
FIELDS = st.sampled_from(
    [
        "result",
        "exception",
        "traceback",
        "args",
        "kwargs",
        "name",
        "hostname",
        "runtime",
        "retries",
        "current",
        "total",
        "message",
        "clock",
        "eta",
        "extra",
    ]
)


@st.composite
def odd_events(draw: st.DrawFn) -> list[dict[str, Any]]:
    """1-4 task events, each with 1-3 fields of odd values."""
    events = []
    for _ in range(draw(st.integers(1, 4))):
        fields = draw(st.dictionaries(FIELDS, ODD_VALUES, min_size=1, max_size=3))
        events.append({"type": draw(st.sampled_from(TASK_EVENT_TYPES)), **fields})
    return events


@pytest.fixture(scope="module")
def logged(fuzz_stack: FuzzStack) -> Iterator[tuple[Server, str]]:
    """A pushserver with the event log on, configured like ``main``, and its MongoDB URL."""
    mongo_proc, mongo_url = start_mongo(fuzz_stack.log_dir)
    expect = fuzz_stack.main.expect
    proc, url = start_pushserver(
        "pushserver-eventlog",
        fuzz_stack.broker,
        fuzz_stack.backend,
        fuzz_stack.log_dir,
        secret=",".join(expect.secrets),
        log_level="INFO",
        extra=[
            "--token-audience",
            AUDIENCE,
            "--token-issuer",
            ISSUER,
            "--cors",
            ALLOWED_ORIGIN,
            "--mongo",
            mongo_url,
            "--mongo-db",
            DB,
        ],
    )
    server = Server("eventlog", url, proc, expect)
    try:
        wait_until(server.is_ready, 20, "the event-log server's /readyz")
        yield server, mongo_url
    finally:
        proc.stop()
        mongo_proc.stop()
    assert "Traceback" not in proc.log(), proc.log()[-3000:]


@pytest.fixture(scope="module")
def publisher(fuzz_stack: FuzzStack) -> Iterator[EventPublisher]:
    p = EventPublisher(fuzz_stack.broker)
    yield p
    p.close()


@pytest.fixture(scope="module")
def mongo(logged: tuple[Server, str]) -> Iterator[Any]:
    with MongoClient(logged[1], serverSelectionTimeoutMS=3000) as client:
        yield client[DB][COLLECTION]


def uncounted(server: Server) -> tuple[float, float]:
    """(events the receiver dropped as malformed, e.g. a ``clock`` Celery cannot read; events the event log
    counted as not logged: shed from its queue, refused by MongoDB, or unencodable)."""
    samples = scrape(server.url)
    return (
        metric_sum(samples, "pushserver_events_malformed"),
        metric_sum(samples, "pushserver_eventlog_dropped_total"),
    )


@fuzz_settings(150)
@given(events=odd_events())
@example(events=[{"type": "task-succeeded", "result": envelope("uuid", {"hex": "12" * 16})}])
@example(events=[{"type": "task-failed", "exception": float("nan"), "traceback": "t" * (2 << 20)}])
@example(
    events=[
        {"type": "task-received", "args": 2**200, "kwargs": envelope("base64", "AP8=")},
        {"type": "task-progress", "current": -(2**64), "message": "\ud800"},
    ]
)
@example(events=[{"type": "task-started", "extra": {"a\x00b": [envelope("date", "2026-01-01")]}}])
def test_odd_values_reach_the_event_log_and_never_stop_it(
    logged: tuple[Server, str], publisher: EventPublisher, mongo: Any, events: list[dict[str, Any]]
) -> None:
    count_case("events: odd values to the event log")
    server, _ = logged
    run = f"odd-{next(_runs)}-{uuid.uuid4().hex[:8]}"
    malformed_before, dropped_before = uncounted(server)
    bodies = [
        publisher.task_event(e["type"], f"{run}-{i}", **{k: v for k, v in e.items() if k != "type"})
        for i, e in enumerate(events)
    ]
    publisher.publish(bodies)
    sentinel = f"{run}-sentinel"
    publisher.publish(publisher.task_event("task-succeeded", sentinel, result="'ok'"), routing_key="task.succeeded")
    wait = SENTINEL_WAIT + len(json.dumps(bodies, default=str)) / 1e6
    wait_until(
        lambda: mongo.count_documents({"task_id": sentinel}) == 1,
        wait,
        "the sentinel event logged behind the odd ones (the writer stopped or is stuck)",
    )
    status = server.readyz()
    assert status["event_log"] == "ok", status
    logged_ids = {d["task_id"] for d in mongo.find({"task_id": {"$regex": f"^{run}-"}}, {"task_id": 1})}
    missing = {f"{run}-{i}" for i in range(len(events))} - logged_ids
    malformed_after, dropped_after = uncounted(server)
    malformed, dropped = malformed_after - malformed_before, dropped_after - dropped_before
    assert len(missing) <= malformed + dropped, f"{len(missing)} odd events neither logged nor counted as dropped"
    assert dropped == 0, f"the event log dropped {dropped:g} event(s) MongoDB refused even rewritten"
