"""python-socketio / python-engineio servers that keep less per idle connection, through the libraries' hooks.

An idle, subscribed browser costs ~34 KB of server memory with stock
python-engineio on aiohttp (docs/benchmarks.md, "Idle connections"). The
sockets are engineio's own; what is changed, and through which hook:

- **Send queue** (``AsyncServer.create_queue``, engineio's factory for the
  queues it uses): each connection's ``asyncio.Queue`` holds four empty
  ``collections.deque`` (its items, getters, putters and its ``join``
  event's waiters), 760 bytes each even when empty. ``SendQueue`` is the part
  of that interface engineio and pushserver use (unbounded FIFO,
  ``task_done``/``join``), on a list, with the rest made only when used.
- **environ** (the connect handler's argument): the WSGI-style dict engineio
  builds from the request headers stays referenced for the connection's
  lifetime; ``trim_environ`` reduces it to what pushserver reads once the
  Socket.IO connect handler has run.
- **REMOTE_ADDR** (``AsyncServer.on``, engineio's handler registration: the
  ``connect`` handler is wrapped): engineio's aiohttp driver sets it to
  "127.0.0.1" for every request; here it is the peer's address
  (``request.remote``), which ``--max-connections-per-ip`` counts by when
  there is no trusted proxy.

Where there is no public hook, this module relies on python-engineio's and
python-socketio's internals, in the releases ``pushserver/dependencies.py``
declares (pyproject.toml pins the same ranges; tests/unit/test_eioserver.py
runs real sessions through each):

- ``AiohttpWebSocket`` replaces the ``websocket`` entry of the server's copy
  of engineio's aiohttp driver table. **WebSocket compression is off**
  (``websocket_compression=False``): a browser offers permessage-deflate and
  aiohttp accepts it, after which every connection that sent or received a
  message holds zlib streams, ~140 KB per idle connection instead of ~34 KB,
  for little gain on Socket.IO's small JSON packets. (Handing engineio a
  clone of the request without the offer would need no internals, but the
  clone stays referenced for the connection's life: ~3 KB per browser.) And
  **a packet engineio cannot parse is logged and skipped**: engineio parses
  outside its error handling, which ends the reader and leaves the socket
  open until the ping timeout.
- ``SocketIOServer`` overrides ``_engineio_server_class``, python-socketio's
  only way to choose the engineio server class.
- **Packets written straight to the WebSocket** (``SendQueue.deliver``):
  engineio sends every packet through its writer task, which wakes, waits
  again with ``asyncio.wait_for`` and goes through aiohttp's frame writer:
  about 30% of the event loop's time at 5 000 updates/s (docs/benchmarks.md).
  When nothing is queued and that writer is idle, the fanout's frame (built
  once per update, ``text_frame``) is written to the connection's transport
  (aiohttp's public ``Request.transport``) instead. That needs engineio's
  socket, which ``AiohttpWebSocket`` gets as the ``__self__`` of the handler
  engineio gives it, and its ``upgraded``, ``upgrading``, ``closing`` and
  ``closed`` flags.
- **Keep-alive pings from one timer** (``AsyncServer.start_background_task``,
  the server's public way to start a task, which engineio's
  ``AsyncSocket.schedule_ping`` calls with the socket's ``_send_ping``):
  that task is recognised and the socket put on the server's
  ``PingSchedule`` (keepalive.py) instead of a task sleeping a ping interval
  per connection; the schedule then does what ``_send_ping`` does after its
  sleep (sets ``last_ping``, queues a PING).
- ``EngineIOServer.send_queue``, ``abort`` and ``close_transports`` read the
  server's ``sockets`` table and a socket's ``queue``, ``closed`` and
  ``close()``: the fanout's per-connection backlog (fanout.py) and the
  graceful shutdown need them.
- pushserver/logs.py recognises engineio's packet parsers by file name.

Given up for good: the lean socket that re-implemented engineio's ``poll``,
``schedule_ping`` and WebSocket loop (a timer per ping instead of a sleeping
task, no task per received message or queue wait) and was swapped in for
engineio's socket class; docs/benchmarks.md has what that costs. Of it, the
pings came back through ``start_background_task`` (above).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import struct
from collections.abc import Callable
from typing import Any

import engineio
import socketio
from aiohttp.web import WebSocketResponse
from engineio import packet
from engineio.async_drivers import aiohttp as eio_aiohttp
from engineio.async_socket import AsyncSocket
from socketio import packet as sio_packet

from .dependencies import unvetted
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
from .keepalive import PingSchedule
from .protocol import ERROR_EVENT

log = logging.getLogger("pushserver.eioserver")

#: Seconds a closing WebSocket waits for the client's close frame (aiohttp's default is 10), reading and
#: discarding whatever else arrives: a dropped flooder's connection is gone after this.
CLOSE_TIMEOUT = 2.0

#: A WebSocket frame header with a 16-bit and with a 64-bit payload length (RFC 6455 §5.2).
_HEADER_16 = struct.Struct("!BBH").pack
_HEADER_64 = struct.Struct("!BBQ").pack

#: The environ keys pushserver reads (SocketApi._on_connect); the rest is dropped after connect.
KEPT_ENVIRON = ("REMOTE_ADDR", "HTTP_X_FORWARDED_FOR")


class SendQueue:
    """An unbounded FIFO with the part of ``asyncio.Queue``'s interface engineio and pushserver use.

    ``put``/``put_nowait``, ``get``/``get_nowait``, ``qsize``/``empty``,
    ``task_done``/``join``. Idle, it is one small list: getters and the
    ``join`` event are made on first use.
    """

    __slots__ = ("_finished", "_getters", "_items", "_unfinished", "nbytes", "websocket")

    maxsize = 0

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._getters: list[asyncio.Future[Any]] | None = None
        self._unfinished = 0
        self._finished: asyncio.Event | None = None
        self.nbytes = 0  # the payload bytes of the packets queued (what a client that stops reading costs)
        #: The connection's WebSocket while engineio's handler runs it (set by AiohttpWebSocket), else None.
        self.websocket: AiohttpWebSocket | None = None

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return False

    def put_nowait(self, item: Any) -> None:
        self._unfinished += 1
        if self._finished is not None:
            self._finished.clear()
        getters = self._getters
        while getters:
            getter = getters.pop(0)
            if not getter.done():  # not cancelled (timed out) meanwhile
                getter.set_result(item)
                return
        self._items.append(item)
        self.nbytes += _payload_size(item)

    async def put(self, item: Any) -> None:
        self.put_nowait(item)

    def waiting(self) -> bool:
        """True when nothing is queued and the consumer waits in ``get``: a packet now would be next in line."""
        getters = self._getters
        return not self._items and bool(getters) and not getters[-1].done()  # type: ignore[index]

    def deliver(self, pkt: Any, frame: bytes) -> None:
        """Send Engine.IO packet ``pkt``: its WebSocket ``frame`` written now if the socket can take it, else queued.

        Written now only when nothing is queued ahead of it and engineio's
        writer is idle (``waiting``), so the order of what a client receives
        is the order things were sent; ``AiohttpWebSocket.write_now`` says
        when the WebSocket itself can take it.
        """
        websocket = self.websocket
        if websocket is None or not self.waiting() or not websocket.write_now(frame):
            self.put_nowait(pkt)

    def get_nowait(self) -> Any:
        if not self._items:
            raise asyncio.QueueEmpty
        item = self._items.pop(0)
        self.nbytes -= _payload_size(item)
        return item

    def get(self) -> asyncio.Future[Any]:
        """The next item, as a future: resolved at once when one is queued, else by the next ``put``.

        A future, not a coroutine as ``asyncio.Queue.get``: engineio waits with
        ``asyncio.wait_for(queue.get(), ...)`` for every packet it sends, and a
        coroutine there costs a task each time. An item handed to a getter is
        its result even if the getter is then cancelled (``cancel()`` of a done
        future does nothing), and ``wait_for`` returns a done future's result
        rather than lose it; engineio awaits the queue only that way.
        """
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self._items:
            future.set_result(self.get_nowait())
            return future
        if self._getters is None:
            self._getters = []
        elif self._getters:
            # An idle connection's poll times out every ping interval: drop those getters here.
            self._getters = [getter for getter in self._getters if not getter.done()]
        self._getters.append(future)
        return future

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


def _payload_size(item: Any) -> int:
    """The size of a queued Engine.IO packet's payload (0 for the end-of-queue None)."""
    data = getattr(item, "data", None)
    return len(data) if isinstance(data, (str, bytes)) else 0


class AiohttpWebSocket(eio_aiohttp.WebSocket):
    """engineio's aiohttp WebSocket wrapper, with compression as configured and unparseable packets skipped."""

    async def __call__(self, environ: dict[str, Any]) -> Any:
        # engineio's, but for WebSocketResponse's compress (aiohttp's default: on).
        self._sock = WebSocketResponse(
            max_msg_size=self.server.max_http_buffer_size,
            compress=self.server.websocket_compression,
            timeout=CLOSE_TIMEOUT,
        )
        request = environ["aiohttp.request"]
        await self._sock.prepare(request)
        self.environ = environ
        self._transport = request.transport
        # engineio hands over its socket's bound _websocket_handler: the socket's send queue may then
        # write frames straight to this WebSocket (SendQueue.deliver) while the handler runs.
        queue = getattr(getattr(self.handler, "__self__", None), "queue", None)
        if isinstance(queue, SendQueue):
            queue.websocket = self
        try:
            await self.handler(self)
        finally:
            if isinstance(queue, SendQueue):
                queue.websocket = None
        return self._sock

    def write_now(self, frame: bytes) -> bool:
        """Write a text ``frame`` (``text_frame``) to the client now if the session and the socket can take it.

        The session must be on this WebSocket for good (upgraded, not closing);
        the WebSocket open and uncompressed; the transport with nothing
        buffered, so a client that stops reading gets its packets queued where
        the fanout's backlog limits see them. Returns whether it was written.
        """
        socket = self.handler.__self__  # engineio's socket (see __call__)
        if not socket.upgraded or socket.upgrading or socket.closing or socket.closed:
            return False
        if self._sock.closed or self._sock.compress:
            return False
        transport = self._transport
        if transport is None or transport.is_closing() or transport.get_write_buffer_size():
            return False
        transport.write(frame)
        return True

    async def wait(self) -> Any:
        """The next message's data, skipping (and logging) any that engineio could not parse."""
        while True:
            # engineio's wait(), inlined rather than called: a frame less held by every idle connection.
            msg = await self._sock.receive()
            data = msg.data
            if not isinstance(data, (bytes, str)):
                raise OSError()
            try:
                packet.Packet(encoded_packet=data)
            except Exception:
                # Logged with the parser's traceback, which logs.py turns
                # into one counted warning; engineio would end the reader here.
                self.server.logger.exception("Unknown receive error")
                # aiohttp hands over buffered frames without suspending: let other
                # connections run between a garbage-sending client's frames.
                await asyncio.sleep(0)
                continue
            return data


def text_frame(text: str) -> bytes:
    """``text`` as one WebSocket text frame as a server sends it (RFC 6455 §5.2): final, unmasked, uncompressed."""
    payload = text.encode()
    length = len(payload)
    if length < 126:
        return bytes((0x81, length)) + payload
    if length < 65536:
        return _HEADER_16(0x81, 126, length) + payload
    return _HEADER_64(0x81, 127, length) + payload


def trim_environ(environ: dict[str, Any]) -> None:
    """Reduce a connection's environ, in place, to the keys pushserver reads (KEPT_ENVIRON).

    Call once the connect handler has read it: engineio has used it by then
    (the handshake, the WebSocket upgrade), and it stays referenced, with
    every request header in it, for as long as the connection is open.
    """
    kept = {key: environ[key] for key in KEPT_ENVIRON if key in environ}
    environ.clear()
    environ.update(kept)


def _set_peer_address(environ: dict[str, Any]) -> None:
    request = environ.get("aiohttp.request")
    remote = getattr(request, "remote", None)
    if remote:
        environ["REMOTE_ADDR"] = remote


def _with_peer_address(handler: Callable[..., Any]) -> Callable[..., Any]:
    """An engineio ``connect`` handler that first sets REMOTE_ADDR to the peer's address (aiohttp's request.remote)."""
    # engineio awaits a handler only if it is a coroutine function: keep its kind.
    if inspect.iscoroutinefunction(handler):

        async def connect_async(sid: str, environ: dict[str, Any], *args: Any) -> Any:
            _set_peer_address(environ)
            return await handler(sid, environ, *args)

        return connect_async

    def connect(sid: str, environ: dict[str, Any], *args: Any) -> Any:
        _set_peer_address(environ)
        return handler(sid, environ, *args)

    return connect


class EngineIOServer(engineio.AsyncServer):
    """engineio's AsyncServer with ``SendQueue`` send queues, the peer's REMOTE_ADDR, and no WebSocket compression."""

    def __init__(self, *args: Any, websocket_compression: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.websocket_compression = websocket_compression
        self.pings = PingSchedule(self.ping_interval)
        if self.async_mode == "aiohttp":
            # A per-server copy of the driver table (engineio's is module-wide).
            driver: dict[str, Any] = self._async  # type: ignore[has-type]
            self._async = dict(driver, websocket=AiohttpWebSocket)

    def create_queue(self, *args: Any, **kwargs: Any) -> Any:
        """A ``SendQueue`` for each connection (engineio calls this without arguments); else asyncio's."""
        if not args and not kwargs:
            return SendQueue()
        return super().create_queue(*args, **kwargs)

    def on(self, event: str, handler: Callable[..., Any] | None = None) -> Any:
        """engineio's handler registration; a ``connect`` handler sees the peer's address as REMOTE_ADDR."""
        if event != "connect" or self.async_mode != "aiohttp":
            return super().on(event, handler)
        if handler is None:  # used as a decorator

            def register(handler: Callable[..., Any]) -> Callable[..., Any]:
                super(EngineIOServer, self).on(event, _with_peer_address(handler))
                return handler

            return register
        return super().on(event, _with_peer_address(handler))

    def start_background_task(self, target: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """engineio's way to start a task; a connection's next keep-alive ping goes on ``pings`` instead."""
        if getattr(target, "__func__", None) is AsyncSocket._send_ping and not args and not kwargs:
            self.pings.add(target.__self__)  # type: ignore[attr-defined]
            return None  # AsyncSocket.schedule_ping, the only caller, ignores it
        return super().start_background_task(target, *args, **kwargs)

    async def shutdown(self) -> None:
        """engineio's shutdown of its background work, the keep-alive pings included."""
        self.pings.close()
        await super().shutdown()

    def send_queue(self, sid: str) -> SendQueue | None:
        """The send queue of Engine.IO session ``sid``, or None once it is closed or gone."""
        sock = self.sockets.get(sid)
        if sock is None or sock.closed:
            return None
        queue: SendQueue = sock.queue
        return queue

    async def abort(self, sid: str) -> None:
        """Close Engine.IO session ``sid`` at once, without telling the client (it sees the transport end)."""
        sock = self.sockets.get(sid)
        if sock is not None:
            await sock.close(wait=False, abort=True)

    async def close_transports(self, timeout: float) -> int:
        """End every session's transport and wait (up to ``timeout``) until each is closed; return how many.

        Not Socket.IO's disconnect: a client told "io server disconnect" does
        not reconnect by itself (socket.io-client, python-socketio), and the
        point of stopping gracefully is that clients move on at once, rather
        than after a ping timeout (45 s) or when the process dies. Ending the
        send queue makes engineio's writer close the WebSocket, which clients
        see as a lost transport and reconnect.
        """
        sockets = list(self.sockets.values())
        for sock in sockets:
            sock.queue.put_nowait(None)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline and not all(s.closed for s in sockets):
            await asyncio.sleep(0.02)
        for sock in sockets:
            if not sock.closed:  # a long-polling session: nothing more will reach it
                await sock.close(wait=False, abort=True)
        return len(sockets)


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

    def __init__(
        self,
        *args: Any,
        inbound: Inbound | None = None,
        client_events: frozenset[str] = CLIENT_EVENTS,
        max_unread: int = 0,
        max_unread_bytes: int = 0,
        **kwargs: Any,
    ) -> None:
        for problem in unvetted():
            log.warning("%s: pushserver relies on its internals (pushserver/dependencies.py)", problem)
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
                await self.drop_session(
                    eio_sid,
                    "too_many",
                    "disconnected: more than"
                    f" {inbound.flood_strikes} messages over the rate limit"
                    f" ({inbound.rate:g} a second) within {inbound.flood_window:g} s",
                )
            elif header is not None and header.kind == EVENT and header.ack_id is not None:
                await self._refuse(
                    eio_sid, header, "too_many", f"rate limit: at most {inbound.rate:g} messages a second"
                )
            return
        if self.max_unread or self.max_unread_bytes:
            queue = self.eio.send_queue(eio_sid)
            if queue is not None and (
                self.max_unread
                and queue.qsize() >= self.max_unread
                or self.max_unread_bytes
                and queue.nbytes >= self.max_unread_bytes
            ):
                inbound.on_refused("unread")
                await self.drop_session(
                    eio_sid,
                    "slow_consumer",
                    "disconnected: more than"
                    f" {self.max_unread} messages or {self.max_unread_bytes} bytes were"
                    " waiting to be read",
                )
                return
        if header is None or header.kind in (BINARY_EVENT, BINARY_ACK):
            # Binary frames are attachments; binary packets announce them. Neither is
            # buffered: python-socketio would keep every frame until the count is met.
            inbound.on_refused("binary")
            if header is not None and header.kind == BINARY_EVENT and header.ack_id is not None:
                await self._refuse(
                    eio_sid, header, "bad_request", "binary data is not accepted: this protocol is JSON text only"
                )
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
                await self._refuse(
                    eio_sid,
                    header,
                    "bad_request",
                    f"unknown event: clients may send only {', '.join(sorted(self.client_events))}",
                )
            return
        cost = 0
        if self.inbound is not None:
            reserved = self.inbound.reserve(eio_sid, self._frame_size)
            if reserved is None:
                self.inbound.on_refused("in_flight")
                if id is not None:
                    await self._refuse(
                        eio_sid,
                        header,
                        "too_many",
                        f"more than {self.inbound.max_in_flight_bytes} bytes of this"
                        " connection's messages are being handled: wait for their acks",
                    )
                return
            cost = reserved
        if self.async_handlers:
            task = self.start_background_task(self._run_client_event, sid, eio_sid, data, namespace, id, cost)
            _handler_tasks.add(task)
            task.add_done_callback(_handler_tasks.discard)
        else:
            await self._run_client_event(sid, eio_sid, data, namespace, id, cost)

    async def _run_client_event(
        self, sid: str, eio_sid: str, data: list[Any], namespace: str, id: int | None, cost: int
    ) -> None:
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
        await self._send_packet(
            eio_sid,
            self.packet_class(
                sio_packet.ACK,
                namespace=header.namespace,
                id=header.ack_id,
                data=[{"ok": False, "error": {"code": code, "message": message}}],
            ),
        )

    async def drop_session(self, eio_sid: str, code: str, message: str) -> None:
        """Tell a client why (``pushserver:error``), then end its session without waiting for it to read."""
        sock = self.eio.sockets.get(eio_sid)
        if sock is None or sock.closed or sock.closing:
            return
        if self.manager.sid_from_eio_sid(eio_sid, "/") is not None:
            await self._send_packet(
                eio_sid,
                self.packet_class(
                    sio_packet.EVENT, namespace="/", data=[ERROR_EVENT, {"code": code, "message": message}]
                ),
            )
        sock.queue.put_nowait(None)  # the writer sends what is queued, then closes the transport
        await sock.close(wait=False, abort=True, reason=self.reason.SERVER_DISCONNECT)
        # As engineio's own disconnect(): a closed session left in the table answers the next
        # long-polling request with an error (HTTP 500) instead of "invalid session" (HTTP 400).
        self.eio.sockets.pop(eio_sid, None)


#: Running client-event handlers (asyncio keeps only weak references to tasks).
_handler_tasks: set[Any] = set()
