"""The Socket.IO surface against a running `pushserver serve`: token expiry, reserved event names, binary packets,
message floods and the long-polling transport."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import jwt
import pytest

from pushserver.auth import mint_token
from tests.integration.conftest import Server, Stack
from tests.integration.test_reconnect import metric
from tests.integration.test_security import serving
from tests.support.clients import Watcher

pytestmark = pytest.mark.integration


class Notices:
    """Records the ``pushserver:error`` notices one client receives."""

    def __init__(self, watcher: Watcher) -> None:
        self.received: list[tuple[float, dict[str, Any]]] = []
        self._changed = asyncio.Event()
        watcher.sio.on("pushserver:error", self._on_notice)

    async def _on_notice(self, notice: dict[str, Any]) -> None:
        self.received.append((time.time(), notice))
        self._changed.set()

    async def wait(self, count: int, timeout: float) -> list[tuple[float, dict[str, Any]]]:
        """Wait until ``count`` notices have arrived; return them with their arrival times."""
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.received) < count:
            self._changed.clear()
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"{len(self.received)} pushserver:error notices in {timeout}s, wanted {count}")
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass
        return self.received


# -- 4. a subscription lives only as long as its token -------------------------


async def test_a_subscription_ends_when_its_token_expires_and_a_fresh_token_resumes_it(
        stack: Stack, server: Server):
    with serving(stack, server.secret, "--token-leeway", "0") as url:
        first, second = stack.send("demo_progress", 120, 0.05), stack.send("demo_progress", 120, 0.05)
        ids = sorted([first.id, second.id])
        short = mint_token(server.secret, ids, ttl=2)
        exp = jwt.decode(short, options={"verify_signature": False})["exp"]
        w = await Watcher(url).connect()
        other = await Watcher(url).connect()  # the same tasks on a long token: the updates go on
        notices = Notices(w)
        try:
            assert (await w.subscribe(ids, token=short))["ok"]
            assert (await other.subscribe(ids, token=server.token(*ids)))["ok"]
            (arrived, notice), = await notices.wait(1, timeout=10)
            # One notice for both tasks, once exp has passed, within the wheel's one-second slot.
            assert notice["code"] == "token_expired" and sorted(notice["task_ids"]) == ids, notice
            assert "fresh token" in notice["message"]
            assert exp <= arrived < exp + 2.5, (arrived - exp)
            seen = {t: len(w.updates.get(t, [])) for t in ids}
            # The other client keeps receiving progress; this one receives nothing more.
            later = {t: len(other.updates.get(t, [])) + 5 for t in ids}
            for t in ids:
                await other.wait_for(t, lambda s, t=t: len(other.updates[t]) >= later[t]
                                     or s["state"] == "SUCCESS", timeout=30)
            assert {t: len(w.updates.get(t, [])) for t in ids} == seen
            # A subscribe with the expired token is refused; a fresh one resumes with a snapshot.
            refused = await w.subscribe(first.id, token=short)
            assert refused["error"]["code"] == "unauthorized"
            ack = await w.subscribe(first.id, token=server.token(first.id))
            assert ack["ok"] and ack["tasks"][0]["state"] in ("PROGRESS", "SUCCESS")
            await w.wait_state(first.id, "SUCCESS", timeout=60)
            assert len(notices.received) == 1
            assert metric(url, "pushserver_subscriptions_expired_total") == 2
        finally:
            await w.close()
            await other.close()


async def test_a_connect_token_bounds_the_subscriptions_made_with_it(stack: Stack, server: Server):
    with serving(stack, server.secret, "--token-leeway", "1") as url:
        token = mint_token(server.secret, ["conn-a", "conn-b"], ttl=1)
        exp = jwt.decode(token, options={"verify_signature": False})["exp"]
        w = await Watcher(url).connect(token)
        notices = Notices(w)
        try:
            assert (await w.subscribe(["conn-a", "conn-b"]))["ok"]
            # Subscribing again with a longer token moves that task's end; the other keeps the first.
            assert (await w.subscribe("conn-b", token=mint_token(server.secret, ["conn-b"], ttl=30)))["ok"]
            (arrived, notice), = await notices.wait(1, timeout=10)
            assert notice["task_ids"] == ["conn-a"] and exp + 1 <= arrived < exp + 3.5
            assert w.sio.connected
            assert (await w.call("unsubscribe", {"task_id": "conn-b"}))["ok"]
            assert metric(url, "pushserver_subscriptions") == 0
        finally:
            await w.close()
