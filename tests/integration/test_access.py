"""Tokens, malformed payloads and the HTTP API against a running pushserver."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
import socketio

from dev.stack import http_get
from pushserver.auth import mint_token
from tests.support.clients import Watcher, connect_refused
from tests.support.stack import Server, Stack

pytestmark = pytest.mark.integration


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def bad_tokens(secret: str, task_id: str) -> dict[str, tuple[str, str]]:
    """Tokens a client may hold, each with the reason the server must give."""
    exp = int(time.time()) + 300
    return {
        "expired": (jwt.encode({"tasks": [task_id], "exp": int(time.time()) - 60}, secret, "HS256"), "expired"),
        "wrong-secret": (mint_token("not-the-secret-" * 3, [task_id]), "signature"),
        "alg-none": (f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64({'tasks': [task_id], 'exp': exp})}.", "algorithm"),
        "hs512": (jwt.encode({"tasks": [task_id], "exp": exp}, secret, "HS512"), "algorithm"),
        "no-exp": (jwt.encode({"tasks": [task_id]}, secret, "HS256"), "exp"),
        "garbage": ("not.a.token", "malformed"),
    }


@pytest.mark.parametrize("kind", ["expired", "wrong-secret", "alg-none", "hs512", "no-exp", "garbage"])
async def test_bad_token_at_connect_is_refused_with_a_reason(server: Server, kind: str):
    token, reason = bad_tokens(server.secret, "t1")[kind]
    client = socketio.AsyncClient(reconnection=False)
    errors: list = []
    client.on("connect_error", errors.append)
    await connect_refused(client, server.url, auth={"token": token}, transports=["websocket"], wait_timeout=10)
    assert len(errors) == 1
    message = errors[0]["message"] if isinstance(errors[0], dict) else str(errors[0])
    assert reason in message
    assert token not in message


@pytest.mark.parametrize("kind", ["expired", "wrong-secret", "alg-none", "hs512", "no-exp", "garbage"])
async def test_bad_token_at_subscribe_is_unauthorized(server: Server, watcher: Watcher, kind: str):
    token, reason = bad_tokens(server.secret, "t1")[kind]
    ack = await watcher.subscribe("t1", token=token)
    assert ack["ok"] is False
    assert ack["error"]["code"] == "unauthorized"
    assert reason in ack["error"]["message"]


async def test_subscribe_without_any_token_is_unauthorized(watcher: Watcher):
    ack = await watcher.subscribe("t1")
    assert ack["ok"] is False and ack["error"]["code"] == "unauthorized"


async def test_a_task_the_token_does_not_name_is_forbidden(stack: Stack, server: Server):
    mine, theirs = stack.send("demo_progress", 1, 0.0), stack.send("demo_progress", 1, 0.0)
    w = await Watcher(server.url).connect(token=server.token(mine.id))
    try:
        ack = await w.subscribe(theirs.id)
        assert ack["ok"] is False and ack["error"]["code"] == "forbidden"
        # Nothing of the other task leaks, even after it finishes.
        theirs.get(timeout=30)
        ok = await w.subscribe(mine.id)
        assert ok["ok"] is True
        await w.wait_state(mine.id, "SUCCESS")
        assert theirs.id not in w.updates
    finally:
        await w.close()


async def test_a_wildcard_token_watches_any_task(stack: Stack, server: Server):
    result = stack.send("demo_progress", 1, 0.0)
    w = await Watcher(server.url).connect(token=server.token("*"))
    try:
        assert (await w.subscribe(result.id))["ok"] is True
        await w.wait_state(result.id, "SUCCESS")
    finally:
        await w.close()


MALFORMED = [
    None,
    "a string",
    42,
    [1, 2],
    True,
    {},
    {"task_id": 5},
    {"task_id": ""},
    {"task_id": "x" * 256},
    {"task_id": "   "},
    {"task_ids": "abc"},
    {"task_ids": []},
    {"task_ids": [None]},
    {"task_ids": [{"a": 1}]},
    {"task_id": "a", "task_ids": ["b"]},
    {"task_id": "a", "token": 12},
    {"task_id": "é" * 10_000},
    {"task_ids": [["nested", ["deep"]]]},
]


async def test_malformed_payloads_get_bad_request_and_the_connection_stays(server: Server, watcher: Watcher):
    for payload in MALFORMED:
        ack = await watcher.call("subscribe", payload)
        assert ack["ok"] is False, payload
        assert ack["error"]["code"] == "bad_request", (payload, ack)
        assert ack["error"]["message"]
    too_many = await watcher.call("subscribe", {"task_ids": [f"t{i}" for i in range(101)]})
    assert too_many["error"]["code"] == "too_many"
    # Still connected and serving.
    assert watcher.sio.connected
    ack = await watcher.subscribe("still-here", token=server.token("still-here"))
    assert ack["ok"] is True


async def test_subscription_limit_per_connection(server: Server, watcher: Watcher):
    token = server.token("*")
    for start in range(0, 1000, 100):
        ack = await watcher.subscribe([f"limit-{i}" for i in range(start, start + 100)], token=token)
        assert ack["ok"] is True
    ack = await watcher.subscribe("limit-1000", token=token)
    assert ack["ok"] is False and ack["error"]["code"] == "too_many"
    assert (await watcher.call("unsubscribe", {"task_ids": ["limit-0"]})) == {"ok": True}
    assert (await watcher.subscribe("limit-1000", token=token))["ok"] is True


async def test_unsubscribed_client_hears_nothing_more(stack: Stack, server: Server, watcher: Watcher):
    result = stack.send("demo_progress", 6, 0.15)
    await watcher.subscribe(result.id, token=server.token(result.id))
    await watcher.wait_state(result.id, "PROGRESS")
    assert (await watcher.call("unsubscribe", {"task_id": result.id})) == {"ok": True}
    count = len(watcher.updates[result.id])
    result.get(timeout=30)
    # A second subscriber proves the SUCCESS was pushed; the first must not have it.
    other = await Watcher(server.url).connect(server.token(result.id))
    try:
        ack = await other.subscribe(result.id)
        assert ack["tasks"][0]["state"] == "SUCCESS"
    finally:
        await other.close()
    assert len(watcher.updates[result.id]) == count
    assert all(u["state"] != "SUCCESS" for u in watcher.updates[result.id])


def test_http_task_snapshot_needs_a_token(stack: Stack, server: Server):
    result = stack.send("demo_progress", 1, 0.0)
    result.get(timeout=30)
    url = f"{server.url}/tasks/{result.id}"

    status, body = http_get(url)
    assert status == 401 and json.loads(body)["error"]["code"] == "unauthorized"
    status, body = http_get(url, {"Authorization": f"Bearer {server.token('someone-else')}"})
    assert status == 403 and json.loads(body)["error"]["code"] == "forbidden"
    status, body = http_get(url, {"Authorization": "Bearer not.a.token"})
    assert status == 401 and "malformed" in json.loads(body)["error"]["message"]
    status, body = http_get(url, {"Authorization": f"Bearer {server.token(result.id)}"})
    assert status == 200
    snapshot = json.loads(body)
    assert snapshot["state"] == "SUCCESS" and snapshot["result"] == 1


def test_http_health_readiness_metrics_and_json_errors(server: Server):
    assert http_get(server.url + "/healthz")[0] == 200
    status, body = http_get(server.url + "/readyz")
    assert status == 200 and json.loads(body)["receiver"] == "connected"
    status, body = http_get(server.url + "/metrics")
    text = body.decode()
    assert status == 200
    for name in (
        "pushserver_events_ingested_total",
        "pushserver_updates_emitted_total",
        "pushserver_connected_clients",
        "pushserver_subscriptions",
        "pushserver_receiver_reconnects_total",
        "pushserver_event_to_emit_seconds_bucket",
    ):
        assert name in text, name
    status, body = http_get(server.url + "/no/such/route")
    assert status == 404 and json.loads(body)["error"]["code"] == "not_found"
