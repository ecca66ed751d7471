"""Complete tasks as a worker would, without a worker: a result-backend record, then a ``task-succeeded`` event.

``--mode start``: publish ``task-received`` and ``task-started`` (Celery's own
Dispatcher) for every id of the JSON list ``--ids``, print one JSON line, exit.

``--mode complete``: ``--ids`` is a JSON list of rounds (lists of ids). Print
READY, wait for a line on stdin, then for round r complete each of its tasks
at a random moment of [r * round_s, (r + 1) * round_s): take t = time.time(),
write the backend record (``backend.store_result``, as the worker does before
it sends the event), send ``task-succeeded`` with ``timestamp=t``. Print one
JSON line with {task_id: t} — the completion moments the clients' notices are
measured from.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

from celery import Celery, states


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--broker", required=True)
    p.add_argument("--backend", required=True)
    p.add_argument("--ids", required=True)
    p.add_argument("--mode", choices=("start", "complete"), required=True)
    p.add_argument("--round-s", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()

    with open(args.ids) as f:
        ids = json.load(f)
    app = Celery("bench-polling", broker=args.broker, backend=args.backend, set_as_current=False)
    hostname = "celery@polling.bench"
    with app.connection_for_write() as conn:
        dispatcher = app.events.Dispatcher(conn, hostname=hostname)
        if args.mode == "start":
            t0 = time.perf_counter()
            for task_id in ids:
                dispatcher.send(
                    "task-received",
                    uuid=task_id,
                    name="workers.tasks.report",
                    args="()",
                    kwargs="{}",
                    retries=0,
                    root_id=task_id,
                    parent_id=None,
                )
                dispatcher.send("task-started", uuid=task_id)
            dispatcher.close()
            print(json.dumps({"events": 2 * len(ids), "seconds": time.perf_counter() - t0}), flush=True)
            return
        rng = random.Random(args.seed)
        schedule = sorted(
            (r * args.round_s + rng.random() * args.round_s, task_id)
            for r, round_ids in enumerate(ids)
            for task_id in round_ids
        )
        backend = app.backend
        backend.client.ping()
        print("READY", flush=True)
        sys.stdin.readline()
        completed: dict[str, float] = {}
        lateness: list[float] = []
        t0 = time.perf_counter()
        for due, task_id in schedule:
            delay = t0 + due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            lateness.append(time.perf_counter() - t0 - due)
            t = time.time()
            backend.store_result(task_id, "ok", states.SUCCESS)
            dispatcher.send("task-succeeded", uuid=task_id, result="'ok'", runtime=0.1, timestamp=t)
            completed[task_id] = t
        elapsed = time.perf_counter() - t0
        dispatcher.close()
    lateness.sort()
    print(
        json.dumps(
            {
                "completed": completed,
                "seconds": elapsed,
                "lateness_p99_ms": 1000 * lateness[int(0.99 * (len(lateness) - 1))] if lateness else 0.0,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
