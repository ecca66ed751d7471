"""The event log: every task event recorded in MongoDB, written in batches off the hot path.

The hub hands each received task event to ``EventLog.record`` (an append to an
in-memory queue); a background writer drains the queue with
``insert_many(ordered=False)``. A slow or absent MongoDB therefore never
delays a Socket.IO update: the queue absorbs it, drops the oldest *progress*
events first when full (counted), and the writer retries until MongoDB is
back. Each document's ``_id`` is derived from the event itself, so the same
event recorded by two replicas, or replayed, is stored once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import deque
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

import orjson
from pymongo import ASCENDING, AsyncMongoClient
from bson.errors import InvalidDocument
from pymongo.errors import BulkWriteError, PyMongoError

from .backoff import Backoff

log = logging.getLogger("pushserver.eventlog")

COLLECTION = "task_events"
DUPLICATE_KEY = 11000
#: Event fields that say how an event travelled, not what happened; they
#: differ between replicas and replays, so they stay out of the identity.
TRANSPORT_FIELDS = frozenset({"hostname", "pid", "clock", "utcoffset", "local_received"})


def event_id(event: Mapping[str, Any]) -> str:
    """A deterministic id for an event: the same event always gets the same id."""
    identity = {k: v for k, v in event.items() if k not in TRANSPORT_FIELDS}
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


def document_to_event(document: Mapping[str, Any]) -> dict[str, Any]:
    """The Celery event a ``task_events`` document recorded (as the receiver delivered it)."""
    return dict(document["event"])


class EventLog:
    """Records task events in MongoDB through a bounded queue and a batching writer."""

    def __init__(self, url: str, database: str = "pushserver", *, retention_days: float = 7,
                 max_queue: int = 100_000, max_transitions: int = 1_000_000, batch_size: int = 1000,
                 metrics: Any = None) -> None:
        self.client: AsyncMongoClient = AsyncMongoClient(
            url, serverSelectionTimeoutMS=3000, connectTimeoutMS=3000, tz_aware=True)
        self.collection = self.client[database][COLLECTION]
        self.retention_seconds = int(retention_days * 86400)
        self.max_queue = max_queue
        self.max_transitions = max_transitions
        self.batch_size = batch_size
        self.metrics = metrics
        # Progress and transitions queue apart so that a full queue sheds
        # progress first; transitions go only when even their bound is hit.
        self._progress: deque[Mapping[str, Any]] = deque()
        self._transitions: deque[Mapping[str, Any]] = deque()
        self._wakeup = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._indexes_ready = False
        self.healthy = True
        self.written = 0
        self.duplicates = 0
        self.dropped = 0

    @property
    def queued(self) -> int:
        return len(self._progress) + len(self._transitions)

    def status(self) -> str:
        """``ok`` while MongoDB takes writes, ``degraded`` while it does not (events queue meanwhile)."""
        return "ok" if self.healthy else "degraded"

    # -- the hot path's side: an append ---------------------------------------

    def record(self, events: Iterable[Mapping[str, Any]]) -> None:
        """Queue task events for writing; never blocks, never raises."""
        before = self.queued
        for event in events:
            if event.get("type") == "task-progress":
                self._progress.append(event)
            else:
                self._transitions.append(event)
            if self.queued > self.max_queue:
                self._shed()
        if self.queued != before:
            self._wakeup.set()

    def _shed(self) -> None:
        if self._progress:
            self._progress.popleft()
            self._count_drop("progress")
        elif len(self._transitions) > self.max_transitions:
            self._transitions.popleft()
            self._count_drop("transition")

    def _count_drop(self, kind: str) -> None:
        self.dropped += 1
        if self.metrics is not None:
            self.metrics.eventlog_dropped.labels(kind).inc()

    # -- the writer ------------------------------------------------------------

    def start(self) -> None:
        """Start the background writer on the running loop."""
        self._writer = asyncio.get_running_loop().create_task(self._write_forever())
        self._writer.add_done_callback(self._writer_done)

    def _writer_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("event log writer stopped", exc_info=task.exception())

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
            except (InvalidDocument, OverflowError) as exc:
                # An event BSON cannot hold (an int beyond 64 bits, say): write
                # the others one by one and count the bad ones as dropped.
                log.warning("event log: a batch held an event MongoDB cannot store (%s)", exc)
                await self._insert_each(batch)
                continue
            except PyMongoError as exc:
                self._put_back(batch)
                if self.healthy:
                    log.warning("event log degraded: MongoDB unreachable (%s); events queue in memory"
                                " and are written when it returns", type(exc).__name__)
                self._set_health(False)
                await asyncio.sleep(backoff.next_delay())
                continue
            if not self.healthy:
                log.info("event log recovered: MongoDB takes writes again (%d events queued)", self.queued)
            self._set_health(True)
            backoff.reset()

    def _take(self, n: int) -> list[Mapping[str, Any]]:
        batch: list[Mapping[str, Any]] = []
        for queue in (self._transitions, self._progress):
            while queue and len(batch) < n:
                batch.append(queue.popleft())
        return batch

    def _put_back(self, batch: list[Mapping[str, Any]]) -> None:
        for event in reversed(batch):
            queue = self._progress if event.get("type") == "task-progress" else self._transitions
            queue.appendleft(event)
        while self.queued > self.max_queue and (self._progress or len(self._transitions) > self.max_transitions):
            self._shed()

    async def _insert(self, batch: list[Mapping[str, Any]]) -> None:
        documents = [event_to_document(e) for e in batch]
        try:
            result = await self.collection.insert_many(documents, ordered=False)
            inserted = len(result.inserted_ids)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            duplicates = sum(1 for e in errors if e.get("code") == DUPLICATE_KEY)
            if duplicates < len(errors):
                raise
            self.duplicates += duplicates
            inserted = exc.details.get("nInserted", len(documents) - duplicates)
            if self.metrics is not None:
                self.metrics.eventlog_duplicates.inc(duplicates)
        self.written += inserted
        if self.metrics is not None:
            self.metrics.eventlog_written.inc(inserted)

    async def _insert_each(self, batch: list[Mapping[str, Any]]) -> None:
        for event in batch:
            try:
                await self._insert([event])
            except (InvalidDocument, OverflowError):
                self._count_drop("invalid")
            except PyMongoError:
                self._put_back([event])
                return

    async def _ensure_indexes(self) -> None:
        if self._indexes_ready:
            return
        await ensure_indexes(self.collection, self.retention_seconds)
        self._indexes_ready = True

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
        if self._writer is not None:
            self._writer.cancel()
        await self.client.close()

    # -- reading -----------------------------------------------------------------

    async def history(self, task_id: str, *, limit: int = 100,
                      after: tuple[float, str] | None = None) -> list[dict[str, Any]]:
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


async def ensure_indexes(collection: Any, retention_seconds: int) -> None:
    """Create the history indexes and the retention TTL index (idempotent)."""
    await collection.create_index([("task_id", ASCENDING), ("timestamp", ASCENDING)])
    await collection.create_index([("timestamp", ASCENDING)])
    await collection.create_index([("recorded_at", ASCENDING)], expireAfterSeconds=retention_seconds)
