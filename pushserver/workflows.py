"""WorkflowState: the progress of a group, chord or chain, aggregated from its members' TaskStates.

A workflow's state is a pure function of its membership and of each member's
merged TaskState, so it inherits the task merge's order independence: any
order of the same events gives the same WorkflowState. ``Workflow`` keeps the
counts incrementally (one member's change costs O(1), not O(members)), and
the progress fractions are summed as integers so that even the percentage
does not depend on the order in which members changed.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .state import FAILURE, PENDING, PRECEDENCE, READY_STATES, STARTED, SUCCESS, TaskState

GROUP = "group"
CHORD = "chord"
CHAIN = "chain"
KINDS = (GROUP, CHORD, CHAIN)

#: A member's progress is kept in these units of one whole (integers add up in any order to the same sum).
FRACTION_UNITS = 10_000
#: Member states that end the workflow's hope of succeeding.
FAILED_STATES = READY_STATES - {SUCCESS}
#: A member at or past this rank has begun to run.
_STARTED_RANK = PRECEDENCE[STARTED]


@dataclass(frozen=True)
class Membership:
    """Which tasks make a workflow: its kind, its member ids in order, and a chord's body."""

    workflow_id: str
    kind: str
    task_ids: tuple[str, ...]
    body_id: str | None = None  # a chord's body, also the last of task_ids


def member_fraction(state: str, progress: Mapping[str, Any] | None) -> int:
    """How much of one member is done, in FRACTION_UNITS: whole once finished, else its own progress percent."""
    if state in READY_STATES:
        return FRACTION_UNITS
    if not progress:
        return 0
    percent = progress.get("percent")
    if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not percent > 0:
        return 0
    # A member's progress never counts for more than the member (a buggy task may report 120 %).
    return min(FRACTION_UNITS - 1, int(percent * FRACTION_UNITS // 100))


def _started(state: str) -> bool:
    return state in READY_STATES or state == "RETRY" or PRECEDENCE.get(state, 0) >= _STARTED_RANK


class Workflow:
    """One watched workflow: its members' current states and the running counts of its WorkflowState."""

    def __init__(self, membership: Membership) -> None:
        self.workflow_id = membership.workflow_id
        self.kind = membership.kind
        self.body_id = membership.body_id
        self._order: dict[str, int] = {}
        self._members: dict[str, tuple[str, int]] = {}  # task id -> (state, fraction units)
        self._newest: float | None = None  # the newest member event time (each member's only grows)
        self._first_seen: dict[str, float] = {}  # a chain member -> its earliest event time
        self.counts: Counter[str] = Counter()
        self.fractions = 0
        self.started = 0
        #: A chain is settled once the result backend confirms no further step follows its last success.
        self.settled = self.kind != CHAIN
        self._task_ids: list[str] = []
        self._stale = True  # task_ids() may have moved: a member joined, a chain member's first event is known
        # Bumped each time task_ids() comes out different: whether a workflow:update carries them (workflow_watch.py).
        self._membership_version = 0
        for task_id in membership.task_ids:
            self.add(task_id)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._members

    @property
    def total(self) -> int:
        return len(self._members)

    def add(self, task_id: str) -> bool:
        """Make ``task_id`` a member (PENDING until ``update``); return False when it already is one."""
        if task_id in self._members:
            return False
        self._members[task_id] = (PENDING, 0)
        self._order[task_id] = len(self._order)
        self.counts[PENDING] += 1
        self._stale = True
        if self.kind == CHAIN:
            self.settled = False  # a new step: whether more follow is open again
        return True

    def update(self, task: TaskState) -> bool:
        """Take a member's new TaskState into the counts; return True when the WorkflowState changed."""
        old = self._members.get(task.task_id)
        if old is None:
            return False
        progress = task.value("progress")
        new = (task.state, member_fraction(task.state, progress))
        updated = task.updated_at
        if updated is not None and updated > 0 and (self._newest is None or updated > self._newest):
            self._newest = updated
        if self.kind == CHAIN:
            # Where the member sits in task_ids: its oldest known event, a pure function of its events.
            first = min((at for at in task.seen.values() if at > 0), default=None)
            if first is not None and self._first_seen.get(task.task_id) != first:
                self._first_seen[task.task_id] = first
                self._stale = True
        if new == old:
            return False
        self._members[task.task_id] = new
        self.fractions += new[1] - old[1]
        if new[0] != old[0]:
            self.counts[old[0]] -= 1
            if not self.counts[old[0]]:
                del self.counts[old[0]]
            self.counts[new[0]] += 1
            self.started += _started(new[0]) - _started(old[0])
        return True

    def member_state(self, task_id: str) -> str | None:
        entry = self._members.get(task_id)
        return entry[0] if entry is not None else None

    def task_ids(self) -> list[str]:
        """The members in workflow order: a group's saved order (a chord's body last), a chain's by first sight."""
        if self._stale:
            self._stale = False
            if self.kind == CHAIN:
                # Root first, then by when each was first seen (its earliest event), ties by id:
                # a pure function of the events, whatever order they came in.
                def key(task_id: str) -> tuple[int, float, str]:
                    return (task_id != self.workflow_id, self._first_seen.get(task_id, float("inf")), task_id)

                task_ids = sorted(self._members, key=key)
            else:
                task_ids = sorted(self._members, key=self._order.__getitem__)
            if task_ids != self._task_ids:
                self._task_ids = task_ids
                self._membership_version += 1
        return self._task_ids

    @property
    def membership_version(self) -> int:
        """A number that changes exactly when ``task_ids()`` does (a member joined, a chain's order moved)."""
        self.task_ids()
        return self._membership_version

    @property
    def completed(self) -> int:
        return self.counts.get(SUCCESS, 0)

    @property
    def failed(self) -> int:
        return sum(self.counts.get(s, 0) for s in FAILED_STATES)

    @property
    def state(self) -> str:
        """PENDING until a member starts, STARTED while unfinished, FAILURE once it cannot succeed, else SUCCESS."""
        if self.failed:
            return FAILURE
        if self.kind == CHORD and self.body_id is not None:
            body = self.member_state(self.body_id)
            if body == SUCCESS:
                return SUCCESS
        elif self.total and self.completed == self.total and self.settled:
            return SUCCESS
        return STARTED if self.started else PENDING

    @property
    def percent(self) -> float:
        """Finished members plus the running members' own progress, as a percentage of all members."""
        if not self.total:
            return 0.0
        return round(100.0 * self.fractions / (self.total * FRACTION_UNITS), 2)

    @property
    def updated_at(self) -> float | None:
        return self._newest

    def to_dict(self, with_task_ids: bool = True) -> dict[str, Any]:
        """The WorkflowState JSON object of the protocol (docs/protocol.md, WorkflowState).

        Without ``with_task_ids``, the same object less ``task_ids``: a ``workflow:update`` whose membership
        its receivers already hold (a 1 000-member group's ids are ~39 KB, the counts ~200 bytes).
        """
        state = {
            "workflow_id": self.workflow_id,
            "kind": self.kind,
            "state": self.state,
            "total": self.total,
            "counts": dict(sorted(self.counts.items())),
            "completed": self.completed,
            "failed": self.failed,
            "percent": self.percent,
            "updated_at": self.updated_at,
        }
        if with_task_ids:
            state["task_ids"] = self.task_ids()
        return state


def aggregate(membership: Membership, tasks: Mapping[str, TaskState], settled: bool = True) -> dict[str, Any]:
    """The WorkflowState of ``membership`` from scratch, given its members' TaskStates (missing: PENDING)."""
    workflow = Workflow(membership)
    for task_id in membership.task_ids:
        task = tasks.get(task_id)
        if task is not None:
            workflow.update(task)
    if workflow.kind == CHAIN:
        workflow.settled = settled
    return workflow.to_dict()


class RootIndex:
    """Which tasks share a ``root_id``: a chain's members as the events name them, least recently grown evicted.

    Celery puts ``root_id`` in ``task-sent`` and ``task-received``: every task
    of a chain, and every task those spawn, carries the chain's first task id.
    """

    def __init__(self, max_roots: int = 100_000, max_members: int = 10_001) -> None:
        self.max_roots = max_roots
        self.max_members = max_members
        self._members: OrderedDict[str, dict[str, None]] = OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._members)

    def observe(self, event: Mapping[str, Any]) -> str | None:
        """Note the event's task under its root; return the root id when that made a new member."""
        root = event.get("root_id")
        task_id = event.get("uuid")
        if not isinstance(root, str) or not root or len(root) > 255 or not isinstance(task_id, str):
            return None
        members = self._members.get(root)
        if members is None:
            members = self._members[root] = {root: None}
            if len(self._members) > self.max_roots:
                self._members.popitem(last=False)
                self.evicted += 1
        else:
            self._members.move_to_end(root)
        if task_id in members or len(members) >= self.max_members:
            return None
        members[task_id] = None
        return root

    def members(self, root: str) -> list[str]:
        """The tasks known to carry ``root`` as their root_id (the root itself first); empty when unknown."""
        return list(self._members.get(root, ()))


def chain_members(root: str, children_of: Callable[[str], Iterable[str]], limit: int) -> list[str]:
    """Walk a chain from its root through each task's children (as the result backend records them), breadth first.

    Stops once more than ``limit`` members are found.
    """
    found: dict[str, None] = {root: None}
    queue = deque([root])
    while queue and len(found) <= limit:
        task_id = queue.popleft()
        for child in children_of(task_id):
            if child not in found:
                found[child] = None
                queue.append(child)
                if len(found) > limit:
                    break
    return list(found)
