"""The Celery application that runs the example tasks, with events on and a Beat schedule."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from celery import Celery
from celery.schedules import crontab

from pushserver.config import ConfigError, json_object
from pushserver.worker import enable_events

from .threads_pool import ThreadsPoolWakeup

DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
DEFAULT_RESULT_BACKEND = "redis://127.0.0.1:6379/1"
DEFAULT_VISIBILITY_TIMEOUT = 3600
#: Attempts to store a result while the backend is unreachable (result_backend_always_retry).
RESULT_STORE_RETRIES = 30

NIGHTLY_REPORT_TASK = "workers.tasks.nightly_report"


def _positive_number(env: Mapping[str, str], name: str, default: float) -> float:
    """Read a positive number from the environment, failing loudly on a typo."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not value > 0:  # also rejects NaN
        raise ValueError(f"{name} must be > 0, got {raw!r}")
    return value


def _json_object(env: Mapping[str, str], name: str) -> dict[str, Any]:
    """Read a JSON object (Celery transport options) from the environment; unset or blank is ``{}``."""
    try:
        return json_object(env.get(name))
    except ConfigError as exc:
        raise ValueError(f"{name} must be a JSON object, got {env.get(name)!r}: {exc}") from None


def _switch(env: Mapping[str, str], name: str, default: bool) -> bool:
    """Read an on/off setting: 1/true/yes/on or 0/false/no/off."""
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be 1 or 0, got {raw!r}")


def nightly_report_schedule(env: Mapping[str, str] = os.environ) -> crontab | timedelta:
    """Return when Beat runs the nightly report: 00:00 UTC, or every NIGHTLY_REPORT_EVERY seconds."""
    # The interval exists for the demo: nobody waits until midnight to see Beat work.
    if env.get("NIGHTLY_REPORT_EVERY", "").strip():
        return timedelta(seconds=_positive_number(env, "NIGHTLY_REPORT_EVERY", 1.0))
    return crontab(hour=0, minute=0)


def build_config(env: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """Return the Celery settings for the example workers, read from ``env``."""
    visibility_timeout = int(_positive_number(env, "CELERY_VISIBILITY_TIMEOUT", DEFAULT_VISIBILITY_TIMEOUT))
    # With acks_late, Redis redelivers an unacknowledged task only after this
    # timeout; tests shorten it to see redelivery without waiting an hour.
    transport_options = {"visibility_timeout": visibility_timeout}
    # Sentinel's master_name (and sentinel_kwargs, ...) come as JSON, like pushserver's
    # --broker-transport-options / --backend-transport-options; TLS and passwords are in the URLs.
    broker_options = transport_options | _json_object(env, "CELERY_BROKER_TRANSPORT_OPTIONS")
    backend_options = transport_options | _json_object(env, "CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS")
    # CELERY_WORKER_SEND_TASK_EVENTS=0 makes a worker like one without -E (enable_events leaves an
    # explicit setting alone): pushserver then learns outcomes from the result backend, seconds later.
    events: dict[str, Any] = {}
    if env.get("CELERY_WORKER_SEND_TASK_EVENTS", "").strip():
        events["worker_send_task_events"] = _switch(env, "CELERY_WORKER_SEND_TASK_EVENTS", True)
    return events | {
        "broker_url": env.get("CELERY_BROKER_URL") or DEFAULT_BROKER_URL,
        "result_backend": env.get("CELERY_RESULT_BACKEND") or DEFAULT_RESULT_BACKEND,
        "broker_transport_options": broker_options,
        "result_backend_transport_options": backend_options,
        "broker_connection_retry_on_startup": True,
        # A task is acknowledged only once it has run, and a worker killed
        # mid-task gives it back, so a crash never silently loses work.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # A task that ends while the result backend is unreachable keeps its result: Celery retries
        # the store (with backoff) until the backend answers, and only then announces the task
        # finished. Without it, the store fails and no task-succeeded is sent: the task looks
        # unfinished until it is redelivered after the visibility timeout (docs/reliability.md).
        # Bounded, so a backend gone for good does not hold a worker's threads forever: 30
        # retries, at most 10 s apart, ride out ~2 minutes.
        "result_backend_always_retry": True,
        "result_backend_max_retries": RESULT_STORE_RETRIES,
        # Long tasks must not sit reserved behind another one on a busy worker.
        "worker_prefetch_multiplier": 1,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_expires": timedelta(days=1),
        "timezone": "UTC",
        "enable_utc": True,
        "beat_schedule": {
            "nightly-report": {
                "task": NIGHTLY_REPORT_TASK,
                "schedule": nightly_report_schedule(env),
            },
        },
    }


app = Celery("workers", include=["workers.tasks"])
app.conf.update(build_config())
# The push server lives on task events: enable_events turns on what it needs
# (and, on Celery < 5.7, keeps the threads pool from losing events).
enable_events(app)
# Without it, `-P threads` idles up to ~2 s between tasks (threads_pool.py).
app.steps["consumer"].add(ThreadsPoolWakeup)
