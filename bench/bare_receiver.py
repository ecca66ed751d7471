"""The baseline consumer: Celery's own ``app.events.Receiver`` with a handler that only counts.

Prints one JSON line when it stops: after ``--expect`` events, after
``--idle`` seconds without events (once some arrived), or when the broker
drops it (Redis cuts a subscriber whose output buffer overflows) — in which
case ``error`` says so and ``count`` shows how far it got.

A sampler thread records (time, count) every ``--sample`` seconds, the same
resolution at which the harness polls pushserver's /metrics, so both
consumers' rates come from the same estimator.
"""

from __future__ import annotations

import argparse
import json
import threading
import time

from celery import Celery


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--broker", required=True)
    p.add_argument("--expect", type=int, required=True)
    p.add_argument("--idle", type=float, default=3.0)
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--sample", type=float, default=0.05)
    args = p.parse_args()

    app = Celery("bench-bare", broker=args.broker, set_as_current=False)
    count = 0
    first = last = 0.0
    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def on_event(event: dict) -> None:
        nonlocal count, first, last
        last = time.time()
        if not count:
            first = last
        count += 1

    error = None
    with app.connection_for_read() as conn:
        receiver = app.events.Receiver(conn, handlers={"*": on_event}, routing_key="#")

        def watch() -> None:
            t_start = time.time()
            while not stop.is_set():
                now = time.time()
                samples.append((now, count))
                done = count >= args.expect
                idle = count and now - last > args.idle
                if done or idle or now - t_start > args.timeout:
                    receiver.should_stop = True
                    return
                stop.wait(args.sample)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            receiver.capture(limit=None, timeout=None, wakeup=False)
        except Exception as exc:  # noqa: BLE001 - reported, not hidden
            error = f"{type(exc).__name__}: {exc}"
        stop.set()
        samples.append((time.time(), count))
    print(json.dumps({"count": count, "first": first, "last": last, "samples": samples, "error": error}), flush=True)


if __name__ == "__main__":
    main()
