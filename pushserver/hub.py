"""Where updates leave: the Socket.IO server, its authorisation, snapshots, and progress coalescing.

Event batches from the receiver are merged into the store and every visible
change of a watched task becomes a ``task:update`` to room ``task:<id>``.
State transitions are emitted at once; progress-only changes are coalesced
per task to at most ``progress_hz`` emits a second, the newest always sent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

from socketio.exceptions import ConnectionRefusedError as ConnectionRefused

from .auth import Grant, TokenError, TokenVerifier
from .backend import ResultBackend, ResultReader
from .config import Settings
from .eioserver import SocketIOServer, trim_environ
from .eventlog import EventLog
from .expiry import ExpiryWheel
from .fanout import FanoutManager
from .inbound import Inbound
from .limits import TokenBucket, client_address
from .logs import library_loggers
from .metrics import Metrics
from .policy import ForwardingPolicy
from .protocol import (
    ERROR_EVENT,
    OrjsonCodec,
    ProtocolError,
    error_ack,
    parse_subscription,
    room_for,
)
from .receiver import Batch
from .results import ResultResolver
from .state import EVENT_TO_STATE, Change, TaskState, TaskStore, is_task_event
from .subscriptions import Subscriptions
from .workflow_watch import WorkflowWatch

log = logging.getLogger("pushserver.hub")

#: A client that keeps sending while this many times --max-connection-bytes of answers wait unread is dropped.
UNREAD_BYTES_FACTOR = 8


class Hub:
    """The Socket.IO side of the server: connections, subscriptions, snapshots and emits."""

    def __init__(
        self,
        settings: Settings,
        store: TaskStore,
        backend: ResultBackend,
        metrics: Metrics,
        verifier: TokenVerifier | None,
        eventlog: EventLog | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.backend = backend
        self.metrics = metrics
        self.verifier = verifier  # None: --insecure, every subscription allowed
        self.eventlog = eventlog
        self.policy = ForwardingPolicy(settings.forward_results, settings.forward_tracebacks, settings.forward_args)
        # --forward-results json: task-succeeded events wait for their value from the result backend.
        self.results: ResultResolver | None = None
        if settings.forward_results == "json":
            self.results = ResultResolver(
                ResultReader(backend.app, on_read=backend.on_read),
                self._merge_and_record,
                metrics,
                settings.max_result_bytes,
            )
        self.subscriptions = Subscriptions(settings.max_subscriptions)
        # When each (connection, task) subscription's token runs out: one timer for the server.
        self.expiry = ExpiryWheel(self._on_tokens_expired)
        self._expiring: set[asyncio.Task[None]] = set()
        self.progress_interval = 1.0 / settings.progress_hz
        self._grants: dict[str, Grant] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._connected: set[str] = set()
        self._last_progress_emit: dict[str, float] = {}
        self._pending_progress: dict[str, asyncio.TimerHandle] = {}
        # python-socketio's AsyncServer with less kept per connection (eioserver.py),
        # its rooms kept by a manager that sends with backlog limits (fanout.py).
        self.fanout = FanoutManager(
            metrics, self._visible_state, soft_backlog=settings.soft_backlog, hard_backlog=settings.hard_backlog
        )
        socketio_logger, engineio_logger = library_loggers()
        # Every Engine.IO session and client packet passes these limits first (inbound.py).
        self.inbound = Inbound(
            rate=settings.message_rate,
            burst=settings.message_burst,
            max_in_flight_bytes=settings.max_connection_bytes,
            max_per_address=settings.max_connections_per_ip,
            address_of=self._address_of,
            on_refused=self._count_refused_message,
        )
        self.sio = SocketIOServer(
            client_manager=self.fanout,
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
        self.workflows = WorkflowWatch(settings, store, backend, self.sio, self.fanout, self.snapshot)
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        self.sio.on("subscribe", self._on_subscribe)
        self.sio.on("unsubscribe", self._on_unsubscribe)

    # -- connections ---------------------------------------------------------

    def _address_of(self, environ: dict) -> str:
        """The client's address, as --max-connections-per-ip counts it."""
        return client_address(
            environ.get("REMOTE_ADDR"), environ.get("HTTP_X_FORWARDED_FOR"), self.settings.trust_proxy
        )

    def _count_refused_message(self, reason: str) -> None:
        self.metrics.messages_refused.labels(reason).inc()
        if reason == "connections_per_address":
            self.metrics.refused.labels("too_many").inc()

    async def _on_connect(self, sid: str, environ: dict, auth: Any = None) -> None:
        if sid in self._connected:
            return  # lifecycle handlers run once per connection; a repeat changes nothing
        token = None
        if auth is not None:
            if not isinstance(auth, dict):
                raise ConnectionRefused("auth must be an object like {token: '...'}")
            token = auth.get("token")
        if token is not None and self.verifier is not None:
            try:
                self._grants[sid] = self.verifier.verify(token)
            except TokenError as exc:
                self.metrics.refused.labels("unauthorized").inc()
                raise ConnectionRefused(str(exc)) from None
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
        self.fanout.forget(sid)
        self.expiry.drop(sid)
        self._forget(self.subscriptions.drop(sid))
        self.workflows.drop(sid)
        self.metrics.subscriptions.set(len(self.subscriptions))

    def _forget(self, task_ids: Iterable[str]) -> None:
        for task_id in task_ids:
            self._last_progress_emit.pop(task_id, None)
            handle = self._pending_progress.pop(task_id, None)
            if handle is not None:
                handle.cancel()

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
                grant = self._authorize(sid, request.workflow_ids, request.token)
                return await self.workflows.subscribe(sid, request, grant.expires_at if grant else None)
            grant = self._authorize(sid, request.task_ids, request.token)
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
        snapshots = await asyncio.gather(*(self.snapshot(t) for t in request.task_ids))
        # Events merged while the snapshots were awaited went to the room at
        # once. Read memory again, with no await before the ack leaves, so the
        # ack is never older than an update the client already has.
        tasks = [self._visible_state(t) or s for t, s in zip(request.task_ids, snapshots)]
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
        self._forget(self.subscriptions.remove(sid, request.task_ids))
        self.metrics.subscriptions.set(len(self.subscriptions))
        return {"ok": True}

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
            self._forget(self.subscriptions.remove(sid, ended))
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

    def _authorize(self, sid: str, task_ids: Iterable[str], token: str | None) -> Grant | None:
        """The grant naming every task (the call's token, else the connect token); ProtocolError if none does."""
        if self.verifier is None:
            return None
        grant: Grant | None
        if token is not None:
            try:
                grant = self.verifier.verify(token)
            except TokenError as exc:
                raise ProtocolError("unauthorized", str(exc)) from None
        else:
            grant = self._grants.get(sid)
            if grant is None:
                raise ProtocolError("unauthorized", "a token is required: pass it at connect or in this call")
        now = time.time()
        if now >= grant.expires_at:
            raise ProtocolError("unauthorized", "token has expired")
        for task_id in task_ids:
            if not grant.allows(task_id, now, self.workflows.containing(task_id)):
                raise ProtocolError("forbidden", f"the token does not grant task {task_id[:64]!r}")
        return grant

    def authorize_token(self, token: str | None, task_id: str) -> None:
        """The HTTP API's check: raise ProtocolError unless ``token`` grants ``task_id``."""
        if self.verifier is None:
            return
        if not token:
            raise ProtocolError("unauthorized", "a bearer token is required")
        try:
            grant = self.verifier.verify(token)
        except TokenError as exc:
            raise ProtocolError("unauthorized", str(exc)) from None
        if not grant.allows(task_id, workflows=self.workflows.containing(task_id)):
            raise ProtocolError("forbidden", "the token does not grant this task")

    # -- snapshots -----------------------------------------------------------

    async def snapshot(self, task_id: str) -> dict[str, Any]:
        """The current TaskState of a task: memory, else the result backend, else the event log, else PENDING."""
        task = self.store.get(task_id)
        if task is not None and task.ready:
            self.metrics.snapshots.labels("memory").inc()
            return self._view(task)
        source = "memory"
        event = await self.backend.lookup(task_id)
        if event is not None:
            self.merge([event])
            source = "backend"
        elif task is None and self.eventlog is not None:
            # A replica that restarted while the task runs: rebuild from history.
            if self.merge(await self.eventlog.latest_events(task_id)):
                source = "eventlog"
        task = self.store.get(task_id)
        if task is not None:
            self.metrics.snapshots.labels(source).inc()
            return self._view(task)
        self.metrics.snapshots.labels("pending").inc()
        return self._view(TaskState(task_id))

    def _view(self, task: TaskState) -> dict[str, Any]:
        """A TaskState as clients may see it (the forwarding policy applied)."""
        return self.policy.task(task.to_dict(with_args=self.policy.args))

    def _visible_state(self, task_id: str) -> dict[str, Any] | None:
        """The task's current TaskState as clients may see it, from memory only."""
        task = self.store.get(task_id)
        return self._view(task) if task is not None else None

    async def reconcile(self) -> int:
        """Once the receiver (re)connects, correct every watched unfinished task from the result backend."""
        watched = dict.fromkeys(self.subscriptions.watched() + self.workflows.members_watched())
        todo = [t for t in watched if not _is_ready(self.store.get(t))]
        changed = self.merge((await self.backend.lookup_many(todo)).values())
        self.metrics.reconciled.inc(changed)
        if todo:
            log.info("reconciled %d watched tasks from the result backend: %d changed", len(todo), changed)
        return changed

    # -- the hot path: merge and emit ----------------------------------------

    def ingest(self, batch: Batch) -> None:
        """Merge a batch of decoded Celery events and emit what changed for watched tasks."""
        # One counter update per event type and batch, not per event: a Prometheus update
        # per event costs a good share of the merge (docs/benchmarks.md).
        by_type = Counter(event.get("type") for event in batch)
        for event_type, n in by_type.items():
            self.metrics.events.labels(_type_label(event_type)).inc(n)
        task_events = [event for event in batch if is_task_event(event)]
        observed: list[dict[str, Any]] = batch
        if self.results is not None:
            task_events = self.results.split(task_events)  # SUCCESS events come back via _merge_and_record
            observed = [event for event in batch if not is_task_event(event)] + task_events
        self._merge_and_record(task_events, observed)

    def _merge_and_record(
        self, task_events: list[dict[str, Any]], observed: list[dict[str, Any]] | None = None
    ) -> None:
        self._merge_task_events(task_events)
        self.metrics.task_level.observe(task_events if observed is None else observed, self.store)
        if self.eventlog is not None:
            self.eventlog.record(task_events)

    def merge(self, events: Iterable[dict[str, Any]]) -> int:
        """Merge events into the store, publishing each visible change; return how many changed."""
        return self._merge_task_events([event for event in events if is_task_event(event)])

    def _merge_task_events(self, events: list[dict[str, Any]]) -> int:
        changed = 0
        workflows = self.workflows
        for event in events:
            workflows.observe(event)
            change = self.store.merge_event(event)
            if change is not None:
                changed += 1
                if self.subscriptions.is_watched(change.task.task_id):
                    self._publish(change)
                workflows.changed(change.task, change.transition)
        workflows.flush()
        self.metrics.tasks.set(len(self.store))
        return changed

    def _publish(self, change: Change) -> None:
        task_id = change.task.task_id
        loop = asyncio.get_running_loop()
        if change.transition or change.task.ready:
            handle = self._pending_progress.pop(task_id, None)
            if handle is not None:
                handle.cancel()
            self._enqueue(change.task, "transition")
            return
        if task_id in self._pending_progress:
            self.metrics.coalesced.inc()  # the pending flush will send the newest
            return
        due = self._last_progress_emit.get(task_id, float("-inf")) + self.progress_interval
        now = loop.time()
        if now >= due:
            self._last_progress_emit[task_id] = now
            self._enqueue(change.task, "progress")
        else:
            self._pending_progress[task_id] = loop.call_at(due, self._flush_progress, task_id)

    def _flush_progress(self, task_id: str) -> None:
        self._pending_progress.pop(task_id, None)
        task = self.store.get(task_id)
        if task is not None and self.subscriptions.is_watched(task_id):
            self._last_progress_emit[task_id] = asyncio.get_running_loop().time()
            self._enqueue(task, "progress")

    def _enqueue(self, task: TaskState, kind: str) -> None:
        payload = self._view(task)
        if self.fanout.send(task.task_id, payload, progress=kind == "progress"):
            self.metrics.updates.labels(kind).inc()
            updated = payload.get("updated_at")
            if updated:
                self.metrics.latency.observe(max(0.0, time.time() - updated))


_WORKER_EVENTS = frozenset({"worker-online", "worker-heartbeat", "worker-offline"})


def _type_label(event_type: object) -> str:
    """A metrics label for an event type; anything unknown shares one, so forged types cannot grow /metrics."""
    if isinstance(event_type, str) and (event_type in EVENT_TO_STATE or event_type in _WORKER_EVENTS):
        return event_type
    return "other"


def _is_ready(task: TaskState | None) -> bool:
    return task is not None and task.ready


def _cors_setting(origins: list[str] | None) -> Any:
    # python-engineio: None means same-origin only; "*" allows all.
    if not origins:
        return None
    if "*" in origins:
        return "*"
    return origins
