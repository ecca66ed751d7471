"""Scenario 6: RabbitMQ as the broker (results in Redis): the pipeline, and the faults that depend on the broker.

RabbitMQ runs on this machine (``tests/faults/ensure_rabbitmq.sh`` starts it
in CI). Everything here uses the default vhost with names of its own (task
queue, event queues, worker names carry the run id) and deletes its queues
afterwards. Client-side faults (offline client, replicas, shutdown) do not
depend on the broker and are not repeated here.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from kombu import Connection

from dev.metrics import metric
from dev.stack import http_get, start_redis
from tests.support.faults import delivered, subscribe_all, token, until, wait_all
from tests.support.stack import RUN_ID, Stack
from tests.support.tcpproxy import TcpProxy

AMQP_URL = os.environ.get("PUSHSERVER_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
TASK_QUEUE = f"faults-{RUN_ID}"
WORKERS = (f"rmq-a-{RUN_ID}", f"rmq-b-{RUN_ID}")


def amqp_answers(url: str) -> bool:
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), timeout=2).close()
        return True
    except OSError:
        return False


def via(proxy: TcpProxy) -> str:
    parts = urlsplit(AMQP_URL)
    return parts._replace(netloc=f"{parts.username}:{parts.password}@127.0.0.1:{proxy.port}").geturl()


class RabbitStack(Stack):
    event_queues: list[str]

    def event_queue(self, label: str) -> str:
        name = f"pushserver-faults-{RUN_ID}-{label}"
        self.event_queues.append(name)
        return name

    def send(self, name: str, *args: object, queue: str = TASK_QUEUE, task_id: str | None = None):
        return super().send(name, *args, queue=queue, task_id=task_id)


@pytest.fixture(scope="module")
def rabbit(fault_dir: Path) -> Iterator[RabbitStack]:
    if not amqp_answers(AMQP_URL):
        message = f"RabbitMQ does not answer at {AMQP_URL}: run tests/faults/ensure_rabbitmq.sh"
        if os.environ.get("PUSHSERVER_REQUIRE_RABBITMQ"):
            pytest.fail(message)
        pytest.skip(message)
    log_dir = fault_dir / "rabbitmq"
    log_dir.mkdir()
    redis, port = start_redis(log_dir)
    s = RabbitStack(AMQP_URL, f"redis://127.0.0.1:{port}/0", log_dir, redis=redis, redis_port=port, name="faults")
    s.event_queues = []
    try:
        s.worker(WORKERS[0], pool="threads", concurrency=4, queues=TASK_QUEUE, wait=False)
        s.worker(WORKERS[1], pool="prefork", concurrency=1, queues=TASK_QUEUE, wait=False)
        s.wait_workers(*WORKERS)
        yield s
    finally:
        s.close()
        with Connection(AMQP_URL, connect_timeout=5) as conn:
            channel = conn.channel()
            for name in [TASK_QUEUE, *s.event_queues]:
                try:
                    channel.queue_delete(name)
                except Exception:  # noqa: BLE001 - already gone
                    channel = conn.channel()


def snapshot(url: str, task_id: str) -> dict[str, Any]:
    import json

    status, body = http_get(f"{url}/tasks/{task_id}", {"Authorization": f"Bearer {token(task_id)}"})
    assert status == 200, body
    return json.loads(body)


def whole_history(task: dict[str, Any], steps: int) -> bool:
    """The snapshot was built from the task's own events, not only from the result backend."""
    return (
        task["state"] == "SUCCESS"
        and task["started_at"] is not None
        and task["received_at"] is not None
        and (task["progress"] or {}).get("current") == steps
    )


async def test_pipeline_progress_and_success_over_rabbitmq(rabbit: RabbitStack, watchers, report):
    servers = [
        rabbit.server("rmq-default"),
        rabbit.server("rmq-named", extra=["--event-queue", rabbit.event_queue("pipeline")]),
    ]
    clients = [w for server in servers for w in await watchers(server.url, 2)]
    ids = [str(uuid.uuid4()) for _ in range(3)]
    await subscribe_all(clients, ids)
    for t in ids:
        rabbit.send("demo_progress", 5, 0.2, task_id=t)
    try:
        await wait_all(clients, ids, "SUCCESS", timeout=60)
    finally:
        report(
            "6a RabbitMQ pipeline (2 servers x 2 clients x 3 tasks)", len(clients) * len(ids), delivered(clients, ids)
        )
    for w in clients:
        for t in ids:
            steps = [u["progress"]["current"] for u in w.updates[t] if u["state"] == "PROGRESS"]
            assert steps and max(steps) == 5, steps
            assert w.updates[t][-1]["result"] == 5


async def test_receiver_cut_off_from_rabbitmq_catches_up_from_its_named_queue(rabbit: RabbitStack, watchers, report):
    proxies = [TcpProxy("127.0.0.1", urlsplit(AMQP_URL).port or 5672).start() for _ in range(2)]
    named_q = rabbit.event_queue("cut")
    named = rabbit.server("rmq-cut-named", broker=via(proxies[0]), extra=["--event-queue", named_q])
    default = rabbit.server("rmq-cut-default", broker=via(proxies[1]))
    clients = {name: (await watchers(server.url))[0] for name, server in (("named", named), ("default", default))}
    ids = [str(uuid.uuid4()) for _ in range(4)]
    await subscribe_all(list(clients.values()), ids)
    histories: dict[str, int] = {}
    try:
        for proxy in proxies:
            proxy.cut()
        for url in (named.url, default.url):
            await until(lambda: metric(url, "pushserver_receiver_connected") == 0, 20, "the receiver to notice")
        results = [rabbit.send("demo_progress", 3, 0.1, task_id=t) for t in ids]
        for r in results:
            assert await asyncio.to_thread(r.get, timeout=60) == 3  # all finished in the gap
        for proxy in proxies:
            proxy.restore()
        await wait_all(list(clients.values()), ids, "SUCCESS", timeout=60)

        def histories_kept() -> bool:
            for name, url in (("named", named.url), ("default", default.url)):
                histories[name] = sum(whole_history(snapshot(url, t), 3) for t in ids)
            return histories["named"] == len(ids)

        # The reconcile from the result backend may tell clients SUCCESS
        # before the queued events are all in; wait for those, then look at
        # the default queue's replica, which had the same time.
        try:
            await until(histories_kept, 20, "the named queue's gap events to be ingested")
        except AssertionError:
            pass  # reported, and asserted below
    finally:
        report(
            "6b RabbitMQ receiver cut off (2 servers x 4 tasks)",
            2 * len(ids),
            delivered(list(clients.values()), ids),
            gap_events_kept_with_event_queue=f"{histories.get('named')}/{len(ids)}",
            gap_events_kept_default_queue=f"{histories.get('default')}/{len(ids)}",
        )
        for proxy in proxies:
            proxy.close()
    # The named queue kept the gap's events; Celery's default queue went with
    # the connection, and only the reconcile from the result backend saved it.
    assert histories["named"] == len(ids)
    assert histories["default"] == 0


async def test_restarted_replica_ingests_what_it_missed_from_its_event_queue(rabbit: RabbitStack, report):
    queue = rabbit.event_queue("restart")
    named = rabbit.server("rmq-restart-named", extra=["--event-queue", queue])
    default = rabbit.server("rmq-restart-default")
    (named_proc, named_url), (default_proc, default_url) = (named.proc, named.url), (default.proc, default.url)
    port_named, port_default = (int(u.rsplit(":", 1)[1]) for u in (named_url, default_url))
    assert await asyncio.to_thread(named_proc.stop) == 0
    assert await asyncio.to_thread(default_proc.stop) == 0

    tasks = [rabbit.send("demo_progress", 3, 0.1) for _ in range(5)]
    for t in tasks:
        assert await asyncio.to_thread(t.get, timeout=60) == 3  # while no server runs
    rabbit.server("rmq-restart-named", extra=["--event-queue", queue], port=port_named)
    rabbit.server("rmq-restart-default", port=port_default)
    ids = [t.id for t in tasks]
    # Events per task: sent, received, started, 3 x progress, succeeded.
    await until(
        lambda: metric(named_url, "pushserver_events_ingested_total", type="task-succeeded") >= len(ids),
        30,
        "the restarted server to drain its queue",
    )
    caught_up = without = -1
    try:
        caught_up = sum(whole_history(snapshot(named_url, t), 3) for t in ids)
        without = sum(whole_history(snapshot(default_url, t), 3) for t in ids)
    finally:
        report(
            "6c RabbitMQ replica restart with --event-queue (5 tasks)",
            len(ids),
            caught_up,
            task_events_ingested=int(
                sum(
                    metric(named_url, "pushserver_events_ingested_total", type=t)
                    for t in ("task-sent", "task-received", "task-started", "task-progress", "task-succeeded")
                )
            ),
            whole_history_without_event_queue=f"{without}/{len(ids)}",
        )
    assert caught_up == len(ids)
    assert without == 0
    # The default server still answers, from the result backend.
    assert all(snapshot(default_url, t)["state"] == "SUCCESS" for t in ids)


async def test_worker_killed_mid_task_is_redelivered_at_once(rabbit: RabbitStack, watchers, report):
    url = rabbit.server("rmq-worker-kill").url
    (w,) = await watchers(url)
    task = rabbit.send("demo_progress", 8, 0.4)
    assert (await w.subscribe(task.id))["ok"]
    update = await w.wait_for(
        task.id, lambda u: u["state"] == "PROGRESS" and u["progress"]["current"] >= 2 and u["worker"], timeout=60
    )
    name = update["worker"].split("@", 1)[0]
    victim = next(p for p in rabbit.procs if p.name == name and p.alive())
    victim.stop(signal.SIGKILL)
    killed_at = time.monotonic()
    try:
        final = await w.wait_for(task.id, lambda u: u["state"] == "SUCCESS", timeout=60)
    finally:
        report(
            "6d RabbitMQ worker SIGKILLed mid-task",
            1,
            delivered([w], [task.id]),
            redelivered_and_done_s=round(time.monotonic() - killed_at, 1),
        )
    updates = w.updates[task.id]
    assert "FAILURE" not in [u["state"] for u in updates]
    first = next(i for i, u in enumerate(updates) if u["state"] == "SUCCESS")
    assert any((u["started_at"] or 0) > update["started_at"] for u in updates[:first])
    assert final["started_at"] > update["started_at"]
    assert final["worker"] != update["worker"]
    assert final["result"] == 8
    # Restart the worker for whatever runs after this test.
    await asyncio.to_thread(
        rabbit.worker,
        name,
        pool="threads" if name == WORKERS[0] else "prefork",
        concurrency=4 if name == WORKERS[0] else 1,
        queues=TASK_QUEUE,
    )
