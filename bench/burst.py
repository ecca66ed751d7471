"""Burst loss (or, with ``--saturating``, ingest rate), before and after, in one run: the ingest suite's burst runs for the working tree and a git revision.

``python -m bench.burst --before REV`` records both stream shapes, measures
the bare Receiver's saturating rate (the burst rate is ``--fraction`` of
its median), then alternates burst runs of the working tree's pushserver and
of pushserver at ``REV`` (exported with git archive), so both meet the same
machine load. Prints one line per run and a JSON summary: events lost per
run, runs that lost any, peak Redis backlog, and Redis's own count of
output-buffer disconnections.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench import common, ingest
from bench.common import PrivateRedis, log
from bench.stream import build_streams


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and range of what a list of burst runs lost, and how many lost anything."""
    lost = [r["lost"] for r in results]
    backlog = [r["peak_backlog_mb"] for r in results]
    return {
        "runs": len(results),
        "runs_losing": sum(1 for x in lost if x),
        "lost_median": statistics.median(lost),
        "lost_range": [min(lost), max(lost)],
        "sent": results[0]["sent"] if results else 0,
        "peak_redis_backlog_mb_median": statistics.median(backlog),
        "peak_redis_backlog_mb_max": max(backlog),
        "redis_outbuf_disconnections": sum(r["redis_outbuf_disconnections"] or 0 for r in results),
        "errors": sorted({r["error"] for r in results if r["error"]}),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--before", metavar="REV", help="also measure pushserver at this git revision")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--tasks", type=int, default=25_000, help="tasks in the unbatched stream (batched: twice)")
    p.add_argument("--shapes", nargs="+", default=["unbatched", "batched"])
    p.add_argument("--fraction", type=float, default=0.8, help="burst rate as a fraction of the bare Receiver's")
    p.add_argument(
        "--saturating",
        action="store_true",
        help="measure the saturating ingest rate (events/s, and as a ratio to the bare Receiver's median)"
        " instead of bursts",
    )
    args = p.parse_args()

    before_source = None
    if args.before:
        common.use_server_snapshot(args.before)
        before_source, before_rev = common.SERVER_SOURCE, common.SERVER_REV
        common.SERVER_SOURCE = common.SERVER_REV = None
    sizes = {"unbatched": args.tasks, "batched": 2 * args.tasks}
    out: dict[str, Any] = {"fraction": args.fraction, "shapes": {}}
    with PrivateRedis() as redis_server:
        workdir = Path(tempfile.mkdtemp(prefix="pushserver-bench-burst-"))
        streams = build_streams({s: sizes[s] for s in args.shapes}, redis_server.url, redis_server.client, workdir)
        for shape, stream in streams.items():
            path, expected = Path(stream["path"]), stream["events"]
            bare = []
            for i in range(3):
                r = ingest.measure("bare", redis_server, path, expected, max_backlog=ingest.MAX_BACKLOG)
                log(f"{shape} bare saturating {i + 1}/3: {ingest.describe(r)}")
                if r["events_per_s"]:
                    bare.append(r["events_per_s"])
            if args.saturating:
                sat: dict[str, list[float]] = {"after": [], "before": []} if before_source else {"after": []}
                for i in range(args.runs):
                    for which in sat:
                        if which == "before":
                            common.SERVER_SOURCE, common.SERVER_REV = before_source, before_rev
                        r = ingest.measure("pushserver", redis_server, path, expected, max_backlog=ingest.MAX_BACKLOG)
                        common.SERVER_SOURCE = common.SERVER_REV = None
                        log(f"{shape} saturating, {which}, run {i + 1}/{args.runs}: {ingest.describe(r)}")
                        if r["events_per_s"]:
                            sat[which].append(r["events_per_s"])
                out["shapes"][shape] = {
                    "bare_per_s": bare,
                    **{
                        which: {
                            "per_s": rates,
                            "median": statistics.median(rates) if rates else None,
                            "ratio_to_bare": statistics.median(rates) / statistics.median(bare) if rates else None,
                        }
                        for which, rates in sat.items()
                    },
                }
                continue
            rate = args.fraction * statistics.median(bare)
            runs: dict[str, list[dict[str, Any]]] = {"after": [], "before": []} if before_source else {"after": []}
            for i in range(args.runs):
                for which in runs:
                    if which == "before":
                        common.SERVER_SOURCE, common.SERVER_REV = before_source, before_rev
                    r = ingest.measure("pushserver", redis_server, path, expected, rate=rate)
                    common.SERVER_SOURCE = common.SERVER_REV = None
                    runs[which].append(r)
                    log(f"{shape} burst at {rate:,.0f} ev/s, {which}, run {i + 1}/{args.runs}: {ingest.describe(r)}")
            out["shapes"][shape] = {
                "offered_per_s": rate,
                "bare_per_s": bare,
                **{which: summary(rs) for which, rs in runs.items()},
            }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
