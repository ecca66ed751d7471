"""The example Celery tasks; their names (``workers.tasks.<function>``) are a contract.

Every task here also runs when dispatched from Node (celery-node sends
protocol v2 with only the ``lang``, ``task`` and ``id`` headers), so nothing
reads ``root_id``, ``argsrepr`` or other optional request fields.
"""

from __future__ import annotations

import math
import numbers
import os
import smtplib
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from celery import Task, group

from pushserver.worker import report_progress, save_workflow

from . import db, records
from .app import app
from .emails import DEFAULT_SENDER, parse_smtp_url, render_welcome_email, safe_token, send_smtp, write_eml
from .images import process_image
from .model import predict_iris
from .reporting import archive_after, archive_older_than, count_by_name_and_state
from .webhooks import encode_payload, post_json, validate_url, validate_urls

MAX_RETRIES = 3
MAX_STEPS_DELAY = 60.0
# No example task may hold a worker slot longer than this, whatever its arguments.
MAX_TASK_SECONDS = 600.0
MAX_DEMO_STEPS = 10_000
MAX_FLAKY_FAILURES = 10


def _directory(env_name: str, default: str) -> Path:
    """Return the absolute folder named by ``env_name``; read at call time so tests can move it."""
    return Path(os.environ.get(env_name) or default).resolve()


def _backoff(retries: int) -> float:
    """Seconds before retry number ``retries + 1``: base, 2x, 4x, with base ``WORKERS_RETRY_BACKOFF`` (1 s)."""
    # Tests shorten the base so three retries take a fraction of a second.
    base = _check_seconds("WORKERS_RETRY_BACKOFF", float(os.environ.get("WORKERS_RETRY_BACKOFF") or 1.0))
    return base * 2**retries


def _check_seconds(name: str, value: Any, maximum: float | None = None) -> float:
    """Return ``value`` if it is a finite number of seconds >= 0 (and <= maximum); else ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum} seconds, got {value!r}")
    return float(value)


def _file_stem(task: Task) -> str:
    """Name output files after the task id so a redelivered task overwrites its own file."""
    return safe_token(task.request.id or uuid.uuid4().hex)


class UserNotFound(LookupError):
    """The user a task was dispatched for has no document in the app's ``users`` collection."""


def _is_transient_smtp_error(exc: OSError) -> bool:
    # Every SMTPException is an OSError; only a failed or dropped connection is
    # worth retrying, a refused recipient will be refused again.
    if isinstance(exc, (smtplib.SMTPConnectError, smtplib.SMTPServerDisconnected)):
        return True
    return not isinstance(exc, smtplib.SMTPException)


@app.task(bind=True, name="workers.tasks.send_welcome_email")
def send_welcome_email(self: Task, user_id: str, email: str | None = None) -> dict[str, str]:
    """Read user ``user_id`` from MongoDB, render their welcome email, send it by SMTP or write it to ``OUTBOX_DIR``."""
    report_progress(self, 0, 3, "reading the user")
    if not isinstance(user_id, str) or not user_id.strip():
        raise ValueError("user_id must be a non-empty string")
    user = db.users().find_one({"_id": user_id}, {"username": 1, "email": 1})
    if user is None:
        # Retrying cannot make the account appear: fail at once, saying where we looked.
        raise UserNotFound(f"no user {user_id!r} in MongoDB ({db.users().full_name})")
    username = str(user.get("username") or user_id)
    report_progress(self, 1, 3, "rendering email")
    message = render_welcome_email(
        user_id, email or user.get("email"), sender=os.environ.get("MAIL_FROM") or DEFAULT_SENDER, name=username
    )
    report_progress(self, 2, 3, f"rendered; delivering to {message['To']}")
    smtp_url = os.environ.get("SMTP_URL")
    if smtp_url:
        server = parse_smtp_url(smtp_url)
        try:
            send_smtp(message, server)
        except OSError as exc:
            if not _is_transient_smtp_error(exc):
                raise
            raise self.retry(exc=exc, countdown=_backoff(self.request.retries), max_retries=MAX_RETRIES) from exc
        delivered_to = "smtp"
    else:
        stem = f"welcome-{safe_token(user_id)}-{_file_stem(self)}"
        delivered_to = str(write_eml(message, _directory("OUTBOX_DIR", "outbox"), stem))
    report_progress(self, 3, 3, "delivered by SMTP" if delivered_to == "smtp" else "written to outbox")
    return {"user_id": user_id, "username": username, "delivered_to": delivered_to}


@app.task(bind=True, name="workers.tasks.resize_and_watermark")
def resize_and_watermark(
    self: Task,
    image_b64: str | None = None,
    width: int = 640,
    watermark: str = "celery-pushserver",
    steps_delay: float = 0.0,
) -> dict[str, Any]:
    """Resize an image (base64, or a generated test image) to ``width``, watermark it, save it in ``MEDIA_DIR``.

    The output's metadata is also recorded on the task's MongoDB record (``output``), when it has one.
    """
    delay = _check_seconds("steps_delay", steps_delay, MAX_STEPS_DELAY)
    report_progress(self, 0, 5, "starting")

    def on_step(current: int, total: int, message: str) -> None:
        report_progress(self, current, total, message)
        if delay and current < total:
            # Only for demos and browser tests: real steps take milliseconds,
            # too fast for anyone to see progress move.
            time.sleep(delay)

    result = process_image(image_b64, width, watermark, _directory("MEDIA_DIR", "media"), _file_stem(self), on_step)
    if self.request.id and os.environ.get("MONGO_URL"):
        records.set_fields(self.request.id, {"output": {**result.as_dict(), "watermark": watermark}}, "output_at")
    return result.as_dict()


@app.task(bind=True, name="workers.tasks.predict")
def predict(self: Task, features: list[float]) -> dict[str, Any]:
    """Classify an iris flower from its 4 measurements with a logistic regression model."""
    report_progress(self, 0, 1, "classifying")
    result = predict_iris(features)
    report_progress(self, 1, 1, f"predicted {result['label']}")
    return result


@app.task(bind=True, name="workers.tasks.nightly_report")
def nightly_report(self: Task, archive_after_days: float | None = None) -> dict[str, Any]:
    """Count the last day's tasks by name and state, archive old task records, and save the report in MongoDB.

    Records older than ``archive_after_days`` (default ``ARCHIVE_AFTER_DAYS``,
    30) move from the app's ``tasks`` to the workers' ``tasks_archive``.
    """
    now = datetime.now(timezone.utc)
    # BSON dates hold milliseconds: the result returned and the report stored must read the same.
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)
    since = now - timedelta(days=1)
    cutoff = now - archive_after(override=archive_after_days)
    tasks_collection = db.tasks()
    # Progress in percent: counting is the first 10, archiving runs up to 95, saving ends it.
    report_progress(self, 0, 100, "counting the day's tasks")
    counts = count_by_name_and_state(tasks_collection, since, now)
    report_progress(self, 10, 100, f"counted {sum(row['count'] for row in counts)} tasks; archiving")

    def on_archived(moved: int, total: int) -> None:
        report_progress(self, 10 + 85 * moved // max(total, 1), 100, f"archived {moved} of {total} records")

    archived = archive_older_than(tasks_collection, db.tasks_archive(), cutoff, now, on_archived)
    report = {
        "generated_at": now,
        "since": since,
        "until": now,
        "counts": counts,
        "total": sum(row["count"] for row in counts),
        "archived": archived,
        "archive_cutoff": cutoff,
    }
    reports = db.reports()
    reports.create_index("generated_at")  # Express reads the newest; idempotent, so every run may ask
    reports.insert_one(dict(report))
    report_progress(self, 100, 100, f"report saved; archived {archived} records")
    return {key: value.isoformat() if isinstance(value, datetime) else value for key, value in report.items()}


@app.task(bind=True, name="workers.tasks.deliver_webhook", max_retries=MAX_RETRIES)
def deliver_webhook(self: Task, url: str, payload: dict[str, Any]) -> int:
    """POST ``payload`` as JSON to ``url`` and return the status code, retrying connection errors."""
    validate_url(url)
    body = encode_payload(payload)
    try:
        return post_json(url, body)
    except OSError as exc:  # refused, reset, DNS failure, timeout; HTTP answers are returned
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries), max_retries=MAX_RETRIES) from exc


@app.task(bind=True, name="workers.tasks.fanout_webhooks")
def fanout_webhooks(self: Task, urls: list[str], payload: dict[str, Any] | None = None) -> dict[str, Any]:
    """Start one ``deliver_webhook`` per URL as a saved group and return its id, without waiting for the deliveries.

    The group id is a workflow id (pushserver follows the whole fan-out as one
    WorkflowState); so is this task's own id, whose ``root_id`` the deliveries carry.
    """
    urls = validate_urls(urls)
    payload = {} if payload is None else payload
    encode_payload(payload)  # fail here, once, rather than in every child
    report_progress(self, 0, 1, f"dispatching {len(urls)} webhooks")
    # Waiting on the children here would block a worker slot and can
    # deadlock the pool; watchers follow the child task ids instead.
    result = group(deliver_webhook.s(url, payload) for url in urls).apply_async()
    group_id = save_workflow(result)
    report_progress(self, 1, 1, f"dispatched {len(urls)} webhooks")
    return {"group_id": group_id, "task_ids": [child.id for child in result.results]}


# --- Diagnostics used by the test-suite and the demo. ---


@app.task(bind=True, name="workers.tasks.demo_progress")
def demo_progress(self: Task, steps: int, delay: float) -> int:
    """Report ``steps`` progress events, ``delay`` seconds apart, then return ``steps``."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps <= MAX_DEMO_STEPS:
        raise ValueError(f"steps must be an integer from 0 to {MAX_DEMO_STEPS}, got {steps!r}")
    delay = _check_seconds("delay", delay, MAX_STEPS_DELAY)
    if steps * delay > MAX_TASK_SECONDS:
        raise ValueError(f"steps * delay must be at most {MAX_TASK_SECONDS} seconds, got {steps * delay}")
    for i in range(1, steps + 1):
        report_progress(self, i, steps, f"step {i}/{steps}")
        # Sleeping after each report keeps every step, the last one included,
        # visible for `delay` before the next state arrives.
        time.sleep(delay)
    return steps


@app.task(name="workers.tasks.fail")
def fail(message: str) -> None:
    """Raise ``RuntimeError(message)``, to produce a FAILURE on demand."""
    raise RuntimeError(message)


@app.task(bind=True, name="workers.tasks.flaky")
def flaky(self: Task, failures: int = 1, countdown: float = 0.1) -> dict[str, int]:
    """Fail and retry ``failures`` times, ``countdown`` seconds apart, then succeed."""
    if isinstance(failures, bool) or not isinstance(failures, int) or not 0 <= failures <= MAX_FLAKY_FAILURES:
        raise ValueError(f"failures must be an integer from 0 to {MAX_FLAKY_FAILURES}, got {failures!r}")
    countdown = _check_seconds("countdown", countdown, MAX_STEPS_DELAY)
    retries = self.request.retries
    if retries < failures:
        raise self.retry(
            countdown=countdown,
            max_retries=failures + 1,
            exc=RuntimeError(f"flaky failure {retries + 1} of {failures}"),
        )
    return {"retries": retries}


@app.task(name="workers.tasks.sleep")
def sleep(seconds: float) -> float:
    """Sleep ``seconds`` and return them, to hold a worker slot (reliability tests)."""
    time.sleep(_check_seconds("seconds", seconds, MAX_TASK_SECONDS))
    return seconds
