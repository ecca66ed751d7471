"""Unit tests for the example workers: the pure parts, run without Redis or a worker.

Tasks are called directly here (``tasks.predict([...])``), which runs their
body with no request id, so ``report_progress`` sends nothing anywhere.
"""

from __future__ import annotations

import base64
import email
import http.server
import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from celery.schedules import crontab
from PIL import Image

import pushserver.worker
from pushserver.worker import ThreadsPoolEventsFix, progress_fields
from workers import app, tasks
from workers.app import build_config, nightly_report_schedule
from workers.emails import SmtpServer, parse_smtp_url, recipient_for, render_welcome_email, send_smtp, write_eml
from workers.images import decode_image, draw_watermark, generate_test_image, process_image, resize_to_width
from workers.model import predict_iris, validate_features
from workers.reporting import archive_after, day_pipeline
from workers.threads_pool import WAKEUP_INTERVAL, ThreadsPoolWakeup
from workers.webhooks import post_json, validate_url, validate_urls

TASK_NAMES = {
    "workers.tasks.send_welcome_email",
    "workers.tasks.resize_and_watermark",
    "workers.tasks.predict",
    "workers.tasks.nightly_report",
    "workers.tasks.deliver_webhook",
    "workers.tasks.fanout_webhooks",
    "workers.tasks.demo_progress",
    "workers.tasks.fail",
    "workers.tasks.flaky",
    "workers.tasks.sleep",
}


@pytest.fixture(autouse=True)
def _folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every file a task writes in the test's temporary folder; ignore the caller's SMTP and retry settings."""
    for name in ("OUTBOX_DIR", "MEDIA_DIR", "REPORTS_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    monkeypatch.delenv("SMTP_URL", raising=False)
    monkeypatch.delenv("WORKERS_RETRY_BACKOFF", raising=False)
    # A test that simulates a broker failure must not pause progress for the next ones.
    monkeypatch.setattr(pushserver.worker, "_event_breaker", pushserver.worker._Breaker())
    monkeypatch.setattr(pushserver.worker, "_backend_breaker", pushserver.worker._Breaker())


# --- The Celery app ------------------------------------------------------


def test_task_names_are_the_contract() -> None:
    assert TASK_NAMES <= set(app.tasks)


def test_config_defaults_turn_late_acks_on() -> None:
    conf = build_config({})
    assert conf["broker_url"] == "redis://127.0.0.1:6379/0"
    assert conf["result_backend"] == "redis://127.0.0.1:6379/1"
    for flag in ("task_acks_late", "task_reject_on_worker_lost"):
        assert conf[flag] is True, flag
    assert conf["worker_prefetch_multiplier"] == 1
    # A result stored while Redis is down is retried, not lost (scenario 1 in docs/reliability.md).
    assert conf["result_backend_always_retry"] is True
    assert conf["result_backend_max_retries"] == 30
    assert conf["broker_transport_options"] == {"visibility_timeout": 3600}
    assert conf["result_backend_transport_options"] == {"visibility_timeout": 3600}
    assert conf["result_expires"] == timedelta(days=1)
    assert conf["timezone"] == "UTC"


def test_the_example_app_turns_events_on_with_pushserver_worker() -> None:
    # As a user's app would: enable_events, not settings copied by hand.
    for flag in ("worker_send_task_events", "task_send_sent_event", "task_track_started"):
        assert flag not in build_config({}), flag
        assert app.conf[flag] is True, flag
    assert getattr(app, "_pushserver_events_enabled", False)


def test_config_reads_the_environment() -> None:
    conf = build_config(
        {
            "CELERY_BROKER_URL": "redis://h:1/9",
            "CELERY_RESULT_BACKEND": "redis://h:1/10",
            "CELERY_VISIBILITY_TIMEOUT": "5",
        }
    )
    assert conf["broker_url"] == "redis://h:1/9"
    assert conf["result_backend"] == "redis://h:1/10"
    assert conf["broker_transport_options"]["visibility_timeout"] == 5


def test_config_reads_transport_options_as_json_and_the_events_switch() -> None:
    conf = build_config(
        {
            "CELERY_BROKER_URL": "sentinel://s1:26379/0;sentinel://s2:26379/0",
            "CELERY_BROKER_TRANSPORT_OPTIONS": '{"master_name": "mymaster"}',
            "CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS": '{"master_name": "mymaster", "sentinel_kwargs": {"password": "p"}}',
            "CELERY_WORKER_SEND_TASK_EVENTS": "0",
        }
    )
    assert conf["broker_transport_options"] == {"visibility_timeout": 3600, "master_name": "mymaster"}
    assert conf["result_backend_transport_options"]["sentinel_kwargs"] == {"password": "p"}
    assert conf["worker_send_task_events"] is False
    with pytest.raises(ValueError, match="CELERY_BROKER_TRANSPORT_OPTIONS must be a JSON object"):
        build_config({"CELERY_BROKER_TRANSPORT_OPTIONS": "master_name=m"})
    with pytest.raises(ValueError, match="CELERY_WORKER_SEND_TASK_EVENTS"):
        build_config({"CELERY_WORKER_SEND_TASK_EVENTS": "maybe"})


def test_nightly_report_runs_at_midnight_utc_unless_an_interval_is_set() -> None:
    schedule = nightly_report_schedule({})
    assert isinstance(schedule, crontab)
    assert schedule.hour == {0} and schedule.minute == {0}
    assert nightly_report_schedule({"NIGHTLY_REPORT_EVERY": "30"}) == timedelta(seconds=30)
    entry = build_config({})["beat_schedule"]["nightly-report"]
    assert entry["task"] == "workers.tasks.nightly_report"


@pytest.mark.parametrize("value", ["soon", "0", "-5", "nan"])
def test_a_bad_interval_fails_loudly(value: str) -> None:
    with pytest.raises(ValueError, match="NIGHTLY_REPORT_EVERY"):
        nightly_report_schedule({"NIGHTLY_REPORT_EVERY": value})


class _FakeHub:
    def __init__(self) -> None:
        self.timers: list[Any] = []

    def call_repeatedly(self, delay: float, callback: Any) -> Any:
        entry = SimpleNamespace(delay=delay, cancelled=False)
        entry.cancel = lambda: setattr(entry, "cancelled", True)
        self.timers.append(entry)
        return entry


def _consumer(pool: Any) -> SimpleNamespace:
    return SimpleNamespace(
        pool=pool, hub=_FakeHub(), event_dispatcher=SimpleNamespace(buffer_group=frozenset({"task"}))
    )


def test_threads_pool_steps_are_installed_in_the_worker() -> None:
    assert ThreadsPoolWakeup in app.steps["consumer"]
    assert (ThreadsPoolEventsFix in app.steps["consumer"]) == pushserver.worker.needs_threads_pool_events_fix()


def test_threads_pool_wakes_the_loop() -> None:
    from celery.concurrency.thread import TaskPool

    pool = TaskPool(limit=1)
    try:
        consumer = _consumer(pool)
        step = ThreadsPoolWakeup(consumer)
        step.start(consumer)
        (timer,) = consumer.hub.timers
        assert timer.delay == WAKEUP_INTERVAL
        step.start(consumer)  # a consumer restart replaces the timer, never stacks them
        assert timer.cancelled and len(consumer.hub.timers) == 2
        step.stop(consumer)
        assert consumer.hub.timers[1].cancelled
    finally:
        pool.executor.shutdown()


def test_other_pools_get_no_timer() -> None:
    consumer = _consumer(pool=object())
    ThreadsPoolWakeup(consumer).start(consumer)
    assert consumer.hub.timers == []


# --- report_progress in the example tasks ---------------------------------


def test_progress_fields_turn_numpy_numbers_into_json_numbers() -> None:
    import numpy as np

    fields = progress_fields(np.int64(2), np.float64(4.0))
    assert json.dumps(fields) == '{"current": 2.0, "total": 4.0, "message": null}'


def test_demo_progress_counts_its_steps() -> None:
    assert tasks.demo_progress(3, 0) == 3
    with pytest.raises(ValueError):
        tasks.demo_progress(-1, 0)


def test_example_tasks_have_bounded_durations() -> None:
    # Arguments that would hold a worker slot longer than MAX_TASK_SECONDS are refused at once.
    started = time.monotonic()
    with pytest.raises(ValueError, match="steps \\* delay must be at most 600"):
        tasks.demo_progress(1000, 60)
    with pytest.raises(ValueError, match="steps must be an integer from 0 to 10000"):
        tasks.demo_progress(10**9, 0)
    with pytest.raises(ValueError, match="delay must be at most 60"):
        tasks.demo_progress(1, 3600)
    with pytest.raises(ValueError, match="seconds must be at most 600"):
        tasks.sleep(601)
    with pytest.raises(ValueError, match="failures must be an integer from 0 to 10"):
        tasks.flaky(1000)
    with pytest.raises(ValueError, match="countdown must be at most 60"):
        tasks.flaky(1, 3600)
    with pytest.raises(ValueError, match="steps_delay must be at most 60"):
        tasks.resize_and_watermark(steps_delay=61)
    assert time.monotonic() - started < 1


# --- Email ---------------------------------------------------------------


def test_welcome_email_has_text_and_html_parts() -> None:
    message = render_welcome_email("u<42>", "ada@example.org")
    assert message["To"] == "ada@example.org"
    assert message["Subject"] == "Welcome to celery-pushserver"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "Hello u<42>," in text
    assert "Hello u&lt;42&gt;," in html  # escaped: a user id is not markup


def test_welcome_email_greets_the_user_by_name() -> None:
    message = render_welcome_email("3f2a", name="ada<x>")
    assert "Hello ada<x>," in message.get_body(("plain",)).get_content()
    assert "Hello ada&lt;x&gt;," in message.get_body(("html",)).get_content()
    assert "Hello 3f2a," in render_welcome_email("3f2a", name="two\nlines").get_body(("plain",)).get_content()


def test_welcome_email_without_an_address_goes_to_a_reserved_domain() -> None:
    assert recipient_for("ab c/1", None) == "user-ab-c-1@example.com"


@pytest.mark.parametrize("address", ["nope", "a@b", "x@example.com\r\nBcc: all@example.com", 42])
def test_welcome_email_refuses_bad_addresses(address: Any) -> None:
    with pytest.raises(ValueError):
        render_welcome_email("u1", address)


@pytest.mark.parametrize("user_id", ["", "  ", None, "a\nb", "x" * 129])
def test_welcome_email_refuses_bad_user_ids(user_id: Any) -> None:
    with pytest.raises(ValueError):
        render_welcome_email(user_id)


def test_eml_file_round_trips(tmp_path: Path) -> None:
    path = write_eml(render_welcome_email("u1"), tmp_path / "outbox", "welcome-u1")
    assert path.name == "welcome-u1.eml"
    parsed = email.message_from_bytes(path.read_bytes())
    assert parsed["To"] == "user-u1@example.com"
    assert [p.get_content_type() for p in parsed.walk()][1:] == ["text/plain", "text/html"]


def test_send_smtp_to_a_closed_port_raises_oserror() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(OSError):
        send_smtp(render_welcome_email("u1"), SmtpServer("127.0.0.1", port), timeout=2)


def test_smtp_url_parsing() -> None:
    assert parse_smtp_url("smtp://mail.local:2525") == SmtpServer("mail.local", 2525)
    assert parse_smtp_url("smtp://mail.local") == SmtpServer("mail.local", 25)
    for bad in ("http://mail.local", "smtp://", "smtp://u:p@mail.local:25"):
        with pytest.raises(ValueError):
            parse_smtp_url(bad)


# --- Images --------------------------------------------------------------


def _b64(image: Image.Image, fmt: str) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def test_pipeline_on_a_generated_image_reports_every_step(tmp_path: Path) -> None:
    steps: list[tuple[int, int, str]] = []
    result = process_image(None, 320, "hello", tmp_path, "out", lambda *step: steps.append(step))
    assert [s[:2] for s in steps] == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]
    assert all(message for _, _, message in steps)
    assert (result.width, result.height) == (320, 200)  # 1280x800 keeps its 16:10 aspect
    with Image.open(result.path) as written:
        assert written.format == "JPEG" and written.size == (320, 200)
    assert result.bytes == Path(result.path).stat().st_size


def test_watermark_changes_the_pixels_it_covers() -> None:
    plain = Image.new("RGB", (400, 100), "black")
    marked = draw_watermark(plain, "celery")
    assert marked.size == plain.size and marked.mode == "RGB"
    assert marked.getbbox() is not None  # something was drawn on the black image
    assert draw_watermark(plain, "") is plain


def test_transparent_png_stays_png(tmp_path: Path) -> None:
    source = Image.new("RGBA", (200, 100), (255, 0, 0, 0))
    result = process_image(_b64(source, "PNG"), 50, "wm", tmp_path, "alpha")
    assert result.path.endswith(".png") and (result.width, result.height) == (50, 25)


def test_data_urls_and_palette_images_are_accepted() -> None:
    source = Image.new("P", (30, 20))
    image = decode_image("data:image/gif;base64," + _b64(source, "GIF"))
    assert image.mode == "RGB" and image.size == (30, 20)


def test_resize_keeps_aspect_ratio() -> None:
    assert resize_to_width(Image.new("RGB", (1000, 333)), 100).size == (100, 33)
    assert resize_to_width(Image.new("RGB", (1000, 1)), 10).size == (10, 1)


def test_exif_orientation_is_applied() -> None:
    source = Image.new("RGB", (40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buffer = io.BytesIO()
    source.save(buffer, format="JPEG", exif=exif)
    assert decode_image(base64.b64encode(buffer.getvalue()).decode()).size == (20, 40)


@pytest.mark.parametrize(
    ("image_b64", "match"),
    [
        ("not base64!!", "not valid base64"),
        (base64.b64encode(b"hello, not an image").decode(), "readable image"),
        ("", "non-empty"),
    ],
)
def test_bad_image_data_is_a_clear_value_error(image_b64: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        tasks.resize_and_watermark(image_b64)


@pytest.mark.parametrize(
    "kwargs", [{"width": 0}, {"width": 10_000}, {"width": "640"}, {"watermark": "w" * 101}, {"steps_delay": -1}]
)
def test_bad_image_options_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        tasks.resize_and_watermark(None, **kwargs)


def test_resize_and_watermark_task_returns_the_contract(tmp_path: Path) -> None:
    result = tasks.resize_and_watermark(_b64(generate_test_image(200, 100), "PNG"), width=64)
    assert set(result) == {"path", "width", "height", "bytes"}
    assert (result["width"], result["height"]) == (64, 32)
    assert Path(result["path"]).parent == tmp_path / "media_dir"


# --- Model ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("features", "label"),
    [([5.1, 3.5, 1.4, 0.2], "setosa"), ([6.0, 2.7, 4.1, 1.0], "versicolor"), ([6.7, 3.0, 5.2, 2.3], "virginica")],
)
def test_predict_classifies_iris_samples(features: list[float], label: str) -> None:
    result = tasks.predict(features)
    assert result["label"] == label
    assert set(result["probabilities"]) == {"setosa", "versicolor", "virginica"}
    assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    json.dumps(result)


@pytest.mark.parametrize(
    "features",
    [
        [1, 2, 3],
        [1, 2, 3, 4, 5],
        "1,2,3,4",
        [1, 2, "3", 4],
        [1, 2, None, 4],
        [1, 2, float("nan"), 4],
        [True, 2, 3, 4],
        None,
    ],
)
def test_predict_refuses_bad_features(features: Any) -> None:
    with pytest.raises(ValueError):
        predict_iris(features)


def test_integer_features_are_fine() -> None:
    assert validate_features([5, 3, 1, 0]) == [5.0, 3.0, 1.0, 0.0]


# --- Reports and diagnostics ---------------------------------------------


def test_archive_age_defaults_to_30_days_and_is_configurable() -> None:
    assert archive_after({}) == timedelta(days=30)
    assert archive_after({"ARCHIVE_AFTER_DAYS": "7"}) == timedelta(days=7)
    assert archive_after({"ARCHIVE_AFTER_DAYS": "7"}, override=0.5) == timedelta(hours=12)
    for bad in ("-1", "soon", "nan", "inf"):
        with pytest.raises(ValueError, match="ARCHIVE_AFTER_DAYS"):
            archive_after({"ARCHIVE_AFTER_DAYS": bad})
    with pytest.raises(ValueError, match="ARCHIVE_AFTER_DAYS"):
        archive_after({}, override=True)  # type: ignore[arg-type]


def test_the_day_pipeline_matches_the_window_and_groups_by_task_and_state() -> None:
    since, until = datetime(2026, 1, 1, tzinfo=timezone.utc), datetime(2026, 1, 2, tzinfo=timezone.utc)
    match, group, sort = day_pipeline(since, until)
    assert match == {"$match": {"created_at": {"$gte": since, "$lt": until}}}
    assert group["$group"]["count"] == {"$sum": 1}
    assert "$task" in json.dumps(group) and "$state" in json.dumps(group)
    assert sort == {"$sort": {"_id": 1}}


def test_retry_backoff_doubles_from_the_configured_base(monkeypatch: pytest.MonkeyPatch) -> None:
    assert [tasks._backoff(n) for n in range(3)] == [1.0, 2.0, 4.0]
    monkeypatch.setenv("WORKERS_RETRY_BACKOFF", "0.1")
    assert [tasks._backoff(n) for n in range(3)] == pytest.approx([0.1, 0.2, 0.4])


def test_fail_and_sleep() -> None:
    with pytest.raises(RuntimeError, match="boom"):
        tasks.fail("boom")
    assert tasks.sleep(0) == 0
    with pytest.raises(ValueError):
        tasks.sleep(-1)


def test_flaky_succeeds_when_no_failures_are_asked_for() -> None:
    assert tasks.flaky(0) == {"retries": 0}
    # Called directly there is no broker to retry through: the error surfaces.
    with pytest.raises(RuntimeError, match="flaky failure 1 of 1"):
        tasks.flaky(1)


# --- Webhooks ------------------------------------------------------------


class _Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((self.path, self.headers["Content-Type"], json.loads(body)))  # type: ignore[attr-defined]
        self.send_response(500 if self.path == "/broken" else 204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[http.server.HTTPServer]:
    # Deliveries to loopback are refused unless allowed, as a local demo receiver is.
    monkeypatch.setenv("WEBHOOK_ALLOWED_NETWORKS", "127.0.0.1/32")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_deliver_webhook_posts_json(hook_server: http.server.HTTPServer) -> None:
    url = f"http://127.0.0.1:{hook_server.server_address[1]}/hook"
    assert tasks.deliver_webhook(url, {"event": "done", "n": 1}) == 204
    assert hook_server.received == [("/hook", "application/json", {"event": "done", "n": 1})]  # type: ignore[attr-defined]


def test_an_http_error_status_is_returned_not_retried(hook_server: http.server.HTTPServer) -> None:
    url = f"http://127.0.0.1:{hook_server.server_address[1]}/broken"
    assert post_json(url, b"{}") == 500


def test_a_refused_connection_raises_for_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_ALLOWED_NETWORKS", "127.0.0.1/32")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(OSError):
        tasks.deliver_webhook(f"http://127.0.0.1:{port}/", {})


def test_url_validation() -> None:
    assert validate_url("https://example.com/x") == "https://example.com/x"
    for bad in ("ftp://example.com", "example.com", "http://", "javascript:alert(1)", 7):
        with pytest.raises(ValueError):
            validate_url(bad)
    with pytest.raises(ValueError, match="ftp://a"):
        validate_urls(["http://ok.example", "ftp://a"])
    with pytest.raises(ValueError):
        validate_urls([])


def test_fanout_refuses_bad_input_before_dispatching() -> None:
    with pytest.raises(ValueError):
        tasks.fanout_webhooks(["file:///etc/passwd"])
    with pytest.raises(ValueError):
        tasks.fanout_webhooks(["http://ok.example"], payload=["not", "a", "dict"])
    with pytest.raises(ValueError):
        tasks.deliver_webhook("http://ok.example", {"x": object()})
