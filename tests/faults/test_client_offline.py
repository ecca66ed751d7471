"""Scenario 4: a client loses its connection for ``PUSHSERVER_FAULT_OFFLINE_SECONDS`` (30 s) and comes back.

The client process lives on; only its socket is dropped (a TCP proxy between
it and the server cuts the connection and refuses new ones). On return the
same client object, with nothing reloaded, must hold the current state.
"""

from __future__ import annotations

import asyncio
import time

from tests.support.clients import Watcher
from tests.support.faults import delivered, env_number, token, until
from tests.support.stack import Stack
from tests.support.tcpproxy import TcpProxy

OFFLINE = env_number("PUSHSERVER_FAULT_OFFLINE_SECONDS", 30)


async def test_client_back_after_offline_period_has_the_current_state(stack: Stack, report):
    url = stack.server("offline-server").url
    port = int(url.rsplit(":", 1)[1])
    proxy = TcpProxy("127.0.0.1", port).start()
    w = Watcher(f"http://127.0.0.1:{proxy.port}", resubscribe=True)
    await w.connect(token())
    figures: dict[str, float] = {}
    ids: list[str] = []
    try:
        finishes_offline = stack.send("demo_progress", 4, 0.5)  # ~2 s
        # Still running when the client returns, a few seconds later.
        steps = int(OFFLINE / 0.5) + 12
        spans_return = stack.send("demo_progress", steps, 0.5)
        ids += [finishes_offline.id, spans_return.id]
        assert (await w.subscribe(ids))["ok"]
        await w.wait_state(finishes_offline.id, "PROGRESS", timeout=30)

        proxy.cut()
        cut_at = time.monotonic()
        while w.sio.connected and time.monotonic() - cut_at < 10:
            await asyncio.sleep(0.05)
        assert not w.sio.connected, "the client must notice its connection is gone"
        seen_offline = {t: len(w.updates.get(t, [])) for t in ids}
        assert await asyncio.to_thread(finishes_offline.get, timeout=30) == 4
        await asyncio.sleep(max(0.0, OFFLINE - (time.monotonic() - cut_at)))  # the offline period
        assert {t: len(w.updates.get(t, [])) for t in ids} == seen_offline, "nothing arrives while cut"
        connects = w.connects
        proxy.restore()
        back_at = time.monotonic()
        figures["offline_s"] = round(back_at - cut_at, 1)

        await w.wait_connects(connects + 1, timeout=30)
        await until(lambda: w.resubscribe_acks, 30, "the client to subscribe again")
        await w.wait_state(finishes_offline.id, "SUCCESS", timeout=30)
        figures["caught_up_s"] = round(time.monotonic() - back_at, 2)
        ack = w.resubscribe_acks[0]
        assert ack["ok"], ack
        snapshot = {t["task_id"]: t for t in ack["tasks"]}[spans_return.id]
        assert snapshot["state"] == "PROGRESS", snapshot
        assert snapshot["progress"]["current"] >= int(OFFLINE / 0.5) - 10  # current, not stale
        await w.wait_state(spans_return.id, "SUCCESS", timeout=60)
    finally:
        report(f"4 client offline {OFFLINE:g} s (1 client x 2 tasks)", 2, delivered([w], ids), **figures)
        await w.close()
        proxy.close()
