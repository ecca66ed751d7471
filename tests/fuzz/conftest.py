"""Session fixtures of the fuzzing suite, its --slow switch, and the case count printed at the end.

The suite attacks real processes (see ``stack.py``); when the session is done
with them, the fuzz stack's finalizer checks the aftermath (``aftermath.py``). Budgets: each test runs
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
from collections.abc import Iterator

import pytest

from dev.stack import wait_until
from tests.support.stack import redis_stack

from . import aftermath, support
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
        parser.addoption(
            "--slow",
            action="store_true",
            default=False,
            help=f"run the fuzzing suite with {SLOW_FACTOR}x the examples (same as {SLOW_ENV}=1)",
        )
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
    base = redis_stack(log_dir, name="fuzz")
    secrets = [_secrets.token_hex(32), _secrets.token_hex(32)]  # the first signs; the second is being retired
    expect = Expectations(secrets=tuple(secrets), audience=AUDIENCE, issuer=ISSUER)
    try:
        worker = base.worker("fuzz-worker", pool="threads", concurrency=2, wait=False)
        common = ["--token-audience", AUDIENCE, "--token-issuer", ISSUER, "--cors", ALLOWED_ORIGIN]
        main_server = base.server(
            "pushserver-main",
            secret=",".join(secrets),
            ready=20,
            extra=common + ["--subscribe-rate", "1000000", "--message-rate", "1000000"],
        )
        limits_server = base.server(
            "pushserver-limits",
            secret=",".join(secrets),
            ready=20,
            extra=common
            + ["--subscribe-rate", f"{LIMITS_RATE:g}", "--max-connections-per-ip", str(LIMITS_PER_IP), "--trust-proxy"],
        )
        main = Server("main", main_server.url, main_server.proc, expect)
        limits = Server("limits", limits_server.url, limits_server.proc, expect)
        base.wait_workers("fuzz-worker", timeout=60)

        # A finished task with a recognisable result: it must never show
        # anywhere without a token that names it.
        secret_task = new_id("secret-")
        publisher = EventPublisher(base.broker)
        publisher.publish(
            [
                publisher.task_event("task-received", secret_task, name="workers.tasks.secret"),
                publisher.task_event("task-started", secret_task),
                publisher.task_event("task-succeeded", secret_task, result=repr(MARKER), runtime=0.1),
            ]
        )
        publisher.close()
        for server in (main, limits):
            auth = {"Authorization": "Bearer " + server.token([secret_task])}
            wait_until(
                lambda: MARKER.encode() in server.get(f"/tasks/{secret_task}", auth)[1],
                10,
                f"{server.name} to know the secret task",
            )

        stack = FuzzStack(
            log_dir,
            base.redis_port or 0,
            base.broker,
            base.backend,
            main,
            limits,
            worker,
            base.celery,
            secret_task,
            base.procs,
        )
        stack.baseline = {
            "main_rss_mib": rss_mib(main.proc.pid),
            "limits_rss_mib": rss_mib(limits.proc.pid),
            "main_process": aftermath.process_figures(main),
        }
        yield stack
        # After whichever fuzz tests ran: the servers' state and logs (a failure is an error at teardown).
        aftermath.check(stack)
    finally:
        base.close()


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
