"""Memory per task in the TaskStore: merge a realistic lifecycle for N tasks and measure with tracemalloc."""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
import uuid

from pushserver.state import TaskStore


def lifecycle(task_id: str, t: float) -> list[dict]:
    base = {"uuid": task_id, "hostname": "celery@worker-1"}
    return [
        {**base, "type": "task-sent", "timestamp": t, "name": "workers.tasks.resize_and_watermark", "retries": 0},
        {
            **base,
            "type": "task-received",
            "timestamp": t + 0.001,
            "name": "workers.tasks.resize_and_watermark",
            "retries": 0,
        },
        {**base, "type": "task-started", "timestamp": t + 0.002},
        *(
            {
                **base,
                "type": "task-progress",
                "timestamp": t + 0.01 * i,
                "current": i,
                "total": 5,
                "message": f"step {i}/5",
            }
            for i in range(1, 6)
        ),
        {
            **base,
            "type": "task-succeeded",
            "timestamp": t + 0.1,
            "runtime": 0.098,
            "result": "{'path': '/media/%s.jpg', 'width': 640, 'height': 480}" % task_id,
        },
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=100_000)
    n = parser.parse_args().tasks
    # Events are made inside the traced window and dropped after merging, so
    # what remains is exactly what the store keeps (strings included).
    store = TaskStore(max_tasks=n)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        for event in lifecycle(str(uuid.uuid4()), 1_700_000_000.0 + i):
            store.merge_event(event)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    print(
        f"{n} tasks in the store: {(after - before) / n / 1024:.2f} KiB per task ({(after - before) / 2**20:.0f} MiB)"
    )
    events = [e for i in range(n) for e in lifecycle(str(uuid.uuid4()), 1_700_000_000.0 + i)]
    store2 = TaskStore(max_tasks=n)
    started = time.perf_counter()
    for event in events:
        store2.merge_event(event)
    elapsed = time.perf_counter() - started
    print(f"merge without tracemalloc: {elapsed / len(events) * 1e6:.2f} µs per event")


if __name__ == "__main__":
    main()
