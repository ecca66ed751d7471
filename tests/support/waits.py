"""Waiting on a condition in async tests, with a deadline: no sleep-and-hope."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05) -> object:
    """``wait_until`` for async tests: polls without blocking the clients on the event loop."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)
