"""The Celery result backend as the durable record of a task's state, for snapshot misses and reconciliation.

Events are transient, so a client that subscribes after its task finished, or
a server whose receiver was disconnected while it finished, learns the outcome
here. Backend clients are blocking; lookups run in a small thread pool so the
event loop never waits on them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

from celery import Celery
from celery.backends.base import BaseKeyValueStoreBackend, DisabledBackend
from celery.backends.rpc import RPCBackend
from celery.result import AsyncResult, GroupResult, ResultBase, result_from_tuple
from celery.utils.saferepr import saferepr

from .batching import ReadBatcher
from .state import RESULT_REPR, json_result, normalize_progress
from .workflows import CHAIN, CHORD, GROUP, Membership, chain_members

log = logging.getLogger("pushserver.backend")

#: Result-backend status -> the event type that announces the same state.
STATUS_TO_EVENT = {
    "SUCCESS": "task-succeeded",
    "FAILURE": "task-failed",
    "REVOKED": "task-revoked",
    "RETRY": "task-retried",
    "STARTED": "task-started",
    "PROGRESS": "task-progress",
}

#: The timestamp of a state whose time nobody recorded; TaskState shows it as null.
UNKNOWN_TIME = 0.0

# Celery truncates results in events to 1 024 characters; we do the same so a
# snapshot from the backend reads exactly like a live update.
RESULT_REPR_MAXLEN = 1024


def meta_to_event(
    task_id: str,
    meta: Mapping[str, Any],
    now: float | None = None,
    *,
    results: str = "repr",
    max_result_bytes: int = 64 * 1024,
) -> dict[str, Any] | None:
    """Express a backend meta dict as the Celery event that would have announced it (None if it says nothing).

    With ``results="json"`` a SUCCESS carries the value itself (``result_format``, as ResultResolver adds it
    to live events); otherwise its repr, as Celery's own event would.
    """
    event_type = STATUS_TO_EVENT.get(meta.get("status"))  # type: ignore[arg-type]
    if event_type is None:
        return None
    done = meta.get("date_done")
    if isinstance(done, str):
        try:
            done = datetime.fromisoformat(done.replace("Z", "+00:00"))
        except ValueError:
            done = None
    if isinstance(done, datetime):
        # Celery stores UTC; some backends (database, Celery < 5.3) drop the zone.
        if done.tzinfo is None:
            done = done.replace(tzinfo=timezone.utc)
        timestamp = done.timestamp()
    elif event_type in ("task-succeeded", "task-failed", "task-revoked"):
        timestamp = now if now is not None else time.time()
    else:
        # Celery records no time for STARTED/PROGRESS/RETRY. Stamping them
        # "now" would let them outrank real events sent earlier but heard
        # later (a prefork child's last progress, a worker clock behind
        # ours): an unknown time loses to every real event instead.
        timestamp = UNKNOWN_TIME
    event: dict[str, Any] = {"type": event_type, "uuid": task_id, "timestamp": timestamp}
    result = meta.get("result")
    if meta.get("name"):
        event["name"] = meta["name"]
    if meta.get("worker"):
        event["hostname"] = meta["worker"]
    if event_type == "task-succeeded":
        as_json = json_result(result, max_result_bytes) if results == "json" else None
        if as_json is not None:
            event.update(as_json)
        else:
            event["result"] = saferepr(result, RESULT_REPR_MAXLEN)
            event["result_format"] = RESULT_REPR
    elif event_type in ("task-failed", "task-retried"):
        event["exception"] = _exception_repr(result)
        exc_type = _exception_class(result)
        if exc_type is not None:
            event["exception_type"] = exc_type
        event["traceback"] = meta.get("traceback")
    elif event_type == "task-progress" and isinstance(result, Mapping):
        event.update(normalize_progress(result))
    elif event_type == "task-revoked":
        event["terminated"] = True
    return event


def _exception_repr(result: Any) -> str | None:
    if result is None:
        return None
    if isinstance(result, BaseException):
        return saferepr(result, RESULT_REPR_MAXLEN)
    if isinstance(result, Mapping) and "exc_type" in result:
        # The backend could not rebuild the exception class: use its wire form.
        message = result.get("exc_message")
        if isinstance(message, (list, tuple)):
            message = ", ".join(repr(m) for m in message)
        else:
            message = repr(message)
        return f"{result['exc_type']}({message})"
    return saferepr(result, RESULT_REPR_MAXLEN)


def _exception_class(result: Any) -> str | None:
    if isinstance(result, BaseException):
        return type(result).__name__
    if isinstance(result, Mapping) and isinstance(result.get("exc_type"), str):
        return str(result["exc_type"])
    return None


#: Keys per batched read: one MGET round trip each.
MAX_KEYS_PER_READ = 1000
#: Batched snapshot reads in flight at once; lookups arriving meanwhile wait for the next.
SNAPSHOT_READS = 2


class ResultBackend:
    """Reads task states from the Celery result backend without blocking the event loop."""

    def __init__(
        self,
        app: Celery,
        workers: int = 4,
        on_read: Callable[[str, int], None] | None = None,
        *,
        results: str = "repr",
        max_result_bytes: int = 64 * 1024,
    ) -> None:
        self.app = app
        self.on_read = on_read  # (kind, keys) per round trip: "batch" (reconcile), "snapshot" or "single"
        self.failing = False  # the last read failed: logged once per outage, not once per read
        self.results = results  # how a SUCCESS result reads: meta_to_event's ``results``
        self.max_result_bytes = max_result_bytes
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="result-backend")
        # Snapshot lookups that arrive while one is read share the next MGET (batching.py): a reconnect
        # storm's thousands of subscribes cost a few round trips, not one each.
        self._lookups: ReadBatcher[str, dict[str, Any]] = ReadBatcher(
            self._lookup_batch, max_batch=MAX_KEYS_PER_READ, concurrency=SNAPSHOT_READS
        )

    @property
    def batched(self) -> bool:
        """True when one round trip reads many tasks (key-value backends: Redis, rediss, Sentinel, memcached)."""
        return _mget_supported(self.app.backend)

    async def lookup_many(self, task_ids: Iterable[str], kind: str = "batch") -> dict[str, dict[str, Any]]:
        """Each task's state as an event, for those the backend knows; one round trip per 1 000 on key-value
        backends (counted as ``kind``), one per task on the others. A backend outage gives an empty answer,
        never an error."""
        ids = list(dict.fromkeys(task_ids))
        if not ids:
            return {}
        loop = asyncio.get_running_loop()
        try:
            metas = await loop.run_in_executor(self._pool, self._get_metas, ids, kind)
        except Exception as exc:  # noqa: BLE001 - a backend outage delays reconciliation, never fails it
            self._failed(exc)
            return {}
        self._answered()
        found: dict[str, dict[str, Any]] = {}
        for task_id, meta in metas.items():
            event = (
                meta_to_event(task_id, meta, results=self.results, max_result_bytes=self.max_result_bytes)
                if meta
                else None
            )
            if event is not None:
                found[task_id] = event
        return found

    def _get_metas(self, task_ids: list[str], kind: str) -> dict[str, Mapping[str, Any] | None]:
        return read_metas(
            self.app.backend,
            task_ids,
            MAX_KEYS_PER_READ,
            lambda how, keys: self._count(kind if how == "batch" else how, keys),
        )

    async def _lookup_batch(self, task_ids: list[str]) -> dict[str, dict[str, Any]]:
        return await self.lookup_many(task_ids, kind="snapshot")

    def _failed(self, exc: BaseException) -> None:
        if not self.failing:
            self.failing = True
            log.warning(
                "result backend unreachable (%s: %s); snapshots and reconciliation wait for it", type(exc).__name__, exc
            )

    def _answered(self) -> None:
        if self.failing:
            self.failing = False
            log.info("result backend answers again")

    def _count(self, how: str, keys: int) -> None:
        if self.on_read is not None:
            self.on_read(how, keys)

    async def lookup(self, task_id: str) -> dict[str, Any] | None:
        """The task's state as an event, or None when the backend knows nothing (or cannot be reached).

        On key-value backends lookups made at about the same time share one MGET (counted ``snapshot``);
        on the others each is its own read (``single``), run side by side on the pool's threads.
        """
        if self.batched:
            return await self._lookups.get(task_id)
        loop = asyncio.get_running_loop()
        try:
            meta = await loop.run_in_executor(self._pool, self._get_meta, task_id)
        except Exception as exc:  # noqa: BLE001 - a backend outage degrades snapshots, never fails them
            self._failed(exc)
            return None
        self._answered()
        return (
            meta_to_event(task_id, meta, results=self.results, max_result_bytes=self.max_result_bytes) if meta else None
        )

    def _get_meta(self, task_id: str) -> Mapping[str, Any] | None:
        backend = self.app.backend
        self._count("single", 1)
        return backend.get_task_meta(task_id)

    async def membership(self, workflow_id: str, limit: int) -> Membership | None:
        """Who belongs to a workflow as the result backend records it (None when it cannot be reached).

        A saved group gives a group (a chord when saved with its body as the
        group's parent, see ``pushserver.worker.save_workflow``); anything else
        is taken for a chain's first task, whose members are found by following
        each finished task's recorded children. At most ``limit`` + 1 members
        are returned, so a caller can tell "too many".
        """
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, self._membership, workflow_id, limit)
        except Exception as exc:  # noqa: BLE001 - an outage degrades to what the events tell
            log.warning("result backend lookup failed for a workflow (%s: %s)", type(exc).__name__, exc)
            return None

    def _membership(self, workflow_id: str, limit: int) -> Membership:
        backend = self.app.backend
        saved = GroupResult.restore(workflow_id, backend=backend, app=self.app)
        if isinstance(saved, GroupResult):
            members = list(dict.fromkeys(leaf_ids(saved, limit)))
            body = saved.parent.id if isinstance(saved.parent, AsyncResult) else None
            if body is not None:
                members = [m for m in members if m != body] + [body]
                return Membership(workflow_id, CHORD, tuple(members[: limit + 1]), body)
            return Membership(workflow_id, GROUP, tuple(members[: limit + 1]))

        def children_of(task_id: str) -> list[str]:
            meta = backend.get_task_meta(task_id) or {}
            return _child_ids(meta.get("children"), limit)

        return Membership(workflow_id, CHAIN, tuple(chain_members(workflow_id, children_of, limit)))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def read_metas(
    backend: Any, task_ids: list[str], max_keys: int, count: Callable[[str, int], None]
) -> dict[str, Mapping[str, Any] | None]:
    """Each task's backend meta (None: no record), by ``MGET``s of at most ``max_keys`` on key-value backends
    (``count("batch", keys)`` each), else task by task (``count("single", 1)`` each). Blocking; raises on failure."""
    if not _mget_supported(backend):
        metas: dict[str, Mapping[str, Any] | None] = {}
        for task_id in task_ids:
            metas[task_id] = backend.get_task_meta(task_id, cache=False)
            count("single", 1)
        return metas
    found: dict[str, Mapping[str, Any] | None] = {}
    for start in range(0, len(task_ids), max_keys):
        chunk = task_ids[start : start + max_keys]
        keys = [backend.get_key_for_task(t) for t in chunk]
        values = backend.mget(keys)
        count("batch", len(chunk))
        if hasattr(values, "get"):  # memcached-style clients answer a mapping, Redis a list
            values = [values.get(key) for key in keys]
        for task_id, value in zip(chunk, values):
            found[task_id] = backend.decode_result(value) if value else None
    return found


def _mget_supported(backend: Any) -> bool:
    """Whether the backend implements Celery's ``mget`` (the base class only raises NotImplementedError)."""
    return isinstance(backend, BaseKeyValueStoreBackend) and type(backend).mget is not BaseKeyValueStoreBackend.mget


# -- the values of finished tasks, read in batches -----------------------------------------------

#: Most task ids one read asks for (one Redis MGET).
MAX_READ_BATCH = 500


class ResultReader:
    """Reads the stored results of just-finished tasks, many per call, on threads of its own.

    Its own pool, so that reads for SUCCESS notices never queue behind snapshot lookups, nor these behind
    them. ``readable`` is False for backends that hold nothing this server may read: none configured
    (``disabled``) and ``rpc://``, whose results are messages for the caller, not records.
    """

    def __init__(self, app: Celery, workers: int = 2, on_read: Callable[[str, int], None] | None = None) -> None:
        self.app = app
        self.on_read = on_read  # ("result", keys) per round trip, beside ResultBackend's own kinds
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="result-reader")

    @property
    def readable(self) -> bool:
        """Whether the backend keeps records this server can read."""
        backend = self.app.backend
        return (
            not isinstance(backend, DisabledBackend)
            and bool(getattr(backend, "persistent", True))
            and not isinstance(backend, RPCBackend)
        )

    async def read(self, task_ids: list[str]) -> dict[str, Mapping[str, Any]]:
        """The backend's meta of each finished task among ``task_ids`` (absent: no record); raises on failure."""
        loop = asyncio.get_running_loop()
        found: dict[str, Mapping[str, Any]] = {}
        for start in range(0, len(task_ids), MAX_READ_BATCH):
            chunk = task_ids[start : start + MAX_READ_BATCH]
            found.update(await loop.run_in_executor(self._pool, self._read, chunk))
        return found

    def _read(self, task_ids: list[str]) -> dict[str, Mapping[str, Any]]:
        metas = read_metas(self.app.backend, task_ids, MAX_READ_BATCH, lambda how, keys: self._count(keys))
        return {t: m for t, m in metas.items() if m and m.get("status") != "PENDING"}

    def _count(self, keys: int) -> None:
        if self.on_read is not None:
            self.on_read("result", keys)  # a kind of its own: "batch" and "single" stay the reconciler's

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def leaf_ids(result: ResultBase, limit: int) -> list[str]:
    """The task ids in a (possibly nested) group result: each child, the chain steps before it, nested groups'."""
    found: list[str] = []
    todo: list[ResultBase] = [result]
    while todo and len(found) <= limit:
        node = todo.pop(0)
        if isinstance(node, GroupResult):
            todo[:0] = list(node.results or ())
            continue
        chain: list[str] = []
        while isinstance(node, AsyncResult) and not isinstance(node, GroupResult):
            chain.append(node.id)
            node = node.parent
        found.extend(reversed(chain))
        if isinstance(node, GroupResult):
            todo.insert(0, node)
    return found


def _child_ids(children: Any, limit: int) -> list[str]:
    """The task ids in a result-backend meta's ``children`` (result tuples), nested groups flattened."""
    ids: list[str] = []
    for child in children or ():
        try:
            result = result_from_tuple(child)
        except (TypeError, ValueError):
            continue  # an entry we cannot read: its members stay unknown until their events name them
        ids.extend(leaf_ids(result, limit))
    return ids
