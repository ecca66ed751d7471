"""Scenario 12: Redis Sentinel: the master is killed while tasks run, Sentinel promotes the replica.

Real Debian ``redis-server`` (a master and its replica) and three
``redis-sentinel`` processes (quorum 2) on loopback ports; workers,
``pushserver serve`` and the dispatching client all reach Redis through
``sentinel://`` URLs listing every sentinel, with ``master_name`` in the
transport options (``--broker-transport-options`` and
``--backend-transport-options`` for pushserver; ``CELERY_BROKER_TRANSPORT_OPTIONS``
and ``CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS`` for the example workers).
The receiver must reconnect to the new master, the watched tasks be
reconciled, and every completion be delivered.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dev.metrics import metric
from dev.stack import http_status, readyz
from tests.support.faults import delivered, subscribe_all, until, wait_all
from tests.support.redis_servers import SentinelSet, start_sentinel_set, wait_for_failover
from tests.support.stack import Stack, environ

OPTIONS = json.dumps({"master_name": "mymaster"})


class SentinelStack(Stack):
    sentinel: SentinelSet


@pytest.fixture(scope="module")
def sentinel_stack(fault_dir: Path) -> Iterator[SentinelStack]:
    log_dir = fault_dir / "sentinel"
    log_dir.mkdir()
    sentinels = start_sentinel_set(log_dir)
    s = SentinelStack(sentinels.url(0), sentinels.url(1), log_dir, name="faults")
    s.sentinel = sentinels
    s.celery.conf.broker_transport_options = {"master_name": "mymaster"}
    s.celery.conf.result_backend_transport_options = {"master_name": "mymaster"}
    try:
        with environ(CELERY_BROKER_TRANSPORT_OPTIONS=OPTIONS, CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS=OPTIONS):
            s.worker("sentinel-threads", pool="threads", concurrency=8, visibility_timeout=10, wait=False)
            s.worker(
                "sentinel-prefork", pool="prefork", concurrency=2, queues="prefork", visibility_timeout=10, wait=False
            )
        s.wait_workers("sentinel-threads", "sentinel-prefork")
        yield s
    finally:
        s.close()
        for proc in reversed(sentinels.procs()):
            proc.stop()


async def test_sentinel_failover_mid_task_every_completion_is_delivered(
    sentinel_stack: SentinelStack, watchers, report
):
    s = sentinel_stack
    server = s.server(
        "sentinel-server", extra=["--broker-transport-options", OPTIONS, "--backend-transport-options", OPTIONS]
    )
    proc, url = server.proc, server.url
    clients = await watchers(url, 2)
    ids = [str(uuid.uuid4()) for _ in range(8)]
    await subscribe_all(clients, ids)
    for t in ids[:6]:
        s.send("demo_progress", 10, 0.5, task_id=t)
    for t in ids[6:]:
        s.send("demo_progress", 10, 0.5, queue="prefork", task_id=t)
    await wait_all(clients, ids, "PROGRESS", timeout=60)

    old_master = s.sentinel.master_port
    s.sentinel.master.stop(signal.SIGKILL)
    killed_at = time.monotonic()
    figures: dict[str, object] = {}
    try:
        figures["promoted_s"] = round(await asyncio.to_thread(wait_for_failover, s.sentinel, old_master), 1)
        assert s.sentinel.current_master() == s.sentinel.replica_port
        await until(
            lambda: metric(url, "pushserver_receiver_reconnects_total") >= 1,
            60,
            "the receiver to reconnect to the new master",
        )
        await until(lambda: http_status(url + "/readyz") == 200, 60, "/readyz to be ready again")
        figures["ready_again_s"] = round(time.monotonic() - killed_at, 1)
        await wait_all(clients, ids, "SUCCESS", timeout=120)
        figures["all_delivered_s"] = round(time.monotonic() - killed_at, 1)
    finally:
        report(
            "12 Redis Sentinel: master killed mid-task, replica promoted (2 clients x 8 tasks)",
            len(clients) * len(ids),
            delivered(clients, ids),
            **figures,
            reconciled=int(metric(url, "pushserver_reconciled_total")),
            quiet_reconciled=int(metric(url, "pushserver_quiet_tasks_reconciled_total")),
        )
    for w in clients:
        for t in ids:
            assert [u for u in w.updates[t] if u["state"] == "SUCCESS"][-1]["result"] == 10
    assert readyz(url)["receiver"] == "connected"
    # The workers followed the new master and take new work on both pools.
    after = [s.send("demo_progress", 2, 0.05), s.send("demo_progress", 2, 0.05, queue="prefork")]
    for w in clients:
        assert (await w.subscribe([t.id for t in after]))["ok"]
    for w in clients:
        for t in after:
            await w.wait_state(t.id, "SUCCESS", timeout=60)
    assert proc.alive() and all(p.alive() for p in s.procs)
