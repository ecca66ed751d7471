"""Scenario 13: RabbitMQ restarts while tasks run; several pushserver replicas, each with its own durable
``--event-queue``, all catch up once it is back.

The broker is a private RabbitMQ node of this test (``tests/support/rabbitmq_node.py``):
stopping the machine's shared one would break other test runs. Its data
directory survives the restart, as a production broker's does, so the
replicas' durable event queues and their bindings come back. Like scenario 1
(Redis restart), every client must get every completion. Each replica must
also have the same history as the others, down to each task's last progress
step, which only the events themselves carry. The tasks outlast the outage:
progress events sent *during* it are lost in the worker (``Task.send_event``
does not buffer while offline, and ``report_progress`` then pauses for
``PAUSE_AFTER_FAILURE``), so what this checks is that the steps sent once the
broker is back reach every replica's queue.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dev.metrics import metric
from dev.stack import http_get, http_status, start_redis
from tests.support.faults import delivered, subscribe_all, token, until, wait_all
from tests.support.rabbitmq_node import RabbitNode, rabbitmq_installed
from tests.support.stack import RUN_ID, Stack

REPLICAS = 3
# 40 steps 0.75 s apart: 30 s, longer than the outage (7.6-14.5 s measured on a loaded machine) plus
# report_progress's 5 s pause after a failed send, so the last steps are sent with the broker back.
STEPS = 40
STEP_DELAY = 0.75
PREFORK_QUEUE = "rmq-restart-prefork"


class RestartStack(Stack):
    node: RabbitNode


@pytest.fixture(scope="module")
def restart_stack(fault_dir: Path) -> Iterator[RestartStack]:
    if not rabbitmq_installed():
        message = "rabbitmq-server is not installed: run tests/faults/ensure_rabbitmq.sh (make test does)"
        if os.environ.get("PUSHSERVER_REQUIRE_RABBITMQ"):
            pytest.fail(message)
        pytest.skip(message)
    log_dir = fault_dir / "rabbitmq-restart"
    log_dir.mkdir()
    node = RabbitNode(log_dir / "node").start()
    redis, port = start_redis(log_dir)
    s = RestartStack(node.url, f"redis://127.0.0.1:{port}/0", log_dir, redis=redis, redis_port=port, name="faults")
    s.node = node
    try:
        s.worker(f"rmq-restart-threads-{RUN_ID}", pool="threads", concurrency=8, wait=False)
        # Its own queue, two tasks for its two processes: a prefork worker prefetches more than it runs,
        # and a task waiting behind another would outlast the test's point by a whole task.
        s.worker(f"rmq-restart-prefork-{RUN_ID}", pool="prefork", concurrency=2, queues=PREFORK_QUEUE, wait=False)
        s.wait_workers(f"rmq-restart-threads-{RUN_ID}", f"rmq-restart-prefork-{RUN_ID}")
        yield s
    finally:
        s.close()
        node.stop()


def snapshot(url: str, task_id: str) -> dict[str, Any]:
    import json

    status, body = http_get(f"{url}/tasks/{task_id}", {"Authorization": f"Bearer {token(task_id)}"})
    assert status == 200, body
    return json.loads(body)


async def test_rabbitmq_restart_every_replica_catches_up_from_its_event_queue(
    restart_stack: RestartStack, watchers, report
):
    s = restart_stack
    replicas = [
        s.server(f"rmq-restart-replica-{i}", extra=["--event-queue", f"pushserver-{RUN_ID}-replica-{i}"])
        for i in range(REPLICAS)
    ]
    clients = [w for r in replicas for w in await watchers(r.url, 1)]
    ids = [str(uuid.uuid4()) for _ in range(6)]
    await subscribe_all(clients, ids)
    for i, t in enumerate(ids):
        s.send("demo_progress", STEPS, STEP_DELAY, task_id=t, queue=PREFORK_QUEUE if i < 2 else "celery")
    await wait_all(clients, ids, "PROGRESS", timeout=60)

    figures: dict[str, object] = {}
    down_at = time.monotonic()
    await asyncio.to_thread(s.node.stop)
    figures["stopped_s"] = round(time.monotonic() - down_at, 1)
    for r in replicas:
        await until(lambda url=r.url: http_status(url + "/readyz") == 503, 30, "/readyz to report the lost broker")
    await asyncio.to_thread(s.node.start)
    up_at = time.monotonic()
    figures["outage_s"] = round(up_at - down_at, 1)
    whole = 0
    try:
        for r in replicas:
            await until(lambda url=r.url: http_status(url + "/readyz") == 200, 60, "the replica to reconnect")
        figures["ready_again_s"] = round(time.monotonic() - up_at, 1)
        await wait_all(clients, ids, "SUCCESS", timeout=120)
        figures["all_delivered_s"] = round(time.monotonic() - up_at, 1)

        def last_steps() -> dict[tuple[int, str], object]:
            return {
                (i, t): (snapshot(r.url, t)["progress"] or {}).get("current")
                for i, r in enumerate(replicas)
                for t in ids
            }

        def caught_up() -> int:
            return sum(1 for step in last_steps().values() if step == STEPS)

        # The last step's event can reach a replica's queue a little after SUCCESS reached its clients.
        try:
            await until(lambda: caught_up() == REPLICAS * len(ids), 60, "every replica to have every last step")
        except AssertionError:
            pass  # reported, and asserted below
        whole = caught_up()
        steps = last_steps()
    finally:
        report(
            f"13 RabbitMQ restarted mid-task, {REPLICAS} replicas with --event-queue (6 tasks)",
            len(clients) * len(ids),
            delivered(clients, ids),
            **figures,
            whole_history=f"{whole}/{REPLICAS * len(ids)}",
            reconnects=int(sum(metric(r.url, "pushserver_receiver_reconnects_total") for r in replicas)),
        )
    for w in clients:
        for t in ids:
            assert [u for u in w.updates[t] if u["state"] == "SUCCESS"][-1]["result"] == STEPS
    assert whole == REPLICAS * len(ids), steps
    assert all(r.proc.alive() for r in replicas)
