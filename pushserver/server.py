"""The composition root: builds the pieces of the data path and the HTTP API from Settings, and runs them.

An event's way through the server, one module per step: receiver.py /
receiver_process.py (it enters) -> ingest.py (counted, recorded, merged by
state.py's rules) -> coalesce.py (when it may leave) -> fanout.py (it leaves,
to room ``task:<id>``). Clients come in through sockets.py (Socket.IO) and
http.py, both authorised by access.py and answered from snapshots.py.
Workflows (groups, chords, chains) ride along: workflow_watch.py hears every
event and change from ingest.py and sends ``workflow:update`` through the
same fanout, to room ``workflow:<id>``.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import time
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from .access import Access
from .auth import TokenVerifier
from .backend import ResultBackend, ResultReader
from .celeryapp import make_celery
from .coalesce import Coalescer
from .config import ConfigError, Settings, redact_url
from .eventlog import EventLog
from .fanout import FanoutManager
from .gctune import freeze_startup, maintain
from .http import HttpApi
from .ingest import Ingest
from .metrics import Metrics
from .policy import ForwardingPolicy
from .receiver import EventQueueOptions, Receiver, ReceiverStatus, ReceiverThread
from .receiver_process import ReceiverProcess
from .reconciler import SETTLED, QuietReconciler
from .snapshots import MemoryView, Snapshots
from .sockets import SocketApi
from .state import TaskStore
from .subscriptions import Subscriptions
from .workflow_watch import WorkflowWatch

log = logging.getLogger("pushserver")

#: Connections the kernel may hold for us before we accept them (Linux caps it at net.core.somaxconn,
#: 4096 by default). aiohttp's default, 128, overflows when thousands of clients reconnect at once after a
#: restart: the kernel drops their handshakes, and each waits for TCP's retransmission (1 s, 3 s, 7 s, ...
#: 63 s): docs/benchmarks.md, reconnect storm.
LISTEN_BACKLOG = 4096


class PushServer:
    """One pushserver process: Celery event receiver -> TaskStore -> Socket.IO rooms, plus the HTTP API."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.celery = make_celery(
            settings.broker_url,
            settings.result_backend,
            settings.broker_transport_options,
            settings.backend_transport_options,
        )
        try:
            # Celery builds its backend on first use, and a backend it cannot build
            # would fail every read later (snapshots answering PENDING): fail now.
            _ = self.celery.backend
        except (ValueError, ImportError, KeyError, TypeError) as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"--backend {redact_url(settings.result_backend)}: {first_line}") from None
        self.metrics = Metrics(max_tasks=settings.max_tasks, max_task_names=settings.metrics_task_names)
        # What no client is ever sent is not kept either (bounded memory per task).
        policy = ForwardingPolicy(settings.forward_results, settings.forward_tracebacks, settings.forward_args)
        self.store = TaskStore(settings.max_tasks, unkept=policy.never_forwarded())
        self.metrics.watch_store(lambda: self.store.evicted)
        self.backend = ResultBackend(
            self.celery,
            on_read=self._count_backend_read,
            results=settings.forward_results,
            max_result_bytes=settings.max_result_bytes,
        )
        self.eventlog: EventLog | None = None
        if settings.mongo_url:
            self.eventlog = EventLog(
                settings.mongo_url,
                settings.mongo_db,
                retention_days=settings.retention_days,
                max_queue_bytes=settings.event_log_queue_bytes,
                metrics=self.metrics,
            )
            self.metrics.watch_eventlog(
                lambda: self.eventlog.queued if self.eventlog else 0,
                lambda: self.eventlog.queued_bytes if self.eventlog else 0,
            )
        verifier = None
        if settings.secrets:
            verifier = TokenVerifier(
                settings.secrets,
                leeway=settings.token_leeway,
                audience=settings.token_audience,
                issuer=settings.token_issuer,
            )
        self.subscriptions = Subscriptions(settings.max_subscriptions)
        memory = MemoryView(self.store, policy)
        # Built in the order an update travels back from where it leaves.
        self.fanout = FanoutManager(
            self.metrics, memory.visible, soft_backlog=settings.soft_backlog, hard_backlog=settings.hard_backlog
        )
        coalescer = Coalescer(memory, self.subscriptions, self.fanout, self.metrics, settings.progress_hz)
        # The watched workflows read their members' snapshots through snapshots.py, which merges
        # what it reads through ingest, which tells the workflows: the one cycle, closed by the lambda.
        self.workflows = WorkflowWatch(
            settings, self.store, self.backend, self.fanout, lambda task_id: self.snapshots.snapshot(task_id)
        )
        # --forward-results json: task-succeeded events wait for their value from the result backend.
        reader = None
        if settings.forward_results == "json":
            reader = ResultReader(self.backend.app, on_read=self.backend.on_read)
        self.ingest = Ingest(
            self.store,
            self.subscriptions,
            coalescer,
            self.metrics,
            self.eventlog,
            results_from=reader,
            max_result_bytes=settings.max_result_bytes,
            workflows=self.workflows,
        )
        self.snapshots = Snapshots(memory, self.backend, self.eventlog, self.ingest.merge, self.metrics)
        # A token naming a workflow grants its members: Socket.IO and HTTP alike.
        access = Access(verifier, self.workflows.containing)
        self.sockets = SocketApi(
            settings, access, self.subscriptions, self.snapshots, coalescer, self.fanout, self.metrics, self.workflows
        )
        self.reconciler: QuietReconciler | None = None
        if settings.reconcile_after > 0:
            self.reconciler = QuietReconciler(
                self._quiet_candidates,
                self._marker_of,
                self.backend.lookup_many,
                self.ingest.merge,
                after=settings.reconcile_after,
                max_interval=settings.reconcile_max_interval,
                batch=settings.reconcile_batch,
                on_checked=self._count_quiet_checks,
            )
        self.app = web.Application()
        self.sockets.sio.attach(self.app)
        HttpApi(
            access,
            self.snapshots,
            policy,
            self.metrics,
            self.readiness,
            self.eventlog,
            cors_origins=settings.cors_origins,
        ).install(self.app)
        self.receiver: Receiver | None = None
        self.started_at = time.time()
        self._runner: web.AppRunner | None = None
        self._background: set[asyncio.Task[Any]] = set()

    # -- the quiet-task reconciler's view of the watched tasks ---------------------

    def _watched(self) -> list[str]:
        """Every task a client watches, once: by its own id, or as a member of a watched workflow."""
        watched = self.subscriptions.watched()  # a list of its own
        members = self.workflows.members_watched()
        if members:  # a member may be watched by its own id too
            watched += [task_id for task_id in members if not self.subscriptions.is_watched(task_id)]
        return watched

    def _is_watched(self, task_id: str) -> bool:
        return self.subscriptions.is_watched(task_id) or self.workflows.is_member_watched(task_id)

    def _quiet_candidates(self) -> Iterator[tuple[str, Any]]:
        """Every watched unfinished task with its last event's stamp (which changes with each event merged);
        looked up as the reconciler reads them, which it does a chunk at a time."""
        store = self.store
        for task_id in self._watched():
            task = store.get(task_id)
            if task is None:
                yield task_id, None
            elif not task.ready:
                yield task_id, task.last_event

    def _marker_of(self, task_id: str) -> Any:
        task = self.store.get(task_id)
        if not self._is_watched(task_id) or (task is not None and task.ready):
            return SETTLED
        return task.last_event if task is not None else None

    def _count_quiet_checks(self, checked: int, changed: int) -> None:
        self.metrics.quiet_checked.inc(checked)
        self.metrics.quiet_reconciled.inc(changed)

    def _count_backend_read(self, kind: str, keys: int) -> None:
        # Called from the backend's threads: prometheus_client counters are thread-safe.
        self.metrics.backend_reads.labels(kind).inc()

    def readiness(self) -> dict[str, Any]:
        """What ``/readyz`` reports: ready only while the receiver is connected to the broker."""
        status = self.receiver.status if self.receiver else ReceiverStatus.STARTING
        return {
            "ready": status is ReceiverStatus.CONNECTED,
            "receiver": status.value,
            "reconnects": self.receiver.reconnects if self.receiver else 0,
            "event_log": self.eventlog.status() if self.eventlog else "off",
            "tasks_in_memory": len(self.store),
            "subscriptions": len(self.subscriptions),
            "uptime_seconds": round(time.time() - self.started_at, 1),
        }

    async def start(self) -> None:
        """Bind the HTTP/Socket.IO port, then start receiving events."""
        # A handler still running when stop() has closed every connection is cut after this.
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port, backlog=LISTEN_BACKLOG)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"--port: {self.settings.host}:{self.settings.port} is already in use") from None
            raise ConfigError(
                f"--host/--port: cannot listen on {self.settings.host}:{self.settings.port} ({exc.strerror})"
            ) from None
        if self.eventlog is not None:
            self.eventlog.start()
        queue = None
        if self.settings.event_queue:
            queue = EventQueueOptions(
                self.settings.event_queue, self.settings.event_queue_ttl, self.settings.event_queue_expires
            )
            if self.settings.broker_url.startswith(("redis", "rediss")):
                log.warning(
                    "--event-queue has no effect on Redis: events are pub/sub messages that"
                    " no queue keeps (gaps are reconciled from the result backend)"
                )
        receiver: Receiver
        if self.settings.receiver == "thread":
            receiver = ReceiverThread(self.celery, self.ingest.ingest, self._on_receiver_status, queue=queue)
        else:
            receiver = ReceiverProcess(
                self.settings.broker_url,
                self.ingest.ingest,
                self._on_receiver_status,
                queue=queue,
                log_level=self.settings.log_level,
                transport_options=self.settings.broker_transport_options,
            )
        self.receiver = receiver
        self.metrics.watch_receiver(lambda: receiver.malformed, lambda: receiver.shed)
        receiver.start()
        if self.reconciler is not None:
            self.reconciler.start()
        mode = "INSECURE: every subscription allowed" if not self.settings.secrets else "tokens required"
        log.info("pushserver listening on http://%s:%d (%s)", self.settings.host, self.bound_port(), mode)

    def bound_port(self) -> int:
        """The port actually bound (useful with --port 0)."""
        assert self._runner is not None
        for address in self._runner.addresses:
            port: int = address[1]
            return port
        return self.settings.port

    def _on_receiver_status(self, status: ReceiverStatus, reconnected: bool) -> None:
        self.metrics.receiver_connected.set(1 if status is ReceiverStatus.CONNECTED else 0)
        if status is ReceiverStatus.CONNECTED:
            # Redis pub/sub keeps nothing: whatever finished while we were away
            # is only in the result backend. The same holds before the first
            # connect: a client may subscribe as soon as the port is open.
            if reconnected:
                self.metrics.reconnects.inc()
            task = asyncio.get_running_loop().create_task(self.snapshots.reconcile(self._watched()))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def stop(self) -> None:
        """Shut down within ``--shutdown-timeout`` (SIGTERM).

        Refuse new connections, drop the open ones (their clients reconnect,
        to another replica or to this one restarted), stop receiving, then
        write out what the event log still holds.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.shutdown_timeout
        log.info("pushserver shutting down")
        if self._runner is not None:
            for site in list(self._runner.sites):
                await site.stop()
        closed = await self._close_connections(timeout=min(3.0, self.settings.shutdown_timeout / 4))
        log.info("shutdown: listening socket closed, %d client connection(s) closed", closed)
        if self.reconciler is not None:
            await self.reconciler.stop()
        self.sockets.close()
        self.workflows.close()
        if self.receiver is not None:
            await self.receiver.stop()
        if self.ingest.results is not None:
            await self.ingest.results.close()  # SUCCESS events still held go out (and into the event log)
        try:
            await asyncio.wait_for(self.sockets.sio.shutdown(), timeout=2)
        except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - shutting down regardless
            pass
        if self._runner is not None:
            await self._runner.cleanup()
        if self.eventlog is not None:
            queued, started = self.eventlog.queued, loop.time()
            if await self.eventlog.flush(timeout=max(0.5, deadline - loop.time())):
                log.info(
                    "shutdown: event log flushed (%d queued events written in %.2fs)", queued, loop.time() - started
                )
            else:
                log.warning("event log: %d events not written before shutdown", self.eventlog.queued)
            await self.eventlog.close()
        self.backend.close()
        log.info("pushserver stopped")

    async def _close_connections(self, timeout: float) -> int:
        """End every client's transport, so that clients reconnect at once (EngineIOServer.close_transports)."""
        closed: int = await self.sockets.sio.eio.close_transports(timeout)
        return closed

    async def run_forever(self) -> None:
        """Start, then serve until SIGTERM or SIGINT, then stop cleanly."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        freeze_startup()
        gc_maintenance = loop.create_task(maintain())
        await stop.wait()
        gc_maintenance.cancel()
        await self.stop()
