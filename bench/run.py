"""Run the benchmarks and write docs/benchmarks.md.

    .venv/bin/python bench/run.py            # full: 5 runs, 1 000 clients (~10-15 min)
    .venv/bin/python bench/run.py --quick    # 3 short runs, 100 clients (~3 min)
    .venv/bin/python bench/run.py --runs 7 --only latency

Everything runs against a private redis-server on a free port, started here
and stopped at the end; progress goes to stderr, the summary to stdout, the
raw results to bench/results/<mode>-latest.json (<mode>-scratch.json for
--no-write and diagnostic runs).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ingest  # noqa: E402
import latency  # noqa: E402
import report  # noqa: E402
import common  # noqa: E402
from common import ROOT, PrivateRedis, dump_json, log, machine_info, versions  # noqa: E402
from stream import build_streams  # noqa: E402

SUITES = ("ingest", "latency")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="3 short runs with 100 clients")
    p.add_argument("--runs", type=int, help="runs per figure (default 5; 3 with --quick)")
    p.add_argument("--only", choices=SUITES, action="append",
                   help="run only this suite (repeatable); the other suites' figures in the docs are kept "
                        "from the latest complete run of the same mode")
    p.add_argument("--tasks", type=int, help="tasks in the unbatched ingest stream, 7 events each "
                                             "(default 25 000; 6 000 with --quick); the batched one has twice as many")
    p.add_argument("--clients", type=int, help="subscribed Socket.IO clients (default 1 000; 100 with --quick)")
    p.add_argument("--rates", type=float, nargs="+", default=[100.0, 1000.0], help="latency rates, events/s")
    p.add_argument("--duration", type=float, help="seconds per latency rate per run (default 10; 4 with --quick)")
    p.add_argument("--prefill", type=int, default=0, metavar="TASKS",
                   help="before the latency phases, fill the server's store with this many finished tasks "
                        "(a long-running server holds up to --max-tasks, 100 000 by default)")
    p.add_argument("--no-burst", action="store_true", help="skip the ingest burst (loss) runs")
    p.add_argument("--no-baseline", action="store_true", help="skip the bare-Receiver latency baseline")
    p.add_argument("--server-rev", metavar="REV",
                   help="run the server from this git revision of pushserver/ (exported to a temp dir) "
                        "instead of the working tree, so that edits made during the run do not mix in")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                   help="before each measurement, wait up to S seconds for processes outside the benchmark "
                        "to use under 0.15 cores (for shared machines)")
    p.add_argument("--server-gc", choices=("default", "disable"), default="default",
                   help="diagnostic: 'disable' turns the server's garbage collector off in the latency runs "
                        "(implies --no-write)")
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    p.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    args = p.parse_args()

    quick = args.quick
    runs = args.runs or (3 if quick else 5)
    tasks = args.tasks or (6_000 if quick else 25_000)
    clients = args.clients or (100 if quick else 1_000)
    duration = args.duration or (4.0 if quick else 10.0)
    suites = args.only or list(SUITES)
    mode = "quick" if quick else "full"
    command = " ".join([".venv/bin/python bench/run.py", *map(shlex.quote, sys.argv[1:])])

    common.WAIT_QUIET_S = args.wait_quiet
    if args.server_rev:
        sha = common.use_server_snapshot(args.server_rev)
        log(f"server code: {args.server_rev} = {sha}")
    t0 = time.time()
    results: dict = {}
    with PrivateRedis() as redis_server:
        meta = {
            "mode": mode, "quick": quick, "runs": runs, "command": command,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine_info(), "versions": versions(redis_server.version()),
            "server_code": common.server_code(),
            "redis_pubsub_limit": "pubsub " + " ".join(
                redis_server.client.config_get("client-output-buffer-limit")["client-output-buffer-limit"]
                .split("pubsub ", 1)[1].split()[:3]),
        }
        results["meta"] = meta
        if "ingest" in suites:
            workdir = Path(tempfile.mkdtemp(prefix="pushserver-bench-ingest-"))
            streams = build_streams({"unbatched": tasks, "batched": 2 * tasks}, redis_server.url,
                                    redis_server.client, workdir)
            results["ingest"] = ingest.run(redis_server, streams, runs, burst=not args.no_burst)
        if "latency" in suites:
            results["latency"] = latency.run(redis_server, clients, args.rates, duration, runs,
                                             baseline=not args.no_baseline, server_gc=args.server_gc,
                                             prefill=args.prefill)
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
            merged["meta"].setdefault("reruns", []).append(
                {"suites": suites, "date": meta["date"], "command": command, "runs": runs,
                 "server_code": meta["server_code"], "seconds": meta["seconds"]})
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
