"""Push vs polling: the same 1 000 clients subscribed over Socket.IO, or polling ``GET /tasks/{id}`` every 1 s.

    .venv/bin/python bench/polling.py                  # 2 runs, 1 000 clients, 3 rounds of 4 s
    .venv/bin/python bench/polling.py --runs 3 --clients 1000 --interval 1

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
(``total_commands_processed`` delta on the private Redis; "imposed" = minus
the ``none`` phase's rate), per-command breakdown (INFO commandstats), and the
notice latency (notice time - t, same machine clock): mean, p50, p99, max.
Prints markdown tables and writes bench/results/polling-latest.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (BENCH_DIR, PYTHON, CpuMeter, ForeignLoad, PrivateRedis, PushServerProcess, dump_json,  # noqa: E402
                    log, machine_info, metric_sum, percentile, server_code, spread, versions, wait_for)
from connections import ClientGroup  # noqa: E402

TARGET_LATENCY_RATIO = 100.0
TARGET_LOAD_RATIO = 0.1
DRAIN_S = 1.5  # after the last completion, time for the last notices (> poll interval)


def completer_start(redis_server: PrivateRedis, ids: list[str], workdir: Path) -> dict[str, Any]:
    path = workdir / f"start-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps(ids))
    out = subprocess.run([PYTHON, str(BENCH_DIR / "polling_completer.py"), "--broker", redis_server.url,
                          "--backend", redis_server.backend_url, "--ids", str(path), "--mode", "start"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


class Completer:
    def __init__(self, redis_server: PrivateRedis, rounds: list[list[str]], round_s: float, workdir: Path,
                 seed: int) -> None:
        path = workdir / f"rounds-{uuid.uuid4().hex[:6]}.json"
        path.write_text(json.dumps(rounds))
        self.proc = subprocess.Popen(
            [PYTHON, str(BENCH_DIR / "polling_completer.py"), "--broker", redis_server.url,
             "--backend", redis_server.backend_url, "--ids", str(path), "--mode", "complete",
             "--round-s", str(round_s), "--seed", str(seed)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "READY":
            raise RuntimeError("completer failed to start")

    def run(self) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.close()
        result = json.loads(self.proc.stdout.readline())
        self.proc.wait()
        return result


def redis_counts(redis_server: PrivateRedis) -> tuple[int, dict[str, int]]:
    info = redis_server.client.info("all")
    stats = {k[len("cmdstat_"):]: int(v["calls"]) for k, v in info.items() if k.startswith("cmdstat_")}
    return int(info["total_commands_processed"]), stats


def phase(mode: str, redis_server: PrivateRedis, server: PushServerProcess, ids: list[list[str]],
          args: argparse.Namespace, workdir: Path, seed: int) -> dict[str, Any]:
    """One phase; ``ids[c]`` are client c's tasks in order (the last never completes)."""
    n = len(ids)
    flat = [t for mine in ids for t in mine]
    rounds = [[mine[r] for mine in ids] for r in range(args.rounds)]
    tasks_file = workdir / f"tasks-{mode}-{seed}.json"
    tasks_file.write_text(json.dumps(flat))
    completer = Completer(redis_server, rounds, args.round_s, workdir, seed)
    group = None
    setup: dict[str, Any] = {}
    try:
        if mode != "none":
            group = ClientGroup(server.url, mode, n, args.procs, tasks_file, per_client=args.rounds + 1,
                                extra=["--interval", str(args.interval)])
            setup = group.summary()
            group.ask("start")
            if mode == "poll":
                time.sleep(max(2.0, 2 * args.interval))  # every poller past its random first phase
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
            time.sleep(DRAIN_S)
            for part in group.ask("notices"):
                notices.update(part)
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
    by_command = {k: (stats1.get(k, 0) - stats0.get(k, 0)) / window for k in stats1
                  if stats1.get(k, 0) - stats0.get(k, 0) > 0}
    result = {
        "mode": mode, "clients": n, "window_s": window, "completed": len(completed),
        "noticed": len(latencies), "missing": len(completed) - len(latencies) if mode != "none" else None,
        "mean_ms": sum(latencies) / len(latencies) if latencies else None,
        "p50_ms": percentile(latencies, 50) if latencies else None,
        "p99_ms": percentile(latencies, 99) if latencies else None,
        "max_ms": latencies[-1] if latencies else None,
        "http_requests_per_s": requests / window, "http_errors": errors,
        "mean_request_ms": (sum(b["mean_request_ms"] or 0 for b in c1) / len(c1)) if c1 and mode == "poll" else None,
        "redis_commands_per_s": (cmd1 - cmd0) / window,
        "redis_by_command_per_s": dict(sorted(by_command.items(), key=lambda kv: -kv[1])),
        "server_cpu_pct": server_cpu_pct,
        "client_cpu_pct": [round(c["cpu_pct"], 1) for c in c1],
        "updates_emitted": int(metric_sum(m1, "pushserver_updates_emitted_total")
                               - metric_sum(m0, "pushserver_updates_emitted_total")),
        "completer_lateness_p99_ms": done["lateness_p99_ms"],
        "foreign_cores": foreign_cores, "setup": setup,
    }
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"clients": args.clients, "interval_s": args.interval, "rounds": args.rounds,
                           "round_s": args.round_s, "procs": args.procs, "runs": []}
    workdir = Path(tempfile.mkdtemp(prefix="pushserver-bench-polling-"))
    with PrivateRedis() as redis_server:
        out["meta"] = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                       "machine": machine_info(), "versions": versions(redis_server.version()),
                       "server_code": server_code(), "command": " ".join(sys.argv)}
        for i in range(args.runs):
            with PushServerProcess(redis_server) as server:
                ids = {mode: [[str(uuid.uuid4()) for _ in range(args.rounds + 1)] for _ in range(args.clients)]
                       for mode in ("none", "push", "poll")}
                every = [t for per_mode in ids.values() for mine in per_mode for t in mine]
                before = metric_sum(server.metrics(), "pushserver_events_ingested_total")
                started = completer_start(redis_server, every, workdir)
                wait_for(lambda: metric_sum(server.metrics(), "pushserver_events_ingested_total")
                         >= before + started["events"], 60, "the server to merge the start events", 0.2)
                log(f"polling run {i + 1}/{args.runs}: {len(every):,} tasks started "
                    f"({started['events']:,} events in {started['seconds']:.1f}s)")
                results = {}
                for mode in ("none", "push", "poll"):
                    r = phase(mode, redis_server, server, ids[mode], args, workdir, seed=100 * i + len(results))
                    results[mode] = r
                    lat = (f"notice mean {r['mean_ms']:.1f} p50 {r['p50_ms']:.1f} p99 {r['p99_ms']:.1f} "
                           f"max {r['max_ms']:.1f} ms, {r['noticed']}/{r['completed']} noticed; "
                           if r["mean_ms"] is not None else "")
                    log(f"polling run {i + 1}/{args.runs} {mode}: {lat}HTTP {r['http_requests_per_s']:,.0f} req/s, "
                        f"Redis {r['redis_commands_per_s']:,.0f} cmd/s {dict(list(r['redis_by_command_per_s'].items())[:4])}; "
                        f"CPU server {r['server_cpu_pct']:.0f}% clients {r['client_cpu_pct']}; "
                        f"other processes {r['foreign_cores']:.2f} cores")
                base = results["none"]["redis_commands_per_s"]
                for mode in ("push", "poll"):
                    results[mode]["redis_imposed_per_s"] = results[mode]["redis_commands_per_s"] - base
                out["runs"].append(results)
    return out


def summarize(out: dict[str, Any]) -> dict[str, Any]:
    runs = out["runs"]

    def col(mode: str, key: str) -> Any:
        return spread(r[mode].get(key) for r in runs)

    lat_ratio = spread(r["poll"]["mean_ms"] / r["push"]["mean_ms"] for r in runs
                       if r["poll"]["mean_ms"] and r["push"]["mean_ms"])
    # imposed load, push over poll; a push load at or below the baseline's noise counts as 0
    load_ratio = spread(max(0.0, r["push"]["redis_imposed_per_s"]) / r["poll"]["redis_imposed_per_s"]
                        for r in runs if r["poll"]["redis_imposed_per_s"] > 0)
    return {"latency_ratio": lat_ratio, "load_ratio": load_ratio, "col": col}


def table(out: dict[str, Any]) -> str:
    s = summarize(out)
    col = s["col"]
    lines = ["| clients | HTTP req/s | Redis cmd/s (all) | Redis cmd/s imposed | notice mean | p50 | p99 | max | "
             "missed | server CPU |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    labels = {"none": "none (completions only)", "push": f"{out['clients']:,} subscribed",
              "poll": f"{out['clients']:,} polling every {out['interval_s']:g} s"}
    for mode in ("none", "push", "poll"):
        imposed = col(mode, "redis_imposed_per_s").fmt(0) if mode != "none" else "(baseline)"
        if mode == "none":
            lat = "| – | – | – | – | – "
        else:
            lat = (f"| {col(mode, 'mean_ms').fmt(1, ' ms')} | {col(mode, 'p50_ms').fmt(1, ' ms')} | "
                   f"{col(mode, 'p99_ms').fmt(1, ' ms')} | {col(mode, 'max_ms').fmt(1, ' ms')} | "
                   f"{sum(r[mode]['missing'] for r in out['runs'])} ")
        lines.append(f"| {labels[mode]} | {col(mode, 'http_requests_per_s').fmt(0)} | "
                     f"{col(mode, 'redis_commands_per_s').fmt(0)} | {imposed} {lat}| "
                     f"{col(mode, 'server_cpu_pct').fmt(0, '%')} |")
    lr, ld = s["latency_ratio"], s["load_ratio"]
    lines += ["", "| headline | measured | target | |", "|---|---:|---:|---|",
              f"| mean notice latency, polling / push | {lr.fmt(0, '×')} | ≥ {TARGET_LATENCY_RATIO:g}× | "
              f"{'met' if lr.values and lr.median >= TARGET_LATENCY_RATIO else '**missed**'} |",
              f"| Redis load imposed, push / polling | {ld.fmt(4)} | ≤ {TARGET_LOAD_RATIO:g} | "
              f"{'met' if ld.values and ld.median <= TARGET_LOAD_RATIO else '**missed**'} |"]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--interval", type=float, default=1.0, help="seconds between a poller's requests")
    p.add_argument("--rounds", type=int, default=3, help="tasks completed per client per phase")
    p.add_argument("--round-s", type=float, default=4.0)
    p.add_argument("--procs", type=int, default=2, help="client processes")
    args = p.parse_args()
    t0 = time.time()
    out = run(args)
    out["seconds"] = time.time() - t0
    dump_json(BENCH_DIR / "results" / "polling-latest.json", out)
    print(table(out))
    print(f"\n{args.runs} runs, median (min–max); each phase {args.rounds} x {args.round_s:g} s; "
          f"{out['seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
