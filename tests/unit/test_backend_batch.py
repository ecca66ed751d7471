"""Batched result-backend reads: one round trip for many tasks on key-value backends, task by task elsewhere."""

from __future__ import annotations

import pytest
from celery import Celery

from pushserver.backend import ResultBackend


def backend_with_reads(url: str) -> tuple[ResultBackend, list[tuple[str, int]]]:
    reads: list[tuple[str, int]] = []
    app = Celery("t", backend=url, set_as_current=False)
    return ResultBackend(app, on_read=lambda kind, keys: reads.append((kind, keys))), reads


async def test_a_key_value_backend_reads_many_tasks_in_one_mget() -> None:
    backend, reads = backend_with_reads("cache+memory://")
    assert backend.batched
    celery_backend = backend.app.backend
    celery_backend.store_result("a", 42, "SUCCESS")
    celery_backend.store_result("b", RuntimeError("boom"), "FAILURE")
    celery_backend.store_result("c", {"current": 1, "total": 4}, "PROGRESS")
    found = await backend.lookup_many(["a", "b", "c", "never-sent", "a"])
    assert reads == [("batch", 4)]  # one round trip, duplicates read once
    assert found["a"]["type"] == "task-succeeded" and found["a"]["result"] == "42"
    assert found["b"]["type"] == "task-failed" and "boom" in found["b"]["exception"]
    assert found["c"]["type"] == "task-progress"
    assert "never-sent" not in found
    backend.close()


async def test_no_tasks_no_read() -> None:
    backend, reads = backend_with_reads("cache+memory://")
    assert await backend.lookup_many([]) == {}
    assert reads == []
    backend.close()


async def test_a_backend_without_mget_is_read_task_by_task(monkeypatch: pytest.MonkeyPatch) -> None:
    backend, reads = backend_with_reads("rpc://")
    assert not backend.batched
    asked: list[str] = []

    def get_task_meta(self: object, task_id: str, cache: bool = True) -> dict[str, object]:
        asked.append(task_id)
        return {"status": "SUCCESS", "result": 7} if task_id == "x" else {"status": "PENDING"}

    # On the class: Celery gives each thread (the pool's too) a backend instance of its own.
    monkeypatch.setattr(type(backend.app.backend), "get_task_meta", get_task_meta)
    found = await backend.lookup_many(["x", "y"])
    assert asked == ["x", "y"] and reads == [("single", 1), ("single", 1)]
    assert list(found) == ["x"] and found["x"]["result"] == "7"
    backend.close()


async def test_a_backend_outage_gives_an_empty_answer_and_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    backend, _ = backend_with_reads("redis://127.0.0.1:1/0")  # nothing listens on port 1
    assert await backend.lookup_many(["x"]) == {}
    assert await backend.lookup_many(["y"]) == {}
    assert await backend.lookup("z") is None
    warnings = [r for r in caplog.records if r.name == "pushserver.backend"]
    assert len(warnings) == 1 and "result backend unreachable" in warnings[0].getMessage()
    assert backend.failing
    backend.close()
