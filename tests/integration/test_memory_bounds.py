"""Bounded memory per task, measured on a real server: forged events with huge fields leave only what is forwarded."""

from __future__ import annotations

import json
import re
import time

import pytest

from dev.stack import http_get, rss_bytes, start_pushserver, wait_until
from tests.fuzz.stack import EventPublisher
from tests.support.stack import Server, Stack

pytestmark = pytest.mark.integration

TASKS = 2000
BATCH = 50


def ingested(url: str, event_type: str) -> float:
    body = http_get(url + "/metrics")[1].decode()
    match = re.search(rf'^pushserver_events_ingested_total{{type="{event_type}"}} ([0-9.e+]+)$', body, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def grow_with_forged_failures(stack: Stack, server: Server, name: str, extra: list[str]) -> float:
    """RSS growth (bytes per task) of a fresh server after TASKS forged task-failed events, each with a
    17 KB traceback, 2 KB args and kwargs and a 5 KB result: ~26 KB per event on the wire."""
    proc, url = start_pushserver(
        name, stack.broker, stack.backend, stack.log_dir, secret=server.secret, extra=extra, log_level="INFO"
    )
    publisher = EventPublisher(stack.broker)
    run = f"{name}-{time.time_ns()}"
    try:
        wait_until(lambda: json.loads(http_get(url + "/readyz")[1]).get("ready"), 20, "ready")
        # Warm up every path once, so the measurement is of the store, not of first-use allocations.
        publisher.publish(
            [
                publisher.task_event("task-failed", f"{run}-warm-{i}", exception="E()", traceback="t" * 17_000)
                for i in range(BATCH)
            ]
        )
        wait_until(lambda: ingested(url, "task-failed") == BATCH, 20, "the warm-up events")
        before = rss_bytes(proc.pid)
        for start in range(0, TASKS, BATCH):
            publisher.publish(
                [
                    publisher.task_event(
                        "task-failed",
                        f"{run}-{i}",
                        exception="ValueError('forged')",
                        traceback=f"{i}" + "t" * 17_000,
                        args=f"{i}" + "a" * 2_000,
                        kwargs=f"{i}" + "k" * 2_000,
                        result=f"{i}" + "r" * 5_000,
                        name="forged",
                    )
                    for i in range(start, start + BATCH)
                ]
            )
            # Paced like a busy worker, so transient buffers do not pile up and blur the measurement.
            wait_until(
                lambda wanted=BATCH + start + BATCH: ingested(url, "task-failed") >= wanted, 20, "the events ingested"
            )
        after = rss_bytes(proc.pid)
        ready = json.loads(http_get(url + "/readyz")[1])
        assert ready["tasks_in_memory"] >= TASKS
        return (after - before) / TASKS
    finally:
        publisher.close()
        proc.stop()


def test_forged_events_with_huge_fields_leave_only_what_is_forwarded(stack: Stack, server: Server):
    """The default policy forwards no traceback and no arguments, and --forward-results none no result:
    the store keeps none of them (before, each task held ~22 KB of them, cut but kept)."""
    per_task = grow_with_forged_failures(stack, server, "mem-bounded", ["--forward-results", "none"])
    assert per_task < 6_000, f"each task grew the server by {per_task:.0f} bytes"
