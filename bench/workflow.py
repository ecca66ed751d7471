"""Workflows: one saved group of 1 000 members whose events arrive at 1 000/s; latency and CPU per workflow:update.

Per run: a fresh ``pushserver serve --insecure`` on a private Redis, a group
of ``--members`` task ids saved in the result backend (``GroupResult.save``,
as ``pushserver.worker.save_workflow`` does), and two phases of the same
event stream (latency_publisher.py: each member's sent, received, started,
3 x progress, succeeded, interleaved over ``--slots`` members in flight):

- ``baseline``: nobody subscribed, the events of fresh ids merged only;
- ``workflow``: one python-socketio client subscribed ``{workflow_id}``.

Latency is client receipt minus the update's ``updated_at`` (the newest
member event's timestamp, taken just before the publisher sent it), so it
covers Redis, the receiver, the merge, the aggregation and the emit (and,
for an update of counts only, the ``--progress-hz`` coalescing); the final
``SUCCESS`` update's own latency is reported apart. The overhead is the
server process's extra CPU (the event loop, not the receiver child) in the
workflow phase over the baseline, as a percentage of the baseline (issue 19's
target 6: at most 20 %); CPU per workflow update is that extra CPU divided by
the updates the client received. The machine may be shared: every figure is
the median of ``--runs`` runs, with the range.

    python -m bench.workflow [--runs 3] [--members 1000] [--rate 1000] [--server-rev REV]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import socketio
from celery import Celery
from celery.result import AsyncResult, GroupResult

from bench import common
from bench.common import CLK_TCK, PYTHON, PrivateRedis, PushServerProcess, log, percentile, spread, wait_quiet
from bench.latency_publisher import LIFECYCLE


def save_group(backend_url: str, members: list[str]) -> str:
    """Save a group of ``members`` in the result backend; return its id."""
    app = Celery("bench-workflow", backend=backend_url, set_as_current=False)
    group_id = str(uuid.uuid4())
    results = [AsyncResult(m, app=app) for m in members]
    GroupResult(group_id, results, app=app).save(backend=app.backend)
    for result in results:
        result.backend = None  # nothing pending to cancel when it is collected (after this Redis is gone)
    app.close()
    return group_id


def main_process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of the server's own process (its event loop), not its receiver child."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def publish(broker: str, members: list[str], rate: float, slots: int) -> dict[str, Any]:
    """Send every member's lifecycle at ``rate`` events/s (latency_publisher.py); return its report."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        # The publisher takes one id more than it finishes when the last slot refills: never reached.
        json.dump(members + [str(uuid.uuid4()) for _ in range(slots + 1)], f)
    events = len(members) * len(LIFECYCLE)
    proc = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "bench.latency_publisher",
            "--broker",
            broker,
            "--rate",
            str(rate),
            "--events",
            str(events),
            "--slots",
            str(slots),
            "--tasks",
            f.name,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    if proc.stdout.readline().strip() != "READY":
        raise RuntimeError("latency_publisher did not start")
    proc.stdin.write("go\n")
    proc.stdin.flush()
    report = json.loads(proc.stdout.readline())
    proc.wait(30)
    Path(f.name).unlink()
    return report


async def watch_and_publish(
    url: str, workflow_id: str | None, broker: str, members: list[str], rate: float, slots: int, server_pid: int
) -> dict[str, Any]:
    """One phase: subscribe (or not), publish, wait for the final SUCCESS (or for quiet); measure."""
    latencies: list[float] = []
    final: dict[str, Any] = {}
    final_latency: list[float] = []
    done = asyncio.Event()
    client = socketio.AsyncClient()

    @client.on("workflow:update")
    def on_update(state: dict[str, Any]) -> None:
        now = time.time()
        if state.get("updated_at"):
            latencies.append(now - state["updated_at"])
        final.update(state)  # an update without task_ids keeps the ones held (docs/protocol.md)
        if state["state"] == "SUCCESS" and not done.is_set():
            final_latency.append(latencies[-1] if state.get("updated_at") else float("nan"))
            done.set()

    if workflow_id is not None:
        await client.connect(url, transports=["websocket"])
        ack = await client.call("subscribe", {"workflow_id": workflow_id}, timeout=30)
        if not ack.get("ok") or ack["workflows"][0]["total"] != len(members):
            raise RuntimeError(f"subscribe failed: {ack}")
    cpu0 = main_process_cpu_s(server_pid)
    t0 = time.monotonic()
    report = await asyncio.to_thread(publish, broker, members, rate, slots)
    if workflow_id is not None:
        await asyncio.wait_for(done.wait(), 60)
        await client.disconnect()
    else:
        await asyncio.sleep(1.0)  # the tail of the stream through the receiver
    seconds = time.monotonic() - t0
    cpu_s = main_process_cpu_s(server_pid) - cpu0
    latencies.sort()
    return {
        "events_per_s": report["events_per_s"],
        "cpu_s": cpu_s,
        "seconds": seconds,
        "updates": len(latencies),
        "final": {k: final.get(k) for k in ("state", "total", "completed", "percent")} if final else None,
        "p50_ms": 1000 * percentile(latencies, 50) if latencies else None,
        "p95_ms": 1000 * percentile(latencies, 95) if latencies else None,
        "p99_ms": 1000 * percentile(latencies, 99) if latencies else None,
        "max_ms": 1000 * latencies[-1] if latencies else None,
        "final_ms": 1000 * final_latency[0] if final_latency else None,
    }


def one_run(members: int, rate: float, slots: int) -> dict[str, Any]:
    with PrivateRedis() as redis, PushServerProcess(redis) as server:
        baseline = asyncio.run(
            watch_and_publish(
                server.url, None, redis.url, [str(uuid.uuid4()) for _ in range(members)], rate, slots, server.pid
            )
        )
        wait_quiet(server)
        ids = [str(uuid.uuid4()) for _ in range(members)]
        group_id = save_group(redis.backend_url, ids)
        watched = asyncio.run(watch_and_publish(server.url, group_id, redis.url, ids, rate, slots, server.pid))
    extra = watched["cpu_s"] - baseline["cpu_s"]
    return {
        "baseline": baseline,
        "workflow": watched,
        "cpu_ms_per_update": 1000 * extra / watched["updates"] if watched["updates"] else None,
        "cpu_overhead_pct": 100 * extra / baseline["cpu_s"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--members", type=int, default=1000)
    p.add_argument("--rate", type=float, default=1000.0, help="member events per second")
    p.add_argument("--slots", type=int, default=50, help="members in flight at once")
    p.add_argument("--json", type=Path, help="also write the runs here")
    p.add_argument("--server-rev", metavar="REV", help="run the server from this git revision of pushserver/")
    args = p.parse_args()
    if args.server_rev:
        log(f"server code: {args.server_rev} = {common.use_server_snapshot(args.server_rev)}")
    runs = []
    for i in range(args.runs):
        log(f"workflow run {i + 1}/{args.runs}: {args.members} members, {args.rate:g} events/s")
        runs.append(one_run(args.members, args.rate, args.slots))
        log(json.dumps(runs[-1]))
    w = [r["workflow"] for r in runs]
    summary = {
        "server_code": common.server_code(),
        "runs": len(runs),
        "members": args.members,
        "rate": args.rate,
        "events_per_s": spread(r["events_per_s"] for r in w).fmt(0),
        "updates": spread(r["updates"] for r in w).fmt(0),
        "latency_p50_ms": spread(r["p50_ms"] for r in w).fmt(1),
        "latency_p95_ms": spread(r["p95_ms"] for r in w).fmt(1),
        "latency_p99_ms": spread(r["p99_ms"] for r in w).fmt(1),
        "latency_max_ms": spread(r["max_ms"] for r in w).fmt(1),
        "final_success_latency_ms": spread(r["final_ms"] for r in w).fmt(1),
        "server_cpu_s_baseline": spread(r["baseline"]["cpu_s"] for r in runs).fmt(2),
        "server_cpu_s_workflow": spread(r["cpu_s"] for r in w).fmt(2),
        "cpu_ms_per_update": spread(r["cpu_ms_per_update"] for r in runs).fmt(3),
        "cpu_overhead_pct": spread(r["cpu_overhead_pct"] for r in runs).fmt(0),
        "final": [r["final"] for r in w],
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
