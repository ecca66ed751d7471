"""The stack every suite runs on: a private Redis, Celery workers and pushservers, each started and stopped by PID.

The processes come from dev/stack.py (the harness ``make demo`` uses too);
this module ties them together the way the tests use them: a Celery client
that dispatches ``workers.tasks``, workers that answer ping before a test
starts, and servers that are ready (receiver connected) before a test talks
to them.
"""

from __future__ import annotations

import os
import secrets as _secrets
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery import Celery
from celery.result import AsyncResult

from dev.metrics import metric
from dev.stack import Proc, http_get, readyz, start_pushserver, start_redis, start_worker, wait_until
from pushserver.auth import mint_token
from tests.support.celery_client import close_client

#: The secret the suites' servers verify tokens with (a fresh one per test session).
SECRET = _secrets.token_hex(32)
#: Keeps names unique on a shared broker (RabbitMQ's default vhost).
RUN_ID = _secrets.token_hex(3)
HOSTNAME = socket.gethostname()
#: The queue the prefork worker of the integration suite consumes.
PREFORK_QUEUE = "prefork"


@dataclass
class Server:
    """A running ``pushserver serve``, and the secret(s) its tokens are signed with (a comma list, as --secret)."""

    url: str
    proc: Proc
    secret: str | None

    def token(self, *task_ids: str, ttl: int = 300, secret: str | None = None) -> str:
        """A token for ``task_ids`` signed with ``secret`` or the server's (first) secret."""
        signer = secret or (self.secret or "unused").split(",")[0]
        return mint_token(signer, task_ids, ttl=ttl)

    def readyz(self) -> dict[str, Any]:
        """What /readyz answers now."""
        return readyz(self.url)

    def metric(self, name: str, **labels: str) -> float:
        """A sample of /metrics (summed over the label sets that include ``labels``)."""
        return metric(self.url, name, **labels)


@dataclass
class Stack:
    """A broker, a result backend, the processes started on them, and ways to add more."""

    broker: str
    backend: str
    log_dir: Path
    procs: list[Proc] = field(default_factory=list)
    redis: Proc | None = None
    redis_port: int | None = None
    name: str = "tests"

    def __post_init__(self) -> None:
        self.celery = Celery(f"{self.name}-{RUN_ID}", broker=self.broker, backend=self.backend, set_as_current=False)
        self.celery.conf.update(
            task_send_sent_event=True, broker_connection_retry_on_startup=True, broker_connection_timeout=4
        )

    def send(
        self, name: str, *args: object, queue: str = "celery", task_id: str | None = None, **kwargs: object
    ) -> AsyncResult:
        """Dispatch ``workers.tasks.<name>`` like any Celery client (``task_id`` chosen ahead if given)."""
        return self.celery.send_task(f"workers.tasks.{name}", args=args, kwargs=kwargs, queue=queue, task_id=task_id)

    def worker(
        self,
        name: str,
        *,
        pool: str = "threads",
        concurrency: int = 4,
        queues: str = "celery",
        visibility_timeout: float | None = None,
        wait: bool = True,
    ) -> Proc:
        """Start ``celery -A workers worker -E`` and wait until it answers ping."""
        extra = {"CELERY_VISIBILITY_TIMEOUT": str(int(visibility_timeout))} if visibility_timeout else {}
        with environ(**extra):
            proc = start_worker(
                name, self.broker, self.backend, self.log_dir, pool=pool, concurrency=concurrency, queues=queues
            )
        self.procs.append(proc)
        if wait:
            self.wait_workers(name)
        return proc

    def wait_workers(self, *names: str, timeout: float = 90) -> None:
        """Wait until every named worker answers ping."""
        nodes = [f"{n}@{HOSTNAME}" for n in names]

        def answered() -> bool:
            replies = self.celery.control.ping(destination=nodes, timeout=1.0)
            return {k for r in replies for k in r} >= set(nodes)

        wait_until(answered, timeout, f"workers {names} to answer ping", interval=0.2)

    def server(
        self,
        name: str,
        *,
        secret: str | None = SECRET,
        extra: list[str] | None = None,
        port: int | None = None,
        broker: str | None = None,
        ready: float = 45.0,
        log_level: str = "INFO",
    ) -> Server:
        """Start ``pushserver serve`` (tokens required unless ``secret`` is None) and wait ``ready`` s for /readyz."""
        proc, url = start_pushserver(
            name,
            broker or self.broker,
            self.backend,
            self.log_dir,
            secret=secret,
            extra=extra,
            port=port,
            log_level=log_level,
            ready=ready,
        )
        self.procs.append(proc)
        return Server(url, proc, secret)

    def close(self) -> None:
        """Stop everything started here, newest first, the Redis last."""
        close_client(self.celery)
        for proc in reversed(self.procs):
            proc.stop()
        if self.redis is not None:
            self.redis.stop()


def redis_stack(log_dir: Path, name: str = "tests") -> Stack:
    """A Stack on a private redis-server (broker on DB 0, result backend on DB 1)."""
    redis, port = start_redis(log_dir)
    return Stack(
        f"redis://127.0.0.1:{port}/0", f"redis://127.0.0.1:{port}/1", log_dir, redis=redis, redis_port=port, name=name
    )


@contextmanager
def threads_worker_stack(log_dir: Path, worker: str, concurrency: int, name: str = "tests") -> Iterator[Stack]:
    """A ``redis_stack`` with one threads worker named ``worker`` on queue ``celery``, closed on exit."""
    s = redis_stack(log_dir, name=name)
    try:
        s.worker(worker, pool="threads", concurrency=concurrency)
        yield s
    finally:
        s.close()


@contextmanager
def environ(**values: str) -> Iterator[None]:
    """Set environment variables for the processes started inside the block."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


async def assert_live_events_flow(stack: Stack, server: Server, watcher: Any) -> None:
    """After a reconnect: a new task's events reach a client (a ``tests.support.clients.Watcher``) live, to SUCCESS."""
    after = stack.send("demo_progress", 2, 0.05)
    assert (await watcher.subscribe(after.id, token=server.token(after.id)))["ok"]
    await watcher.wait_state(after.id, "SUCCESS", timeout=30)


@contextmanager
def serving(stack: Stack, secret: str, *flags: str) -> Iterator[str]:
    """A `pushserver serve` of its own on ``stack``, with ``flags``; yields its URL once ready."""
    proc, url = start_pushserver(
        f"security-{time.time_ns()}", stack.broker, stack.backend, stack.log_dir, secret=secret, extra=list(flags)
    )
    try:
        wait_until(lambda: http_get(url + "/readyz")[0] == 200, 20, "server ready")
        yield url
    finally:
        proc.stop()
    assert "Traceback" not in proc.log()
