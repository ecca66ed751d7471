"""WorkflowState (docs/protocol.md, Workflows): the state rules, counts and percent, in any order of events."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pushserver.state import TaskStore
from pushserver.workflows import (
    CHAIN,
    CHORD,
    FRACTION_UNITS,
    GROUP,
    Membership,
    RootIndex,
    Workflow,
    aggregate,
    chain_members,
    member_fraction,
)

WORKFLOW_KEYS = {
    "workflow_id",
    "kind",
    "state",
    "total",
    "counts",
    "completed",
    "failed",
    "percent",
    "task_ids",
    "updated_at",
}


def event(kind: str, uuid: str, timestamp: float, **fields: Any) -> dict[str, Any]:
    return {"type": f"task-{kind}", "uuid": uuid, "timestamp": timestamp, **fields}


def live(membership: Membership, events: list[dict[str, Any]]) -> dict[str, Any]:
    """The WorkflowState as the server keeps it (workflow_watch.py): incrementally, one merged event at a time."""
    store = TaskStore()
    workflow = Workflow(membership)
    for e in events:
        change = store.merge_event(e)
        if change is not None:
            workflow.update(change.task)
    return workflow.to_dict()


def from_scratch(membership: Membership, events: list[dict[str, Any]]) -> dict[str, Any]:
    store = TaskStore()
    for e in events:
        store.merge_event(e)
    tasks = {t: task for t in membership.task_ids if (task := store.get(t)) is not None}
    # As live(): a chain nobody has settled yet (the result backend confirms its last step, workflow_watch.py).
    return aggregate(membership, tasks, settled=False)


def group_of(n: int, kind: str = GROUP) -> Membership:
    ids = tuple(f"t{i}" for i in range(n))
    return Membership("g", kind, ids, ids[-1] if kind == CHORD else None)


def test_a_new_group_is_pending_with_every_member_counted() -> None:
    state = live(group_of(3), [])
    assert set(state) == WORKFLOW_KEYS
    assert state == {
        "workflow_id": "g",
        "kind": GROUP,
        "state": "PENDING",
        "total": 3,
        "counts": {"PENDING": 3},
        "completed": 0,
        "failed": 0,
        "percent": 0.0,
        "task_ids": ["t0", "t1", "t2"],
        "updated_at": None,
    }


def test_received_is_still_pending_started_is_started() -> None:
    assert live(group_of(2), [event("received", "t0", 1.0)])["state"] == "PENDING"
    state = live(group_of(2), [event("received", "t0", 1.0), event("started", "t0", 2.0)])
    assert state["state"] == "STARTED"
    assert state["counts"] == {"PENDING": 1, "STARTED": 1}
    assert state["updated_at"] == 2.0


def test_group_succeeds_when_every_member_succeeded() -> None:
    events = [event("succeeded", f"t{i}", 1.0 + i) for i in range(3)]
    assert live(group_of(3), events[:2])["state"] == "STARTED"
    state = live(group_of(3), events)
    assert (state["state"], state["completed"], state["failed"], state["percent"]) == ("SUCCESS", 3, 0, 100.0)


@pytest.mark.parametrize("kind", ["failed", "revoked"])
def test_one_failed_member_fails_the_group_at_once(kind: str) -> None:
    state = live(group_of(3), [event("started", "t0", 1.0), event(kind, "t1", 2.0)])
    assert state["state"] == "FAILURE"
    assert state["failed"] == 1
    assert state["counts"]["FAILURE" if kind == "failed" else "REVOKED"] == 1


def test_a_retrying_member_is_running_not_failed() -> None:
    state = live(group_of(2), [event("retried", "t0", 1.0)])
    assert (state["state"], state["failed"], state["counts"]) == ("STARTED", 0, {"PENDING": 1, "RETRY": 1})


def test_chord_succeeds_only_with_its_body() -> None:
    header = [event("succeeded", f"t{i}", 1.0 + i) for i in range(3)]
    state = live(group_of(4, CHORD), header)
    assert (state["state"], state["completed"], state["total"]) == ("STARTED", 3, 4)
    assert state["task_ids"][-1] == "t3"
    done = live(group_of(4, CHORD), [*header, event("succeeded", "t3", 9.0)])
    assert done["state"] == "SUCCESS"


def test_chord_fails_when_a_header_member_fails() -> None:
    state = live(group_of(4, CHORD), [event("failed", "t0", 1.0)])
    assert state["state"] == "FAILURE"


def test_percent_counts_finished_members_and_members_progress() -> None:
    events = [
        event("succeeded", "t0", 1.0),
        event("failed", "t1", 1.0),
        event("progress", "t2", 1.0, current=1, total=2),
    ]
    # (1 + 1 + 0.5 + 0) / 4
    assert live(group_of(4), events)["percent"] == 62.5


@pytest.mark.parametrize(
    ("state", "progress", "units"),
    [
        ("SUCCESS", None, FRACTION_UNITS),
        ("FAILURE", None, FRACTION_UNITS),
        ("STARTED", None, 0),
        ("PROGRESS", {"percent": 25.0}, 2500),
        ("PROGRESS", {"percent": 250.0}, FRACTION_UNITS - 1),
        ("PROGRESS", {"percent": -3}, 0),
        ("PROGRESS", {"percent": None}, 0),
        ("PROGRESS", {"percent": True}, 0),
    ],
)
def test_member_fraction(state: str, progress: dict[str, Any] | None, units: int) -> None:
    assert member_fraction(state, progress) == units


def test_chain_is_not_successful_until_settled() -> None:
    membership = Membership("r", CHAIN, ("r", "b"))
    workflow = Workflow(membership)
    store = TaskStore()
    for e in [event("succeeded", "r", 1.0), event("succeeded", "b", 2.0)]:
        change = store.merge_event(e)
        assert change is not None
        workflow.update(change.task)
    assert workflow.state == "STARTED"  # a third step may still be on its way
    workflow.settled = True
    assert workflow.state == "SUCCESS"
    workflow.add("c")  # ...and there was one: total grows, the chain is open again
    assert (workflow.state, workflow.total, workflow.settled) == ("STARTED", 3, False)


def test_chain_members_are_ordered_root_first_then_by_first_event() -> None:
    membership = Membership("r", CHAIN, ("c", "b", "r"))
    state = live(membership, [event("received", "c", 3.0), event("received", "b", 2.0), event("received", "r", 1.0)])
    assert state["task_ids"] == ["r", "b", "c"]


def test_root_index_collects_a_chain_from_root_id() -> None:
    index = RootIndex(max_roots=2, max_members=3)
    assert index.observe(event("received", "r", 1.0, root_id="r")) is None  # the root itself: not new
    assert index.observe(event("received", "b", 2.0, root_id="r")) == "r"
    assert index.observe(event("received", "b", 2.0, root_id="r")) is None  # twice: nothing new
    assert index.observe(event("received", "c", 3.0, root_id="r")) == "r"
    assert index.observe(event("received", "d", 4.0, root_id="r")) is None  # past max_members
    assert index.members("r") == ["r", "b", "c"]
    assert index.observe(event("started", "x", 1.0)) is None  # no root_id
    index.observe(event("received", "y", 1.0, root_id="q"))
    index.observe(event("received", "z", 1.0, root_id="p"))
    assert index.members("r") == [] and index.evicted == 1


def test_chain_members_walks_children_and_stops_past_the_limit() -> None:
    children = {"r": ["a"], "a": ["b", "c"], "b": ["a"]}
    assert chain_members("r", lambda t: children.get(t, []), 10) == ["r", "a", "b", "c"]
    assert len(chain_members("r", lambda t: children.get(t, []), 2)) == 3


# -- order independence ----------------------------------------------------------

MEMBERS = [f"t{i}" for i in range(4)]
member_event = st.builds(
    lambda kind, uuid, ts, pct: event(kind, uuid, float(ts), **({"percent": pct} if kind == "progress" else {})),
    st.sampled_from(["sent", "received", "started", "progress", "retried", "succeeded", "failed", "revoked"]),
    st.sampled_from(MEMBERS),
    st.integers(min_value=1, max_value=6),
    st.floats(min_value=0, max_value=100, allow_nan=False),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(member_event, max_size=24), kind=st.sampled_from([GROUP, CHORD, CHAIN]), data=st.data())
def test_any_order_of_the_same_events_gives_the_same_workflow_state(
    events: list[dict[str, Any]], kind: str, data: st.DataObject
) -> None:
    membership = Membership("t0", kind, tuple(MEMBERS), MEMBERS[-1] if kind == CHORD else None)
    shuffled = data.draw(st.permutations(events))
    twice = events + data.draw(st.permutations(events))
    expected = live(membership, events)
    assert live(membership, shuffled) == expected
    assert live(membership, twice) == expected
    # The running counts equal a count from scratch.
    assert from_scratch(membership, shuffled) == expected
    assert sum(expected["counts"].values()) == expected["total"] == len(MEMBERS)
    assert 0.0 <= expected["percent"] <= 100.0
