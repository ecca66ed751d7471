"""Scenario 2: the pushserver restarts under connected clients; they reconnect, re-subscribe and catch up."""

from __future__ import annotations

import asyncio
import uuid

from dev.stack import restartable_port
from tests.support.faults import delivered, subscribe_all
from tests.support.stack import Stack

CLIENTS = 3


async def test_clients_get_current_snapshots_and_what_finished_while_the_server_was_down(
    stack: Stack, watchers, report
):
    port = restartable_port()  # the server comes back on it
    server = stack.server("restart-before", port=port)
    proc, url = server.proc, server.url
    clients = await watchers(url, CLIENTS)
    running = stack.send("demo_progress", 30, 0.5)  # ~15 s: runs across the restart
    finished_while_down = str(uuid.uuid4())  # dispatched and finished while no server runs
    ids = [running.id, finished_while_down]
    await subscribe_all(clients, ids)
    for w in clients:
        await w.wait_state(running.id, "PROGRESS", timeout=30)

    assert await asyncio.to_thread(proc.stop) == 0  # SIGTERM: a graceful stop exits 0
    for w in clients:
        assert w.disconnects, "the clients must see the server go"
    done = stack.send("demo_progress", 2, 0.05, task_id=finished_while_down)
    assert await asyncio.to_thread(done.get, timeout=30) == 2
    last_before = max(u["progress"]["current"] for w in clients for u in w.updates[running.id] if u["progress"])

    url_after = stack.server("restart-after", port=port).url
    assert url_after == url
    for w in clients:
        await w.wait_connects(2, timeout=30)  # python-socketio's own reconnection
    try:
        for w in clients:
            await w.wait_state(finished_while_down, "SUCCESS", timeout=30)
            await w.wait_state(running.id, "SUCCESS", timeout=60)
    finally:
        report(
            "2 pushserver restart (3 clients x 2 tasks)",
            len(clients) * len(ids),
            delivered(clients, ids),
            reconnects=sum(w.connects - 1 for w in clients),
        )
    for w in clients:
        # The re-subscribe ack is the current state: the finished task finished,
        # the running one at least as far as before the restart.
        ack = next(a for a in w.resubscribe_acks if a.get("ok"))
        snapshot = {t["task_id"]: t for t in ack["tasks"]}
        assert snapshot[finished_while_down]["state"] == "SUCCESS"
        assert snapshot[finished_while_down]["result"] == 2
        now = snapshot[running.id]
        assert now["state"] in ("PROGRESS", "SUCCESS")
        if now["state"] == "PROGRESS":
            assert now["progress"]["current"] >= last_before
    assert await asyncio.to_thread(running.get, timeout=30) == 30
