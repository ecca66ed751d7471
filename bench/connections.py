"""Connections: RSS of one ``pushserver serve --insecure`` holding many idle, subscribed sockets, and what
such a crowd does to /healthz and to delivery latency.

    .venv/bin/python -m bench.run --only connections          # with the other suites' settings
    .venv/bin/python -m bench.connections --steps 1000 10000 50000 --procs 4 --hold 30 --probe-clients 1000

One server on a private Redis; its RSS is read at start-up (ready, no client),
then clients are added up to each step (raw Engine.IO/Socket.IO websockets
from raw_clients.py, spread over ``procs`` processes per step, each process
connecting from a loopback address of its own, 127.0.0.2, 127.0.0.3, ...,
each client connected and subscribed to one task id of its own), and after a
settle time the RSS is read again. KB per connection = (RSS at the step - RSS
with none) / connections; the server's RSS is that of its whole process tree.
The clients answer the server's Engine.IO pings, so the sockets stay open as
a browser's would; after the last step the sockets are held through a ping
round and the RSS read once more, which is the run's figure. Each run starts
a fresh server.

**The open-files limit.** Every socket is a file descriptor of the server,
whose open-files limit (RLIMIT_NOFILE, read with resource.getrlimit and from
the server's /proc/<pid>/limits once it has raised its soft limit to the hard
one) caps what one process can hold. A step beyond it is cut to the limit
minus what the server already has open, the probe's clients and
``FD_MARGIN``; the run records the count it reached, the count asked for and
the limit, and the report says which.

**/healthz** is timed (``HEALTHZ_REQUESTS`` requests, a new connection each)
with no client and with the crowd at its largest step.

**The probe** (``probe_clients`` > 0): before the crowd, ``probe_clients``
python-socketio clients (latency_clients.py, as the latency suite's)
subscribe, and events are published at ``probe_rate`` events/s for
``probe_duration`` s (latency.py's phases): the p99 without the crowd. The
idle clients are then added (their memory counted from the RSS at that
point), and once the crowd has been held, the same phase again: the p99 with
it. p99 with / without, per run, is the figure; the target is at most 2x.
"""

from __future__ import annotations

import argparse
import http.client
import json
import resource
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import common, latency, report
from bench.common import PYTHON, PrivateRedis, PushServerProcess, log, tree_rss_bytes, wait_quiet
from dev.metrics import metric_sum
from dev.stack import rss_bytes

SETTLE_S = 3.0
#: Descriptors left free under the server's open-files limit when a step is cut to it: the backend's and
#: Redis's connections, the harness's /metrics and /healthz requests, sockets still closing.
FD_MARGIN = 200
#: /healthz requests timed with and without the crowd.
HEALTHZ_REQUESTS = 20


@dataclass(frozen=True)
class Probe:
    """What is measured with the crowd at its largest: /healthz, and delivery latency at ``rate`` with
    ``clients`` python-socketio clients (none: /healthz only)."""

    clients: int = 0
    rate: float = 1000.0
    duration: float = 10.0
    warmup: float = 2.0


class ClientGroup(common.ClientFleet):
    """raw_clients.py processes, ``n`` clients in all, ready (connected and subscribed) on return; process k
    connects from ``common.loopback_source(first_source + k)``."""

    def __init__(
        self,
        url: str,
        mode: str,
        n: int,
        procs: int,
        tasks_file: Path,
        per_client: int = 1,
        offset: int = 0,
        extra: list[str] | None = None,
        first_source: int = 0,
    ) -> None:
        super().__init__()
        start = offset
        self.sources: list[str] = []
        for count in common.shares(n, procs):
            if not count:
                continue
            source = common.loopback_source(first_source + len(self.sources))
            self.sources.append(source)
            self.spawn(
                [
                    PYTHON,
                    "-m",
                    "bench.raw_clients",
                    "--url",
                    url,
                    "--mode",
                    mode,
                    "--clients",
                    str(count),
                    "--offset",
                    str(start),
                    "--tasks",
                    str(tasks_file),
                    "--per-client",
                    str(per_client),
                    "--source",
                    source,
                    *(extra or []),
                ]
            )
            start += count
        self.ready = self.answers()

    def summary(self) -> dict[str, Any]:
        return {
            "connected": sum(r["connected"] for r in self.ready),
            "subscribed": sum(r["subscribed"] for r in self.ready),
            "failures": sum(r["failures"] for r in self.ready),
            "failed": [f for r in self.ready for f in r["failed"]][:5],
            "connect_seconds": max(r["connect_seconds"] for r in self.ready),
            "client_nofile": min(r["nofile"] for r in self.ready),
            "client_rss_mb": sum(r["rss_mb"] for r in self.ready),
        }


def nofile_limits(pid: int) -> tuple[int, int]:
    """A process's open-files limit, soft and hard, from /proc/<pid>/limits (-1: unlimited)."""
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return (-1 if soft == "unlimited" else int(soft)), (-1 if hard == "unlimited" else int(hard))
    raise RuntimeError(f"no open-files limit in /proc/{pid}/limits")


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def healthz_ms(url: str, n: int = HEALTHZ_REQUESTS) -> list[float]:
    """``n`` GET /healthz, each on a new connection (accept included), in ms; a failure raises."""
    host, port = url.removeprefix("http://").split(":")
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            conn.request("GET", "/healthz")
            resp = conn.getresponse()
            resp.read()
        finally:
            conn.close()
        if resp.status != 200:
            raise RuntimeError(f"/healthz answered {resp.status}")
        times.append(1000 * (time.perf_counter() - t0))
        time.sleep(0.05)
    return times


def healthz_summary(times: list[float]) -> dict[str, Any]:
    return {"median_ms": statistics.median(times), "max_ms": max(times), "times_ms": times}


def fit_steps(steps: list[int], room: int) -> list[int]:
    """``steps`` with any beyond ``room`` cut to it (duplicates dropped)."""
    out: list[int] = []
    for step in steps:
        step = min(step, room)
        if step > 0 and step not in out:
            out.append(step)
    return out


def latency_phase(
    redis_server: PrivateRedis,
    server: PushServerProcess,
    clients: latency.ClientProcess,
    plan: dict[str, Any],
    workdir: Path,
) -> dict[str, Any]:
    """One of latency.py's phases; the client and server figures that matter here."""
    stats = latency.run_phase(redis_server, server, clients, plan, workdir)
    keep = ("p50_ms", "p95_ms", "p99_ms", "max_ms", "received", "missing_updates", "cpu_pct", "server_cpu_pct")
    out = {k: stats[k] for k in keep}
    out["server_gc"] = stats["server_gc"]  # the collector's passes in the phase (None: not logged)
    out["publisher_events_per_s"] = stats["publisher"]["events_per_s"]
    out["foreign_cores"] = stats["foreign_cores"]
    return out


def measure(
    redis_server: PrivateRedis,
    steps: list[int],
    procs: int,
    tasks_file: Path,
    hold: float,
    settle: float,
    server_wrapper: Sequence[str] = (),
    probe: Probe = Probe(),
    workdir: Path | None = None,
) -> dict[str, Any]:
    """One run: a fresh server, its RSS with no client; the probe's clients and its phase without the crowd;
    then idle clients added up to each step (as many as its open-files limit allows); the probe again."""
    out: dict[str, Any] = {"steps": [], "requested": steps[-1]}
    workdir = workdir or Path(tempfile.mkdtemp(prefix="pushserver-bench-conn-"))
    # As in the latency suite, the server runs under gc_probe.py (its collector's passes timed), unless a
    # wrapper of the caller's is asked for.
    gc_log = None if server_wrapper else workdir / f"gc-{uuid.uuid4().hex[:6]}.jsonl"
    with PushServerProcess(redis_server, background_stop=True, wrapper=server_wrapper, gc_log=gc_log) as server:
        soft, hard = nofile_limits(server.pid)
        out["server_nofile"] = f"{soft}/{hard}"
        out["harness_nofile"] = list(resource.getrlimit(resource.RLIMIT_NOFILE))
        wait_quiet()  # the previous run's server gone too
        time.sleep(settle)
        fds0 = open_fds(server.pid)
        out["server_fds_at_start"] = fds0
        limit = soft if soft > 0 else 1 << 30
        room = limit - fds0 - probe.clients - FD_MARGIN
        out["room"] = room
        fitted = fit_steps(steps, room)
        out["capped_by_fd_limit"] = fitted[-1] < steps[-1]
        rss0 = tree_rss_bytes(server.pid)
        out["rss_idle_mb"] = rss0 / 1e6
        log(
            f"server pid {server.pid} ready, RSS {rss0 / 1e6:.1f} MB, open files limit {soft}/{hard}, "
            f"{fds0} open: room for {room:,} idle sockets"
            + (f" (steps cut to {fitted}, asked for {steps})" if fitted != steps else "")
        )
        out["healthz_without"] = healthz_summary(healthz_ms(server.url))
        groups: list[ClientGroup] = []
        probe_clients: latency.ClientProcess | None = None
        try:
            if probe.clients:
                # The probe's clients come first and stay: its phase without the crowd and the one with it
                # run on the same server with the same clients. (Closing a crowd instead would measure
                # python-socketio's disconnect, which scans every room per socket: minutes at 19 000.)
                plans = [latency.phase_plan(probe.rate, probe.warmup)] + [
                    latency.phase_plan(probe.rate, probe.duration) for _ in range(2)
                ]
                ids_file = workdir / f"probe-{uuid.uuid4().hex[:6]}.json"
                ids_file.write_text(json.dumps([t for plan in plans for t in plan["task_ids"]]))
                probe_clients = latency.ClientProcess(server.url, probe.clients, ids_file)
                ready = probe_clients.read()
                out["probe_setup"] = {k: ready[k] for k in ("connected", "connect_seconds", "failures")}
                latency_phase(redis_server, server, probe_clients, plans[0], workdir)  # warm-up, not reported
                out["latency_without"] = latency_phase(redis_server, server, probe_clients, plans[1], workdir)
                log(
                    f"probe: {ready['connected']} python-socketio clients in {ready['connect_seconds']:.1f}s; "
                    f"p99 at {probe.rate:g} ev/s without the crowd {out['latency_without']['p99_ms']:.2f} ms"
                )
                time.sleep(settle)
            # The idle sockets' memory is counted from here: with the probe, its clients and the tasks of
            # its phases are in the base.
            base = tree_rss_bytes(server.pid)
            out["rss_base_mb"] = base / 1e6
            have = 0
            for step in fitted:
                add = step - have
                t0 = time.monotonic()
                group = ClientGroup(
                    server.url,
                    "idle",
                    add,
                    procs,
                    tasks_file,
                    offset=have,
                    extra=["--concurrency", "100"],
                    first_source=sum(len(g.sources) for g in groups),
                )
                groups.append(group)
                have = step
                s = group.summary()
                time.sleep(settle)
                m = server.metrics()
                rss = tree_rss_bytes(server.pid)
                clients_rss = sum(rss_bytes(pid) for g in groups for pid in g.pids)
                row = {
                    "clients": step,
                    "added": add,
                    "connected_added": s["connected"],
                    "subscribed_added": s["subscribed"],
                    "failures": s["failures"],
                    "failed": s["failed"],
                    "connect_seconds": time.monotonic() - t0,
                    "server_clients_metric": metric_sum(m, "pushserver_connected_clients") - probe.clients,
                    "server_subscriptions_metric": metric_sum(m, "pushserver_subscriptions"),
                    "server_open_fds": open_fds(server.pid),
                    "rss_mb": rss / 1e6,
                    "delta_mb": (rss - base) / 1e6,
                    "kb_per_connection": (rss - base) / 1024 / step,
                    "client_processes": sum(len(g.procs) for g in groups),
                    "client_sources": sorted({a for g in groups for a in g.sources}),
                    "client_rss_mb": clients_rss / 1e6,
                    "client_nofile": s["client_nofile"],
                }
                if out["steps"]:
                    prev = out["steps"][-1]
                    row["marginal_kb_per_connection"] = (
                        (row["rss_mb"] - prev["rss_mb"]) * 1e6 / 1024 / (step - prev["clients"])
                    )
                out["steps"].append(row)
                log(
                    f"{step:,} clients ({row['server_clients_metric']:.0f} on the server, "
                    f"{row['server_subscriptions_metric']:.0f} subscriptions, {s['failures']} failed to add, "
                    f"{row['server_open_fds']:,} fds open) in {row['connect_seconds']:.1f}s: server RSS "
                    f"{row['rss_mb']:.1f} MB, +{row['delta_mb']:.1f} MB = {row['kb_per_connection']:.1f} KB/connection"
                )
            out["reached"] = have
            crowd_at = time.monotonic()
            out["healthz_with"] = healthz_summary(healthz_ms(server.url))
            log(
                f"/healthz with no client: median {out['healthz_without']['median_ms']:.2f} ms, max "
                f"{out['healthz_without']['max_ms']:.2f} ms; with {have:,}: median "
                f"{out['healthz_with']['median_ms']:.2f} ms, max {out['healthz_with']['max_ms']:.2f} ms"
            )
            # The sockets must stay open through at least one Engine.IO ping round
            # (pingInterval 25 s) to count as idle connections a server keeps: hold,
            # then read the RSS again, before the probe's events add theirs.
            if hold:
                left = hold - (time.monotonic() - crowd_at)
                if left > 0:
                    log(f"holding {left:.0f}s more for the Engine.IO pings")
                    time.sleep(left)
                rss = tree_rss_bytes(server.pid)
                out["after_hold"] = {
                    "seconds": max(hold, time.monotonic() - crowd_at),
                    "rss_mb": rss / 1e6,
                    "delta_mb": (rss - base) / 1e6,
                    "kb_per_connection": (rss - base) / 1024 / have,
                    "server_clients_metric": metric_sum(server.metrics(), "pushserver_connected_clients")
                    - probe.clients,
                }
            if probe_clients is not None:
                out["latency_with"] = latency_phase(redis_server, server, probe_clients, plans[2], workdir)
                w, wo = out["latency_with"], out["latency_without"]
                out["p99_ratio"] = w["p99_ms"] / wo["p99_ms"] if wo["p99_ms"] else None
                log(
                    f"latency at {probe.rate:g} ev/s, {probe.clients:,} clients: p99 {w['p99_ms']:.2f} ms with "
                    f"{have:,} idle sockets, {wo['p99_ms']:.2f} ms without = {out['p99_ratio']:.2f}x; missing "
                    f"updates {w['missing_updates']}/{wo['missing_updates']}; server CPU "
                    f"{w['server_cpu_pct']:.0f}%/{wo['server_cpu_pct']:.0f}%"
                    + "".join(
                        f"; server GC {label}: {g['passes']} passes, longest {g['max_ms']:.1f} ms"
                        for label, g in (("with", w["server_gc"]), ("without", wo["server_gc"]))
                        if g
                    )
                )
            stats = [s for g in groups for s in g.ask("stats")]
            out["client_pings_answered"] = sum(s["pings"] for s in stats)
            out["client_disconnects"] = sum(s["disconnects"] for s in stats)
            out["final_server_clients"] = metric_sum(server.metrics(), "pushserver_connected_clients")
        finally:
            if probe_clients is not None:
                probe_clients.close()
            for g in groups:
                g.close()
    return out


def run(
    redis_server: PrivateRedis,
    runs: int,
    steps: list[int],
    procs: int = 2,
    hold: float = 30.0,
    settle: float = SETTLE_S,
    server_wrapper: Sequence[str] = (),
    probe: Probe = Probe(),
) -> dict[str, Any]:
    """``runs`` fresh servers, each taken through every step of ``steps`` that its open-files limit allows
    (started through ``server_wrapper``), then ``probe``."""
    steps = sorted(steps)
    workdir = Path(tempfile.mkdtemp(prefix="pushserver-bench-conn-"))
    tasks_file = workdir / "tasks.json"
    tasks_file.write_text(json.dumps([str(uuid.uuid4()) for _ in range(steps[-1])]))
    out: dict[str, Any] = {
        "steps": steps,
        "procs": procs,
        "settle_s": settle,
        "hold_s": hold,
        "fd_margin": FD_MARGIN,
        "healthz_requests": HEALTHZ_REQUESTS,
        "probe": probe.__dict__,
        "runs": [],
    }
    for i in range(runs):
        r = measure(redis_server, steps, procs, tasks_file, hold, settle, server_wrapper, probe, workdir)
        out["runs"].append(r)
        log(
            f"connections run {i + 1}/{runs}: {report.per_connection_kb(r):.1f} KB per connection at "
            f"{r['reached']:,}"
            + (f" (of {steps[-1]:,} asked: open files limit {r['server_nofile']})" if r["capped_by_fd_limit"] else "")
            + (f" after {hold:.0f}s" if hold else "")
            + f"; client disconnects {r['client_disconnects']}"
        )
    return out


def main(argv: Sequence[str] | None = None, server_wrapper: Sequence[str] = ()) -> int:
    """The experiments' command line; ``server_wrapper`` runs the server through a script (bench/mem_probe.py)."""
    p = argparse.ArgumentParser(
        prog="python -m bench.connections", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--runs", type=int, default=1)
    p.add_argument(
        "--steps",
        type=int,
        nargs="+",
        default=[1000, 10000],
        help="idle sockets to read the RSS at; a step beyond the server's open-files limit is cut to it",
    )
    p.add_argument("--procs", type=int, default=2, help="client processes per step (one source address each)")
    p.add_argument(
        "--hold",
        type=float,
        default=30.0,
        help="after the last step, keep the sockets this long (>= one 25 s ping round) and read RSS again",
    )
    p.add_argument(
        "--probe-clients",
        type=int,
        default=0,
        metavar="N",
        help="with the crowd at its largest, time delivery to N python-socketio clients, with and without it",
    )
    p.add_argument("--probe-rate", type=float, default=1000.0, help="events/s of the probe (default 1000)")
    p.add_argument("--probe-duration", type=float, default=10.0, help="seconds of each probe phase (default 10)")
    p.add_argument("--server-rev", metavar="REV", help="run the server from this git revision (see run.py)")
    args = p.parse_args(argv)
    if args.server_rev:
        log(f"server code: {args.server_rev} = {common.use_server_snapshot(args.server_rev)}")
    probe = Probe(clients=args.probe_clients, rate=args.probe_rate, duration=args.probe_duration)
    with PrivateRedis() as redis_server:
        out = run(
            redis_server, args.runs, args.steps, args.procs, args.hold, server_wrapper=server_wrapper, probe=probe
        )
    print(report.connections_section(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
