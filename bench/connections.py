"""Connections: RSS of one ``pushserver serve --insecure`` holding 1 000 and 10 000 idle, subscribed sockets.

    .venv/bin/python -m bench.run --only connections          # with the other suites' settings
    .venv/bin/python -m bench.connections --steps 1000 10000 --procs 4 --hold 0   # experiments: table on stdout

One server on a private Redis; its RSS is read at start-up (ready, no client),
then clients are added up to each step (raw Engine.IO/Socket.IO websockets
from raw_clients.py, spread over ``procs`` processes, each connected and
subscribed to one task id of its own), and after a settle time the RSS is read
again. KB per connection = (RSS at the step - RSS with none) / connections; the
server's RSS is that of its whole process tree. The clients answer the
server's Engine.IO pings, so the sockets stay open as a browser's would;
after the last step the sockets are held through a ping round and the RSS
read once more, which is the run's figure. Each run starts a fresh server.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import common, report
from bench.common import PYTHON, PrivateRedis, PushServerProcess, log, tree_rss_bytes, wait_quiet
from dev.metrics import metric_sum
from dev.stack import rss_bytes

SETTLE_S = 3.0


class ClientGroup(common.ClientFleet):
    """raw_clients.py processes, ``n`` clients in all, ready (connected and subscribed) on return."""

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
        timeout: float = 180.0,
    ) -> None:
        super().__init__()
        start = offset
        for count in common.shares(n, procs):
            if not count:
                continue
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


def nofile_limit(pid: int) -> str:
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                return "/".join(line.split()[3:5])
    return "?"


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def measure(
    redis_server: PrivateRedis,
    steps: list[int],
    procs: int,
    tasks_file: Path,
    hold: float,
    settle: float,
    server_wrapper: Sequence[str] = (),
) -> dict[str, Any]:
    """One run: a fresh server, its RSS with no client, then with clients added up to each step."""
    out: dict[str, Any] = {"steps": []}
    with PushServerProcess(redis_server, background_stop=True, wrapper=server_wrapper) as server:
        out["server_nofile"] = nofile_limit(server.pid)
        wait_quiet()  # the previous run's server gone too
        time.sleep(settle)
        rss0 = tree_rss_bytes(server.pid)
        out["rss_idle_mb"] = rss0 / 1e6
        log(f"server pid {server.pid} ready, RSS {rss0 / 1e6:.1f} MB, open files limit {out['server_nofile']}")
        groups: list[ClientGroup] = []
        have = 0
        try:
            for step in steps:
                add = step - have
                t0 = time.monotonic()
                group = ClientGroup(
                    server.url, "idle", add, procs, tasks_file, offset=have, extra=["--concurrency", "100"]
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
                    "server_clients_metric": metric_sum(m, "pushserver_connected_clients"),
                    "server_subscriptions_metric": metric_sum(m, "pushserver_subscriptions"),
                    "server_open_fds": open_fds(server.pid),
                    "rss_mb": rss / 1e6,
                    "delta_mb": (rss - rss0) / 1e6,
                    "kb_per_connection": (rss - rss0) / 1024 / step,
                    "client_processes": sum(len(g.procs) for g in groups),
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
                    f"{row['server_subscriptions_metric']:.0f} subscriptions, {s['failures']} failed to add) "
                    f"in {row['connect_seconds']:.1f}s: server RSS {row['rss_mb']:.1f} MB, "
                    f"+{row['delta_mb']:.1f} MB = {row['kb_per_connection']:.1f} KB/connection"
                )
            # The sockets must stay open through at least one Engine.IO ping round
            # (pingInterval 25 s) to count as idle connections a server keeps: hold,
            # then read the RSS again.
            if hold:
                log(f"holding {hold:.0f}s for the Engine.IO pings")
                time.sleep(hold)
                rss = tree_rss_bytes(server.pid)
                n = steps[-1]
                out["after_hold"] = {
                    "seconds": hold,
                    "rss_mb": rss / 1e6,
                    "delta_mb": (rss - rss0) / 1e6,
                    "kb_per_connection": (rss - rss0) / 1024 / n,
                    "server_clients_metric": metric_sum(server.metrics(), "pushserver_connected_clients"),
                }
            stats = [s for g in groups for s in g.ask("stats")]
            out["client_pings_answered"] = sum(s["pings"] for s in stats)
            out["client_disconnects"] = sum(s["disconnects"] for s in stats)
            out["final_server_clients"] = metric_sum(server.metrics(), "pushserver_connected_clients")
        finally:
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
) -> dict[str, Any]:
    """``runs`` fresh servers, each taken through every step of ``steps`` (started through ``server_wrapper``)."""
    steps = sorted(steps)
    workdir = Path(tempfile.mkdtemp(prefix="pushserver-bench-conn-"))
    tasks_file = workdir / "tasks.json"
    tasks_file.write_text(json.dumps([str(uuid.uuid4()) for _ in range(steps[-1])]))
    out: dict[str, Any] = {"steps": steps, "procs": procs, "settle_s": settle, "hold_s": hold, "runs": []}
    for i in range(runs):
        r = measure(redis_server, steps, procs, tasks_file, hold, settle, server_wrapper)
        out["runs"].append(r)
        log(
            f"connections run {i + 1}/{runs}: {(r.get('after_hold') or r['steps'][-1])['kb_per_connection']:.1f} KB per connection at {steps[-1]:,}"
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
    p.add_argument("--steps", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--procs", type=int, default=2, help="client processes per step")
    p.add_argument(
        "--hold",
        type=float,
        default=30.0,
        help="after the last step, keep the sockets this long (>= one 25 s ping round) and read RSS again",
    )
    p.add_argument("--server-rev", metavar="REV", help="run the server from this git revision (see run.py)")
    args = p.parse_args(argv)
    if args.server_rev:
        log(f"server code: {args.server_rev} = {common.use_server_snapshot(args.server_rev)}")
    with PrivateRedis() as redis_server:
        out = run(redis_server, args.runs, args.steps, args.procs, args.hold, server_wrapper=server_wrapper)
    print(report.connections_section(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
