"""Push vs polling: the same 1 000 clients subscribed over Socket.IO, or polling ``GET /tasks/{id}`` every 1 s.

    .venv/bin/python -m bench.run --only polling --clients 1000

No worker: polling_completer.py completes tasks as a worker would (the
result-backend record, then a ``task-succeeded`` event whose timestamp is the
completion moment t). Each client follows ``rounds + 1`` tasks in turn; in
round r every client's r-th task completes at a random moment of the round;
the last task never completes, so a poller never runs out of work and the
polling load stays steady. Every task is started (``task-received`` +
``task-started`` events) before the measurement, so the server holds it as
unfinished, as it would a running task.

Per run, against one fresh ``pushserver serve --insecure`` on a private Redis,
three phases with the same completion schedule (a fresh set of task ids each):

- ``none``: no client at all: the Redis load of the completions themselves and
  of the idle server (the baseline subtracted from the two others);
- ``push``: raw Socket.IO clients (raw_clients.py --mode push, in 2 processes),
  each subscribed to its tasks; notice = receipt of the SUCCESS ``task:update``;
- ``poll``: pollers (raw_clients.py --mode poll, 2 processes, keep-alive HTTP,
  random phase per client), each ``GET /tasks/{id}`` of its current task every
  ``--interval`` s; notice = the first response saying SUCCESS.

Measured over the completion window: HTTP requests/s served, Redis commands/s
(``total_commands_processed`` delta on the private Redis; "imposed" = the
phase's commands minus the ``none`` phase's, per second of the window: the
completions are the same), per-command breakdown (INFO commandstats), and the
notice latency (notice time - t, same machine clock): mean, p50, p99, max.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    PYTHON,
    CpuMeter,
    ForeignLoad,
    PrivateRedis,
    PushServerProcess,
    log,
    percentile,
    wait_for,
    wait_quiet,
)
from bench.connections import ClientGroup
from dev.metrics import metric_sum

MODES = ("none", "push", "poll")


@dataclass
class Plan:
    """What one run does: ``clients`` clients, each following ``rounds + 1`` tasks, one completed per round."""

    clients: int = 1000
    interval: float = 1.0  # seconds between a poller's requests
    rounds: int = 3
    round_s: float = 4.0
    procs: int = 2  # client processes

    def drain_s(self, mode: str) -> float:
        """After the last completion, time for the last notices to arrive (pollers: > one interval)."""
        return self.interval + 0.5 if mode == "poll" else 0.5


def completer_start(redis_server: PrivateRedis, ids: list[str], workdir: Path) -> dict[str, Any]:
    path = workdir / f"start-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps(ids))
    out = subprocess.run(
        [
            PYTHON,
            "-m",
            "bench.polling_completer",
            "--broker",
            redis_server.url,
            "--backend",
            redis_server.backend_url,
            "--ids",
            str(path),
            "--mode",
            "start",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


class Completer:
    def __init__(
        self, redis_server: PrivateRedis, rounds: list[list[str]], round_s: float, workdir: Path, seed: int
    ) -> None:
        path = workdir / f"rounds-{uuid.uuid4().hex[:6]}.json"
        path.write_text(json.dumps(rounds))
        self.proc = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "bench.polling_completer",
                "--broker",
                redis_server.url,
                "--backend",
                redis_server.backend_url,
                "--ids",
                str(path),
                "--mode",
                "complete",
                "--round-s",
                str(round_s),
                "--seed",
                str(seed),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def wait_ready(self) -> None:
        """Wait until the process is loaded (it loads while the clients connect)."""
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "READY":
            raise RuntimeError("completer failed to start")

    def run(self) -> dict[str, Any]:
        """Complete every round; return {task_id: completion time} and the schedule's lateness."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.close()
        result = json.loads(self.proc.stdout.readline())
        self.proc.wait()
        return result


def redis_counts(redis_server: PrivateRedis) -> tuple[int, dict[str, int]]:
    info = redis_server.client.info("all")
    stats = {k[len("cmdstat_") :]: int(v["calls"]) for k, v in info.items() if k.startswith("cmdstat_")}
    return int(info["total_commands_processed"]), stats


def phase(
    mode: str,
    redis_server: PrivateRedis,
    server: PushServerProcess,
    ids: list[list[str]],
    plan: Plan,
    workdir: Path,
    seed: int,
) -> dict[str, Any]:
    """One phase; ``ids[c]`` are client c's tasks in order (the last never completes)."""
    n = len(ids)
    flat = [t for mine in ids for t in mine]
    rounds = [[mine[r] for mine in ids] for r in range(plan.rounds)]
    tasks_file = workdir / f"tasks-{mode}-{seed}.json"
    tasks_file.write_text(json.dumps(flat))
    completer = Completer(redis_server, rounds, plan.round_s, workdir, seed)
    group = None
    setup: dict[str, Any] = {}
    try:
        if mode != "none":
            group = ClientGroup(
                server.url,
                mode,
                n,
                plan.procs,
                tasks_file,
                per_client=plan.rounds + 1,
                extra=["--interval", str(plan.interval)],
            )
            setup = group.summary()
            group.ask("start")
            if mode == "poll":
                time.sleep(plan.interval + 0.5)  # every poller past its random first request
        completer.wait_ready()
        m0 = server.metrics()
        c0 = group.ask("stats") if group else []
        cmd0, stats0 = redis_counts(redis_server)
        server_cpu = CpuMeter(server.pid)
        foreign = ForeignLoad()
        t0 = time.monotonic()
        done = completer.run()
        window = time.monotonic() - t0
        cmd1, stats1 = redis_counts(redis_server)
        c1 = group.ask("stats") if group else []
        server_cpu_pct = server_cpu.percent()
        foreign_cores = foreign.cores()
        m1 = server.metrics()
        notices: dict[str, float] = {}
        if group:
            # Until every completion is noticed, or the last one had time to be.
            deadline = time.monotonic() + plan.drain_s(mode)
            while True:
                for part in group.ask("notices"):
                    notices.update(part)
                if all(t in notices for t in done["completed"]) or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
    finally:
        if group is not None:
            group.close()
        if completer.proc.poll() is None:
            completer.proc.kill()
            completer.proc.wait()
    completed = done["completed"]
    latencies = sorted(1000.0 * (notices[t] - tc) for t, tc in completed.items() if t in notices)
    requests = sum(b["requests"] - a["requests"] for a, b in zip(c0, c1))
    errors = sum(b["request_errors"] - a["request_errors"] for a, b in zip(c0, c1))
    by_command = {
        k: (stats1.get(k, 0) - stats0.get(k, 0)) / window for k in stats1 if stats1.get(k, 0) - stats0.get(k, 0) > 0
    }
    result = {
        "mode": mode,
        "clients": n,
        "window_s": window,
        "completed": len(completed),
        "noticed": len(latencies),
        "missing": len(completed) - len(latencies) if mode != "none" else None,
        "mean_ms": sum(latencies) / len(latencies) if latencies else None,
        "p50_ms": percentile(latencies, 50) if latencies else None,
        "p99_ms": percentile(latencies, 99) if latencies else None,
        "max_ms": latencies[-1] if latencies else None,
        "http_requests_per_s": requests / window,
        "http_errors": errors,
        "mean_request_ms": (sum(b["mean_request_ms"] or 0 for b in c1) / len(c1)) if c1 and mode == "poll" else None,
        "redis_commands": cmd1 - cmd0,
        "redis_commands_per_s": (cmd1 - cmd0) / window,
        "redis_by_command_per_s": dict(sorted(by_command.items(), key=lambda kv: -kv[1])),
        "server_cpu_pct": server_cpu_pct,
        "client_cpu_pct": [round(c["cpu_pct"], 1) for c in c1],
        "updates_emitted": int(
            metric_sum(m1, "pushserver_updates_emitted_total") - metric_sum(m0, "pushserver_updates_emitted_total")
        ),
        "completer_lateness_p99_ms": done["lateness_p99_ms"],
        "foreign_cores": foreign_cores,
        "setup": setup,
    }
    return result


def measure(redis_server: PrivateRedis, plan: Plan, workdir: Path, i: int, runs: int) -> dict[str, Any]:
    """One run: a fresh server, every task started, then the three phases on it."""
    with PushServerProcess(redis_server, background_stop=True) as server:
        ids = {
            mode: [[str(uuid.uuid4()) for _ in range(plan.rounds + 1)] for _ in range(plan.clients)] for mode in MODES
        }
        every = [t for per_mode in ids.values() for mine in per_mode for t in mine]
        before = server.processed()
        started = completer_start(redis_server, every, workdir)
        wait_for(
            lambda: server.processed() >= before + started["events"], 60, "the server to merge the start events", 0.2
        )
        log(
            f"polling run {i + 1}/{runs}: {len(every):,} tasks started "
            f"({started['events']:,} events in {started['seconds']:.1f}s)"
        )
        results: dict[str, Any] = {}
        for mode in MODES:
            wait_quiet()
            r = phase(mode, redis_server, server, ids[mode], plan, workdir, seed=100 * i + len(results))
            results[mode] = r
            lat = (
                f"notice mean {r['mean_ms']:.1f} p50 {r['p50_ms']:.1f} p99 {r['p99_ms']:.1f} "
                f"max {r['max_ms']:.1f} ms, {r['noticed']}/{r['completed']} noticed; "
                if r["mean_ms"] is not None
                else ""
            )
            log(
                f"polling run {i + 1}/{runs} {mode}: {lat}HTTP {r['http_requests_per_s']:,.0f} req/s, "
                f"Redis {r['redis_commands_per_s']:,.0f} cmd/s {dict(list(r['redis_by_command_per_s'].items())[:4])}; "
                f"CPU server {r['server_cpu_pct']:.0f}% clients {r['client_cpu_pct']}; "
                f"other processes {r['foreign_cores']:.2f} cores"
            )
    # The phases complete the same number of tasks: what a phase's clients impose
    # is its command count minus that of the phase without clients.
    base = results["none"]["redis_commands"]
    for mode in ("push", "poll"):
        r = results[mode]
        r["redis_imposed_per_s"] = (r["redis_commands"] - base) / r["window_s"]
    return results


def run(redis_server: PrivateRedis, runs: int, plan: Plan) -> dict[str, Any]:
    out: dict[str, Any] = {
        "clients": plan.clients,
        "interval_s": plan.interval,
        "rounds": plan.rounds,
        "round_s": plan.round_s,
        "procs": plan.procs,
        "runs": [],
    }
    workdir = Path(tempfile.mkdtemp(prefix="pushserver-bench-polling-"))
    for i in range(runs):
        out["runs"].append(measure(redis_server, plan, workdir, i, runs))
    return out
