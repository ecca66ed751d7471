"""The receiver's child process: restarted when it dies, gone when the server dies, and the thread mode still works."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from dev.metrics import metric
from dev.stack import http_get, is_ready, start_pushserver, wait_until
from tests.support.clients import Watcher
from tests.support.stack import Server, Stack, assert_live_events_flow

pytestmark = pytest.mark.integration


def children(pid: int) -> list[int]:
    """The direct children of a process (Linux)."""
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent has not collected it


def receiver_pid(server_pid: int) -> int:
    wait_until(lambda: len(children(server_pid)) == 1, 10, "the receiver process to start")
    return children(server_pid)[0]


async def test_a_killed_receiver_process_is_replaced_and_nothing_finished_meanwhile_is_missed(
    stack: Stack, server: Server
):
    proc, url = start_pushserver("receiver-killed", stack.broker, stack.backend, stack.log_dir, secret=server.secret)
    try:
        wait_until(lambda: is_ready(url), 20, "the server to be ready")
        first = receiver_pid(proc.pid)
        task = stack.send("demo_progress", 3, 0.2)
        watcher = await Watcher(url).connect(server.token(task.id))
        try:
            assert (await watcher.subscribe(task.id))["ok"] is True
            os.kill(first, signal.SIGKILL)
            # Whether the task ends inside the gap or after it, the client
            # hears its completion: live, or from the result backend when
            # the new child reconnects.
            assert task.get(timeout=30) == 3
            wait_until(lambda: is_ready(url) and children(proc.pid) != [first], 30, "a new receiver process to connect")
            final = await watcher.wait_state(task.id, "SUCCESS", timeout=15)
            assert final["result"] == 3
            assert metric(url, "pushserver_receiver_reconnects_total") >= 1
            readiness = json.loads(http_get(url + "/readyz")[1])
            assert readiness["reconnects"] >= 1 and readiness["receiver"] == "connected"
            await assert_live_events_flow(stack, server, watcher)
        finally:
            await watcher.close()
    finally:
        proc.stop()
    log = proc.log()
    assert "event receiver process exited (killed by SIGKILL)" in log
    assert "Traceback" not in log


def test_the_receiver_process_exits_when_the_server_is_killed(stack: Stack, server: Server):
    proc, url = start_pushserver("server-killed", stack.broker, stack.backend, stack.log_dir, secret=server.secret)
    try:
        wait_until(lambda: is_ready(url), 20, "the server to be ready")
        child = receiver_pid(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)  # the server alone, not its process group
        wait_until(lambda: not alive(child), 10, "the orphaned receiver process to exit")
    finally:
        proc.stop()


def test_sigterm_stops_the_receiver_process_with_the_server(stack: Stack, server: Server):
    proc, url = start_pushserver("server-sigterm", stack.broker, stack.backend, stack.log_dir, secret=server.secret)
    wait_until(lambda: is_ready(url), 20, "the server to be ready")
    child = receiver_pid(proc.pid)
    os.kill(proc.pid, signal.SIGTERM)
    proc.popen.wait(20)
    assert proc.stop() == 0
    assert not alive(child)
    assert "event receiver process exited" not in proc.log()  # a requested stop is not a crash


async def test_thread_receiver_delivers_updates_without_a_child_process(stack: Stack, server: Server):
    proc, url = start_pushserver(
        "thread-receiver",
        stack.broker,
        stack.backend,
        stack.log_dir,
        secret=server.secret,
        extra=["--receiver", "thread"],
    )
    try:
        wait_until(lambda: is_ready(url), 20, "the server to be ready")
        assert children(proc.pid) == []
        task = stack.send("demo_progress", 3, 0.05)
        watcher = await Watcher(url).connect(server.token(task.id))
        try:
            assert (await watcher.subscribe(task.id))["ok"] is True
            final = await watcher.wait_state(task.id, "SUCCESS", timeout=30)
            assert final["result"] == 3
        finally:
            await watcher.close()
    finally:
        assert proc.stop() == 0
