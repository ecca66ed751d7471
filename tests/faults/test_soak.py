"""Scenario 7: a soak. ``PUSHSERVER_SOAK_EVENTS`` task events (10 000 in CI, 100 000 with `make soak`)
through one server with ``PUSHSERVER_SOAK_CLIENTS`` (1 000) Socket.IO clients in a separate process.

The store is bounded small (``--max-tasks 1000``) so that it fills early:
after a warm-up (the first ``WARMUP`` of the events) resident memory must
stay flat, and file descriptors and asyncio tasks must come back to where
they were once the clients leave. Every task's SUCCESS must reach its client.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dev.stack import ROOT, wait_until
from dev.stack import rss_bytes
from tests.faults.conftest import FaultStack, env_number, metric, readyz, token
from tests.faults.load import Publisher, record_stream

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
    """Samples the server's RSS (from /proc) and ingested-event count (from /metrics) until stopped."""

    def __init__(self, pid: int, url: str) -> None:
        super().__init__(daemon=True)
        self.pid, self.url = pid, url
        self.samples: list[tuple[float, int, float]] = []  # (seconds, rss bytes, events ingested)
        self._stop_event = threading.Event()

    def run(self) -> None:
        t0 = time.monotonic()
        while not self._stop_event.wait(0.25):
            self.samples.append((time.monotonic() - t0, rss_bytes(self.pid), ingested(self.url)))

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)


def ingested(url: str) -> float:
    return sum(metric(url, "pushserver_events_ingested_total", type=t) for t in TASK_EVENT_TYPES)


@pytest.mark.soak
@pytest.mark.timeout(int(240 + 4 * EVENTS / RATE))
def test_soak_memory_flat_no_leaks_every_completion_delivered(stack: FaultStack, report, fault_dir: Path):
    stream = record_stream(stack.broker, EVENTS, fault_dir / "soak.tsv")
    tasks_file = fault_dir / "soak-tasks.json"
    tasks_file.write_text(json.dumps(stream.task_ids))
    proc, url = stack.server("soak-server", extra=["--max-tasks", str(MAX_TASKS)])
    baseline = readyz(url)["process"]

    load_log = open(stack.log_dir / "soak-clients.log", "ab")
    load = subprocess.Popen([sys.executable, "-m", "tests.faults.soak_clients", "--url", url, "--token", token(),
                             "--tasks", str(tasks_file), "--clients", str(CLIENTS)],
                            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=load_log,
                            text=True, start_new_session=True)
    sampler = Sampler(proc.pid, url)
    publisher = None
    try:
        ready = json.loads(load.stdout.readline() or "{}")  # type: ignore[union-attr]
        assert ready.get("clients") == CLIENTS and ready.get("refused_subscribes") == 0, ready
        with_clients = readyz(url)["process"]
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
        sampler.stop()
        load.stdin.write("close\n")  # type: ignore[union-attr]
        load.stdin.flush()  # type: ignore[union-attr]
        assert json.loads(load.stdout.readline() or "{}").get("closed")  # type: ignore[union-attr]
        load.wait(30)
        wait_until(lambda: readyz(url)["subscriptions"] == 0 and
                   metric(url, "pushserver_connected_clients") == 0, 60, "the clients to be gone")
        # python-engineio leaves each closed connection's ping task asleep for
        # up to its ping interval (25 s): wait that out before counting.
        left_at = time.monotonic()
        wait_until(lambda: readyz(url)["process"]["asyncio_tasks"] <= baseline["asyncio_tasks"] + 5, 45,
                   "the asyncio tasks of closed connections to end", 0.5)
        tasks_drained_s = time.monotonic() - left_at
        after_clients = readyz(url)["process"]
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
        events=stream.events, clients=CLIENTS, rate=RATE, publish_s=round(sent["seconds"], 1),
        rss_mb_warm=round(rss_warm / mb, 1), rss_mb_max_after_warm=round(rss_max_after / mb, 1),
        rss_mb_end=round(rss_end / mb, 1), tasks_in_memory=after_flow["tasks_in_memory"],
        fds=f"{baseline['open_fds']}/{with_clients['open_fds']}/{after_flow['process']['open_fds']}"
            f"/{after_clients['open_fds']}",
        asyncio_tasks=f"{baseline['asyncio_tasks']}/{with_clients['asyncio_tasks']}/"
                      f"{after_flow['process']['asyncio_tasks']}/{after_clients['asyncio_tasks']}",
        client_disconnects=summary.get("disconnects"), tasks_drained_s=round(tasks_drained_s, 1))
    report(f"7 soak: {stream.events} events, {CLIENTS} clients", summary.get("completions_expected", 0),
           summary.get("completions_delivered", -1), **figures)
    (stack.log_dir / "soak-rss.json").write_text(json.dumps({"figures": figures, "samples": samples}))

    assert summary["completions_delivered"] == summary["completions_expected"] == len(stream.task_ids)
    assert summary["disconnects"] == 0
    assert after_flow["tasks_in_memory"] <= MAX_TASKS
    assert rss_max_after - rss_warm <= RSS_SLACK, figures
    # Leaks: the same clients before and after the flow hold the same resources,
    # and everything they held is released when they leave.
    assert abs(after_flow["process"]["open_fds"] - with_clients["open_fds"]) <= 5, figures
    assert abs(after_flow["process"]["asyncio_tasks"] - with_clients["asyncio_tasks"]) <= 5, figures
    assert after_clients["open_fds"] <= baseline["open_fds"] + 5, figures
    assert after_clients["asyncio_tasks"] <= baseline["asyncio_tasks"] + 5, figures
    assert proc.alive()
