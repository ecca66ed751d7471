"""Garbage-collector settings for a long-running server with a large, acyclic in-memory store.

CPython's full (generation 2) collections scan every tracked object: with
1 000 connections in memory one pass took 90-170 ms here, and with a full
store of 100 000 tasks 1.2 s (docs/benchmarks.md) — those pauses, not the
work, made the event-to-client p99. The objects that reach generation 2 (the
store, open connections) are long-lived and need no scanning, so full
collections are left to a slow timer: what start-up allocated is frozen out
of the collector's reach (``gc.freeze``), the automatic generation-2
collections are switched off (its threshold set out of reach), young
collections still free the short-lived cycles asyncio makes, and every
``FULL_COLLECTION_EVERY`` seconds one full collection frees the cycles that
died after reaching generation 2 (a closed connection), with one pause per
period instead of one whenever the generation grew by a quarter.

Freezing the survivors every few seconds instead (this module's earlier
way) left a full collection to whichever moment the generation grew fastest,
such as right after a thousand browsers connected; CPython 3.14's
incremental collector ignores the third threshold and has no such pauses.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

log = logging.getLogger("pushserver.gc")

#: Everything is collected this often (seconds).
FULL_COLLECTION_EVERY = 600.0
#: Generation-1 collections before an automatic full one: never, in practice (the timer does them).
NO_AUTOMATIC_FULL = 1 << 30


def freeze_startup() -> None:
    """Collect once, freeze what start-up allocated (modules, the app), and leave full collections to ``maintain``."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, NO_AUTOMATIC_FULL)


async def maintain(full_every: float = FULL_COLLECTION_EVERY) -> None:
    """Collect everything (start-up's frozen objects excepted) every ``full_every`` seconds."""
    while True:
        await asyncio.sleep(full_every)
        started = time.perf_counter()
        found = gc.collect()
        pause = time.perf_counter() - started
        log.info("periodic full garbage collection: %.0f ms, %d unreachable objects freed", pause * 1000, found)
