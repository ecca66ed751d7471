"""Garbage-collector settings for a long-running server with a large, acyclic in-memory store.

CPython's full (generation 2) collections scan every tracked object: with
1 000 connections in memory one pass took 90-170 ms here, and with a full
store of 100 000 tasks 1.2 s (docs/benchmarks.md) — those pauses, not the
work, made the event-to-client p99. The objects that reach generation 2 (the
store, open connections) are long-lived and need no scanning, so full
collections are left to a slow timer: what start-up allocated is frozen out
of the collector's reach (``gc.freeze``), the automatic generation-2
collections are switched off (its threshold set out of reach), young
collections, small and frequent, still free the short-lived cycles asyncio
makes (and pass their survivors on to generation 2 after one more, small,
generation-1 pass), and every
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
#: Net allocations before a young collection (CPython's default: 700). A young pass scans what was allocated
#: since the last one and still lives; with thousands of idle sockets much of that is their keep-alive objects,
#: so a smaller generation means shorter pauses for the same work: with 18 790 idle sockets the longest pass fell
#: from 10-21 ms to 4-5 ms, at 5 000 events/s the CPU per update stayed the same (docs/benchmarks.md).
YOUNG_THRESHOLD = 200
#: Young collections before a generation-1 one (CPython's default: 10). What survives a young collection here
#: is mostly long-lived (each connection's keep-alive futures, timers and coroutines live a ping interval), and a
#: generation-1 pass scans all of it at once: with 18 790 idle sockets one held the loop 30-75 ms at the default,
#: 6 ms at 1, for the same CPU (docs/benchmarks.md).
MIDDLE_THRESHOLD = 1


def freeze_startup() -> None:
    """Collect once, freeze what start-up allocated (modules, the app), and leave full collections to ``maintain``."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, NO_AUTOMATIC_FULL)


async def maintain(full_every: float = FULL_COLLECTION_EVERY) -> None:
    """Collect everything (start-up's frozen objects excepted) every ``full_every`` seconds."""
    while True:
        await asyncio.sleep(full_every)
        started = time.perf_counter()
        found = gc.collect()
        pause = time.perf_counter() - started
        log.info("periodic full garbage collection: %.0f ms, %d unreachable objects freed", pause * 1000, found)
