"""Scenario 8: pub/sub back-pressure. ``PUSHSERVER_BACKPRESSURE_RATE`` (10 000) events/s for
``PUSHSERVER_BACKPRESSURE_SECONDS`` (30 s), one message per event, open loop.

Redis cuts a pub/sub subscriber off once 32 MB wait for it (its default
``client-output-buffer-limit pubsub 32mb 8mb 60``), and whatever was queued
is lost. The server must keep up: never disconnected (Redis's own counter,
and the server's reconnect metric, stay at 0), every event sent ingested,
and a client watching the last tasks gets their completions.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from dev.metrics import metric
from tests.support.faults import delivered, env_number, until
from tests.support.load import Publisher, record_stream
from tests.support.stack import Stack, redis_stack

RATE = env_number("PUSHSERVER_BACKPRESSURE_RATE", 10_000)
SECONDS = env_number("PUSHSERVER_BACKPRESSURE_SECONDS", 30)
WATCHED = 100


@pytest.fixture(scope="module")
def quiet_stack(fault_dir: Path) -> Iterator[Stack]:
    """A Redis nobody else publishes to: events sent and ingested can be compared exactly."""
    log_dir = fault_dir / "backpressure"
    log_dir.mkdir()
    s = redis_stack(log_dir)
    try:
        yield s
    finally:
        s.close()


def pubsub_client_ids(client: redis.Redis) -> set[str]:
    return {c["id"] for c in client.client_list(_type="pubsub")}


def buffer_cut_offs(client: redis.Redis, s: Stack) -> int:
    """Clients Redis closed for overrunning an output buffer limit: its counter where it has one
    (Redis >= 7.2), else the lines its log writes for each."""
    stats = client.info("stats")
    if "client_output_buffer_limit_disconnections" in stats:
        return int(stats["client_output_buffer_limit_disconnections"])
    assert s.redis is not None
    return s.redis.log().count("overcoming of output buffer limits")


class BacklogProbe(threading.Thread):
    """Samples the largest pub/sub output buffer Redis holds (``CLIENT LIST TYPE pubsub`` omem)."""

    def __init__(self, client: redis.Redis) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.peak = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.1):
            try:
                clients = self.client.client_list(_type="pubsub")
            except redis.RedisError:
                continue
            self.peak = max([self.peak] + [int(c.get("omem", 0)) for c in clients])

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)


@pytest.mark.timeout(int(300 + 3 * SECONDS))
async def test_sustained_rate_never_trips_the_pubsub_buffer_limit_nor_loses_an_event(
    quiet_stack: Stack, watchers, report, fault_dir: Path
):
    s = quiet_stack
    stream = await asyncio.to_thread(record_stream, s.broker, int(RATE * SECONDS), fault_dir / "backpressure.tsv")
    server = s.server("backpressure-server")
    proc, url = server.proc, server.url
    (w,) = await watchers(url)
    last = stream.task_ids[-WATCHED:]
    assert (await w.subscribe(last))["ok"]
    r = redis.Redis(port=s.redis_port)
    limit = r.config_get("client-output-buffer-limit")["client-output-buffer-limit"]
    subscribers_before = pubsub_client_ids(r)
    cut_before = buffer_cut_offs(r, s)
    probe = BacklogProbe(r)
    publisher = Publisher(s.broker, stream, s.log_dir, rate=RATE)
    probe.start()
    try:
        publisher.go()
        sent = await asyncio.to_thread(publisher.result, 120 + 3 * SECONDS)
        published_at = time.monotonic()
        await until(
            lambda: metric(url, "pushserver_events_ingested_total") >= sent["events"] or not proc.alive(),
            120,
            "the server to ingest every event",
            0.05,
        )
        drained_after = time.monotonic() - published_at
        for t in last:
            await w.wait_state(t, "SUCCESS", timeout=30)
    finally:
        probe.stop()
        publisher.stop()
        got = metric(url, "pushserver_events_ingested_total") if proc.alive() else -1
        cut = buffer_cut_offs(r, s) - cut_before
        same_subscribers = pubsub_client_ids(r) == subscribers_before
        report(
            f"8 back-pressure: {RATE:g} events/s for {SECONDS:g} s",
            WATCHED,
            delivered([w], last),
            events_sent=sent["events"] if "sent" in locals() else None,
            events_ingested=int(got),
            achieved_rate=round(sent["events_per_s"]) if "sent" in locals() else None,
            drained_s_after_last_publish=round(drained_after, 2) if "drained_after" in locals() else None,
            peak_redis_backlog_mb=round(probe.peak / 1e6, 1),
            buffer_cut_offs=cut,
            receiver_reconnects=int(metric(url, "pushserver_receiver_reconnects_total")),
        )
        r.close()
    assert "pubsub" in limit
    assert sent["messages_unheard"] == 0, sent
    # The load really was what the scenario says, or the test proves nothing.
    assert sent["events_per_s"] >= 0.95 * RATE, sent
    assert cut == 0, "Redis cut the receiver off for overrunning its output buffer"
    assert same_subscribers, "the receiver's pub/sub connection was replaced during the run"
    assert metric(url, "pushserver_receiver_reconnects_total") == 0
    assert got == sent["events"] == stream.events
