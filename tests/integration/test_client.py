"""pushserver.client.TaskWatcher against a real `pushserver serve`, real Celery workers and real Redis."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from dev.stack import Proc, free_port, restartable_port, start_pushserver, wait_until
from pushserver.client import ConnectFailed, SubscribeRefused, TaskWatcher, WaitTimeout, WatcherClosed
from tests.support.stack import PREFORK_QUEUE, Server, Stack

pytestmark = pytest.mark.integration


async def test_wait_returns_the_terminal_state(stack: Stack, server: Server):
    result = stack.send("demo_progress", 3, 0.1)
    async with TaskWatcher(server.url, token=server.token(result.id)) as watcher:
        state = await watcher.wait(result.id, timeout=30)
    assert state["task_id"] == result.id
    assert state["state"] == "SUCCESS"
    assert state["result"] == 3 and state["result_format"] == "json"  # the value, not its repr
    assert state["name"] == "workers.tasks.demo_progress"
    assert state["progress"]["current"] == 3


async def test_wait_for_a_task_that_finished_before_the_call(stack: Stack, server: Server):
    result = stack.send("demo_progress", 1, 0.0, queue=PREFORK_QUEUE)
    assert result.get(timeout=30) == 1
    async with TaskWatcher(server.url) as watcher:  # no connect token: the call carries it
        state = await asyncio.wait_for(watcher.wait(result.id, token=server.token(result.id)), 5)
    assert state["state"] == "SUCCESS" and state["task_id"] == result.id


async def test_updates_yields_progress_in_order_then_stops_at_the_terminal_state(stack: Stack, server: Server):
    result = stack.send("demo_progress", 5, 0.2)
    seen: list[dict] = []
    async with TaskWatcher(server.url, token=server.token(result.id)) as watcher:
        async for state in watcher.updates(result.id):
            seen.append(state)
    assert seen[-1]["state"] == "SUCCESS"
    assert all(s["state"] != "SUCCESS" for s in seen[:-1])
    steps = [s["progress"]["current"] for s in seen if s["state"] == "PROGRESS"]
    assert len(steps) >= 3 and steps == sorted(steps), [s["state"] for s in seen]


async def test_failure_is_a_terminal_state_not_an_exception(stack: Stack, server: Server):
    result = stack.send("fail", "card declined")
    async with TaskWatcher(server.url, token=server.token(result.id)) as watcher:
        state = await watcher.wait(result.id, timeout=30)
    assert state["state"] == "FAILURE" and "card declined" in state["exception"]


async def test_two_waits_on_one_connection(stack: Stack, server: Server):
    first, second = stack.send("demo_progress", 2, 0.1), stack.send("demo_progress", 4, 0.1, queue=PREFORK_QUEUE)
    async with TaskWatcher(server.url, token=server.token(first.id, second.id)) as watcher:
        a, b, again = await asyncio.gather(
            watcher.wait(first.id, timeout=30), watcher.wait(second.id, timeout=30), watcher.wait(first.id, timeout=30)
        )
    assert (a["task_id"], a["state"]) == (first.id, "SUCCESS")
    assert (b["task_id"], b["state"]) == (second.id, "SUCCESS")
    assert again == a


async def test_wait_times_out_with_the_last_state_seen(stack: Stack, server: Server):
    async with TaskWatcher(server.url, token=server.token("never-sent")) as watcher:
        with pytest.raises(WaitTimeout) as raised:
            await watcher.wait("never-sent", timeout=0.5)
    assert isinstance(raised.value, TimeoutError)
    assert raised.value.last is not None and raised.value.last["state"] == "PENDING"


async def test_a_token_for_another_task_is_refused(stack: Stack, server: Server):
    async with TaskWatcher(server.url, token=server.token("some-other-task")) as watcher:
        with pytest.raises(SubscribeRefused) as raised:
            await watcher.wait("not-mine", timeout=10)
    assert raised.value.code == "forbidden"


async def test_an_unreachable_server_is_a_clear_error():
    watcher = TaskWatcher(f"http://127.0.0.1:{free_port()}", connect_timeout=2)
    with pytest.raises(ConnectFailed):
        await watcher.connect()
    await watcher.close()


async def test_an_invalid_connect_token_is_refused_on_connect(server: Server):
    with pytest.raises(ConnectFailed, match="signature"):
        async with TaskWatcher(server.url, token=server.token("t", secret="not-the-secret-" + "x" * 32)):
            pass


async def test_close_ends_a_waiting_call(stack: Stack, server: Server):
    watcher = await TaskWatcher(server.url, token=server.token("never-sent-2")).__aenter__()
    waiting = asyncio.ensure_future(watcher.wait("never-sent-2", timeout=30))
    await asyncio.sleep(0.3)
    await watcher.close()
    with pytest.raises(WatcherClosed):
        await asyncio.wait_for(waiting, 5)


async def test_it_resubscribes_after_the_server_restarts(stack: Stack, server: Server):
    """The server process is stopped and started again on the same port while a task runs."""
    port = restartable_port()  # the server comes back on it

    def start(name: str) -> Proc:
        return start_pushserver(name, stack.broker, stack.backend, stack.log_dir, secret=server.secret, port=port)[0]

    proc = await asyncio.to_thread(start, "client-restart-1")
    watcher = TaskWatcher(f"http://127.0.0.1:{port}", reconnection_delay=0.2, reconnection_delay_max=0.5)
    try:
        await watcher.connect()
        running = stack.send("demo_progress", 30, 0.4)  # ~12 s: runs across the restart
        seen: list[dict] = []

        async def follow() -> None:
            async for state in watcher.updates(running.id, token=server.token(running.id)):
                seen.append(state)

        following = asyncio.ensure_future(follow())
        await asyncio.to_thread(
            wait_until, lambda: any(s["state"] == "PROGRESS" for s in seen), 20, "progress before the restart"
        )
        # Waited on before the restart, dispatched and finished while the server is down.
        finished_while_down = str(uuid.uuid4())
        waiting = asyncio.ensure_future(
            watcher.wait(finished_while_down, timeout=60, token=server.token(finished_while_down))
        )
        await asyncio.sleep(0.5)
        await asyncio.to_thread(proc.stop)
        await asyncio.to_thread(wait_until, lambda: not watcher.connected, 10, "the watcher to see the disconnect")
        quick = stack.celery.send_task(
            "workers.tasks.demo_progress", args=(1, 0.0), queue=PREFORK_QUEUE, task_id=finished_while_down
        )
        assert await asyncio.to_thread(quick.get, timeout=30) == 1
        assert not waiting.done()
        proc = await asyncio.to_thread(start, "client-restart-2")
        done = await asyncio.wait_for(waiting, 30)
        await asyncio.wait_for(following, 30)
    finally:
        await watcher.close()
        await asyncio.to_thread(proc.stop)
    assert watcher.connects >= 2
    assert done["state"] == "SUCCESS" and done["task_id"] == finished_while_down
    assert seen[-1]["state"] == "SUCCESS" and seen[-1]["progress"]["current"] == 30
    steps = [s["progress"]["current"] for s in seen if s["progress"]]
    assert steps == sorted(steps)  # never backwards across the restart
