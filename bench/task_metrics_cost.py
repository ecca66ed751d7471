"""Per-event cost of the task-level metrics on the ingest hot path: ``Ingest.ingest`` with and without them.

    .venv/bin/python bench/task_metrics_cost.py [--tasks 20000] [--batch 100]

A synthetic stream of decoded events (sent, received, started, three
progress, succeeded per task, a worker heartbeat every 100 events), fed in
batches to an Ingest with no subscribers (the merge and the metrics, no emits).
"Without" replaces ``TaskMetrics.observe`` by a no-op, which is the ingest
path before task-level metrics existed.
"""

from __future__ import annotations

import argparse
import gc
import time
import uuid
from typing import Any

from pushserver.config import Settings
from pushserver.ingest import Ingest
from pushserver.metrics import Metrics
from pushserver.state import TaskStore
from pushserver.subscriptions import Subscriptions


def stream(tasks: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    t = time.time()
    for i in range(tasks):
        task_id, host, name = str(uuid.uuid4()), f"w{i % 4}@host", f"app.tasks.job{i % 20}"
        events.append(
            {
                "type": "task-sent",
                "uuid": task_id,
                "name": name,
                "args": "()",
                "kwargs": "{}",
                "retries": 0,
                "timestamp": t,
                "hostname": "client@host",
            }
        )
        events.append(
            {
                "type": "task-received",
                "uuid": task_id,
                "name": name,
                "args": "()",
                "kwargs": "{}",
                "retries": 0,
                "timestamp": t + 0.001,
                "hostname": host,
            }
        )
        events.append({"type": "task-started", "uuid": task_id, "timestamp": t + 0.002, "hostname": host})
        for step in range(3):
            events.append(
                {
                    "type": "task-progress",
                    "uuid": task_id,
                    "timestamp": t + 0.003 + step / 1000,
                    "hostname": host,
                    "current": step,
                    "total": 3,
                }
            )
        events.append(
            {
                "type": "task-succeeded",
                "uuid": task_id,
                "result": "42",
                "runtime": 0.01 * (i % 50),
                "timestamp": t + 0.01,
                "hostname": host,
            }
        )
        if i % 14 == 0:
            events.append(
                {"type": "worker-heartbeat", "hostname": host, "freq": 2.0, "active": 1, "processed": i, "timestamp": t}
            )
        t += 0.001
    return events


def run(events: list[dict[str, Any]], batch: int, with_task_metrics: bool) -> float:
    settings = Settings(insecure=True)
    metrics = Metrics(max_tasks=settings.max_tasks)
    if not with_task_metrics:
        metrics.task_level.observe = lambda batch, tasks: None  # type: ignore[method-assign]
    # Nobody subscribes, so no change is handed to a coalescer.
    ingest = Ingest(TaskStore(settings.max_tasks), Subscriptions(), None, metrics)  # type: ignore[arg-type]
    batches = [events[i : i + batch] for i in range(0, len(events), batch)]
    gc.collect()
    t0 = time.perf_counter()
    for b in batches:
        ingest.ingest(b)
    elapsed = time.perf_counter() - t0
    metrics.render()  # the scrape works on what was counted
    return elapsed / len(events) * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    events = stream(args.tasks)
    results: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.repeat):
        for flag in (False, True):  # interleaved, so load on the machine hits both alike
            results[flag].append(run(events, args.batch, flag))
    without, with_ = min(results[False]), min(results[True])
    print(f"{len(events)} events, batches of {args.batch}, best of {args.repeat}:")
    print(f"  Ingest.ingest without task-level metrics: {without:.2f} us/event")
    print(f"  Ingest.ingest with task-level metrics:    {with_:.2f} us/event (+{with_ - without:.2f} us/event)")


if __name__ == "__main__":
    main()
