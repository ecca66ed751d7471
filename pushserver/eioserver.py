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
- ``EngineIOServer.send_queue``, ``abort`` and ``close_transports`` read the
  server's ``sockets`` table and a socket's ``queue``, ``closed`` and
  ``close()``: the fanout's per-connection backlog (fanout.py) and the
  graceful shutdown need them.
- pushserver/logs.py recognises engineio's packet parsers by file name.

Given up for good: the lean socket that re-implemented engineio's ``poll``,
``schedule_ping`` and WebSocket loop (a timer per ping instead of a sleeping
task, no task per received message or queue wait) and was swapped in for
engineio's socket class; docs/benchmarks.md has what that costs.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any

import engineio
import socketio
from aiohttp.web import WebSocketResponse
from engineio import packet
from engineio.async_drivers import aiohttp as eio_aiohttp

from .dependencies import unvetted

log = logging.getLogger("pushserver.eioserver")

#: The environ keys pushserver reads (Hub._on_connect); the rest is dropped after connect.
KEPT_ENVIRON = ("REMOTE_ADDR", "HTTP_X_FORWARDED_FOR")


class SendQueue:
    """An unbounded FIFO with the part of ``asyncio.Queue``'s interface engineio and pushserver use.

    ``put``/``put_nowait``, ``get``/``get_nowait``, ``qsize``/``empty``,
    ``task_done``/``join``. Idle, it is one small list: getters and the
    ``join`` event are made on first use.
    """

    __slots__ = ("_finished", "_getters", "_items", "_unfinished")

    maxsize = 0

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._getters: list[asyncio.Future[Any]] | None = None
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

    async def get(self) -> Any:
        """The next item, waiting for one."""
        while not self._items:
            getter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            if self._getters is None:
                self._getters = []
            self._getters.append(getter)
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


class AiohttpWebSocket(eio_aiohttp.WebSocket):
    """engineio's aiohttp WebSocket wrapper, with compression as configured and unparseable packets skipped."""

    async def __call__(self, environ: dict[str, Any]) -> Any:
        # engineio's, but for WebSocketResponse's compress (aiohttp's default: on).
        self._sock = WebSocketResponse(max_msg_size=self.server.max_http_buffer_size,
                                       compress=self.server.websocket_compression)
        await self._sock.prepare(environ["aiohttp.request"])
        self.environ = environ
        await self.handler(self)
        return self._sock

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
                continue
            return data


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
    """python-socketio's AsyncServer on EngineIOServer; extra keyword arguments go to it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        for problem in unvetted():
            log.warning("%s: pushserver relies on its internals (pushserver/dependencies.py)", problem)
        super().__init__(*args, **kwargs)

    def _engineio_server_class(self) -> type[engineio.AsyncServer]:
        return EngineIOServer
