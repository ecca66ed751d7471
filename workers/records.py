"""Each dispatched task's state and output, written on its record in the app's ``tasks`` collection.

Express writes the record (owner, kind, arguments summary, created time)
before it publishes the task; the worker sets ``state`` as the task starts and
ends, so the nightly report can count the day's tasks by name and state.
The end is written in ``task_postrun``, which Celery sends after it has stored
the result: whoever sees the result first may read ``STARTED`` for a moment,
until ``finished_at`` is set.
Tasks without a record (sent by other producers) are left alone.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from celery.signals import task_postrun, task_prerun
from pymongo.errors import PyMongoError

from . import db

logger = logging.getLogger(__name__)


def _tracking() -> bool:
    # Without MONGO_URL there are no records to update (tests of other parts run such workers).
    return bool((os.environ.get("MONGO_URL") or "").strip())


def set_fields(task_id: str, fields: dict[str, Any], stamp: str | None = None) -> bool:
    """Set ``fields`` (and ``stamp`` to the server's current time) on task ``task_id``'s record.

    Returns whether a record was there.
    """
    update: dict[str, Any] = {"$set": fields}
    if stamp is not None:
        # The server's clock, one for every worker; and nx-27017 (demo, tests) keeps a
        # $currentDate a date, where it stores a datetime given to $set as a string.
        update["$currentDate"] = {stamp: True}
    result = db.tasks().update_one({"_id": task_id}, update)
    return result.matched_count > 0


# After a failed write, states are not recorded for this long: during a MongoDB outage each
# attempt would hold the task up to the server-selection timeout.
PAUSE_AFTER_FAILURE = 30.0
_paused_until = 0.0
skipped = 0  # states not recorded during pauses (logged when recording resumes)


def _record_state(task_id: str | None, state: str, stamp: str) -> None:
    global _paused_until, skipped
    if not task_id or not _tracking():
        return
    if time.monotonic() < _paused_until:
        skipped += 1
        return
    try:
        set_fields(task_id, {"state": state}, stamp)
    except PyMongoError as exc:
        # The task itself must not fail because its bookkeeping could not be written.
        _paused_until = time.monotonic() + PAUSE_AFTER_FAILURE
        logger.warning(
            "could not record state %s of task %s in MongoDB (%s); not recording states for %.0f s",
            state,
            task_id,
            exc,
            PAUSE_AFTER_FAILURE,
        )
        return
    if skipped:
        logger.warning("recording task states in MongoDB again; %d were not recorded meanwhile", skipped)
        skipped = 0


@task_prerun.connect
def _on_task_prerun(task_id: str | None = None, **kwargs: Any) -> None:
    _record_state(task_id, "STARTED", "started_at")


@task_postrun.connect
def _on_task_postrun(task_id: str | None = None, state: str | None = None, **kwargs: Any) -> None:
    _record_state(task_id, state or "SUCCESS", "finished_at")
