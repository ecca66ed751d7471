"""A client that floods a pushserver with Socket.IO messages as fast as it can, reconnecting whenever it is dropped.

Run as ``python -m tests.support.flooder URL SECONDS``; it prints one JSON line
with what it sent when the time is up. A process of its own, so its event
loop competes with the server for CPU as an attacker's would, not with the
test's measuring client.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import aiohttp

#: Unknown events, unsubscribes and reserved names, with and without ack ids: every kind a client can send.
FRAMES = [
    '42["unsubscribe",{"task_id":"flood"}]',
    '421["unsubscribe",{"task_ids":["a","b","c"]}]',
    '42["disconnect","io client disconnect"]',
    '422["no-such-event",{"x":1}]',
    '423["subscribe",{"task_id":"flood"}]',
]


async def flood(url: str, seconds: float) -> dict[str, int]:
    ws_url = url.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket"
    sent = connects = dropped = 0
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.ws_connect(ws_url) as ws:
                    await ws.receive(timeout=5)  # the Engine.IO open packet
                    await ws.send_str("40")
                    connects += 1
                    i = 0
                    while time.monotonic() < deadline and not ws.closed:
                        await ws.send_str(FRAMES[i % len(FRAMES)])
                        sent += 1
                        i += 1
                        if i % 64 == 0:
                            await asyncio.sleep(0)  # let aiohttp see a close from the server
            except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError):
                dropped += 1
                await asyncio.sleep(0.01)
    return {"sent": sent, "connects": connects, "dropped": dropped}


def main() -> None:
    url, seconds = sys.argv[1], float(sys.argv[2])
    print(json.dumps(asyncio.run(flood(url, seconds))), flush=True)


if __name__ == "__main__":
    main()
