"""A task's life, pushed: real Redis, real Celery workers (threads and prefork), real pushserver, real clients."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.support.clients import Watcher
from tests.support.stack import PREFORK_QUEUE, Server, Stack

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("queue", ["celery", PREFORK_QUEUE], ids=["threads-pool", "prefork-pool"])
async def test_progress_then_success_is_pushed(stack: Stack, server: Server, watcher: Watcher, queue: str):
    result = stack.send("demo_progress", 5, 0.2, queue=queue)
    ack = await watcher.subscribe(result.id, token=server.token(result.id))

    assert ack["ok"] is True
    assert ack["tasks"][0]["task_id"] == result.id
    final = await watcher.wait_state(result.id, "SUCCESS")
    assert final["result"] == 5
    assert final["name"] == "workers.tasks.demo_progress"
    assert final["progress"] == {"current": 5, "total": 5, "percent": 100.0, "message": "step 5/5"}
    assert final["finished_at"] is not None and final["worker"]
    # Progress arrived live, in order, before completion.
    progress = [u["progress"]["current"] for u in watcher.updates[result.id] if u["state"] == "PROGRESS"]
    assert len(progress) >= 3, watcher.updates[result.id]
    assert progress == sorted(progress)


async def test_failure_carries_the_exception(stack: Stack, server: Server, watcher: Watcher):
    result = stack.send("fail", "the disk is on fire")
    await watcher.subscribe(result.id, token=server.token(result.id))

    final = await watcher.wait_state(result.id, "FAILURE")
    assert "RuntimeError" in final["exception"] and "the disk is on fire" in final["exception"]
    assert final["result"] is None


async def test_retry_then_success(stack: Stack, server: Server, watcher: Watcher):
    result = stack.send("flaky", 1, 0.3)
    await watcher.subscribe(result.id, token=server.token(result.id))

    retry = await watcher.wait_state(result.id, "RETRY")
    assert "RuntimeError" in retry["exception"]
    final = await watcher.wait_state(result.id, "SUCCESS")
    assert final["retries"] == 1
    assert final["exception"] is None
    states = [u["state"] for u in watcher.updates[result.id]]
    assert states.index("RETRY") < states.index("SUCCESS")


async def test_late_subscriber_gets_the_final_state_from_the_result_backend(stack: Stack, server: Server):
    """A browser that subscribes after its task finished, on a server that never saw the task."""
    from dev.stack import start_pushserver

    result = stack.send("demo_progress", 2, 0.0)
    assert result.get(timeout=30) == 2
    proc, url = start_pushserver("late-server", stack.broker, stack.backend, stack.log_dir, secret=server.secret)
    try:
        w = await Watcher(url).connect(token=server.token(result.id))
        ack = await w.subscribe(result.id)
        await w.close()
    finally:
        proc.stop()
    assert ack["ok"] is True
    snapshot = ack["tasks"][0]
    assert snapshot["state"] == "SUCCESS"
    assert snapshot["result"] == 2


async def test_unknown_task_snapshot_is_pending(server: Server, watcher: Watcher):
    ack = await watcher.subscribe("never-dispatched", token=server.token("never-dispatched"))
    assert ack == {"ok": True, "tasks": [ack["tasks"][0]]}
    assert ack["tasks"][0]["state"] == "PENDING"
    assert ack["tasks"][0]["task_id"] == "never-dispatched"


async def test_two_clients_on_one_task_both_get_completion(stack: Stack, server: Server):
    result = stack.send("demo_progress", 3, 0.1)
    token = server.token(result.id)
    first, second = await asyncio.gather(Watcher(server.url).connect(token), Watcher(server.url).connect(token))
    try:
        await asyncio.gather(first.subscribe(result.id), second.subscribe(result.id))
        a, b = await asyncio.gather(first.wait_state(result.id, "SUCCESS"), second.wait_state(result.id, "SUCCESS"))
    finally:
        await asyncio.gather(first.close(), second.close())
    assert a == b


async def test_one_client_on_a_hundred_tasks(stack: Stack, server: Server, watcher: Watcher):
    results = [stack.send("demo_progress", 1, 0.05) for _ in range(100)]
    ids = [r.id for r in results]
    ack = await watcher.subscribe(ids, token=server.token(*ids))

    assert ack["ok"] is True and [t["task_id"] for t in ack["tasks"]] == ids
    finals = await asyncio.gather(*(watcher.wait_state(i, "SUCCESS", timeout=60) for i in ids))
    assert all(f["result"] == 1 for f in finals)


async def test_progress_is_coalesced_but_the_latest_always_arrives(stack: Stack, server: Server, watcher: Watcher):
    """200 progress events in ~0.4 s; at 10 Hz the client gets a handful, the last one 200/200."""
    result = stack.send("demo_progress", 200, 0.002)
    await watcher.subscribe(result.id, token=server.token(result.id))
    started = time.monotonic()
    final = await watcher.wait_state(result.id, "SUCCESS")
    elapsed = time.monotonic() - started

    progress_updates = [u for u in watcher.updates[result.id] if u["state"] == "PROGRESS"]
    # 10 Hz over the run, plus the emit that opens each window: far fewer than 200.
    assert len(progress_updates) <= 10 * elapsed + 3, (len(progress_updates), elapsed)
    assert final["progress"]["current"] == 200


async def test_a_state_never_moves_backwards_for_a_client(stack: Stack, server: Server, watcher: Watcher):
    order = ["PENDING", "SENT", "RECEIVED", "STARTED", "PROGRESS", "SUCCESS"]
    result = stack.send("demo_progress", 4, 0.05)
    await watcher.subscribe(result.id, token=server.token(result.id))
    await watcher.wait_state(result.id, "SUCCESS")
    ranks = [order.index(u["state"]) for u in watcher.updates[result.id]]
    assert ranks == sorted(ranks), [u["state"] for u in watcher.updates[result.id]]
