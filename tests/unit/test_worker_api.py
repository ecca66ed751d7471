"""Unit tests of ``pushserver.worker``: report_progress's arguments and failures, enable_events's settings.

The real worker and server around them are in tests/integration/test_worker_package.py.
"""

from __future__ import annotations

import subprocess
import sys
import time
from fractions import Fraction
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery

import pushserver.worker
from pushserver.worker import (
    EVENT_SETTINGS,
    MAX_MESSAGE_LENGTH,
    PROGRESS_EVENT,
    ThreadsPoolEventsFix,
    enable_events,
    needs_threads_pool_events_fix,
    progress_fields,
    report_progress,
)


@pytest.fixture(autouse=True)
def _fresh_breakers(monkeypatch: pytest.MonkeyPatch) -> None:
    # A test that simulates a broker failure must not pause progress for the next ones.
    monkeypatch.setattr(pushserver.worker, "_event_breaker", pushserver.worker._Breaker())
    monkeypatch.setattr(pushserver.worker, "_backend_breaker", pushserver.worker._Breaker())


# --- importing it ------------------------------------------------------------


def test_importing_it_loads_none_of_the_server_dependencies() -> None:
    # A fresh interpreter: this test process has long imported the server.
    code = (
        "import sys, pushserver.worker\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in {'aiohttp', 'socketio', 'engineio', 'pymongo'})\n"
        "print(','.join(heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"importing pushserver.worker imported {done.stdout.strip()}"
    # And the check itself can fail: the server does import them.
    code = code.replace("pushserver.worker", "pushserver.server")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "aiohttp" in done.stdout, done.stderr


class FakeTask:
    """Stands in for a bound task: records what report_progress asks of it."""

    def __init__(self, task_id: str | None = "task-1", fail_with: Exception | None = None) -> None:
        self.request = SimpleNamespace(id=task_id)
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.states: list[tuple[str, dict[str, Any]]] = []
        self.fail_with = fail_with
        self.attempts = 0

    def send_event(self, type_: str, retry: bool = True, retry_policy: Any = None, **fields: Any) -> None:
        self.attempts += 1
        if self.fail_with:
            raise self.fail_with
        self.events.append((type_, fields))

    def update_state(self, task_id: Any = None, state: Any = None, meta: Any = None, **kwargs: Any) -> None:
        if self.fail_with:
            raise self.fail_with
        self.states.append((state, meta))


def test_report_progress_sends_one_task_progress_event_and_stores_the_state() -> None:
    task = FakeTask()
    report_progress(task, 3, 10, "resizing", stage="resize")
    assert task.events == [(PROGRESS_EVENT, {"current": 3, "total": 10, "message": "resizing", "stage": "resize"})]
    assert task.states == [("PROGRESS", {"current": 3, "total": 10, "message": "resizing", "stage": "resize"})]


def test_report_progress_without_total_or_message() -> None:
    task = FakeTask()
    report_progress(task, 0.5)
    assert task.events == [(PROGRESS_EVENT, {"current": 0.5, "total": None, "message": None})]


def test_report_progress_truncates_long_messages() -> None:
    task = FakeTask()
    report_progress(task, 1, 2, "x" * 500)
    message = task.events[0][1]["message"]
    assert len(message) == MAX_MESSAGE_LENGTH and message.endswith("…")


def test_report_progress_swallows_broker_errors(caplog: pytest.LogCaptureFixture) -> None:
    task = FakeTask(fail_with=ConnectionError("broker went away"))
    report_progress(task, 1, 2, "still running")  # must not raise
    assert "could not send task-progress" in caplog.text


def test_after_a_broker_failure_progress_is_skipped_for_a_while(monkeypatch: pytest.MonkeyPatch) -> None:
    # With the broker down each send blocks for seconds: one stall, then skip.
    monkeypatch.setattr(pushserver.worker, "_event_breaker", pushserver.worker._Breaker(pause=0.2))
    task = FakeTask(fail_with=ConnectionError("broker went away"))
    report_progress(task, 1, 3)
    report_progress(task, 2, 3)
    assert task.attempts == 1
    task.fail_with = None
    time.sleep(0.25)
    report_progress(task, 3, 3)
    assert task.attempts == 2 and task.events[0][1]["current"] == 3


def test_report_progress_outside_a_worker_sends_nothing() -> None:
    task = FakeTask(task_id=None)
    report_progress(task, 1, 2)
    assert task.events == [] and task.states == []


@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [
        ((-1,), {}, ValueError),
        ((3, 2), {}, ValueError),
        ((1, -2), {}, ValueError),
        ((float("nan"),), {}, ValueError),
        ((float("inf"), None), {}, ValueError),
        ((10**400,), {}, ValueError),
        (("3",), {}, TypeError),
        ((True,), {}, TypeError),
        ((1, 2, 42), {}, TypeError),
        ((1,), {"uuid": "other"}, ValueError),
        ((1,), {"retry": False}, ValueError),
        ((1,), {"blob": object()}, TypeError),
    ],
)
def test_progress_arguments_are_validated(args: tuple, kwargs: dict, error: type[Exception]) -> None:
    task = FakeTask()
    with pytest.raises(error):
        report_progress(task, *args, **kwargs)
    assert task.events == []


def test_progress_fields_turn_other_real_numbers_into_json_numbers() -> None:
    # numbers.Real that kombu's JSON encoder cannot write (numpy scalars, Fraction) become floats.
    assert progress_fields(Fraction(1, 2), Fraction(2)) == {"current": 0.5, "total": 2.0, "message": None}


def test_report_progress_adds_meta_fields_to_event_and_state() -> None:
    task = FakeTask()
    report_progress(task, 1, 4, "tiles", tile="a1", size=[256, 256])
    assert task.events[0][1]["tile"] == "a1" and task.events[0][1]["size"] == [256, 256]
    assert task.states[0][1]["tile"] == "a1"


# --- enable_events -------------------------------------------------------------


def _flags(app: Celery) -> dict[str, Any]:
    return {key: app.conf[key] for key in EVENT_SETTINGS}


ALL_ON = {"worker_send_task_events": True, "task_send_sent_event": True, "task_track_started": True}


def test_enable_events_turns_the_three_settings_on() -> None:
    app = Celery("t", set_as_current=False)
    assert not any(_flags(app).values())  # Celery's defaults: all off
    assert enable_events(app) is app
    assert _flags(app) == ALL_ON


def test_enable_events_on_an_already_configured_app() -> None:
    app = Celery("t", set_as_current=False)
    app.conf.broker_url = "memory://"
    assert app.conf.broker_url == "memory://" and app.configured
    enable_events(app)
    assert _flags(app) == ALL_ON


class _SentEventOff:
    task_send_sent_event = False


class _OldNames:
    CELERY_TRACK_STARTED = False


class _DjangoStyle:
    CELERY_WORKER_SEND_TASK_EVENTS = False


@pytest.mark.parametrize(
    ("configure", "off"),
    [
        # app.conf.update before enable_events
        (lambda app: app.conf.update(task_track_started=False), "task_track_started"),
        # a config module read after enable_events
        (lambda app: app.config_from_object(_SentEventOff), "task_send_sent_event"),
        # the pre-4.0 uppercase name
        (lambda app: app.config_from_object(_OldNames), "task_track_started"),
        # Django's namespace="CELERY"
        (lambda app: app.config_from_object(_DjangoStyle, namespace="CELERY"), "worker_send_task_events"),
    ],
    ids=["conf.update", "config_from_object", "old-name", "django-namespace"],
)
def test_enable_events_leaves_explicit_settings_alone(configure: Any, off: str) -> None:
    before, after = Celery("t", set_as_current=False), Celery("t", set_as_current=False)
    configure(before)
    enable_events(before)
    enable_events(after)
    configure(after)
    for app in (before, after):
        assert _flags(app) == {**ALL_ON, off: False}


def test_enable_events_after_a_config_module_on_a_configured_app() -> None:
    app = Celery("t", set_as_current=False)
    enable_events(app)
    assert _flags(app) == ALL_ON  # configured now
    app.config_from_object(_SentEventOff)  # reloads the configuration
    assert _flags(app) == {**ALL_ON, "task_send_sent_event": False}


def test_a_later_explicit_setting_wins() -> None:
    app = Celery("t", set_as_current=False)
    enable_events(app)
    app.conf.task_track_started = False
    assert app.conf.task_track_started is False


def test_enable_events_is_idempotent() -> None:
    app = Celery("t", set_as_current=False)
    enable_events(app)
    steps = set(app.steps["consumer"])
    receivers = len(app.on_after_configure.receivers)
    app.conf.task_track_started = False
    enable_events(app)
    assert app.conf.task_track_started is False  # a second call does not undo a later choice
    assert set(app.steps["consumer"]) == steps
    assert len(app.on_after_configure.receivers) == receivers


def test_the_threads_pool_fix_is_added_only_where_celery_needs_it() -> None:
    app = enable_events(Celery("t", set_as_current=False))
    assert (ThreadsPoolEventsFix in app.steps["consumer"]) == needs_threads_pool_events_fix()
    assert needs_threads_pool_events_fix((5, 3)) and needs_threads_pool_events_fix((5, 6))
    assert not needs_threads_pool_events_fix((5, 7)) and not needs_threads_pool_events_fix((6, 0))


def _consumer(pool: Any) -> SimpleNamespace:
    return SimpleNamespace(pool=pool, hub=None, event_dispatcher=SimpleNamespace(buffer_group=frozenset({"task"})))


def test_the_threads_pool_fix_sends_events_unbuffered() -> None:
    from celery.concurrency.thread import TaskPool

    pool = TaskPool(limit=1)
    try:
        consumer = _consumer(pool)
        ThreadsPoolEventsFix(consumer).start(consumer)
        assert consumer.event_dispatcher.buffer_group == frozenset()
    finally:
        pool.executor.shutdown()


def test_the_threads_pool_fix_leaves_other_pools_alone() -> None:
    consumer = _consumer(pool=object())
    ThreadsPoolEventsFix(consumer).start(consumer)
    assert consumer.event_dispatcher.buffer_group == frozenset({"task"})
