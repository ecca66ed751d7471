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

    cpu0, wall0 = time.process_time(), time.perf_counter()
    with app.connection_for_read() as conn:
        receiver = app.events.Receiver(conn, handlers={"*": on_event}, routing_key="#")

        def watch() -> None:
            while len(latencies) < args.expect and time.time() - last[0] < args.idle + 60 * (not latencies):
                time.sleep(0.05)
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
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
