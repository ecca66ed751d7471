"""Session fixtures: a private Redis, two real Celery workers (threads and prefork pools) and a pushserver."""

from __future__ import annotations

import os
import secrets as _secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Iterator

import pytest
from celery import Celery

from pushserver.auth import mint_token
from dev.stack import (
    Proc,
    start_mongo,
    start_pushserver,
    start_redis,
    start_worker,
    wait_until,
)
from tests.support.celery_client import close_client
from tests.support.clients import Watcher

pytestmark = pytest.mark.integration

SECRET = _secrets.token_hex(32)
PREFORK_QUEUE = "prefork"


@dataclass
class Stack:
    """The running processes and how to reach them."""

    redis_port: int
    broker: str
    backend: str
    log_dir: Path
    celery: Celery
    procs: list[Proc] = field(default_factory=list)

    def send(self, name: str, *args: object, queue: str = "celery", **kwargs: object):
        """Dispatch ``workers.tasks.<name>`` the way any Celery client does."""
        return self.celery.send_task(f"workers.tasks.{name}", args=args, kwargs=kwargs, queue=queue)


@dataclass
class Server:
    """A running pushserver."""

    url: str
    proc: Proc
    secret: str | None

    def token(self, *task_ids: str, ttl: int = 300, secret: str | None = None) -> str:
        return mint_token(secret or self.secret or "unused", task_ids, ttl=ttl)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    log_dir = tmp_path_factory.mktemp("stack")
    redis, port = start_redis(log_dir)
    broker, backend = f"redis://127.0.0.1:{port}/0", f"redis://127.0.0.1:{port}/1"
    app = Celery("tests", broker=broker, backend=backend, set_as_current=False)
    app.conf.update(task_send_sent_event=True, broker_connection_retry_on_startup=True)
    stack = Stack(port, broker, backend, log_dir, app, [redis])
    try:
        threads = start_worker("threads", broker, backend, log_dir, pool="threads", concurrency=8)
        prefork = start_worker("prefork", broker, backend, log_dir, pool="prefork", concurrency=2,
                               queues=PREFORK_QUEUE)
        stack.procs += [threads, prefork]
        wait_until(lambda: len(app.control.ping(timeout=0.5)) >= 2, 60,
                   "both Celery workers to answer ping")
        yield stack
    finally:
        close_client(app)
        for proc in reversed(stack.procs):
            proc.stop()


@pytest.fixture(scope="session")
def server(stack: Stack) -> Iterator[Server]:
    proc, url = start_pushserver("pushserver", stack.broker, stack.backend, stack.log_dir, secret=SECRET)
    wait_until(lambda: _ready(url), 20, "pushserver /readyz")
    yield Server(url, proc, SECRET)
    proc.stop()


def _ready(url: str) -> bool:
    from dev.stack import http_status

    return http_status(url + "/readyz") == 200


@pytest.fixture
async def watcher(server: Server) -> AsyncIterator[Watcher]:
    """A connected client without a connect token (tokens go with each subscribe)."""
    w = await Watcher(server.url).connect()
    yield w
    await w.close()


@pytest.fixture(scope="session")
def mongo(stack: Stack) -> Iterator[str]:
    """A MongoDB URL: nx-27017 on a free port, or a real server from PUSHSERVER_TEST_MONGO_URL."""
    real = os.environ.get("PUSHSERVER_TEST_MONGO_URL")
    if real:
        yield real
        return
    proc, url = start_mongo(stack.log_dir)
    yield url
    proc.stop()


@pytest.fixture
def mongo_db() -> str:
    """A database name of its own for each test, so tests never see each other's events."""
    return f"pushserver_test_{_secrets.token_hex(4)}"
