"""Task results reach clients as the JSON values the tasks returned: updates, acks, GET /tasks/{id}, history, replay.

Real Celery workers, a real pushserver (with the event log on nx-27017 where history is checked), real
Socket.IO clients, and ``pushserver replay`` as a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest

from dev.stack import BIN, Proc, free_port, http_get, http_status, start_pushserver, wait_until
from tests.support.clients import Watcher
from tests.support.stack import PREFORK_QUEUE, Server, Stack

pytestmark = pytest.mark.integration

IRIS_SETOSA = [5.1, 3.5, 1.4, 0.2]


def serve(stack: Stack, server: Server, name: str, *extra: str, backend: str | None = None) -> tuple[Proc, str]:
    proc, url = start_pushserver(
        name, stack.broker, backend or stack.backend, stack.log_dir, secret=server.secret, extra=list(extra)
    )
    wait_until(lambda: http_status(url + "/readyz") == 200, 20, f"{name} ready")
    return proc, url


def get_task(url: str, server: Server, task_id: str) -> dict[str, Any]:
    status, body = http_get(f"{url}/tasks/{task_id}", {"Authorization": f"Bearer {server.token(task_id)}"})
    assert status == 200, body
    return json.loads(body)


def history(url: str, server: Server, task_id: str) -> list[dict[str, Any]]:
    status, body = http_get(
        f"{url}/tasks/{task_id}/events?limit=1000", {"Authorization": f"Bearer {server.token(task_id)}"}
    )
    assert status == 200, body
    return json.loads(body)["events"]


async def late_ack(url: str, server: Server, task_id: str) -> dict[str, Any]:
    """The snapshot a client gets that subscribes after the task finished."""
    w = await Watcher(url).connect()
    try:
        ack = await w.subscribe(task_id, token=server.token(task_id))
    finally:
        await w.close()
    assert ack["ok"] is True, ack
    return ack["tasks"][0]


def succeeded(events: list[dict[str, Any]]) -> dict[str, Any]:
    found = [e for e in events if e["type"] == "task-succeeded"]
    assert len(found) == 1, [e["type"] for e in events]
    return found[0]


def is_setosa(result: Any) -> bool:
    return (
        isinstance(result, dict)
        and result["label"] == "setosa"
        and set(result["probabilities"]) == {"setosa", "versicolor", "virginica"}
        and all(isinstance(p, float) for p in result["probabilities"].values())
    )


@pytest.mark.parametrize("queue", ["celery", PREFORK_QUEUE])
async def test_results_are_json_in_updates_acks_get_and_history(
    stack: Stack, server: Server, mongo: str, mongo_db: str, queue: str
):
    proc, url = serve(stack, server, f"results-json-{queue}", "--mongo", mongo, "--mongo-db", mongo_db)
    try:
        w = await Watcher(url).connect()
        try:
            predicted = stack.send("predict", IRIS_SETOSA, queue=queue)
            counted = stack.send("demo_progress", 3, 0.05, queue=queue)
            await w.subscribe([predicted.id, counted.id], token=server.token(predicted.id, counted.id))
            final = await w.wait_state(predicted.id, "SUCCESS")
            assert is_setosa(final["result"]) and final["result_format"] == "json", final
            final = await w.wait_state(counted.id, "SUCCESS")
            assert final["result"] == 3 and final["result_format"] == "json", final
            assert final["progress"]["current"] == 3
            # The one SUCCESS update already had the value: no repr was sent first.
            assert [u["result_format"] for u in w.updates[counted.id] if u["state"] == "SUCCESS"] == ["json"]
        finally:
            await w.close()
        assert predicted.get(timeout=30)["label"] == "setosa"

        for task_id, expect in ((predicted.id, is_setosa), (counted.id, lambda r: r == 3 and type(r) is int)):
            ack = await late_ack(url, server, task_id)
            assert expect(ack["result"]) and ack["result_format"] == "json", ack
            got = get_task(url, server, task_id)
            assert expect(got["result"]) and got["result_format"] == "json", got
            wait_until(
                lambda: any(e["type"] == "task-succeeded" for e in history(url, server, task_id)),
                20,
                "the SUCCESS event in the event log",
            )
            event = succeeded(history(url, server, task_id))
            assert expect(event["result"]) and event["result_format"] == "json", event
    finally:
        proc.stop()


async def test_a_server_that_never_saw_the_task_reads_the_json_from_the_backend(stack: Stack, server: Server):
    result = stack.send("predict", IRIS_SETOSA)
    assert result.get(timeout=30)["label"] == "setosa"
    proc, url = serve(stack, server, "results-cold")  # started after the task finished
    try:
        ack = await late_ack(url, server, result.id)
        assert is_setosa(ack["result"]) and ack["result_format"] == "json", ack
        got = get_task(url, server, result.id)
        assert got == ack | {"updated_at": got["updated_at"]}
    finally:
        proc.stop()


async def test_repr_mode_keeps_celerys_repr(stack: Stack, server: Server):
    proc, url = serve(stack, server, "results-repr", "--forward-results", "repr")
    try:
        w = await Watcher(url).connect()
        try:
            result = stack.send("demo_progress", 2, 0.0)
            await w.subscribe(result.id, token=server.token(result.id))
            final = await w.wait_state(result.id, "SUCCESS")
        finally:
            await w.close()
        assert final["result"] == "2" and final["result_format"] == "repr", final
        ack = await late_ack(url, server, result.id)
        assert ack["result"] == "2" and ack["result_format"] == "repr", ack
    finally:
        proc.stop()


async def test_none_mode_forwards_no_result(stack: Stack, server: Server):
    proc, url = serve(stack, server, "results-none", "--forward-results", "none")
    try:
        result = stack.send("predict", IRIS_SETOSA)
        assert result.get(timeout=30)["label"] == "setosa"
        wait_until(lambda: get_task(url, server, result.id)["state"] == "SUCCESS", 20, "SUCCESS")
        got = get_task(url, server, result.id)
        assert got["result"] is None and got["result_format"] is None, got
    finally:
        proc.stop()


async def test_a_result_over_max_result_bytes_is_not_sent(stack: Stack, server: Server):
    proc, url = serve(stack, server, "results-small", "--max-result-bytes", "32")
    try:
        w = await Watcher(url).connect()
        try:
            big = stack.send("predict", IRIS_SETOSA)  # about 100 bytes of JSON
            small = stack.send("demo_progress", 1, 0.0)
            await w.subscribe([big.id, small.id], token=server.token(big.id, small.id))
            final = await w.wait_state(big.id, "SUCCESS")
            assert final["result"] is None and final["result_format"] == "too_large", final
            final = await w.wait_state(small.id, "SUCCESS")
            assert final["result"] == 1 and final["result_format"] == "json", final
        finally:
            await w.close()
        ack = await late_ack(url, server, big.id)
        assert ack["result"] is None and ack["result_format"] == "too_large", ack
    finally:
        proc.stop()


async def test_ignore_result_falls_back_to_the_repr(stack: Stack, server: Server):
    proc, url = serve(stack, server, "results-ignored")
    try:
        w = await Watcher(url).connect()
        try:
            result = stack.celery.send_task("workers.tasks.demo_progress", args=(2, 0.0), ignore_result=True)
            await w.subscribe(result.id, token=server.token(result.id))
            final = await w.wait_state(result.id, "SUCCESS")
        finally:
            await w.close()
        assert final["result"] == "2" and final["result_format"] == "repr", final
        assert b'pushserver_results_total{outcome="no_value"}' in http_get(url + "/metrics")[1]
    finally:
        proc.stop()


async def test_an_unreachable_backend_costs_the_value_not_the_notice(stack: Stack, server: Server):
    # Nothing listens on this port: every read fails, and the SUCCESS notice goes out with the repr.
    dead = f"redis://127.0.0.1:{free_port()}/1"
    proc, url = serve(stack, server, "results-dead-backend", backend=dead)
    try:
        w = await Watcher(url).connect()
        try:
            results = [stack.send("demo_progress", 1, 0.0) for _ in range(3)]
            ids = [r.id for r in results]
            await w.subscribe(ids, token=server.token(*ids))
            for task_id in ids:
                final = await w.wait_state(task_id, "SUCCESS", timeout=20)
                assert final["result"] == "1" and final["result_format"] == "repr", final
        finally:
            await w.close()
        assert http_status(url + "/healthz") == 200
    finally:
        proc.stop()
    log = proc.log()
    assert "result backend read failed" in log and "Traceback" not in log, log[-3000:]


async def test_exception_type_names_the_class(stack: Stack, server: Server, watcher: Watcher):
    result = stack.send("fail", "the disk is on fire")
    await watcher.subscribe(result.id, token=server.token(result.id))
    final = await watcher.wait_state(result.id, "FAILURE")
    assert final["exception_type"] == "RuntimeError"
    assert "the disk is on fire" in final["exception"] and final["result_format"] is None
    assert (await late_ack(server.url, server, result.id))["exception_type"] == "RuntimeError"


async def test_replay_carries_the_recorded_json_value(stack: Stack, server: Server, mongo: str, mongo_db: str):
    recorder, url = serve(stack, server, "results-recorder", "--mongo", mongo, "--mongo-db", mongo_db)
    try:
        result = stack.send("predict", IRIS_SETOSA)
        assert result.get(timeout=30)["label"] == "setosa"
        wait_until(
            lambda: any(e["type"] == "task-succeeded" for e in history(url, server, result.id)),
            20,
            "the SUCCESS event in the event log",
        )
    finally:
        recorder.stop()
    # A server whose result backend is empty can only learn the value from the replayed event itself.
    empty_backend = f"redis://127.0.0.1:{stack.redis_port}/7"
    fresh, fresh_url = serve(stack, server, "results-replayed", backend=empty_backend)
    try:
        w = await Watcher(fresh_url).connect()
        try:
            await w.subscribe(result.id, token=server.token(result.id))
            env = {k: v for k, v in os.environ.items() if not k.startswith(("PUSHSERVER_", "CELERY_"))}
            done = subprocess.run(
                [
                    str(BIN / "pushserver"),
                    "replay",
                    "--mongo",
                    mongo,
                    "--mongo-db",
                    mongo_db,
                    "--task",
                    result.id,
                    "--to",
                    "broker",
                    "--broker",
                    stack.broker,
                    "--speed",
                    "max",
                ],
                capture_output=True,
                text=True,
                timeout=120,
                env=env,
            )
            assert done.returncode == 0, done.stderr
            final = await w.wait_state(result.id, "SUCCESS")
            assert is_setosa(final["result"]) and final["result_format"] == "json", final
        finally:
            await w.close()
    finally:
        fresh.stop()
