"""Garbage-collector settings for a long-running server with a large, acyclic in-memory store.

CPython's full (generation 2) collections scan every tracked object: with
1 000 connections in memory one pass took 120-220 ms here, and with a full
store of 100 000 tasks 1.2 s (docs/benchmarks.md) — those pauses, not the
work, made the event-to-client p99. Long-lived objects (the store, open
connections) need no scanning, so whatever has survived is moved out of the
collector's reach (``gc.freeze``) every few seconds; young collections still
free the short-lived cycles asyncio makes, and on a slow timer everything is
unfrozen and collected once, so cycles that died after being frozen (a
closed connection) are freed too, with one pause per period instead of many.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

log = logging.getLogger("pushserver.gc")

#: Survivors are frozen this often (seconds).
FREEZE_EVERY = 5.0
#: Everything is unfrozen and collected this often (seconds).
FULL_COLLECTION_EVERY = 600.0


def freeze_startup() -> None:
    """Collect once and freeze what start-up allocated (modules, the app)."""
    gc.collect()
    gc.freeze()


async def maintain(freeze_every: float = FREEZE_EVERY, full_every: float = FULL_COLLECTION_EVERY) -> None:
    """Freeze survivors every ``freeze_every`` s; unfreeze and fully collect every ``full_every`` s."""
    since_full = 0.0
    while True:
        await asyncio.sleep(freeze_every)
        since_full += freeze_every
        if since_full >= full_every:
            since_full = 0.0
            gc.unfreeze()
            started = time.perf_counter()
            found = gc.collect()
            pause = time.perf_counter() - started
            log.info("periodic full garbage collection: %.0f ms, %d unreachable objects freed", pause * 1000, found)
        gc.freeze()
