"""pushserver.worker in a user's own Celery project: a tiny app written here, run as real workers.

No ``-E`` on the command line: ``enable_events(app)`` is what turns events on.
A real pushserver receives them and pushes them to a real Socket.IO client.
This module is also what `make test-celery-versions` runs under the oldest and
newest Celery supported, so it needs nothing but the package and its [dev] extra.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import celery
import pytest
from celery import Celery

from dev.stack import Proc, http_status, start_pushserver, start_redis, wait_until
from pushserver.auth import mint_token
from pushserver.worker import enable_events
from tests.support.celery_client import close_client
from tests.support.clients import Watcher
from tests.support.user_project import SECRET, start_user_worker, write_user_project

pytestmark = pytest.mark.integration


@dataclass
class UserStack:
    broker: str
    backend: str
    url: str
    client: Celery

    def token(self, *task_ids: str) -> str:
        return mint_token(SECRET, task_ids, ttl=300)

    def state(self, task_id: str) -> dict:
        """The server's TaskState, by ``GET /tasks/{id}``."""
        request = urllib.request.Request(
            f"{self.url}/tasks/{task_id}", headers={"Authorization": f"Bearer {self.token(task_id)}"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())


@pytest.fixture(scope="module")
def user_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UserStack]:
    log_dir = tmp_path_factory.mktemp("user-stack")
    project = write_user_project(tmp_path_factory.mktemp("acme") / "acme")
    procs: list[Proc] = []
    # The dispatching side of the user's code: the same enable_events gives SENT.
    client: Celery | None = None
    try:
        redis, port = start_redis(log_dir)
        procs.append(redis)
        broker, backend = f"redis://127.0.0.1:{port}/0", f"redis://127.0.0.1:{port}/1"
        client = enable_events(Celery("acme_client", broker=broker, backend=backend, set_as_current=False))
        client.conf.broker_connection_retry_on_startup = True
        procs.append(
            start_user_worker("acme-threads", project, broker, backend, log_dir, pool="threads", queue="threads")
        )
        procs.append(
            start_user_worker("acme-prefork", project, broker, backend, log_dir, pool="prefork", queue="prefork")
        )
        server, url = start_pushserver("acme-pushserver", broker, backend, log_dir, secret=SECRET)
        procs.append(server)
        wait_until(lambda: len(client.control.ping(timeout=0.5)) >= 2, 60, "both user workers to answer ping")
        # /readyz: the server's receiver is connected, so no event of the tests' tasks is missed.
        wait_until(lambda: http_status(url + "/readyz") == 200, 30, "pushserver /readyz")
        yield UserStack(broker, backend, url, client)
    finally:
        if client is not None:
            close_client(client)
        for proc in reversed(procs):
            proc.stop()


@pytest.mark.parametrize("pool", ["threads", "prefork"])
async def test_progress_from_a_users_worker_reaches_a_socketio_client(user_stack: UserStack, pool: str):
    result = user_stack.client.send_task("acme_jobs.crunch", args=(4, 0.15), queue=pool)
    watcher = await Watcher(user_stack.url).connect()
    try:
        await watcher.subscribe(result.id, token=user_stack.token(result.id))
        final = await watcher.wait_state(result.id, "SUCCESS")
    finally:
        await watcher.close()
    states = [u["state"] for u in watcher.updates[result.id]]
    assert final["name"] == "acme_jobs.crunch" and final["worker"].startswith(f"acme-{pool}@")
    assert final["progress"]["current"] == 4 and final["progress"]["message"] == "chunk 4 of 4"
    steps = [u["progress"]["current"] for u in watcher.updates[result.id] if u["state"] == "PROGRESS"]
    assert steps and steps == sorted(steps), states
    # Each of these comes only from an event that enable_events turned on.
    assert final["sent_at"] is not None  # task_send_sent_event (the dispatching app)
    assert final["received_at"] is not None  # worker_send_task_events, with no -E
    assert final["started_at"] is not None  # task_track_started / task-started


async def test_the_threads_pool_loses_no_task_event(user_stack: UserStack):
    """Quick tasks on 4 threads: the race of celery/celery#10434 drops events unless fixed."""
    results = [user_stack.client.send_task("acme_jobs.quick", args=(i,), queue="threads") for i in range(300)]
    assert await asyncio.to_thread(lambda: [r.get(timeout=60) for r in results]) == list(range(300))

    def all_events_arrived() -> bool:
        states = [user_stack.state(r.id) for r in results]
        return all(
            s["state"] == "SUCCESS" and s["started_at"] is not None and s["received_at"] is not None for s in states
        )

    try:
        await asyncio.to_thread(wait_until, all_events_arrived, 20, "every task's events at the server")
    except AssertionError:
        states = [user_stack.state(r.id) for r in results]
        missing = {
            "task-received": sum(s["received_at"] is None for s in states),
            "task-started": sum(s["started_at"] is None for s in states),
            "task-succeeded": sum(s["state"] != "SUCCESS" for s in states),
        }
        raise AssertionError(f"Celery {celery.__version__}: events lost of 300 tasks: {missing}") from None
