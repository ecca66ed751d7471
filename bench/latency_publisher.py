"""Publish task events at a fixed rate with Celery's own Dispatcher, one message per event.

Each event's ``timestamp`` is time.time() just before ``Dispatcher.send``, so
the latency the clients measure covers kombu's serialisation, Redis, the
server and the client. One PUBLISH round trip per message would cap the rate
(docs/benchmarks.md, Method), so the PUBLISHes are pipelined (stream.py
replaces the same kombu call): the pipeline is flushed as soon as the next
event is not yet due, so at 100 and 1 000 events/s every message still
leaves alone, right after it is built; at 5 000/s a round trip carries the
few events built since the last one (each waits at most that long).

The events are lifecycles (sent, received, started, progress x3, succeeded) of
tasks the clients watch, interleaved over ``--slots`` tasks in flight so that
two events of one task are ``slots / rate`` seconds apart. With that spacing
above the server's progress interval (``--progress-hz``, default 10 Hz ->
100 ms) every event is a visible change emitted at once: nothing is coalesced,
and the harness checks that (``pushserver_progress_coalesced_total``).

Prints READY, waits for a line on stdin, publishes, prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from celery import Celery
from kombu.transport import redis as kombu_redis

LIFECYCLE = [
    "task-sent",
    "task-received",
    "task-started",
    "task-progress",
    "task-progress",
    "task-progress",
    "task-succeeded",
]
PROGRESS_STEPS = 3
MAX_PIPELINE = 50  # messages per round trip at most, when the publisher is behind


def fields_for(step: int, task_id: str) -> dict:
    kind = LIFECYCLE[step]
    if kind in ("task-sent", "task-received"):
        return {
            "uuid": task_id,
            "name": "workers.tasks.demo_progress",
            "args": "(3, 0.1)",
            "kwargs": "{}",
            "retries": 0,
            "root_id": task_id,
            "parent_id": None,
        }
    if kind == "task-progress":
        current = step - 2
        return {"uuid": task_id, "current": current, "total": PROGRESS_STEPS, "message": f"step {current}"}
    if kind == "task-succeeded":
        return {"uuid": task_id, "result": "3", "runtime": 0.3}
    return {"uuid": task_id}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--broker", required=True)
    p.add_argument("--rate", type=float, required=True, help="events per second")
    p.add_argument("--events", type=int, required=True)
    p.add_argument("--slots", type=int, required=True, help="tasks in flight at once")
    p.add_argument("--tasks", type=Path, required=True, help="JSON list of task ids to use, in order")
    args = p.parse_args()

    task_ids = json.loads(args.tasks.read_text())
    app = Celery("bench-latency", broker=args.broker, set_as_current=False)
    lateness: list[float] = []
    with app.connection_for_write() as conn:
        # The Dispatcher builds every message; only kombu's last step, one
        # PUBLISH per message (most of what a send costs), goes into
        # a pipeline that is flushed whenever the publisher has caught up:
        # at once at low rates, a few events per round trip at 5 000/s.
        channel = conn.default_channel
        pipe = channel.client.pipeline(transaction=False)

        def put_fanout(exchange: str, message: dict, routing_key: str, **_: object) -> None:
            pipe.publish(channel._get_publish_topic(exchange, routing_key), kombu_redis.dumps(message))

        channel._put_fanout = put_fanout
        dispatcher = app.events.Dispatcher(conn, hostname="celery@latency.bench")
        next_task = 0
        slots: list[list] = []  # [task_id, step]
        for _ in range(args.slots):
            slots.append([task_ids[next_task], 0])
            next_task += 1
        print("READY", flush=True)
        sys.stdin.readline()
        interval = 1.0 / args.rate
        t0 = time.perf_counter()
        flushes = 0
        for i in range(args.events):
            due = t0 + i * interval
            delay = due - time.perf_counter()
            if delay > 0 or len(pipe) >= MAX_PIPELINE:
                if len(pipe):
                    pipe.execute()
                    flushes += 1
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            lateness.append(time.perf_counter() - due)
            slot = slots[i % args.slots]
            task_id, step = slot
            dispatcher.send(LIFECYCLE[step], timestamp=time.time(), **fields_for(step, task_id))
            step += 1
            if step == len(LIFECYCLE):
                if next_task >= len(task_ids):
                    raise SystemExit("latency_publisher: ran out of task ids")
                slot[0], slot[1] = task_ids[next_task], 0
                next_task += 1
            else:
                slot[1] = step
        if len(pipe):
            pipe.execute()
            flushes += 1
        elapsed = time.perf_counter() - t0
        dispatcher.close()
    lateness.sort()
    print(
        json.dumps(
            {
                "events": args.events,
                "tasks": next_task,
                "seconds": elapsed,
                "round_trips": flushes,
                "events_per_s": args.events / elapsed if elapsed else 0.0,
                "lateness_p99_ms": 1000 * lateness[int(0.99 * (len(lateness) - 1))] if lateness else 0.0,
                "lateness_max_ms": 1000 * lateness[-1] if lateness else 0.0,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
