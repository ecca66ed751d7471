"""Reconnect storm: N clients re-subscribe at once to a restarted server, against the same clients on a fresh one.

    .venv/bin/python -m bench.run --only storm                 # with the other suites' settings
    .venv/bin/python -m bench.storm --clients 1000 --runs 3    # experiments: table on stdout

Each client has its own task and its own token (``pushserver serve --secret``, the documented defaults
otherwise: no per-address limit, a subscribe burst of 100 per connection). The clients are raw
Socket.IO websockets (storm_clients.py) in ``procs`` processes, each process on its own loopback source
address (127.0.0.2, 127.0.0.3, ...). One run:

- **phase A, the baseline**: a freshly started server; at one instant every client connects and
  subscribes to its task. The result backend holds nothing for these tasks yet (they were just queued):
  every snapshot reads the backend and finds nothing, so every ack says PENDING. Settle time: from the
  instant to the last ack.
- **the restart**: the server is stopped (SIGTERM; every client sees its socket closed). Meanwhile half
  of the tasks finish and half start: their records are written to the result backend the way Celery
  writes them — SUCCESS with a result for the finished half; for the running half STARTED
  (``task_track_started``) or PROGRESS (``update_state``), alternately. No workers run: 10 000 real
  tasks on a 2-core machine would measure the workers, not the storm, and what a restarted server can
  know of a task is exactly its backend record (without MongoDB's event log, which this machine does
  not run, a running task whose worker records nothing would honestly read PENDING until its next event).
- **phase B, the storm**: the server is started again on the same port; at one instant every client
  reconnects and subscribes again with its own token. Every ack must carry the task's record (SUCCESS
  and its result; STARTED or PROGRESS as written), no client may fail or be refused.

Reported per run: the settle times of A and B and their ratio (target ≤ 2×), failures and refusals
(clients' and the server's counters), wrong snapshots, the server's peak RSS (its process tree, sampled
every 20 ms, and the main process's VmHWM) and CPU (seconds and % of a core over the storm), and the
connections the kernel dropped from a full listen queue (``ListenOverflows``, machine-wide: each
costs its client a TCP retransmission, 1 s, then 3 s, 7 s...), and the result-backend round trips Redis counted (``INFO commandstats`` ``get``/``mget``, reset before the
storm) beside the server's own ``pushserver_backend_reads_total``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from celery import Celery

from bench import common
from bench.common import PYTHON, CpuMeter, PrivateRedis, PushServerProcess, log, spread, tree_rss_bytes, wait_quiet
from bench.report import TARGET_STORM_RATIO as TARGET_RATIO  # settle time at most this many times the baseline's
from dev.metrics import metric_sum
from pushserver.auth import mint_token

#: Seconds between telling the client processes to go and the instant they all start.
GO_DELAY = 0.5
SECRET = "storm-benchmark-secret-0123456789abcdef"


class StormGroup(common.ClientFleet):
    """storm_clients.py processes holding ``n`` clients, one loopback source address each."""

    def __init__(self, pairs: list[tuple[str, str]], procs: int, workdir: Path) -> None:
        super().__init__()
        start = 0
        for i, count in enumerate(common.shares(len(pairs), procs)):
            path = workdir / f"clients-{i}.json"
            path.write_text(json.dumps(pairs[start : start + count]))
            start += count
            self.spawn(
                [PYTHON, "-m", "bench.storm_clients", "--clients", str(path), "--source", common.loopback_source(i)]
            )
        self.answers()  # each says it is ready


class PeakRss:
    """Samples a process tree's RSS in a thread until stopped; keeps the highest."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, tree_rss_bytes(self.pid))
            except OSError:
                pass
            self._stop.wait(self.interval)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def vm_hwm_bytes(pid: int) -> int:
    """The process's peak resident memory so far (``VmHWM``)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def listen_overflows() -> int:
    """The kernel's count of connections dropped because a listen queue was full (machine-wide, TcpExt)."""
    with open("/proc/net/netstat") as f:
        lines = [line.split() for line in f if line.startswith("TcpExt:")]
    names, values = lines[0], lines[1]
    return int(values[names.index("ListenOverflows")])


def redis_calls(redis_server: PrivateRedis) -> dict[str, int]:
    stats = redis_server.client.info("commandstats")
    return {c: int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("get", "mget")}


def phase(server: PushServerProcess, group: StormGroup, n: int) -> dict[str, Any]:
    """Every client connects and subscribes at one instant; settle time, failures, snapshots, server cost."""
    wait_quiet()
    m0 = server.metrics()
    rss = PeakRss(server.pid)
    cpu = CpuMeter(server.pid)
    overflows = listen_overflows()
    at = time.time() + GO_DELAY
    group.send(f"go {at:.6f} {server.url}")
    answers = group.answers()
    cpu_s = cpu.percent() * (time.monotonic() - cpu.t0) / 100.0
    peak = rss.stop()
    overflows = listen_overflows() - overflows
    m1 = server.metrics()
    settle = max(a["last_ack"] for a in answers) - at
    snapshots: dict[str, list[Any]] = {}
    for a in answers:
        snapshots.update(a["snapshots"])

    def delta(name: str, **labels: str) -> float:
        return metric_sum(m1, name, **labels) - metric_sum(m0, name, **labels)

    return {
        "clients": n,
        "settle_s": settle,
        "failed": sum(a["failed"] for a in answers),
        "refused": sum(a["refused"] for a in answers),
        "failures": [f for a in answers for f in a["failures"]][:5] + [e for a in answers for e in a["errors"]][:5],
        "answered": len(snapshots),
        "server_refused": delta("pushserver_requests_refused_total")
        + delta("pushserver_client_messages_refused_total"),
        "listen_overflows": overflows,
        "server_cpu_s": cpu_s,
        "server_cpu_pct": 100.0 * cpu_s / settle if settle > 0 else 0.0,
        "server_peak_rss_mb": peak / 1e6,
        "server_vmhwm_mb": vm_hwm_bytes(server.pid) / 1e6,
        "backend_reads": {k: delta("pushserver_backend_reads_total", kind=k) for k in ("snapshot", "single", "batch")},
        "snapshot_sources": {
            s: delta("pushserver_snapshots_total", source=s) for s in ("memory", "backend", "eventlog", "pending")
        },
        "snapshots": snapshots,
    }


def write_records(app: Celery, finished: list[str], running: list[str]) -> dict[str, tuple[str, Any]]:
    """The backend records a restart finds: SUCCESS for ``finished``, STARTED or PROGRESS for ``running``."""
    expected: dict[str, tuple[str, Any]] = {}
    backend = app.backend
    for i, task_id in enumerate(finished):
        backend.store_result(task_id, {"n": i}, "SUCCESS")
        expected[task_id] = ("SUCCESS", {"n": i})
    for i, task_id in enumerate(running):
        if i % 2:
            backend.store_result(task_id, {"current": i, "total": 2 * i + 1}, "PROGRESS")
            expected[task_id] = ("PROGRESS", None)
        else:
            backend.store_result(task_id, {"pid": 4242, "hostname": "celery@storm"}, "STARTED")
            expected[task_id] = ("STARTED", None)
    return expected


def wrong_snapshots(snapshots: dict[str, list[Any]], expected: dict[str, tuple[str, Any]]) -> list[str]:
    """The tasks whose snapshot is not their record (a SUCCESS must carry its result), a few quoted."""
    wrong = []
    for task_id, (state, result) in expected.items():
        got = snapshots.get(task_id)
        if got is None or got[0] != state or (state == "SUCCESS" and got[1] != result):
            wrong.append(f"{task_id}: {got} (expected {state})")
    return wrong


def measure(redis_server: PrivateRedis, n: int, procs: int) -> dict[str, Any]:
    """One run: phase A on a fresh server, the restart with the records written, phase B."""
    workdir = Path(tempfile.mkdtemp(prefix="pushserver-bench-storm-"))
    tasks = [str(uuid.uuid4()) for _ in range(n)]
    pairs = [(t, mint_token(SECRET, [t], ttl=3600)) for t in tasks]
    app = Celery("storm", backend=redis_server.backend_url, set_as_current=False)
    group = StormGroup(pairs, procs, workdir)
    args = ["--secret", SECRET]
    out: dict[str, Any] = {}
    try:
        first = PushServerProcess(redis_server, args, secure=True)
        with first as server:
            out["a"] = phase(server, group, n)
            group.send("drop")
        out["dropped"] = sum(a["dropped"] for a in group.answers())
        finished, running = tasks[::2], tasks[1::2]
        expected = write_records(app, finished, running)
        second = PushServerProcess(redis_server, args, secure=True)
        second.port = first.port  # the clients come back to the address they lost
        with second as server:
            redis_server.client.config_resetstat()
            out["b"] = phase(server, group, n)
            out["b"]["redis_calls"] = redis_calls(redis_server)
    finally:
        group.close()
        app.close()
    out["ratio"] = out["b"]["settle_s"] / out["a"]["settle_s"]
    # Phase A: nothing recorded yet, so every snapshot must say PENDING.
    a_wrong = wrong_snapshots(out["a"].pop("snapshots"), {t: ("PENDING", None) for t in tasks})
    out["a_wrong_count"] = len(a_wrong)
    out["a_wrong"] = a_wrong[:5]
    wrong = wrong_snapshots(out["b"].pop("snapshots"), expected)
    out["b_wrong_count"] = len(wrong)
    out["b_wrong"] = wrong[:5]
    return out


def run(redis_server: PrivateRedis, runs: int, clients: int, procs: int) -> dict[str, Any]:
    """``runs`` storms of ``clients`` clients in ``procs`` processes, each with fresh tasks and servers."""
    out: dict[str, Any] = {"clients": clients, "procs": procs, "target_ratio": TARGET_RATIO, "runs": []}
    for i in range(runs):
        r = measure(redis_server, clients, procs)
        out["runs"].append(r)
        b = r["b"]
        log(
            f"storm run {i + 1}/{runs}, {clients:,} clients: A {r['a']['settle_s']:.2f}s, B {b['settle_s']:.2f}s "
            f"= {r['ratio']:.2f}x; failed {r['a']['failed']}+{b['failed']}, refused {r['a']['refused']}+{b['refused']}, "
            f"wrong {r['b_wrong_count']}; listen overflows {r['a']['listen_overflows']}+{b['listen_overflows']}; "
            f"server peak RSS {b['server_peak_rss_mb']:.0f} MB, CPU {b['server_cpu_s']:.2f}s; "
            f"Redis get {b['redis_calls']['get']}, mget {b['redis_calls']['mget']}"
        )
    return out


def summary(storm: dict[str, Any]) -> str:
    """A plain-text table of the runs, for the experiments' command line."""
    runs = storm["runs"]
    lines = [
        f"reconnect storm, {storm['clients']:,} clients in {storm['procs']} processes, {len(runs)} run(s)",
        f"settle A (fresh server) s:  {spread(r['a']['settle_s'] for r in runs).fmt(2)}",
        f"settle B (storm) s:         {spread(r['b']['settle_s'] for r in runs).fmt(2)}",
        f"ratio B/A:                  {spread(r['ratio'] for r in runs).fmt(2, '×')} (target ≤ {TARGET_RATIO:g}×)",
        f"failed / refused / wrong:   {sum(r['a']['failed'] + r['b']['failed'] for r in runs)} / "
        f"{sum(r['a']['refused'] + r['b']['refused'] + r['b']['server_refused'] for r in runs)} / "
        f"{sum(r['b_wrong_count'] for r in runs)}",
        f"listen overflows A / B:     {spread(r['a']['listen_overflows'] for r in runs).fmt(0)} / "
        f"{spread(r['b']['listen_overflows'] for r in runs).fmt(0)}",
        f"server peak RSS B MB:       {spread(r['b']['server_peak_rss_mb'] for r in runs).fmt(0)}",
        f"server CPU B s:             {spread(r['b']['server_cpu_s'] for r in runs).fmt(2)}",
        f"Redis GET / MGET in B:      {spread(r['b']['redis_calls']['get'] for r in runs).fmt(0)} / "
        f"{spread(r['b']['redis_calls']['mget'] for r in runs).fmt(0)}",
    ]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.storm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--procs", type=int, default=2, help="client processes (one source address each)")
    p.add_argument("--server-rev", metavar="REV", help="run the server from this git revision (see run.py)")
    p.add_argument("--json", type=Path, help="also write the raw results here")
    args = p.parse_args()
    if args.server_rev:
        log(f"server code: {args.server_rev} = {common.use_server_snapshot(args.server_rev)}")
    with PrivateRedis() as redis_server:
        out = run(redis_server, args.runs, args.clients, args.procs)
    out["server_code"] = common.server_code()
    if args.json:
        common.dump_json(args.json, out)
    print(summary(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
