"""The merge rules of TaskState (docs/protocol.md, TaskState): out of order, twice, retries.

Events are written the way the receiver delivers them: decoded Celery event
dicts with ``type``, ``uuid`` and ``timestamp``, merged with
``TaskStore.merge_event``.
"""

from __future__ import annotations

import itertools
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pushserver.policy import ForwardingPolicy
from pushserver.protocol import OrjsonCodec
from pushserver.state import (
    FAILURE,
    PENDING,
    PROGRESS,
    RECEIVED,
    RETRY,
    REVOKED,
    SENT,
    STARTED,
    SUCCESS,
    Change,
    TaskState,
    TaskStore,
    client_text,
    event_values,
    is_task_event,
    normalize_progress,
)
from tests.support.protocol_doc import taskstate_fields

TASK = "5f0c2b7e-task"
NAME = "workers.tasks.resize_and_watermark"

#: The TaskState JSON keys, exactly as docs/protocol.md (TaskState) lists them.
TASKSTATE_KEYS = taskstate_fields()


def event(kind: str, timestamp: float, uuid: str = TASK, **fields: Any) -> dict[str, Any]:
    """A decoded Celery event, e.g. ``event("started", 3.0, hostname="celery@a")``."""
    return {"type": f"task-{kind}", "uuid": uuid, "timestamp": timestamp, **fields}


def merge_all(events: list[dict[str, Any]], store: TaskStore | None = None) -> TaskStore:
    store = store if store is not None else TaskStore()
    for e in events:
        store.merge_event(e)
    return store


def snapshot(events: list[dict[str, Any]]) -> dict[str, Any]:
    task = merge_all(events).get(TASK)
    assert task is not None
    return task.to_dict()


# -- the normal lifecycle ------------------------------------------------------


def test_normal_lifecycle_moves_through_every_state() -> None:
    store = TaskStore()
    steps = [
        (event("sent", 1.0, name=NAME, retries=0), SENT),
        (event("received", 2.0, name=NAME, retries=0, hostname="celery@a"), RECEIVED),
        (event("started", 3.0, hostname="celery@a"), STARTED),
        (event("progress", 4.0, current=3, total=10, message="resizing", hostname="celery@a"), PROGRESS),
        (event("succeeded", 5.0, result="'done.png'", runtime=0.91, hostname="celery@a"), SUCCESS),
    ]
    for e, expected in steps:
        change = store.merge_event(e)
        assert change is not None and change.transition
        assert change.task.state == expected

    assert store.get(TASK).to_dict() == {
        "task_id": TASK,
        "name": NAME,
        "state": SUCCESS,
        "progress": {"current": 3, "total": 10, "percent": 30.0, "message": "resizing"},
        "result": "'done.png'",
        "result_format": "repr",
        "exception": None,
        "exception_type": None,
        "traceback": None,
        "worker": "celery@a",
        "retries": 0,
        "runtime": 0.91,
        "sent_at": 1.0,
        "received_at": 2.0,
        "started_at": 3.0,
        "finished_at": 5.0,
        "updated_at": 5.0,
        "event": "task-succeeded",
    }
    assert store.get(TASK).ready


def test_to_dict_has_exactly_the_protocol_keys() -> None:
    assert set(TaskState(TASK).to_dict()) == TASKSTATE_KEYS
    assert set(snapshot([event("received", 1.0, name=NAME)])) == TASKSTATE_KEYS
    assert set(snapshot([event("failed", 1.0, exception="E()", traceback="tb")])) == TASKSTATE_KEYS


def test_a_task_nobody_has_heard_of_is_pending() -> None:
    state = TaskState(TASK).to_dict()
    assert state["task_id"] == TASK
    assert state["state"] == PENDING
    assert state["retries"] == 0
    assert state["event"] is None and state["updated_at"] is None
    assert all(state[k] is None for k in TASKSTATE_KEYS - {"task_id", "state", "retries"})


# -- out of order and twice ------------------------------------------------------


def test_succeeded_before_started_stays_success() -> None:
    store = merge_all(
        [
            event("received", 1.0, name=NAME, hostname="celery@a"),
            event("succeeded", 3.0, result="42", runtime=1.5, hostname="celery@a"),
        ]
    )
    late = store.merge_event(event("started", 2.0, hostname="celery@a"))

    task = store.get(TASK)
    assert task.state == SUCCESS
    assert task.to_dict()["event"] == "task-succeeded"
    assert task.to_dict()["finished_at"] == 3.0
    assert task.to_dict()["result"] == "42"
    # The late event fills in started_at (the merge is a function of the set of
    # events, so the in-order history must come out the same), but it is not a
    # transition: the state did not move.
    assert late is not None and late.transition is False
    assert task.to_dict()["started_at"] == 2.0


def test_late_started_after_succeeded_changes_nothing() -> None:
    store = merge_all(
        [
            event("received", 1.0, hostname="celery@a"),
            event("started", 2.0, hostname="celery@a"),
            event("succeeded", 3.0, result="42", hostname="celery@a"),
        ]
    )
    before = store.get(TASK).to_dict()

    # A stale task-started (older than the one already known) is not news.
    assert store.merge_event(event("started", 1.5, hostname="celery@a")) is None
    task = store.get(TASK)
    assert task.apply("task-started", 2.0, {"hostname": "celery@a"}) is False
    assert task.apply("task-started", 1.8, {"hostname": "celery@b"}) is False
    assert task.to_dict() == before
    assert task.state == SUCCESS


def test_started_arriving_after_succeeded_gives_the_in_order_snapshot() -> None:
    in_order = [event("received", 1.0), event("started", 2.0), event("succeeded", 3.0, result="1")]
    out_of_order = [in_order[0], in_order[2], in_order[1]]
    assert snapshot(out_of_order) == snapshot(in_order)


def test_sent_arriving_last_does_not_move_the_state_back() -> None:
    # task-sent comes from the client, so it can lose the race to the worker's events.
    store = merge_all([event("received", 2.0), event("started", 3.0)])
    change = store.merge_event(event("sent", 1.0, name=NAME))
    assert change is not None and not change.transition
    assert store.get(TASK).state == STARTED
    assert store.get(TASK).to_dict()["name"] == NAME
    assert store.get(TASK).to_dict()["sent_at"] == 1.0


def test_duplicate_event_is_a_no_op() -> None:
    store = TaskStore()
    progress = event("progress", 4.0, current=1, total=2)
    for e in [event("received", 1.0), event("started", 2.0), progress]:
        assert store.merge_event(e) is not None
    before = store.get(TASK).to_dict()

    assert store.merge_event(dict(progress)) is None
    assert store.merge_event(event("received", 1.0)) is None
    assert store.get(TASK).to_dict() == before


def test_duplicate_terminal_event_is_a_no_op() -> None:
    store = TaskStore()
    done = event("succeeded", 5.0, result="1", runtime=0.1)
    assert store.merge_event(done) is not None
    assert store.merge_event(dict(done)) is None


# -- retries ---------------------------------------------------------------------


def retry_then_success() -> list[dict[str, Any]]:
    return [
        event("received", 1.0, name=NAME, retries=0, hostname="celery@a"),
        event("started", 2.0, hostname="celery@a"),
        event("retried", 3.0, exception="ConnectionError('smtp down')", traceback="Traceback 1", hostname="celery@a"),
        event("received", 4.0, name=NAME, retries=1, hostname="celery@b"),
        event("started", 5.0, hostname="celery@b"),
        event("succeeded", 6.0, result="'sent'", runtime=0.2, hostname="celery@b"),
    ]


def test_retry_reopens_the_task() -> None:
    events = retry_then_success()
    store = TaskStore()
    states = []
    for e in events:
        change = store.merge_event(e)
        assert change is not None and change.transition
        states.append(change.task.state)
    assert states == [RECEIVED, STARTED, RETRY, RECEIVED, STARTED, SUCCESS]

    final = store.get(TASK).to_dict()
    assert final["retries"] == 1
    assert final["worker"] == "celery@b"
    assert final["received_at"] == 4.0 and final["started_at"] == 5.0
    assert final["exception"] is None and final["traceback"] is None  # the retry's error is history


def test_retry_state_shows_the_exception() -> None:
    state = snapshot(retry_then_success()[:3])
    assert state["state"] == RETRY
    assert state["exception"] == "ConnectionError('smtp down')"
    assert state["traceback"] == "Traceback 1"
    assert state["result"] is None
    assert state["finished_at"] is None


def test_second_attempt_started_hides_the_retry_exception() -> None:
    state = snapshot(retry_then_success()[:5])
    assert state["state"] == STARTED
    assert state["exception"] is None


def test_progress_of_the_first_attempt_arriving_late_does_not_undo_the_retry() -> None:
    events = retry_then_success()[:3]
    store = merge_all(events)
    change = store.merge_event(event("progress", 2.5, current=1, total=2))
    assert change is None or not change.transition
    assert store.get(TASK).state == RETRY


def test_two_retries_then_failure() -> None:
    events = [
        event("received", 1.0, retries=0),
        event("started", 2.0),
        event("retried", 3.0, exception="E(1)"),
        event("received", 4.0, retries=1),
        event("started", 5.0),
        event("retried", 6.0, exception="E(2)"),
        event("received", 7.0, retries=2),
        event("started", 8.0),
        event("failed", 9.0, exception="E(3)", traceback="tb3"),
    ]
    assert [snapshot(events[:n])["state"] for n in (6, 8)] == [RETRY, STARTED]
    final = snapshot(events)
    assert final["state"] == FAILURE
    assert final["exception"] == "E(3)" and final["traceback"] == "tb3"
    assert final["retries"] == 2
    assert final["finished_at"] == 9.0


def test_every_order_of_a_retry_lifecycle_gives_the_same_snapshot() -> None:
    events = retry_then_success()[:5] + [event("progress", 5.5, current=2, total=4)]
    expected = snapshot(events)
    assert expected["state"] == PROGRESS
    for order in itertools.permutations(events):
        assert snapshot(list(order)) == expected, [e["type"] for e in order]


# -- revoked, failed, result visibility -----------------------------------------------


def test_rejected_task_ends_rejected() -> None:
    state = snapshot(
        [
            event("received", 1.0, hostname="celery@a"),
            event("started", 2.0, hostname="celery@a"),
            event("rejected", 3.0, hostname="celery@a", requeue=False),
        ]
    )
    assert state["state"] == "REJECTED"


def test_requeued_rejection_reopens_the_task_like_a_retry() -> None:
    events = [event("received", 1.0), event("started", 2.0), event("rejected", 3.0, requeue=True)]
    assert snapshot(events)["state"] == "RETRY"
    again = events + [event("received", 4.0), event("started", 5.0), event("succeeded", 6.0, result="1")]
    assert snapshot(again)["state"] == "SUCCESS"


def test_progress_after_revoked_does_not_undo_it() -> None:
    store = merge_all(
        [event("received", 1.0), event("started", 2.0), event("revoked", 3.0, terminated=True, signum=15)]
    )
    assert store.get(TASK).state == REVOKED
    change = store.merge_event(event("progress", 4.0, current=5, total=10))
    assert change is None or not change.transition
    task = store.get(TASK)
    assert task.state == REVOKED and task.ready
    assert task.to_dict()["exception"] == "TaskRevokedError('terminated')"
    assert task.to_dict()["finished_at"] == 3.0


def test_failure_shows_exception_and_traceback_but_no_result() -> None:
    state = snapshot(
        [event("started", 1.0), event("failed", 2.0, exception="ValueError('bad')", traceback="Traceback ...")]
    )
    assert state["state"] == FAILURE
    assert state["exception"] == "ValueError('bad')"
    assert state["traceback"] == "Traceback ..."
    assert state["result"] is None and state["runtime"] is None


def test_success_shows_result_but_no_exception() -> None:
    state = snapshot(
        [event("failed", 1.0, exception="E()", traceback="tb"), event("succeeded", 1.0, result="'ok'", runtime=3.0)]
    )
    # SUCCESS outranks FAILURE (e.g. an acks_late redelivery that then succeeded).
    assert state["state"] == SUCCESS
    assert state["result"] == "'ok'" and state["runtime"] == 3.0
    assert state["exception"] is None and state["traceback"] is None


def test_result_is_hidden_until_success() -> None:
    task = TaskState(TASK)
    task.apply("task-started", 1.0, {"hostname": "w"})
    task.apply("task-succeeded", 2.0, {"result": "'r'"})
    assert task.to_dict()["result"] == "'r'"
    task = TaskState(TASK)
    task.apply("task-started", 1.0, {"hostname": "w"})
    assert task.to_dict()["result"] is None


@pytest.mark.parametrize(
    ("text", "cut"),
    [
        ("a" * 5000, "a" * 4096),
        ("é" * 3000, "é" * 2048),  # 2 bytes each
        ("😀" * 2699, "😀" * 1024),  # 4 bytes each: 2 699 characters are 10 796 bytes
        ("a" + "😀" * 1024, "a" + "😀" * 1023),  # never half a character
        ("ok 😀", "ok 😀"),
    ],
)
def test_texts_are_cut_at_their_utf8_size_between_characters(text: str, cut: str) -> None:
    state = snapshot([event("succeeded", 1.0, result=text)])
    assert state["result"] == cut
    assert len(state["result"].encode()) <= 4096


def test_a_lone_surrogate_is_sent_as_its_escape_not_an_unencodable_update() -> None:
    state = snapshot(
        [event("failed", 1.0, exception="E('\ud800')", hostname="w\udc00"), event("progress", 0.5, message="\ud83d")]
    )
    assert (state["exception"], state["worker"]) == ("E('\\ud800')", "w\\udc00")
    assert state["progress"]["message"] == "\\ud83d"
    OrjsonCodec.dumps(state)  # raised TypeError ("surrogates not allowed") and nobody got the failure
    assert client_text("😀\ud800" * 2000, 9) == "😀\\ud80"  # 4 bytes, then 5 of the 6-byte escape


# -- progress ----------------------------------------------------------------------------


def test_progress_fields_become_the_progress_object() -> None:
    state = snapshot([event("progress", 1.0, current=3, total=10, message="resizing")])
    assert state["progress"] == {"current": 3, "total": 10, "percent": 30.0, "message": "resizing"}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"current": 1, "total": 3}, {"current": 1, "total": 3, "percent": 33.33, "message": None}),
        ({"current": 5, "total": 10, "percent": 12.5}, {"current": 5, "total": 10, "percent": 12.5, "message": None}),
        ({"current": 2, "total": 0}, {"current": 2, "total": 0, "percent": None, "message": None}),
        ({"current": "3", "total": 10}, {"current": None, "total": 10, "percent": None, "message": None}),
        ({"current": True, "total": False}, {"current": None, "total": None, "percent": None, "message": None}),
        ({"current": 1, "total": 4, "percent": "50%"}, {"current": 1, "total": 4, "percent": 25.0, "message": None}),
        ({"current": 1, "total": 4, "percent": True}, {"current": 1, "total": 4, "percent": 25.0, "message": None}),
        ({"message": 42}, {"current": None, "total": None, "percent": None, "message": None}),
        (
            {"current": [1], "total": {"n": 2}, "message": ["x"]},
            {"current": None, "total": None, "percent": None, "message": None},
        ),
        ({}, {"current": None, "total": None, "percent": None, "message": None}),
    ],
)
def test_normalize_progress_computes_percent_and_ignores_bad_types(
    fields: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert normalize_progress(fields) == expected


@pytest.mark.parametrize(
    "fields",
    [
        {"current": 10**400, "total": 3},  # JSON has arbitrary-size ints
        {"current": 1, "total": 10**400},
        {"current": 1e308, "total": 1e-308},
        {"current": float("nan"), "total": 10},
        {"current": float("inf"), "total": 10},
        {"current": 1, "total": 2, "percent": float("nan")},
        {"current": 1, "total": 2, "percent": float("inf")},
    ],
)
def test_normalize_progress_survives_huge_and_non_finite_numbers(fields: dict[str, Any]) -> None:
    progress = normalize_progress(fields)
    # Browsers' JSON.parse rejects NaN and Infinity, so neither may reach a client.
    for key in ("current", "total", "percent"):
        value = progress[key]
        assert value is None or (isinstance(value, (int, float)) and abs(value) < float("inf"))


def test_a_huge_progress_number_does_not_break_the_merge() -> None:
    store = TaskStore()
    change = store.merge_event(event("progress", 1.0, current=10**400, total=3))
    assert change is not None and change.task.state == PROGRESS


def test_newest_progress_wins_whatever_the_order() -> None:
    events = [event("progress", float(i), current=i, total=4) for i in range(1, 5)]
    assert snapshot(events[::-1])["progress"]["current"] == 4
    assert snapshot(events)["progress"]["current"] == 4


# -- event decoding ------------------------------------------------------------------------


def test_is_task_event() -> None:
    assert is_task_event(event("started", 1.0))
    assert not is_task_event({"type": "worker-heartbeat", "hostname": "celery@a"})
    assert not is_task_event({"type": "task-started", "uuid": None})
    assert not is_task_event({"type": "task-started"})


def test_event_values_pick_the_fields_of_each_type() -> None:
    assert event_values(event("received", 1.0, name=NAME, retries=2, hostname="h", args="()")) == {
        "name": NAME,
        "retries": 2,
        "hostname": "h",
        "args": "()",
    }
    assert event_values(event("sent", 1.0, args=["not", "a", "repr"], kwargs="{'k': 1}")) == {"kwargs": "{'k': 1}"}
    assert event_values(event("received", 1.0, name=7, retries="2", hostname=None)) == {}
    assert event_values(event("revoked", 1.0, expired=True)) == {
        "exception": "TaskRevokedError('expired')",
        "exception_type": "TaskRevokedError",
    }
    assert event_values(event("revoked", 1.0)) == {}


@pytest.mark.parametrize(
    "stamp",
    [
        {"timestamp": None},
        {"timestamp": "soon"},
        {"timestamp": True},
        {"timestamp": None, "local_received": "soon"},
        {"timestamp": float("nan")},
        {"timestamp": 10**400},
        {},
    ],
)
def test_merge_event_survives_odd_timestamps(stamp: dict[str, Any]) -> None:
    e = {"type": "task-started", "uuid": TASK, "hostname": "celery@a", **stamp}
    change = TaskStore().merge_event(e)
    assert change is not None and change.task.state == STARTED


def test_nan_timestamp_does_not_make_the_merge_order_dependent() -> None:
    events = [
        {"type": "task-received", "uuid": TASK, "timestamp": float("nan"), "hostname": "celery@a"},
        event("started", 2.0, hostname="celery@b"),
    ]
    assert snapshot(events) == snapshot(events[::-1])


# -- the store -------------------------------------------------------------------------------


def test_change_transition_only_when_the_state_moves() -> None:
    store = TaskStore()
    assert store.merge_event(event("started", 1.0)).transition
    first = store.merge_event(event("progress", 2.0, current=1, total=3))
    second = store.merge_event(event("progress", 3.0, current=2, total=3))
    assert isinstance(first, Change) and first.transition
    assert second is not None and second.transition is False
    assert second.task is store.get(TASK)
    assert store.merge_event(event("progress", 3.0, current=2, total=3)) is None
    assert store.merge_event(event("succeeded", 4.0)).transition


def test_store_evicts_the_least_recently_updated_task() -> None:
    store = TaskStore(max_tasks=2)
    store.merge_event(event("received", 1.0, uuid="a"))
    store.merge_event(event("received", 2.0, uuid="b"))
    store.merge_event(event("started", 3.0, uuid="a"))  # "a" is now the freshest
    assert store.evicted == 0

    store.merge_event(event("received", 4.0, uuid="c"))

    assert len(store) == 2
    assert "b" not in store and store.get("b") is None
    assert "a" in store and "c" in store
    assert store.evicted == 1
    assert {t.task_id for t in store} == {"a", "c"}


def test_store_counts_every_eviction() -> None:
    store = TaskStore(max_tasks=3)
    for i in range(10):
        store.merge_event(event("received", float(i), uuid=f"t{i}"))
    assert len(store) == 3
    assert store.evicted == 7
    assert [t.task_id for t in store] == ["t7", "t8", "t9"]


def test_store_needs_room_for_one_task() -> None:
    with pytest.raises(ValueError):
        TaskStore(max_tasks=0)


# -- properties: any order, any number of copies ---------------------------------------


HOSTS = st.sampled_from(["celery@a", "celery@b", "celery@c"])


@st.composite
def lifecycles(draw: st.DrawFn, tied_timestamps: bool = False) -> list[dict[str, Any]]:
    """A realistic history of one task: attempts separated by retries, each ending somewhere."""
    clock = [draw(st.floats(1_700_000_000, 1_800_000_000, allow_nan=False))]
    steps = st.sampled_from([0.0, 0.001, 0.25]) if tied_timestamps else st.floats(0.001, 30.0)

    def tick() -> float:
        clock[0] += draw(steps)
        return clock[0]

    name = draw(st.sampled_from([NAME, "workers.tasks.send_welcome_email"]))
    events: list[dict[str, Any]] = []
    attempts = draw(st.integers(1, 3))
    for attempt in range(attempts):
        host = draw(HOSTS)
        if draw(st.booleans()):
            events.append(event("sent", tick(), name=name, retries=attempt))
        events.append(event("received", tick(), name=name, retries=attempt, hostname=host))
        if attempt == attempts - 1 and draw(st.booleans()):
            # The last attempt may stop anywhere (still queued, running, ...).
            ending = draw(st.sampled_from(["none", "rejected", "revoked"]))
            if ending == "rejected":
                events.append(event("rejected", tick(), hostname=host, requeue=False))
            elif ending == "revoked":
                events.append(event("revoked", tick(), terminated=draw(st.booleans()), signum=15))
            return events
        events.append(event("started", tick(), hostname=host))
        total = draw(st.integers(1, 10))
        for current in range(draw(st.integers(0, 3))):
            events.append(
                event(
                    "progress",
                    tick(),
                    current=current,
                    total=total,
                    message=draw(st.sampled_from(["", "resizing", None])),
                    hostname=host,
                )
            )
        if attempt < attempts - 1:
            events.append(
                event(
                    "retried", tick(), hostname=host, exception=f"ConnectionError({attempt})", traceback=f"tb{attempt}"
                )
            )
            continue
        ending = draw(st.sampled_from(["running", "succeeded", "failed", "revoked"]))
        if ending == "succeeded":
            events.append(
                event("succeeded", tick(), hostname=host, result=repr(attempt), runtime=draw(st.floats(0, 60)))
            )
        elif ending == "failed":
            events.append(event("failed", tick(), hostname=host, exception="ValueError('x')", traceback="Traceback"))
        elif ending == "revoked":
            events.append(event("revoked", tick(), terminated=True, signum=15))
    return events


@st.composite
def with_duplicates(draw: st.DrawFn, events: st.SearchStrategy[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    history = draw(events)
    copies = draw(st.lists(st.sampled_from(history), max_size=4))
    return history + [dict(e) for e in copies]


def _expected_final_state(history: list[dict[str, Any]]) -> str:
    from pushserver.state import EVENT_TO_STATE, READY_STATES

    states = [EVENT_TO_STATE[e["type"]] for e in history]
    ready = [s for s in states if s in READY_STATES]
    return ready[-1] if ready else states[-1]


PROPERTY_SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(lifecycles())
def test_in_order_merge_ends_in_the_last_events_state(history: list[dict[str, Any]]) -> None:
    assume(history[-1]["type"] != "task-rejected")  # see test_rejected_task_ends_rejected
    assert snapshot(history)["state"] == _expected_final_state(history)


@PROPERTY_SETTINGS
@given(st.data(), with_duplicates(lifecycles()))
def test_every_permutation_merges_to_the_in_order_snapshot(data: st.DataObject, events: list[dict[str, Any]]) -> None:
    expected = snapshot(events)
    shuffled = data.draw(st.permutations(events))
    assert snapshot(shuffled) == expected


@PROPERTY_SETTINGS
@given(st.data(), with_duplicates(lifecycles(tied_timestamps=True)))
def test_every_permutation_agrees_even_with_tied_timestamps(data: st.DataObject, events: list[dict[str, Any]]) -> None:
    expected = snapshot(events)
    shuffled = data.draw(st.permutations(events))
    assert snapshot(shuffled) == expected


@PROPERTY_SETTINGS
@given(st.data(), lifecycles())
def test_merging_everything_twice_equals_merging_once(data: st.DataObject, events: list[dict[str, Any]]) -> None:
    store = merge_all(events)
    once = store.get(TASK).to_dict()
    for e in data.draw(st.permutations(events)):
        assert store.merge_event(dict(e)) is None
    assert store.get(TASK).to_dict() == once


JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5))
#: NaN is left out of field values only: NaN != NaN would make equal snapshots compare unequal.
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=5)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=6,
)
ODD_EVENTS = st.builds(
    lambda kind, stamp, fields: {"type": kind, "uuid": TASK, **stamp, **fields},
    st.sampled_from(
        sorted(
            [
                "task-sent",
                "task-received",
                "task-started",
                "task-progress",
                "task-retried",
                "task-succeeded",
                "task-failed",
                "task-revoked",
                "task-rejected",
            ]
        )
    ),
    st.fixed_dictionaries({}, optional={"timestamp": JSON_SCALARS, "local_received": JSON_SCALARS}),
    st.dictionaries(
        st.sampled_from(
            [
                "name",
                "retries",
                "hostname",
                "result",
                "runtime",
                "exception",
                "traceback",
                "current",
                "total",
                "percent",
                "message",
                "terminated",
                "expired",
            ]
        ),
        JSON_VALUES,
        max_size=5,
    ),
)


@PROPERTY_SETTINGS
@given(st.lists(ODD_EVENTS, min_size=1, max_size=6))
def test_odd_events_never_crash_the_merge(events: list[dict[str, Any]]) -> None:
    store = merge_all(events)
    state = store.get(TASK).to_dict()
    assert set(state) == TASKSTATE_KEYS
    progress = state["progress"]
    if progress is not None:
        for key in ("current", "total", "percent"):
            assert progress[key] is None or abs(progress[key]) < float("inf")


@PROPERTY_SETTINGS
@given(st.data(), st.lists(ODD_EVENTS, min_size=1, max_size=6))
def test_odd_events_merge_the_same_in_any_order(data: st.DataObject, events: list[dict[str, Any]]) -> None:
    assert snapshot(data.draw(st.permutations(events))) == snapshot(events)


# -- bounded memory per task -------------------------------------------------------


def retained_bytes(obj: Any, seen: set[int] | None = None) -> int:
    """What an object keeps alive: itself and everything it holds (shared objects counted once)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(retained_bytes(k, seen) + retained_bytes(v, seen) for k, v in obj.items())
    elif isinstance(obj, (tuple, list, set, frozenset)):
        size += sum(retained_bytes(v, seen) for v in obj)
    elif hasattr(obj, "__slots__"):
        size += sum(retained_bytes(getattr(obj, name), seen) for name in obj.__slots__)
    return size


MEGABYTE = "x" * (1 << 20)


def forged_lifecycle(task_id: str) -> list[dict[str, Any]]:
    """Every field a task keeps, each a megabyte long, as one forged worker could send them."""
    return [
        event("received", 1.0, uuid=task_id, name=MEGABYTE, hostname=MEGABYTE, args=MEGABYTE, kwargs=MEGABYTE),
        event("progress", 2.0, uuid=task_id, current=1, total=2, message=MEGABYTE, hostname=MEGABYTE),
        event("retried", 3.0, uuid=task_id, exception=MEGABYTE, traceback=MEGABYTE),
        event("failed", 4.0, uuid=task_id, exception=MEGABYTE + "!", traceback=MEGABYTE + "!"),
        event("succeeded", 3.5, uuid=task_id, result=MEGABYTE, runtime=1.0),
    ]


@pytest.mark.parametrize(
    "policy, bound",
    [
        # result and exception (4 KiB each), progress message (1 KiB), name and worker: no traceback, no arguments
        (ForwardingPolicy(), 13_000),
        (ForwardingPolicy(results="none"), 9_000),
        # everything a client may be sent, each cut to its limit (the most one task can hold)
        (ForwardingPolicy(results="repr", tracebacks=True, args=True), 32_000),
    ],
    ids=["default", "no-results", "everything"],
)
def test_a_task_of_megabyte_fields_keeps_only_what_is_ever_forwarded(policy: ForwardingPolicy, bound: int) -> None:
    store = merge_all(forged_lifecycle(TASK), TaskStore(unkept=policy.never_forwarded()))
    task = store.get(TASK)
    assert task is not None and task.state == SUCCESS  # SUCCESS outranks the FAILURE
    kept = retained_bytes(task)
    assert kept < bound, f"one task holds {kept} bytes"
    for name in policy.never_forwarded():
        assert name not in task.fields
    # What clients see is unchanged by what the store leaves out.
    full = merge_all(forged_lifecycle(TASK)).get(TASK)
    assert full is not None
    assert policy.task(task.to_dict(with_args=policy.args)) == policy.task(full.to_dict(with_args=policy.args))


def test_the_default_policy_keeps_no_traceback_or_arguments_in_memory() -> None:
    store = merge_all(forged_lifecycle(TASK), TaskStore(unkept=ForwardingPolicy().never_forwarded()))
    task = store.get(TASK)
    assert task is not None
    assert {"traceback", "args", "kwargs"}.isdisjoint(task.fields)
    assert set(ForwardingPolicy(results="none").never_forwarded()) == {
        "result",
        "result_format",
        "traceback",
        "args",
        "kwargs",
    }
    assert ForwardingPolicy("repr", True, True).never_forwarded() == frozenset()
