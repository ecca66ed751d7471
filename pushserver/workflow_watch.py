"""Watched workflows on one server: who watches which, their members' states, and their ``workflow:update`` emits.

Ingest (ingest.py) hands every event here (``observe``), every merged change
(``changed``), and calls ``flush`` once per batch: a workflow whose own state
(PENDING, STARTED, SUCCESS, FAILURE) or membership moved gets its update at
once; one whose counts and percent only moved is coalesced to
``--progress-hz``, like a task's progress. An update carries ``task_ids``
only when they moved since its room last got them (the ack holds them).
Membership is resolved once per watched workflow, from
the result backend (a saved group, a chord saved with its body, a chain's
recorded children) and from the events' ``root_id`` (a chain's later steps).

The rest of the server asks it three things: sockets.py hands it the
``subscribe``/``unsubscribe`` calls naming workflows and each disconnect,
access.py which watched workflows hold a task (a token naming a workflow
grants its members), and the reconciliation after a receiver reconnect
(server.py) every member watched.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from .backend import ResultBackend
from .config import Settings
from .expiry import ExpiryWheel
from .fanout import FanoutManager
from .protocol import ERROR_EVENT, ProtocolError, Subscription, workflow_room_for
from .state import TaskState, TaskStore
from .subscriptions import Subscriptions
from .workflows import CHAIN, Membership, RootIndex, Workflow

log = logging.getLogger("pushserver.workflows")

#: A task's snapshot on subscribe (memory, else result backend, else event log), merged into the store.
Snapshot = Callable[[str], Awaitable[dict[str, Any]]]


class WorkflowWatch:
    """The server's workflow side: subscriptions to workflows, their aggregation, and their emits."""

    def __init__(
        self,
        settings: Settings,
        store: TaskStore,
        backend: ResultBackend,
        fanout: FanoutManager,
        snapshot: Snapshot,
    ) -> None:
        self.settings = settings
        self.store = store
        self.backend = backend
        self.fanout = fanout
        self.snapshot = snapshot
        self.max_size = settings.max_workflow_size
        self.roots = RootIndex(max_roots=settings.max_tasks, max_members=settings.max_workflow_size + 1)
        self.subscriptions = Subscriptions(settings.max_subscriptions)
        self.expiry = ExpiryWheel(self._on_tokens_expired)
        self.progress_interval = 1.0 / settings.progress_hz
        self._workflows: dict[str, Workflow] = {}
        self._by_member: dict[str, set[str]] = {}  # task id -> watched workflows holding it
        self._dirty: dict[str, None] = {}  # workflows a member moved since the last flush, in order
        self._last_progress_emit: dict[str, float] = {}
        # workflow id -> what its room was last sent: its `state`, and its membership_version
        # (a change of either is sent at once; task_ids travel only when the membership moved)
        self._state_sent: dict[str, str] = {}
        self._membership_sent: dict[str, int] = {}
        self._pending_progress: dict[str, asyncio.TimerHandle] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._settling: set[str] = set()
        fanout.workflow_snapshot_of = self.view

    @property
    def sio(self) -> Any:
        """The Socket.IO server whose rooms the fanout keeps (sockets.py builds it, after this watch)."""
        return self.fanout.server

    # -- what the rest of the server asks ------------------------------------------

    def view(self, workflow_id: str) -> dict[str, Any] | None:
        """The current WorkflowState of a watched workflow, or None."""
        workflow = self._workflows.get(workflow_id)
        return workflow.to_dict() if workflow is not None else None

    def containing(self, task_id: str) -> Iterable[str]:
        """The watched workflows that hold ``task_id`` (a token naming one of them grants the task)."""
        return self._by_member.get(task_id, ())

    def members_watched(self) -> list[str]:
        """Every member of every watched workflow (reconciled after a receiver reconnect, and when quiet)."""
        return list(self._by_member)

    def is_member_watched(self, task_id: str) -> bool:
        """Whether ``task_id`` belongs to a watched workflow."""
        return task_id in self._by_member

    def __len__(self) -> int:
        return len(self._workflows)

    # -- subscribe / unsubscribe ---------------------------------------------------

    async def subscribe(self, sid: str, request: Subscription, expires_at: float | None) -> dict[str, Any]:
        """Subscribe ``sid`` to the request's workflows (already authorised); return the ack."""
        ids = request.workflow_ids
        fresh = [w for w in ids if w not in self._workflows]
        memberships = await asyncio.gather(*(self._resolve(w) for w in fresh))
        for membership in memberships:
            if len(membership.task_ids) > self.max_size:
                raise ProtocolError(
                    "too_many",
                    f"workflow {membership.workflow_id[:64]!r} has more than"
                    f" {self.max_size} members (--max-workflow-size)",
                )
        self.subscriptions.add(sid, ids)
        for membership in memberships:
            if membership.workflow_id not in self._workflows:  # another call may have resolved it meanwhile
                self._watch(membership)
        if expires_at is not None:
            self.expiry.set(sid, ids, expires_at)
        # Rooms first, snapshots after: an update merged meanwhile is emitted to us, never lost.
        for workflow_id in ids:
            await self.sio.enter_room(sid, workflow_room_for(workflow_id))
        members = {t for w in ids if (wf := self._workflows.get(w)) is not None for t in wf.task_ids()}
        unknown = [t for t in members if not _is_ready(self.store.get(t))]
        await asyncio.gather(*(self.snapshot(t) for t in unknown))
        for workflow_id in ids:
            # A chain whose known steps all succeeded: ask the backend for a next step before the ack,
            # so that a subscribe after the end answers SUCCESS at once.
            workflow = self._workflows.get(workflow_id)
            if (
                workflow is not None
                and not workflow.settled
                and workflow.completed == workflow.total
                and workflow_id not in self._settling
            ):
                self._settling.add(workflow_id)
                await self._settle(workflow_id)
        # Read memory again with no await before the ack leaves: never older than an update already sent.
        return {"ok": True, "workflows": [self._workflows[w].to_dict() for w in ids if w in self._workflows]}

    async def unsubscribe(self, sid: str, request: Subscription) -> dict[str, Any]:
        """End ``sid``'s subscriptions to the request's workflows (unknown ids ignored)."""
        mine = self.subscriptions.tasks_of(sid)
        for workflow_id in request.workflow_ids:
            if workflow_id in mine:
                await self.sio.leave_room(sid, workflow_room_for(workflow_id))
        self.expiry.remove(sid, request.workflow_ids)
        self._unwatch(self.subscriptions.remove(sid, request.workflow_ids))
        return {"ok": True}

    def drop(self, sid: str) -> None:
        """Forget a disconnected connection's workflow subscriptions."""
        self.expiry.drop(sid)
        self._unwatch(self.subscriptions.drop(sid))

    def close(self) -> None:
        self.expiry.close()
        for handle in self._pending_progress.values():
            handle.cancel()
        self._pending_progress.clear()

    async def _resolve(self, workflow_id: str) -> Membership:
        found = await self.backend.membership(workflow_id, self.max_size)
        if found is None:  # the result backend is away: what the events said
            found = Membership(workflow_id, CHAIN, (workflow_id,))
        if found.kind != CHAIN:
            return found
        members = dict.fromkeys(found.task_ids)
        members.update(dict.fromkeys(self.roots.members(workflow_id)))
        return Membership(workflow_id, CHAIN, tuple(members))

    def _watch(self, membership: Membership) -> None:
        workflow = Workflow(membership)
        self._workflows[membership.workflow_id] = workflow
        for task_id in membership.task_ids:
            self._join(workflow, task_id)
        # Every subscriber's ack is read after this, so holds at least this state and membership.
        self._state_sent[membership.workflow_id] = workflow.state
        self._membership_sent[membership.workflow_id] = workflow.membership_version

    def _join(self, workflow: Workflow, task_id: str) -> None:
        self._by_member.setdefault(task_id, set()).add(workflow.workflow_id)
        task = self.store.get(task_id)
        if task is not None:
            workflow.update(task)

    def _unwatch(self, workflow_ids: Iterable[str]) -> None:
        for workflow_id in workflow_ids:
            workflow = self._workflows.pop(workflow_id, None)
            if workflow is None:
                continue
            for task_id in workflow.task_ids():
                holders = self._by_member.get(task_id)
                if holders is not None:
                    holders.discard(workflow_id)
                    if not holders:
                        del self._by_member[task_id]
            self._dirty.pop(workflow_id, None)
            self._last_progress_emit.pop(workflow_id, None)
            self._state_sent.pop(workflow_id, None)
            self._membership_sent.pop(workflow_id, None)
            handle = self._pending_progress.pop(workflow_id, None)
            if handle is not None:
                handle.cancel()

    # -- the hot path ------------------------------------------------------------------

    def observe(self, event: dict[str, Any]) -> None:
        """Note an event's ``root_id``: a new step of a watched chain joins it (its total grows)."""
        root = self.roots.observe(event)
        if root is None:
            return
        workflow = self._workflows.get(root)
        if workflow is None or workflow.kind != CHAIN or workflow.total >= self.max_size:
            return
        task_id = event["uuid"]
        if workflow.add(task_id):
            self._join(workflow, task_id)
            self._dirty[root] = None

    def changed(self, task: TaskState) -> None:
        """Take one merged change of a task into every watched workflow that holds it."""
        holders = self._by_member.get(task.task_id)
        if not holders:
            return
        for workflow_id in holders:
            if self._workflows[workflow_id].update(task):
                self._dirty[workflow_id] = None

    def flush(self) -> None:
        """Emit the workflows changed by the batch just merged.

        A change of the workflow's own ``state`` (it started, failed, succeeded) or of its membership is sent
        now; a change of only its counts and percent (members moving on inside it) is coalesced to
        ``--progress-hz``, like a task's progress: at 1 000 member events/s a group would otherwise get an
        update per batch, each costing the server a websocket write per subscriber (docs/benchmarks.md).
        """
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, {}
        for workflow_id in dirty:
            workflow = self._workflows.get(workflow_id)
            if workflow is None:
                continue
            self._maybe_settle(workflow_id)
            if self._state_or_membership_moved(workflow):
                handle = self._pending_progress.pop(workflow_id, None)
                if handle is not None:
                    handle.cancel()
                self._emit(workflow_id, progress=False)
                continue
            if workflow_id in self._pending_progress:
                continue  # the pending flush sends the newest
            due = self._last_progress_emit.get(workflow_id, float("-inf")) + self.progress_interval
            loop = asyncio.get_running_loop()
            now = loop.time()
            if now >= due:
                self._last_progress_emit[workflow_id] = now
                self._emit(workflow_id, progress=True)
            else:
                self._pending_progress[workflow_id] = loop.call_at(due, self._flush_progress, workflow_id)

    def _state_or_membership_moved(self, workflow: Workflow) -> bool:
        """Whether the workflow's ``state`` or ``task_ids`` differ from what its room was last sent."""
        workflow_id = workflow.workflow_id
        state_moved = workflow.state != self._state_sent.get(workflow_id)
        return state_moved or workflow.membership_version != self._membership_sent.get(workflow_id)

    def _flush_progress(self, workflow_id: str) -> None:
        self._pending_progress.pop(workflow_id, None)
        if workflow_id in self._workflows:
            self._last_progress_emit[workflow_id] = asyncio.get_running_loop().time()
            self._emit(workflow_id, progress=True)

    def _emit(self, workflow_id: str, progress: bool) -> None:
        """Send the room the workflow's state, with ``task_ids`` only when they moved since the room last got them.

        Whoever is in the room holds the membership as of its ack or of the last update that carried it:
        the ack is read after joining the room, so it is never older than ``_membership_sent``.
        """
        workflow = self._workflows[workflow_id]
        self._state_sent[workflow_id] = workflow.state
        version = workflow.membership_version
        moved = self._membership_sent.get(workflow_id) != version
        if moved:
            self._membership_sent[workflow_id] = version
            progress = False  # never shed for a laggard: the updates after it rely on it
        self.fanout.send(workflow_id, workflow.to_dict(with_task_ids=moved), progress=progress, workflow=True)

    # -- a chain's end ---------------------------------------------------------------------

    def _maybe_settle(self, workflow_id: str) -> None:
        """Once every known step of a chain succeeded, ask the result backend whether another follows."""
        workflow = self._workflows.get(workflow_id)
        if (
            workflow is None
            or workflow.settled
            or workflow_id in self._settling
            or workflow.completed != workflow.total
        ):
            return
        self._settling.add(workflow_id)
        self._spawn(self._settle(workflow_id))

    async def _settle(self, workflow_id: str) -> None:
        watched = self._workflows.get(workflow_id)
        before = watched.total if watched is not None else 0
        try:
            found = await self.backend.membership(workflow_id, self.max_size)
        finally:
            self._settling.discard(workflow_id)
        workflow = self._workflows.get(workflow_id)
        if workflow is None or workflow is not watched:
            return
        # Without a result backend the chain ends with its last known step.
        for task_id in found.task_ids if found is not None else ():
            if workflow.total >= self.max_size:
                break
            if workflow.add(task_id):
                self._join(workflow, task_id)
        if workflow.total == before and workflow.completed == workflow.total:
            workflow.settled = True  # no step appeared, from the backend or the events, while we asked
        else:
            await asyncio.gather(*(self.snapshot(t) for t in workflow.task_ids() if not _is_ready(self.store.get(t))))
            self._maybe_settle(workflow_id)
        self._dirty[workflow_id] = None
        self.flush()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- token expiry ------------------------------------------------------------------------

    def _on_tokens_expired(self, expired: dict[str, list[str]]) -> None:
        self._spawn(self._end_expired(expired))

    async def _end_expired(self, expired: dict[str, list[str]]) -> None:
        """Take each connection out of the workflows its tokens no longer grant, then tell it which."""
        for sid, workflow_ids in expired.items():
            mine = self.subscriptions.tasks_of(sid)
            ended = [w for w in workflow_ids if w in mine and self.expiry.deadline(sid, w) is None]
            if not ended:
                continue
            for workflow_id in ended:
                await self.sio.leave_room(sid, workflow_room_for(workflow_id))
            self._unwatch(self.subscriptions.remove(sid, ended))
            await self.sio.emit(
                ERROR_EVENT,
                {
                    "code": "token_expired",
                    "task_ids": [],
                    "workflow_ids": ended,
                    "message": "the token for these workflows has expired: subscribe again with a fresh token",
                },
                to=sid,
            )


def _is_ready(task: TaskState | None) -> bool:
    return task is not None and task.ready
