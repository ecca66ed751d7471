"""Latency baseline: the same publisher into a bare Celery Receiver, timing ``time.time() - timestamp``.

This is what Celery + kombu + Redis cost before pushserver does anything; the
pushserver figures include it. Prints one JSON line after ``--expect`` events,
or after ``--idle`` seconds without any.
"""

from __future__ import annotations

import argparse
import json
import threading
import time

from celery import Celery

from bench.common import percentile


def cpu_per_event(marks: dict[str, tuple[int, float]]) -> float | None:
    """µs of CPU per event between the ``first`` and ``latest`` (events, CPU seconds) marks (None: too few)."""
    if "first" not in marks or marks["latest"][0] <= marks["first"][0]:
        return None
    (n0, c0), (n1, c1) = marks["first"], marks["latest"]
    return 1e6 * (c1 - c0) / (n1 - n0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--broker", required=True)
    p.add_argument("--expect", type=int, required=True)
    p.add_argument("--idle", type=float, default=3.0)
    args = p.parse_args()

    app = Celery("bench-bare-latency", broker=args.broker, set_as_current=False)
    latencies: list[float] = []
    last = [time.time()]

    def on_event(event: dict) -> None:
        now = time.time()
        latencies.append(now - event["timestamp"])
        last[0] = now

    # (events received, process CPU time) when the first events were seen and at the latest new ones: the
    # receiver's CPU per event, its start-up and the waits before and after the stream left out.
    cpu_marks: dict[str, tuple[int, float]] = {}

    def sample_cpu() -> None:
        count = len(latencies)
        if count and count > cpu_marks.get("latest", (0, 0.0))[0]:
            cpu_marks["latest"] = (count, time.process_time())
            cpu_marks.setdefault("first", cpu_marks["latest"])

    cpu0, wall0 = time.process_time(), time.perf_counter()
    with app.connection_for_read() as conn:
        receiver = app.events.Receiver(conn, handlers={"*": on_event}, routing_key="#")

        def watch() -> None:
            while len(latencies) < args.expect and time.time() - last[0] < args.idle + 60 * (not latencies):
                sample_cpu()
                time.sleep(0.05)
            sample_cpu()
            receiver.should_stop = True

        threading.Thread(target=watch, daemon=True).start()
        receiver.capture(limit=None, timeout=None, wakeup=False)
    lat = sorted(x * 1000 for x in latencies)
    print(
        json.dumps(
            {
                "received": len(lat),
                "p50_ms": percentile(lat, 50),
                "p95_ms": percentile(lat, 95),
                "p99_ms": percentile(lat, 99),
                "max_ms": lat[-1] if lat else float("nan"),
                "mean_ms": sum(lat) / len(lat) if lat else float("nan"),
                "cpu_pct": 100 * (time.process_time() - cpu0) / (time.perf_counter() - wall0),
                # Comparable to the pushserver phase's server_cpu_us_per_update (one update per event there).
                "cpu_us_per_event": cpu_per_event(cpu_marks),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
