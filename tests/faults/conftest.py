"""The fault suite: real processes (Redis, RabbitMQ, Celery workers, pushserver replicas) broken on purpose.

Every scenario records how many completions its clients should have seen
and how many they did (``report``); the session ends with that table, and
writes it as JSON next to the logs (or to ``$PUSHSERVER_FAULTS_REPORT``)
for docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.clients import Watcher
from tests.support.faults import token
from tests.support.stack import Stack, threads_worker_stack

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
        tr.write_line(
            f"{row['scenario']:<52} expected {row['expected']:>6}  delivered "
            f"{row['delivered']:>6}  {verdict:<4}  {details}"
        )
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
        _REPORT.append(
            {
                "scenario": scenario,
                "expected": expected,
                "delivered": delivered,
                "details": details,
                "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
        )
        path.write_text(json.dumps(_REPORT, indent=2) + "\n")

    return record


@pytest.fixture(scope="session")
def stack(fault_dir: Path) -> Iterator[Stack]:
    """A private Redis with a threads worker (queue ``celery``) for the scenarios that break other things."""
    with threads_worker_stack(fault_dir, "faults-threads", 8, name="faults") as s:
        yield s


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
