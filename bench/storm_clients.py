"""Storm clients: many raw Socket.IO clients in one process that connect and subscribe all at once, on command.

Each client speaks the wire protocol over an aiohttp websocket (as raw_clients.py does): open packet ->
``40{"token": ...}`` -> ``40{sid}`` -> ``421["subscribe", {"task_ids": [its task]}]`` -> ``431[ack]``.
Every client has its own task and its own token (the harness mints them); the process binds its
connections to one loopback source address (``--source 127.0.0.N``), so a storm comes from several
addresses as real clients would.

Driven over stdin/stdout, one JSON line per answer:

- ``go T URL``: at wall-clock time T every client connects to URL and subscribes; once all have an
  answer (an ack, an error, or a failure) the process prints when each phase finished: the time of its
  last ack (``last_ack``), failures and error acks (each refusal counted, a few quoted), and every
  client's snapshot (``{task_id: [state, result]}``). The sockets stay open.
- ``drop``: wait until the server has closed every socket (it restarts), print ``{"dropped": n}``.
- ``quit``: close everything and exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import aiohttp

from bench.raw_clients import dumps, loads, raise_nofile, socketio_connect

#: Seconds a client waits for each answer of the handshake before it counts as failed.
ANSWER_TIMEOUT = 120.0


class StormClients:
    """The clients of one process: their tasks and tokens, and the sockets of the current phase."""

    def __init__(self, tasks: list[str], tokens: list[str], source: str | None) -> None:
        self.tasks = tasks
        self.tokens = tokens
        self.source = source
        self.sockets: list[aiohttp.ClientWebSocketResponse] = []
        self.session: aiohttp.ClientSession | None = None

    async def open_session(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=0, local_addr=(self.source, 0) if self.source else None, force_close=False
        )
        self.session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None))

    async def one(self, i: int, ws_url: str, out: dict[str, Any]) -> None:
        assert self.session is not None
        task_id = self.tasks[i]
        try:
            ws = await self.session.ws_connect(ws_url, autoping=True, max_msg_size=0)
            self.sockets.append(ws)
            await socketio_connect(ws, {"token": self.tokens[i]}, ANSWER_TIMEOUT)
            await ws.send_str("421" + dumps(["subscribe", {"task_ids": [task_id]}]))
            while True:
                msg = await asyncio.wait_for(ws.receive_str(), ANSWER_TIMEOUT)
                if msg == "2":
                    await ws.send_str("3")
                elif msg.startswith("431"):
                    ack = loads(msg[3:])[0]
                    break
        except Exception as exc:  # noqa: BLE001 - counted and quoted to the harness
            out["failures"].append(f"{type(exc).__name__}: {exc}"[:200])
            return
        out["last_ack"] = max(out["last_ack"], time.time())
        if not ack.get("ok"):
            out["errors"].append(dumps(ack)[:200])
            return
        snapshot = ack["tasks"][0]
        out["snapshots"][task_id] = [snapshot.get("state"), snapshot.get("result")]

    async def storm(self, at: float, url: str) -> dict[str, Any]:
        """Every client connects and subscribes at ``at``; the outcome once each has its answer."""
        ws_url = url.rstrip("/").replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
        await self.close_sockets()
        out: dict[str, Any] = {"last_ack": 0.0, "failures": [], "errors": [], "snapshots": {}}
        await asyncio.sleep(max(0.0, at - time.time()))
        await asyncio.gather(*(self.one(i, ws_url, out) for i in range(len(self.tasks))))
        out["done_at"] = time.time()
        out["failed"] = len(out["failures"])
        out["refused"] = len(out["errors"])
        out["failures"] = out["failures"][:5]
        out["errors"] = out["errors"][:5]
        return out

    async def dropped(self, timeout: float = 60.0) -> int:
        """Wait until the server has closed every socket of the last phase; how many it closed."""

        async def drained(ws: aiohttp.ClientWebSocketResponse) -> None:
            while not ws.closed:
                msg = await ws.receive()
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    break
                if msg.type == aiohttp.WSMsgType.TEXT and msg.data == "2":
                    await ws.send_str("3")

        await asyncio.wait_for(asyncio.gather(*(drained(ws) for ws in self.sockets)), timeout)
        return len(self.sockets)

    async def close_sockets(self) -> None:
        await asyncio.gather(*(ws.close() for ws in self.sockets), return_exceptions=True)
        self.sockets = []


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", required=True, help="JSON file: [[task_id, token], ...] for this process")
    p.add_argument("--source", help="local address to connect from (127.0.0.N)")
    args = p.parse_args()
    raise_nofile()
    with open(args.clients) as f:
        pairs = json.load(f)
    clients = StormClients([t for t, _ in pairs], [k for _, k in pairs], args.source)
    await clients.open_session()
    print(dumps({"ready": len(pairs)}), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().strip()
        if line.startswith("go "):
            _, at, url = line.split()
            print(dumps(await clients.storm(float(at), url)), flush=True)
        elif line == "drop":
            print(dumps({"dropped": await clients.dropped()}), flush=True)
        elif line in ("quit", ""):
            break
    await clients.close_sockets()
    assert clients.session is not None
    await clients.session.close()


if __name__ == "__main__":
    asyncio.run(main())
