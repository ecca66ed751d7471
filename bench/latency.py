"""Latency: event timestamp -> client receipt, through a real pushserver, with N subscribed clients.

Per run: a fresh ``pushserver serve --insecure``; one process of N
python-socketio clients (latency_clients.py) subscribed, one watcher per task,
to every task id the run will use; then, for each rate, a publisher process
(latency_publisher.py, Celery's Dispatcher, one message per event) sends
``rate x duration`` events of those tasks. A short warm-up phase first is not
reported. Per phase we record the clients' p50/p95/p99/max, their CPU% (they
must not be the bottleneck), the server's CPU%, and check that every event
became exactly one update (none lost, none coalesced). The server runs under
gc_probe.py (the same CLI, with the garbage collector's passes timed), so a
latency tail can be set against the collector's pauses.
"""

from __future__ import annotations

import json
import math
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import (
    PYTHON,
    CpuMeter,
    ForeignLoad,
    PrivateRedis,
    PushServerProcess,
    cpu_seconds,
    log,
    tree_rss_bytes,
    wait_for,
    wait_quiet,
)
from bench.ingest import MAX_BACKLOG, Publisher
from bench.stream import build_streams
from dev.metrics import Sample, metric_sum

SPACING_S = 0.25  # two events of one task are at least this far apart (> 1 / progress-hz)
EVENTS_PER_TASK = 7
SETTLE_S = 2.0  # after the publisher is done, stop waiting when no update arrived for this long
MAX_DRAIN_S = 30.0


class ClientProcess:
    def __init__(self, url: str, n: int, tasks_file: Path) -> None:
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "bench.latency_clients", "--url", url, "--clients", str(n), "--tasks", str(tasks_file)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"client process exited ({self.proc.poll()})")
        return json.loads(line)

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
                self.proc.wait(30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def emit_latency(m0: list[Sample], m1: list[Sample]) -> dict[str, float]:
    """The server's own event->emit histogram over the phase: share of emits within each bucket bound (ms)."""
    name = "pushserver_event_to_emit_seconds_bucket"
    buckets = {}
    for sample in m1:
        if sample.name == name:
            le = sample.labels["le"]
            buckets[le] = sample.value - metric_sum(m0, name, le=le)
    total = buckets.get("+Inf", 0.0)
    if not total:
        return {}
    return {f"{float(le) * 1000:g}": round(100.0 * n / total, 2) for le, n in buckets.items() if le != "+Inf"}


def gc_pauses(log: Path | None, t0: float, t1: float) -> dict[str, Any] | None:
    """The server's garbage-collector passes of generation >= 1 (or > 1 ms) between t0 and t1."""
    if log is None:
        return None
    lines = log.read_text().splitlines() if log.exists() else []
    passes = [json.loads(line) for line in lines if line.strip()]
    passes = [p for p in passes if p.get("t") and t0 <= p["t"] <= t1]
    full = [p for p in passes if p["gen"] == 2]
    return {
        "passes": len(passes),
        "gen2": len(full),
        "max_ms": max((p["ms"] for p in passes), default=0.0),
        "gen2_max_ms": max((p["ms"] for p in full), default=0.0),
    }


def phase_plan(rate: float, duration: float) -> dict[str, Any]:
    events = int(round(rate * duration))
    slots = max(1, math.ceil(rate * SPACING_S))
    tasks = slots + math.ceil(events / EVENTS_PER_TASK) + 1
    return {"rate": rate, "events": events, "slots": slots, "task_ids": [str(uuid.uuid4()) for _ in range(tasks)]}


class PhasePublisher:
    """latency_publisher.py for one phase, started and waiting for the word."""

    def __init__(self, redis_server: PrivateRedis, plan: dict[str, Any], workdir: Path) -> None:
        tasks_file = workdir / f"tasks-{plan['rate']:g}-{uuid.uuid4().hex[:6]}.json"
        tasks_file.write_text(json.dumps(plan["task_ids"]))
        self.proc = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "bench.latency_publisher",
                "--broker",
                redis_server.url,
                "--rate",
                str(plan["rate"]),
                "--events",
                str(plan["events"]),
                "--slots",
                str(plan["slots"]),
                "--tasks",
                str(tasks_file),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "READY":
            raise RuntimeError("latency publisher failed to start")

    def run(self) -> dict[str, Any]:
        """Publish the whole phase; return the publisher's report."""
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.close()
        result = json.loads(self.proc.stdout.readline())
        self.proc.wait()
        return result


def run_baseline_phase(redis_server: PrivateRedis, plan: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """The same phase into a bare Celery Receiver: what Celery, kombu and Redis cost on their own."""
    since = redis_server.last_client_id()
    bare = subprocess.Popen(
        [PYTHON, "-m", "bench.bare_latency", "--broker", redis_server.url, "--expect", str(plan["events"])],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        publisher = PhasePublisher(redis_server, plan, workdir)  # starts while the receiver does
        wait_for(lambda: redis_server.pattern_subscribed_since(since), 20, "the bare receiver's subscription")
        wait_quiet()
        foreign = ForeignLoad()
        pub_result = publisher.run()
        foreign_cores = foreign.cores()
        out, _ = bare.communicate(timeout=30)
    finally:
        if bare.poll() is None:
            bare.kill()
            bare.wait()
    stats = json.loads(out.strip().splitlines()[-1])
    stats.update(
        {
            "rate": plan["rate"],
            "events": plan["events"],
            "missing_updates": plan["events"] - stats["received"],
            "publisher": pub_result,
            "foreign_cores": foreign_cores,
        }
    )
    return stats


def run_phase(
    redis_server: PrivateRedis, server: PushServerProcess, clients: ClientProcess, plan: dict[str, Any], workdir: Path
) -> dict[str, Any]:
    publisher = PhasePublisher(redis_server, plan, workdir)
    wait_quiet()
    m0 = server.metrics()
    clients.ask("start")
    server_cpu = CpuMeter(server.pid)
    foreign = ForeignLoad()
    t0 = time.time()
    pub_result = publisher.run()
    # Wait for the stragglers rather than cut them off: the slowest updates are
    # the tail being measured. Stop once every update arrived, or when none has
    # for SETTLE_S (then the rest is reported missing).
    deadline = time.monotonic() + MAX_DRAIN_S
    received, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        now_received = clients.ask("count")["received"]
        if now_received >= plan["events"]:
            break
        if now_received != received:
            received, last_change = now_received, time.monotonic()
        elif time.monotonic() - last_change > SETTLE_S:
            break
        time.sleep(0.1)
    server_cpu_pct = server_cpu.percent()
    server_cpu_s = cpu_seconds(server.pid) - server_cpu.c0
    foreign_cores = foreign.cores()
    stats = clients.ask("stop")
    t1 = time.time()
    m1 = server.metrics()
    stats["server_gc"] = gc_pauses(server.gc_log, t0, t1)
    stats["server_emit_within_ms_pct"] = emit_latency(m0, m1)

    def delta(name: str) -> int:
        return int(metric_sum(m1, name) - metric_sum(m0, name))

    stats.update(
        {
            "rate": plan["rate"],
            "events": plan["events"],
            "expected_updates": plan["events"],
            "missing_updates": plan["events"] - stats["received"],
            "server_events": delta("pushserver_events_ingested_total"),
            "server_updates": delta("pushserver_updates_emitted_total"),
            "coalesced": delta("pushserver_progress_coalesced_total"),
            "server_cpu_pct": server_cpu_pct,
            # The server process tree's CPU (event loop and receiver process) per update a client received.
            "server_cpu_us_per_update": 1e6 * server_cpu_s / max(stats["received"], 1),
            "foreign_cores": foreign_cores,
            "publisher": pub_result,
        }
    )
    return stats


def fill(server: PushServerProcess, redis_server: PrivateRedis, stream: dict[str, Any]) -> None:
    """Replay a recorded stream into the server and wait until it has merged all of it."""
    publisher = Publisher(redis_server, Path(stream["path"]), max_backlog=MAX_BACKLOG)
    t0 = time.monotonic()
    publisher.go()
    count = 0.0
    while count < stream["events"] and time.monotonic() - t0 < 300:
        time.sleep(0.2)
        count = metric_sum(server.metrics(), "pushserver_events_ingested_total")
    publisher.result()
    tasks = metric_sum(server.metrics(), "pushserver_tasks_in_memory")
    log(
        f"prefilled the server with {count:,.0f} events, {tasks:,.0f} tasks in memory, "
        f"RSS {tree_rss_bytes(server.pid) / 1e6:.0f} MB, in {time.monotonic() - t0:.1f}s"
    )


def run(
    redis_server: PrivateRedis,
    n_clients: int,
    rates: list[float],
    duration: float,
    runs: int,
    warmup_rate: float = 200.0,
    warmup_s: float = 2.0,
    baseline: bool = True,
    server_gc: str = "default",
    prefill: int = 0,
    baseline_rates: list[float] | None = None,
) -> dict[str, Any]:
    """``runs`` runs of every rate; with ``baseline``, the bare Receiver at ``baseline_rates`` (default: all)
    first in each run, so each pushserver figure has a baseline from the same run to be divided by."""
    out: dict[str, Any] = {
        "clients": n_clients,
        "rates": rates,
        "duration_s": duration,
        "spacing_s": SPACING_S,
        "runs": {str(r): [] for r in rates},
        "baseline": {str(r): [] for r in rates},
        "setup": [],
        "server_gc": server_gc,
    }
    env = {"BENCH_SERVER_GC": server_gc} if server_gc != "default" else {}
    workdir = Path(tempfile.mkdtemp(prefix="pushserver-bench-latency-"))
    out["prefill_tasks"] = prefill
    prefill_stream = None
    if prefill:
        # A long-running server holds up to --max-tasks tasks; their objects are
        # what a full garbage collection has to walk.
        prefill_stream = build_streams({"batched": prefill}, redis_server.url, redis_server.client, workdir)["batched"]
    for i in range(runs):
        plans = [phase_plan(warmup_rate, warmup_s)] + [phase_plan(r, duration) for r in rates]
        all_ids = [t for plan in plans for t in plan["task_ids"]]
        ids_file = workdir / f"all-{i}.json"
        ids_file.write_text(json.dumps(all_ids))
        if baseline:
            for rate in rates if baseline_rates is None else [r for r in rates if r in baseline_rates]:
                stats = run_baseline_phase(redis_server, phase_plan(rate, duration), workdir)
                out["baseline"][str(rate)].append(stats)
                log(
                    f"latency run {i + 1}/{runs} at {rate:g} ev/s, bare Receiver baseline: "
                    f"p50 {stats['p50_ms']:.2f} p95 {stats['p95_ms']:.2f} p99 {stats['p99_ms']:.2f} "
                    f"max {stats['max_ms']:.1f} ms; {stats['received']}/{stats['events']} events; "
                    f"CPU {stats.get('cpu_us_per_event') or float('nan'):.0f} µs/event; "
                    f"other processes {stats['foreign_cores']:.2f} cores"
                )
        with PushServerProcess(
            redis_server, gc_log=workdir / f"gc-{i}.jsonl", extra_env=env, background_stop=True
        ) as server:
            if prefill_stream is not None:
                fill(server, redis_server, prefill_stream)
            clients = ClientProcess(server.url, n_clients, ids_file)
            try:
                ready = clients.read()
                subs = metric_sum(server.metrics(), "pushserver_subscriptions")
                setup = {
                    "connected": ready["connected"],
                    "connect_seconds": ready["connect_seconds"],
                    "failures": ready["failures"],
                    "subscriptions": subs,
                    "server_rss_mb": tree_rss_bytes(server.pid) / 1e6,
                }
                out["setup"].append(setup)
                log(
                    f"latency run {i + 1}/{runs}: {ready['connected']} clients connected and "
                    f"{subs:.0f} subscriptions in {ready['connect_seconds']:.1f}s"
                    + (f"; {ready['failures']} FAILED: {ready['failed']}" if ready["failures"] else "")
                )
                for plan in plans:
                    stats = run_phase(redis_server, server, clients, plan, workdir)
                    if plan is plans[0]:
                        continue
                    out["runs"][str(plan["rate"])].append(stats)
                    log(
                        f"latency run {i + 1}/{runs} at {plan['rate']:g} ev/s: "
                        f"p50 {stats['p50_ms']:.2f} p95 {stats['p95_ms']:.2f} p99 {stats['p99_ms']:.2f} "
                        f"max {stats['max_ms']:.1f} ms; {stats['received']}/{stats['expected_updates']} "
                        f"updates, coalesced {stats['coalesced']}; CPU clients {stats['cpu_pct']:.0f}% "
                        f"server {stats['server_cpu_pct']:.0f}% ({stats['server_cpu_us_per_update']:.0f} µs/update); publisher "
                        f"{stats['publisher']['events_per_s']:.0f} ev/s; server GC "
                        f"{stats['server_gc']['passes']} passes (gen2 {stats['server_gc']['gen2']}), "
                        f"longest {stats['server_gc']['max_ms']:.1f} ms; client GC {stats['gc_passes']} "
                        f"passes, longest {stats['gc_max_ms']:.1f} ms; server event->emit within "
                        f"2/10 ms: {stats['server_emit_within_ms_pct'].get('2', float('nan')):.1f}%/"
                        f"{stats['server_emit_within_ms_pct'].get('10', float('nan')):.1f}%; other processes "
                        f"{stats['foreign_cores']:.2f} cores"
                    )
            finally:
                clients.close()
    return out
