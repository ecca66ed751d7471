"""Session fixtures of the fuzzing suite, its --slow switch, and the case count printed at the end.

The suite attacks real processes (see ``stack.py``). Budgets: each test runs
a fixed number of Hypothesis examples, ten times more in the long run:

    PUSHSERVER_FUZZ_SLOW=1 pytest tests/fuzz      # works from anywhere
    pytest tests/fuzz --slow                       # only when tests/fuzz is on the command line

pytest reads ``pytest_addoption`` only from conftest files it loads before
parsing the command line (the rootdir's, those of the paths given, and
``test*`` directories under them), so ``pytest --slow`` from the project
root needs the option registered in a root ``tests/conftest.py``. This file
registers it only if nobody has, and honours it either way.
"""

from __future__ import annotations

import secrets as _secrets
from typing import Iterator

import pytest
from celery import Celery

from pushserver.devstack import start_pushserver, start_redis, start_worker, wait_until
from tests.support.celery_client import close_client

from . import support
from .oracle import Expectations
from .stack import (
    ALLOWED_ORIGIN,
    AUDIENCE,
    ISSUER,
    LIMITS_PER_IP,
    LIMITS_RATE,
    MARKER,
    EventPublisher,
    FuzzStack,
    Server,
    new_id,
)
from .support import CASES, SLOW_ENV, SLOW_FACTOR, LoopThread, SocketClient, rss_mib


def pytest_addoption(parser: pytest.Parser) -> None:
    try:
        parser.addoption("--slow", action="store_true", default=False,
                         help=f"run the fuzzing suite with {SLOW_FACTOR}x the examples "
                              f"(same as {SLOW_ENV}=1)")
    except ValueError:  # already registered by a root conftest
        pass


def pytest_configure(config: pytest.Config) -> None:
    support.set_slow(bool(config.getoption("--slow", default=False)))


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """Print how many cases each fuzz test generated; pytest's own summary line still comes last."""
    if not CASES:
        return
    terminalreporter.section("fuzz cases", sep="-")
    width = max(len(label) for label in CASES)
    for label, count in sorted(CASES.items()):
        terminalreporter.write_line(f"  {label:<{width}}  {count:>7}")
    mode = f"slow run, x{SLOW_FACTOR}" if support.is_slow() else f"CI budget; {SLOW_ENV}=1 for x{SLOW_FACTOR}"
    terminalreporter.write_line(f"  {'total':<{width}}  {sum(CASES.values()):>7}  ({mode})")


@pytest.fixture(scope="session")
def fuzz_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzStack]:
    log_dir = tmp_path_factory.mktemp("fuzz")
    redis, port = start_redis(log_dir)
    procs = [redis]
    broker, backend = f"redis://127.0.0.1:{port}/0", f"redis://127.0.0.1:{port}/1"
    secrets = [_secrets.token_hex(32), _secrets.token_hex(32)]  # the first signs; the second is being retired
    expect = Expectations(secrets=tuple(secrets), audience=AUDIENCE, issuer=ISSUER)
    celery = Celery("fuzz", broker=broker, backend=backend, set_as_current=False)
    celery.conf.update(task_send_sent_event=True, broker_connection_retry_on_startup=True)
    try:
        worker = start_worker("fuzz-worker", broker, backend, log_dir, pool="threads", concurrency=2)
        procs.append(worker)
        common = ["--token-audience", AUDIENCE, "--token-issuer", ISSUER, "--cors", ALLOWED_ORIGIN]
        main_proc, main_url = start_pushserver(
            "pushserver-main", broker, backend, log_dir, secret=",".join(secrets), log_level="INFO",
            extra=common + ["--subscribe-rate", "1000000", "--message-rate", "1000000"])
        procs.append(main_proc)
        limits_proc, limits_url = start_pushserver(
            "pushserver-limits", broker, backend, log_dir, secret=",".join(secrets), log_level="INFO",
            extra=common + ["--subscribe-rate", f"{LIMITS_RATE:g}",
                            "--max-connections-per-ip", str(LIMITS_PER_IP), "--trust-proxy"])
        procs.append(limits_proc)
        main = Server("main", main_url, main_proc, expect)
        limits = Server("limits", limits_url, limits_proc, expect)
        for server in (main, limits):
            wait_until(lambda: server.readyz()["_status"] == 200, 20, f"{server.name} /readyz")
        wait_until(lambda: len(celery.control.ping(timeout=0.5)) >= 1, 60, "the Celery worker to answer ping")

        # A finished task with a recognisable result: it must never show
        # anywhere without a token that names it.
        secret_task = new_id("secret-")
        publisher = EventPublisher(broker)
        publisher.publish([publisher.task_event("task-received", secret_task, name="workers.tasks.secret"),
                           publisher.task_event("task-started", secret_task),
                           publisher.task_event("task-succeeded", secret_task, result=repr(MARKER),
                                                runtime=0.1)])
        publisher.close()
        for server in (main, limits):
            auth = {"Authorization": "Bearer " + server.token([secret_task])}
            wait_until(lambda: MARKER.encode() in server.get(f"/tasks/{secret_task}", auth)[1], 10,
                       f"{server.name} to know the secret task")

        stack = FuzzStack(log_dir, port, broker, backend, main, limits, worker, celery, secret_task, procs)
        stack.baseline = {
            "main_rss_mib": rss_mib(main_proc.pid),
            "limits_rss_mib": rss_mib(limits_proc.pid),
            "main_process": main.readyz().get("process", {}),
        }
        yield stack
    finally:
        close_client(celery)
        for proc in reversed(procs):
            proc.stop()


@pytest.fixture(scope="session")
def client_loop() -> Iterator[LoopThread]:
    runner = LoopThread()
    yield runner
    runner.close()


@pytest.fixture(scope="module")
def main(fuzz_stack: FuzzStack) -> Server:
    """The fuzz stack's main server."""
    return fuzz_stack.main


@pytest.fixture(scope="module")
def client(fuzz_stack: FuzzStack, client_loop: LoopThread) -> Iterator[SocketClient]:
    """One connection, without a connect token: every subscribe must bring its own."""
    c = SocketClient(client_loop, fuzz_stack.main.url)
    assert c.connect(), c.connect_error
    yield c
    c.close()
