"""Task results as JSON: ``task-succeeded`` events held until their value is read from the result backend.

Celery's ``task-succeeded`` event carries only a truncated repr of the result. Under ``--forward-results
json`` Ingest (ingest.py) hands such events here instead of merging them; every other event goes on at once. The
resolver reads the values in batches (SUCCESS events that arrive while a read is in flight share the
next one, batching.py), puts each value in its event (``result``, ``result_format``) and hands the events back to be
merged, emitted and recorded, so updates, snapshots and the event log all carry the same value.

A slow or failing backend costs only SUCCESS notices, and only up to ``timeout`` each: a read that fails
or times out keeps Celery's repr (``result_format: "repr"``), and for ``cooldown`` seconds afterwards
events pass without a read, so that a backend outage does not add the timeout to every task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from .backend import MAX_READ_BATCH, ResultReader
from .batching import Batches
from .metrics import Metrics
from .state import RESULT_JSON, RESULT_REPR, RESULT_TOO_LARGE, json_result

log = logging.getLogger("pushserver.results")

#: Longest a SUCCESS notice waits for its value before it goes out with the repr.
READ_TIMEOUT = 1.0
#: Seconds after a failed or timed-out read during which SUCCESS events go out with the repr, unread.
COOLDOWN = 5.0
#: Reads in flight at once; events arriving meanwhile wait for the next, batched.
CONCURRENT_READS = 2


def needs_value(event: Mapping[str, Any]) -> bool:
    """Whether an event is a ``task-succeeded`` whose value is still to be read (not one completed before)."""
    return event.get("type") == "task-succeeded" and "result_format" not in event


def complete(event: Mapping[str, Any], meta: Mapping[str, Any] | None, max_bytes: int) -> tuple[dict[str, Any], str]:
    """The event with the value from ``meta`` (the backend's record, None: none), and the outcome for metrics."""
    out = dict(event)
    if meta is not None and meta.get("status") == "SUCCESS":
        fields = json_result(meta.get("result"), max_bytes)
        if fields is not None:
            out.update(fields)
            return out, fields["result_format"]
    out["result_format"] = RESULT_REPR  # ignore_result=True, an expired record, or a value that is no JSON
    return out, "no_value"


def recheck(event: Mapping[str, Any], max_bytes: int) -> dict[str, Any]:
    """An event completed elsewhere (a replay, another server's log) held to this server's ``max_bytes``."""
    if event.get("result_format") != RESULT_JSON:
        return dict(event)
    fields = json_result(event.get("result"), max_bytes)
    return {**event, **(fields or {"result": None, "result_format": RESULT_TOO_LARGE})}


class ResultResolver:
    """Completes ``task-succeeded`` events with their values from the result backend, off the event loop."""

    def __init__(
        self,
        reader: ResultReader,
        deliver: Callable[[list[dict[str, Any]]], None],
        metrics: Metrics,
        max_bytes: int,
        *,
        timeout: float = READ_TIMEOUT,
        cooldown: float = COOLDOWN,
        concurrency: int = CONCURRENT_READS,
    ) -> None:
        self.reader = reader
        self.deliver = deliver  # merges, emits and records completed events
        self.metrics = metrics
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.cooldown = cooldown
        self.concurrency = concurrency
        self.readable = reader.readable
        # SUCCESS events arriving while ``concurrency`` reads are in flight share the next one (batching.py).
        self._batches: Batches[dict[str, Any]] = Batches(
            self._resolve, max_batch=MAX_READ_BATCH, concurrency=concurrency
        )
        # Events of a task whose SUCCESS is held wait behind it, so that each task's changes still reach
        # clients in the order its events arrived (a late task-started never shows before the SUCCESS).
        self._behind: dict[str, list[dict[str, Any]]] = {}
        self._skip_until = float("-inf")

    @property
    def pending(self) -> int:
        """SUCCESS events waiting for a read (not those in a read under way)."""
        return self._batches.pending

    def split(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Take the ``task-succeeded`` events needing a value (they are delivered later); return the others."""
        now: list[dict[str, Any]] = []
        held: list[dict[str, Any]] = []
        for event in events:
            behind = self._behind.get(event["uuid"])
            if behind is not None:
                behind.append(event)
            elif event.get("type") != "task-succeeded":
                now.append(event)
            elif not needs_value(event):
                now.append(recheck(event, self.max_bytes))
            elif not self.readable or asyncio.get_running_loop().time() < self._skip_until:
                # Nothing to read, or the backend failed a moment ago: the repr, at once.
                now.append({**event, "result_format": RESULT_REPR})
                if self.readable:
                    self.metrics.results.labels("skipped").inc()
            else:
                held.append(event)
                self._behind[event["uuid"]] = []
        if held:
            self._batches.add(held)
        return now

    async def _resolve(self, batch: list[dict[str, Any]]) -> None:
        ids = list(dict.fromkeys(event["uuid"] for event in batch))
        metas: dict[str, Mapping[str, Any]] | None
        try:
            metas = await asyncio.wait_for(self.reader.read(ids), self.timeout)
        except asyncio.CancelledError:
            # Shutting down: what we hold still goes out (and into the log), with the repr.
            self._deliver([{**e, "result_format": RESULT_REPR} for e in batch])
            raise
        except Exception as exc:  # noqa: BLE001 - a backend outage costs values, never the events
            self._skip_until = asyncio.get_running_loop().time() + self.cooldown
            log.warning(
                "result backend read failed for %d result(s) (%s: %s); sending reprs for %gs",
                len(ids),
                type(exc).__name__,
                exc,
                self.cooldown,
            )
            metas = None
        completed = []
        for event in batch:
            if metas is None:
                completed.append({**event, "result_format": RESULT_REPR})
                self.metrics.results.labels("failed").inc()
                continue
            event_out, outcome = complete(event, metas.get(event["uuid"]), self.max_bytes)
            completed.append(event_out)
            self.metrics.results.labels(outcome).inc()
        self._deliver(completed)

    def _deliver(self, completed: list[dict[str, Any]]) -> None:
        events: list[dict[str, Any]] = []
        for event in completed:
            events.append(event)
            for later in self._behind.pop(event["uuid"], ()):
                if needs_value(later):  # the same SUCCESS again (a second receiver): the same value
                    later = {**later, "result": event.get("result"), "result_format": event["result_format"]}
                events.append(later)
        try:
            self.deliver(events)
        except Exception:  # noqa: BLE001 - a bug in merging must not lose later reads' events silently
            log.exception("merging %d completed result(s) failed", len(events))

    async def close(self) -> None:
        """Let the reads under way finish (at most ``timeout``), deliver the rest with reprs, stop (shutdown)."""
        waiting = self._batches.take_pending()
        if waiting:
            self._deliver([{**e, "result_format": RESULT_REPR} for e in waiting])
        reads = self._batches.running
        if reads:
            await asyncio.wait(reads, timeout=self.timeout)
        for task in reads:
            task.cancel()
        if reads:
            await asyncio.gather(*reads, return_exceptions=True)
        self.reader.close()
