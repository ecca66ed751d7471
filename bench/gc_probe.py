"""Run ``pushserver`` with every garbage-collector pass timed: ``python bench/gc_probe.py LOG.jsonl serve ...``.

Appends one JSON line per collection of generation 1 or 2, or any that took
more than 1 ms, to LOG.jsonl: ``{"t": start, "gen": g, "ms": duration,
"collected": n}``. The server is otherwise untouched, so a latency tail can
be lined up against the collector's pauses.

Diagnostic only: ``BENCH_SERVER_GC=disable`` turns the collector off in the
server (``gc.disable()``), to measure what the latency would be without its
pauses — an upper bound for what tuning it (``gc.freeze()``, thresholds) can win.
``BENCH_SWITCH_INTERVAL=0.0005`` sets ``sys.setswitchinterval`` (how long a
thread waiting for the GIL waits before asking for it), to test how much of
the receiver thread's time is GIL hand-off.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time

from pushserver.cli import main


def install(path: str) -> None:
    log = open(path, "a", buffering=1)
    started: dict[str, float] = {}

    def callback(phase: str, info: dict) -> None:
        if phase == "start":
            started["t"] = time.time()
            started["p"] = time.perf_counter()
            started["c"] = time.thread_time()
            return
        ms = 1000 * (time.perf_counter() - started.get("p", time.perf_counter()))
        # The thread's own CPU time too: on a loaded machine a pass can be preempted, and its wall time is not all GC.
        cpu_ms = 1000 * (time.thread_time() - started.get("c", time.thread_time()))
        if info["generation"] >= 1 or ms > 1.0:
            log.write(
                json.dumps(
                    {
                        "t": started.get("t"),
                        "gen": info["generation"],
                        "ms": round(ms, 3),
                        "cpu_ms": round(cpu_ms, 3),
                        "collected": info["collected"],
                    }
                )
                + "\n"
            )

    gc.callbacks.append(callback)


if __name__ == "__main__":
    install(sys.argv.pop(1))
    if os.environ.get("BENCH_SERVER_GC") == "disable":
        gc.disable()
    if os.environ.get("BENCH_SWITCH_INTERVAL"):
        sys.setswitchinterval(float(os.environ["BENCH_SWITCH_INTERVAL"]))
    sys.argv[0] = "pushserver"
    sys.exit(main())
