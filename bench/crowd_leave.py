"""How long a server is busy when N idle subscribed sockets close at once (a restart, a network blip, shutdown).

    .venv/bin/python -m bench.crowd_leave 2000 5000 10000
    .venv/bin/python -m bench.crowd_leave --server-rev HEAD~1 2000 5000   # a committed version of the server

Per N: a fresh server on a private Redis, N raw Socket.IO clients (2
processes, each subscribed to a task of its own), then every client process
told to quit at once; the figure is the time until
``pushserver_connected_clients`` reads 0, and the slowest ``/metrics``
request meanwhile (how long the loop was held). python-socketio scans every
room of the namespace per disconnect; pushserver/fanout.py indexes them
(docs/benchmarks.md, "Idle connections at the open-files limit").
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
import uuid
from pathlib import Path

from bench import common
from bench.common import PrivateRedis, PushServerProcess, log
from bench.connections import ClientGroup
from dev.metrics import metric_sum

TIMEOUT_S = 300.0


def measure(n: int) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="pushserver-bench-leave-"))
    tasks = work / "tasks.json"
    tasks.write_text(json.dumps([str(uuid.uuid4()) for _ in range(n)]))
    with PrivateRedis() as redis_server, PushServerProcess(redis_server) as server:
        group = ClientGroup(server.url, "idle", n, 2, tasks)
        connected = metric_sum(server.metrics(), "pushserver_connected_clients")
        log(f"{connected:,.0f} clients connected; closing them all at once")
        started = time.monotonic()
        threading.Thread(target=group.close, daemon=True).start()
        slowest = 0.0
        while time.monotonic() - started < TIMEOUT_S:
            asked = time.monotonic()
            left = metric_sum(server.metrics(), "pushserver_connected_clients")
            slowest = max(slowest, time.monotonic() - asked)
            if left == 0:
                break
            time.sleep(0.2)
        else:
            raise SystemExit(f"{n}: clients still connected after {TIMEOUT_S:.0f}s")
        return {"n": n, "all_gone_s": round(time.monotonic() - started, 2), "slowest_metrics_s": round(slowest, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("counts", type=int, nargs="+", metavar="N", help="sockets closing at once")
    p.add_argument("--server-rev", metavar="REV", help="run pushserver/ as of this git revision")
    args = p.parse_args()
    if args.server_rev:
        log(f"server code: {args.server_rev} = {common.use_server_snapshot(args.server_rev)}")
    for n in args.counts:
        print(json.dumps(measure(n)), flush=True)


if __name__ == "__main__":
    main()
