"""Replay a recorded stream onto the event exchange with pipelined PUBLISH, as fast as allowed.

Run as a process of its own (the harness starts it) and prints one JSON line.

Pacing modes:
- ``max`` (default): no pacing at all, except that with ``--max-backlog`` the
  publisher holds while any pub/sub subscriber already has that many bytes
  queued in Redis (``CLIENT LIST TYPE pubsub`` -> ``omem``). That keeps the
  consumer saturated (it always has a backlog to drain) while staying under
  Redis's default slow-subscriber limits (``pubsub 32mb 8mb 60``), so the
  figure measured is the consumer's drain rate, not how fast Redis cuts it off.
- ``--rate R``: open loop at R events/s regardless of the consumer (a burst):
  a consumer that falls behind is cut off by Redis and its losses are counted.

PUBLISH returns how many subscribers a message reached: messages that reached
nobody are reported, so "consumer not listening yet" cannot pass for "lost".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import redis

from bench.stream import Stream

CHUNK = 200


def max_backlog(client: redis.Redis) -> int:
    return max((int(c.get("omem", 0)) for c in client.client_list(_type="pubsub")), default=0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--redis", required=True, help="redis://host:port/db of the broker")
    p.add_argument("--stream", required=True, type=Path)
    p.add_argument("--rate", type=float, default=0.0, help="events/s, open loop (0 = max)")
    p.add_argument(
        "--max-backlog",
        type=int,
        default=0,
        help="hold while a subscriber has more than this many bytes queued in Redis (0 = never)",
    )
    args = p.parse_args()

    stream = Stream.load(args.stream)
    client = redis.Redis.from_url(args.redis)
    client.ping()
    pipe = client.pipeline(transaction=False)
    published = events = unheard = holds = 0
    print("READY", flush=True)
    sys.stdin.readline()  # the harness says go
    t0 = time.perf_counter()
    wall0 = time.time()
    messages = stream.messages
    for start in range(0, len(messages), CHUNK):
        chunk = messages[start : start + CHUNK]
        if args.rate:
            due = t0 + events / args.rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        elif args.max_backlog:
            while max_backlog(client) > args.max_backlog:
                holds += 1
                time.sleep(0.002)
        for channel, payload, _ in chunk:
            pipe.publish(channel, payload)
        receivers = pipe.execute()
        unheard += sum(1 for r in receivers if r == 0)
        published += len(chunk)
        events += sum(n for _, _, n in chunk)
    elapsed = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "messages": published,
                "events": events,
                "seconds": elapsed,
                "events_per_s": events / elapsed if elapsed else 0.0,
                "messages_unheard": unheard,
                "backlog_holds": holds,
                "started_at": wall0,
                "finished_at": wall0 + elapsed,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
