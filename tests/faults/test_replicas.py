"""Scenario 5: several pushserver replicas on one broker; one dies and its clients move to another.

Each client reaches its replica through a TCP proxy standing in for the
load balancer. When a replica is killed (SIGKILL: no goodbye), its proxy is
pointed at a live replica, as a load balancer's health check would do, and
its clients reconnect there, re-subscribe and lose nothing.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid

from tests.support.clients import Watcher
from tests.support.faults import delivered, subscribe_all, token, wait_all
from tests.support.stack import Stack
from tests.support.tcpproxy import TcpProxy

REPLICAS = 3
CLIENTS_PER_REPLICA = 2


def seen(w: Watcher, task_id: str) -> set[tuple[str, object]]:
    return {(u["state"], (u["progress"] or {}).get("current")) for u in w.updates.get(task_id, [])}


async def test_replicas_each_deliver_every_update_and_a_dead_one_loses_nothing(stack: Stack, report):
    replicas = [stack.server(f"replica-{i}") for i in range(REPLICAS)]
    ports = [int(replica.url.rsplit(":", 1)[1]) for replica in replicas]
    balancers = [TcpProxy("127.0.0.1", port).start() for port in ports]
    groups: list[list[Watcher]] = []
    for lb in balancers:
        group = [Watcher(f"http://127.0.0.1:{lb.port}", resubscribe=True) for _ in range(CLIENTS_PER_REPLICA)]
        for w in group:
            await w.connect(token())
        groups.append(group)
    clients = [w for g in groups for w in g]
    first: list[str] = []
    second: list[str] = []
    figures: dict[str, float] = {}
    try:
        # Phase 1: every replica sees every event and tells its own clients.
        # The ids are chosen ahead, so that every client watches from the start.
        first += [str(uuid.uuid4()) for _ in range(4)]
        await subscribe_all(clients, first)
        for t in first:
            stack.send("demo_progress", 4, 0.3, task_id=t)
        await wait_all(clients, first, "SUCCESS", timeout=60)
        for t in first:
            # Same transitions and progress steps on every client, whichever replica it uses.
            assert len({frozenset(seen(w, t)) for w in clients}) == 1, [seen(w, t) for w in clients]
            assert {s for s, _ in seen(clients[0], t)} >= {"PROGRESS", "SUCCESS"}

        # Phase 2: replica 0 dies mid-task; the balancer sends its clients to replica 1.
        second += [stack.send("demo_progress", 12, 0.5).id for _ in range(4)]
        await subscribe_all(clients, second)
        await wait_all(clients, second, "PROGRESS", timeout=60)
        dead_proc = replicas[0].proc
        moved = groups[0]
        connects = [w.connects for w in moved]
        await asyncio.to_thread(dead_proc.stop, signal.SIGKILL)
        killed_at = time.monotonic()
        balancers[0].target = ("127.0.0.1", ports[1])
        for w, before in zip(moved, connects):
            await w.wait_connects(before + 1, timeout=30)
        figures["failover_s"] = round(time.monotonic() - killed_at, 2)
        await wait_all(clients, second, "SUCCESS", timeout=60)
    finally:
        ids = first + second
        report(
            f"5 replicas: {REPLICAS} servers, {len(clients)} clients, 1 killed",
            len(clients) * 8,
            delivered(clients, ids),
            moved_clients=len(groups[0]),
            reconnects=sum(w.connects - 1 for w in groups[0]),
            **figures,
        )
        for w in clients:
            await w.close()
        for lb in balancers:
            lb.close()
    for w in moved:
        for t in second:
            assert [u for u in w.updates[t] if u["state"] == "SUCCESS"][-1]["result"] == 12
    for proc, url in ((replica.proc, replica.url) for replica in replicas[1:]):
        assert proc.alive()
