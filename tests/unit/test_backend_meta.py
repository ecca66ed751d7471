"""Result-backend meta as the event that would have announced it (snapshot misses, reconciliation)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from pushserver.backend import RESULT_REPR_MAXLEN, meta_to_event
from pushserver.state import TaskStore

TASK = "5f0c-task"
NEW_YEAR = datetime(2024, 1, 1, tzinfo=timezone.utc)
NEW_YEAR_TS = 1704067200.0


def test_success_becomes_task_succeeded_with_the_result_repr() -> None:
    meta = {
        "status": "SUCCESS",
        "result": {"pages": [1, 2]},
        "date_done": NEW_YEAR,
        "name": "workers.tasks.render",
        "worker": "celery@a",
        "traceback": None,
    }
    assert meta_to_event(TASK, meta) == {
        "type": "task-succeeded",
        "uuid": TASK,
        "timestamp": NEW_YEAR_TS,
        "name": "workers.tasks.render",
        "hostname": "celery@a",
        "result": "{'pages': [1, 2]}",
        "result_format": "repr",
    }


def test_success_in_json_mode_carries_the_value_itself() -> None:
    meta = {"status": "SUCCESS", "result": {"pages": (1, 2)}, "date_done": NEW_YEAR}
    event = meta_to_event(TASK, meta, results="json")
    assert event is not None
    assert (event["result"], event["result_format"]) == ({"pages": [1, 2]}, "json")
    assert TaskStore().merge_event(event).task.to_dict()["result"] == {"pages": [1, 2]}  # type: ignore[union-attr]


def test_success_in_json_mode_too_large_or_not_json() -> None:
    big = meta_to_event(
        TASK, {"status": "SUCCESS", "result": "x" * 100, "date_done": NEW_YEAR}, results="json", max_result_bytes=50
    )
    assert big is not None and (big["result"], big["result_format"]) == (None, "too_large")
    odd = meta_to_event(TASK, {"status": "SUCCESS", "result": {1: object()}, "date_done": NEW_YEAR}, results="json")
    assert odd is not None and odd["result_format"] == "repr" and odd["result"].startswith("{1: <object")


def test_success_result_is_truncated_like_celerys_events() -> None:
    event = meta_to_event(TASK, {"status": "SUCCESS", "result": "x" * 5000, "date_done": NEW_YEAR})
    assert event is not None
    result = event["result"]
    assert result.startswith("'xxxx")
    assert "..." in result
    # saferepr cuts the content at maxlen and then closes the quote and adds "..."
    assert RESULT_REPR_MAXLEN <= len(result) <= RESULT_REPR_MAXLEN + 10


def test_short_result_is_not_truncated() -> None:
    event = meta_to_event(TASK, {"status": "SUCCESS", "result": 42, "date_done": NEW_YEAR})
    assert event["result"] == "42"


def test_failure_with_an_exception_instance() -> None:
    meta = {
        "status": "FAILURE",
        "result": ValueError("image too large"),
        "traceback": "Traceback (most recent…",
        "date_done": NEW_YEAR,
    }
    event = meta_to_event(TASK, meta)
    assert event == {
        "type": "task-failed",
        "uuid": TASK,
        "timestamp": NEW_YEAR_TS,
        "exception": "ValueError('image too large')",
        "traceback": "Traceback (most recent…",
        "exception_type": "ValueError",
    }


@pytest.mark.parametrize(
    ("exc_message", "expected"),
    [
        (["smtp down"], "ConnectionError('smtp down')"),
        (["a", 2], "ConnectionError('a', 2)"),
        ([], "ConnectionError()"),
        ("smtp down", "ConnectionError('smtp down')"),
    ],
)
def test_failure_with_the_raw_exception_dict(exc_message: Any, expected: str) -> None:
    # What the backend returns when it cannot rebuild the exception class.
    meta = {
        "status": "FAILURE",
        "date_done": NEW_YEAR,
        "traceback": "tb",
        "result": {"exc_type": "ConnectionError", "exc_message": exc_message, "exc_module": "builtins"},
    }
    event = meta_to_event(TASK, meta)
    assert event["type"] == "task-failed"
    assert event["exception"] == expected
    assert event["traceback"] == "tb"


def test_retry_carries_the_exception() -> None:
    event = meta_to_event(TASK, {"status": "RETRY", "result": KeyError("k"), "date_done": NEW_YEAR})
    assert event["type"] == "task-retried"
    assert event["exception"] == "KeyError('k')"


@pytest.mark.parametrize("status", ["PENDING", "RECEIVED", "SOMETHING_NEW", None])
def test_states_the_backend_cannot_vouch_for_say_nothing(status: Any) -> None:
    assert meta_to_event(TASK, {"status": status, "result": None}) is None


def test_progress_meta_becomes_a_progress_event() -> None:
    event = meta_to_event(TASK, {"status": "PROGRESS", "result": {"current": 1, "total": 4, "message": "m"}}, now=10.0)
    # No time is recorded for unfinished states: the event gets the unknown time, not "now".
    assert event == {
        "type": "task-progress",
        "uuid": TASK,
        "timestamp": 0.0,
        "current": 1,
        "total": 4,
        "percent": 25.0,
        "message": "m",
    }


def test_revoked_meta_is_a_terminated_revoke() -> None:
    event = meta_to_event(TASK, {"status": "REVOKED", "result": None}, now=3.0)
    assert event == {"type": "task-revoked", "uuid": TASK, "timestamp": 3.0, "terminated": True}


@pytest.mark.parametrize(
    "date_done",
    [
        NEW_YEAR,
        NEW_YEAR.astimezone(timezone(timedelta(hours=2))),
        "2024-01-01T00:00:00+00:00",
        "2024-01-01T00:00:00Z",
        "2024-01-01T02:00:00+02:00",
    ],
)
def test_date_done_becomes_the_timestamp(date_done: Any) -> None:
    event = meta_to_event(TASK, {"status": "SUCCESS", "result": 1, "date_done": date_done}, now=1.0)
    assert event["timestamp"] == NEW_YEAR_TS


def test_fractional_seconds_survive() -> None:
    event = meta_to_event(TASK, {"status": "SUCCESS", "date_done": "2024-01-01T00:00:00.250000+00:00"})
    assert event["timestamp"] == NEW_YEAR_TS + 0.25


@pytest.mark.parametrize("date_done", [None, "yesterday", 12345, ""])
def test_missing_or_unreadable_date_done_falls_back_to_now(date_done: Any) -> None:
    meta = {"status": "SUCCESS", "result": 1, "date_done": date_done}
    assert meta_to_event(TASK, meta, now=99.0)["timestamp"] == 99.0
    before = time.time()
    assert before <= meta_to_event(TASK, meta)["timestamp"] <= time.time()


@pytest.fixture
def host_in_new_york() -> Iterator[None]:
    if not hasattr(time, "tzset"):
        pytest.skip("needs time.tzset")
    import os

    old = os.environ.get("TZ")
    os.environ["TZ"] = "America/New_York"
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()


@pytest.mark.parametrize("date_done", [datetime(2024, 1, 1), "2024-01-01T00:00:00"])
def test_naive_date_done_is_utc(host_in_new_york: None, date_done: Any) -> None:
    event = meta_to_event(TASK, {"status": "SUCCESS", "result": 1, "date_done": date_done}, now=1.0)
    assert event["timestamp"] == NEW_YEAR_TS


def test_backend_events_merge_like_live_ones() -> None:
    store = TaskStore()
    store.merge_event({"type": "task-started", "uuid": TASK, "timestamp": NEW_YEAR_TS - 5, "hostname": "celery@a"})
    event = meta_to_event(TASK, {"status": "SUCCESS", "result": [1, 2], "date_done": NEW_YEAR, "worker": "celery@a"})
    change = store.merge_event(event)
    assert change is not None and change.transition
    state = change.task.to_dict()
    assert (state["state"], state["result"], state["finished_at"]) == ("SUCCESS", "[1, 2]", NEW_YEAR_TS)
    assert store.merge_event(dict(event)) is None  # a second reconcile changes nothing


def test_an_unfinished_backend_record_never_outranks_real_events() -> None:
    """Subscribe mid-task: the backend's PROGRESS (no time recorded) must lose to progress heard later."""
    store = TaskStore()
    store.merge_event({"type": "task-progress", "uuid": TASK, "timestamp": 100.0, "current": 1, "total": 2})
    store.merge_event(meta_to_event(TASK, {"status": "PROGRESS", "result": {"current": 1, "total": 2}}, now=100.5))
    store.merge_event({"type": "task-progress", "uuid": TASK, "timestamp": 100.2, "current": 2, "total": 2})
    store.merge_event({"type": "task-succeeded", "uuid": TASK, "timestamp": 100.3, "result": "2"})
    state = store.get(TASK).to_dict()
    assert state["state"] == "SUCCESS" and state["progress"]["current"] == 2


def test_a_backend_only_unfinished_task_has_no_invented_times() -> None:
    store = TaskStore()
    store.merge_event(meta_to_event(TASK, {"status": "STARTED", "result": {"pid": 1}}))
    state = store.get(TASK).to_dict()
    assert state["state"] == "STARTED"
    assert state["started_at"] is None and state["updated_at"] is None
