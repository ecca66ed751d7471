"""Session fixtures: a private Redis, two real Celery workers (threads and prefork pools) and a pushserver."""

from __future__ import annotations

import os
import secrets as _secrets
from collections.abc import AsyncIterator, Iterator

import pytest

from dev.stack import start_mongo
from tests.support.clients import Watcher
from tests.support.stack import PREFORK_QUEUE, Server, Stack, redis_stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = redis_stack(tmp_path_factory.mktemp("stack"))
    try:
        s.worker("threads", pool="threads", concurrency=8, wait=False)
        s.worker("prefork", pool="prefork", concurrency=2, queues=PREFORK_QUEUE, wait=False)
        s.wait_workers("threads", "prefork", timeout=60)
        yield s
    finally:
        s.close()


@pytest.fixture(scope="session")
def server(stack: Stack) -> Iterator[Server]:
    server = stack.server("pushserver", log_level="DEBUG", ready=20)
    yield server
    server.proc.stop()


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
