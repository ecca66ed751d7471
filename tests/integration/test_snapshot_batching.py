"""Subscribes arriving together read the result backend together: a few MGETs for many snapshots, all correct.

A real ``pushserver serve`` (tokens required, the quiet-task reconciler off so that only snapshots read
the backend) on a private redis-server; its result backend is reached through a TCP proxy the test can
stall, which stands for a backend a few milliseconds away under load: while the first reads wait, 40
real Socket.IO clients subscribe at once, each with its own token, to tasks whose records Celery's own
backend wrote (finished ones SUCCESS with a result, running ones STARTED). Redis itself counts the
reads (``INFO commandstats``): without batching each snapshot is one GET.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis

from dev.metrics import metric
from dev.stack import start_redis, wait_until
from tests.support.clients import Watcher
from tests.support.stack import Server, Stack
from tests.support.tcpproxy import TcpProxy

CLIENTS = 40
TASKS_PER_CLIENT = 2


@pytest.fixture(scope="module")
def backend_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, TcpProxy]]:
    log_dir: Path = tmp_path_factory.mktemp("snapshot-batching")
    redis_proc, port = start_redis(log_dir)
    proxy = TcpProxy("127.0.0.1", port).start()
    # The broker is reached directly; only the result backend goes through the proxy.
    stack = Stack(
        f"redis://127.0.0.1:{port}/0",
        f"redis://127.0.0.1:{proxy.port}/1",
        log_dir,
        redis=redis_proc,
        redis_port=port,
        name="batching",
    )
    try:
        yield stack, proxy
    finally:
        proxy.release()
        stack.close()
        proxy.close()


@pytest.fixture(scope="module")
def batching_server(backend_proxy: tuple[Stack, TcpProxy]) -> Server:
    stack, _ = backend_proxy
    return stack.server("batching", extra=["--reconcile-after", "0"], ready=30)


@pytest.fixture
async def clients(batching_server: Server) -> AsyncIterator[list[Watcher]]:
    watchers = list(await asyncio.gather(*(Watcher(batching_server.url).connect() for _ in range(CLIENTS))))
    yield watchers
    await asyncio.gather(*(w.close() for w in watchers))


def redis_calls(port: int) -> dict[str, int]:
    client = redis.Redis(port=port, socket_timeout=5)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {c: int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("get", "mget")}


async def test_concurrent_subscribes_share_a_few_mgets_and_get_their_records(
    backend_proxy: tuple[Stack, TcpProxy], batching_server: Server, clients: list[Watcher]
) -> None:
    stack, proxy = backend_proxy
    assert stack.redis_port is not None
    tasks = [[str(uuid.uuid4()) for _ in range(TASKS_PER_CLIENT)] for _ in clients]
    expected: dict[str, tuple[str, object]] = {}
    # Written by Celery's own backend, as a worker writes them (task_track_started, then the return value).
    backend = stack.celery.backend
    for i, task_id in enumerate(t for mine in tasks for t in mine):
        if i % 2:
            backend.store_result(task_id, {"pid": 1, "hostname": "celery@test"}, "STARTED")
            expected[task_id] = ("STARTED", None)
        else:
            backend.store_result(task_id, {"n": i}, "SUCCESS")
            expected[task_id] = ("SUCCESS", {"n": i})
    lookups = len(expected)
    reads_before = metric(batching_server.url, "pushserver_backend_reads_total", kind="snapshot")
    redis.Redis(port=stack.redis_port).config_resetstat()

    proxy.hold()
    try:
        acks = [
            asyncio.ensure_future(w.subscribe(mine, token=batching_server.token(*mine)))
            for w, mine in zip(clients, tasks)
        ]
        # Every subscribe has reached its snapshot reads (the gauge is set just before them).
        await asyncio.to_thread(
            wait_until,
            lambda: metric(batching_server.url, "pushserver_subscriptions") >= lookups,
            30,
            "every subscribe to be handled up to its snapshot reads",
        )
    finally:
        proxy.release()
    answers = await asyncio.gather(*acks)

    assert all(a["ok"] for a in answers), [a for a in answers if not a["ok"]][:3]
    got = {
        s["task_id"]: (s["state"], s["result"] if s["state"] == "SUCCESS" else None)
        for a in answers
        for s in a["tasks"]
    }
    assert got == expected
    calls = redis_calls(stack.redis_port)
    reads = metric(batching_server.url, "pushserver_backend_reads_total", kind="snapshot") - reads_before
    # At most two reads were in flight when the proxy held them (SNAPSHOT_READS); everything else waited
    # for the next read, which takes up to 1 000 keys: three MGETs, four if a subscribe's two lookups
    # were split by a turn of the loop. Unbatched, this was one GET per snapshot: 80.
    assert calls["get"] == 0, calls
    assert 1 <= calls["mget"] <= 4, (calls, lookups)
    assert reads == calls["mget"], (reads, calls)
