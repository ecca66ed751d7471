"""The SUCCESS notice's cost of reading the result from the backend: ``--forward-results repr`` vs ``json``.

One run alternates the two modes for ``--rounds`` rounds (the order flips every
round, so a drift of the machine's load touches both alike). Per round and mode:
a fresh ``pushserver serve --insecure --forward-results MODE`` on a private
Redis (broker and result backend); a python-socketio client subscribed to every
task of the round; each task's result stored in the backend as a worker stores it, just before the event
(``backend.store_result``, a dict like workers.tasks.predict returns); then the
task's ``task-succeeded`` event published with Celery's own Dispatcher, whose
``timestamp`` is time.time() at the send. Latency = the client's receipt time
minus the update's ``updated_at`` (that timestamp), for the SUCCESS update only.

Two phases per round: ``paced`` — one SUCCESS at a time (``--rate`` per second),
the cost of one read; ``burst`` — ``--burst`` SUCCESS events sent back to back,
which the server reads in batches. Reported: per mode and phase, the median over
rounds of each round's p50 and p95, with their spread (min–max), and whether every
notice carried the format the mode promises (json values under ``json``).

    python bench/result_latency.py --rounds 5 [--tasks 200 --rate 20 --burst 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import socketio
from celery import Celery
from common import PrivateRedis, PushServerProcess, dump_json, log, machine_info, percentile, spread, versions

RESULT = {"label": "setosa", "probabilities": {"setosa": 0.979, "versicolor": 0.021, "virginica": 0.0}}
MAX_IDS_PER_CALL = 100
WARMUP = 20


class Watcher:
    """One Socket.IO client timing the SUCCESS update of each task."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sio = socketio.AsyncClient(reconnection=False)
        self.latency: dict[str, float] = {}
        self.formats: dict[str, Any] = {}
        self.done = asyncio.Event()
        self.expected = 0
        self.sio.on("task:update", self.on_update)

    def on_update(self, state: dict[str, Any]) -> None:
        if state["state"] != "SUCCESS" or state["task_id"] in self.latency:
            return
        self.latency[state["task_id"]] = time.time() - state["updated_at"]
        self.formats[state["task_id"]] = state.get("result_format")
        if len(self.latency) >= self.expected:
            self.done.set()

    async def start(self, task_ids: list[str]) -> None:
        await self.sio.connect(self.url, transports=["websocket"], wait_timeout=10)
        for i in range(0, len(task_ids), MAX_IDS_PER_CALL):
            ack = await self.sio.call("subscribe", {"task_ids": task_ids[i : i + MAX_IDS_PER_CALL]}, timeout=30)
            assert ack["ok"], ack

    async def wait(self, expected: int, timeout: float = 60) -> None:
        self.expected = expected
        if len(self.latency) >= expected:
            return
        self.done.clear()
        await asyncio.wait_for(self.done.wait(), timeout)


class Publisher:
    """Stores results the way a worker does, then announces them with Celery's Dispatcher."""

    def __init__(self, redis: PrivateRedis) -> None:
        self.app = Celery("bench-results", broker=redis.url, backend=redis.backend_url, set_as_current=False)
        self.connection = self.app.connection_for_write()
        self.dispatcher = self.app.events.Dispatcher(self.connection, hostname="celery@bench")
        self.lock = threading.Lock()

    def succeeded(self, task_id: str) -> None:
        """Store the result, then send the event, in the order a worker does (the event's timestamp is after)."""
        with self.lock:
            self.app.backend.store_result(task_id, RESULT, "SUCCESS")
            self.dispatcher.send("task-succeeded", uuid=task_id, result=repr(RESULT), runtime=0.01)

    def close(self) -> None:
        self.dispatcher.close()
        self.connection.release()
        self.app.close()


def summary(latencies: list[float]) -> dict[str, float]:
    ms = sorted(1000 * v for v in latencies)
    return {"n": len(ms), "p50": percentile(ms, 50), "p95": percentile(ms, 95), "max": ms[-1]}


async def one_round(
    redis: PrivateRedis, publisher: Publisher, mode: str, tasks: int, rate: float, burst: int
) -> dict[str, Any]:
    warm = [str(uuid.uuid4()) for _ in range(WARMUP)]
    paced = [str(uuid.uuid4()) for _ in range(tasks)]
    bursty = [str(uuid.uuid4()) for _ in range(burst)]
    everything = warm + paced + bursty
    with PushServerProcess(redis, ["--forward-results", mode]) as server:
        watcher = Watcher(server.url)
        await watcher.start(everything)
        try:
            for task_id in warm:
                await asyncio.to_thread(publisher.succeeded, task_id)
            await watcher.wait(len(warm))
            for i, task_id in enumerate(paced):
                due = time.monotonic() + 1.0 / rate
                await asyncio.to_thread(publisher.succeeded, task_id)
                await asyncio.sleep(max(0.0, due - time.monotonic()))
            await watcher.wait(len(warm) + len(paced))

            def send_burst() -> None:
                for task_id in bursty:
                    publisher.succeeded(task_id)

            await asyncio.to_thread(send_burst)
            await watcher.wait(len(everything))
        finally:
            await watcher.sio.disconnect()
        reads = {k: v for k, v in server.metrics().items() if k.startswith("pushserver_results_total")}
    want = "json" if mode == "json" else "repr"
    wrong = sum(1 for t in paced + bursty if watcher.formats.get(t) != want)
    return {
        "mode": mode,
        "paced": summary([watcher.latency[t] for t in paced]),
        "burst": summary([watcher.latency[t] for t in bursty]),
        "wrong_format": wrong,
        "result_reads": reads,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rounds: list[dict[str, Any]] = []
    with PrivateRedis() as redis:
        publisher = Publisher(redis)
        try:
            for r in range(args.rounds):
                for mode in ("repr", "json") if r % 2 == 0 else ("json", "repr"):
                    result = await one_round(redis, publisher, mode, args.tasks, args.rate, args.burst)
                    rounds.append(result)
                    log(
                        f"round {r + 1} {mode}: paced p50 {result['paced']['p50']:.2f} ms"
                        f" p95 {result['paced']['p95']:.2f} ms; burst p50 {result['burst']['p50']:.2f} ms"
                        f" p95 {result['burst']['p95']:.2f} ms; wrong format {result['wrong_format']}"
                    )
        finally:
            publisher.close()
        redis_version = redis.version()
    table: dict[str, dict[str, str]] = {}
    medians: dict[tuple[str, str, str], float] = {}
    for mode in ("repr", "json"):
        for phase in ("paced", "burst"):
            for q in ("p50", "p95"):
                s = spread(x[phase][q] for x in rounds if x["mode"] == mode)
                table.setdefault(f"{mode} {phase}", {})[q] = s.fmt(2, " ms")
                medians[(mode, phase, q)] = s.median
    deltas = {
        f"{phase} {q}": round(medians[("json", phase, q)] - medians[("repr", phase, q)], 2)
        for phase in ("paced", "burst")
        for q in ("p50", "p95")
    }
    return {
        "rounds": rounds,
        "table": table,
        "json_minus_repr_ms": deltas,
        "settings": vars(args),
        "machine": machine_info(),
        "versions": versions(redis_version),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds; each runs repr and json once")
    parser.add_argument("--tasks", type=int, default=200, help="paced SUCCESS events per round and mode")
    parser.add_argument("--rate", type=float, default=20.0, help="paced SUCCESS events per second")
    parser.add_argument("--burst", type=int, default=200, help="SUCCESS events sent back to back")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    out = asyncio.run(run(args))
    for row, qs in out["table"].items():
        print(f"{row:12} p50 {qs['p50']:>26}   p95 {qs['p95']:>26}")
    print("json - repr (medians, ms):", out["json_minus_repr_ms"])
    print("notices with the wrong result_format:", sum(x["wrong_format"] for x in out["rounds"]))
    if args.json:
        dump_json(args.json, out)


if __name__ == "__main__":
    main()
