"""The event log: every task event recorded in MongoDB, written in batches off the hot path.

Ingest (ingest.py) hands each received task event to ``EventLog.record`` (an append to an
in-memory queue); a background writer drains the queue with
``insert_many(ordered=False)``. A slow or absent MongoDB therefore never
delays a Socket.IO update: the queue absorbs it, bounded in events and in
bytes, drops the oldest *progress* events first when full (counted), and the
writer retries until MongoDB is back. Each document's ``_id`` is derived from
the event itself, so the same event recorded by two replicas, or replayed, is
stored once.

No event can stop the writer: values BSON cannot hold are rewritten before
they are written (``storable.py``), an event over MAX_EVENT_BYTES keeps only its small
fields, a document MongoDB still refuses is retried without NaN and
infinities, then dropped alone (counted), and an unexpected error costs the
documents that caused it, never the writer. Should the writer stop anyway,
``status()`` says ``stopped`` (``/readyz``, and ``pushserver_eventlog_writer_running``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import deque
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

import orjson
from pymongo import ASCENDING, AsyncMongoClient
from pymongo.errors import BulkWriteError, PyMongoError

from .backoff import Backoff
from .storable import Storable, finite_only, storable

log = logging.getLogger("pushserver.eventlog")

COLLECTION = "task_events"
DUPLICATE_KEY = 11000
#: Event fields that say how an event travelled, not what happened; they
#: differ between replicas and replays, so they stay out of the identity.
TRANSPORT_FIELDS = frozenset({"hostname", "pid", "clock", "utcoffset", "local_received"})
#: Largest event kept whole (its approximate stored size); a bigger one keeps only its small fields.
MAX_EVENT_BYTES = 1 << 20
#: What a field of an oversized event may weigh and still be kept.
SMALL_FIELD_CHARS = 1024
#: The field that lists what an oversized event lost.
TRUNCATED_FIELD = "pushserver_truncated"
DEFAULT_QUEUE_BYTES = 64 << 20
UNPREPARED = -1  # Storable.changed of an event queued but not yet made storable


#: A task-succeeded event's result as the server renders it: Celery's repr, or the value read from the result
#: backend (``--forward-results json``). The same event rendered either way is still one event.
RENDERED_FIELDS = frozenset({"result", "result_format"})


def event_id(event: Mapping[str, Any]) -> str:
    """A deterministic id for an event: the same event always gets the same id."""
    left_out = TRANSPORT_FIELDS | RENDERED_FIELDS if event.get("type") == "task-succeeded" else TRANSPORT_FIELDS
    identity = {k: v for k, v in event.items() if k not in left_out}
    digest = hashlib.sha256(orjson.dumps(identity, option=orjson.OPT_SORT_KEYS, default=str))
    return digest.hexdigest()[:32]


def event_to_document(event: Mapping[str, Any], recorded_at: datetime | None = None) -> dict[str, Any]:
    """The ``task_events`` document of one decoded Celery task event."""
    fields = {k: v for k, v in event.items() if k != "local_received"}
    return {
        "_id": event_id(event),
        "task_id": event.get("uuid"),
        "type": event.get("type"),
        "timestamp": event.get("timestamp"),
        "hostname": event.get("hostname"),
        "event": fields,
        "recorded_at": recorded_at or datetime.now(timezone.utc),
    }


def shrink(event: Mapping[str, Any]) -> dict[str, Any]:
    """An oversized event cut down to its small fields, with TRUNCATED_FIELD naming the others."""
    kept: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in event.items():
        small = (
            value is None
            or isinstance(value, (bool, int, float))
            or (isinstance(value, str) and len(value) <= SMALL_FIELD_CHARS)
        )
        if small and len(key) <= SMALL_FIELD_CHARS:
            kept[key] = value
        else:
            dropped.append(key[:SMALL_FIELD_CHARS])
    kept[TRUNCATED_FIELD] = dropped[:100]
    return kept


def document_to_event(document: Mapping[str, Any]) -> dict[str, Any]:
    """The Celery event a ``task_events`` document recorded (as the receiver delivered it)."""
    return dict(document["event"])


class EventLog:
    """Records task events in MongoDB through a bounded queue and a batching writer."""

    def __init__(
        self,
        url: str,
        database: str = "pushserver",
        *,
        retention_days: float = 7,
        max_queue: int = 100_000,
        max_transitions: int = 1_000_000,
        max_queue_bytes: int = DEFAULT_QUEUE_BYTES,
        batch_size: int = 1000,
        metrics: Any = None,
    ) -> None:
        self.client: AsyncMongoClient = AsyncMongoClient(
            url, serverSelectionTimeoutMS=3000, connectTimeoutMS=3000, tz_aware=True
        )
        self.collection = self.client[database][COLLECTION]
        self.retention_seconds = int(retention_days * 86400)
        self.max_queue = max_queue
        self.max_transitions = max_transitions
        self.max_queue_bytes = max_queue_bytes
        self.batch_size = batch_size
        self.metrics = metrics
        # Progress and transitions queue apart so that a full queue sheds
        # progress first; transitions go only when even their bound is hit.
        self._progress: deque[Storable] = deque()
        self._transitions: deque[Storable] = deque()
        self.queued_bytes = 0  # the queues' and the batch in flight's: what the bound limits
        self._in_flight: list[Storable] = []
        self._wakeup = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._indexes_ready = False
        self.healthy = True
        self.stopped = False
        self.written = 0
        self.duplicates = 0
        self.dropped = 0
        self.drops: dict[str, int] = {}
        self.sanitised = 0

    @property
    def queued(self) -> int:
        """Events not yet written: queued, or in the batch being written."""
        return len(self._progress) + len(self._transitions) + len(self._in_flight)

    def status(self) -> str:
        """``ok`` while MongoDB takes writes, ``degraded`` while it does not (events queue meanwhile), ``stopped``
        once the writer has stopped (nothing more is written until the server restarts)."""
        if self.stopped:
            return "stopped"
        return "ok" if self.healthy else "degraded"

    # -- the hot path's side: an append ---------------------------------------

    def record(self, events: Iterable[Mapping[str, Any]]) -> None:
        """Queue task events for writing; never blocks, never raises."""
        before = self.queued
        for event in events:
            # Only measured here (its JSON; docs/benchmarks.md): the writer makes it storable.
            try:
                size = len(orjson.dumps(event))
            except TypeError:  # orjson refuses it (a 70-bit integer, a surrogate...): measure it the long way
                try:
                    size = storable(event).size
                except Exception:  # the hot path must go on; the event is lost, and counted
                    log.exception("event log: cannot measure a %r event; dropped", event.get("type"))
                    self._count_drop("invalid")
                    continue
            item = Storable(event, size, UNPREPARED)
            if size > MAX_EVENT_BYTES:
                # Cut down now, so that one huge event cannot push every other out of the queue.
                try:
                    self._prepare(item)
                except Exception:  # the hot path must go on; the event is lost, and counted
                    log.exception("event log: cannot prepare a %r event; dropped", event.get("type"))
                    self._count_drop("invalid")
                    continue
                item.size = storable(item.event).size
            if event.get("type") == "task-progress":
                self._progress.append(item)
            else:
                self._transitions.append(item)
            self.queued_bytes += item.size
            if self.queued > self.max_queue or self.queued_bytes > self.max_queue_bytes:
                self._shed()
        if self.queued != before:
            self._wakeup.set()

    def _shed(self) -> None:
        """Drop the oldest progress, then the oldest transitions, until both bounds hold again."""
        while self.queued > self.max_queue or self.queued_bytes > self.max_queue_bytes:
            if self._progress:
                self.queued_bytes -= self._progress.popleft().size
                self._count_drop("progress")
            elif self._transitions and (
                len(self._transitions) > self.max_transitions or self.queued_bytes > self.max_queue_bytes
            ):
                self.queued_bytes -= self._transitions.popleft().size
                self._count_drop("transition")
            else:
                return

    def _count_drop(self, kind: str, n: int = 1) -> None:
        self.dropped += n
        self.drops[kind] = self.drops.get(kind, 0) + n
        if self.metrics is not None:
            self.metrics.eventlog_dropped.labels(kind).inc(n)

    def _count_sanitised(self, item: Storable) -> None:
        self.sanitised += 1
        if self.metrics is not None:
            self.metrics.eventlog_sanitised.inc()
        if _worth_logging(self.sanitised):
            log.warning(
                "event log: %d event(s) so far stored with values MongoDB cannot hold rewritten or texts"
                " cut (the latest: a %r event of task %r)",
                self.sanitised,
                str(item.event.get("type"))[:64],
                str(item.event.get("uuid"))[:64],
            )

    # -- the writer ------------------------------------------------------------

    def start(self) -> None:
        """Start the background writer on the running loop."""
        self._writer = asyncio.get_running_loop().create_task(self._write_forever())
        self._writer.add_done_callback(self._writer_done)

    def _writer_done(self, task: asyncio.Task[None]) -> None:
        if self._closing:
            return
        # Whatever stopped it (a bug, a cancellation from outside): say so where operators look.
        self.stopped = True
        if self.metrics is not None:
            self.metrics.eventlog_writer_running.set(0)
        error = None if task.cancelled() else task.exception()
        log.error(
            "event log writer stopped%s: events are no longer written to MongoDB (%d queued); restart the server",
            " (cancelled)" if task.cancelled() else "",
            self.queued,
            exc_info=error,
        )

    async def _write_forever(self) -> None:
        backoff = Backoff(base=0.5, cap=10.0)
        while True:
            while not self.queued:
                self._wakeup.clear()
                await self._wakeup.wait()
            batch = self._take(self.batch_size)
            try:
                await self._ensure_indexes()
                await self._insert(batch)
                self._done(batch)
            except PyMongoError as exc:
                self._put_back(batch)
                if self.healthy:
                    log.warning(
                        "event log degraded: MongoDB unreachable (%s); events queue in memory"
                        " and are written when it returns",
                        type(exc).__name__,
                    )
                self._set_health(False)
                await asyncio.sleep(backoff.next_delay())
                continue
            except Exception:  # one bad document must not end the log
                # Not MongoDB being away: something in this batch it cannot
                # take. Write the others one by one; the bad ones are dropped.
                log.exception(
                    "event log: a batch of %d events could not be written; writing them one by one", len(batch)
                )
                await self._insert_each(batch)
                continue
            if not self.healthy:
                log.info("event log recovered: MongoDB takes writes again (%d events queued)", self.queued)
            self._set_health(True)
            backoff.reset()

    def _take(self, n: int) -> list[Storable]:
        """The next batch: up to ``n`` events and a quarter of the byte bound (so shedding can always make room)."""
        batch: list[Storable] = []
        room = self.max_queue_bytes // 4
        for queue in (self._transitions, self._progress):
            while queue and len(batch) < n and (not batch or queue[0].size <= room):
                item = queue.popleft()
                room -= item.size
                batch.append(item)
        self._in_flight = batch
        return batch

    def _done(self, items: list[Storable]) -> None:
        """These events of the batch in flight are written or dropped: they no longer count."""
        self.queued_bytes -= sum(item.size for item in items)
        if items is self._in_flight or len(items) == len(self._in_flight):
            self._in_flight = []
        else:
            done = {id(item) for item in items}
            self._in_flight = [item for item in self._in_flight if id(item) not in done]

    def _put_back(self, batch: list[Storable]) -> None:
        self._done(batch)
        for item in reversed(batch):
            queue = self._progress if item.event.get("type") == "task-progress" else self._transitions
            queue.appendleft(item)
            self.queued_bytes += item.size
        self._shed()

    def _prepare(self, item: Storable) -> None:
        """Make a queued event storable, in place (its recorded size stays, for the queue's accounting)."""
        if item.changed != UNPREPARED:
            return
        ready = storable(item.event)
        if ready.size > MAX_EVENT_BYTES:
            ready = storable(shrink(ready.event))
            ready.changed += 1
        item.event, item.changed = ready.event, ready.changed
        if item.changed:
            self._count_sanitised(item)

    async def _insert(self, batch: list[Storable]) -> None:
        for item in batch:
            self._prepare(item)
        documents = [event_to_document(item.event) for item in batch]
        inserted, refused = await self._insert_documents(documents)
        if refused:
            # MongoDB refused these documents themselves (not the connection):
            # once more with NaN and infinities as strings, which servers
            # that keep JSON (nx-27017) cannot store; then they go.
            retry = [finite_only(d) for d in refused]
            retried, still = await self._insert_documents([d for d, r in zip(retry, refused) if d != r])
            inserted += retried
            unchanged = sum(1 for d, r in zip(retry, refused) if d == r)
            if retried:
                self.sanitised += retried
                if self.metrics is not None:
                    self.metrics.eventlog_sanitised.inc(retried)
            lost = unchanged + len(still)
            if lost:
                self._count_drop("refused", lost)
                if _worth_logging(self.drops["refused"]):
                    log.warning(
                        "event log: MongoDB refused %d event(s) so far; they are not logged (%s)",
                        self.drops["refused"],
                        self._last_refusal,
                    )
        self.written += inserted
        if self.metrics is not None:
            self.metrics.eventlog_written.inc(inserted)

    async def _insert_documents(self, documents: list[dict[str, Any]]) -> tuple[int, list[dict[str, Any]]]:
        """Insert; return how many went in and the documents MongoDB refused (duplicates are neither)."""
        if not documents:
            return 0, []
        try:
            result = await self.collection.insert_many(documents, ordered=False)
            return len(result.inserted_ids), []
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            duplicates = sum(1 for e in errors if e.get("code") == DUPLICATE_KEY)
            self.duplicates += duplicates
            if duplicates and self.metrics is not None:
                self.metrics.eventlog_duplicates.inc(duplicates)
            refused = [e for e in errors if e.get("code") != DUPLICATE_KEY]
            if refused:
                self._last_refusal = f"code {refused[-1].get('code')}: {str(refused[-1].get('errmsg'))[:200]}"
            inserted = exc.details.get("nInserted", len(documents) - len(errors))
            return inserted, [documents[e["index"]] for e in refused if 0 <= e.get("index", -1) < len(documents)]

    async def _insert_each(self, batch: list[Storable]) -> None:
        for i, item in enumerate(batch):
            try:
                await self._insert([item])
            except PyMongoError:
                self._put_back(batch[i:])
                return
            except Exception as exc:  # noqa: BLE001 - this one document cannot be written: drop it alone
                self._done([item])
                self._count_drop("invalid")
                log.warning(
                    "event log: dropped a %r event MongoDB cannot store (%s: %s)",
                    str(item.event.get("type"))[:64],
                    type(exc).__name__,
                    str(exc)[:200],
                )
            else:
                self._done([item])

    async def _ensure_indexes(self) -> None:
        if self._indexes_ready:
            return
        await ensure_indexes(self.collection, self.retention_seconds)
        self._indexes_ready = True

    _last_refusal = ""

    def _set_health(self, healthy: bool) -> None:
        self.healthy = healthy
        if self.metrics is not None:
            self.metrics.eventlog_up.set(1 if healthy else 0)

    async def flush(self, timeout: float) -> bool:
        """Wait until the queue is written (for shutdown); return False if ``timeout`` passed first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.queued and loop.time() < deadline:
            await asyncio.sleep(0.05)
        return not self.queued

    async def close(self) -> None:
        self._closing = True
        if self._writer is not None:
            self._writer.cancel()
        await self.client.close()

    # -- reading -----------------------------------------------------------------

    async def history(
        self, task_id: str, *, limit: int = 100, after: tuple[float, str] | None = None
    ) -> list[dict[str, Any]]:
        """A task's recorded events, oldest first, after the (timestamp, id) cursor."""
        query: dict[str, Any] = {"task_id": task_id}
        if after is not None:
            at, last_id = after
            query["$or"] = [{"timestamp": {"$gt": at}}, {"timestamp": at, "_id": {"$gt": last_id}}]
        cursor = self.collection.find(query).sort([("timestamp", ASCENDING), ("_id", ASCENDING)]).limit(limit)
        return [doc async for doc in cursor]

    async def latest_events(self, task_id: str, limit: int = 1000) -> list[dict[str, Any]]:
        """The recorded events of a task for rebuilding its state ([] when MongoDB cannot answer)."""
        try:
            return [document_to_event(d) for d in await self.history(task_id, limit=limit)]
        except PyMongoError as exc:
            log.warning("event log read failed (%s); snapshot without history", type(exc).__name__)
            return []
        except Exception:  # noqa: BLE001 - a driver or server fault must not leave a subscribe without its ack
            log.exception("event log read failed unexpectedly; snapshot without history")
            return []


def _worth_logging(count: int) -> bool:
    """Log the 1st, 10th, 100th... occurrence: enough to notice, never a flood."""
    return count > 0 and 10 ** (len(str(count)) - 1) == count


async def ensure_indexes(collection: Any, retention_seconds: int) -> None:
    """Create the history indexes and the retention TTL index (idempotent)."""
    await collection.create_index([("task_id", ASCENDING), ("timestamp", ASCENDING)])
    await collection.create_index([("timestamp", ASCENDING)])
    await collection.create_index([("recorded_at", ASCENDING)], expireAfterSeconds=retention_seconds)
