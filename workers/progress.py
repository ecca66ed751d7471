"""Progress reporting from inside a bound Celery task, as ``task-progress`` events."""

from __future__ import annotations

import json
import logging
import math
import numbers
import time
from typing import Any, Protocol

logger = logging.getLogger(__name__)

PROGRESS_EVENT = "task-progress"
PROGRESS_STATE = "PROGRESS"
MAX_MESSAGE_LENGTH = 200

# Names the event already carries (Celery adds them, or they are ours) or that
# Task.send_event / Dispatcher.send / Event take as their own parameters: an
# extra field by one of these names would clash or be silently swallowed.
RESERVED_FIELDS = frozenset(
    {
        "type", "type_", "uuid", "hostname", "utcoffset", "pid", "clock",
        "timestamp", "local_received", "current", "total", "message",
        "retry", "retry_policy", "blind", "Event", "fields",
    }
)

# Progress is best-effort: with the broker gone, a task should lose a progress
# update after ~0.2 s rather than stall for the default publish retry policy.
PROGRESS_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.1,
    "interval_max": 0.1,
}


# After a failure, skip that channel for this long. With the broker down,
# send_event blocks ~6 s in kombu's reconnect loop whatever its retry policy
# (measured): without a pause, a 100-step task would stall for 10 minutes.
PAUSE_AFTER_FAILURE = 5.0


class _Breaker:
    """Skips a failing channel for a while, so an outage costs one stall, not one per call."""

    def __init__(self, pause: float = PAUSE_AFTER_FAILURE) -> None:
        self.pause = pause
        self._paused_until = 0.0

    def allow(self) -> bool:
        return time.monotonic() >= self._paused_until

    def failed(self) -> None:
        self._paused_until = time.monotonic() + self.pause

    def succeeded(self) -> None:
        self._paused_until = 0.0


# One per process (each prefork child has its own); pool threads share them,
# and a race between them costs at most one extra attempt.
_event_breaker = _Breaker()
_backend_breaker = _Breaker()


class BoundTask(Protocol):
    """What ``report_progress`` needs from a bound task (``self`` in ``@app.task(bind=True)``)."""

    request: Any

    def send_event(self, type_: str, retry: bool = ..., retry_policy: Any = ..., **fields: Any) -> Any: ...

    def update_state(self, task_id: Any = ..., state: Any = ..., meta: Any = ..., **kwargs: Any) -> Any: ...


def _check_count(name: str, value: Any) -> int | float:
    """Return ``value`` if it is a finite, non-negative real number; raise otherwise."""
    # bool is an int subclass, but True/False as a step count is always a bug.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    # numpy scalars are Real but not JSON serialisable by kombu's encoder.
    return value if type(value) in (int, float) else float(value)


def progress_fields(
    current: Any, total: Any = None, message: Any = None, **extra: Any
) -> dict[str, Any]:
    """Validate progress arguments and return the event fields (raises TypeError/ValueError)."""
    current = _check_count("current", current)
    if total is not None:
        total = _check_count("total", total)
        if current > total:
            raise ValueError(f"current ({current!r}) must not exceed total ({total!r})")
    if message is not None:
        if not isinstance(message, str):
            raise TypeError(f"message must be a str, got {type(message).__name__}")
        if len(message) > MAX_MESSAGE_LENGTH:
            message = message[: MAX_MESSAGE_LENGTH - 1] + "…"
    for key in extra:
        if key in RESERVED_FIELDS or key.startswith("_"):
            raise ValueError(f"{key!r} cannot be an extra progress field")
    if extra:
        try:
            json.dumps(extra)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"extra progress fields must be JSON serialisable: {exc}") from None
    return {"current": current, "total": total, "message": message, **extra}


def report_progress(
    task: BoundTask,
    current: int | float,
    total: int | float | None = None,
    message: str | None = None,
    **extra: Any,
) -> None:
    """Tell watchers how far a running task has got, with one call from inside the task.

    Emits a ``task-progress`` event (Celery adds ``uuid``, ``hostname`` and
    ``timestamp``) and records a ``PROGRESS`` state in the result backend.
    Bad arguments raise ``TypeError``/``ValueError`` (a bug in the task).
    Broker or backend failures are logged, never raised, and the failing
    channel is then skipped for ``PAUSE_AFTER_FAILURE`` seconds.
    """
    fields = progress_fields(current, total, message, **extra)
    task_id = getattr(task.request, "id", None)
    if task_id is None:
        # Called directly (``task.run(...)`` or a plain function call): there
        # is no task anyone could be watching.
        return
    if _event_breaker.allow():
        try:
            task.send_event(PROGRESS_EVENT, retry=True, retry_policy=PROGRESS_RETRY_POLICY, **fields)
            _event_breaker.succeeded()
        except Exception:  # noqa: BLE001 - a lost progress update must not fail the task
            _event_breaker.failed()
            logger.warning("could not send %s for task %s", PROGRESS_EVENT, task_id, exc_info=True)
    # The event is what the push server forwards; the backend write is for
    # clients that still poll AsyncResult(...).info. It costs one Redis GET
    # and one SET+PUBLISH: measured on localhost, a call took 0.34 ms with the
    # event alone and 0.70 ms with both. Small next to any step worth
    # reporting, so it is always done rather than throttled.
    if _backend_breaker.allow():
        try:
            task.update_state(state=PROGRESS_STATE, meta=fields)
            _backend_breaker.succeeded()
        except Exception:  # noqa: BLE001 - same reason: progress is best-effort
            _backend_breaker.failed()
            logger.warning("could not store %s state for task %s", PROGRESS_STATE, task_id, exc_info=True)
