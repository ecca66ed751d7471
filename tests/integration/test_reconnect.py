"""The receiver loses the broker: it reconnects by itself and reconciles what finished in the gap."""

from __future__ import annotations

import json

import pytest

from dev.metrics import metric
from dev.stack import http_get, http_status, is_ready, start_pushserver, wait_until
from tests.support.clients import Watcher
from tests.support.stack import Server, Stack, assert_live_events_flow
from tests.support.tcpproxy import TcpProxy

pytestmark = pytest.mark.integration


async def test_receiver_reconnects_and_reconciles_completions_missed_in_the_gap(stack: Stack, server: Server):
    # Only the push server's broker connection goes through the proxy: the
    # workers and the result backend keep running, as when a network path or
    # a load balancer in front of Redis fails.
    proxy = TcpProxy("127.0.0.1", stack.redis_port).start()
    proc, url = start_pushserver(
        "reconnect-server", f"redis://127.0.0.1:{proxy.port}/0", stack.backend, stack.log_dir, secret=server.secret
    )
    try:
        wait_until(lambda: is_ready(url), 20, "the server to be ready")
        during_gap = stack.send("demo_progress", 3, 0.05)
        watcher = await Watcher(url).connect(server.token(during_gap.id))
        try:
            # Subscribed while the task is still queued behind nothing: the
            # snapshot is at most STARTED.
            ack = await watcher.subscribe(during_gap.id)
            assert ack["ok"] is True

            proxy.cut()
            wait_until(lambda: http_status(url + "/readyz") == 503, 15, "/readyz to report the lost broker")
            readiness = json.loads(http_get(url + "/readyz")[1])
            assert readiness["receiver"] == "reconnecting"
            assert during_gap.get(timeout=30) == 3  # finished while the receiver was away
            assert proc.alive()

            proxy.restore()
            wait_until(lambda: is_ready(url), 30, "the receiver to reconnect")
            final = await watcher.wait_state(during_gap.id, "SUCCESS", timeout=15)
            assert final["result"] == 3
            assert metric(url, "pushserver_receiver_reconnects_total") >= 1
            assert metric(url, "pushserver_reconciled_total") >= 1

            await assert_live_events_flow(stack, server, watcher)
        finally:
            await watcher.close()
    finally:
        proc.stop()
        proxy.close()
    log = proc.log()
    assert log.count("reconnecting") >= 1
    assert "Traceback" not in log


async def test_a_client_subscribed_before_the_receiver_first_connects_still_hears_the_completion(
    stack: Stack, server: Server
):
    # The port opens before the receiver is listening (and a receiver process
    # takes a second to start): a page may subscribe in that window, to a task
    # whose remaining events nobody is receiving yet.
    proxy = TcpProxy("127.0.0.1", stack.redis_port).start()
    proxy.cut()
    proc, url = start_pushserver(
        "first-connect-server", f"redis://127.0.0.1:{proxy.port}/0", stack.backend, stack.log_dir, secret=server.secret
    )
    try:
        task = stack.send("demo_progress", 3, 0.05)
        watcher = await Watcher(url).connect(server.token(task.id))
        try:
            assert (await watcher.subscribe(task.id))["ok"] is True
            assert json.loads(http_get(url + "/readyz")[1])["receiver"] != "connected"
            assert task.get(timeout=30) == 3
            proxy.restore()
            final = await watcher.wait_state(task.id, "SUCCESS", timeout=30)
            assert final["result"] == 3
            assert metric(url, "pushserver_receiver_reconnects_total") == 0  # a first connect, not a reconnect
        finally:
            await watcher.close()
    finally:
        proc.stop()
        proxy.close()
    assert "Traceback" not in proc.log()
