"""Security settings against running servers: forwarding policy, token claims and rotation, limits, CORS, slow clients."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import jwt
import pytest
import socketio

from dev.metrics import metric
from dev.stack import http_get, start_pushserver, wait_until
from pushserver.auth import mint_token
from tests.support.clients import Watcher, connect_refused, final_state
from tests.support.stack import Server, Stack, serving

pytestmark = pytest.mark.integration


async def test_default_policy_hides_tracebacks_and_args_everywhere(stack: Stack, server: Server):
    result = stack.send("fail", "secret customer data in the traceback?")
    pushed = await final_state(server.url, server.token(result.id), result.id, "FAILURE")
    assert "RuntimeError" in pushed["exception"]
    assert pushed["traceback"] is None
    assert "args" not in pushed and "kwargs" not in pushed
    status, body = http_get(f"{server.url}/tasks/{result.id}", {"Authorization": f"Bearer {server.token(result.id)}"})
    assert status == 200 and json.loads(body)["traceback"] is None


async def test_forwarding_flags_open_up_tracebacks_args_and_close_results(stack: Stack, server: Server):
    with serving(stack, server.secret, "--forward-tracebacks", "--forward-args") as url:
        failed = stack.send("fail", "boom")
        state = await final_state(url, server.token(failed.id), failed.id, "FAILURE")
        assert "Traceback" in state["traceback"] and "boom" in state["traceback"]
        assert "boom" in state["args"]
    with serving(stack, server.secret, "--forward-results", "none") as url:
        ok = stack.send("demo_progress", 1, 0.0)
        state = await final_state(url, server.token(ok.id), ok.id, "SUCCESS")
        assert state["result"] is None
        status, body = http_get(f"{url}/tasks/{ok.id}", {"Authorization": f"Bearer {server.token(ok.id)}"})
        assert json.loads(body)["result"] is None


async def test_audience_issuer_and_secret_rotation(stack: Stack):
    old, new = "o" * 40, "n" * 40
    with serving(stack, f"{new},{old}", "--token-audience", "push", "--token-issuer", "express") as url:
        w = await Watcher(url).connect()
        try:
            exp = int(time.time()) + 60
            good_old = jwt.encode({"tasks": ["t"], "exp": exp, "aud": "push", "iss": "express"}, old, "HS256")
            good_new = mint_token(new, ["t"], audience="push", issuer="express")
            no_aud = mint_token(new, ["t"], issuer="express")
            bad_iss = mint_token(new, ["t"], audience="push", issuer="someone")
            assert (await w.subscribe("t", token=good_old))["ok"] is True
            assert (await w.subscribe("t", token=good_new))["ok"] is True
            for token, says in ((no_aud, "aud"), (bad_iss, "issuer")):
                ack = await w.subscribe("t", token=token)
                assert ack["ok"] is False and ack["error"]["code"] == "unauthorized"
                assert says in ack["error"]["message"]
        finally:
            await w.close()


async def test_subscribe_rate_limit(stack: Stack, server: Server):
    with serving(stack, server.secret, "--subscribe-rate", "5") as url:
        w = await Watcher(url).connect(server.token("*"))
        try:
            acks = [await w.subscribe(f"rate-{i}") for i in range(150)]
        finally:
            await w.close()
    refused = [a for a in acks if not a["ok"]]
    assert all(a["ok"] for a in acks[:100])  # the burst: a reconnect re-subscribing 100 tasks
    assert len(refused) >= 20
    assert all(a["error"]["code"] == "too_many" and "rate limit" in a["error"]["message"] for a in refused)


async def test_connections_per_address_and_trusted_proxy_header(stack: Stack, server: Server):
    with serving(stack, server.secret, "--max-connections-per-ip", "2", "--trust-proxy") as url:
        clients = []
        try:
            for _ in range(2):
                c = socketio.AsyncClient(reconnection=False)
                await c.connect(url, transports=["websocket"], headers={"X-Forwarded-For": "203.0.113.7"})
                clients.append(c)
            third = socketio.AsyncClient(reconnection=False)
            errors: list = []
            third.on("connect_error", errors.append)
            await connect_refused(third, url, transports=["websocket"], headers={"X-Forwarded-For": "203.0.113.7"})
            # The Engine.IO handshake is refused (HTTP 401): a WebSocket client sees no body, a
            # long-polling one reads why.
            polling = socketio.AsyncClient(reconnection=False)
            polling.on("connect_error", errors.append)
            await connect_refused(polling, url, transports=["polling"], headers={"X-Forwarded-For": "203.0.113.7"})
            assert "too many connections from your address (at most 2)" in str(errors[-1])
            other = socketio.AsyncClient(reconnection=False)
            await other.connect(url, transports=["websocket"], headers={"X-Forwarded-For": "198.51.100.9"})
            clients.append(other)
        finally:
            for c in clients:
                await c.disconnect()


async def test_cors_allowlist_for_http_and_socketio(stack: Stack, server: Server):
    allowed, denied = "https://app.example.com", "https://evil.example.net"
    with serving(stack, server.secret, "--cors", allowed) as url:
        async with aiohttp.ClientSession() as http:
            async with http.get(url + "/healthz", headers={"Origin": allowed}) as r:
                assert r.headers.get("Access-Control-Allow-Origin") == allowed
            async with http.get(url + "/healthz", headers={"Origin": denied}) as r:
                assert "Access-Control-Allow-Origin" not in r.headers
            async with http.options(
                url + "/tasks/x",
                headers={
                    "Origin": allowed,
                    "Access-Control-Request-Method": "GET",
                    "Access-Control-Request-Headers": "authorization",
                },
            ) as r:
                assert r.status == 204 and "Authorization" in r.headers["Access-Control-Allow-Headers"]
            async with http.options(url + "/tasks/x", headers={"Origin": denied}) as r:
                assert r.status == 403
        ok = socketio.AsyncClient(reconnection=False)
        await ok.connect(url, transports=["websocket"], headers={"Origin": allowed})
        await ok.disconnect()
        refused = socketio.AsyncClient(reconnection=False)
        await connect_refused(refused, url, transports=["websocket"], headers={"Origin": denied})


async def test_oversized_message_is_refused_and_the_server_stays_up(stack: Stack, server: Server):
    with serving(stack, server.secret, "--max-message-bytes", "4096") as url:
        w = await Watcher(url).connect(server.token("*"))
        try:
            with pytest.raises(Exception):
                await w.call("subscribe", {"task_id": "x", "token": "y" * 10_000}, timeout=5)
        finally:
            await w.close()
        assert http_get(url + "/healthz")[0] == 200
        assert (await final_state(url, server.token("*"), "fine", "PENDING"))["state"] == "PENDING"


async def test_a_client_that_stops_reading_is_shed_then_dropped_without_slowing_others(stack: Stack, server: Server):
    task_ids = [f"slow-{i}" for i in range(1000)]
    token = server.token("*")
    with serving(stack, server.secret, "--max-backlog", "64") as url:
        ws_url = url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
        async with aiohttp.ClientSession() as http:
            slow = await http.ws_connect(ws_url, max_msg_size=0)
            await slow.receive()  # Engine.IO open
            await slow.send_str("40" + json.dumps({"token": token}))
            await slow.receive()  # Socket.IO connect ack
            for n, start in enumerate(range(0, 1000, 100)):
                await slow.send_str(f"42{n}" + json.dumps(["subscribe", {"task_ids": task_ids[start : start + 100]}]))
                await slow.receive()
            # From here on the slow client reads nothing.
            healthy = await Watcher(url).connect(token)
            await healthy.subscribe(task_ids[:5])

            dispatcher_app = stack.celery
            exception = "RuntimeError('" + "x" * 1000 + "')"
            with dispatcher_app.connection_for_write() as conn:
                dispatcher = dispatcher_app.events.Dispatcher(conn, hostname="celery@forger")
                t = time.time()
                for round_ in range(6):
                    for task_id in task_ids:
                        t += 1e-5
                        dispatcher.send("task-received", uuid=task_id, timestamp=t, name="x")
                        t += 1e-5
                        dispatcher.send("task-started", uuid=task_id, timestamp=t)
                        t += 1e-5
                        dispatcher.send("task-retried", uuid=task_id, timestamp=t, exception=exception)
                        if task_id == task_ids[0]:
                            final_retry = t
                    await asyncio.sleep(0)
                dispatcher.close()
            # The healthy client hears the very last transition, untroubled by the slow one.
            last = await healthy.wait_for(task_ids[0], lambda s: s["updated_at"] == final_retry, timeout=30)
            assert last["state"] == "RETRY"
            wait_until(
                lambda: metric(url, "pushserver_slow_consumer_disconnects_total") >= 1,
                30,
                "the slow client to be disconnected",
            )
            assert metric(url, "pushserver_progress_shed_total") >= 0
            assert healthy.sio.connected
            await healthy.close()
            await slow.close()
        assert http_get(url + "/healthz")[0] == 200


async def test_malformed_packets_log_one_counted_line_not_a_traceback_each(stack: Stack, server: Server):
    """Anyone who can open a WebSocket can send junk: the log must not grow a traceback per frame."""
    proc, url = start_pushserver(
        f"security-junk-{time.time_ns()}", stack.broker, stack.backend, stack.log_dir, secret=server.secret
    )
    junk: list[str | bytes] = ["hello", "4garbage", "9", "4\x00", b"\x00\x01binary", "4" + "[" * 1000]
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(5):
                for frame in junk:
                    ws_url = url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
                    async with session.ws_connect(ws_url) as ws:
                        await ws.receive()  # the Engine.IO open packet
                        await (ws.send_bytes(frame) if isinstance(frame, bytes) else ws.send_str(frame))
                        # A Socket.IO connect after it: its answer, or the
                        # close the junk caused, says the junk was dealt with.
                        await ws.send_str("40")
                        reply = await ws.receive(timeout=5)
                        assert reply.type in (
                            aiohttp.WSMsgType.CLOSE,
                            aiohttp.WSMsgType.CLOSED,
                        ) or reply.data.startswith("4"), (frame, reply)
        # Still serving everyone else.
        task = stack.send("demo_progress", 2, 0.01)
        assert (await final_state(url, server.token(task.id), task.id, "SUCCESS"))["result"] == 2
    finally:
        proc.stop()
    log = proc.log()
    assert "Traceback" not in log
    lines = [line for line in log.splitlines() if "dropped a malformed packet from a client" in line]
    assert len(lines) == 1 and "1 so far" in lines[0], lines
