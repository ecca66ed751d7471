"""The HTTP API: the polling fallback ``/tasks/{id}``, health, readiness and metrics."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pymongo.errors import PyMongoError

from .access import Access
from .eventlog import EventLog, document_to_event
from .metrics import Metrics
from .policy import ForwardingPolicy
from .protocol import ProtocolError, validate_task_id
from .snapshots import Snapshots

log = logging.getLogger("pushserver.http")

STATUS_FOR_CODE = {
    "bad_request": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "too_many": 429,
    "unavailable": 503,
}


def json_error(code: str, message: str) -> web.Response:
    """An error response with the API's ``{error: {code, message}}`` body and matching status."""
    return web.json_response({"error": {"code": code, "message": message}}, status=STATUS_FOR_CODE.get(code, 500))


def bearer_token(request: web.Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header, or None."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class HttpApi:
    """Routes of the HTTP API, with the same snapshots, authorisation and forwarding policy as Socket.IO."""

    def __init__(
        self,
        access: Access,
        snapshots: Snapshots,
        policy: ForwardingPolicy,
        metrics: Metrics,
        readiness: Callable[[], dict[str, Any]],
        eventlog: EventLog | None = None,
        cors_origins: list[str] | None = None,
    ) -> None:
        self.cors_origins = set(cors_origins or ())
        self.access = access
        self.snapshots = snapshots
        self.policy = policy
        self.metrics = metrics
        self.readiness = readiness
        self.eventlog = eventlog

    def install(self, app: web.Application) -> None:
        """Add the routes and the JSON error middleware to an aiohttp application."""
        app.middlewares.append(_http_api_only(_json_errors))
        app.middlewares.append(_http_api_only(self._cors))
        # aiohttp's default {name} pattern excludes braces, which task ids may hold.
        app.router.add_get("/tasks/{task_id:[^/]+}", self.get_task)
        app.router.add_get("/tasks/{task_id:[^/]+}/events", self.get_events)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics_view)

    async def get_task(self, request: web.Request) -> web.Response:
        """``GET /tasks/{id}``: the task's snapshot, for a bearer of a token that names it."""
        try:
            task_id = validate_task_id(request.match_info["task_id"])
            self._authorize(bearer_token(request), task_id)
        except ProtocolError as exc:
            self.metrics.refused.labels(exc.code).inc()
            return json_error(exc.code, exc.message)
        return web.json_response(await self.snapshots.snapshot(task_id), dumps=_dumps)

    async def get_events(self, request: web.Request) -> web.Response:
        """``GET /tasks/{id}/events?limit=&after=``: the task's recorded events, oldest first."""
        try:
            task_id = validate_task_id(request.match_info["task_id"])
            self._authorize(bearer_token(request), task_id)
            limit, after = _paging(request.query)
        except ProtocolError as exc:
            self.metrics.refused.labels(exc.code).inc()
            return json_error(exc.code, exc.message)
        if self.eventlog is None:
            return json_error("unavailable", "the event log is off: start the server with --mongo")
        try:
            documents = await self.eventlog.history(task_id, limit=limit, after=after)
        except Exception as exc:  # noqa: BLE001 - any driver or server fault answers 503, like an outage
            if not isinstance(exc, PyMongoError):
                log.exception("event log read failed unexpectedly")
            return json_error("unavailable", f"the event log cannot be read now ({type(exc).__name__})")
        events = [{"id": d["_id"], **self.policy.event(document_to_event(d))} for d in documents]
        last = documents[-1] if len(documents) == limit else None
        cursor = f"{last['timestamp']!r}:{last['_id']}" if last else None
        return web.json_response({"task_id": task_id, "events": events, "next": cursor}, dumps=_dumps)

    def _authorize(self, token: str | None, task_id: str) -> None:
        """ProtocolError unless the bearer token grants ``task_id``."""
        self.access.authorize(
            [task_id], token, missing="a bearer token is required", not_granted="the token does not grant this task"
        )

    async def _cors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """CORS for the HTTP API with the same origin allowlist as Socket.IO (--cors)."""
        origin = request.headers.get("Origin")
        if origin is None:
            return await handler(request)
        allowed = "*" in self.cors_origins or origin in self.cors_origins
        if request.method == "OPTIONS":
            if not allowed:
                return json_error("forbidden", f"origin {origin[:100]!r} is not allowed (see --cors)")
            response: web.StreamResponse = web.Response(status=204)
            response.headers["Access-Control-Allow-Methods"] = "GET, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = "Authorization"
            response.headers["Access-Control-Max-Age"] = "600"
        else:
            response = await handler(request)
        if allowed:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
        return response

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def readyz(self, request: web.Request) -> web.Response:
        status = self.readiness()
        return web.json_response(status, status=200 if status["ready"] else 503)

    async def metrics_view(self, request: web.Request) -> web.Response:
        response = web.Response(body=self.metrics.render())
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return response


MAX_PAGE = 1000


def _paging(query: Any) -> tuple[int, tuple[float, str] | None]:
    """Parse ``limit`` (1-1000, default 100) and the ``after`` cursor ("<timestamp>:<id>") of a history page."""
    raw_limit = query.get("limit", "100")
    try:
        limit = int(raw_limit)
    except ValueError:
        raise ProtocolError("bad_request", f"limit must be a whole number, not {raw_limit[:32]!r}") from None
    if not 1 <= limit <= MAX_PAGE:
        raise ProtocolError("bad_request", f"limit must be between 1 and {MAX_PAGE}")
    raw_after = query.get("after")
    if raw_after is None:
        return limit, None
    at, sep, last_id = raw_after.partition(":")
    try:
        timestamp = float(at)
    except ValueError:
        timestamp = float("nan")
    if not sep or not last_id or timestamp != timestamp:
        raise ProtocolError("bad_request", "after must be the 'next' cursor of a previous page")
    return limit, (timestamp, last_id)


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def _http_api_only(middleware: Middleware) -> Middleware:
    """``middleware`` for the HTTP API; Socket.IO's requests go on to engineio's handler untouched.

    A middleware that awaits the handler stays on the stack while the handler runs, which for a WebSocket is
    the connection's life: ~0.4 KB of frame each per connection (docs/benchmarks.md). Handing on the
    handler's own awaitable, as here, keeps nothing (aiohttp awaits what a middleware returns).
    """

    @web.middleware
    def http_api_only(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
        if request.path.startswith("/socket.io"):  # Socket.IO answers with its own CORS and errors
            return handler(request)
        return middleware(request, handler)

    return http_api_only


async def _json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Turn aiohttp's HTML error pages (404, 405, ...) into the API's JSON errors."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "bad_request")
        return web.json_response({"error": {"code": code, "message": exc.reason}}, status=exc.status)
