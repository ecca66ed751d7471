"""WorkflowWatch's emits: one update per batch for state changes, progress coalesced, members' grants, limits."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pushserver.config import Settings
from pushserver.ingest import Ingest
from pushserver.metrics import Metrics
from pushserver.protocol import ProtocolError, Subscription
from pushserver.state import TaskStore
from pushserver.subscriptions import Subscriptions
from pushserver.workflow_watch import WorkflowWatch
from pushserver.workflows import CHAIN, GROUP, Membership


class FakeFanout:
    """Records what would be sent to a workflow's room."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any], bool]] = []
        self.workflow_snapshot_of: Any = None
        self.server = FakeSio()  # the Socket.IO server the fanout serves: WorkflowWatch's rooms

    def send(self, key: str, payload: dict[str, Any], progress: bool, *, workflow: bool = False) -> int:
        assert workflow
        self.sent.append((key, payload, progress))
        return 1


class FakeSio:
    def __init__(self) -> None:
        self.rooms: set[tuple[str, str]] = set()

    async def enter_room(self, sid: str, room: str) -> None:
        self.rooms.add((sid, room))

    async def leave_room(self, sid: str, room: str) -> None:
        self.rooms.discard((sid, room))

    async def emit(self, *args: Any, **kwargs: Any) -> None:
        pass


class FakeBackend:
    def __init__(self, *known: Membership) -> None:
        self.known = {m.workflow_id: m for m in known}

    async def membership(self, workflow_id: str, limit: int) -> Membership | None:
        return self.known.get(workflow_id, Membership(workflow_id, CHAIN, (workflow_id,)))


def ev(kind: str, uuid: str, ts: float, **fields: Any) -> dict[str, Any]:
    return {"type": f"task-{kind}", "uuid": uuid, "timestamp": ts, **fields}


def make(*known: Membership, **settings: Any) -> tuple[WorkflowWatch, TaskStore, FakeFanout]:
    store = TaskStore()
    fanout = FakeFanout()

    async def snapshot(task_id: str) -> dict[str, Any]:
        return {}

    watch = WorkflowWatch(
        Settings(insecure=True, **settings),
        store,
        FakeBackend(*known),  # type: ignore[arg-type]
        fanout,
        snapshot,
    )  # type: ignore[arg-type]
    return watch, store, fanout


def merge(watch: WorkflowWatch, store: TaskStore, events: list[dict[str, Any]]) -> None:
    """One batch through the real Ingest (ingest.py), which hands each event and change to the watch."""
    # No task subscriptions: the coalescer is never asked.
    ingest = Ingest(store, Subscriptions(), None, Metrics(), workflows=watch)  # type: ignore[arg-type]
    ingest.merge(events)


GROUP_OF_3 = Membership("g", GROUP, ("a", "b", "c"))


async def test_subscribe_acks_the_workflow_and_a_batch_of_changes_is_one_update() -> None:
    watch, store, fanout = make(GROUP_OF_3)
    ack = await watch.subscribe("s1", Subscription((), None, ("g",)), None)
    assert ack["ok"] and ack["workflows"][0]["total"] == 3
    merge(watch, store, [ev("started", "a", 1.0), ev("succeeded", "a", 2.0), ev("started", "b", 2.5)])
    assert len(fanout.sent) == 1
    _, payload, progress = fanout.sent[0]
    assert (payload["counts"], progress) == ({"PENDING": 1, "STARTED": 1, "SUCCESS": 1}, False)
    merge(watch, store, [ev("started", "x", 3.0)])  # not a member: nothing
    assert len(fanout.sent) == 1


async def test_progress_only_changes_are_coalesced_the_newest_sent() -> None:
    watch, store, fanout = make(GROUP_OF_3, progress_hz=20.0)
    await watch.subscribe("s1", Subscription((), None, ("g",)), None)
    merge(watch, store, [ev("started", "a", 1.0)])
    for i in range(1, 6):
        merge(watch, store, [ev("progress", "a", 1.0 + i / 10, percent=10.0 * i)])
    progress = [p for _, p, is_progress in fanout.sent if is_progress]
    assert len(progress) == 1  # the first at once, the rest waiting for the interval
    await asyncio.sleep(0.1)
    progress = [p for _, p, is_progress in fanout.sent if is_progress]
    assert len(progress) == 2
    assert progress[-1]["percent"] == pytest.approx(50.0 / 3, abs=0.01)


async def test_a_chain_grows_from_root_id_and_waits_for_the_backend_before_success() -> None:
    watch, store, fanout = make()
    ack = await watch.subscribe("s1", Subscription((), None, ("r",)), None)
    assert ack["workflows"][0]["task_ids"] == ["r"]
    merge(
        watch,
        store,
        [
            ev("received", "r", 1.0, root_id="r"),
            ev("succeeded", "r", 2.0),
            ev("received", "n", 3.0, root_id="r", parent_id="r"),
        ],
    )
    assert fanout.sent[-1][1]["task_ids"] == ["r", "n"]
    merge(watch, store, [ev("succeeded", "n", 4.0)])
    await asyncio.sleep(0.05)  # the settle: the backend (here) records no further step
    assert fanout.sent[-1][1]["state"] == "SUCCESS"
    assert fanout.sent[-1][1]["total"] == 2


async def test_a_chains_steps_merged_before_anyone_watched_are_in_the_first_ack() -> None:
    # Ingest hands every event to the watch, watched or not: the root_id index is how
    # a chain subscribed after its steps were sent still knows them.
    watch, store, _ = make()
    merge(
        watch,
        store,
        [ev("received", "r", 1.0, root_id="r"), ev("received", "n", 2.0, root_id="r", parent_id="r")],
    )
    ack = await watch.subscribe("s1", Subscription((), None, ("r",)), None)
    assert ack["workflows"][0]["task_ids"] == ["r", "n"]
    assert ack["workflows"][0]["counts"] == {"RECEIVED": 2}


async def test_members_are_granted_by_the_workflow_and_forgotten_when_nobody_watches() -> None:
    watch, store, _ = make(GROUP_OF_3)
    await watch.subscribe("s1", Subscription((), None, ("g",)), None)
    assert list(watch.containing("b")) == ["g"]
    assert sorted(watch.members_watched()) == ["a", "b", "c"]
    await watch.unsubscribe("s1", Subscription((), None, ("g",)))
    assert list(watch.containing("b")) == []
    assert len(watch) == 0


async def test_a_workflow_over_the_limit_is_refused_too_many() -> None:
    watch, _, _ = make(GROUP_OF_3, max_workflow_size=2)
    with pytest.raises(ProtocolError) as refused:
        await watch.subscribe("s1", Subscription((), None, ("g",)), None)
    assert refused.value.code == "too_many"
    assert len(watch) == 0


async def test_updates_carry_task_ids_only_when_the_membership_moved() -> None:
    # A 1 000-member group's task_ids are ~39 KB: sent in the ack, not again with every count change.
    watch, store, fanout = make(GROUP_OF_3)
    ack = await watch.subscribe("s1", Subscription((), None, ("g",)), None)
    assert ack["workflows"][0]["task_ids"] == ["a", "b", "c"]
    merge(watch, store, [ev("started", "a", 1.0)])
    merge(watch, store, [ev("succeeded", "a", 2.0)])
    assert [("task_ids" in payload) for _, payload, _ in fanout.sent] == [False, False]
    # What the fanout sends a laggard it catches up, and a later subscriber's ack, are whole.
    assert watch.view("g")["task_ids"] == ["a", "b", "c"]  # type: ignore[index]
    ack = await watch.subscribe("s2", Subscription((), None, ("g",)), None)
    assert ack["workflows"][0]["task_ids"] == ["a", "b", "c"]


async def test_a_chains_new_step_sends_task_ids_once_never_shed_and_a_client_merging_holds_the_whole_state() -> None:
    watch, store, fanout = make(progress_hz=1000.0)
    ack = await watch.subscribe("s1", Subscription((), None, ("r",)), None)
    held = ack["workflows"][0]
    batches = [
        [ev("received", "r", 1.0, root_id="r")],
        [ev("progress", "r", 1.5, percent=50.0)],
        [ev("succeeded", "r", 2.0)],
        [ev("received", "n", 3.0, root_id="r", parent_id="r")],  # a new step: the membership moves
        [ev("started", "n", 3.5)],
        [ev("received", "m", 4.0, root_id="r", parent_id="n"), ev("progress", "n", 4.1, percent=10.0)],
        [ev("succeeded", "n", 5.0), ev("succeeded", "m", 5.5)],
    ]
    for batch in batches:
        before = len(fanout.sent)
        merge(watch, store, batch)
        await asyncio.sleep(0.01)  # a coalesced progress update, or the chain's settle
        for _, payload, progress in fanout.sent[before:]:
            if "task_ids" in payload:
                assert not progress  # a laggard must not lose it to progress shedding
            held = {**held, **payload}
        # The client's merged state is the server's whole WorkflowState, after every batch.
        assert held == watch.view("r")
    with_ids = [payload["task_ids"] for _, payload, _ in fanout.sent if "task_ids" in payload]
    assert with_ids == [["r", "n"], ["r", "n", "m"]]
    assert (held["state"], held["total"]) == ("SUCCESS", 3)


async def test_member_changes_are_coalesced_but_the_workflows_own_state_is_sent_at_once() -> None:
    # At 1 000 member events/s an update per batch costs a websocket write per batch per subscriber;
    # a progress bar needs no more than --progress-hz of them. Starting, failing, succeeding wait for nothing.
    watch, store, fanout = make(Membership("g", GROUP, ("a", "b", "c", "d")), progress_hz=20.0)
    await watch.subscribe("s1", Subscription((), None, ("g",)), None)
    merge(watch, store, [ev("started", "a", 1.0)])  # PENDING -> STARTED: at once
    merge(watch, store, [ev("succeeded", "a", 2.0)])  # counts only, none sent lately: at once
    merge(watch, store, [ev("started", "b", 3.0)])  # counts only, within 1/20 s: waits
    merge(watch, store, [ev("succeeded", "b", 4.0)])
    assert [(p["state"], p["completed"], progress) for _, p, progress in fanout.sent] == [
        ("STARTED", 0, False),
        ("STARTED", 1, True),
    ]
    await asyncio.sleep(0.1)
    assert [(p["completed"], progress) for _, p, progress in fanout.sent[2:]] == [(2, True)]  # the newest
    merge(watch, store, [ev("succeeded", "c", 5.0)])  # counts only, within the window again: waits
    merge(watch, store, [ev("failed", "d", 6.0)])  # -> FAILURE: at once, and nothing older after it
    assert fanout.sent[-1][1]["state"] == "FAILURE" and fanout.sent[-1][2] is False
    assert fanout.sent[-1][1]["counts"] == {"FAILURE": 1, "SUCCESS": 3}
    sent = len(fanout.sent)
    await asyncio.sleep(0.1)
    assert len(fanout.sent) == sent


async def test_the_last_member_succeeding_sends_success_at_once() -> None:
    watch, store, fanout = make(GROUP_OF_3, progress_hz=0.1)  # a window of 10 s: only the state goes now
    await watch.subscribe("s1", Subscription((), None, ("g",)), None)
    merge(watch, store, [ev("succeeded", "a", 1.0), ev("succeeded", "b", 1.0)])  # -> STARTED: at once
    merge(watch, store, [ev("received", "c", 2.0)])  # counts only: the first at once
    merge(watch, store, [ev("started", "c", 2.5)])  # counts only: waits 10 s
    merge(watch, store, [ev("succeeded", "c", 3.0)])  # -> SUCCESS: at once, the wait cancelled
    assert [(p["state"], p["counts"], progress) for _, p, progress in fanout.sent] == [
        ("STARTED", {"PENDING": 1, "SUCCESS": 2}, False),
        ("STARTED", {"RECEIVED": 1, "SUCCESS": 2}, True),
        ("SUCCESS", {"SUCCESS": 3}, False),  # never shed for a slow reader
    ]
    assert not watch._pending_progress
