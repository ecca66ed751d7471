"""The event log's pure parts: values made storable, the queue bounded in bytes, a stopped writer seen."""

from __future__ import annotations

import asyncio
import datetime
import decimal
import math
import uuid
from typing import Any

import bson
import pytest
from kombu.utils.json import loads

from pushserver.eventlog import MAX_EVENT_BYTES, TRUNCATED_FIELD, EventLog, event_id, event_to_document
from pushserver.metrics import Metrics
from pushserver.storable import TEXT_LIMIT, finite_only, storable

NOWHERE = "mongodb://127.0.0.1:9"  # nothing listens: the writer never gets to write, which these tests want


def task_event(kind: str = "task-succeeded", **fields: Any) -> dict[str, Any]:
    return {"type": kind, "uuid": "t-1", "hostname": "celery@h", "timestamp": 1.5, "clock": 3, **fields}


def bson_round_trip(event: dict[str, Any]) -> dict[str, Any]:
    """What MongoDB would store of an event the log recorded."""
    return bson.decode(bson.encode(event_to_document(storable(event).event)))["event"]


def test_a_plain_event_is_stored_as_it_is() -> None:
    event = task_event(result="'ok'", runtime=0.25, retries=0, eta=None, flag=True, clock=2**62)
    item = storable(event)
    assert item.event is event and item.changed == 0 and item.size >= 60
    assert bson_round_trip(event) == event


def test_the_values_kombu_decodes_are_made_storable() -> None:
    """What kombu's JSON decoder builds from {"__type__": ...} objects, and what JSON itself allows."""
    event = loads("""{"type": "task-succeeded", "uuid": "t-1", "timestamp": 1.5,
        "u": {"__type__": "uuid", "__value__": {"hex": "12345678123456781234567812345678"}},
        "d": {"__type__": "decimal", "__value__": "3.14159265358979323846264338327950288"},
        "dt": {"__type__": "datetime", "__value__": "2026-01-01T10:00:00+05:30"},
        "day": {"__type__": "date", "__value__": "2026-01-01"},
        "at": {"__type__": "time", "__value__": "10:00:00.5"},
        "raw": {"__type__": "base64", "__value__": "AP8="},
        "text": {"__type__": "bytes", "__value__": "abc"},
        "big": 123456789012345678901234567890, "neg": -9223372036854775809,
        "nested": {"deep": [1, {"u": {"__type__": "uuid", "__value__": {"hex": "00000000000000000000000000000001"}}}]},
        "lone": "\\ud800 surrogate", "nan": NaN, "inf": -Infinity}""")
    event["set"] = {3, 1, 2}
    event["tuple"] = (1, "a")
    event[7] = "a non-string key"
    event["nul\x00key"] = 1
    item = storable(event)
    assert item.changed >= 12
    stored = bson_round_trip(event)
    assert stored["u"] == "12345678-1234-5678-1234-567812345678"
    assert stored["d"] == "3.14159265358979323846264338327950288"
    assert stored["dt"] == "2026-01-01T10:00:00+05:30" and stored["day"] == "2026-01-01"
    assert stored["at"] == "10:00:00.500000"
    assert stored["raw"] == {"__type__": "base64", "__value__": "AP8="}
    assert stored["text"] == {"__type__": "base64", "__value__": "YWJj"}
    assert stored["big"] == "123456789012345678901234567890" and stored["neg"] == "-9223372036854775809"
    assert stored["nested"] == {"deep": [1, {"u": "00000000-0000-0000-0000-000000000001"}]}
    assert stored["lone"] == "\\ud800 surrogate"
    assert math.isnan(stored["nan"]) and stored["inf"] == -math.inf  # BSON doubles hold them
    assert stored["set"] == [1, 2, 3] and stored["tuple"] == [1, "a"]
    assert stored["7"] == "a non-string key" and stored["nul\\x00key"] == 1
    # The same rewrite on every replica: the _id agrees.
    assert event_id(storable(event).event) == event_id(storable(dict(event)).event)
    assert finite_only(stored)["nan"] == "NaN" and finite_only(stored)["inf"] == "-Infinity"


def test_texts_are_cut_and_depth_is_bounded() -> None:
    deep: Any = 1
    for _ in range(200):
        deep = {"d": deep}
    event = task_event(traceback="x" * (1 << 20), deep=deep, huge_int=2**20000)
    item = storable(event)
    assert len(item.event["traceback"]) == TEXT_LIMIT
    bson.encode(event_to_document(item.event))  # no InvalidDocument, no recursion error
    assert item.size < 3 * TEXT_LIMIT


class Collector:
    """Drops counted by a real Metrics registry."""

    def __init__(self) -> None:
        self.metrics = Metrics()
        self.metrics.watch_eventlog(lambda: 0)

    def value(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels or None) or 0.0


async def test_the_queue_is_bounded_in_bytes_and_sheds_progress_first() -> None:
    counted = Collector()
    log = EventLog(NOWHERE, max_queue_bytes=4 * MAX_EVENT_BYTES, metrics=counted.metrics)
    try:
        big = "p" * 15_000  # under the text limit: kept whole, ~15 kB each
        log.record([task_event("task-started", uuid=f"t{i}", note=big) for i in range(100)])
        log.record([task_event("task-progress", uuid=f"p{i}", message=big) for i in range(400)])
        assert log.queued_bytes <= log.max_queue_bytes
        assert log.drops.get("transition", 0) == 0 and log.drops["progress"] > 0
        transitions = 100 + 300
        log.record([task_event("task-succeeded", uuid=f"s{i}", result=big) for i in range(transitions - 100)])
        # No progress left to shed: the oldest transitions go, and the bound still holds.
        assert log.queued_bytes <= log.max_queue_bytes
        assert log.drops["progress"] == 400 and log.drops["transition"] > 0
        assert log.dropped == sum(log.drops.values())
        assert counted.value("pushserver_eventlog_dropped_total", kind="progress") == 400
        assert counted.value("pushserver_eventlog_dropped_total", kind="transition") == log.drops["transition"]
        newest = log._transitions[-1].event
        assert newest["uuid"] == f"s{transitions - 101}"
    finally:
        await log.close()


async def test_an_event_over_a_megabyte_keeps_its_small_fields() -> None:
    log = EventLog(NOWHERE)
    try:
        fields = {f"f{i}": "x" * 10_000 for i in range(200)}  # 2 MB in texts each under the limit
        log.record([task_event("task-failed", exception="ValueError('x')", **fields)])
        [item] = log._transitions
        # Cut down as it is queued, so that it cannot push the other events out.
        assert item.size < 10_000 and log.sanitised == 1
        assert item.event["exception"] == "ValueError('x')" and item.event["uuid"] == "t-1"
        assert len(item.event[TRUNCATED_FIELD]) == 100 and "f0" in item.event[TRUNCATED_FIELD]
    finally:
        await log.close()


async def test_a_stopped_writer_shows_in_status_and_metrics() -> None:
    counted = Collector()
    log = EventLog(NOWHERE, metrics=counted.metrics)
    log.start()
    assert log.status() == "ok"
    assert counted.value("pushserver_eventlog_writer_running") == 1
    assert log._writer is not None
    log._writer.cancel()  # stopped from outside, as a bug or a stray cancel would
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert log.status() == "stopped" and log.stopped
    assert counted.value("pushserver_eventlog_writer_running") == 0
    await log.close()


async def test_closing_is_not_a_stopped_writer() -> None:
    log = EventLog(NOWHERE)
    log.start()
    await log.close()
    await asyncio.sleep(0)
    assert log.status() == "ok"


@pytest.mark.parametrize(
    "value", [uuid.uuid4(), decimal.Decimal("1.1"), datetime.date(2020, 1, 2), b"\xff", {1}, 2**64, "\udfff", object()]
)
def test_every_odd_value_can_be_encoded(value: Any) -> None:
    bson.encode(event_to_document(storable(task_event(value=value, nested={"v": [value]})).event))


async def test_readyz_and_metrics_of_a_server_show_a_stopped_writer() -> None:
    from pushserver.config import Settings
    from pushserver.server import PushServer

    server = PushServer(Settings(secrets=["s" * 32], mongo_url=NOWHERE).validate())
    assert server.eventlog is not None
    server.eventlog.start()
    try:
        assert server.readiness()["event_log"] == "ok"
        assert server.eventlog._writer is not None
        server.eventlog._writer.cancel()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert server.readiness()["event_log"] == "stopped"
        assert b"pushserver_eventlog_writer_running 0.0" in server.metrics.render()
    finally:
        await server.eventlog.close()
        server.backend.close()


async def test_one_huge_event_does_not_push_the_others_out() -> None:
    log = EventLog(NOWHERE, max_queue_bytes=4 * MAX_EVENT_BYTES)
    try:
        log.record([task_event("task-started", uuid=f"t{i}") for i in range(10)])
        log.record([task_event("task-succeeded", **{f"f{i}": "x" * 10_000 for i in range(350)})])  # 3.5 MB
        assert log.dropped == 0 and log.queued == 11
        assert log.queued_bytes < MAX_EVENT_BYTES
    finally:
        await log.close()


def test_a_success_has_one_id_whether_its_result_is_a_repr_or_the_json_value() -> None:
    celery = {"type": "task-succeeded", "uuid": "t", "timestamp": 1.0, "result": "{'a': 1}", "runtime": 0.1}
    completed = {**celery, "result": {"a": 1}, "result_format": "json"}
    assert event_id(celery) == event_id(completed) == event_id({**celery, "result_format": "repr"})
    assert event_id(celery) != event_id({**celery, "timestamp": 2.0})
    failed = {"type": "task-failed", "uuid": "t", "timestamp": 1.0, "exception": "X()"}
    assert event_id(failed) != event_id({**failed, "exception": "Y()"})


async def test_a_history_read_that_fails_oddly_gives_a_snapshot_without_history(monkeypatch, caplog) -> None:
    """Not only PyMongoError: whatever the driver raises, the subscribe still gets its ack (logged, [])."""
    log = EventLog(NOWHERE)

    async def broken(task_id: str, **_: Any) -> list[dict[str, Any]]:
        raise KeyError("saslSupportedMechs")

    monkeypatch.setattr(log, "history", broken)
    try:
        assert await log.latest_events("t-1") == []
    finally:
        await log.close()
    assert "event log read failed unexpectedly" in caplog.text
