"""The receiver's drain thread on a real Redis: a burst Redis would cut a slow receiver off for is absorbed;
far behind, progress is shed (counted) and state transitions are not; junk in the backlog stops nothing.

Decoding is made slow on purpose (the batch callback sleeps), and Redis's pub/sub output-buffer limit is set
to 1 MB, so that a few megabytes of events overflow it unless something else empties the socket.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from celery.events.event import get_exchange
from kombu import Producer

from dev.stack import start_redis, wait_until
from pushserver.drain import Drain
from pushserver.receiver import Batch, CaptureLoop, ReceiverStatus

pytestmark = pytest.mark.integration

TASKS = 300
PAD = "p" * 4000  # ~4 KB an event: 1 500 events are ~6 MB, six times Redis's limit here
TRANSITIONS = ("task-received", "task-started", "task-succeeded")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[str]:
    proc, port = start_redis(tmp_path)
    try:
        redis.Redis(port=port).config_set("client-output-buffer-limit", "pubsub 1mb 0 0")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.stop()


class NoDrain(Drain):
    """Reads the socket as Celery does: the control that shows the burst really overflows Redis."""

    def install(self, channel: Any) -> bool:
        return False


class SlowReceiver:
    """A CaptureLoop whose batches take ``delay`` seconds each, recording what it hears."""

    def __init__(self, broker: str, drain: Drain, delay: float = 0.1, batch: int = 100) -> None:
        self.app = Celery("drain-test", broker=broker, set_as_current=False)
        self.events: list[dict[str, Any]] = []
        self.statuses: list[ReceiverStatus] = []
        self.shed_reports: list[int] = []
        self.delay = delay
        self.capture = CaptureLoop(
            self.app, self._on_batch, self.statuses.append, drain=drain, on_shed=self.shed_reports.append
        )
        self.capture.MAX_BATCH = batch  # type: ignore[misc]  # small batches: the sleeps add up
        self.thread = threading.Thread(target=self.capture.run, daemon=True)

    def _on_batch(self, batch: Batch) -> None:
        self.events.extend(batch)
        time.sleep(self.delay)  # stands in for decoding slower than the burst

    def __enter__(self) -> SlowReceiver:
        self.thread.start()
        wait_until(lambda: self.capture.connected, 20, "the receiver to connect")
        return self

    def __exit__(self, *exc: object) -> None:
        self.capture.stop()
        self.thread.join(10)

    def types(self) -> Counter[str]:
        return Counter(e["type"] for e in self.events)


def burst(app: Celery, junk_after: int | None = None) -> Counter[str]:
    """Every task's life (received, started, 3 progress, succeeded) in task.multi batches; what was sent."""
    sent: Counter[str] = Counter()
    with app.connection_for_write() as conn:
        dispatcher = app.events.Dispatcher(conn, hostname="w@drain", buffer_group=["task"], buffer_limit=24)
        for i in range(TASKS):
            if i == junk_after:
                dispatcher.flush()
                send_junk(app, conn)
            for event_type in (
                "task-received",
                "task-started",
                "task-progress",
                "task-progress",
                "task-progress",
                "task-succeeded",
            ):
                dispatcher.send(event_type, uuid=f"t{i}", pad=PAD)
                sent[event_type] += 1
        dispatcher.flush()
        dispatcher.close()
    return sent


def send_junk(app: Celery, conn: Any) -> None:
    """A message that is not JSON, and a task.multi batch holding an event that is not an event."""
    url = app.conf.broker_url
    redis.Redis.from_url(url).publish("/0.celeryev/task.started", b"{not json")
    Producer(conn).publish(
        [
            {
                "type": "task-started",
                "uuid": "junk-neighbour",
                "hostname": "w@drain",
                "timestamp": time.time(),
                "utcoffset": 0,
                "pid": 1,
                "clock": 1,
            },
            "not an event",
        ],
        exchange=get_exchange(conn, name=app.conf.event_exchange),
        routing_key="task.multi",
        serializer="json",
    )


def test_without_the_drain_the_burst_gets_the_receiver_cut_off(broker: str) -> None:
    # The control: if this stops failing to deliver, the test below proves nothing.
    with SlowReceiver(broker, NoDrain()) as receiver:
        sent = burst(receiver.app)
        wait_until(lambda: ReceiverStatus.RECONNECTING in receiver.statuses, 30, "Redis to cut the receiver off")
    assert sum(receiver.types().values()) < sum(sent.values())


def test_a_burst_that_would_overflow_redis_is_absorbed_and_nothing_is_lost(broker: str) -> None:
    with SlowReceiver(broker, Drain()) as receiver:
        sent = burst(receiver.app)
        wait_until(lambda: sum(receiver.types().values()) >= sum(sent.values()), 60, "every event to arrive")
        drain = receiver.capture.drain
        assert drain.peak() > 1 << 20  # more than Redis would have held for us
        assert ReceiverStatus.RECONNECTING not in receiver.statuses
    assert receiver.types() == sent
    assert receiver.capture.shed == 0


def test_far_behind_progress_is_shed_and_counted_and_no_transition_is_lost(broker: str) -> None:
    with SlowReceiver(broker, Drain(shed_above=256 << 10)) as receiver:
        sent = burst(receiver.app)
        heard = receiver.types
        wait_until(
            lambda: (
                all(heard()[t] >= sent[t] for t in TRANSITIONS)
                and heard()["task-progress"] + receiver.capture.shed >= sent["task-progress"]
            ),
            60,
            "every transition to arrive",
        )
        assert ReceiverStatus.RECONNECTING not in receiver.statuses
    heard_types = receiver.types()
    assert {t: heard_types[t] for t in TRANSITIONS} == {t: sent[t] for t in TRANSITIONS}
    shed = receiver.capture.shed
    assert shed > 0
    assert heard_types["task-progress"] + shed == sent["task-progress"]  # every shed counted
    assert receiver.shed_reports[-1] == shed  # and handed over with the batches
    # Ordered as sent, for each task, whatever was shed between.
    for i in (0, TASKS // 2, TASKS - 1):
        own = [e["type"] for e in receiver.events if e["uuid"] == f"t{i}"]
        assert [t for t in own if t != "task-progress"] == list(TRANSITIONS)


def test_junk_in_the_backlog_is_dropped_and_the_drain_goes_on(broker: str) -> None:
    with SlowReceiver(broker, Drain()) as receiver:
        sent = burst(receiver.app, junk_after=TASKS // 2)
        wait_until(
            lambda: sum(receiver.types().values()) >= sum(sent.values()) + 1,
            60,
            "every event to arrive, the junk's neighbour too",
        )
        assert receiver.capture.malformed == 1  # "not an event"; the non-JSON message kombu drops with a warning
        assert ReceiverStatus.RECONNECTING not in receiver.statuses
        assert len(receiver.capture.drain.sockets) == 1  # the same connection throughout
    types = receiver.types()
    types["task-started"] -= 1  # the junk's neighbour
    assert types == sent
    assert receiver.events[-1]["uuid"] == f"t{TASKS - 1}"
