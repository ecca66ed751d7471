"""Per-event cost of each stage of the ingest path, single-threaded, no server: where the microseconds go.

    .venv/bin/python -m bench.merge_cost [--tasks 20000]

Decodes a recorded stream the way Celery's receiver does (kombu's JSON of
the envelope, base64 + JSON of the body, ``event_from_message``), then times
pushserver's loop-side work on the decoded events: the per-type Prometheus
counter, ``TaskStore.merge_event``, and the event loop's whole share of a
batched stream as the receiver process hands it over (the pipe's frames
decoded, then ``Ingest.ingest`` with nobody subscribed and no result reads).
Run by itself it shows the floor of the receive -> merge path before
threads, the GIL and the event loop add their share (compare
bench/profile.py, which profiles the live server). It times the pushserver
installed in the virtualenv (the working tree); to time another revision,
run it in a checkout of that revision.
"""

from __future__ import annotations

import argparse
import base64
import gc
import time
from pathlib import Path

from celery import Celery
from kombu.utils.json import loads

from bench.stream import Stream, lifecycles, record


def best_of(n: int, fn) -> float:
    times = []
    for _ in range(n):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=20_000)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    from bench.common import PrivateRedis
    from pushserver.ingest import Ingest
    from pushserver.metrics import Metrics
    from pushserver.receiver_process import FrameReader, encode_frame, strip_non_task_events
    from pushserver.state import TaskStore
    from pushserver.subscriptions import Subscriptions

    with PrivateRedis() as redis_server:
        specs = list(lifecycles(args.tasks))
        streams = {shape: record(specs, redis_server.url, shape) for shape in ("unbatched", "batched")}
        app = Celery("bench-merge-cost", broker=redis_server.url, set_as_current=False)
        with app.connection_for_read() as conn:
            receiver = app.events.Receiver(conn, handlers={}, routing_key="#")
            n = len(specs)
            print(f"{n:,} events ({args.tasks:,} tasks), best of {args.repeat}, µs per event:")
            decoded: dict[str, list] = {}  # shape -> one list of events per message
            for shape, stream in streams.items():

                def decode(stream: Stream = stream, shape: str = shape) -> None:
                    batches = decoded[shape] = []
                    for _, payload, _ in stream.messages:
                        body = loads(base64.b64decode(loads(payload)["body"]))
                        raws = body if isinstance(body, list) else [body]
                        batches.append([receiver.event_from_message(raw)[1] for raw in raws])

                t = best_of(args.repeat, decode)
                print(f"  decode, {shape:9s} ({len(stream.messages):,} messages): {1e6 * t / n:6.2f}")
        batches = decoded["batched"]
        events = [event for batch in batches for event in batch]

        import pushserver.state

        print(f"  (pushserver from {Path(pushserver.state.__file__).parent})")

        def count() -> None:
            metric = Metrics().events
            for e in events:
                metric[e.get("type", "unknown")].inc()

        def merge() -> None:
            store = TaskStore(max(100_000, args.tasks))
            for e in events:
                store.merge_event(e)

        frames = [encode_frame("events", strip_non_task_events(batch)) for batch in batches]

        def loop_share() -> None:
            ingest = Ingest(TaskStore(max(100_000, args.tasks)), Subscriptions(), None, Metrics())  # type: ignore[arg-type]
            reader = FrameReader()
            for frame in frames:
                for _, payload in reader.feed(frame):
                    ingest.ingest(payload)

        for name, fn in (
            ("Prometheus counter, per event", count),
            ("TaskStore.merge_event", merge),
            ("batched: frames decoded + Ingest.ingest", loop_share),
        ):
            print(f"  {name:38s}: {1e6 * best_of(args.repeat, fn) / n:6.2f}")


if __name__ == "__main__":
    main()
