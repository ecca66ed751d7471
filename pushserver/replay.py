"""Replay recorded task events: read them (event log or JSONL), filter, pace, and write or republish them.

A replay is a source, a sink and a pacer: ``MongoSource`` or ``JsonlSource``
yields Celery events (the dicts the receiver delivered, oldest first),
``Pacer`` holds each one until its recorded offset divided by the speed, and
``JsonlSink`` or ``BrokerSink`` writes it out. ``BrokerSink`` republishes
through Celery's own event dispatcher, one per original hostname, so every
receiver (pushserver, Flower, ``celery events``) sees the worker names and
timestamps that were recorded — and the event log, which derives an event's
``_id`` from what happened rather than how it travelled, stores a replayed
event once.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Protocol, TypeGuard

import orjson

from .errors import PushserverError
from .eventlog import COLLECTION, document_to_event

Event = dict[str, Any]

#: Task events that carry the task's ``name``; the others carry only its uuid.
NAMED_TYPES = ("task-sent", "task-received")
#: Fields Celery's Dispatcher sets itself (it raises if given them twice), or
#: the receiver adds; they describe the original transport, not the event.
DISPATCHER_FIELDS = frozenset({"type", "hostname", "pid", "clock", "utcoffset", "local_received"})
#: Above this many task ids a name filter is applied here rather than as a
#: MongoDB ``$in`` (which would grow past what a query should carry).
MAX_IN_IDS = 5000

_RELATIVE = re.compile(r"-(\d+(?:\.\d*)?|\.\d+)([smhdw])")
_PASSWORD = re.compile(r"(//[^/:@]*:)[^/@]*@")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class ReplayError(PushserverError):
    """A replay cannot start or go on; the message is one line for the user."""


class BadInput(ReplayError):
    """An input record that is not an event (raised only with ``strict``)."""

    def __init__(self, where: str, what: str) -> None:
        super().__init__(f"{where}: {what}")
        self.where = where
        self.what = what


# -- option values ---------------------------------------------------------------


def parse_time(text: str, now: float | None = None) -> float:
    """An epoch timestamp from ISO-8601 (no zone: local time), ``now``, or ``-N`` + s/m/h/d/w ago."""
    value = text.strip()
    reference = time.time() if now is None else now
    if value.lower() == "now":
        return reference
    relative = _RELATIVE.fullmatch(value)
    if relative:
        amount, unit = relative.groups()
        return reference - float(amount) * _UNIT_SECONDS[unit]
    try:
        moment = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use ISO-8601 (2024-11-24T10:00:00+01:00), "
            "'now', or a relative time like -15m, -2h, -7d"
        ) from None
    return moment.timestamp()  # a naive datetime is taken as local time, as Celery's timestamps are


def parse_speed(text: str) -> float | None:
    """The speed factor, or None for ``max`` (no pacing)."""
    value = text.strip().lower()
    if value == "max":
        return None
    try:
        speed = float(value)
    except ValueError:
        raise ValueError(f"expected a number > 0 or 'max', got {text!r}") from None
    if not math.isfinite(speed) or speed <= 0:
        raise ValueError(f"expected a number > 0 or 'max', got {text!r}")
    return speed


# -- what an event is ------------------------------------------------------------------


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


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
    if "timestamp" in obj and not _is_number(obj["timestamp"]):
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
        if not _is_number(stamp):
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


# -- handling bad input ------------------------------------------------------------------


class Rejects:
    """Counts and reports input that is not an event; with ``strict``, the first one stops the replay."""

    def __init__(self, report: Callable[[str], None], strict: bool = False) -> None:
        self.report = report
        self.strict = strict
        self.count = 0

    def __call__(self, where: str, what: str) -> None:
        if self.strict:
            raise BadInput(where, what)
        self.count += 1
        self.report(f"{where}: {what}")


def _ignore(where: str, what: str) -> None:
    """The rejects handler of a counting pass: the replaying pass reports each line once."""


# -- sources -----------------------------------------------------------------------------


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
            self._named_ids = {e["uuid"] for e in self._records(_ignore) if self.filter.names_task(e)}
        return self._named_ids

    def count(self) -> int:
        named = self._named()
        return sum(1 for e in self._records(_ignore) if self.filter.matches(e, named))

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
            raise ReplayError(f"--mongo: {_redact(url)} is not a usable MongoDB URL ({exc})") from None
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
                f"cannot reach MongoDB at {_redact(self.url)} (no server answered within {self.timeout_ms / 1000:g} s)"
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


def _redact(url: str) -> str:
    """``url`` with any password masked, for messages."""
    return _PASSWORD.sub(r"\1**@", url)


# -- sinks ---------------------------------------------------------------------------------


class Sink(Protocol):
    def send(self, event: Mapping[str, Any]) -> None:
        """Write or publish one event."""

    def close(self) -> None:
        """Flush and release what the sink holds."""


class JsonlSink:
    """Writes JSON lines to a binary stream (stdout) or a file."""

    def __init__(self, stream: IO[bytes], *, flush_each: bool = False, owns: bool = False) -> None:
        self.stream = stream
        self.flush_each = flush_each
        self.owns = owns

    @classmethod
    def to_file(cls, path: Path) -> JsonlSink:
        try:
            return cls(open(path, "wb"), owns=True)
        except OSError as exc:
            raise ReplayError(f"--to: cannot write {path}: {exc.strerror}") from None

    def send(self, event: Mapping[str, Any]) -> None:
        self.stream.write(to_json_line(event))
        if self.flush_each:
            self.stream.flush()

    def close(self) -> None:
        if self.owns:
            self.stream.close()
        else:
            self.stream.flush()


def dispatcher_fields(event: Mapping[str, Any]) -> tuple[str, str | None, dict[str, Any]]:
    """Split an event into (type, original hostname, the fields a Dispatcher may be given)."""
    hostname = event.get("hostname")
    fields = {k: v for k, v in event.items() if k not in DISPATCHER_FIELDS}
    return event["type"], hostname if isinstance(hostname, str) and hostname else None, fields


class BrokerSink:
    """Republishes events onto the broker's live ``celeryev`` exchange, one Dispatcher per original hostname.

    Celery's Dispatcher stamps ``hostname``, ``pid``, ``clock`` and
    ``utcoffset`` itself and keeps a given ``timestamp``. The receiver shifts
    a timestamp by the sender's ``utcoffset`` minus its own, so with the
    replayer and the receiver in one timezone an event arrives with the
    timestamp it was recorded with.
    """

    RETRY_POLICY = {"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1.0}

    def __init__(self, broker_url: str, *, timeout: float = 3.0) -> None:
        from celery import Celery

        self.url = broker_url
        self.app = Celery("pushserver-replay", broker=broker_url, set_as_current=False)
        self.app.conf.broker_connection_timeout = timeout
        self.connection = self.app.connection_for_write()
        self._dispatchers: dict[str | None, Any] = {}
        try:
            self.connection.ensure_connection(max_retries=1, interval_start=0.5)
        except Exception as exc:  # noqa: BLE001 - kombu raises transport-specific errors
            self.connection.release()
            raise ReplayError(f"cannot reach the broker at {_redact(broker_url)} ({exc})") from None

    def _dispatcher(self, hostname: str | None) -> Any:
        dispatcher = self._dispatchers.get(hostname)
        if dispatcher is None:
            # Offline buffering would hide a lost broker: let publish errors raise.
            dispatcher = self.app.events.Dispatcher(self.connection, hostname=hostname, buffer_while_offline=False)
            self._dispatchers[hostname] = dispatcher
        return dispatcher

    def send(self, event: Mapping[str, Any]) -> None:
        kind, hostname, fields = dispatcher_fields(event)
        dispatcher = self._dispatcher(hostname)
        try:
            # publish() takes the fields as a dict, so a field named like one of
            # send()'s own keywords (retry, blind...) cannot collide with it.
            dispatcher.publish(kind, fields, dispatcher.producer, retry=True, retry_policy=self.RETRY_POLICY)
        except Exception as exc:  # noqa: BLE001
            raise ReplayError(f"lost the broker at {_redact(self.url)} ({type(exc).__name__}: {exc})") from None

    def close(self) -> None:
        for dispatcher in self._dispatchers.values():
            dispatcher.close()
        self.connection.release()
        self.app.close()


# -- pacing and the loop -----------------------------------------------------------------


def due_offset(first: float, timestamp: float, speed: float) -> float:
    """Seconds after the first event's send at which an event recorded at ``timestamp`` is due."""
    return (timestamp - first) / speed


class Pacer:
    """Holds each event until its recorded offset from the first, divided by ``speed`` (None: never holds).

    Every deadline is computed from the start, on a monotonic clock, so
    sleep overshoot never accumulates; an event whose time has passed (a slow
    sink, or one recorded out of order) goes at once.
    """

    def __init__(
        self,
        speed: float | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.speed = speed
        self.clock = clock
        self.sleep = sleep
        self._start: float | None = None
        self._first: float | None = None

    def delay(self, timestamp: Any) -> float:
        """How long to wait now before sending an event recorded at ``timestamp``."""
        if self.speed is None or not _is_number(timestamp):
            return 0.0
        now = self.clock()
        if self._start is None or self._first is None:
            self._start, self._first = now, float(timestamp)
            return 0.0
        return max(0.0, self._start + due_offset(self._first, float(timestamp), self.speed) - now)

    def wait(self, timestamp: Any) -> None:
        pause = self.delay(timestamp)
        if pause > 0:
            self.sleep(pause)


@dataclass
class Tally:
    """What a replay has done so far: read it after an interrupt too."""

    total: int = 0
    sent: int = 0


def replay(
    source: Source,
    sink: Sink,
    pacer: Pacer,
    rejects: Callable[[str, str], None],
    tally: Tally,
    on_sent: Callable[[], None] | None = None,
) -> Tally:
    """Send every event of ``source`` to ``sink`` at the pacer's speed, counting in ``tally`` as it goes."""
    for event in source.events(rejects):
        pacer.wait(event.get("timestamp"))
        sink.send(event)
        tally.sent += 1
        if on_sent is not None:
            on_sent()
    return tally
