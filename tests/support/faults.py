"""What the fault scenarios share: sizes from the environment, an all-tasks token, counting deliveries, async waits."""

from __future__ import annotations

import os

from pushserver.auth import mint_token
from tests.support.clients import Watcher
from tests.support.stack import SECRET
from tests.support.waits import until as until  # the fault scenarios import it from here


def env_number(name: str, default: float) -> float:
    """A positive number from the environment (a scenario's size or duration)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    value = float(raw)
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {raw!r}")
    return value


def token(*task_ids: str) -> str:
    """A token the suites' servers accept for ``task_ids`` (every task when none), valid for an hour."""
    return mint_token(SECRET, task_ids or ("*",), ttl=3600)


def delivered(watchers: list[Watcher], task_ids: list[str], state: str = "SUCCESS") -> int:
    """How many (client, task) pairs have seen ``state``."""
    return sum(1 for w in watchers for t in task_ids if any(u["state"] == state for u in w.updates.get(t, [])))


async def subscribe_all(watchers: list[Watcher], task_ids: list[str]) -> None:
    """Subscribe every client to every task, asserting each ack is ``ok``."""
    for w in watchers:
        ack = await w.subscribe(task_ids)
        assert ack["ok"], ack


async def wait_all(watchers: list[Watcher], task_ids: list[str], state: str = "SUCCESS", timeout: float = 60) -> None:
    """Wait until every client has seen ``state`` for every task (each wait up to ``timeout`` s)."""
    for w in watchers:
        for t in task_ids:
            await w.wait_state(t, state, timeout=timeout)
