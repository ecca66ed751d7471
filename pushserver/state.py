"""TaskState and the rules that merge Celery task events into it.

Events reach us out of order (the client's ``task-sent`` races the worker's
events, batched ``task.multi`` messages interleave across workers) and twice
(two receivers, a replay). The merge is therefore a pure function of the *set*
of events seen: each field keeps the value of its newest event, and the
visible state is chosen by Celery's precedence, so any order of the same
events gives the same TaskState, and applying an event again changes nothing.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson
from celery.utils.saferepr import saferepr

PENDING = "PENDING"
SENT = "SENT"
RECEIVED = "RECEIVED"
STARTED = "STARTED"
PROGRESS = "PROGRESS"
RETRY = "RETRY"
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
REVOKED = "REVOKED"
REJECTED = "REJECTED"

#: States after which a task does nothing more: Celery's READY_STATES, plus
#: REJECTED, which we only announce for a rejection without requeue (a
#: requeued rejection re-opens the task like RETRY).
READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED, REJECTED})

#: Precedence, lowest first. Celery's (``celery.states.PRECEDENCE``) with
#: three changes: SENT sits just above PENDING; the custom PROGRESS sits
#: between STARTED and the ready states (Celery ranks an unknown state above
#: REVOKED, so a late progress event would undo a revoke); and REJECTED is a
#: ready state, since a rejection without requeue ends the task.
PRECEDENCE: dict[str, int] = {
    PENDING: 0,
    SENT: 1,
    RECEIVED: 2,
    STARTED: 3,
    PROGRESS: 4,
    REJECTED: 5,
    REVOKED: 6,
    FAILURE: 7,
    SUCCESS: 8,
}

#: Ready states outrank every unfinished one; the merge relies on it.
_READY_RANK = min(PRECEDENCE[s] for s in READY_STATES)
assert all(r < _READY_RANK for s, r in PRECEDENCE.items() if s not in READY_STATES)
_NEVER = float("-inf")

#: Event type -> the state it announces (Celery's TASK_EVENT_TO_STATE, plus ours).
EVENT_TO_STATE: dict[str, str] = {
    "task-sent": SENT,
    "task-received": RECEIVED,
    "task-started": STARTED,
    "task-progress": PROGRESS,
    "task-retried": RETRY,
    "task-succeeded": SUCCESS,
    "task-failed": FAILURE,
    "task-revoked": REVOKED,
    "task-rejected": REJECTED,
}

#: Which event fields feed which TaskState fields.
_FIELD_SOURCES: dict[str, tuple[str, ...]] = {
    "task-sent": ("name", "retries", "args", "kwargs"),
    "task-received": ("name", "retries", "hostname", "args", "kwargs"),
    "task-started": ("hostname",),
    "task-progress": ("progress", "hostname"),
    "task-retried": ("exception", "exception_type", "traceback", "hostname"),
    "task-succeeded": ("result", "result_format", "runtime", "hostname"),
    "task-failed": ("exception", "exception_type", "traceback", "hostname"),
    "task-revoked": ("exception", "exception_type"),
    "task-rejected": ("hostname",),
}

#: Longest text kept per field, in bytes of UTF-8, which is all a client is ever sent of it (Celery
#: itself caps results at 1 024 characters). With the progress message (1 024) this bounds what one
#: task holds and what one update weighs on the wire.
TEXT_LIMITS = {
    "name": 255,
    "hostname": 255,
    "args": 1024,
    "kwargs": 1024,
    "result": 4096,
    "exception": 4096,
    "traceback": 16384,
}
PROGRESS_MESSAGE_LIMIT = 1024

#: How a SUCCESS state's ``result`` reads: the JSON value the task returned, Celery's repr of it
#: (the result backend had none), or nothing because it was larger than ``--max-result-bytes``.
RESULT_JSON = "json"
RESULT_REPR = "repr"
RESULT_TOO_LARGE = "too_large"
RESULT_FORMATS = frozenset({RESULT_JSON, RESULT_REPR, RESULT_TOO_LARGE})

#: The JSON value types a ``result_format: "json"`` result may hold at its top level.
_JSON_TYPES = (dict, list, str, int, float, bool, type(None))

# ``ValueError('boom')``, ``TaskRevokedError('expired')``: Celery's repr of an exception starts with its class.
_EXCEPTION_CLASS = re.compile(r"([A-Za-z_][\w.]*)\(")


def is_task_event(event: Mapping[str, Any]) -> bool:
    """Tell whether a decoded Celery event describes a task we can merge."""
    uuid = event.get("uuid")
    # Longer ids could never be subscribed to (protocol.MAX_TASK_ID_LENGTH): don't keep them.
    return event.get("type") in EVENT_TO_STATE and isinstance(uuid, str) and 0 < len(uuid) <= 255


def normalize_progress(event: Mapping[str, Any]) -> dict[str, Any]:
    """Turn a ``task-progress`` event's fields into the TaskState ``progress`` object."""
    current = finite_number(event.get("current"))
    total = finite_number(event.get("total"))
    percent = finite_number(event.get("percent"))
    if percent is None and current is not None and total:
        percent = finite_number(round(100.0 * current / total, 2))  # inf when total is tiny
    message = event.get("message")
    if isinstance(message, str):
        message = client_text(message, PROGRESS_MESSAGE_LIMIT)
    return {
        "current": current,
        "total": total,
        "percent": percent,
        "message": message if isinstance(message, str) else None,
    }


def client_text(text: str, max_bytes: int) -> str:
    """A text from an event as clients are sent it: at most ``max_bytes`` of UTF-8, cut between characters.

    Lone surrogates (JSON and pickle carry them, UTF-8 cannot) are written as their escapes, as the event
    log writes them, rather than making the whole update unencodable.
    """
    if text.isascii():
        return text[:max_bytes]
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:
        encoded = text.encode("utf-8", "backslashreplace")
    else:
        if len(encoded) <= max_bytes:
            return text
    # A cut inside a character leaves part of it at the end; "ignore" drops just that part.
    return encoded[:max_bytes].decode("utf-8", "ignore")


def finite_number(value: Any) -> float | int | None:
    """A number from an event as a client can read it and we can compute with it; None when it is none."""
    # Browsers' JSON.parse rejects NaN and Infinity, and JSON ints can be too
    # big for a float: keep only numbers a client can read and we can divide.
    kind = type(value)
    if kind is float:  # the common case first (every timestamp): finite floats are all x - x == 0
        return value if value - value == 0 else None
    if kind is int and -(2**63) <= value < 2**63:
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        if not math.isfinite(value):
            return None
    except OverflowError:
        return None
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        return float(value)  # JSON encoders (orjson, MongoDB's BSON) stop at 64 bits
    return value


#: A value and the event timestamp that set it: ``(at, rank, value)``; the newer stamp wins.
#: A plain tuple on purpose: exact tuples and dicts that hold only plain values
#: drop out of the garbage collector's tracking, so a store of 100 000 tasks
#: adds ~1 tracked object per task, not a dozen, to every full collection
#: (whose pause is what a client sees as latency).
_Stamp = tuple  # (at: float, rank: int, value: Any)
_AT, _RANK, _VALUE = 0, 1, 2


def _wins_tie(rank: int, value: Any, other: _Stamp) -> bool:
    """Between two values stamped at the same time: precedence, then the repr, decide.

    Any fixed rule would do; this one never depends on arrival order.
    """
    if rank != other[_RANK]:
        return rank > other[_RANK]
    return repr(value) > repr(other[_VALUE])


@dataclass(slots=True)
class TaskState:
    """Everything known about one task, merged from its events; serialised as the protocol's TaskState."""

    task_id: str
    # newest timestamp seen for each state announced by an event
    seen: dict[str, float] = field(default_factory=dict)
    fields: dict[str, _Stamp] = field(default_factory=dict)
    last_event: _Stamp | None = None
    state: str = PENDING

    def apply(self, event_type: str, timestamp: float, values: Mapping[str, Any]) -> bool:
        """Merge one event; return True when the visible TaskState changed."""
        # The hot path of ingest: stamps are only built for values that win.
        state = EVENT_TO_STATE[event_type]
        rank = PRECEDENCE.get(state, 0)
        seen = self.seen
        changed = moved = False
        if timestamp > seen.get(state, _NEVER):
            seen[state] = timestamp
            changed = moved = True
        fields = self.fields
        for name, value in values.items():
            old = fields.get(name)
            if old is None or timestamp > old[_AT] or (timestamp == old[_AT] and _wins_tie(rank, value, old)):
                fields[name] = (timestamp, rank, value)
                if not changed and (old is None or old[_VALUE] != value):
                    changed = True
        last = self.last_event
        if last is None or timestamp > last[_AT] or (timestamp == last[_AT] and _wins_tie(rank, event_type, last)):
            if not changed and (last is None or last[_VALUE] != event_type):
                changed = True
            self.last_event = (timestamp, rank, event_type)
        if moved:
            # Only ``seen`` decides the state. Without a retry every state seen counts, so the
            # higher-ranked of the current state and this one wins, as _resolve_state would say.
            if state != RETRY and RETRY not in seen:
                if rank > PRECEDENCE[self.state]:
                    self.state = state
            else:
                self.state = self._resolve_state()
        return changed

    def _resolve_state(self) -> str:
        # The highest-ranked state seen wins, where a ready state always
        # counts but an unfinished one only if announced after the newest
        # retry: RETRY re-opens a task, and only the current attempt counts.
        seen = self.seen
        retried_at = seen.get(RETRY)
        best, best_rank = "", -1
        for state, at in seen.items():
            if state == RETRY:
                continue
            rank = PRECEDENCE[state]
            if rank > best_rank and (rank >= _READY_RANK or retried_at is None or at > retried_at):
                best, best_rank = state, rank
        if best:
            return best
        return RETRY if retried_at is not None else PENDING

    @property
    def ready(self) -> bool:
        """True once the task reached SUCCESS, FAILURE or REVOKED."""
        return self.state in READY_STATES

    @property
    def updated_at(self) -> float | None:
        return max(self.seen.values()) if self.seen else None

    def value(self, name: str, default: Any = None) -> Any:
        stamp = self.fields.get(name)
        return default if stamp is None else stamp[_VALUE]

    def to_dict(self, with_args: bool = False) -> dict[str, Any]:
        """The TaskState JSON object of the protocol (docs/protocol.md, TaskState); ``with_args`` adds args/kwargs."""
        state = self.state
        failed = state in (FAILURE, RETRY, REVOKED, REJECTED)
        finished_at = self.seen.get(state) if state in READY_STATES else None
        return {
            "task_id": self.task_id,
            "name": self.value("name"),
            "state": state,
            "progress": self.value("progress"),
            "result": self.value("result") if state == SUCCESS else None,
            "result_format": self.value("result_format") if state == SUCCESS else None,
            "exception": self.value("exception") if failed else None,
            "exception_type": self.value("exception_type") if failed else None,
            "traceback": self.value("traceback") if failed else None,
            "worker": self.value("hostname"),
            "retries": self.value("retries", 0) or 0,
            "runtime": self.value("runtime") if state == SUCCESS else None,
            "sent_at": _known(self.seen.get(SENT)),
            "received_at": _known(self.seen.get(RECEIVED)),
            "started_at": _known(self.seen.get(STARTED)),
            "finished_at": _known(finished_at),
            "updated_at": _known(self.updated_at),
            "event": self.last_event[_VALUE] if self.last_event else None,
        } | ({"args": self.value("args"), "kwargs": self.value("kwargs")} if with_args else {})


def _known(timestamp: float | None) -> float | None:
    """A timestamp for clients: None when unknown (a backend record of an unfinished state carries none)."""
    return timestamp if timestamp is not None and timestamp > 0 else None


def event_values(event: Mapping[str, Any], unkept: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Pick, from a decoded Celery event, the fields its type contributes to TaskState (except ``unkept``)."""
    event_type = event["type"]
    values: dict[str, Any] = {}
    for name in _FIELD_SOURCES.get(event_type, ()):
        if name in unkept:
            continue
        if name == "progress":
            values["progress"] = normalize_progress(event)
        elif name == "exception" and event_type == "task-revoked":
            if event.get("terminated") or event.get("expired"):
                reason = "expired" if event.get("expired") else "terminated"
                values["exception"] = f"TaskRevokedError('{reason}')"
        elif name == "result_format":
            values.update(result_values(event, unkept))
        elif name == "exception_type":
            exc_type = exception_type(event)
            if exc_type is not None:
                values["exception_type"] = exc_type
        elif name == "result" and "result_format" not in unkept:
            continue  # result_values() reads it along with its format
        elif name in event and event[name] is not None:
            value = event[name]
            if name == "retries":
                if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31:
                    values[name] = value
            elif name == "runtime":
                runtime = finite_number(value)
                if runtime is not None:
                    values[name] = runtime
            elif name in TEXT_LIMITS:
                if name in ("result", "exception") and not isinstance(value, str):
                    value = saferepr(value, TEXT_LIMITS[name])
                if isinstance(value, str):
                    # Celery truncates results; a forged or odd event must not
                    # push megabytes to every subscriber.
                    values[name] = client_text(value, TEXT_LIMITS[name])
    return values


def result_values(event: Mapping[str, Any], unkept: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The ``result`` and ``result_format`` a ``task-succeeded`` event contributes.

    A plain Celery event carries the result's repr (``result_format: "repr"``); one the server completed
    from the result backend (``ResultResolver``) says ``"json"`` with the value itself, or ``"too_large"``.
    """
    fmt = event.get("result_format")
    value = event.get("result")
    if fmt == RESULT_TOO_LARGE:
        value = None
    elif fmt != RESULT_JSON or not isinstance(value, _JSON_TYPES):
        fmt = RESULT_REPR
        if value is not None and not isinstance(value, str):
            value = saferepr(value, TEXT_LIMITS["result"])
        if isinstance(value, str):
            value = client_text(value, TEXT_LIMITS["result"])
    values: dict[str, Any] = {"result_format": fmt}
    if "result" not in unkept and value is not None:
        values["result"] = value
    return values


def json_result(value: Any, max_bytes: int) -> dict[str, Any] | None:
    """A task's return value as TaskState ``result``/``result_format`` fields; None when it is no JSON value.

    The value is sent as it encodes (tuples become arrays; NaN and infinities null); one whose encoding
    exceeds ``max_bytes`` is not sent at all (``result_format: "too_large"``) rather than cut.
    """
    try:
        encoded = orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError: not JSON (an object, a non-str key, an int over 64 bits)
        return None
    if len(encoded) > max_bytes:
        return {"result": None, "result_format": RESULT_TOO_LARGE}
    # Decoded again: the store then holds plain JSON values only, never the backend's objects.
    return {"result": orjson.loads(encoded), "result_format": RESULT_JSON}


def exception_type(event: Mapping[str, Any]) -> str | None:
    """The class name of a failed, retried or revoked task's exception: given, else read off its repr."""
    given = event.get("exception_type")
    if isinstance(given, str) and given:
        return client_text(given, TEXT_LIMITS["name"])
    exception = event.get("exception")
    if event.get("type") == "task-revoked" and (event.get("terminated") or event.get("expired")):
        return "TaskRevokedError"
    if not isinstance(exception, str):
        return None
    match = _EXCEPTION_CLASS.match(exception)
    return client_text(match.group(1).rsplit(".", 1)[-1], TEXT_LIMITS["name"]) if match else None


class Change(NamedTuple):
    """What one merged event did to a task: whether it is visible, and whether the state moved."""

    # A tuple: one is made for every merged event, and a frozen dataclass costs twice as much to make.
    task: TaskState
    transition: bool  # the state changed (never coalesced away)


class TaskStore:
    """A bounded in-memory map of task id -> TaskState, evicting the least recently updated.

    Each task is bounded too: texts are cut to what clients are ever sent
    (TEXT_LIMITS), and the fields in ``unkept`` — those the forwarding policy
    never sends (``ForwardingPolicy.never_forwarded``) — are not kept at all.
    """

    def __init__(self, max_tasks: int = 100_000, unkept: frozenset[str] = frozenset()) -> None:
        if max_tasks < 1:
            raise ValueError("max_tasks must be at least 1")
        self.max_tasks = max_tasks
        self.unkept = frozenset(unkept)
        self._tasks: OrderedDict[str, TaskState] = OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._tasks)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._tasks

    def __iter__(self) -> Iterator[TaskState]:
        return iter(self._tasks.values())

    def get(self, task_id: str) -> TaskState | None:
        """The merged state of a task, or None when this store has not seen it."""
        return self._tasks.get(task_id)

    def merge(self, task_id: str, event_type: str, timestamp: float, values: Mapping[str, Any]) -> Change | None:
        """Merge one event into its task; return the Change, or None when nothing visible changed."""
        task = self._tasks.get(task_id)
        if task is None:
            task = self._tasks[task_id] = TaskState(task_id)
            if len(self._tasks) > self.max_tasks:
                self._tasks.popitem(last=False)
                self.evicted += 1
        else:
            self._tasks.move_to_end(task_id)
        before = task.state
        if not task.apply(event_type, timestamp, values):
            return None
        return Change(task, task.state != before)

    def merge_event(self, event: Mapping[str, Any]) -> Change | None:
        """Merge one decoded Celery event (as the receiver delivers it)."""
        # NaN compares false with everything, so a NaN stamp would make the
        # merge depend on arrival order: treat it like a missing timestamp.
        timestamp = finite_number(event.get("timestamp"))
        if timestamp is None:
            timestamp = finite_number(event.get("local_received")) or 0.0
        event_type = event["type"]
        values = event_values(event, self.unkept)
        if event_type == "task-rejected" and event.get("requeue"):
            # The message goes back to the queue: another attempt follows.
            event_type = "task-retried"
            values = {**values, "exception": "Reject(requeue=True)", "exception_type": "Reject"}
        return self.merge(event["uuid"], event_type, float(timestamp), values)
