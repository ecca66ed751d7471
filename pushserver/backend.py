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
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any, Mapping

from celery import Celery
from celery.result import AsyncResult, GroupResult, ResultBase, result_from_tuple
from celery.utils.saferepr import saferepr

from .state import normalize_progress
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


def meta_to_event(task_id: str, meta: Mapping[str, Any], now: float | None = None) -> dict[str, Any] | None:
    """Express a backend meta dict as the Celery event that would have announced it (None if it says nothing)."""
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
        event["result"] = saferepr(result, RESULT_REPR_MAXLEN)
    elif event_type in ("task-failed", "task-retried"):
        event["exception"] = _exception_repr(result)
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


class ResultBackend:
    """Reads task states from the Celery result backend without blocking the event loop."""

    def __init__(self, app: Celery, workers: int = 4) -> None:
        self.app = app
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="result-backend")

    async def lookup(self, task_id: str) -> dict[str, Any] | None:
        """The task's state as an event, or None when the backend knows nothing (or cannot be reached)."""
        loop = asyncio.get_running_loop()
        try:
            meta = await loop.run_in_executor(self._pool, self._get_meta, task_id)
        except Exception as exc:  # noqa: BLE001 - a backend outage degrades snapshots, never fails them
            log.warning("result backend lookup failed for a task (%s: %s)", type(exc).__name__, exc)
            return None
        return meta_to_event(task_id, meta) if meta else None

    def _get_meta(self, task_id: str) -> Mapping[str, Any] | None:
        backend = self.app.backend
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
                return Membership(workflow_id, CHORD, tuple(members[:limit + 1]), body)
            return Membership(workflow_id, GROUP, tuple(members[:limit + 1]))

        def children_of(task_id: str) -> list[str]:
            meta = backend.get_task_meta(task_id) or {}
            return _child_ids(meta.get("children"), limit)

        return Membership(workflow_id, CHAIN, tuple(chain_members(workflow_id, children_of, limit)))

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
