"""A pub/sub socket emptied by a thread of its own: Redis never waits on decoding, so never cuts the receiver off.

Redis disconnects a pub/sub subscriber whose output buffer passes 32 MB
(``client-output-buffer-limit pubsub 32mb 8mb 60``), and every event it held
is lost. Celery's receiver reads the socket only as fast as it decodes, so
a burst faster than decoding grows that buffer until Redis cuts it off.

Here a drain thread does nothing but move bytes from the socket into a
bounded local backlog (``DrainedSocket``), and redis-py's parser, with
kombu's and Celery's decoding behind it, reads from the backlog instead of
the socket. Taking bytes off a socket costs about a microsecond per
kilobyte, so the backlog grows here rather than in Redis, up to ``limit``
bytes. Past ``shed_above`` bytes the receiver sheds ``task-progress``
events, counted (``CaptureLoop.shed``): state transitions are never shed.
At ``limit`` the drain thread pauses and the backlog builds in Redis again,
which is the one case left where Redis may cut the receiver off (counted as
a reconnect).

Hooks: kombu's Redis channel takes its pub/sub connection from its
``async_pool``, a redis-py ``ConnectionPool`` that makes connections of its
``connection_class``; a subclass of that class overrides redis-py's
``Connection._connect`` (the method that opens the socket) to wrap the
socket it returns. The wrapper offers what redis-py's parsers and kombu's
poller use of a socket: ``recv``/``recv_into`` with ``settimeout``
semantics, ``fileno`` (a pipe that is readable while the backlog is not
empty), and ``sendall``/``shutdown``/``close``. Those internals are the
releases in ``VETTED``; with others installed, or on TLS (one thread may not
read an ``SSLSocket`` while another writes it), the socket is read directly
as before, with a warning.
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import socket
import ssl
import threading
from typing import Any

from .dependencies import installed, parse_version

log = logging.getLogger("pushserver.receiver")

#: distribution -> [lowest vetted, first unvetted) release of the internals this module relies on.
VETTED: dict[str, tuple[str, str]] = {
    "kombu": ("5.6", "5.7"),
    "redis": ("6.4", "6.5"),
}

LIMIT = 512 << 20  # bytes of backlog before the drain thread pauses
READ_SIZE = 1 << 20  # bytes asked of the socket per read: a backlog in the kernel comes off in few reads


def vetted() -> bool:
    """Whether the installed kombu and redis-py are releases whose internals this module was checked against."""
    for dist, (low, high) in VETTED.items():
        version = installed(dist)
        if version is None or not parse_version(low) <= parse_version(version) < parse_version(high):
            return False
    return True


class DrainedSocket:
    """A connected socket read by a drain thread into a bounded FIFO of bytes; reads come from the FIFO."""

    def __init__(self, sock: socket.socket, limit: int = LIMIT) -> None:
        self._sock = sock
        self.limit = limit
        self.peak = 0  # most bytes ever held
        self.pauses = 0  # times the backlog reached ``limit``
        self._chunks: collections.deque[bytes] = collections.deque()
        self._offset = 0  # bytes of the first chunk already read
        self._size = 0  # unread bytes held
        self._eof = False
        self._closed = False
        self._timeout: float | None = sock.gettimeout()
        self._cond = threading.Condition()
        # Readable while there is something to read (bytes or the end): kombu's poller waits on it.
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        os.set_blocking(self._wfd, False)
        self._signalled = False
        self._thread = threading.Thread(target=self._drain, name="redis-drain", daemon=True)
        self._thread.start()

    @property
    def backlog(self) -> int:
        """Bytes read off the socket and not yet parsed."""
        return self._size

    # -- the drain thread ---------------------------------------------------

    def _drain(self) -> None:
        sock, cond = self._sock, self._cond
        # recv_into one buffer, then copy out what came: recv(READ_SIZE) allocates READ_SIZE bytes on every
        # call, ~12 µs for a single event's few hundred bytes (docs/benchmarks.md).
        buffer = bytearray(READ_SIZE)
        view = memoryview(buffer)
        while True:
            with cond:
                if self._size >= self.limit and not self._closed:
                    self.pauses += 1
                    log.warning(
                        "event receiver: %d MB read from Redis and not yet decoded; pausing the drain "
                        "(Redis holds what follows, and cuts the receiver off at its pub/sub limit)",
                        self._size >> 20,
                    )
                    while self._size >= self.limit and not self._closed:
                        cond.wait()
                if self._closed:
                    return
            try:
                data = bytes(view[: sock.recv_into(buffer)])
            except TimeoutError:  # socket.timeout
                continue
            except OSError:
                data = b""  # the connection is gone: the reader sees the end, redis-py reports it
            with cond:
                if self._closed:
                    return
                if data:
                    self._chunks.append(data)
                    self._size += len(data)
                    if self._size > self.peak:
                        self.peak = self._size
                else:
                    self._eof = True
                if not self._signalled:
                    self._signalled = True
                    os.write(self._wfd, b"\0")
                cond.notify_all()
            if not data:
                return

    # -- the parser's side --------------------------------------------------

    def _wait_readable(self) -> None:
        """Wait (as the socket's timeout says) until there are bytes or the end; raise as a socket would."""
        if self._size or self._eof or self._closed:
            return
        timeout = self._timeout
        if timeout == 0:
            raise BlockingIOError(errno.EWOULDBLOCK, "no bytes drained yet")
        if not self._cond.wait_for(lambda: self._size or self._eof or self._closed, timeout):
            raise TimeoutError("timed out")  # socket.timeout, as redis-py catches it

    def _take(self, out: memoryview) -> int:
        """Copy up to len(out) bytes from the FIFO into ``out``; return how many."""
        n = 0
        want = len(out)
        chunks = self._chunks
        while n < want and chunks:
            head = chunks[0]
            k = min(want - n, len(head) - self._offset)
            out[n : n + k] = head[self._offset : self._offset + k]
            n += k
            self._offset += k
            if self._offset == len(head):
                chunks.popleft()
                self._offset = 0
        was_full = self._size >= self.limit
        self._size -= n
        if not self._size and not self._eof and self._signalled:
            self._signalled = False
            try:
                while os.read(self._rfd, 4096):
                    pass
            except OSError:  # emptied (EAGAIN), or closed under a last read
                pass
        if was_full and self._size < self.limit:
            self._cond.notify_all()
        return n

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        """Fill ``buffer`` from the backlog (0 at the end of the connection)."""
        with self._cond:
            self._wait_readable()
            view = memoryview(buffer).cast("B")
            return self._take(view[:nbytes] if nbytes else view)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        """Up to ``bufsize`` bytes from the backlog (b"" at the end of the connection)."""
        out = bytearray(bufsize)
        n = self.recv_into(out)
        return bytes(out[:n])

    def settimeout(self, timeout: float | None) -> None:
        """How long a read waits for the drain thread; the socket itself keeps its own for writes."""
        self._timeout = timeout

    def gettimeout(self) -> float | None:
        return self._timeout

    def fileno(self) -> int:
        """A pipe readable while the backlog holds bytes (or the end): what kombu's poller waits on."""
        return self._rfd

    def sendall(self, data: Any, flags: int = 0) -> None:
        self._sock.sendall(data, flags)

    def shutdown(self, how: int) -> None:
        self._sock.shutdown(how)

    def close(self) -> None:
        """Stop the drain thread and close the socket and the pipe."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the drain thread's recv
        except OSError:
            pass
        if self._thread is not threading.current_thread():
            self._thread.join(2.0)
        self._sock.close()
        with self._cond:
            os.close(self._rfd)
            os.close(self._wfd)
            self._rfd = self._wfd = -1

    def __getattr__(self, name: str) -> Any:
        # Anything else (setsockopt, getpeername, family, ...) is the socket's.
        return getattr(self._sock, name)


class Drain:
    """Wraps the sockets of the redis-py connections it makes, and tells the receiver how far behind it is."""

    def __init__(self, limit: int = LIMIT, shed_above: int | None = None) -> None:
        self.limit = limit
        self.shed_above = limit // 2 if shed_above is None else shed_above
        self.sockets: list[DrainedSocket] = []
        self._classes: dict[type, type] = {}
        self._warned = False

    def backlog(self) -> int:
        """Bytes drained and not yet parsed, over every live socket."""
        return sum(s.backlog for s in self.sockets)

    def peak(self) -> int:
        return max((s.peak for s in self.sockets), default=0)

    def behind(self) -> bool:
        """Whether the receiver is far enough behind to shed progress events."""
        return self.backlog() > self.shed_above

    def wrap(self, sock: Any) -> Any:
        """A DrainedSocket for a plain socket; a TLS socket as it is."""
        if isinstance(sock, ssl.SSLSocket) or not isinstance(sock, socket.socket):
            self._warn("the connection is TLS")
            return sock
        drained = DrainedSocket(sock, self.limit)
        self.sockets = [s for s in self.sockets if s._rfd != -1] + [drained]
        return drained

    def install(self, channel: Any) -> bool:
        """Make the pub/sub connections of a kombu Redis channel drained ones (before it first connects)."""
        try:
            from kombu.transport.redis import Channel as RedisChannel
        except ImportError:  # redis-py is not installed: not a Redis broker either
            return False
        if not isinstance(channel, RedisChannel):
            return False  # AMQP and others: the broker queues what we have not read yet
        if not vetted():
            self._warn("the installed kombu or redis-py is not a release it was checked against")
            return False
        # The channel pinged Redis on creation, through the same pool its
        # pub/sub client will take a connection from: the pool makes drained
        # connections from now on, and forgets the plain one it holds.
        pool = channel.async_pool
        base = pool.connection_class
        cls = self._classes.get(base)
        if cls is None:
            cls = self._classes[base] = _drained_class(base, self)
        pool.connection_class = cls
        pool.disconnect()
        pool.reset()
        return True

    def _warn(self, why: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning(
                "event receiver: reading Redis without a drain thread (%s): a burst faster than decoding "
                "may get the receiver cut off at Redis's pub/sub output-buffer limit",
                why,
            )


def _drained_class(base: type, drain: Drain) -> type:
    """A subclass of the redis-py connection class ``base`` whose socket is drained by ``drain``."""

    def _connect(self: Any) -> Any:
        return drain.wrap(base._connect(self))  # type: ignore[attr-defined]  # redis-py's AbstractConnection

    return type(f"Drained{base.__name__}", (base,), {"_connect": _connect, "__module__": __name__})
