"""Where an ingested event's CPU goes: the server process and its receiver process, per receiver mode.

    .venv/bin/python -m bench.cpu_split [--tasks 8000] [--runs 3] [--modes thread process] [--server-rev HEAD]

For each stream shape (unbatched, batched; bench/stream.py) and receiver
mode (``--receiver thread|process``), a fresh ``pushserver serve`` drains the
recorded stream, replayed saturating as in bench/ingest.py, and the CPU time
(user + system, /proc) of the server process and of its receiver child is
divided by the events ingested. CPU time, unlike events/s, barely moves when
something else runs on the machine, so this shows what each side costs even
on a busy one. Prints one line per run and the medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench import common
from bench.common import PrivateRedis, PushServerProcess, log, process_tree
from bench.ingest import Publisher
from bench.stream import build_streams
from dev.metrics import metric_sum


def own_cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (all its threads), without its children."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / common.CLK_TCK


def drain(redis_server: PrivateRedis, stream: dict, mode: str) -> tuple[float, float, float]:
    """One server drains the stream: (events/s, server µs per event, receiver process µs per event)."""
    with PushServerProcess(redis_server, ["--receiver", mode]) as server:
        children = [p for p in process_tree(server.pid) if p != server.pid]
        server0 = own_cpu_seconds(server.pid)
        child0 = sum(own_cpu_seconds(c) for c in children)
        publisher = Publisher(redis_server, Path(stream["path"]), max_backlog=4_000_000)
        started = time.monotonic()
        publisher.go()
        expected = stream["events"]
        while metric_sum(server.metrics(), "pushserver_events_ingested_total") < expected:
            if time.monotonic() - started > 120:
                raise TimeoutError(f"{mode}: the stream was not ingested in 120 s")
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        server_s = own_cpu_seconds(server.pid) - server0
        child_s = sum(own_cpu_seconds(c) for c in children) - child0
        publisher.result()
    return expected / elapsed, 1e6 * server_s / expected, 1e6 * child_s / expected


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=8000, help="tasks in the unbatched stream (7 events each)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--modes", nargs="+", default=["thread", "process"], choices=["thread", "process"])
    p.add_argument("--server-rev", metavar="REV", help="run the server from this git revision of pushserver/")
    args = p.parse_args()
    if args.server_rev:
        log(f"server code: {args.server_rev} = {common.use_server_snapshot(args.server_rev)}")
    with PrivateRedis() as redis_server:
        streams = build_streams(
            {"unbatched": args.tasks, "batched": 2 * args.tasks},
            redis_server.url,
            redis_server.client,
            Path(tempfile.mkdtemp(prefix="pushserver-cpu-split-")),
        )
        results: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
        for run in range(args.runs):
            for shape, stream in streams.items():
                for mode in args.modes:
                    rate, server_us, child_us = drain(redis_server, stream, mode)
                    results.setdefault((shape, mode), []).append((rate, server_us, child_us))
                    log(
                        f"run {run + 1}/{args.runs} {shape} {mode}: {rate:,.0f} ev/s, server {server_us:.2f} "
                        f"µs/event, receiver process {child_us:.2f} µs/event"
                    )
    print("stream     receiver  events/s  server µs/event  receiver process µs/event  total µs/event")
    for (shape, mode), rows in results.items():
        rate, server_us, child_us = (statistics.median(r[i] for r in rows) for i in range(3))
        print(f"{shape:10s} {mode:8s}  {rate:8,.0f}  {server_us:15.2f}  {child_us:25.2f}  {server_us + child_us:14.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
