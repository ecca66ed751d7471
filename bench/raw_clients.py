"""Many light clients in one process: raw Engine.IO/Socket.IO websockets, or HTTP pollers.

python-socketio's AsyncClient is heavy per client (docs/benchmarks.md,
Method); to hold 10 000 connections from a 2-core machine the clients here
speak the wire protocol themselves over aiohttp websockets (Engine.IO v4,
Socket.IO v5): open packet ``0{...}`` -> ``40`` -> ``40{sid}`` -> one
``42N["subscribe", {task_ids}]`` -> ``43N[ack]``, then answer the server's
pings (``2`` -> ``3``) and note ``task:update`` events.

Modes:
- ``idle``: connect, subscribe, answer pings, nothing else (connections.py).
- ``push``: as idle, and record when each task is first seen finished
  (a ``task:update`` whose state is SUCCESS).
- ``poll``: no websocket; every ``--interval`` s (random phase per client)
  ``GET /tasks/{id}`` of the client's current task until it is SUCCESS, then
  the next; the last task of each client is never completed, so the load
  stays steady.

Each client gets ``--per-client`` task ids from ``--tasks`` (client i takes
ids [i*k, (i+1)*k) of the list, with ``--offset`` added to i).

Driven over stdin/stdout, one JSON line per answer: after connecting it
prints ``{"ready": ...}``; ``start`` zeroes the counters; ``stats`` answers
counts and CPU since ``start``; ``notices`` answers {task_id: time.time()
first known finished}; ``quit`` closes everything and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import resource
import sys
import time
from typing import Any

import aiohttp

try:
    import orjson

    loads = orjson.loads

    def dumps(obj: Any) -> str:
        return orjson.dumps(obj).decode()
except ImportError:  # pragma: no cover
    loads = json.loads
    dumps = json.dumps

FINISHED = {"SUCCESS", "FAILURE", "REVOKED", "REJECTED"}


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def socketio_connect(ws: aiohttp.ClientWebSocketResponse, auth: dict[str, Any] | None, timeout: float) -> None:
    """Socket.IO's connect over an Engine.IO WebSocket just opened: the open packet, then ``40`` until the server's."""
    opened = await asyncio.wait_for(ws.receive_str(), timeout)
    if not opened.startswith("0"):
        raise RuntimeError(f"no Engine.IO open packet: {opened[:80]!r}")
    await ws.send_str("40" + (dumps(auth) if auth else ""))
    while True:
        msg = await asyncio.wait_for(ws.receive_str(), timeout)
        if msg == "2":
            await ws.send_str("3")
        elif msg.startswith("40"):
            return
        elif msg.startswith("44"):
            raise RuntimeError(f"connect refused: {msg[:200]}")


class Clients:
    def __init__(self, args: argparse.Namespace, task_ids: list[str]) -> None:
        self.args = args
        self.base = args.url.rstrip("/")
        self.ws_url = self.base.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
        k = args.per_client
        self.tasks = [task_ids[(args.offset + i) * k : (args.offset + i + 1) * k] for i in range(args.clients)]
        self.connected = 0
        self.subscribed = 0
        self.failed: list[str] = []
        self.disconnects = 0
        self.pings = 0
        self.updates = 0
        self.requests = 0
        self.request_errors = 0
        self.request_seconds = 0.0
        self.notices: dict[str, float] = {}
        self.running: list[asyncio.Task] = []
        self.stopping = False
        self.headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}

    # -- websocket clients ---------------------------------------------------

    async def ws_client(
        self, i: int, sem: asyncio.Semaphore, session: aiohttp.ClientSession, ready: asyncio.Event
    ) -> None:
        ws = None
        try:
            async with sem:
                ws = await session.ws_connect(
                    self.ws_url, autoping=True, max_msg_size=0, timeout=aiohttp.ClientWSTimeout(ws_close=2)
                )
                await socketio_connect(ws, {"token": self.args.token} if self.args.token else None, 30)
                self.connected += 1
                await ws.send_str("421" + dumps(["subscribe", {"task_ids": self.tasks[i]}]))
                while True:
                    msg = await asyncio.wait_for(ws.receive_str(), 60)
                    if msg == "2":
                        await ws.send_str("3")
                    elif msg.startswith("431"):
                        ack = loads(msg[3:])[0]
                        if not ack.get("ok"):
                            raise RuntimeError(f"subscribe refused: {msg[:200]}")
                        break
                self.subscribed += 1
        except Exception as exc:  # noqa: BLE001 - reported to the harness
            self.failed.append(f"{type(exc).__name__}: {exc}"[:200])
            if ws is not None:
                await ws.close()
            return
        push = self.args.mode == "push"
        try:
            while True:
                msg = await ws.receive()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                data = msg.data
                if data == "2":
                    self.pings += 1
                    await ws.send_str("3")
                elif data.startswith('42["task:update"'):
                    self.updates += 1
                    if push:
                        state = loads(data[2:])[1]
                        if state.get("state") in FINISHED and state["task_id"] not in self.notices:
                            self.notices[state["task_id"]] = time.time()
        except Exception:  # noqa: BLE001
            pass
        if not self.stopping:
            self.disconnects += 1
        await ws.close()

    # -- pollers -------------------------------------------------------------

    async def poller(self, i: int, session: aiohttp.ClientSession, ready: asyncio.Event) -> None:
        await ready.wait()
        interval = self.args.interval
        mine = list(self.tasks[i])
        current = 0
        next_at = time.monotonic() + random.random() * interval
        while not self.stopping:
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            next_at += interval
            task_id = mine[current]
            t0 = time.perf_counter()
            try:
                async with session.get(f"{self.base}/tasks/{task_id}", headers=self.headers) as resp:
                    body = await resp.read()
                    status = resp.status
            except Exception:  # noqa: BLE001
                self.request_errors += 1
                continue
            self.request_seconds += time.perf_counter() - t0
            self.requests += 1
            if status != 200:
                self.request_errors += 1
                continue
            if loads(body).get("state") in FINISHED:
                self.notices.setdefault(task_id, time.time())
                if current < len(mine) - 1:
                    current += 1

    # -- the harness's side ----------------------------------------------------

    def reset(self) -> None:
        self.pings = self.updates = self.requests = self.request_errors = 0
        self.request_seconds = 0.0
        self.t0, self.c0 = time.perf_counter(), time.process_time()

    def stats(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.t0
        return {
            "connected": self.connected,
            "subscribed": self.subscribed,
            "disconnects": self.disconnects,
            "pings": self.pings,
            "updates": self.updates,
            "requests": self.requests,
            "request_errors": self.request_errors,
            "seconds": wall,
            "mean_request_ms": 1000 * self.request_seconds / self.requests if self.requests else None,
            "cpu_pct": 100.0 * (time.process_time() - self.c0) / wall if wall else 0.0,
            "rss_mb": _rss_mb(),
        }


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--mode", choices=("idle", "push", "poll"), required=True)
    p.add_argument("--clients", type=int, required=True)
    p.add_argument("--offset", type=int, default=0, help="index of this process's first client")
    p.add_argument("--tasks", required=True, help="JSON file: list of task ids")
    p.add_argument("--per-client", type=int, default=1)
    p.add_argument("--interval", type=float, default=1.0, help="poll: seconds between a client's requests")
    p.add_argument("--concurrency", type=int, default=100, help="connections being opened at once")
    p.add_argument("--token", help="JWT to present (default: none, for a --insecure server)")
    p.add_argument("--source", help="local address to connect from (127.0.0.N; default: the kernel's choice)")
    args = p.parse_args()

    nofile = raise_nofile()
    with open(args.tasks) as f:
        task_ids = json.load(f)
    clients = Clients(args, task_ids)
    # With --source, every connection leaves from that loopback address (127.0.0.N): a crowd spread over
    # several addresses, as real clients are, each with its own range of ephemeral ports.
    connector = aiohttp.TCPConnector(
        limit=0,
        force_close=False,
        keepalive_timeout=3600,
        local_addr=(args.source, 0) if args.source else None,
    )
    session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30))
    ready = asyncio.Event()
    t0 = time.perf_counter()
    if args.mode == "poll":
        clients.running = [asyncio.ensure_future(clients.poller(i, session, ready)) for i in range(args.clients)]
    else:
        sem = asyncio.Semaphore(args.concurrency)
        clients.running = [
            asyncio.ensure_future(clients.ws_client(i, sem, session, ready)) for i in range(args.clients)
        ]
        while clients.subscribed + len(clients.failed) < args.clients:
            await asyncio.sleep(0.05)
    seconds = time.perf_counter() - t0
    # The clients are the instrument: no collector pauses while measuring.
    gc.collect()
    gc.freeze()
    gc.disable()
    clients.reset()
    print(
        dumps(
            {
                "ready": True,
                "connected": clients.connected,
                "subscribed": clients.subscribed,
                "connect_seconds": seconds,
                "failures": len(clients.failed),
                "failed": clients.failed[:5],
                "nofile": nofile,
                "rss_mb": _rss_mb(),
            }
        ),
        flush=True,
    )

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().strip()
        if line == "start":
            clients.reset()
            ready.set()
            print(dumps({"started": True}), flush=True)
        elif line == "stats":
            print(dumps(clients.stats()), flush=True)
        elif line == "notices":
            print(dumps(clients.notices), flush=True)
        elif line in ("quit", ""):
            break
    clients.stopping = True
    for t in clients.running:
        t.cancel()
    await asyncio.gather(*clients.running, return_exceptions=True)
    await session.close()


if __name__ == "__main__":
    asyncio.run(main())
