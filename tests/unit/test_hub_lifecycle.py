"""The hub's lifecycle handlers are idempotent: running connect or disconnect twice for a connection changes nothing."""

from __future__ import annotations

import asyncio

from pushserver.config import Settings
from pushserver.hub import Hub
from pushserver.metrics import Metrics
from pushserver.state import TaskStore


def test_connect_and_disconnect_twice_count_once() -> None:
    async def run() -> None:
        metrics = Metrics()
        # No result backend here, so no JSON results (their reads need one): the repr mode.
        hub = Hub(
            Settings(insecure=True, forward_results="repr"),
            TaskStore(10),
            backend=None,  # type: ignore[arg-type]
            metrics=metrics,
            verifier=None,
        )

        def clients() -> float | None:
            return metrics.registry.get_sample_value("pushserver_connected_clients")

        for _ in range(2):
            await hub._on_connect("sid-1", {"REMOTE_ADDR": "127.0.0.1"})
        assert clients() == 1
        hub.subscriptions.add("sid-1", ["t1", "t2"])
        hub.expiry.set("sid-1", ["t1", "t2"], 10**10)
        for _ in range(2):
            await hub._on_disconnect("sid-1", "transport close")
        assert clients() == 0
        assert len(hub.subscriptions) == 0 and len(hub.expiry) == 0 and not hub._buckets
        hub.expiry.close()

    asyncio.run(run())
