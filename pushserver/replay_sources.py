"""Where a replay's events come from, and what counts as one: the event log (MongoDB) or a JSON-lines file.

``MongoSource`` and ``JsonlSource`` yield Celery events (the dicts the
receiver delivered), oldest first, that pass an ``EventFilter``; every record
that is not an event is reported (``check_event`` says why), never sent.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeGuard

import orjson

from .errors import PushserverError
from .eventlog import COLLECTION, document_to_event
from .state import finite_number

Event = dict[str, Any]

#: Task events that carry the task's ``name``; the others carry only its uuid.
NAMED_TYPES = ("task-sent", "task-received")
#: Above this many task ids a name filter is applied here rather than as a
#: MongoDB ``$in`` (which would grow past what a query should carry).
MAX_IN_IDS = 5000

_PASSWORD = re.compile(r"(//[^/:@]*:)[^/@]*@")


class ReplayError(PushserverError):
    """A replay cannot start or go on; the message is one line for the user."""


class BadInput(ReplayError):
    """An input record that is not an event (raised only with ``strict``)."""

    def __init__(self, where: str, what: str) -> None:
        super().__init__(f"{where}: {what}")
        self.where = where
        self.what = what


# -- what an event is ------------------------------------------------------------------


def is_number(value: Any) -> TypeGuard[float]:
    """Tell whether ``value`` is a finite number (a usable timestamp)."""
    return finite_number(value) is not None


def check_event(obj: Any) -> str | None:
    """What is wrong with ``obj`` as a Celery event, or None when it is one."""
    if not isinstance(obj, dict):
        return f"not an event: a JSON {_json_kind(obj)}, expected an object"
    kind = obj.get("type")
    if not isinstance(kind, str) or not kind:
        return 'not an event: no "type"' if kind is None else 'not an event: "type" must be a non-empty string'
    if kind.startswith("task-"):
        uuid = obj.get("uuid")
        if not isinstance(uuid, str) or not uuid:
            return f'not a task event: {kind} without a string "uuid"'
        if "timestamp" not in obj:
            return f'not a task event: {kind} without a "timestamp"'
    if "timestamp" in obj and not is_number(obj["timestamp"]):
        return f'not an event: "timestamp" must be a number, got {obj["timestamp"]!r}'
    return None


def _json_kind(obj: Any) -> str:
    kinds = {list: "array", str: "string", bool: "boolean", type(None): "null"}
    return kinds.get(type(obj), "number")


def to_json_line(event: Mapping[str, Any]) -> bytes:
    """One event as a JSONL line: the format ``--to FILE`` writes and ``--from`` reads."""
    return orjson.dumps(event, default=str, option=orjson.OPT_APPEND_NEWLINE)


# -- filters -----------------------------------------------------------------------------


@dataclass(frozen=True)
class EventFilter:
    """Which events to replay: all conditions must hold (an empty one holds for every event)."""

    task_ids: frozenset[str] = frozenset()
    names: frozenset[str] = frozenset()
    since: float | None = None
    until: float | None = None

    def __post_init__(self) -> None:
        if self.since is not None and self.until is not None and self.since > self.until:
            raise ValueError("--since is later than --until")

    def in_window(self, event: Mapping[str, Any]) -> bool:
        if self.since is None and self.until is None:
            return True
        stamp = event.get("timestamp")
        if not is_number(stamp):
            return False
        return (self.since is None or stamp >= self.since) and (self.until is None or stamp <= self.until)

    def names_task(self, event: Mapping[str, Any]) -> bool:
        """Tell whether ``event`` is the sent/received event that gives its task a wanted name."""
        return event.get("type") in NAMED_TYPES and event.get("name") in self.names

    def matches(self, event: Mapping[str, Any], named_ids: set[str] | None = None) -> bool:
        """Tell whether ``event`` passes; ``named_ids`` are the tasks found to have a wanted name."""
        uuid = event.get("uuid")
        if self.task_ids and uuid not in self.task_ids:
            return False
        if self.names and (named_ids is None or uuid not in named_ids):
            return False
        return self.in_window(event)

    def window_query(self) -> dict[str, Any]:
        """The MongoDB condition on ``timestamp`` for --since/--until."""
        bounds: dict[str, float] = {}
        if self.since is not None:
            bounds["$gte"] = self.since
        if self.until is not None:
            bounds["$lte"] = self.until
        return {"timestamp": bounds} if bounds else {}


# -- sources -----------------------------------------------------------------------------


def ignore(where: str, what: str) -> None:
    """The rejects handler of a counting pass: the replaying pass reports each line once."""


class Source(Protocol):
    def count(self) -> int:
        """How many events the replay will yield."""

    def events(self, rejects: Callable[[str, str], None]) -> Iterator[Event]:
        """The events, oldest first, reporting records that are not events to ``rejects``."""


class JsonlSource:
    """Events from a JSON-lines file, one per line, in file order."""

    def __init__(self, path: Path, event_filter: EventFilter = EventFilter()) -> None:
        self.path = path
        self.filter = event_filter
        self._named_ids: set[str] | None = None

    def _records(self, rejects: Callable[[str, str], None]) -> Iterator[Event]:
        with open(self.path, "rb") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                where = f"{self.path}:{number}"
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    rejects(where, f"not JSON ({exc.msg}, at character {exc.pos + 1})")
                    continue
                problem = check_event(obj)
                if problem:
                    rejects(where, problem)
                    continue
                yield obj

    def _named(self) -> set[str] | None:
        # A name lives only on a task's sent/received event: one pass finds
        # the tasks, the next replays all of their events.
        if self.filter.names and self._named_ids is None:
            self._named_ids = {e["uuid"] for e in self._records(ignore) if self.filter.names_task(e)}
        return self._named_ids

    def count(self) -> int:
        named = self._named()
        return sum(1 for e in self._records(ignore) if self.filter.matches(e, named))

    def events(self, rejects: Callable[[str, str], None]) -> Iterator[Event]:
        named = self._named()
        for event in self._records(rejects):
            if self.filter.matches(event, named):
                yield event


class MongoSource:
    """Events from the event log's ``task_events`` collection, ordered by (timestamp, _id)."""

    def __init__(
        self,
        url: str,
        database: str = "pushserver",
        event_filter: EventFilter = EventFilter(),
        *,
        timeout_ms: int = 3000,
    ) -> None:
        from pymongo import MongoClient
        from pymongo.errors import ConfigurationError, InvalidURI

        self.url = url
        self.filter = event_filter
        self.timeout_ms = timeout_ms
        try:
            self.client: Any = MongoClient(
                url, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms, tz_aware=True
            )
        except (ConfigurationError, InvalidURI, ValueError) as exc:
            raise ReplayError(f"--mongo: {redact(url)} is not a usable MongoDB URL ({exc})") from None
        self.collection = self.client[database][COLLECTION]
        self._query: dict[str, Any] | None = None
        self._client_side_ids: set[str] | None = None  # too many for a $in: checked here
        self._nothing = False  # a name filter that no task matches

    def _build_query(self) -> dict[str, Any]:
        if self._query is not None:
            return self._query
        query = self.filter.window_query()
        ids = set(self.filter.task_ids)
        if self.filter.names:
            named = self._tasks_named()
            ids = ids & named if ids else named
            self._nothing = not ids
        if len(ids) > MAX_IN_IDS:
            self._client_side_ids = ids
        elif ids:
            query["task_id"] = {"$in": sorted(ids)}
        self._query = query
        return query

    def _tasks_named(self) -> set[str]:
        query: dict[str, Any] = {"type": {"$in": list(NAMED_TYPES)}, "event.name": {"$in": sorted(self.filter.names)}}
        if self.filter.until is not None:
            query["timestamp"] = {"$lte": self.filter.until}
        return {doc["task_id"] for doc in self._guarded(lambda: self.collection.find(query, {"task_id": 1}))}

    def count(self) -> int:
        query = self._build_query()
        if self._nothing:
            return 0
        if self._client_side_ids is None:
            return int(next(self._guarded(lambda: [self.collection.count_documents(query)])))
        cursor = self.collection.find(query, {"task_id": 1})
        return sum(1 for doc in self._guarded(lambda: cursor) if doc.get("task_id") in self._client_side_ids)

    def events(self, rejects: Callable[[str, str], None]) -> Iterator[Event]:
        from pymongo import ASCENDING

        query = self._build_query()
        if self._nothing:
            return
        # Sorting on the indexed timestamp alone streams from the index; ties
        # are put in _id order here instead of by a blocking server-side sort.
        cursor = self.collection.find(query).sort([("timestamp", ASCENDING)])
        for document in _in_id_order(self._guarded(lambda: cursor)):
            if self._client_side_ids is not None and document.get("task_id") not in self._client_side_ids:
                continue
            where = f"{COLLECTION}/{document.get('_id')}"
            try:
                event = document_to_event(document)
            except (KeyError, TypeError, ValueError):
                rejects(where, 'not an event log document: no "event" object')
                continue
            problem = check_event(event)
            if problem:
                rejects(where, problem)
                continue
            yield event

    def _guarded(self, make: Callable[[], Iterable[Any]]) -> Iterator[Any]:
        """Iterate what ``make`` returns, turning MongoDB failures into one-line ReplayErrors."""
        from pymongo.errors import OperationFailure, PyMongoError, ServerSelectionTimeoutError

        try:
            yield from make()
        except ServerSelectionTimeoutError:
            raise ReplayError(
                f"cannot reach MongoDB at {redact(self.url)} (no server answered within {self.timeout_ms / 1000:g} s)"
            ) from None
        except OperationFailure as exc:
            reason = exc.details.get("errmsg") if exc.details else exc
            raise ReplayError(f"MongoDB refused the query: {reason}") from None
        except PyMongoError as exc:
            raise ReplayError(f"MongoDB failed: {type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        self.client.close()


def _in_id_order(documents: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    """Documents already sorted by timestamp, with each run of equal timestamps sorted by ``_id``."""
    run: list[Mapping[str, Any]] = []
    for document in documents:
        if run and document.get("timestamp") != run[0].get("timestamp"):
            yield from sorted(run, key=lambda d: str(d.get("_id")))
            run = []
        run.append(document)
    yield from sorted(run, key=lambda d: str(d.get("_id")))


def redact(url: str) -> str:
    """``url`` with any password masked, for messages."""
    return _PASSWORD.sub(r"\1**@", url)
