"""Per-event cost of the receiver pipe's frames: encode in the child, decode in the server.

    .venv/bin/python bench/frame_codec.py [--batch 200] [--rounds 200]

Frames of realistic task events (a lifecycle with progress, as a worker's
``task.multi`` batches carry them) are encoded with ``encode_frame`` and
decoded with ``FrameReader.feed``; the best of five runs is printed, in
microseconds per event, for each side.
"""

from __future__ import annotations

import argparse
import time
import uuid

from pushserver.receiver_process import FrameReader, encode_frame


def events(n: int) -> list[dict]:
    out = []
    now = time.time()
    for i in range(n):
        task = str(uuid.uuid4())
        kind = ("task-received", "task-started", "task-progress", "task-succeeded")[i % 4]
        event = {
            "type": kind,
            "uuid": task,
            "hostname": "celery@worker-1",
            "utcoffset": 0,
            "pid": 4242,
            "clock": 100_000 + i,
            "timestamp": now + i / 1000,
            "local_received": now + i / 1000 + 0.0004,
        }
        if kind == "task-received":
            event.update(
                name="workers.tasks.resize_and_watermark",
                args="('img-1.png',)",
                kwargs="{}",
                retries=0,
                root_id=task,
                parent_id=None,
                eta=None,
                expires=None,
            )
        elif kind == "task-progress":
            event.update(current=i, total=100, message="resizing")
        elif kind == "task-succeeded":
            event.update(result="'done'", runtime=0.0123)
        out.append(event)
    return out


def best(fn, rounds: int) -> float:
    times = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(rounds):
            fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=200, help="events per frame")
    parser.add_argument("--rounds", type=int, default=200, help="frames per timed run")
    args = parser.parse_args()
    batch = events(args.batch)
    frame = encode_frame("events", batch)
    reader = FrameReader()
    assert reader.feed(frame) == [("events", batch)]
    n = args.batch * args.rounds
    encode = best(lambda: encode_frame("events", batch), args.rounds) / n * 1e6
    decode = best(lambda: reader.feed(frame), args.rounds) / n * 1e6
    print(f"{args.batch} events per frame, {len(frame) / args.batch:.0f} bytes per event")
    print(f"encode (child):  {encode:.2f} µs/event")
    print(f"decode (server): {decode:.2f} µs/event")


if __name__ == "__main__":
    main()
