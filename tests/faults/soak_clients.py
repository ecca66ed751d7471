"""The soak test's load process: many Socket.IO clients, each watching its share of the tasks.

    python -m tests.faults.soak_clients --url URL --token T --tasks tasks.json --clients 1000

Prints one JSON line when every client is connected and subscribed, waits
for ``finish <seconds>`` on stdin, waits (up to that long) until every task
reached SUCCESS at its client, prints a JSON summary, then on ``close``
disconnects every client and prints ``{"closed": true}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from tests.support.clients import Watcher

WAVE = 50  # clients connecting at once
MAX_IDS_PER_CALL = 100


def say(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--tasks", required=True, type=Path)
    p.add_argument("--clients", type=int, default=1000)
    args = p.parse_args()
    task_ids: list[str] = json.loads(args.tasks.read_text())
    clients = [Watcher(args.url) for _ in range(args.clients)]
    shares = [task_ids[i :: args.clients] for i in range(args.clients)]

    t0 = time.monotonic()
    for start in range(0, len(clients), WAVE):
        await asyncio.gather(*(w.connect(args.token) for w in clients[start : start + WAVE]))
    connected_s = time.monotonic() - t0

    async def subscribe(w: Watcher, ids: list[str]) -> int:
        refused = 0
        for i in range(0, len(ids), MAX_IDS_PER_CALL):
            ack = await w.subscribe(ids[i : i + MAX_IDS_PER_CALL])
            refused += 0 if ack.get("ok") else 1
        return refused

    refused = 0
    for start in range(0, len(clients), WAVE):
        refused += sum(
            await asyncio.gather(
                *(subscribe(w, ids) for w, ids in zip(clients[start : start + WAVE], shares[start : start + WAVE]))
            )
        )
    say(
        {
            "ready": True,
            "clients": sum(w.sio.connected for w in clients),
            "tasks": len(task_ids),
            "refused_subscribes": refused,
            "connect_s": round(connected_s, 2),
            "subscribe_s": round(time.monotonic() - t0 - connected_s, 2),
        }
    )

    command = (await asyncio.to_thread(sys.stdin.readline)).split()
    timeout = float(command[1]) if len(command) > 1 else 60.0

    def completed() -> int:
        return sum(
            1
            for w, ids in zip(clients, shares)
            for t in ids
            if any(u["state"] == "SUCCESS" for u in w.updates.get(t, ()))
        )

    deadline = time.monotonic() + timeout
    done = completed()
    while done < len(task_ids) and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        done = completed()
    say(
        {
            "completions_expected": len(task_ids),
            "completions_delivered": done,
            "updates": sum(len(v) for w in clients for v in w.updates.values()),
            "disconnects": sum(len(w.disconnects) for w in clients),
            "still_connected": sum(w.sio.connected for w in clients),
        }
    )

    await asyncio.to_thread(sys.stdin.readline)  # "close": the server is measured with us still here
    for start in range(0, len(clients), WAVE):
        await asyncio.gather(*(w.close() for w in clients[start : start + WAVE]), return_exceptions=True)
    say({"closed": True})


if __name__ == "__main__":
    asyncio.run(main())
