"""The composition root: builds the store, receiver, hub and HTTP API from Settings and runs them."""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import time
from typing import Any

from aiohttp import web
from celery import Celery

from .auth import MIN_SECRET_BYTES, TokenVerifier
from .backend import ResultBackend
from .config import ConfigError, Settings
from .eventlog import EventLog
from .http import HttpApi
from .hub import Hub
from .metrics import Metrics
from .receiver import EventReceiver, ReceiverStatus
from .state import TaskStore

log = logging.getLogger("pushserver")


def make_celery(settings: Settings) -> Celery:
    """A Celery app used only to receive events and read results (it runs no tasks)."""
    app = Celery("pushserver", broker=settings.broker_url, backend=settings.result_backend,
                 set_as_current=False)
    app.conf.update(
        broker_connection_timeout=4,
        broker_connection_retry_on_startup=False,
        redis_socket_connect_timeout=4,
        redis_socket_timeout=10,
        result_accept_content=["json"],
        accept_content=["json"],
    )
    return app


class PushServer:
    """One pushserver process: Celery event receiver -> TaskStore -> Socket.IO hub, plus the HTTP API."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.celery = make_celery(settings)
        self.metrics = Metrics()
        self.store = TaskStore(settings.max_tasks)
        self.backend = ResultBackend(self.celery)
        self.eventlog: EventLog | None = None
        if settings.mongo_url:
            self.eventlog = EventLog(settings.mongo_url, settings.mongo_db,
                                     retention_days=settings.retention_days, metrics=self.metrics)
            self.metrics.watch_eventlog(lambda: self.eventlog.queued if self.eventlog else 0)
        verifier = None
        if settings.secrets:
            verifier = TokenVerifier(settings.secrets, leeway=settings.token_leeway,
                                     audience=settings.token_audience, issuer=settings.token_issuer)
            if verifier.weak_secrets:
                log.warning("%d secret(s) shorter than %d bytes: use a long random secret "
                            "(e.g. `openssl rand -hex 32`)", verifier.weak_secrets, MIN_SECRET_BYTES)
        self.hub = Hub(settings, self.store, self.backend, self.metrics, verifier, self.eventlog)
        self.app = web.Application()
        self.hub.sio.attach(self.app)
        HttpApi(self.hub, self.metrics, self.readiness, self.eventlog,
                cors_origins=settings.cors_origins).install(self.app)
        self.receiver: EventReceiver | None = None
        self.started_at = time.time()
        self._runner: web.AppRunner | None = None
        self._background: set[asyncio.Task[Any]] = set()

    def readiness(self) -> dict[str, Any]:
        """What ``/readyz`` reports: ready only while the receiver is connected to the broker."""
        status = self.receiver.status if self.receiver else ReceiverStatus.STARTING
        return {
            "ready": status is ReceiverStatus.CONNECTED,
            "receiver": status.value,
            "reconnects": self.receiver.reconnects if self.receiver else 0,
            "event_log": self.eventlog.status() if self.eventlog else "off",
            "tasks_in_memory": len(self.store),
            "subscriptions": len(self.hub.subscriptions),
            "uptime_seconds": round(time.time() - self.started_at, 1),
        }

    async def start(self) -> None:
        """Bind the HTTP/Socket.IO port, then start receiving events."""
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"--port: {self.settings.host}:{self.settings.port} is already in use"
                ) from None
            raise ConfigError(f"--host/--port: cannot listen on "
                              f"{self.settings.host}:{self.settings.port} ({exc.strerror})") from None
        loop = asyncio.get_running_loop()
        if self.eventlog is not None:
            self.eventlog.start()
        self.receiver = EventReceiver(self.celery, loop, self.hub.ingest, self._on_receiver_status)
        self.receiver.start()
        mode = "INSECURE: every subscription allowed" if not self.settings.secrets else "tokens required"
        log.info("pushserver listening on http://%s:%d (%s)", self.settings.host, self.bound_port(), mode)

    def bound_port(self) -> int:
        """The port actually bound (useful with --port 0)."""
        assert self._runner is not None
        for site in self._runner.sites:
            server = getattr(site, "_server", None)
            if server and server.sockets:
                return server.sockets[0].getsockname()[1]
        return self.settings.port

    def _on_receiver_status(self, status: ReceiverStatus, reconnected: bool) -> None:
        self.metrics.receiver_connected.set(1 if status is ReceiverStatus.CONNECTED else 0)
        if status is ReceiverStatus.CONNECTED and reconnected:
            # Redis pub/sub keeps nothing: whatever finished while we were away
            # is only in the result backend.
            self.metrics.reconnects.inc()
            task = asyncio.get_running_loop().create_task(self.hub.reconcile())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def stop(self) -> None:
        """Stop receiving, tell clients, close the port."""
        log.info("pushserver shutting down")
        if self.receiver is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.receiver.stop)
        try:
            await asyncio.wait_for(self.hub.sio.shutdown(), timeout=5)
        except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - shutting down regardless
            pass
        if self._runner is not None:
            await self._runner.cleanup()
        if self.eventlog is not None:
            if not await self.eventlog.flush(timeout=5):
                log.warning("event log: %d events not written before shutdown", self.eventlog.queued)
            await self.eventlog.close()
        self.backend.close()

    async def run_forever(self) -> None:
        """Start, then serve until SIGTERM or SIGINT, then stop cleanly."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        await stop.wait()
        await self.stop()
