"""Ingest: how many events/s each consumer takes from the same recorded stream, and what it loses.

For each stream shape and each run, every consumer is started fresh, gets the
same stream, and is measured alone (nothing else consumes in parallel):

- ``bare``: Celery's ``app.events.Receiver(conn, handlers={'*': count}, routing_key='#')``
  in its own process (bare_receiver.py) — the ceiling of Celery's receiver.
- ``pushserver``: ``pushserver serve --insecure``, its count read from
  ``pushserver_events_ingested_total`` on /metrics (events merged by the loop,
  not merely decoded).
- ``flower``: ``celery flower`` (flower.py), its count read from
  ``flower_events_total`` on /metrics (incremented when Flower applies an
  event to its state, not merely receives it).

Two ways to offer the stream:
- *saturating* (the throughput figure): replayed at max speed, the publisher
  holding only while the consumer already has ``MAX_BACKLOG`` bytes queued in
  Redis, so the consumer always has work and Redis's slow-subscriber limit
  never fires; the figure is how fast the consumer drains.
- *burst* (the loss figure): open loop at a fixed fraction of the bare
  receiver's measured rate, with nothing holding the publisher back: a consumer
  slower than that falls behind, Redis cuts it off at 32 MB, and the events
  it never got are counted as lost. Only ``bare`` and ``pushserver``:
  Flower drains far below the burst rate, so it would only lose most of it.

Rate estimator, the same for every consumer: its count is sampled every
``SAMPLE_S`` (bare: by a thread in the receiver process; pushserver and
Flower: by polling /metrics), and events/s = 90% of the final count / (time the count
reached 95% of it - time it reached 5%), each moment interpolated between
the two samples around it. That is the drain rate in steady state, free of
start-up and of the sampling interval's rounding at both ends.
"""

from __future__ import annotations

import json
import select
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.common import (
    PYTHON,
    ConsumerProcess,
    ForeignLoad,
    PrivateRedis,
    PushServerProcess,
    cpu_seconds,
    log,
    stop_process,
    stop_soon,
    wait_for,
    wait_quiet,
)
from bench.flower import FlowerProcess
from dev.metrics import metric_sum

SAMPLE_S = 0.025
IDLE_S = 3.0
MAX_BACKLOG = 4_000_000  # bytes queued for a subscriber before the publisher holds (Redis soft limit: 8 MB)
CONSUMERS = ("bare", "pushserver", "flower")
BURST_CONSUMERS = ("bare", "pushserver")  # Flower drains too slowly: a burst only says it loses most


def crossing(samples: list[tuple[float, float]], target: float) -> float | None:
    """When the count reached ``target``, interpolated linearly between the two samples around it."""
    prev = None
    for t, c in samples:
        if c >= target:
            if prev is None or c == prev[1]:
                return t
            return prev[0] + (target - prev[1]) / (c - prev[1]) * (t - prev[0])
        prev = (t, c)
    return None


def steady_rate(samples: list[tuple[float, float]], final: float) -> tuple[float | None, tuple[float, float] | None]:
    """Events/s between the moments the count reached 5% and 95% of ``final``."""
    if final < 100:
        return None, None
    t_lo, t_hi = crossing(samples, 0.05 * final), crossing(samples, 0.95 * final)
    if t_lo is None or t_hi is None or t_hi <= t_lo:
        return None, None
    return 0.9 * final / (t_hi - t_lo), (t_lo, t_hi)


def max_backlog_bytes(redis_server: PrivateRedis) -> int:
    """The largest output buffer Redis holds for any pub/sub subscriber (``omem``)."""
    clients = redis_server.client.client_list(_type="pubsub")
    return max((int(c.get("omem", 0)) for c in clients), default=0)


def cpu_percent(cpu_samples: list[tuple[float, float]], window: tuple[float, float] | None) -> float | None:
    """CPU% of the consumer between two wall-clock times, from (time, cpu seconds) samples."""
    if window is None or len(cpu_samples) < 2:
        return None
    inside = [s for s in cpu_samples if window[0] - SAMPLE_S <= s[0] <= window[1] + SAMPLE_S]
    if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
        return None
    return 100.0 * (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])


class Publisher:
    """publish.py in its own process, loaded and waiting for the word."""

    def __init__(self, redis_server: PrivateRedis, stream: Path, rate: float = 0.0, max_backlog: int = 0) -> None:
        cmd = [PYTHON, "-m", "bench.publish", "--redis", redis_server.url, "--stream", str(stream)]
        if rate:
            cmd += ["--rate", str(rate)]
        if max_backlog:
            cmd += ["--max-backlog", str(max_backlog)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.ready = False

    def wait_ready(self) -> None:
        """Wait until the stream is loaded (it loads while the caller starts a consumer)."""
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != "READY":
            raise RuntimeError(f"publisher failed to start: {line!r}")
        self.ready = True

    def go(self) -> None:
        if not self.ready:
            self.wait_ready()
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.close()

    def done(self) -> bool:
        return self.proc.poll() is not None

    def result(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        self.proc.wait()
        if self.proc.returncode != 0 or not out.strip():
            raise RuntimeError(f"publisher failed (exit {self.proc.returncode})")
        return json.loads(out.strip().splitlines()[-1])


def start_consumer(kind: str, redis_server: PrivateRedis, expected: int, timeout: float) -> Any:
    """A fresh consumer of ``kind``, subscribed and ready; a Popen for ``bare``, a ConsumerProcess otherwise."""
    if kind == "bare":
        since = redis_server.last_client_id()
        bare = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "bench.bare_receiver",
                "--broker",
                redis_server.url,
                "--expect",
                str(expected),
                "--idle",
                str(IDLE_S),
                "--sample",
                str(SAMPLE_S),
                "--timeout",
                str(timeout),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for(lambda: redis_server.pattern_subscribed_since(since), 20, "the bare receiver's subscription")
        except BaseException:
            stop_process(bare)
            raise
        return bare
    if kind == "pushserver":
        return PushServerProcess(redis_server).__enter__()
    if kind == "flower":
        return FlowerProcess(redis_server).__enter__()
    raise ValueError(kind)


def measure(
    kind: str,
    redis_server: PrivateRedis,
    stream: Path,
    expected: int,
    *,
    rate: float = 0.0,
    max_backlog: int = 0,
    timeout: float = 300.0,
) -> dict[str, Any]:
    """Run one consumer of ``kind`` (see CONSUMERS) on the stream once; return count, lost, events/s, CPU%.

    The bare receiver samples its own count and reports at the end; pushserver
    and Flower are polled over HTTP (``ConsumerProcess.processed``).
    """
    # The publisher loads the stream while the consumer starts (and the previous
    # one still shuts down); it waits for the word.
    publisher = Publisher(redis_server, stream, rate=rate, max_backlog=max_backlog)
    consumer = None
    try:
        consumer = start_consumer(kind, redis_server, expected, timeout)
        bare = consumer if kind == "bare" else None
        server = consumer if kind != "bare" else None
        pid = consumer.pid
        publisher.wait_ready()
        wait_quiet()
        samples: list[tuple[float, float]] = []
        cpu_samples: list[tuple[float, float]] = []
        peak_backlog = 0
        base = server.processed() if server else 0.0  # Flower counts its own start-up events, if any
        reconnects0 = (
            metric_sum(server.metrics(), "pushserver_receiver_reconnects_total") if kind == "pushserver" else 0
        )
        disconnects0 = redis_server.outbuf_disconnections()
        foreign = ForeignLoad()
        publisher.go()
        t_start = last_change = time.monotonic()
        count = 0.0
        timed_out = False
        while True:
            time.sleep(SAMPLE_S)
            now = time.time()
            # What Redis holds for the consumer: 32 MB and it is cut off.
            peak_backlog = max(peak_backlog, max_backlog_bytes(redis_server))
            if bare is not None:
                # It prints its one line when done; no need to wait for its exit.
                if bare.poll() is not None or select.select([bare.stdout], [], [], 0)[0]:
                    break
                cpu_samples.append((now, cpu_seconds(pid)))
            else:
                new = server.processed() - base
                cpu_samples.append((now, cpu_seconds(pid)))
                samples.append((now, new))
                if new != count:
                    count, last_change = new, time.monotonic()
                if publisher.done() and (count >= expected or time.monotonic() - last_change > IDLE_S):
                    break
            if time.monotonic() - t_start > timeout:
                timed_out = True
                log(f"{kind}: timed out after {timeout:.0f}s")
                break
        foreign_cores = foreign.cores()
        if timed_out and not publisher.done():
            # Held back by a consumer that stopped draining: there is no publisher report.
            stop_process(publisher.proc)
            pub = {"events": expected, "events_per_s": 0.0, "messages_unheard": 0, "backlog_holds": 0}
        else:
            pub = publisher.result()
        error = "timed out" if timed_out else None
        if bare is not None:
            assert bare.stdout is not None
            res = json.loads(bare.stdout.readline())
            samples = [tuple(s) for s in res["samples"]]
            count = res["count"]
            error = res["error"] or error
        elif kind == "pushserver":
            reconnects = int(metric_sum(server.metrics(), "pushserver_receiver_reconnects_total") - reconnects0)
            if reconnects:
                error = f"receiver reconnected {reconnects}x (dropped by Redis?)"
        disconnects1 = redis_server.outbuf_disconnections()
    finally:
        if isinstance(consumer, ConsumerProcess):
            consumer.stop(wait=False)
        elif consumer is not None:
            stop_soon(consumer)
        stop_soon(publisher.proc)
    events_per_s, window = steady_rate(samples, count)
    return {
        "consumer": kind,
        "sent": pub["events"],
        "received": int(count),
        "lost": int(pub["events"] - count),
        "lost_pct": 100.0 * (pub["events"] - count) / pub["events"] if pub["events"] else 0.0,
        "events_per_s": events_per_s,
        "cpu_pct": cpu_percent(cpu_samples, window),
        "published_per_s": pub["events_per_s"],
        "messages_unheard": pub["messages_unheard"],
        "backlog_holds": pub["backlog_holds"],
        "peak_backlog_mb": peak_backlog / 1e6,
        "redis_outbuf_disconnections": (
            disconnects1 - disconnects0 if disconnects0 is not None and disconnects1 is not None else None
        ),
        "foreign_cores": foreign_cores,
        "error": error,
    }


def describe(result: dict[str, Any]) -> str:
    rate = result["events_per_s"]
    txt = (
        f"{result['consumer']}: {result['received']:,}/{result['sent']:,} events, {rate:,.0f} ev/s"
        if rate
        else f"{result['consumer']}: {result['received']:,}/{result['sent']:,} events"
    )
    if result["cpu_pct"] is not None:
        txt += f", CPU {result['cpu_pct']:.0f}%"
    if result["peak_backlog_mb"] > 1:
        txt += f", peak backlog {result['peak_backlog_mb']:.0f} MB"
    if result["foreign_cores"] > 0.1:
        txt += f", other processes used {result['foreign_cores']:.2f} cores"
    if result["lost"]:
        txt += f", LOST {result['lost']:,} ({result['lost_pct']:.1f}%)"
    if result["error"]:
        txt += f" [{result['error']}]"
    return txt


def run(
    redis_server: PrivateRedis,
    streams: dict[str, dict[str, Any]],
    runs: int,
    burst_fraction: float = 0.8,
    burst: bool = True,
    consumers: tuple[str, ...] = CONSUMERS,
    burst_streams: dict[str, dict[str, Any]] | None = None,
    burst_consumers: tuple[str, ...] = BURST_CONSUMERS,
) -> dict[str, Any]:
    """Every consumer on every shape, ``runs`` times saturating, then ``runs`` bursts of ``burst_consumers``.

    The bursts replay ``streams``, or if given ``burst_streams`` (shape -> a
    stream of that shape, of its own size; only those shapes get bursts), at
    ``burst_fraction`` of the bare Receiver's saturating rate on the shape.
    """
    burst_streams = burst_streams if burst_streams is not None else streams
    out: dict[str, Any] = {
        "streams": streams,
        "burst_streams": burst_streams,
        "saturating": {},
        "burst": {},
        "burst_fraction": burst_fraction,
        "max_backlog": MAX_BACKLOG,
        "sample_s": SAMPLE_S,
    }
    for shape, stream in streams.items():
        path, expected = Path(stream["path"]), stream["events"]
        sat = out["saturating"][shape] = {k: [] for k in consumers}
        for i in range(runs):
            for kind in consumers:
                r = measure(kind, redis_server, path, expected, max_backlog=MAX_BACKLOG)
                sat[kind].append(r)
                log(f"ingest {shape} saturating run {i + 1}/{runs}: {describe(r)}")
        bare_rates = sorted(r["events_per_s"] for r in sat.get("bare", []) if r["events_per_s"])
        if not burst or not bare_rates or shape not in burst_streams:
            continue
        burst_rate = burst_fraction * bare_rates[len(bare_rates) // 2]
        path, expected = Path(burst_streams[shape]["path"]), burst_streams[shape]["events"]
        kinds = [k for k in burst_consumers if k in consumers and k in BURST_CONSUMERS]
        b = out["burst"][shape] = {"offered_per_s": burst_rate, **{k: [] for k in kinds}}
        for i in range(runs):
            for kind in kinds:
                r = measure(kind, redis_server, path, expected, rate=burst_rate)
                b[kind].append(r)
                log(f"ingest {shape} burst at {burst_rate:,.0f} ev/s run {i + 1}/{runs}: {describe(r)}")
    return out
