"""python-socketio / python-engineio servers that keep less per idle WebSocket connection.

An idle, subscribed browser costs ~34 KB of server memory with stock
python-engineio 4.15 on aiohttp (docs/benchmarks.md, "Idle connections");
about half of that is engineio's own per-connection machinery. The same
protocol, with less kept per connection:

- **Send queue**: each connection's ``asyncio.Queue`` holds four empty
  ``collections.deque`` (its items, getters, putters and its ``join`` event's
  waiters), 760 bytes each even when empty. ``SendQueue`` is the part of that
  interface engineio and pushserver use (unbounded FIFO, ``task_done``/
  ``join``), on a list, with the rest made only when used.
- **Pings**: engineio starts an asyncio task per ping cycle that sleeps the
  25 s ping interval; here a timer handle puts the PING on the send queue.
- **Waiting with a timeout**: the reader created a task for every incoming
  message and wrapped it in ``asyncio.wait_for`` (on Python 3.11, a second
  task for the writer's ``queue.get`` too); here the reader awaits aiohttp's
  ``receive(timeout)`` and the writer the queue's own ``get(timeout)``.
- **WebSocket compression is off** (``websocket_compression=False``): a
  browser offers permessage-deflate and aiohttp accepts it, after which every
  connection that sent or received a message holds zlib streams: ~140 KB per
  idle connection instead of ~34 KB (measured with clients that offer it).
  Socket.IO's small JSON packets gain little from it.
- **environ**: the WSGI-style dict engineio builds from the request headers
  stays referenced for the connection's lifetime; ``trim_environ`` reduces it
  to what pushserver reads once the Socket.IO connect handler has run.

And one fix: engineio's aiohttp driver sets ``REMOTE_ADDR`` to "127.0.0.1"
for every request; here it is the peer's address (``request.remote``), which
``--max-connections-per-ip`` counts by when there is no trusted proxy.

The lean socket reimplements three methods of ``engineio.async_socket.AsyncSocket``
(``poll``, ``schedule_ping``, and the WebSocket loop of ``_websocket_handler``)
with their stock behaviour; it is used only with the aiohttp driver and an
engineio whose internals it was checked against (``LEAN_ENGINEIO``), else
the server is stock python-engineio. The polling transport and the
polling-to-WebSocket upgrade keep engineio's own code.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import time
from typing import Any

import engineio
import socketio
from engineio import async_socket, exceptions, packet
from engineio.async_drivers import aiohttp as eio_aiohttp

#: python-engineio versions the lean socket is used with, [from, to). It was
#: written against 4.15.1's internals (AsyncSocket.poll, schedule_ping,
#: _send_ping, _websocket_handler; AsyncServer._trigger_event; the aiohttp
#: driver's WebSocket and translate_request); older versions get stock
#: engineio, later 4.x are assumed alike, and tests/unit/test_eioserver.py
#: runs real sessions through every path overridden here.
VETTED_ENGINEIO = ((4, 15), (5, 0))


def _version(dist: str) -> tuple[int, ...]:
    try:
        parts = importlib.metadata.version(dist).split(".")[:2]
        return tuple(int("".join(c for c in p if c.isdigit()) or 0) for p in parts)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return (0,)


LEAN_ENGINEIO = VETTED_ENGINEIO[0] <= _version("python-engineio") < VETTED_ENGINEIO[1] and all(
    hasattr(async_socket.AsyncSocket, name) for name in ("poll", "schedule_ping", "_websocket_handler"))

#: The environ keys pushserver reads (Hub._on_connect); the rest is dropped after connect.
KEPT_ENVIRON = ("REMOTE_ADDR", "HTTP_X_FORWARDED_FOR")


class SendQueue:
    """An unbounded FIFO with the part of ``asyncio.Queue``'s interface engineio and pushserver use.

    ``put``/``put_nowait``, ``get``/``get_nowait``, ``qsize``/``empty``,
    ``task_done``/``join``; ``get`` also takes a ``timeout`` (raising
    ``asyncio.TimeoutError``), so a waiter needs no ``wait_for`` task. Idle,
    it is one small list: getters and the ``join`` event are made on first use.
    """

    __slots__ = ("_items", "_getters", "_unfinished", "_finished")

    maxsize = 0

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._getters: list[asyncio.Future[None]] | None = None
        self._unfinished = 0
        self._finished: asyncio.Event | None = None

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return False

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        self._unfinished += 1
        if self._finished is not None:
            self._finished.clear()
        self._wakeup_next()

    async def put(self, item: Any) -> None:
        self.put_nowait(item)

    def get_nowait(self) -> Any:
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.pop(0)

    async def get(self, timeout: float | None = None) -> Any:
        """The next item, waiting for one; ``asyncio.TimeoutError`` after ``timeout`` seconds without."""
        while not self._items:
            loop = asyncio.get_running_loop()
            getter = loop.create_future()
            if self._getters is None:
                self._getters = []
            self._getters.append(getter)
            timer = loop.call_later(timeout, _expire, getter) if timeout is not None else None
            try:
                await getter
            except BaseException:
                # As asyncio.Queue.get: a getter woken and then cancelled
                # passes the wake-up on to the next one.
                getter.cancel()
                try:
                    self._getters.remove(getter)
                except ValueError:
                    pass
                if self._items and not getter.cancelled():
                    self._wakeup_next()
                raise
            finally:
                if timer is not None:
                    timer.cancel()
        return self._items.pop(0)

    def task_done(self) -> None:
        if self._unfinished <= 0:
            raise ValueError("task_done() called too many times")
        self._unfinished -= 1
        if self._unfinished == 0 and self._finished is not None:
            self._finished.set()

    async def join(self) -> None:
        if self._unfinished > 0:
            if self._finished is None:
                self._finished = asyncio.Event()
            await self._finished.wait()

    def _wakeup_next(self) -> None:
        getters = self._getters
        while getters:
            getter = getters.pop(0)
            if not getter.done():
                getter.set_result(None)
                break


def _expire(getter: asyncio.Future[None]) -> None:
    if not getter.done():
        getter.set_exception(asyncio.TimeoutError())


class LeanSocket(async_socket.AsyncSocket):
    """engineio's AsyncSocket with no task per ping and none per received message (see the module doc)."""

    # Set on the instance once a ping is scheduled; a class attribute because
    # the server turns stock AsyncSocket instances into LeanSockets (no __init__).
    _ping_timer: asyncio.TimerHandle | None = None
    # Attributes of the stock AsyncSocket (untyped), as this class uses them.
    last_ping: float | None
    connected: bool

    async def poll(self) -> list[packet.Packet]:
        """Wait for packets to send to the client (stock behaviour, without a wait_for task)."""
        try:
            first = await self.queue.get(timeout=self.server.ping_interval + self.server.ping_timeout)
            self.queue.task_done()
        except (asyncio.TimeoutError, asyncio.CancelledError):
            raise exceptions.QueueEmpty() from None
        if first is None:
            return []
        packets = [first]
        while True:
            try:
                pkt = self.queue.get_nowait()
                self.queue.task_done()
                if pkt is None:
                    self.queue.put_nowait(None)
                    break
                packets.append(pkt)
            except asyncio.QueueEmpty:
                break
        return packets

    def schedule_ping(self) -> None:
        # As engineio: only schedule a new ping if the previous ping wait cycle completed.
        if self.last_ping:
            self.last_ping = None
            self._ping_timer = asyncio.get_running_loop().call_later(self.server.ping_interval, self._ping)

    def _ping(self) -> None:
        # engineio's _send_ping after its sleep: send() checks the ping
        # timeout (just reset) and puts the packet on the unbounded queue.
        self._ping_timer = None
        if not self.closing and not self.closed:
            self.last_ping = time.time()
            self.queue.put_nowait(packet.Packet(packet.PING))

    async def close(self, wait: bool = True, abort: bool = False, reason: Any = None) -> None:
        if self._ping_timer is not None:
            self._ping_timer.cancel()
            self._ping_timer = None
        await super().close(wait=wait, abort=abort, reason=reason)

    async def _websocket_handler(self, ws: Any) -> None:
        """engineio's WebSocket transport loop, the reader awaiting the socket itself with a timeout."""
        if self.connected:
            # An upgrade from long-polling: engineio's own code (it has a probe handshake).
            return await super()._websocket_handler(ws)
        self.connected = True
        self.upgraded = True
        writer_task = asyncio.ensure_future(self._writer(ws))
        self.server.logger.info('%s: Upgrade to websocket successful', self.sid)
        timeout = self.server.ping_interval + self.server.ping_timeout
        max_size = self.server.max_http_buffer_size
        while True:
            try:
                data = await ws.wait(timeout)
                if data and len(data) > max_size:
                    raise ValueError('packet is too large')
            except (asyncio.CancelledError, Exception):
                # Timed out (no pong), closed, too large, cancelled: as engineio, end the connection.
                break
            if data is None:
                break  # connection closed by the client
            try:
                await self.receive(packet.Packet(encoded_packet=data))
            except exceptions.UnknownPacketError:
                pass
            except exceptions.SocketIsClosedError:
                self.server.logger.info('Receive error -- socket is closed')
                break
            except Exception:
                # As engineio for an error in receive(), and here also for a
                # packet that does not parse: engineio parses outside its error
                # handling, which ends the handler and leaves the socket open
                # until the ping timeout. Logged (logs.py counts these), read on.
                self.server.logger.exception('Unknown receive error')
        await self.queue.put(None)  # unlock the writer task so it can exit
        await writer_task
        await self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_CLOSE)

    async def _writer(self, ws: Any) -> None:
        while True:
            try:
                packets = await self.poll()
            except exceptions.QueueEmpty:
                break
            if not packets:
                break  # empty packet list returned -> connection closed
            try:
                for pkt in packets:
                    await ws.send(pkt.encode())
            except Exception:
                break
        await ws.close()


class AiohttpWebSocket(eio_aiohttp.WebSocket):
    """engineio's aiohttp WebSocket wrapper: compression as configured, a receive timeout, no environ kept."""

    async def __call__(self, environ: dict[str, Any]) -> Any:
        from aiohttp.web import WebSocketResponse

        self._sock = WebSocketResponse(max_msg_size=self.server.max_http_buffer_size,
                                       compress=self.server.websocket_compression)
        await self._sock.prepare(environ['aiohttp.request'])
        await self.handler(self)
        return self._sock

    async def wait(self, timeout: float | None = None) -> Any:
        msg = await self._sock.receive(timeout)
        if not isinstance(msg.data, (bytes, str)):
            raise OSError()
        return msg.data


def translate_request(request: Any) -> dict[str, Any]:
    """engineio's aiohttp environ, with the peer's address as REMOTE_ADDR (engineio always says 127.0.0.1)."""
    environ = eio_aiohttp.translate_request(request)
    remote = request.remote
    if remote:
        environ['REMOTE_ADDR'] = remote
    return environ


def trim_environ(environ: dict[str, Any]) -> None:
    """Reduce a connection's environ, in place, to the keys pushserver reads (KEPT_ENVIRON).

    Call once the connect handler has read it: engineio has used it by then
    (the handshake, the WebSocket upgrade), and it stays referenced, with
    every request header in it, for as long as the connection is open.
    """
    kept = {key: environ[key] for key in KEPT_ENVIRON if key in environ}
    environ.clear()
    environ.update(kept)


class EngineIOServer(engineio.AsyncServer):
    """engineio's AsyncServer; on aiohttp, with lean sockets (LEAN_ENGINEIO) and the peer's REMOTE_ADDR."""

    _async: dict[str, Any]  # engineio's driver table (untyped)

    def __init__(self, *args: Any, websocket_compression: bool = False, lean: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.websocket_compression = websocket_compression
        aiohttp_mode = self.async_mode == 'aiohttp'
        self.lean = lean and aiohttp_mode and LEAN_ENGINEIO
        if aiohttp_mode:
            # A per-server copy of the driver table (engineio's is module-wide).
            self._async = dict(self._async, translate_request=translate_request)
            if self.lean:
                self._async['websocket'] = AiohttpWebSocket

    def create_queue(self, *args: Any, **kwargs: Any) -> Any:
        if self.lean and not args and not kwargs:
            return SendQueue()
        return super().create_queue(*args, **kwargs)

    async def _trigger_event(self, event: str, *args: Any, **kwargs: Any) -> Any:
        # engineio creates its AsyncSocket itself (_handle_connect) and fires
        # "connect" before it schedules the first ping or starts the transport:
        # the moment to make it a LeanSocket.
        if event == 'connect' and self.lean:
            sock = self.sockets.get(args[0])
            if type(sock) is async_socket.AsyncSocket:
                sock.__class__ = LeanSocket
        return await super()._trigger_event(event, *args, **kwargs)


class SocketIOServer(socketio.AsyncServer):
    """python-socketio's AsyncServer on EngineIOServer; extra keyword arguments go to it."""

    def _engineio_server_class(self) -> type[engineio.AsyncServer]:
        return EngineIOServer
