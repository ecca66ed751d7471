"""The Socket.IO side: the server and its four handlers — connect, disconnect, subscribe, unsubscribe.

A connection may present a token at connect (kept as its grant) or with each
``subscribe``; either way access.py decides. A subscription joins the room
``task:<id>`` that fanout.py sends updates to, and lives as long as the token
that granted it: the expiry wheel (expiry.py) ends it, and the client is told
with a ``token_expired`` notice. Before any handler runs, inbound.py has
applied the per-address and per-connection limits on what a client may send.

A call naming workflows (``workflow_id``/``workflow_ids``) is authorised and
rate-limited here like one naming tasks, then handed to the workflow watch
(workflow_watch.py), which keeps those subscriptions, their rooms
``workflow:<id>`` and their tokens' expiry itself.
"""

from __future__ import annotations

import asyncio
from typing import Any

from socketio.exceptions import ConnectionRefusedError as ConnectionRefused

from .access import Access
from .auth import Grant
from .coalesce import Coalescer
from .config import Settings
from .eioserver import SocketIOServer, trim_environ
from .expiry import ExpiryWheel
from .fanout import FanoutManager
from .inbound import Inbound
from .limits import TokenBucket, client_address
from .logs import library_loggers
from .metrics import Metrics
from .protocol import ERROR_EVENT, OrjsonCodec, ProtocolError, error_ack, parse_subscription, room_for
from .snapshots import Snapshots
from .subscriptions import Subscriptions
from .workflow_watch import WorkflowWatch

#: A client that keeps sending while this many times --max-connection-bytes of answers wait unread is dropped.
UNREAD_BYTES_FACTOR = 8


class SocketApi:
    """python-socketio's server with pushserver's handlers: who is connected, what they watch, until when."""

    def __init__(
        self,
        settings: Settings,
        access: Access,
        subscriptions: Subscriptions,
        snapshots: Snapshots,
        coalescer: Coalescer,
        fanout: FanoutManager,
        metrics: Metrics,
        workflows: WorkflowWatch,
    ) -> None:
        self.settings = settings
        self.workflows = workflows
        self.access = access
        self.subscriptions = subscriptions
        self.snapshots = snapshots
        self.coalescer = coalescer
        self.metrics = metrics
        # When each (connection, task) subscription's token runs out: one timer for the server.
        self.expiry = ExpiryWheel(self._on_tokens_expired)
        self._expiring: set[asyncio.Task[None]] = set()
        self._grants: dict[str, Grant] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._connected: set[str] = set()
        socketio_logger, engineio_logger = library_loggers()
        # Every Engine.IO session and client packet passes these limits first (inbound.py).
        self.inbound = Inbound(
            rate=settings.message_rate,
            burst=settings.message_burst,
            max_in_flight_bytes=settings.max_connection_bytes,
            max_per_address=settings.max_connections_per_ip,
            max_sessions=settings.max_connections,
            address_of=self._address_of,
            on_refused=self._count_refused_message,
        )
        # python-socketio's AsyncServer with less kept per connection (eioserver.py),
        # its rooms kept by a manager that sends with backlog limits (fanout.py).
        self.sio = SocketIOServer(
            client_manager=fanout,
            inbound=self.inbound,
            max_unread=settings.hard_backlog,
            max_unread_bytes=UNREAD_BYTES_FACTOR * settings.max_connection_bytes,
            transports=settings.transports.split(","),
            async_mode="aiohttp",
            cors_allowed_origins=_cors_setting(settings.cors_origins),
            json=OrjsonCodec,
            max_http_buffer_size=settings.max_message_bytes,
            logger=socketio_logger,
            engineio_logger=engineio_logger,
        )
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        self.sio.on("subscribe", self._on_subscribe)
        self.sio.on("unsubscribe", self._on_unsubscribe)

    def close(self) -> None:
        """Stop ending subscriptions (the server is stopping)."""
        self.expiry.close()

    # -- connections ---------------------------------------------------------

    def _address_of(self, environ: dict[str, Any]) -> str:
        """The client's address, as --max-connections-per-ip counts it."""
        return client_address(
            environ.get("REMOTE_ADDR"), environ.get("HTTP_X_FORWARDED_FOR"), self.settings.trust_proxy
        )

    def _count_refused_message(self, reason: str) -> None:
        self.metrics.messages_refused.labels(reason).inc()
        if reason in ("connections", "connections_per_address"):
            self.metrics.refused.labels("too_many").inc()

    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        if sid in self._connected:
            return  # lifecycle handlers run once per connection; a repeat changes nothing
        token = None
        if auth is not None:
            if not isinstance(auth, dict):
                raise ConnectionRefused("auth must be an object like {token: '...'}")
            token = auth.get("token")
        if token is not None:
            try:
                grant = self.access.verify(token)
            except ProtocolError as exc:
                self.metrics.refused.labels("unauthorized").inc()
                raise ConnectionRefused(exc.message) from None
            if grant is not None:
                self._grants[sid] = grant
        # The address has been counted at the Engine.IO handshake (Inbound.open).
        trim_environ(environ)  # read: drop the request headers it holds for the connection's lifetime
        self._connected.add(sid)
        self._buckets[sid] = TokenBucket(self.settings.subscribe_rate, self.settings.subscribe_burst)
        self.metrics.clients.inc()

    async def _on_disconnect(self, sid: str, *_: Any) -> None:
        # Idempotent: everything below is a pop or a discard, the gauge moves only once.
        self._grants.pop(sid, None)
        self._buckets.pop(sid, None)
        if sid in self._connected:
            self._connected.discard(sid)
            self.metrics.clients.dec()
        self.expiry.drop(sid)
        self.coalescer.forget(self.subscriptions.drop(sid))
        self.workflows.drop(sid)
        self.metrics.subscriptions.set(len(self.subscriptions))

    # -- subscribe / unsubscribe ---------------------------------------------

    async def _on_subscribe(self, sid: str, payload: Any = None, *extra: Any) -> dict[str, Any]:
        if extra:
            return error_ack("bad_request", "subscribe takes a single payload object")
        try:
            bucket = self._buckets.get(sid)
            if bucket is not None and not bucket.take():
                raise ProtocolError(
                    "too_many", f"rate limit: at most {self.settings.subscribe_rate:g} subscribe calls per second"
                )
            request = parse_subscription(payload, self.settings.max_ids_per_call)
            if request.workflow_ids:
                grant = self.access.authorize(
                    request.workflow_ids, request.token, self._grants.get(sid), noun="workflow"
                )
                return await self.workflows.subscribe(sid, request, grant.expires_at if grant else None)
            grant = self.access.authorize(request.task_ids, request.token, self._grants.get(sid))
            self.subscriptions.add(sid, request.task_ids)
        except ProtocolError as exc:
            self.metrics.refused.labels(exc.code).inc()
            return exc.ack()
        if grant is not None:
            self.expiry.set(sid, request.task_ids, grant.expires_at)
        self.metrics.subscriptions.set(len(self.subscriptions))
        # Join the rooms before reading the snapshots: an update merged while
        # we await the result backend is then either in the snapshot or
        # emitted to us afterwards, never lost in between.
        for task_id in request.task_ids:
            await self.sio.enter_room(sid, room_for(task_id))
        snapshots = await asyncio.gather(*(self.snapshots.snapshot(t) for t in request.task_ids))
        # Events merged while the snapshots were awaited went to the room at
        # once. Read memory again, with no await before the ack leaves, so the
        # ack is never older than an update the client already has.
        visible = self.snapshots.memory.visible
        tasks = [visible(t) or s for t, s in zip(request.task_ids, snapshots)]
        return {"ok": True, "tasks": tasks}

    async def _on_unsubscribe(self, sid: str, payload: Any = None, *extra: Any) -> dict[str, Any]:
        if extra:
            return error_ack("bad_request", "unsubscribe takes a single payload object")
        try:
            request = parse_subscription(payload, self.settings.max_ids_per_call)
        except ProtocolError as exc:
            return exc.ack()
        if request.workflow_ids:
            return await self.workflows.unsubscribe(sid, request)
        mine = self.subscriptions.tasks_of(sid)
        for task_id in request.task_ids:
            if task_id in mine:
                await self.sio.leave_room(sid, room_for(task_id))
        self.expiry.remove(sid, request.task_ids)
        self.coalescer.forget(self.subscriptions.remove(sid, request.task_ids))
        self.metrics.subscriptions.set(len(self.subscriptions))
        return {"ok": True}

    # -- token expiry --------------------------------------------------------

    def _on_tokens_expired(self, expired: dict[str, list[str]]) -> None:
        """The expiry wheel's callback: end these subscriptions, in one task for the whole batch."""
        task = asyncio.get_running_loop().create_task(self._end_expired(expired))
        self._expiring.add(task)
        task.add_done_callback(self._expiring.discard)

    async def _end_expired(self, expired: dict[str, list[str]]) -> None:
        """Take each connection out of the rooms its tokens no longer grant, then tell it which."""
        for n, (sid, task_ids) in enumerate(expired.items()):
            if n and n % 256 == 0:
                await asyncio.sleep(0)  # thousands of tokens may end in one second: let the loop breathe
            mine = self.subscriptions.tasks_of(sid)
            # Not one renewed (subscribed again with a fresh token) since the wheel fired.
            ended = [t for t in task_ids if t in mine and self.expiry.deadline(sid, t) is None]
            if not ended:
                continue
            for task_id in ended:
                await self.sio.leave_room(sid, room_for(task_id))
            self.coalescer.forget(self.subscriptions.remove(sid, ended))
            self.metrics.expired.inc(len(ended))
            # After leaving the rooms: no update for these tasks follows the notice.
            await self.sio.emit(
                ERROR_EVENT,
                {
                    "code": "token_expired",
                    "task_ids": ended,
                    "message": "the token for these tasks has expired: subscribe again with a fresh token",
                },
                to=sid,
            )
        self.metrics.subscriptions.set(len(self.subscriptions))


def _cors_setting(origins: list[str] | None) -> Any:
    # python-engineio: None means same-origin only; "*" allows all.
    if not origins:
        return None
    if "*" in origins:
        return "*"
    return origins
