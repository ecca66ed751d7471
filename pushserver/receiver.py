"""Where events enter: Celery's own event receiver, kept connected, handing batches to the asyncio loop.

``CaptureLoop`` is the receiving itself: Celery's ``EventReceiver.capture()``
with reconnects, backoff and per-event tolerant decoding. It runs either in a
child process (``receiver_process.ReceiverProcess``, the default: decoding
gets a core of its own instead of sharing the loop's GIL) or in a thread of
the server (``ReceiverThread``, ``--receiver thread``).

Redis disconnects a pub/sub subscriber that falls 32 MB behind, so on Redis
a drain thread moves the bytes off the socket into a bounded local backlog
(``drain.py``), which decoding works through; far behind, ``task-progress``
events are shed first, counted. The capturing side does nothing but decode
and hand over: each event is appended to a buffer, and the loop is woken
once per batch. Under load the loop finds hundreds of events per wake-up;
idle, an event is handed over at once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from celery import Celery
from celery.events.receiver import EventReceiver

from . import event_json
from .backoff import Backoff
from .drain import Drain

log = logging.getLogger("pushserver.receiver")

Batch = list[dict[str, Any]]


class ReceiverStatus(str, Enum):
    """Where the receiver thread is in its life."""

    STARTING = "starting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    STOPPED = "stopped"


@dataclass(frozen=True)
class EventQueueOptions:
    """A named, durable event queue for AMQP brokers: a restarted replica finds what it missed waiting in it.

    Celery's own event queue is ``celeryev.<uuid>``, new on every start, whose
    messages live 5 s and which is deleted 60 s after its consumer leaves:
    every event sent while a replica restarts is lost to it. With a fixed
    name per replica the queue, and the events in it, outlive the process.
    Each replica needs a name of its own: replicas sharing one queue would
    each get only part of the events. On Redis events are pub/sub messages
    that no queue keeps, and this changes nothing.
    """

    name: str
    ttl: float = 3600.0  # seconds an event may wait in the queue (x-message-ttl)
    expires: float = 86400.0  # seconds the queue outlives its last consumer (x-expires)

    def receiver_options(self) -> dict[str, Any]:
        """Keyword arguments for Celery's ``EventReceiver``."""
        return {"queue_durable": True, "queue_exclusive": False, "queue_ttl": self.ttl, "queue_expires": self.expires}


class TolerantEventReceiver(EventReceiver):
    """Celery's event receiver, except that an event that cannot be decoded is dropped (``on_malformed``), not fatal.

    Celery's own message callback decodes a message's events in one go: one
    malformed event raises out of ``capture()`` and costs a reconnect, and
    pub/sub keeps nothing of the gap. Here each event is decoded on its own.
    ``before_drain`` is called before each drain of the connection. With a
    ``drain``, a Redis channel's pub/sub socket is drained by a thread of its
    own, and while the drain is far behind, ``task-progress`` events are
    shed (``on_shed``) before they are decoded.
    """

    #: Fail fast and let CaptureLoop back off: kombu's default retries forever
    #: inside ensure_connection, where stop() cannot reach it.
    connect_max_retries = 1

    def __init__(
        self,
        *args: Any,
        on_malformed: Callable[[Exception], None],
        before_drain: Callable[[], None],
        drain: Drain | None = None,
        on_shed: Callable[[], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.on_malformed = on_malformed
        self.before_drain = before_drain
        self.drain = drain
        self.on_shed = on_shed

    def on_iteration(self) -> None:
        """kombu's ConsumerMixin hook, called before each drain."""
        self.before_drain()

    def get_consumers(self, Consumer: Any, channel: Any) -> list[Any]:
        """As Celery's receiver (kombu's ConsumerMixin hook), with ``receive`` as the message callback."""
        if self.drain is not None:
            self.drain.install(channel)  # before the consumer subscribes, which opens the pub/sub connection
        return [Consumer(queues=[self.queue], callbacks=[self.receive], no_ack=True, accept=self.accept)]

    def receive(self, body: Any, message: Any) -> None:
        """Decode and dispatch each event of a message (a list of events since Celery 4, or one)."""
        decode, process = self.event_from_message, self.process
        # Far behind Redis, progress is shed before the state transitions are: a
        # later progress event, or the task's end, says the same thing again.
        shedding = self.drain is not None and self.on_shed is not None and self.drain.behind()
        for one in body if isinstance(body, list) else (body,):
            if shedding and isinstance(one, dict) and one.get("type") == "task-progress":
                self.on_shed()  # type: ignore[misc]  # not None when shedding
                continue
            try:
                process(*decode(one))
            except Exception as exc:  # noqa: BLE001 - anything on the exchange may be junk
                self.on_malformed(exc)


class CaptureLoop:
    """Keeps ``TolerantEventReceiver.capture()`` running: connect, capture, back off and reconnect until stopped.

    ``run()`` blocks. ``on_batch`` gets the decoded events, ``on_status``
    each change of status, in the order they happened, both on the capturing
    thread. Events are handed over once per drain of the connection (every
    message Redis had ready), at most ``MAX_BATCH`` at a time: one lock and
    one wake-up per batch, not per event, whoever takes them. On Redis the
    pub/sub socket is drained by a thread of its own (``drain.Drain``);
    ``shed`` counts the progress events shed while it was far behind, and
    ``on_shed`` gets that total with the batch after a change.
    """

    MAX_BATCH = 1000

    def __init__(
        self,
        app: Celery,
        on_batch: Callable[[Batch], None],
        on_status: Callable[[ReceiverStatus], None],
        backoff: Backoff | None = None,
        queue: EventQueueOptions | None = None,
        on_malformed: Callable[[int], None] | None = None,
        drain: Drain | None = None,
        on_shed: Callable[[int], None] | None = None,
    ) -> None:
        self.app = app
        self.on_batch = on_batch
        self.on_status = on_status
        self.on_malformed = on_malformed
        self.backoff = backoff or Backoff()
        self.queue = queue
        self.status = ReceiverStatus.STARTING
        self.malformed = 0
        self.drain = drain if drain is not None else Drain()
        self.on_shed = on_shed
        self.shed = 0
        self._shed_reported = 0
        self._stopping = threading.Event()
        self._receiver: Any = None
        self._ever_connected = False
        self._batch: Batch = []

    @property
    def connected(self) -> bool:
        return self.status is ReceiverStatus.CONNECTED

    def stop(self) -> None:
        """Ask ``run()`` to return (capture checks the flag about once a second)."""
        self._stopping.set()
        if self._receiver is not None:
            self._receiver.should_stop = True

    def run(self) -> None:
        """Receive until ``stop()``, reconnecting with backoff whenever the broker goes away."""
        while not self._stopping.is_set():
            try:
                with self.app.connection_for_read() as conn:
                    # Fail fast and let our own loop back off: kombu's default
                    # retries forever inside ensure_connection, where stop()
                    # cannot reach it.
                    conn.ensure_connection(max_retries=1)
                    iterations = 0

                    def before_drain() -> None:
                        # Called before each drain: hand over what the last one decoded.
                        self._flush()
                        # The subscription is made inside the first drain;
                        # once it has returned we are certainly listening.
                        nonlocal iterations
                        iterations += 1
                        if iterations == 2 and not self.connected:
                            self._mark_connected()

                    receiver = TolerantEventReceiver(
                        conn,
                        app=self.app,
                        handlers={"*": self._on_event},
                        routing_key="#",
                        on_malformed=self._dropped_malformed,
                        before_drain=before_drain,
                        drain=self.drain,
                        on_shed=self._shed_progress,
                        **(self.queue.receiver_options() if self.queue else {}),
                    )
                    if self.queue is not None:
                        # Celery would name it <prefix>.<node_id>; the
                        # operator's name is used exactly as given.
                        receiver.queue.name = self.queue.name
                    self._receiver = receiver
                    if self._stopping.is_set():
                        break
                    receiver.capture(limit=None, timeout=None, wakeup=False)
            except Exception as exc:  # noqa: BLE001 - any broker failure means: reconnect
                if self._stopping.is_set():
                    break
                delay = self.backoff.next_delay()
                if self.status is not ReceiverStatus.RECONNECTING:
                    log.warning("event receiver lost the broker (%s: %s); reconnecting", type(exc).__name__, exc)
                self._set_status(ReceiverStatus.RECONNECTING)
                log.info("event receiver: attempt %d to reconnect in %.1fs", self.backoff.attempt, delay)
                self._stopping.wait(delay)
            finally:
                self._receiver = None
                self._flush()  # what was decoded before the connection failed is good
        self._set_status(ReceiverStatus.STOPPED)

    def _dropped_malformed(self, exc: Exception) -> None:
        self.malformed += 1
        if self.malformed == 1 or self.malformed % 1000 == 0:
            log.warning("dropped a malformed event (%s; %d so far)", type(exc).__name__, self.malformed)
        if self.on_malformed is not None:
            self.on_malformed(self.malformed)

    def _shed_progress(self) -> None:
        self.shed += 1
        if self.shed == 1 or self.shed % 10_000 == 0:
            log.warning(
                "event receiver: %d MB behind Redis; shedding task-progress events (%d so far)",
                self.drain.backlog() >> 20,
                self.shed,
            )

    def _mark_connected(self) -> None:
        reconnected = self._ever_connected
        self._ever_connected = True
        self.backoff.reset()
        log.info(
            "event receiver %s to %s",
            "reconnected" if reconnected else "connected",
            self.app.connection_for_read().as_uri(),
        )
        self._set_status(ReceiverStatus.CONNECTED)

    def _on_event(self, event: dict[str, Any]) -> None:
        if not self.connected:
            self._mark_connected()
        batch = self._batch
        batch.append(event)
        if len(batch) >= self.MAX_BATCH:
            self._flush()

    def _flush(self) -> None:
        if self._batch:
            batch, self._batch = self._batch, []
            self.on_batch(batch)
        if self.shed != self._shed_reported and self.on_shed is not None:
            self._shed_reported = self.shed
            self.on_shed(self.shed)

    def _set_status(self, status: ReceiverStatus) -> None:
        if status is not self.status:
            self._flush()  # events heard before the change go first
            self.status = status
            self.on_status(status)


class Receiver:
    """What the server sees of a receiver, on the loop: its status, reconnects, malformed and shed events."""

    def __init__(
        self, on_batch: Callable[[Batch], None], on_status: Callable[[ReceiverStatus, bool], None] | None
    ) -> None:
        self.on_batch = on_batch
        self.on_status = on_status
        self.status = ReceiverStatus.STARTING
        self.reconnects = 0
        self.malformed = 0
        self.shed = 0  # task-progress events shed while the receiver was far behind Redis
        self._ever_connected = False

    def _status_changed(self, status: ReceiverStatus) -> None:
        """Record a status heard from the capturing side; a second CONNECTED is a reconnect."""
        if status is self.status:
            return
        reconnected = status is ReceiverStatus.CONNECTED and self._ever_connected
        if status is ReceiverStatus.CONNECTED:
            self._ever_connected = True
            self.reconnects += reconnected
        self.status = status
        if self.on_status is not None:
            self.on_status(status, reconnected)

    def start(self) -> None:
        """Start receiving; called on the event loop, which gets the batches."""
        raise NotImplementedError

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop receiving, and hand over what was decoded before stopping."""
        raise NotImplementedError


class ReceiverThread(Receiver):
    """Runs a ``CaptureLoop`` in a daemon thread of the server (``--receiver thread``).

    Decoding then shares the event loop's GIL: simpler, one process less, and
    about half the ingest rate of ``ReceiverProcess`` (docs/benchmarks.md).
    """

    def __init__(
        self,
        app: Celery,
        on_batch: Callable[[Batch], None],
        on_status: Callable[[ReceiverStatus, bool], None] | None = None,
        queue: EventQueueOptions | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        super().__init__(on_batch, on_status)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.capture = CaptureLoop(
            app,
            self._on_batch,
            self._on_capture_status,
            backoff,
            queue,
            on_malformed=self._on_malformed,
            on_shed=self._on_shed,
        )
        self._buffer: Batch = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.capture.run, name="celery-event-receiver", daemon=True)

    def start(self) -> None:
        """Start the receiver thread, which hands its batches to the running loop."""
        self.loop = asyncio.get_running_loop()
        event_json.install()
        self._thread.start()

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop capturing, wait for the thread, and hand over what it still held."""
        self.capture.stop()
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join, timeout)
        self._drain()
        self._status_changed(ReceiverStatus.STOPPED)

    # -- the capturing thread -------------------------------------------------

    def _on_batch(self, batch: Batch) -> None:
        with self._lock:
            first = not self._buffer
            self._buffer += batch
        if first:
            self._call_soon(self._drain)

    def _on_malformed(self, total: int) -> None:
        self.malformed = total  # an int store: read by the metrics scrape on the loop

    def _on_shed(self, total: int) -> None:
        self.shed = total  # an int store, as malformed

    def _on_capture_status(self, status: ReceiverStatus) -> None:
        self._call_soon(self._status_changed, status)

    def _call_soon(self, callback: Callable[..., None], *args: Any) -> None:
        assert self.loop is not None  # the thread runs only after start()
        try:
            self.loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # loop closed during shutdown
            pass

    # -- the loop side ------------------------------------------------------

    def _drain(self) -> None:
        with self._lock:
            batch, self._buffer = self._buffer, []
        if batch:
            self.on_batch(batch)
