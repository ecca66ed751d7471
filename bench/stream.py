"""A task-event stream recorded from Celery's own Dispatcher, to be replayed byte for byte at max speed.

Celery's ``app.events.Dispatcher`` publishes from one process far below what
a receiver can take (docs/benchmarks.md, Method). So the stream is *recorded* once: every event
goes through the real Dispatcher -> kombu Producer -> kombu's Redis channel,
and only the last call, ``Channel._put_fanout`` (a single ``PUBLISH topic
payload``), is replaced by one that stores the topic and the payload kombu
built. ``publish.py`` then sends those exact bytes with pipelined PUBLISH.
``verify_wire_format`` checks once per run that a live Dispatcher publishes
the same shape on the same channel, by listening with PSUBSCRIBE.

Two shapes of the same events:
- ``unbatched``: one message per event, routing key ``task.<event>``, as
  ``Task.send_event`` and gevent/eventlet workers send.
- ``batched``: ``task.multi`` messages carrying lists of up to 24 events, as
  the Dispatcher of a prefork/solo/threads worker sends with
  ``buffer_group=['task']`` (celery/worker/consumer/events.py). A real prefork
  deployment mixes both: ``task-sent`` comes from the client, and
  ``task-progress`` from ``Task.send_event`` in the pool child, one message
  each; here every event is batched, to isolate the per-message cost.
"""

from __future__ import annotations

import base64
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery import Celery
from kombu.transport import redis as kombu_redis

from bench.common import log

WORKERS = [f"celery@worker{i}.bench" for i in range(1, 5)]
CLIENT = "gen4242@api.bench"
TASKS = [
    (
        "workers.tasks.resize_and_watermark",
        lambda r: (f"('uploads/{r.randrange(10**6)}.jpg', 800)", "{}"),
        lambda r: f"{{'path': 'thumbs/{r.randrange(10**6)}.jpg', 'width': 800, 'height': 600}}",
    ),
    ("workers.tasks.send_welcome_email", lambda r: (f"({r.randrange(10**6)},)", "{}"), lambda r: "'sent'"),
    (
        "workers.tasks.predict",
        lambda r: (f"([{r.random():.4f}, {r.random():.4f}, {r.random():.4f}],)", "{}"),
        lambda r: f"{{'label': 'cat', 'score': {r.random():.4f}}}",
    ),
]

EventSpec = tuple[str, str, dict[str, Any]]  # (hostname, type, fields)


def lifecycles(n_tasks: int, progress_steps: int = 3, concurrency: int = 64, seed: int = 7) -> Iterator[EventSpec]:
    """Events of ``n_tasks`` tasks: sent, received, started, ``progress_steps`` x progress, succeeded.

    ``concurrency`` tasks are in flight at once and advance in random order,
    so their events interleave as they would from a pool of workers.
    """
    rng = random.Random(seed)
    steps = 4 + progress_steps
    active: list[list[Any]] = []  # [task_id, name, args, result_fn, worker, step]
    started = 0
    while active or started < n_tasks:
        while len(active) < concurrency and started < n_tasks:
            name, args_fn, result_fn = TASKS[started % len(TASKS)]
            args, kwargs = args_fn(rng)
            active.append(
                [
                    str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                    name,
                    (args, kwargs),
                    result_fn,
                    rng.choice(WORKERS),
                    0,
                ]
            )
            started += 1
        i = rng.randrange(len(active))
        task = active[i]
        task_id, name, (args, kwargs), result_fn, worker, step = task
        if step == 0:
            yield (
                CLIENT,
                "task-sent",
                dict(
                    uuid=task_id,
                    root_id=task_id,
                    parent_id=None,
                    name=name,
                    args=args,
                    kwargs=kwargs,
                    retries=0,
                    eta=None,
                    expires=None,
                    queue="celery",
                    exchange="",
                    routing_key="celery",
                ),
            )
        elif step == 1:
            yield (
                worker,
                "task-received",
                dict(
                    uuid=task_id,
                    name=name,
                    args=args,
                    kwargs=kwargs,
                    root_id=task_id,
                    parent_id=None,
                    retries=0,
                    eta=None,
                    expires=None,
                ),
            )
        elif step == 2:
            yield worker, "task-started", dict(uuid=task_id)
        elif step < steps - 1:
            current = step - 2
            yield (
                worker,
                "task-progress",
                dict(
                    uuid=task_id,
                    current=current,
                    total=progress_steps,
                    percent=round(100.0 * current / progress_steps, 1),
                    message=f"step {current}",
                ),
            )
        else:
            yield (
                worker,
                "task-succeeded",
                dict(uuid=task_id, result=result_fn(rng), runtime=round(rng.uniform(0.01, 2.0), 6)),
            )
        task[5] += 1
        if task[5] == steps:
            active[i] = active[-1]
            active.pop()


@dataclass
class Stream:
    """Recorded messages: (channel, payload, events in it)."""

    shape: str
    messages: list[tuple[str, str, int]] = field(default_factory=list)

    @property
    def events(self) -> int:
        return sum(n for _, _, n in self.messages)

    @property
    def bytes(self) -> int:
        return sum(len(p) for _, p, _ in self.messages)

    def save(self, path: Path) -> None:
        with open(path, "w") as f:
            for channel, payload, n in self.messages:
                f.write(f"{channel}\t{n}\t{payload}\n")

    @classmethod
    def load(cls, path: Path, shape: str = "") -> Stream:
        stream = cls(shape)
        with open(path) as f:
            for line in f:
                channel, n, payload = line.rstrip("\n").split("\t", 2)
                stream.messages.append((channel, payload, int(n)))
        return stream

    def summary(self) -> dict[str, Any]:
        return {
            "shape": self.shape,
            "messages": len(self.messages),
            "events": self.events,
            "bytes": self.bytes,
            "mean_message_bytes": round(self.bytes / max(1, len(self.messages))),
        }


def _count_events(message: dict[str, Any]) -> int:
    body = json.loads(base64.b64decode(message["body"]))
    return len(body) if isinstance(body, list) else 1


def record(specs: list[EventSpec], broker_url: str, shape: str) -> Stream:
    """Send every event through Celery's Dispatcher, keeping what kombu would PUBLISH instead of sending it."""
    batched = shape == "batched"
    app = Celery("bench-stream", broker=broker_url, set_as_current=False)
    stream = Stream(shape)
    with app.connection_for_write() as conn:
        channel = conn.default_channel

        def put_fanout(exchange: str, message: dict[str, Any], routing_key: str, **_: Any) -> None:
            stream.messages.append(
                (channel._get_publish_topic(exchange, routing_key), kombu_redis.dumps(message), _count_events(message))
            )

        channel._put_fanout = put_fanout
        dispatchers: dict[str, Any] = {}
        for hostname, event_type, fields in specs:
            d = dispatchers.get(hostname)
            if d is None:
                d = dispatchers[hostname] = app.events.Dispatcher(
                    conn, hostname=hostname, buffer_group=["task"] if batched else None, buffer_limit=24
                )
            d.send(event_type, **fields)
        for d in dispatchers.values():
            d.flush()
            d.close()
    if stream.events != len(specs):
        raise AssertionError(f"recorded {stream.events} events of {len(specs)}")
    return stream


def verify_wire_format(stream: Stream, redis_client: Any, broker_url: str) -> None:
    """Publish one event with a live Dispatcher and check it looks like the recorded ones."""
    pubsub = redis_client.pubsub()
    pubsub.psubscribe("*")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and pubsub.get_message(timeout=0.2) is None:
        pass
    app = Celery("bench-verify", broker=broker_url, set_as_current=False)
    with app.connection_for_write() as conn:
        d = app.events.Dispatcher(conn, hostname=WORKERS[0])
        d.send("task-started", uuid="verify")
        d.close()
    live = None
    while time.monotonic() < deadline and live is None:
        msg = pubsub.get_message(timeout=0.2)
        if msg and msg["type"] == "pmessage":
            live = msg
    pubsub.close()
    if live is None:
        raise AssertionError("a live Dispatcher's event never reached a PSUBSCRIBE * listener")
    live_payload = json.loads(live["data"])
    channel = live["channel"].decode()
    ours = next(m for m in stream.messages if m[0].rsplit("/", 1)[0] == channel.rsplit("/", 1)[0])
    recorded = json.loads(ours[1])
    if set(live_payload) != set(recorded) or set(live_payload["properties"]) != set(recorded["properties"]):
        raise AssertionError(f"recorded messages differ from live ones:\n{live_payload}\n{recorded}")


def build_streams(
    n_tasks: dict[str, int], broker_url: str, redis_client: Any, directory: Path, progress_steps: int = 3
) -> dict[str, dict[str, Any]]:
    """Record each shape (``n_tasks`` maps shape -> tasks); return {shape: summary with its file}."""
    out = {}
    for shape, tasks in n_tasks.items():
        t0 = time.perf_counter()
        specs = list(lifecycles(tasks, progress_steps))
        stream = record(specs, broker_url, shape)
        verify_wire_format(stream, redis_client, broker_url)
        path = directory / f"stream-{shape}.tsv"
        stream.save(path)
        s = stream.summary()
        s.update(path=str(path), tasks=tasks, by_type=dict(Counter(t for _, t, _ in specs)))
        out[shape] = s
        log(
            f"recorded {shape} stream: {s['events']:,} events in {s['messages']:,} messages "
            f"({s['bytes'] / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f}s"
        )
    return out
