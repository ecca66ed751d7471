"""The HTTP API's middlewares (pushserver/http.py) against a real aiohttp server: Socket.IO's requests pass them by."""

from __future__ import annotations

import inspect

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from pushserver.http import HttpApi

ORIGIN = "http://app.example"


async def frames_awaiting_me(request: web.Request) -> web.Response:
    """Names of the frames this handler runs under: what a long-lived handler (a WebSocket's) keeps alive."""
    names = []
    frame = inspect.currentframe()
    while frame is not None:
        names.append(frame.f_code.co_name)
        frame = frame.f_back
    return web.json_response(names)


async def serve() -> TestClient[web.Request, web.Application]:
    app = web.Application()
    api = HttpApi(None, None, None, None, lambda: {"ready": True}, cors_origins=[ORIGIN])  # type: ignore[arg-type]
    api.install(app)
    app.router.add_get("/socket.io/", frames_awaiting_me)  # stands in for engineio's handler
    app.router.add_get("/probe", frames_awaiting_me)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


async def test_socketio_requests_hold_no_middleware_frame_for_their_life() -> None:
    client = await serve()
    try:
        api = await (await client.get("/probe", headers={"Origin": ORIGIN})).json()
        socketio = await (await client.get("/socket.io/", headers={"Origin": ORIGIN})).json()
    finally:
        await client.close()
    assert {"_json_errors", "_cors"} <= set(api)  # the HTTP API's requests go through both
    assert not {"_json_errors", "_cors"} & set(socketio), socketio


async def test_the_http_api_keeps_its_json_errors_and_cors() -> None:
    client = await serve()
    try:
        missing = await client.get("/nope")
        allowed = await client.get("/healthz", headers={"Origin": ORIGIN})
        preflight = await client.options("/healthz", headers={"Origin": "http://other.example"})
        body = await missing.json()
    finally:
        await client.close()
    assert missing.status == 404 and body["error"]["code"] == "not_found"
    assert allowed.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert preflight.status == 403
