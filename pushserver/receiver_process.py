"""Where events enter, on a core of their own: Celery's receiver in a child process, piping decoded batches to the loop.

In one process, Celery's decoding and the loop's merge share one GIL and
take turns: with ``task.multi`` batches the process ingested less than half
of what a bare Receiver does (docs/benchmarks.md). Here the child decodes on one
core while the server merges and emits on the other.

The pipe carries frames: a 4-byte big-endian length, then a pickle of
``(kind, payload)``: ``("events", [event, ...])``, ``("status", "connected")``,
``("malformed", total)`` or ``("shed", total)``. Pickle because it keeps every value exactly as
Celery decoded it (integers beyond 64 bits, NaN, and the types kombu's JSON
decoder builds: UUID, Decimal, dates, bytes) and is as fast as orjson here.
The server decodes frames with a restricted unpickler that finds only those
few classes, so a frame cannot name a callable (``os.system``, say) and run
it: such a frame is refused with a log line, and the frames around it go on. The child
stops when its stdin closes (the server stopping, or dying), flushing what it
holds first, and ignores SIGINT and SIGTERM sent to the process group; the
server restarts a child that exits on its own, with backoff.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import functools
import io
import json
import logging
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from .backoff import Backoff
from .receiver import Batch, CaptureLoop, EventQueueOptions, Receiver, ReceiverStatus
from .state import is_task_event

log = logging.getLogger("pushserver.receiver")

HEADER = struct.Struct(">I")
PIPE_BYTES = 1 << 20  # Linux pipes hold 64 KiB by default: room for bursts without blocking the child


def encode_frame(kind: str, payload: Any) -> bytes:
    """One message from the child, ready for the pipe."""
    body = pickle.dumps((kind, payload), protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


#: The only globals a frame may name: the classes kombu's JSON decoder builds
#: (``kombu.utils.json``). Containers, strings, numbers and bytes need none.
FRAME_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("uuid", "UUID"),
        ("decimal", "Decimal"),
        ("datetime", "datetime"),
        ("datetime", "date"),
        ("datetime", "time"),
        ("datetime", "timedelta"),
        ("datetime", "timezone"),
    }
)
_FRAME_CLASSES = {"uuid": uuid, "decimal": decimal, "datetime": datetime}


class FrameRefused(pickle.UnpicklingError):
    """A frame that names a global outside FRAME_GLOBALS (or is not a pickle at all)."""


class _FrameUnpickler(pickle.Unpickler):
    """An unpickler that can build event values and nothing else: ``find_class`` is its only door to code."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in FRAME_GLOBALS:
            return getattr(_FRAME_CLASSES[module], name)
        raise FrameRefused(f"the frame names {module[:80]}.{name[:80]}, which events never hold")


def decode_frame(body: bytes) -> tuple[str, Any]:
    """The ``(kind, payload)`` of one frame body; raise FrameRefused for anything else."""
    try:
        message = _FrameUnpickler(io.BytesIO(body)).load()
    except FrameRefused:
        raise
    except Exception as exc:  # noqa: BLE001 - any way a pickle can be broken
        raise FrameRefused(f"the frame is not a valid pickle ({type(exc).__name__}: {str(exc)[:100]})") from None
    if not (isinstance(message, tuple) and len(message) == 2 and isinstance(message[0], str)):
        raise FrameRefused(f"the frame holds a {type(message).__name__}, not a (kind, payload) pair")
    return message


class FrameReader:
    """Reassembles the child's frames from pipe reads, which cut them anywhere; refuses frames that are not data."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.refused = 0

    def feed(self, data: bytes) -> list[tuple[str, Any]]:
        """Append what was read; return every message now complete, in order."""
        buffer = self._buffer
        buffer += data
        messages: list[tuple[str, Any]] = []
        pos, end = 0, len(buffer)
        with memoryview(buffer) as view:
            while end - pos >= HEADER.size:
                (size,) = HEADER.unpack_from(view, pos)
                if end - pos - HEADER.size < size:
                    break
                start = pos + HEADER.size
                try:
                    # bytes, not a view: an exception must not pin the buffer (BytesIO copies a view anyway).
                    messages.append(decode_frame(bytes(view[start : start + size])))
                except FrameRefused as exc:
                    # Only a broken or subverted child writes such a frame: say so, lose only it.
                    self.refused += 1
                    log.error("event receiver process: refused a frame of %d bytes: %s", size, str(exc))
                pos = start + size
        del buffer[:pos]
        return messages


# -- the server's side ---------------------------------------------------------


def _stdin(transport: asyncio.SubprocessTransport) -> asyncio.WriteTransport:
    """The child's stdin: always a pipe here (``stdin=subprocess.PIPE``)."""
    pipe = transport.get_pipe_transport(0)
    # Not an isinstance check: uvloop's pipe transports do not derive from asyncio.WriteTransport.
    if pipe is None:
        raise RuntimeError("the event receiver process has no stdin pipe")
    return cast(asyncio.WriteTransport, pipe)


class ReceiverProcess(Receiver):
    """Runs a ``CaptureLoop`` in a child process and feeds its batches to the loop (``--receiver process``)."""

    def __init__(
        self,
        broker_url: str,
        on_batch: Callable[[Batch], None],
        on_status: Callable[[ReceiverStatus, bool], None] | None = None,
        queue: EventQueueOptions | None = None,
        log_level: str = "INFO",
        backoff: Backoff | None = None,
        transport_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(on_batch, on_status)
        self.config = {
            "broker_url": broker_url,
            "log_level": log_level,
            "transport_options": transport_options or {},
            "queue": None if queue is None else {"name": queue.name, "ttl": queue.ttl, "expires": queue.expires},
        }
        self.backoff = backoff or Backoff()
        self.pid: int | None = None
        self._malformed_before = 0  # counted by children that have exited
        self._shed_before = 0
        self._transport: asyncio.SubprocessTransport | None = None
        self._stopping = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the child (and keep one running until ``stop``)."""
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise())

    async def stop(self, timeout: float = 5.0) -> None:
        """Close the child's stdin, take in what it flushes, and wait for it to exit (killed after ``timeout``)."""
        self._stopping.set()
        if self._transport is not None:
            _stdin(self._transport).close()
        if self._supervisor is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._supervisor), timeout)
        except asyncio.TimeoutError:
            log.warning("event receiver process %s did not stop in %.0fs; killing it", self.pid, timeout)
            if self._transport is not None:
                self._transport.kill()
            await self._supervisor

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        env = dict(os.environ)
        # The child must import this very copy of the package (a checkout, a
        # snapshot), whatever the working directory.
        package_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        while not self._stopping.is_set():
            exited: asyncio.Future[int | None] = loop.create_future()
            try:
                transport, _ = await loop.subprocess_exec(
                    functools.partial(_ChildPipe, self, exited),
                    sys.executable,
                    "-m",
                    __name__,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=None,
                    env=env,
                )
            except OSError as exc:
                exited.set_result(None)
                log.error("cannot start the event receiver process: %s", exc)
            else:
                self._transport = transport
                self.pid = transport.get_pid()
                # On stdin rather than argv: the broker URL and its options may hold a password.
                _stdin(transport).write(json.dumps(self.config).encode() + b"\n")
                if self._stopping.is_set():  # stop() came while we were starting it
                    _stdin(transport).close()
            code = await exited
            self._transport = None
            self._malformed_before = self.malformed
            self._shed_before = self.shed
            if self._stopping.is_set():
                break
            delay = self.backoff.next_delay()
            log.warning("event receiver process exited (%s); starting another in %.1fs", _describe_exit(code), delay)
            self._status_changed(ReceiverStatus.RECONNECTING)
            try:
                await asyncio.wait_for(self._stopping.wait(), delay)
            except asyncio.TimeoutError:
                pass
        self._status_changed(ReceiverStatus.STOPPED)

    def _on_messages(self, messages: list[tuple[str, Any]]) -> None:
        # Events of consecutive frames go to Ingest as one batch; a status
        # message keeps its place between them.
        batch: Batch = []
        for kind, payload in messages:
            if kind == "events" and isinstance(payload, list):
                batch.extend(e for e in payload if isinstance(e, dict))
                continue
            if batch:
                self.on_batch(batch)
                batch = []
            if kind == "status" and payload in _STATUS_VALUES:
                status = ReceiverStatus(payload)
                if status is ReceiverStatus.CONNECTED:
                    self.backoff.reset()
                if status is not ReceiverStatus.STOPPED:  # the server decides when it is stopped
                    self._status_changed(status)
            elif kind == "malformed" and isinstance(payload, int):
                self.malformed = self._malformed_before + payload
            elif kind == "shed" and isinstance(payload, int):
                self.shed = self._shed_before + payload
        if batch:
            self.on_batch(batch)


_STATUS_VALUES = frozenset(status.value for status in ReceiverStatus)


class _ChildPipe(asyncio.SubprocessProtocol):
    """The server's end of one child: frames in, and the exit code once every pipe is closed."""

    def __init__(self, owner: ReceiverProcess, exited: asyncio.Future[int | None]) -> None:
        self.owner = owner
        self.exited = exited
        self.reader = FrameReader()
        self.transport: asyncio.SubprocessTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd == 1:
            self.owner._on_messages(self.reader.feed(data))

    def connection_lost(self, exc: Exception | None) -> None:
        # Called once the child has exited and every frame it wrote was read.
        if not self.exited.done():
            self.exited.set_result(self.transport.get_returncode() if self.transport else None)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "could not start"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


# -- the child's side ----------------------------------------------------------


#: A queued message that is already bytes: what a direct write left over.
_RAW = "raw"


class PipeWriter:
    """Sends the child's events and status messages down the pipe: directly while it takes them, else from a thread.

    When nothing is queued, the capturing thread writes a batch's frame
    itself, without blocking: at a few thousand events a second most batches
    hold one event, and waking a second thread for each cost more CPU than
    decoding it (docs/benchmarks.md). What the pipe does not take at once
    (a busy server) is queued, and a writer thread pickles and writes
    whatever has gathered when the pipe has room, so a busy server makes
    writes larger rather than the child slower. Past ``max_pending`` queued
    events the capturing thread waits, and the backlog builds in the broker
    instead of in memory.
    """

    def __init__(self, fd: int, max_pending: int = 100_000) -> None:
        self.fd = fd
        os.set_blocking(fd, False)
        self.max_pending = max_pending
        self.on_broken: Callable[[], None] | None = None
        self._messages: list[tuple[str, Any]] = []
        self._pending = 0
        self._closed = False
        self._broken = False
        # A write is under way (a direct one, or the thread's of what it took): nobody else may write meanwhile.
        self._busy = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="pipe-writer", daemon=True)
        self._thread.start()

    def add_batch(self, batch: Batch) -> None:
        """Write, or queue, decoded events (on the capturing thread); one frame each."""
        with self._cond:
            while self._pending >= self.max_pending and not self._broken:
                self._cond.wait()
            if self._messages or self._busy or self._broken:
                self._messages.append(("events", batch))
                self._pending += len(batch)
                if len(self._messages) == 1:
                    self._cond.notify_all()
                return
            self._busy = True
        self._write_directly(encode_frame("events", batch))

    def send(self, kind: str, payload: Any) -> None:
        """Queue a control message, in order with the events around it."""
        with self._cond:
            self._messages.append((kind, payload))
            self._cond.notify_all()

    def close(self) -> None:
        """Write out everything queued, then close the pipe."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
        os.close(self.fd)

    def _write_directly(self, frame: bytes) -> None:
        try:
            written = os.write(self.fd, frame)
        except BlockingIOError:
            written = 0
        except OSError:  # the server is gone
            written = len(frame)
            self._mark_broken()
        with self._cond:
            self._busy = False
            if written < len(frame):
                self._messages.insert(0, (_RAW, frame[written:]))  # before anything queued meanwhile
            if self._messages or self._closed:  # else the thread sleeps on: waking it is what this saves
                self._cond.notify_all()

    def _mark_broken(self) -> None:
        self._broken = True
        if self.on_broken is not None:
            self.on_broken()

    def _run(self) -> None:
        while True:
            with self._cond:
                while (not self._messages or self._busy) and not self._closed:
                    self._cond.wait()
                while self._busy:  # closing: let a direct write finish first
                    self._cond.wait()
                if not self._messages:
                    return
                messages, self._messages, self._pending = self._messages, [], 0
                self._busy = True
                self._cond.notify_all()  # wakes a capturing thread held at max_pending
            try:
                if not self._broken:
                    self._write_out(messages)
            finally:
                with self._cond:
                    self._busy = False

    def _write_out(self, messages: list[tuple[str, Any]]) -> None:
        """Write queued messages out, waiting for room in the pipe as long as it takes."""
        data = b"".join(payload if kind == _RAW else encode_frame(kind, payload) for kind, payload in messages)
        try:
            view = memoryview(data)
            while view:
                try:
                    view = view[os.write(self.fd, view) :]
                except BlockingIOError:
                    select.select([], [self.fd], [])  # the server is behind: wait for room
        except OSError:  # the server is gone: nothing can take these events any more
            self._mark_broken()


def strip_non_task_events(batch: Batch) -> Batch:
    """What the server can use of a batch: task events whole, of a worker event its hostname and heartbeat
    interval (for pushserver_worker_online), of any other event only its type.

    The server merges task events and only counts the others by type; the
    rest of a worker heartbeat, or of a forged event with a megabyte task id
    (which no client could subscribe to), would cross the pipe for nothing.
    """
    return [event if is_task_event(event) else _worker_or_type(event) for event in batch]


_WORKER_EVENTS = frozenset({"worker-online", "worker-heartbeat", "worker-offline"})


def _worker_or_type(event: dict[str, Any]) -> dict[str, Any]:
    event_type = _short_type(event.get("type"))
    if event_type not in _WORKER_EVENTS:
        return {"type": event_type}
    kept: dict[str, Any] = {"type": event_type}
    hostname, freq = event.get("hostname"), event.get("freq")
    if isinstance(hostname, str):
        kept["hostname"] = hostname[:255]
    if isinstance(freq, (int, float)) and not isinstance(freq, bool):
        kept["freq"] = freq
    return kept


def _short_type(event_type: Any) -> str | None:
    return event_type if isinstance(event_type, str) and len(event_type) <= 64 else None


def child_main() -> int:
    """The child process: read the config line, capture until stdin closes, flush, exit."""
    # Ctrl-C, and a SIGTERM sent to the whole process group (systemd, a
    # container's init), reach us too: the server decides when we stop, by
    # closing our stdin once it no longer wants events.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    frames_fd = os.dup(1)
    os.dup2(2, 1)  # a stray print must not corrupt the frames
    try:
        import fcntl

        fcntl.fcntl(frames_fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except (ImportError, AttributeError, OSError):
        pass  # not Linux, or over /proc/sys/fs/pipe-max-size: the default size works, in smaller steps
    line = sys.stdin.buffer.readline()
    if not line:
        return 0  # the server went away before we started
    config = json.loads(line)

    from . import event_json
    from .celeryapp import make_celery
    from .logs import configure_logging

    configure_logging(config["log_level"])
    event_json.install()
    queue = EventQueueOptions(**config["queue"]) if config["queue"] else None
    writer = PipeWriter(frames_fd)
    app = make_celery(config["broker_url"], broker_transport_options=config.get("transport_options"))
    capture = CaptureLoop(
        app,
        lambda batch: writer.add_batch(strip_non_task_events(batch)),
        lambda status: writer.send("status", status.value),
        queue=queue,
        on_malformed=lambda total: writer.send("malformed", total),
        on_shed=lambda total: writer.send("shed", total),
    )
    writer.on_broken = capture.stop

    def stop_at_eof() -> None:
        # os.read, not sys.stdin: a daemon thread blocked inside a buffered
        # reader holds its lock, and the interpreter aborts at exit on it.
        while os.read(0, 4096):
            pass
        capture.stop()

    threading.Thread(target=stop_at_eof, name="stdin-watch", daemon=True).start()
    capture.run()
    writer.close()
    return 0


if __name__ == "__main__":
    sys.exit(child_main())
