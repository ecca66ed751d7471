"""The fault suite: real processes (Redis, RabbitMQ, Celery workers, pushserver replicas) broken on purpose.

Every scenario records how many completions its clients should have seen
and how many they did (``report``); the session ends with that table, and
writes it as JSON next to the logs (or to ``$PUSHSERVER_FAULTS_REPORT``)
for docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import re
import secrets as _secrets
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from celery import Celery

from pushserver.auth import mint_token
from dev.stack import (
    Proc,
    http_get,
    http_status,
    start_pushserver,
    start_redis,
    start_worker,
    wait_until,
)
from tests.support.celery_client import close_client
from tests.support.clients import Watcher

SECRET = _secrets.token_hex(32)
RUN_ID = _secrets.token_hex(3)  # keeps names unique on a shared broker (RabbitMQ's default vhost)
HOSTNAME = socket.gethostname()

_REPORT: list[dict[str, Any]] = []
_REPORT_PATH: list[Path] = []


# -- the report ---------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults: breaks real processes on purpose (tests/faults)")
    config.addinivalue_line("markers", "soak: long load runs; PUSHSERVER_SOAK_EVENTS sets the size")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _REPORT:
        return
    tr = terminalreporter
    tr.section("fault scenarios: completions expected vs delivered")
    for row in _REPORT:
        verdict = "ok" if row["expected"] == row["delivered"] else "LOST"
        details = ", ".join(f"{k}={v}" for k, v in row["details"].items())
        tr.write_line(f"{row['scenario']:<52} expected {row['expected']:>6}  delivered "
                      f"{row['delivered']:>6}  {verdict:<4}  {details}")
    if _REPORT_PATH:
        tr.write_line(f"(figures as JSON: {_REPORT_PATH[0]})")


@pytest.fixture(scope="session")
def fault_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="session")
def report(fault_dir: Path) -> Callable[..., None]:
    """``report(scenario, expected, delivered, **details)``: one line of the session's table."""
    path = Path(os.environ.get("PUSHSERVER_FAULTS_REPORT") or fault_dir / "faults-report.json")
    _REPORT_PATH[:] = [path]

    def record(scenario: str, expected: int, delivered: int, **details: Any) -> None:
        _REPORT.append({"scenario": scenario, "expected": expected, "delivered": delivered,
                        "details": details, "at": time.strftime("%Y-%m-%dT%H:%M:%S")})
        path.write_text(json.dumps(_REPORT, indent=2) + "\n")

    return record


# -- helpers ------------------------------------------------------------------


def env_number(name: str, default: float) -> float:
    """A positive number from the environment (a scenario's size or duration)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    value = float(raw)
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {raw!r}")
    return value


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


def token(*task_ids: str) -> str:
    return mint_token(SECRET, task_ids or ("*",), ttl=3600)


def readyz(url: str) -> dict[str, Any]:
    status, body = http_get(url + "/readyz")
    return json.loads(body)


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? ([-+0-9.eEinfNa]+)$")


def metric(url: str, name: str, **labels: str) -> float:
    """The sum of a Prometheus metric's samples whose labels include ``labels``."""
    body = http_get(url + "/metrics")[1].decode()
    total = 0.0
    for line in body.splitlines():
        match = _SAMPLE.match(line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(3))
    return total


def delivered(watchers: list[Watcher], task_ids: list[str], state: str = "SUCCESS") -> int:
    """How many (client, task) pairs have seen ``state``."""
    return sum(1 for w in watchers for t in task_ids
               if any(u["state"] == state for u in w.updates.get(t, [])))




# -- stacks of real processes ----------------------------------------------------


@dataclass
class FaultStack:
    """A broker, a result backend, the processes started on them, and ways to add more."""

    broker: str
    backend: str
    log_dir: Path
    procs: list[Proc] = field(default_factory=list)
    redis: Proc | None = None
    redis_port: int | None = None

    def __post_init__(self) -> None:
        self.celery = Celery(f"faults-{RUN_ID}", broker=self.broker, backend=self.backend,
                             set_as_current=False)
        self.celery.conf.update(task_send_sent_event=True, broker_connection_retry_on_startup=True,
                                broker_connection_timeout=4)

    def send(self, name: str, *args: object, queue: str = "celery", task_id: str | None = None):
        """Dispatch ``workers.tasks.<name>`` like any Celery client (``task_id`` chosen ahead if given)."""
        return self.celery.send_task(f"workers.tasks.{name}", args=args, queue=queue, task_id=task_id)

    def worker(self, name: str, *, pool: str = "threads", concurrency: int = 4, queues: str = "celery",
               visibility_timeout: float | None = None, wait: bool = True) -> Proc:
        """Start ``celery -A workers worker -E`` and wait until it answers ping."""
        extra = {"CELERY_VISIBILITY_TIMEOUT": str(int(visibility_timeout))} if visibility_timeout else {}
        with environ(**extra):
            proc = start_worker(name, self.broker, self.backend, self.log_dir, pool=pool,
                                concurrency=concurrency, queues=queues)
        self.procs.append(proc)
        if wait:
            self.wait_workers(name)
        return proc

    def wait_workers(self, *names: str, timeout: float = 90) -> None:
        nodes = [f"{n}@{HOSTNAME}" for n in names]

        def answered() -> bool:
            replies = self.celery.control.ping(destination=nodes, timeout=1.0)
            return {k for r in replies for k in r} >= set(nodes)

        wait_until(answered, timeout, f"workers {names} to answer ping", interval=0.2)

    def server(self, name: str, *, extra: list[str] | None = None, port: int | None = None,
               broker: str | None = None, ready: bool = True) -> tuple[Proc, str]:
        """Start ``pushserver serve`` (tokens required) and wait until /readyz says ready."""
        proc, url = start_pushserver(name, broker or self.broker, self.backend, self.log_dir,
                                     secret=SECRET, extra=extra, port=port, log_level="INFO")
        self.procs.append(proc)
        if ready:
            wait_until(lambda: http_status(url + "/readyz") == 200 or not proc.alive(), 45,
                       f"{name} /readyz")
            assert proc.alive(), proc.log()
        return proc, url

    def close(self) -> None:
        close_client(self.celery)
        for proc in reversed(self.procs):
            proc.stop()
        if self.redis is not None:
            self.redis.stop()


def redis_stack(log_dir: Path) -> FaultStack:
    redis, port = start_redis(log_dir)
    return FaultStack(f"redis://127.0.0.1:{port}/0", f"redis://127.0.0.1:{port}/1", log_dir,
                      redis=redis, redis_port=port)


@pytest.fixture(scope="session")
def stack(fault_dir: Path) -> Iterator[FaultStack]:
    """A private Redis with a threads worker (queue ``celery``) for the scenarios that break other things."""
    s = redis_stack(fault_dir)
    try:
        s.worker("faults-threads", pool="threads", concurrency=8)
        yield s
    finally:
        s.close()


@pytest.fixture
async def watchers() -> Any:
    """Make resubscribing clients (``await make(url, n)``); all are closed after the test."""
    made: list[Watcher] = []

    async def make(url: str, n: int = 1) -> list[Watcher]:
        new = [Watcher(url, resubscribe=True) for _ in range(n)]
        for w in new:
            await w.connect(token())
        made.extend(new)
        return new

    yield make
    for w in made:
        try:
            await w.close()
        except Exception:  # noqa: BLE001 - a client of a dead server
            pass


async def until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05) -> object:
    """``wait_until`` for async tests: polls without blocking the clients on the event loop."""
    import asyncio

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)
