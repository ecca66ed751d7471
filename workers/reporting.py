"""The nightly report's MongoDB work: the day's tasks by name and state, and archiving old task records."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from pymongo.collection import Collection
from pymongo.errors import BulkWriteError

DEFAULT_ARCHIVE_AFTER_DAYS = 30.0
ARCHIVE_BATCH = 500
DUPLICATE_KEY = 11000

#: Called after each archived batch with (records moved so far, records to move).
ArchiveProgress = Callable[[int, int], None]


def archive_after(env: Mapping[str, str] = os.environ, override: float | None = None) -> timedelta:
    """How old a task record must be to be archived: ``override`` days, else ``ARCHIVE_AFTER_DAYS`` (30)."""
    raw: Any = override if override is not None else (env.get("ARCHIVE_AFTER_DAYS") or "").strip()
    if raw in ("", None):
        return timedelta(days=DEFAULT_ARCHIVE_AFTER_DAYS)
    try:
        days = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"ARCHIVE_AFTER_DAYS must be a number of days, got {raw!r}") from None
    if isinstance(raw, bool) or not math.isfinite(days) or days < 0:
        raise ValueError(f"ARCHIVE_AFTER_DAYS must be a number of days >= 0, got {raw!r}")
    return timedelta(days=days)


# Joins task name and state into one group key (neither ever contains it).
KEY_SEPARATOR = "\x1f"
UNKNOWN = "UNKNOWN"


def day_pipeline(since: datetime, until: datetime) -> list[dict[str, Any]]:
    """The aggregation pipeline counting the task records created in [since, until) by task name and state."""
    # MongoDB's usual key is a compound _id ({"task": "$task", "state": "$state"}); nx-27017, the
    # MongoDB of the demo and tests, does not evaluate paths inside an object _id. One string
    # key, built with operators both evaluate, counts the same on either.
    key = {"$concat": [{"$ifNull": ["$task", UNKNOWN]}, KEY_SEPARATOR, {"$ifNull": ["$state", UNKNOWN]}]}
    return [
        {"$match": {"created_at": {"$gte": since, "$lt": until}}},
        {"$group": {"_id": key, "count": {"$sum": 1}}},
        {"$sort": {"_id": 1}},
    ]


def count_by_name_and_state(
    tasks: Collection[dict[str, Any]], since: datetime, until: datetime
) -> list[dict[str, Any]]:
    """Run ``day_pipeline`` and return ``[{task, state, count}, ...]`` sorted by task then state."""
    rows = []
    for row in tasks.aggregate(day_pipeline(since, until)):
        task, _, state = str(row["_id"]).partition(KEY_SEPARATOR)
        rows.append({"task": task, "state": state, "count": int(row["count"])})
    return sorted(rows, key=lambda r: (r["task"], r["state"]))


def archive_older_than(
    tasks: Collection[dict[str, Any]],
    archive: Collection[dict[str, Any]],
    cutoff: datetime,
    archived_at: datetime,
    on_progress: ArchiveProgress | None = None,
    batch_size: int = ARCHIVE_BATCH,
) -> int:
    """Move the records created before ``cutoff`` from ``tasks`` to ``archive``, oldest first; return how many.

    Each batch is copied, then deleted: a run killed in between leaves copies
    that the next run's insert skips as duplicates, so nothing is lost or doubled.
    """
    old = {"created_at": {"$lt": cutoff}}
    total = tasks.count_documents(old)
    moved = 0
    while batch := list(tasks.find(old).sort("created_at", 1).limit(batch_size)):
        for record in batch:
            record["archived_at"] = archived_at
        try:
            archive.insert_many(batch, ordered=False)
        except BulkWriteError as exc:
            others = [e for e in exc.details.get("writeErrors", []) if e.get("code") != DUPLICATE_KEY]
            if others:
                raise
        deleted = tasks.delete_many({"_id": {"$in": [record["_id"] for record in batch]}}).deleted_count
        if deleted == 0:
            # Another run archived them meanwhile; stop rather than spin on them.
            break
        moved += deleted
        if on_progress is not None:
            on_progress(moved, max(total, moved))
    return moved
