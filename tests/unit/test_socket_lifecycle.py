"""The Socket.IO lifecycle handlers are idempotent: running connect or disconnect twice for a connection changes nothing."""

from __future__ import annotations

import asyncio

from pushserver.access import Access
from pushserver.coalesce import Coalescer
from pushserver.config import Settings
from pushserver.fanout import FanoutManager
from pushserver.metrics import Metrics
from pushserver.policy import ForwardingPolicy
from pushserver.snapshots import MemoryView
from pushserver.sockets import SocketApi
from pushserver.state import TaskStore
from pushserver.subscriptions import Subscriptions
from pushserver.workflow_watch import WorkflowWatch


def test_connect_and_disconnect_twice_count_once() -> None:
    async def run() -> None:
        metrics = Metrics()
        settings = Settings(insecure=True)
        subscriptions = Subscriptions(settings.max_subscriptions)
        memory = MemoryView(TaskStore(10), ForwardingPolicy())
        fanout = FanoutManager(metrics, memory.visible)
        coalescer = Coalescer(memory, subscriptions, fanout, metrics, settings.progress_hz)
        workflows = WorkflowWatch(settings, memory.store, None, fanout, None)  # type: ignore[arg-type]
        sockets = SocketApi(
            settings,
            Access(None),
            subscriptions,
            snapshots=None,  # type: ignore[arg-type]
            coalescer=coalescer,
            fanout=fanout,
            metrics=metrics,
            workflows=workflows,
        )

        def clients() -> float | None:
            return metrics.registry.get_sample_value("pushserver_connected_clients")

        for _ in range(2):
            await sockets._on_connect("sid-1", {"REMOTE_ADDR": "127.0.0.1"})
        assert clients() == 1
        subscriptions.add("sid-1", ["t1", "t2"])
        sockets.expiry.set("sid-1", ["t1", "t2"], 10**10)
        for _ in range(2):
            await sockets._on_disconnect("sid-1", "transport close")
        assert clients() == 0
        assert len(subscriptions) == 0 and len(sockets.expiry) == 0 and not sockets._buckets
        assert len(workflows.subscriptions) == 0
        sockets.close()

    asyncio.run(run())
