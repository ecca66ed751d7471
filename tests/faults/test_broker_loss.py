"""Scenario 1: Redis, the broker and result backend, restarts while tasks run.

The Redis here persists to an append-only file, as a production broker does:
a Redis that forgets its queues on restart loses tasks whatever the push
server does. The outage lasts ``PUSHSERVER_FAULT_OUTAGE_SECONDS`` (4 s).
Some tasks end inside the outage, when their worker cannot store the result
(it retries, ``result_backend_always_retry`` in workers/app.py); the others
end after Redis is back.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dev.metrics import metric
from dev.stack import Proc, http_status, is_ready, readyz, redis_ping, restartable_port, wait_until
from tests.support.faults import delivered, env_number, subscribe_all, until, wait_all
from tests.support.stack import Stack

OUTAGE = env_number("PUSHSERVER_FAULT_OUTAGE_SECONDS", 4)
# demo_progress reports its first step as it starts, and the outage begins once every task has.
# (steps, delay): ends at 3/4 of the outage; ends 4 s after it.
ENDS_DURING = (3, OUTAGE / 4)
ENDS_AFTER = (8, (OUTAGE + 4) / 8)


def start_persistent_redis(log_dir: Path, port: int) -> Proc:
    """redis-server with an fsync-always append-only file in ``log_dir``: it restarts with its data."""
    data = log_dir / "redis-aof"
    data.mkdir(exist_ok=True)
    proc = Proc(
        f"redis-aof-{port}",
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--dir",
            str(data),
        ],
        log_dir,
    )
    wait_until(lambda: redis_ping(port) or not proc.alive(), 15, "redis-server to answer PING")
    assert proc.alive(), proc.log()
    return proc


@pytest.fixture(scope="module")
def aof_stack(fault_dir: Path) -> Iterator[Stack]:
    log_dir = fault_dir / "broker-loss"
    log_dir.mkdir()
    port = restartable_port()  # Redis comes back on it
    redis = start_persistent_redis(log_dir, port)
    s = Stack(
        f"redis://127.0.0.1:{port}/0",
        f"redis://127.0.0.1:{port}/1",
        log_dir,
        redis=redis,
        redis_port=port,
        name="faults",
    )
    try:
        s.worker("loss-threads", pool="threads", concurrency=8, visibility_timeout=10, wait=False)
        s.worker("loss-prefork", pool="prefork", concurrency=2, queues="prefork", visibility_timeout=10, wait=False)
        s.wait_workers("loss-threads", "loss-prefork")
        yield s
    finally:
        s.close()


async def test_redis_restart_mid_task_every_client_gets_every_completion(aof_stack: Stack, watchers, report):
    s = aof_stack
    server = s.server("broker-loss-server")
    proc, url = server.proc, server.url
    clients = await watchers(url, 2)
    # Three of each length on the threads worker, one of each on the prefork one.
    plan = [(length, "celery") for length in (ENDS_DURING, ENDS_AFTER) * 3]
    plan += [(length, "prefork") for length in (ENDS_DURING, ENDS_AFTER)]
    tasks = [s.send("demo_progress", *length, queue=queue) for length, queue in plan]
    ids = [t.id for t in tasks]
    steps = {t.id: length[0] for t, (length, _) in zip(tasks, plan)}  # what demo_progress returns
    await subscribe_all(clients, ids)
    await wait_all(clients, ids, "PROGRESS", timeout=60)

    # The outage: stop Redis, keep it down, start it again on the same port.
    down_at = time.monotonic()
    # Every task still runs: the short ones must end inside the outage for this to test it.
    assert delivered(clients, ids) == 0, "a task ended before the outage began"
    await asyncio.to_thread(s.redis.stop)
    await until(lambda: http_status(url + "/readyz") == 503, 20, "/readyz to report the lost broker")
    seen_not_ready = readyz(url)
    assert seen_not_ready["receiver"] == "reconnecting"
    await asyncio.sleep(max(0.0, OUTAGE - (time.monotonic() - down_at)))  # the outage's chosen length
    s.redis = await asyncio.to_thread(start_persistent_redis, s.log_dir, s.redis_port)
    up_at = time.monotonic()
    await until(lambda: is_ready(url), 60, "the receiver to reconnect")
    ready_after = time.monotonic() - up_at

    try:
        await wait_all(clients, ids, "SUCCESS", timeout=90)
    finally:
        report(
            "1 broker loss: Redis restarted mid-task, 4 tasks ending in the outage (2 clients x 8 tasks)",
            len(clients) * len(ids),
            delivered(clients, ids),
            outage_s=round(up_at - down_at, 1),
            ready_again_s=round(ready_after, 1),
            reconciled=int(metric(url, "pushserver_reconciled_total")),
        )
    for w in clients:
        for t in ids:
            final = [u for u in w.updates[t] if u["state"] == "SUCCESS"][-1]
            # Read from Redis once it is back; a read during the outage keeps the repr (documented).
            as_repr = (final["result"], final["result_format"]) == (str(steps[t]), "repr")
            assert final["result"] == steps[t] or as_repr, final
    assert metric(url, "pushserver_receiver_reconnects_total") >= 1

    # The workers lived through it and take new work on both pools.
    assert all(p.alive() for p in s.procs), [p.name for p in s.procs if not p.alive()]
    after = [s.send("demo_progress", 2, 0.05), s.send("demo_progress", 2, 0.05, queue="prefork")]
    for w in clients:
        assert (await w.subscribe([t.id for t in after]))["ok"]
    for w in clients:
        for t in after:
            await w.wait_state(t.id, "SUCCESS", timeout=60)
    assert proc.alive()
    for worker in s.procs:
        if worker.name.startswith("loss-"):
            assert "Unrecoverable error" not in worker.log(), worker.log()[-3000:]
