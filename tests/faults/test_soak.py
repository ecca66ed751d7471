"""Scenario 7: a soak. ``PUSHSERVER_SOAK_EVENTS`` task events (10 000 in CI, 100 000 with `make soak`)
through one server with ``PUSHSERVER_SOAK_CLIENTS`` (1 000) Socket.IO clients in a separate process.

The store is bounded small (``--max-tasks 1000``) so that it fills early:
after a warm-up (the first ``WARMUP`` of the events) resident memory must
stay flat, and open file descriptors must come back to where they were once
the clients leave (both from prometheus-client's ``process_*`` figures on
/metrics). Every task's SUCCESS must reach its client.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dev.metrics import metric, metric_sum, scrape
from dev.stack import ROOT, readyz, wait_until
from tests.support.faults import env_number, token
from tests.support.load import Publisher, record_stream
from tests.support.stack import Stack

EVENTS = int(env_number("PUSHSERVER_SOAK_EVENTS", 10_000))
CLIENTS = int(env_number("PUSHSERVER_SOAK_CLIENTS", 1000))
RATE = env_number("PUSHSERVER_SOAK_RATE", 2000)  # events/s
MAX_TASKS = 1000
WARMUP = 0.2
#: RSS may grow this much after the warm-up (allocator noise, a GC generation
#: not yet collected); a leak of even 100 bytes per event grows 10 MB per 100k.
RSS_SLACK = 8 * 1024 * 1024
TASK_EVENT_TYPES = ("task-sent", "task-received", "task-started", "task-progress", "task-succeeded")


class Sampler(threading.Thread):
    """Samples the server's RSS and ingested-event count (both from /metrics) until stopped."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.samples: list[tuple[float, int, float]] = []  # (seconds, rss bytes, events ingested)
        self._stop_event = threading.Event()

    def run(self) -> None:
        t0 = time.monotonic()
        while not self._stop_event.wait(0.25):
            samples = scrape(self.url)
            rss = int(metric_sum(samples, "process_resident_memory_bytes"))
            events = sum(metric_sum(samples, "pushserver_events_ingested_total", type=t) for t in TASK_EVENT_TYPES)
            self.samples.append((time.monotonic() - t0, rss, events))

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)


def ingested(url: str) -> float:
    return sum(metric(url, "pushserver_events_ingested_total", type=t) for t in TASK_EVENT_TYPES)


def open_fds(url: str) -> int:
    """The server's open file descriptors, from prometheus-client's process collector."""
    return int(metric(url, "process_open_fds"))


@pytest.mark.soak
@pytest.mark.timeout(int(240 + 4 * EVENTS / RATE))
def test_soak_memory_flat_no_leaks_every_completion_delivered(stack: Stack, report, fault_dir: Path):
    stream = record_stream(stack.broker, EVENTS, fault_dir / "soak.tsv")
    tasks_file = fault_dir / "soak-tasks.json"
    tasks_file.write_text(json.dumps(stream.task_ids))
    server = stack.server("soak-server", extra=["--max-tasks", str(MAX_TASKS)])
    proc, url = server.proc, server.url
    baseline = open_fds(url)
    # Sockets the server may open after the baseline and keep, bounded and not leaks: the result
    # backend's connection pool grows with concurrent reads (snapshots on asyncio.to_thread's
    # executor, min(32, cores + 4) threads, and the SUCCESS-value reader's 2), and the receiver's
    # and reconciler's connections. Every client socket must still be gone.
    allowed = baseline + 5 + min(32, (os.cpu_count() or 1) + 4) + 2

    load_log = open(stack.log_dir / "soak-clients.log", "ab")
    load = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.faults.soak_clients",
            "--url",
            url,
            "--token",
            token(),
            "--tasks",
            str(tasks_file),
            "--clients",
            str(CLIENTS),
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=load_log,
        text=True,
        start_new_session=True,
    )
    sampler = Sampler(url)
    publisher = None
    try:
        ready = json.loads(load.stdout.readline() or "{}")  # type: ignore[union-attr]
        assert ready.get("clients") == CLIENTS and ready.get("refused_subscribes") == 0, ready
        with_clients = open_fds(url)
        sampler.start()
        publisher = Publisher(stack.broker, stream, stack.log_dir, rate=RATE)
        publisher.go()
        sent = publisher.result(timeout=60 + 3 * EVENTS / RATE)
        assert sent["messages_unheard"] == 0, sent
        wait_until(lambda: ingested(url) >= stream.events, 120, "the server to ingest every event", 0.2)
        load.stdin.write("finish 120\n")  # type: ignore[union-attr]
        load.stdin.flush()  # type: ignore[union-attr]
        summary = json.loads(load.stdout.readline() or "{}")  # type: ignore[union-attr]
        after_flow = readyz(url)
        after_flow_fds = open_fds(url)
        sampler.stop()
        load.stdin.write("close\n")  # type: ignore[union-attr]
        load.stdin.flush()  # type: ignore[union-attr]
        assert json.loads(load.stdout.readline() or "{}").get("closed")  # type: ignore[union-attr]
        load.wait(30)
        wait_until(
            lambda: readyz(url)["subscriptions"] == 0 and metric(url, "pushserver_connected_clients") == 0,
            60,
            "the clients to be gone",
        )
        left_at = time.monotonic()
        try:
            wait_until(lambda: open_fds(url) <= allowed, 45, "the closed connections' sockets to go", 0.5)
        except AssertionError:
            pass  # asserted below, with the figures
        fds_released_s = time.monotonic() - left_at
        after_clients = open_fds(url)
    finally:
        sampler.stop()
        if publisher is not None:
            publisher.stop()
        if load.poll() is None:
            load.kill()
            load.wait(10)
        load_log.close()

    samples = sampler.samples
    warm = next(i for i, (_, _, n) in enumerate(samples) if n >= WARMUP * stream.events)
    rss_warm = samples[warm][1]
    rss_max_after = max(rss for _, rss, _ in samples[warm:])
    rss_end = samples[-1][1]
    mb = 1024 * 1024
    figures = dict(
        events=stream.events,
        clients=CLIENTS,
        rate=RATE,
        publish_s=round(sent["seconds"], 1),
        rss_mb_warm=round(rss_warm / mb, 1),
        rss_mb_max_after_warm=round(rss_max_after / mb, 1),
        rss_mb_end=round(rss_end / mb, 1),
        tasks_in_memory=after_flow["tasks_in_memory"],
        fds=f"{baseline}/{with_clients}/{after_flow_fds}/{after_clients}",
        client_disconnects=summary.get("disconnects"),
        fds_released_s=round(fds_released_s, 1),
    )
    report(
        f"7 soak: {stream.events} events, {CLIENTS} clients",
        summary.get("completions_expected", 0),
        summary.get("completions_delivered", -1),
        **figures,
    )
    (stack.log_dir / "soak-rss.json").write_text(json.dumps({"figures": figures, "samples": samples}))

    assert summary["completions_delivered"] == summary["completions_expected"] == len(stream.task_ids)
    assert summary["disconnects"] == 0
    assert after_flow["tasks_in_memory"] <= MAX_TASKS
    assert rss_max_after - rss_warm <= RSS_SLACK, figures
    # Leaks: the same clients before and after the flow hold the same resources,
    # and everything they held is released when they leave.
    assert abs(after_flow_fds - with_clients) <= 5, figures
    assert after_clients <= allowed, figures
    assert proc.alive()
