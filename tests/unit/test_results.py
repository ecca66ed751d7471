"""Results as JSON: the pure conversions, and the resolver's batching, fallbacks and timeouts (a fake reader)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from typing import Any

import pytest

from pushserver.metrics import Metrics
from pushserver.policy import ForwardingPolicy
from pushserver.results import ResultResolver, complete, needs_value, recheck
from pushserver.state import TaskStore, event_values, exception_type, json_result

TASK = "5f0c-task"


def succeeded(uuid: str = TASK, result: Any = "{'label': 'setosa'}", **extra: Any) -> dict[str, Any]:
    return {
        "type": "task-succeeded",
        "uuid": uuid,
        "timestamp": 10.0,
        "result": result,
        "runtime": 0.1,
        "hostname": "celery@a",
        **extra,
    }


def success_meta(value: Any) -> dict[str, Any]:
    return {"status": "SUCCESS", "result": value, "traceback": None}


# -- pure parts ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [{"label": "setosa", "p": [0.9, 0.1]}, 3, [1, 2], "text", None, True, 2.5])
def test_json_result_keeps_json_values(value: Any) -> None:
    assert json_result(value, 64 * 1024) == {"result": value, "result_format": "json"}


def test_json_result_normalises_what_json_cannot_tell_apart() -> None:
    assert json_result((1, 2), 1024) == {"result": [1, 2], "result_format": "json"}
    assert json_result({"x": math.nan}, 1024) == {"result": {"x": None}, "result_format": "json"}


@pytest.mark.parametrize("value", [object(), {1: "non-str key"}, 2**70, {"set": {1, 2}}])
def test_json_result_is_none_for_values_json_cannot_hold(value: Any) -> None:
    assert json_result(value, 1024) is None


def test_json_result_over_the_limit_is_too_large_not_cut() -> None:
    assert json_result("x" * 14, 16) == {"result": "x" * 14, "result_format": "json"}  # 16 bytes with quotes
    assert json_result("x" * 15, 16) == {"result": None, "result_format": "too_large"}


def test_a_plain_celery_event_reads_as_repr() -> None:
    assert event_values(succeeded(result="3")) == {
        "result": "3",
        "result_format": "repr",
        "runtime": 0.1,
        "hostname": "celery@a",
    }


def test_a_completed_event_carries_the_value() -> None:
    values = event_values(succeeded(result={"label": "setosa"}, result_format="json"))
    assert values["result"] == {"label": "setosa"} and values["result_format"] == "json"
    too_large = event_values(succeeded(result="ignored", result_format="too_large"))
    assert "result" not in too_large and too_large["result_format"] == "too_large"


def test_a_forged_json_format_with_no_json_value_becomes_a_repr() -> None:
    values = event_values(succeeded(result=object(), result_format="json"))
    assert values["result_format"] == "repr" and values["result"].startswith("<object")
    values = event_values(succeeded(result="x" * 10_000, result_format="bogus"))
    assert values["result_format"] == "repr" and len(values["result"]) == 4096


def test_the_store_shows_format_only_on_success_and_not_at_all_under_none() -> None:
    store = TaskStore()
    store.merge_event(succeeded(result=3, result_format="json"))
    state = store.get(TASK).to_dict()  # type: ignore[union-attr]
    assert (state["result"], state["result_format"]) == (3, "json")
    none = TaskStore(unkept=ForwardingPolicy(results="none").never_forwarded())
    none.merge_event(succeeded(result=3, result_format="json"))
    assert none.get(TASK).fields.keys().isdisjoint({"result", "result_format"})  # type: ignore[union-attr]
    shown = ForwardingPolicy(results="none").task(none.get(TASK).to_dict())  # type: ignore[union-attr]
    assert shown["result"] is None and shown["result_format"] is None
    assert (
        ForwardingPolicy(results="none")
        .event(succeeded(result_format="json"))
        .keys()
        .isdisjoint({"result", "result_format"})
    )


def test_the_same_success_as_repr_and_as_json_merges_the_same_in_any_order() -> None:
    repr_event, json_event = succeeded(result="3"), succeeded(result=3, result_format="json")
    a, b = TaskStore(), TaskStore()
    for e in (repr_event, json_event):
        a.merge_event(e)
    for e in (json_event, repr_event):
        b.merge_event(e)
    assert a.get(TASK).to_dict() == b.get(TASK).to_dict()  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"type": "task-failed", "exception": "ValueError('image too large')"}, "ValueError"),
        ({"type": "task-failed", "exception": "ValueError()"}, "ValueError"),
        ({"type": "task-failed", "exception": "billiard.exceptions.WorkerLostError('x')"}, "WorkerLostError"),
        ({"type": "task-retried", "exception": "Retry in 1s: ConnectionError('down')"}, None),
        ({"type": "task-failed", "exception": "<MyError object at 0x1>"}, None),
        ({"type": "task-failed", "exception": None}, None),
        ({"type": "task-failed", "exception": "X('y')", "exception_type": "Given"}, "Given"),
        ({"type": "task-revoked", "expired": True}, "TaskRevokedError"),
        ({"type": "task-revoked"}, None),
    ],
)
def test_exception_type_reads_the_class_name(event: dict[str, Any], expected: str | None) -> None:
    assert exception_type(event) == expected


def test_a_requeued_rejection_is_typed_reject() -> None:
    store = TaskStore()
    store.merge_event({"type": "task-rejected", "uuid": TASK, "timestamp": 1.0, "requeue": True})
    state = store.get(TASK).to_dict()  # type: ignore[union-attr]
    assert (state["state"], state["exception_type"]) == ("RETRY", "Reject")


def test_complete_takes_the_backend_value_or_keeps_the_repr() -> None:
    event, outcome = complete(succeeded(), success_meta({"label": "setosa"}), 1024)
    assert (event["result"], event["result_format"], outcome) == ({"label": "setosa"}, "json", "json")
    event, outcome = complete(succeeded(), success_meta("x" * 100), 16)
    assert (event["result"], event["result_format"], outcome) == (None, "too_large", "too_large")
    for meta in (None, {"status": "PENDING", "result": None}, success_meta(object())):
        event, outcome = complete(succeeded(result="'r'"), meta, 1024)
        assert (event["result"], event["result_format"], outcome) == ("'r'", "repr", "no_value")


def test_needs_value_and_recheck() -> None:
    assert needs_value(succeeded()) and not needs_value(succeeded(result_format="repr"))
    assert not needs_value({"type": "task-failed", "uuid": TASK})
    assert recheck(succeeded(result="y" * 100, result_format="json"), 16)["result_format"] == "too_large"
    assert recheck(succeeded(result=[1], result_format="json"), 16)["result"] == [1]
    assert recheck(succeeded(result="'r'", result_format="repr"), 16)["result"] == "'r'"


# -- the resolver, with a reader that stands in for the backend ---------------------------------


class FakeReader:
    """Answers reads from a dict, optionally slowly or failing; records each read's ids."""

    def __init__(
        self,
        metas: Mapping[str, Mapping[str, Any]],
        *,
        delay: float = 0.0,
        error: Exception | None = None,
        readable: bool = True,
    ) -> None:
        self.metas = metas
        self.delay = delay
        self.error = error
        self.readable = readable
        self.reads: list[list[str]] = []
        self.gate: asyncio.Event | None = None

    async def read(self, task_ids: list[str]) -> dict[str, Mapping[str, Any]]:
        self.reads.append(list(task_ids))
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return {t: self.metas[t] for t in task_ids if t in self.metas}

    def close(self) -> None:
        pass


def resolver(reader: FakeReader, **kwargs: Any) -> tuple[ResultResolver, list[dict[str, Any]]]:
    delivered: list[dict[str, Any]] = []
    return ResultResolver(reader, delivered.extend, Metrics(), 1024, **kwargs), delivered  # type: ignore[arg-type]


async def wait_for(condition: Any, timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), timeout)


async def test_other_events_pass_at_once_and_success_comes_back_with_its_value() -> None:
    reader = FakeReader({"a": success_meta({"n": 1})})
    r, delivered = resolver(reader)
    started = {"type": "task-started", "uuid": "a", "timestamp": 1.0}
    assert r.split([started, succeeded("a")]) == [started]
    await wait_for(lambda: delivered)
    assert delivered[0]["result"] == {"n": 1} and delivered[0]["result_format"] == "json"


async def test_successes_arriving_during_a_read_share_the_next_read() -> None:
    reader = FakeReader({f"t{i}": success_meta(i) for i in range(10)})
    reader.gate = asyncio.Event()
    r, delivered = resolver(reader, concurrency=1)
    r.split([succeeded("t0")])
    await wait_for(lambda: reader.reads)
    for i in range(1, 10):
        r.split([succeeded(f"t{i}")])  # each its own batch from the receiver
    assert r.pending == 9
    reader.gate.set()
    await wait_for(lambda: len(delivered) == 10)
    assert reader.reads == [["t0"], [f"t{i}" for i in range(1, 10)]]
    assert sorted(e["result"] for e in delivered) == list(range(10))


async def test_a_slow_backend_times_out_to_the_repr_and_is_skipped_for_the_cooldown() -> None:
    reader = FakeReader({"a": success_meta(1)}, delay=10.0)
    r, delivered = resolver(reader, timeout=0.05, cooldown=60.0)
    loop = asyncio.get_running_loop()
    begun = loop.time()
    r.split([succeeded("a", result="1")])
    await wait_for(lambda: delivered)
    assert loop.time() - begun < 2.0
    assert (delivered[0]["result"], delivered[0]["result_format"]) == ("1", "repr")
    # Meanwhile the next SUCCESS does not wait for the backend at all.
    passed = r.split([succeeded("b", result="2")])
    assert [(e["result"], e["result_format"]) for e in passed] == [("2", "repr")]
    assert len(reader.reads) == 1


async def test_a_failing_backend_keeps_the_repr() -> None:
    r, delivered = resolver(FakeReader({}, error=ConnectionError("refused")), cooldown=0.0)
    r.split([succeeded("a", result="1"), succeeded("b", result="2")])
    await wait_for(lambda: len(delivered) == 2)
    assert [(e["result"], e["result_format"]) for e in delivered] == [("1", "repr"), ("2", "repr")]


async def test_without_a_readable_backend_nothing_is_held() -> None:
    reader = FakeReader({}, readable=False)
    r, delivered = resolver(reader)
    passed = r.split([succeeded("a", result="1")])
    assert passed[0]["result_format"] == "repr" and not reader.reads and not delivered


async def test_close_delivers_what_is_held() -> None:
    reader = FakeReader({"a": success_meta(1), "b": success_meta(2)})
    reader.gate = asyncio.Event()
    r, delivered = resolver(reader, concurrency=1, timeout=0.1)
    r.split([succeeded("a", result="1")])
    await wait_for(lambda: reader.reads)
    r.split([succeeded("b", result="2")])
    await r.close()
    assert sorted((e["uuid"], e["result_format"]) for e in delivered) == [("a", "repr"), ("b", "repr")]


async def test_later_events_of_a_held_task_wait_behind_its_success() -> None:
    reader = FakeReader({"a": success_meta(1)})
    reader.gate = asyncio.Event()
    r, delivered = resolver(reader)
    late_start = {"type": "task-started", "uuid": "a", "timestamp": 5.0}
    other = {"type": "task-started", "uuid": "b", "timestamp": 6.0}
    assert r.split([succeeded("a", result="1")]) == []
    assert r.split([late_start, succeeded("a", result="1"), other]) == [other]  # b is not held up
    reader.gate.set()
    await wait_for(lambda: len(delivered) == 3)
    assert [(e["type"], e.get("result"), e.get("result_format")) for e in delivered] == [
        ("task-succeeded", 1, "json"),
        ("task-started", None, None),
        ("task-succeeded", 1, "json"),
    ]
    assert r.split([{"type": "task-progress", "uuid": "a", "timestamp": 7.0}])  # no longer held


async def test_the_reader_reads_many_in_one_round_trip_and_counts_it_as_result() -> None:
    from celery import Celery

    from pushserver.backend import ResultReader

    app = Celery("t", backend="cache+memory://", set_as_current=False)
    app.backend.store_result("done", {"label": "setosa"}, "SUCCESS")
    app.backend.store_result("done-too", 3, "SUCCESS")
    reads: list[tuple[str, int]] = []
    reader = ResultReader(app, on_read=lambda how, keys: reads.append((how, keys)))
    try:
        assert reader.readable
        found = await reader.read(["done", "done-too", "unknown"])
    finally:
        reader.close()
    assert {t: m["result"] for t, m in found.items()} == {"done": {"label": "setosa"}, "done-too": 3}
    assert reads == [("result", 3)]
    assert not ResultReader(Celery("t", backend="disabled://", set_as_current=False)).readable
    assert not ResultReader(Celery("t", backend="rpc://", set_as_current=False)).readable
