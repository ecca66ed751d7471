"""N python-socketio AsyncClients in one process, subscribed to task ids, timing every ``task:update``.

Latency of an update = time.time() when its handler runs - the TaskState's
``updated_at`` (the event's ``timestamp``, set by the publisher with
time.time() just before it published). Publisher, server and clients share the
machine's clock.

Driven over stdin/stdout by the harness, one JSON line per answer:
``start`` resets the counters and the CPU meter; ``count`` answers how many
updates arrived since; ``stop`` answers the latencies and counts since
``start``; ``quit`` disconnects and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
from pathlib import Path
from typing import Any

import socketio

from bench.common import percentile

MAX_IDS_PER_CALL = 100


class Clients:
    def __init__(self, url: str, n: int, task_ids: list[str], concurrency: int) -> None:
        self.url = url
        self.n = n
        self.task_ids = task_ids
        self.concurrency = concurrency
        self.clients: list[socketio.AsyncClient] = []
        self.latencies: list[float] = []
        self.received = 0
        self.disconnects = 0
        self.failed: list[str] = []
        self.gc_passes: list[tuple[int, float]] = []  # (generation, ms) since start
        self._gc_t0 = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_t0 = time.perf_counter()
        else:
            self.gc_passes.append((info["generation"], 1000 * (time.perf_counter() - self._gc_t0)))

    def on_update(self, state: dict[str, Any]) -> None:
        # A plain function: python-socketio calls it without another await.
        self.latencies.append(time.time() - state["updated_at"])
        self.received += 1

    async def connect_one(self, i: int, sem: asyncio.Semaphore) -> None:
        sio = socketio.AsyncClient(reconnection=False)
        sio.on("task:update", self.on_update)

        async def on_disconnect(*_: Any) -> None:
            self.disconnects += 1

        sio.on("disconnect", on_disconnect)
        mine = self.task_ids[i :: self.n]
        async with sem:
            try:
                await sio.connect(self.url, transports=["websocket"], wait_timeout=60)
                for k in range(0, len(mine), MAX_IDS_PER_CALL):
                    ack = await sio.call("subscribe", {"task_ids": mine[k : k + MAX_IDS_PER_CALL]}, timeout=60)
                    if not ack.get("ok"):
                        self.failed.append(json.dumps(ack)[:200])
            except Exception as exc:  # noqa: BLE001 - reported to the harness
                self.failed.append(f"{type(exc).__name__}: {exc}")
        self.clients.append(sio)

    async def connect_all(self) -> float:
        t0 = time.perf_counter()
        sem = asyncio.Semaphore(self.concurrency)
        await asyncio.gather(*(self.connect_one(i, sem) for i in range(self.n)))
        return time.perf_counter() - t0

    def stats(self, wall: float, cpu: float) -> dict[str, Any]:
        lat = sorted(x * 1000.0 for x in self.latencies)
        return {
            "received": self.received,
            "p50_ms": percentile(lat, 50),
            "p95_ms": percentile(lat, 95),
            "p99_ms": percentile(lat, 99),
            "max_ms": lat[-1] if lat else float("nan"),
            "mean_ms": sum(lat) / len(lat) if lat else float("nan"),
            "cpu_pct": 100.0 * cpu / wall if wall else 0.0,
            "disconnects": self.disconnects,
            "gc_passes": len(self.gc_passes),
            "gc_max_ms": max((ms for _, ms in self.gc_passes), default=0.0),
        }


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", required=True)
    p.add_argument("--clients", type=int, required=True)
    p.add_argument("--tasks", type=Path, required=True, help="JSON list of task ids to spread over the clients")
    p.add_argument("--concurrency", type=int, default=50, help="connections being opened at once")
    args = p.parse_args()

    clients = Clients(args.url, args.clients, json.loads(args.tasks.read_text()), args.concurrency)
    seconds = await clients.connect_all()
    # The clients are the measuring instrument, not the system under test: a
    # collection of 1 000 clients' objects must not pause the timing, so the
    # collector is off from here on (a run lasts seconds; any pass that still
    # happens is reported).
    gc.collect()
    gc.freeze()
    gc.disable()
    connected = sum(1 for c in clients.clients if c.connected)
    print(
        json.dumps(
            {
                "ready": True,
                "connected": connected,
                "connect_seconds": seconds,
                "failed": clients.failed[:5],
                "failures": len(clients.failed),
            }
        ),
        flush=True,
    )

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    wall0 = time.perf_counter()
    cpu0 = time.process_time()
    while True:
        line = (await reader.readline()).decode().strip()
        if line == "start":
            clients.latencies.clear()
            clients.received = 0
            clients.gc_passes.clear()
            wall0, cpu0 = time.perf_counter(), time.process_time()
            print(json.dumps({"started": True}), flush=True)
        elif line == "stop":
            stats = clients.stats(time.perf_counter() - wall0, time.process_time() - cpu0)
            stats["connected"] = sum(1 for c in clients.clients if c.connected)
            print(json.dumps(stats), flush=True)
        elif line == "count":
            print(json.dumps({"received": clients.received}), flush=True)
        elif line in ("quit", ""):
            break
    await asyncio.gather(*(c.disconnect() for c in clients.clients if c.connected), return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main())
