"""Scenario 10: task events lost while every process stays connected; the quiet-task reconciler delivers anyway.

Real Celery workers started without task events (no ``-E``, and
``worker_send_task_events`` off), one of them switched on with ``celery
control enable_events`` and off again mid-task with ``disable_events``, a real Redis as broker and
result backend, a real ``pushserver serve`` with the documented defaults
(``--reconcile-after 5``, ``--reconcile-max-interval 60``): the clients must
still get SUCCESS and the result, within the documented bound
(``max(--reconcile-after, how long the task had been quiet when it
finished) + 2 s``). A long silent task must not be read more than its
doubling schedule allows, counted by Redis itself (``INFO commandstats``).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import group

from dev.metrics import metric
from dev.stack import BIN, Proc
from pushserver.worker import save_workflow
from tests.support.clients import Watcher
from tests.support.faults import delivered, env_number, subscribe_all, token, until, wait_all
from tests.support.stack import HOSTNAME, Stack, redis_stack, threads_worker_stack

AFTER = 5.0  # --reconcile-after's default
SLACK = 2.0  # the tick (1 s) and a loaded 2-core machine


@pytest.fixture(scope="module")
def quiet(fault_dir: Path) -> Iterator[Stack]:
    log_dir = fault_dir / "quiet"
    log_dir.mkdir()
    s = redis_stack(log_dir, name="faults")
    try:
        for name in ("quiet-off", "quiet-on"):
            s.procs.append(worker_without_events(s, name))
        s.wait_workers("quiet-off", "quiet-on")
        set_events(s, "quiet-on", on=True)
        yield s
    finally:
        s.close()


def worker_without_events(s: Stack, name: str) -> Proc:
    """``celery -A workers worker`` without ``-E`` and with ``worker_send_task_events`` off, consuming queue ``name``.

    (Celery's ``disable_events`` only works on such a worker: with ``-E`` the
    dispatcher has no event groups, and the command changes nothing.)
    """
    env = {"CELERY_BROKER_URL": s.broker, "CELERY_RESULT_BACKEND": s.backend, "CELERY_WORKER_SEND_TASK_EVENTS": "0"}
    return Proc(
        name,
        [
            str(BIN / "celery"),
            "-A",
            "workers",
            "worker",
            "-P",
            "threads",
            "-c",
            "4",
            "-Q",
            name,
            "-n",
            f"{name}@%h",
            "--without-mingle",
            "--without-gossip",
            "-l",
            "info",
        ],
        s.log_dir,
        env,
    )


def set_events(s: Stack, worker: str, *, on: bool) -> None:
    """``celery control enable_events`` / ``disable_events`` for one worker, waiting for its reply."""
    command = s.celery.control.enable_events if on else s.celery.control.disable_events
    replies = command(destination=[f"{worker}@{HOSTNAME}"], reply=True, timeout=5)
    assert replies, f"{worker} did not answer"
    answer = next(iter(replies[0].values()))
    assert answer.get("ok") == ("task events enabled" if on else "task events disabled"), answer


def redis_calls(port: int, command: str) -> int:
    """How many times Redis has run ``command`` (``INFO commandstats``): what the server really asked."""
    client = redis.Redis(port=port, socket_timeout=5)
    try:
        return int(client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))
    finally:
        client.close()


async def test_worker_with_events_off_clients_still_get_success_and_result(quiet: Stack, watchers, report):
    url = quiet.server("quiet-events-off").url
    clients = await watchers(url, 2)
    ids = [str(uuid.uuid4()) for _ in range(5)]
    await subscribe_all(clients, ids)
    for t in ids:
        quiet.send("demo_progress", 2, 0.2, queue="quiet-off", task_id=t)
    delays: list[float] = []
    try:
        for w in clients:
            for t in ids:
                final = await w.wait_state(t, "SUCCESS", timeout=AFTER + 30)
                delays.append(time.time() - final["finished_at"])
    finally:
        report(
            "10a worker with task events off (2 clients x 5 tasks)",
            len(clients) * len(ids),
            delivered(clients, ids),
            worst_delay_s=round(max(delays, default=-1), 1),
            bound_s=AFTER + 2,
            quiet_reconciled=int(metric(url, "pushserver_quiet_tasks_reconciled_total")),
        )
    for w in clients:
        for t in ids:
            assert w.updates[t][-1]["result"] == 2
    assert max(delays) <= AFTER + 2 + SLACK, delays
    assert metric(url, "pushserver_quiet_tasks_reconciled_total") >= len(ids)
    assert metric(url, "pushserver_events_ingested_total", type="task-succeeded") == 0


async def test_a_workflow_run_without_events_still_reaches_success(quiet: Stack, watchers, report):
    """The members of a watched workflow are watched tasks for the quiet-task reconciler too."""
    url = quiet.server("quiet-workflow").url
    (w,) = await watchers(url)
    step = quiet.celery.signature("workers.tasks.demo_progress", args=(2, 0.2), immutable=True).set(queue="quiet-off")
    result = group(step.clone() for _ in range(4)).apply_async()
    workflow_id = save_workflow(result)
    ack = await w.subscribe(workflow_id, token(workflow_id), workflows=True)
    assert ack["ok"] and ack["workflows"][0]["total"] == 4, ack
    await until(result.ready, 60, "the group's members to finish (read from the result backend)")
    assert result.join(timeout=5) == [2, 2, 2, 2]
    finished = time.monotonic()
    done: dict = {}
    try:
        done = await w.wait_workflow(workflow_id, lambda s: s["state"] == "SUCCESS", timeout=AFTER + 30)
    finally:
        report(
            "10e workflow (saved group of 4) on a worker with task events off",
            1,
            int(done.get("state") == "SUCCESS"),
            delay_s=round(time.monotonic() - finished, 1),
            quiet_reconciled=int(metric(url, "pushserver_quiet_tasks_reconciled_total")),
        )
    assert done["counts"] == {"SUCCESS": 4} and done["completed"] == 4
    assert time.monotonic() - finished <= AFTER + 2 + SLACK
    assert metric(url, "pushserver_quiet_tasks_reconciled_total") >= 4
    assert metric(url, "pushserver_events_ingested_total", type="task-succeeded") == 0


async def test_events_switched_off_mid_task_the_lost_success_is_delivered(quiet: Stack, watchers, report):
    url = quiet.server("quiet-disabled-mid-task").url
    clients = await watchers(url, 2)
    ids = [str(uuid.uuid4()) for _ in range(4)]
    await subscribe_all(clients, ids)
    results = [quiet.send("demo_progress", 6, 0.5, queue="quiet-on", task_id=t) for t in ids]
    delays: list[float] = []
    try:
        await wait_all(clients, ids, "STARTED", timeout=30)
        set_events(quiet, "quiet-on", on=False)  # the task-succeeded events will never be sent
        for r in results:
            assert await asyncio.to_thread(r.get, timeout=60) == 6
        for w in clients:
            for t in ids:
                final = await w.wait_state(t, "SUCCESS", timeout=AFTER + 30)
                delays.append(time.time() - final["finished_at"])
    finally:
        set_events(quiet, "quiet-on", on=True)
        report(
            "10b task events switched off mid-task (2 clients x 4 tasks)",
            len(clients) * len(ids),
            delivered(clients, ids),
            worst_delay_s=round(max(delays, default=-1), 1),
            quiet_reconciled=int(metric(url, "pushserver_quiet_tasks_reconciled_total")),
        )
    for w in clients:
        for t in ids:
            assert w.updates[t][-1]["result"] == 6
    # Quiet for at most the 3 s of its remaining steps when it finished: read within max(5, 3) + 2 s.
    assert max(delays) <= AFTER + 2 + SLACK, delays
    assert metric(url, "pushserver_events_ingested_total", type="task-succeeded") == 0


@pytest.fixture
def silent(fault_dir: Path) -> Iterator[Stack]:
    """A Stack of its own (private Redis, one worker with task events): Redis's MGET count is this test's alone."""
    log_dir = fault_dir / "quiet-silent"
    log_dir.mkdir()
    with threads_worker_stack(log_dir, "quiet-silent", 2, name="faults") as s:
        yield s


async def test_a_long_silent_task_is_not_hammered(silent: Stack, watchers, report):
    after, longest, seconds = 1.0, 8.0, 24.0
    url = silent.server(
        "quiet-long-task", extra=["--reconcile-after", str(after), "--reconcile-max-interval", str(longest)]
    ).url
    (w,) = await watchers(url)
    task_id = str(uuid.uuid4())
    assert (await w.subscribe([task_id]))["ok"]
    assert silent.redis_port is not None
    mget_at_subscribe = redis_calls(silent.redis_port, "mget")
    silent.send("sleep", seconds, task_id=task_id)
    await w.wait_state(task_id, "STARTED", timeout=30)
    # Counted from STARTED, the task's last event before its silence: reads while it waited in the
    # queue (subscribed, not yet started) follow the same schedule but are not this test's subject.
    mget_before = redis_calls(silent.redis_port, "mget")
    started = time.monotonic()
    final = await w.wait_state(task_id, "SUCCESS", timeout=seconds + 30)
    ran = time.monotonic() - started
    reads = redis_calls(silent.redis_port, "mget") - mget_before
    # Quiet ages at each read: 1, 2, 4, 8, then every 8 s: 1, 2, 4, 8, 16, 24 within 24 s.
    schedule = [1.0, 2.0, 4.0, 8.0] + [8.0 * k for k in range(2, int(ran // longest) + 2)]
    allowed = sum(1 for age in schedule if age <= ran + 1)
    report(
        "10c long silent task: backend reads (one MGET each)",
        1,
        delivered([w], [task_id]),
        task_seconds=round(ran, 1),
        mget_calls=reads,
        allowed_by_schedule=allowed,
        polling_every_second_would_be=int(ran),
    )
    assert final["result"] == seconds
    # One MGET more than the schedule's: the SUCCESS value read for the notice (--forward-results json).
    assert 3 <= reads - 1 <= allowed, (reads, allowed)
    # This Redis serves this server alone (the worker stores results with SET, never MGET): the server's
    # own count from subscribe on equals Redis's.
    counted = sum(metric(url, "pushserver_backend_reads_total", kind=kind) for kind in ("batch", "result"))
    assert counted == redis_calls(silent.redis_port, "mget") - mget_at_subscribe, counted


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def test_ten_thousand_quiet_tasks_cost_at_most_one_backend_round_trip_a_second(quiet: Stack, report):
    """10 000 watched tasks that never run (10 clients x 1 000): Redis counts the server's MGETs."""
    seconds = env_number("PUSHSERVER_QUIET_SECONDS", 60)
    server = quiet.server("quiet-ten-thousand")
    proc, url = server.proc, server.url
    clients = [Watcher(url) for _ in range(10)]
    for w in clients:
        await w.connect(token())
    ids = [str(uuid.uuid4()) for _ in range(10_000)]
    try:
        for i, w in enumerate(clients):
            mine = ids[i * 1000 : (i + 1) * 1000]
            for start in range(0, len(mine), 100):
                assert (await w.subscribe(mine[start : start + 100]))["ok"]
        assert quiet.redis_port is not None
        assert metric(url, "pushserver_subscriptions") == len(ids)
        calls_before = redis_calls(quiet.redis_port, "mget")
        keys_before = metric(url, "pushserver_quiet_tasks_checked_total")
        cpu_before, started = cpu_seconds(proc.pid), time.monotonic()
        await asyncio.sleep(seconds)
        elapsed = time.monotonic() - started
        calls = redis_calls(quiet.redis_port, "mget") - calls_before
        keys = metric(url, "pushserver_quiet_tasks_checked_total") - keys_before
        cpu = cpu_seconds(proc.pid) - cpu_before
    finally:
        for w in clients:
            await w.close()
    report(
        f"10d 10 000 quiet watched tasks for {seconds:.0f} s: backend cost",
        0,
        0,
        mget_per_s=round(calls / elapsed, 2),
        keys_read_per_s=round(keys / elapsed),
        server_cpu_pct=round(100 * cpu / elapsed, 1),
    )
    assert calls / elapsed <= 1.0, (calls, elapsed)
    assert keys >= len(ids)  # every task was read at least once in the window
