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
from socketio import packet as sio_packet

from .inbound import (
    BINARY_ACK,
    BINARY_EVENT,
    CLIENT_EVENTS,
    CLIENT_PACKET_TYPES,
    EVENT,
    Inbound,
    PacketHeader,
    peek_packet,
)
from .protocol import ERROR_EVENT

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

#: Seconds a closing WebSocket waits for the client's close frame (aiohttp's default is 10), reading and
#: discarding whatever else arrives: a dropped flooder's connection is gone after this.
CLOSE_TIMEOUT = 2.0

#: Messages one WebSocket reader handles before it lets the event loop run other connections.
YIELD_EVERY = 8

#: The environ keys pushserver reads (Hub._on_connect); the rest is dropped after connect.
KEPT_ENVIRON = ("REMOTE_ADDR", "HTTP_X_FORWARDED_FOR")


class SendQueue:
    """An unbounded FIFO with the part of ``asyncio.Queue``'s interface engineio and pushserver use.

    ``put``/``put_nowait``, ``get``/``get_nowait``, ``qsize``/``empty``,
    ``task_done``/``join``; ``get`` also takes a ``timeout`` (raising
    ``asyncio.TimeoutError``), so a waiter needs no ``wait_for`` task. Idle,
    it is one small list: getters and the ``join`` event are made on first use.
    """

    __slots__ = ("_items", "_getters", "_unfinished", "_finished", "nbytes")

    maxsize = 0

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._getters: list[asyncio.Future[None]] | None = None
        self._unfinished = 0
        self._finished: asyncio.Event | None = None
        self.nbytes = 0  # the payload bytes of the packets queued (what a client that stops reading costs)

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return False

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        self.nbytes += _payload_size(item)
        self._unfinished += 1
        if self._finished is not None:
            self._finished.clear()
        self._wakeup_next()

    async def put(self, item: Any) -> None:
        self.put_nowait(item)

    def get_nowait(self) -> Any:
        if not self._items:
            raise asyncio.QueueEmpty
        item = self._items.pop(0)
        self.nbytes -= _payload_size(item)
        return item

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
        item = self._items.pop(0)
        self.nbytes -= _payload_size(item)
        return item

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


def _payload_size(item: Any) -> int:
    """The size of a queued Engine.IO packet's payload (0 for the end-of-queue None)."""
    data = getattr(item, "data", None)
    return len(data) if isinstance(data, (str, bytes)) else 0


def _expire(getter: asyncio.Future[None]) -> None:
    if not getter.done():
        getter.set_exception(asyncio.TimeoutError())


class LeanSocket(async_socket.AsyncSocket):
    """engineio's AsyncSocket with no task per ping and none per received message (see the module doc)."""

    # Set on the instance once a ping is scheduled; a class attribute because
    # the server turns stock AsyncSocket instances into LeanSockets (no __init__).
    _ping_timer: asyncio.TimerHandle | None = None

    async def poll(self) -> list[packet.Packet]:
        """Wait for packets to send to the client (stock behaviour, without a wait_for task)."""
        try:
            first = await self.queue.get(timeout=self.server.ping_interval + self.server.ping_timeout)
            self.queue.task_done()
        except (asyncio.TimeoutError, asyncio.CancelledError):
            raise exceptions.QueueEmpty()
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
        received = 0
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
            received += 1
            if received % YIELD_EVERY == 0:
                # aiohttp hands over buffered frames without suspending: let other
                # connections run between a flooding client's messages.
                await asyncio.sleep(0)
            try:
                await self.receive(packet.Packet(encoded_packet=data))
                if self.closed:
                    break  # dropped while handling it (a flood): read no more
            except exceptions.UnknownPacketError:
                pass
            except exceptions.SocketIsClosedError:
                self.server.logger.info('Receive error -- socket is closed')
                break
            except Exception:
                # As engineio for an error in receive(), and here also for a
                # packet that does not parse: engineio parses outside its error
                # handling, which ends the handler and leaves the socket open
                # until the ping timeout. Logged (socketlog.py counts these), read on.
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
                                       compress=self.server.websocket_compression, timeout=CLOSE_TIMEOUT)
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
    """python-socketio's AsyncServer on EngineIOServer, which lets clients reach only the client events.

    Checked against python-socketio 5.18.1 (tests/unit/test_eioserver.py runs
    real sessions through each override). python-socketio
    dispatches every EVENT packet by its name through ``_trigger_event``, the
    same path its lifecycle handlers (``connect``, ``disconnect``) are called
    by: a client sending an event named ``disconnect`` would run the server's
    disconnect cleanup with arguments of its choosing while its socket stays
    open. Client events enter through ``_handle_event`` only (lifecycle events
    come from ``_handle_connect``/``_handle_disconnect``), so the override of
    ``_handle_event`` is where client events are told apart: only
    ``client_events`` are dispatched, anything else is answered ``bad_request``.
    The overrides of ``_handle_eio_connect``/``_handle_eio_disconnect`` and
    ``_handle_eio_message`` apply the ``Inbound`` limits (inbound.py) to every
    Engine.IO session and Socket.IO packet, before python-socketio decodes or
    buffers anything. Extra keyword arguments go to EngineIOServer.
    """

    def __init__(self, *args: Any, inbound: Inbound | None = None, client_events: frozenset[str] = CLIENT_EVENTS,
                 max_unread: int = 0, max_unread_bytes: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.inbound = inbound
        self.client_events = client_events
        # Packets, and payload bytes, queued unread after which a client that sends more is dropped
        # (0: no limit); the bytes are known with the lean send queue only.
        self.max_unread = max_unread
        self.max_unread_bytes = max_unread_bytes
        self._frame_size = 0  # the size of the packet being dispatched (dispatch is sequential)

    def _engineio_server_class(self) -> type[engineio.AsyncServer]:
        return EngineIOServer

    async def _handle_eio_connect(self, eio_sid: str, environ: dict[str, Any]) -> Any:
        if self.inbound is not None:
            refused = self.inbound.open(eio_sid, environ)
            if refused is not None:
                return refused  # engineio answers the handshake 401 with this message
        return await super()._handle_eio_connect(eio_sid, environ)

    async def _handle_eio_disconnect(self, eio_sid: str, reason: Any) -> None:
        try:
            await super()._handle_eio_disconnect(eio_sid, reason)
        finally:
            if self.inbound is not None:
                self.inbound.close(eio_sid)

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        inbound = self.inbound
        if inbound is None:
            return await super()._handle_eio_message(eio_sid, data)
        if not inbound.is_open(eio_sid):
            return  # the rest of what a dropped client had sent
        text = data if isinstance(data, str) else None
        header = peek_packet(text) if text is not None else None
        if not inbound.take(eio_sid):
            inbound.on_refused("rate")
            if inbound.strike(eio_sid):
                inbound.on_refused("flood")
                await self.drop_session(eio_sid, "too_many", "disconnected: more than"
                                        f" {inbound.flood_strikes} messages over the rate limit"
                                        f" ({inbound.rate:g} a second) within {inbound.flood_window:g} s")
            elif header is not None and header.kind == EVENT and header.ack_id is not None:
                await self._refuse(eio_sid, header, "too_many",
                                   f"rate limit: at most {inbound.rate:g} messages a second")
            return
        if self.max_unread or self.max_unread_bytes:
            sock = self.eio.sockets.get(eio_sid)
            queue = sock.queue if sock is not None else None
            if queue is not None and (self.max_unread and queue.qsize() >= self.max_unread or self.max_unread_bytes
                                      and getattr(queue, "nbytes", 0) >= self.max_unread_bytes):
                inbound.on_refused("unread")
                await self.drop_session(eio_sid, "slow_consumer", "disconnected: more than"
                                        f" {self.max_unread} messages or {self.max_unread_bytes} bytes were"
                                        " waiting to be read")
                return
        if header is None or header.kind in (BINARY_EVENT, BINARY_ACK):
            # Binary frames are attachments; binary packets announce them. Neither is
            # buffered: python-socketio would keep every frame until the count is met.
            inbound.on_refused("binary")
            if header is not None and header.kind == BINARY_EVENT and header.ack_id is not None:
                await self._refuse(eio_sid, header, "bad_request",
                                   "binary data is not accepted: this protocol is JSON text only")
            return
        if header.kind not in CLIENT_PACKET_TYPES:
            # CONNECT_ERROR or no Socket.IO type at all: python-socketio would raise (a
            # traceback per packet); nothing to answer.
            inbound.on_refused("malformed")
            return
        self._frame_size = len(text or "")
        await super()._handle_eio_message(eio_sid, data)

    async def _handle_event(self, eio_sid: str, namespace: str | None, id: int | None, data: Any) -> None:
        namespace = namespace or "/"
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
        if not self.manager.is_connected(sid, namespace):
            return  # as python-socketio: an event before connect, or to another namespace
        name = data[0] if isinstance(data, list) and data else None
        header = PacketHeader(EVENT, namespace, id)
        if not isinstance(name, str) or name not in self.client_events:
            if self.inbound is not None:
                self.inbound.on_refused("event_name")
            if id is not None:
                await self._refuse(eio_sid, header, "bad_request",
                                   f"unknown event: clients may send only {', '.join(sorted(self.client_events))}")
            return
        cost = 0
        if self.inbound is not None:
            reserved = self.inbound.reserve(eio_sid, self._frame_size)
            if reserved is None:
                self.inbound.on_refused("in_flight")
                if id is not None:
                    await self._refuse(eio_sid, header, "too_many",
                                       f"more than {self.inbound.max_in_flight_bytes} bytes of this"
                                       " connection's messages are being handled: wait for their acks")
                return
            cost = reserved
        if self.async_handlers:
            task = self.start_background_task(self._run_client_event, sid, eio_sid, data, namespace, id, cost)
            _handler_tasks.add(task)
            task.add_done_callback(_handler_tasks.discard)
        else:
            await self._run_client_event(sid, eio_sid, data, namespace, id, cost)

    async def _run_client_event(self, sid: str, eio_sid: str, data: list[Any], namespace: str,
                                id: int | None, cost: int) -> None:
        try:
            await self._handle_event_internal(self, sid, eio_sid, data, namespace, id)
        finally:
            if self.inbound is not None and cost:
                self.inbound.release(eio_sid, cost)

    async def _send_packet(self, eio_sid: str, pkt: Any) -> None:
        sock = self.eio.sockets.get(eio_sid)
        if sock is None or sock.closed:
            # A dropped client's handlers may still be finishing: their acks go nowhere, quietly
            # (engineio would log a warning for each, which a flooder could use to fill the log).
            return
        await super()._send_packet(eio_sid, pkt)

    async def _refuse(self, eio_sid: str, header: PacketHeader, code: str, message: str) -> None:
        """Answer an ack-asking packet with an error ack, as the protocol's handlers do."""
        await self._send_packet(eio_sid, self.packet_class(
            sio_packet.ACK, namespace=header.namespace, id=header.ack_id,
            data=[{"ok": False, "error": {"code": code, "message": message}}]))

    async def drop_session(self, eio_sid: str, code: str, message: str) -> None:
        """Tell a client why (``pushserver:error``), then end its session without waiting for it to read."""
        sock = self.eio.sockets.get(eio_sid)
        if sock is None or sock.closed or sock.closing:
            return
        if self.manager.sid_from_eio_sid(eio_sid, "/") is not None:
            await self._send_packet(eio_sid, self.packet_class(
                sio_packet.EVENT, namespace="/", data=[ERROR_EVENT, {"code": code, "message": message}]))
        sock.queue.put_nowait(None)  # the writer sends what is queued, then closes the transport
        await sock.close(wait=False, abort=True, reason=self.reason.SERVER_DISCONNECT)
        # As engineio's own disconnect(): a closed session left in the table answers the next
        # long-polling request with an error (HTTP 500) instead of "invalid session" (HTTP 400).
        self.eio.sockets.pop(eio_sid, None)


#: Running client-event handlers (asyncio keeps only weak references to tasks).
_handler_tasks: set[Any] = set()
