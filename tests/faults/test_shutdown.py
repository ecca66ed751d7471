"""Scenario 9: SIGTERM under load: refuse new connections, tell clients, write the event log out, exit 0.

A burst of recorded task events is published just before SIGTERM, so the
event log still has a queue to write when the signal comes; every event the
server took in must be in MongoDB afterwards.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymongo import MongoClient

from dev.metrics import metric
from dev.stack import start_mongo
from tests.support.clients import Watcher
from tests.support.faults import token, until
from tests.support.load import Publisher, record_stream
from tests.support.stack import Stack

EVENTS = 20_000
SHUTDOWN_TIMEOUT = 10


@pytest.fixture(scope="module")
def mongo_url(stack: Stack) -> Iterator[str]:
    proc, url = start_mongo(stack.log_dir)
    yield url
    proc.stop()


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return False
    except OSError:
        return True


async def test_sigterm_refuses_connections_tells_clients_flushes_the_event_log_and_exits_0(
    stack: Stack, mongo_url: str, report, fault_dir: Path
):
    db = f"faults_{secrets.token_hex(4)}"
    server = stack.server(
        "shutdown-server", extra=["--mongo", mongo_url, "--mongo-db", db, "--shutdown-timeout", str(SHUTDOWN_TIMEOUT)]
    )
    proc, url = server.proc, server.url
    port = int(url.rsplit(":", 1)[1])
    clients = [Watcher(url, resubscribe=True) for _ in range(3)]
    for w in clients:
        await w.connect(token())
    burst = await asyncio.to_thread(record_stream, stack.broker, EVENTS, fault_dir / "shutdown.tsv")
    publisher = Publisher(stack.broker, burst, stack.log_dir, max_backlog=4_000_000)
    try:
        publisher.go()
        sent = await asyncio.to_thread(publisher.result, 120)
        assert sent["messages_unheard"] == 0
        task_events = lambda: sum(
            metric(url, "pushserver_events_ingested_total", type=t)  # noqa: E731
            for t in ("task-sent", "task-received", "task-started", "task-progress", "task-succeeded")
        )
        await until(lambda: task_events() >= burst.events, 60, "the server to ingest the burst", 0.02)
        queued = metric(url, "pushserver_eventlog_queued")
        written_before = metric(url, "pushserver_eventlog_written_total")

        t0 = time.monotonic()
        proc.popen.send_signal(signal.SIGTERM)
        await until(lambda: all(w.disconnects for w in clients), 5, "every client to see the disconnect")
        told_after = time.monotonic() - t0
        assert refused(port), "a new connection was accepted after SIGTERM"
        code = await asyncio.to_thread(proc.popen.wait, SHUTDOWN_TIMEOUT + 5)
        exited_after = time.monotonic() - t0
    finally:
        publisher.stop()
        for w in clients:
            await w.close()
    client = MongoClient(mongo_url)
    try:
        stored = client[db]["task_events"].count_documents({})
    finally:
        client.close()
    report(
        "9 graceful shutdown: events logged before exit",
        burst.events,
        stored,
        queued_at_sigterm=int(queued),
        written_before=int(written_before),
        clients_told_s=round(told_after, 2),
        exit_s=round(exited_after, 2),
        exit_code=code,
    )
    assert code == 0
    assert exited_after < SHUTDOWN_TIMEOUT + 2
    assert stored == burst.events
    log = proc.log()
    assert "event log flushed" in log or queued == 0, log[-2000:]
    assert "Traceback" not in log
