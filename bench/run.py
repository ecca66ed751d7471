"""Run the benchmarks and write docs/benchmarks.md.

    .venv/bin/python -m bench.run            # full: every suite, 5 runs, 1 000 clients (~30 min)
    .venv/bin/python -m bench.run --quick    # every suite, 3 short runs, small sizes (~2 min)
    .venv/bin/python -m bench.run --runs 7 --only latency

Suites: ingest (bare Celery Receiver, pushserver and Flower on one recorded
stream), latency (event timestamp -> client at several rates), connections
(server RSS per idle subscribed socket, up to 50 000 or the server's
open-files limit, and /healthz and latency with them connected), polling (push vs 1 s polling: load
and notice latency), storm (clients reconnecting at once to a restarted
server, against the same clients on a fresh one).

Everything runs against a private redis-server on a free port, started here
and stopped at the end; progress goes to stderr, the summary to stdout, the
raw results to bench/results/<mode>-latest.json (<mode>-scratch.json for
--no-write and diagnostic runs).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from bench import common, connections, ingest, latency, polling, report, storm
from bench.common import ROOT, PrivateRedis, dump_json, log, machine_info, versions
from bench.stream import build_streams

SUITES = ("ingest", "latency", "connections", "polling", "storm")


@dataclass
class Sizes:
    """How much each suite does per run; ``FULL`` is what the issue asks for, ``QUICK`` in about 2 minutes."""

    runs: int
    tasks: int  # unbatched ingest stream, 7 events each; the batched one has twice as many
    clients: int  # Socket.IO clients subscribed in the latency runs
    rates: list[float]
    duration: float  # seconds per latency rate
    warmup: float  # seconds of a latency warm-up phase, not reported
    burst: bool
    burst_tasks: int  # 0: burst the ingest streams; else a batched stream of its own, this many tasks
    burst_consumers: tuple[str, ...]  # who gets the bursts (bare and/or pushserver)
    baseline: bool  # the bare Receiver's latency at the same rates
    baseline_rates: list[float] | None  # the rates it is measured at (None: every rate)
    steps: list[int]  # idle connections (a step beyond the server's open-files limit is cut to it)
    hold: float  # seconds the last step is held (an Engine.IO ping round)
    settle: float
    probe: connections.Probe  # /healthz and latency with the most idle connections, and without them
    poll: polling.Plan
    storm_clients: int  # clients reconnecting at once after a restart
    storm_procs: int  # processes (and loopback source addresses) they are spread over


FULL = Sizes(
    runs=5,
    tasks=25_000,
    clients=1_000,
    rates=[100.0, 1000.0, 5000.0],
    duration=10.0,
    warmup=2.0,
    burst=True,
    burst_tasks=0,
    burst_consumers=ingest.BURST_CONSUMERS,
    baseline=True,
    baseline_rates=None,
    # 50 000 is issue 19's target; where the open-files limit allows fewer, the suite goes to the most it
    # allows and says so.
    steps=[1_000, 10_000, 50_000],
    hold=30.0,
    settle=3.0,
    probe=connections.Probe(clients=1_000, rate=1000.0, duration=10.0, warmup=2.0),
    poll=polling.Plan(clients=1_000, rounds=3, round_s=4.0),
    storm_clients=10_000,
    storm_procs=4,
)
QUICK = Sizes(
    runs=3,
    tasks=1_500,
    clients=100,
    rates=[1000.0, 5000.0],
    duration=2.0,
    warmup=1.0,
    # One burst shape, the one that lost events in full runs, a quarter of the full
    # run's size to fit the few minutes: 84 000 events, ~34 MB, just over Redis's
    # 32 MB cut-off, so only a consumer that falls behind by nearly all of it is
    # cut off (the row gives the peak backlog: how close it came). pushserver only;
    # the bare Receiver's saturating rate on the batched stream sets the rate.
    burst=True,
    burst_tasks=12_000,
    burst_consumers=("pushserver",),
    # The 5 000 events/s target is a ratio to the bare Receiver: measured there only.
    baseline=True,
    baseline_rates=[5000.0],
    # A small crowd, /healthz with and without it; the latency probe (1 000 more clients, two phases) is the
    # full run's only.
    steps=[2_000],
    hold=0.0,
    settle=0.5,
    probe=connections.Probe(clients=0),
    poll=polling.Plan(clients=300, rounds=1, round_s=1.5),
    storm_clients=1_000,
    storm_procs=2,
)


def main() -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="3 short runs of every suite at small sizes (~2 min)")
    p.add_argument("--runs", type=int, help="runs per figure (default 5; 3 with --quick)")
    p.add_argument(
        "--only",
        choices=SUITES,
        action="append",
        help="run only this suite (repeatable); the other suites' figures in the docs are kept "
        "from the latest complete run of the same mode",
    )
    p.add_argument(
        "--tasks",
        type=int,
        help="tasks in the unbatched ingest stream, 7 events each "
        "(default 25 000; 1 500 with --quick); the batched one has twice as many",
    )
    p.add_argument(
        "--clients",
        type=int,
        help="Socket.IO clients for latency, and clients for push vs polling (default 1 000; 100 and 300 with --quick)",
    )
    p.add_argument(
        "--rates", type=float, nargs="+", help="latency rates, events/s (default 100 1000 5000; 1000 5000 with --quick)"
    )
    p.add_argument("--duration", type=float, help="seconds per latency rate per run (default 10; 2 with --quick)")
    p.add_argument(
        "--connections",
        type=int,
        nargs="+",
        metavar="N",
        help="idle connections to measure the server's RSS at (default 1000 10000 50000, each cut to what the "
        "server's open-files limit allows; 2000 with --quick)",
    )
    p.add_argument(
        "--hold",
        type=float,
        help="seconds the most idle connections are held before the last "
        "RSS reading, >= one 25 s ping round (default 30; 0 with --quick)",
    )
    p.add_argument(
        "--storm-clients",
        type=int,
        metavar="N",
        help="clients reconnecting at once in the storm suite (default 10 000; 1 000 with --quick)",
    )
    p.add_argument(
        "--prefill",
        type=int,
        default=0,
        metavar="TASKS",
        help="before the latency phases, fill the server's store with this many finished tasks "
        "(a long-running server holds up to --max-tasks, 100 000 by default)",
    )
    p.add_argument("--no-burst", action="store_true", help="skip the ingest burst (loss) runs")
    p.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the bare-Receiver latency baseline (--quick measures it at 5 000 events/s only)",
    )
    p.add_argument(
        "--server-rev",
        metavar="REV",
        help="run the server from this git revision of pushserver/ (exported to a temp dir) "
        "instead of the working tree, so that edits made during the run do not mix in",
    )
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="S",
        help="before each measurement, wait up to S seconds for processes outside the benchmark "
        "to use under 0.15 cores (for shared machines)",
    )
    p.add_argument(
        "--server-gc",
        choices=("default", "disable"),
        default="default",
        help="diagnostic: 'disable' turns the server's garbage collector off in the latency runs (implies --no-write)",
    )
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    p.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    args = p.parse_args()

    quick = args.quick
    preset = QUICK if quick else FULL
    size = dataclasses.replace(
        preset,
        runs=args.runs or preset.runs,
        tasks=args.tasks or preset.tasks,
        clients=args.clients or preset.clients,
        rates=args.rates or preset.rates,
        duration=args.duration or preset.duration,
        burst=preset.burst and not args.no_burst,
        baseline=preset.baseline and not args.no_baseline,
        steps=args.connections or preset.steps,
        hold=preset.hold if args.hold is None else args.hold,
        storm_clients=args.storm_clients or preset.storm_clients,
    )
    size.poll = dataclasses.replace(preset.poll, clients=args.clients or preset.poll.clients)
    runs = size.runs
    suites = args.only or list(SUITES)
    if "ingest" in suites and importlib.util.find_spec("flower") is None:
        raise SystemExit(
            "bench: the ingest suite compares with Flower, which is not installed: "
            ".venv/bin/pip install -e '.[bench]' (make bench does)"
        )
    mode = "quick" if quick else "full"
    command = " ".join([".venv/bin/python -m bench.run", *map(shlex.quote, sys.argv[1:])])

    common.set_wait_quiet(args.wait_quiet)
    if args.server_rev:
        sha = common.use_server_snapshot(args.server_rev)
        log(f"server code: {args.server_rev} = {sha}")
    t0 = time.time()
    results: dict = {}
    with PrivateRedis() as redis_server:
        meta = {
            "mode": mode,
            "quick": quick,
            "runs": runs,
            "command": command,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine_info(),
            "versions": versions(redis_server.version()),
            "server_code": common.server_code(),
            "redis_pubsub_limit": "pubsub "
            + " ".join(
                redis_server.client.config_get("client-output-buffer-limit")["client-output-buffer-limit"]
                .split("pubsub ", 1)[1]
                .split()[:3]
            ),
        }
        results["meta"] = meta
        suite_seconds = meta["suite_seconds"] = {}
        for suite in SUITES:
            if suite not in suites:
                continue
            t_suite = time.time()
            if suite == "ingest":
                workdir = Path(tempfile.mkdtemp(prefix="pushserver-bench-ingest-"))
                streams = build_streams(
                    {"unbatched": size.tasks, "batched": 2 * size.tasks}, redis_server.url, redis_server.client, workdir
                )
                burst_streams = None
                if size.burst and size.burst_tasks:
                    (workdir / "burst").mkdir()
                    burst_streams = build_streams(
                        {"batched": size.burst_tasks}, redis_server.url, redis_server.client, workdir / "burst"
                    )
                results["ingest"] = ingest.run(
                    redis_server,
                    streams,
                    runs,
                    burst=size.burst,
                    burst_streams=burst_streams,
                    burst_consumers=size.burst_consumers,
                )
            elif suite == "latency":
                results["latency"] = latency.run(
                    redis_server,
                    size.clients,
                    size.rates,
                    size.duration,
                    runs,
                    warmup_s=size.warmup,
                    baseline=size.baseline,
                    baseline_rates=size.baseline_rates,
                    server_gc=args.server_gc,
                    prefill=args.prefill,
                )
            elif suite == "connections":
                results["connections"] = connections.run(
                    redis_server,
                    runs,
                    size.steps,
                    hold=size.hold,
                    settle=size.settle,
                    probe=size.probe,
                )
            elif suite == "polling":
                results["polling"] = polling.run(redis_server, runs, size.poll)
            elif suite == "storm":
                results["storm"] = storm.run(redis_server, runs, size.storm_clients, size.storm_procs)
            suite_seconds[suite] = time.time() - t_suite
            log(f"{suite}: {suite_seconds[suite]:.0f}s")
    meta["seconds"] = time.time() - t0
    results_dir = Path(__file__).resolve().parent / "results"
    latest = results_dir / f"{mode}-latest.json"
    if args.no_write or args.server_gc != "default":
        # Experiments go to "<mode>-scratch.json", so the raw data behind the
        # published tables is never lost to one.
        dump_json(results_dir / f"{mode}-scratch.json", results)
    else:
        if args.only and latest.exists():
            # Some suites re-measured: keep the others from the latest complete
            # run, and say in the block which figures were measured when.
            merged = json.loads(latest.read_text())
            # An earlier re-run of only these suites has no figure left in the block: drop its line.
            merged["meta"]["reruns"] = [
                r for r in merged["meta"].get("reruns", []) if not set(r["suites"]) <= set(suites)
            ]
            merged["meta"]["reruns"].append(
                {
                    "suites": suites,
                    "date": meta["date"],
                    "command": command,
                    "runs": runs,
                    "server_code": meta["server_code"],
                    "seconds": meta["seconds"],
                }
            )
            merged.update({k: v for k, v in results.items() if k != "meta"})
            results = merged
        dump_json(latest, results)
        report.write_doc(args.doc, mode, report.render(results))
        log(f"wrote {args.doc}")
    print(report.stdout_summary(results))
    log(f"done in {meta['seconds'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
