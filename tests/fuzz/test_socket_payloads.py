"""Subscribe and unsubscribe frames of every shape and size, over one real python-socketio connection.

Invariant: every well-formed Socket.IO frame for ``subscribe``/``unsubscribe``
gets an ack — ``{ok: true, ...}`` or ``{ok: false, error: {code, message}}``
with a protocol code — and the connection stays up. The one exception is
size: python-engineio serves WebSockets through aiohttp with
``max_msg_size=--max-message-bytes``, and aiohttp fails a message of that
many bytes *or more* with close code 1009 (message too big): the client
sees its connection closed — python-socketio reports the disconnect reason
"transport error" — and never gets an ack. That is asserted to the byte.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import aiohttp
import pytest
import socketio
from hypothesis import event, example, given
from hypothesis import strategies as st

from .model import check_error, check_ok, expected, make_token, requested_ids
from .stack import FuzzStack, Server
from .strategies import JSON, KNOWN, TOKEN, TOKEN_KINDS, codec_rejected_json, payloads
from .support import (
    LARGEST_ACCEPTED,
    MAX_MESSAGE_BYTES,
    LoopThread,
    Outcome,
    SocketClient,
    count_case,
    encode_json,
    fill,
    fuzz_settings,
)

pytestmark = pytest.mark.integration

#: What python-socketio's client reports when the server closes the WebSocket under it (1009 included).
TOO_BIG_REASON = socketio.AsyncClient.reason.TRANSPORT_ERROR


def placeholders(stack: FuzzStack) -> dict[str, str]:
    return {KNOWN[0]: stack.secret_task, KNOWN[1]: "fuzz-other-task", KNOWN[2]: f"fresh-{uuid.uuid4()}"}


def fill_token(payload: Any, kind: str, server: Server) -> Any:
    if isinstance(payload, dict) and payload.get("token") == TOKEN:
        payload = {**payload, "token": make_token(kind, requested_ids(payload), server)}
    return payload


def assert_size_rule(outcome: Outcome, client: SocketClient) -> bool:
    """Apply the size rule; True when the frame was too big (and the connection is re-opened)."""
    if outcome.frame_bytes >= MAX_MESSAGE_BYTES:
        assert outcome.closed and not outcome.acked, (
            f"a {outcome.frame_bytes}-byte message (limit {MAX_MESSAGE_BYTES}) should close the connection"
        )
        assert outcome.close_reason == TOO_BIG_REASON, outcome.close_reason
        client.connect()
        return True
    assert not outcome.closed, (
        f"the server closed the connection ({outcome.close_reason}) on a well-formed {outcome.frame_bytes}-byte frame"
    )
    assert outcome.acked, f"no ack for a well-formed {outcome.frame_bytes}-byte frame"
    return False


@fuzz_settings(2500)
@given(payload=payloads(), kind=TOKEN_KINDS)
@example(payload={"task_id": KNOWN[0], "token": TOKEN}, kind="exact")
@example(payload={"task_id": KNOWN[0], "token": TOKEN}, kind="other-task")
@example(payload={"task_ids": [KNOWN[0], KNOWN[2], KNOWN[0]], "token": TOKEN}, kind="old-secret")
@example(payload={"task_ids": ["t%d" % i for i in range(5000)], "token": None}, kind="exact")
def test_subscribe_payloads(fuzz_stack: FuzzStack, main: Server, client: SocketClient, payload: Any, kind: str) -> None:
    count_case("socket: subscribe payloads")
    payload = fill_token(fill(payload, placeholders(fuzz_stack)), kind, main)
    outcome = client.call("subscribe", payload)
    if assert_size_rule(outcome, client):
        return
    assert len(outcome.ack) == 1, f"an ack has exactly one argument: {outcome.ack!r}"
    ack = outcome.ack[0]
    allowed = expected(payload, main, subscribe=True)
    token = payload.get("token") if isinstance(payload, dict) else None
    if isinstance(ack, dict) and ack.get("ok") is True:
        event("ok")
        assert "ok" in allowed, f"subscribe granted, but the protocol says {allowed}: {payload!r}"
        ids = requested_ids(payload)
        check_ok(ack, ids, token, main)
        undo = client.call("unsubscribe", {"task_ids": list(dict.fromkeys(ids))})
        assert undo.ack == ({"ok": True},), undo
    else:
        code = check_error(ack, [token])
        event(code)
        assert code in allowed, f"got {code!r}, the protocol says {allowed} for {payload!r}"


@fuzz_settings(800)
@given(payload=payloads(), kind=TOKEN_KINDS)
def test_unsubscribe_payloads(
    fuzz_stack: FuzzStack, main: Server, client: SocketClient, payload: Any, kind: str
) -> None:
    count_case("socket: unsubscribe payloads")
    payload = fill_token(fill(payload, placeholders(fuzz_stack)), kind, main)
    outcome = client.call("unsubscribe", payload)
    if assert_size_rule(outcome, client):
        return
    (ack,) = outcome.ack
    allowed = expected(payload, main, subscribe=False)
    if isinstance(ack, dict) and ack.get("ok") is True:
        assert "ok" in allowed and ack == {"ok": True}, (ack, allowed)
    else:
        assert check_error(ack) in allowed


@st.composite
def sized_frames(draw: st.DrawFn) -> tuple[str, int]:
    """A subscribe frame padded to an exact message size around the limit (padding in the task id or token)."""
    size = draw(
        st.one_of(
            st.integers(MAX_MESSAGE_BYTES - 64, MAX_MESSAGE_BYTES + 64),
            st.integers(MAX_MESSAGE_BYTES - 5000, MAX_MESSAGE_BYTES + 5000),
        )
    )
    where = draw(st.sampled_from(["task_id", "token", "junk"]))
    return where, size


@fuzz_settings(80)
@given(frame=sized_frames())
@example(frame=("task_id", LARGEST_ACCEPTED))
@example(frame=("task_id", MAX_MESSAGE_BYTES))
@example(frame=("token", MAX_MESSAGE_BYTES + 1))
def test_frames_around_the_size_limit(client: SocketClient, frame: tuple[str, int]) -> None:
    count_case("socket: frames around 64 KiB")
    where, size = frame
    head = '["subscribe",{"task_id":"' if where != "token" else '["subscribe",{"task_id":"x","token":"'
    tail = '"}]' if where != "junk" else '","junk":1}]'
    outcome = client.send_json(lambda used: head + "x" * (size - used - len(head) - len(tail)) + tail)
    assert outcome.frame_bytes == size, "the frame was not the intended size"
    if size >= MAX_MESSAGE_BYTES:
        assert outcome.closed and not outcome.acked, f"{size} bytes: expected the connection closed"
        assert outcome.close_reason == TOO_BIG_REASON, outcome.close_reason
        client.connect()
    else:
        assert not outcome.closed and outcome.acked, f"{size} bytes: expected an ack on a live connection"
        # 'x' * 65000 is no task id (bad_request) and no token (unauthorized: too long)
        assert check_error(outcome.ack[0]) in {"bad_request", "unauthorized"}


def test_oversize_message_is_closed_with_1009(fuzz_stack: FuzzStack, client_loop: LoopThread) -> None:
    """At the wire: the handshake announces maxPayload, and a message of that size is closed with 1009."""

    async def probe(size: int) -> tuple[dict, Any]:
        url = fuzz_stack.main.url.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket"
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(url) as ws:
                opened = await ws.receive_str(timeout=5)
                assert opened.startswith("0")
                handshake = json.loads(opened[1:])
                await ws.send_str("40")
                assert (await ws.receive_str(timeout=5)).startswith("40")
                head = '421["subscribe",{"task_id":"'
                await ws.send_str(head + "x" * (size - len(head) - 3) + '"}]')
                reply = await ws.receive(timeout=5)
                return handshake, (reply.type, reply.data if reply.type != aiohttp.WSMsgType.TEXT else reply.data[:40])

    handshake, reply = client_loop.run(probe(MAX_MESSAGE_BYTES))
    assert handshake["maxPayload"] == MAX_MESSAGE_BYTES
    assert reply == (aiohttp.WSMsgType.CLOSE, aiohttp.WSCloseCode.MESSAGE_TOO_BIG), reply
    _, reply = client_loop.run(probe(LARGEST_ACCEPTED))
    assert reply[0] == aiohttp.WSMsgType.TEXT and reply[1].startswith("431[{"), reply
    assert fuzz_stack.main.healthy()


@fuzz_settings(150, shrink=False)
@given(
    first=payloads(), extra=st.lists(JSON, min_size=1, max_size=3), event=st.sampled_from(["subscribe", "unsubscribe"])
)
@example(first={"task_id": "a"}, extra=[{"x": 1}], event="subscribe")
@example(first={"task_id": "a"}, extra=[None], event="unsubscribe")
def test_extra_arguments_get_an_ack(
    fuzz_stack: FuzzStack, client: SocketClient, first: Any, extra: list, event: str
) -> None:
    """``socket.emit("subscribe", payload, more, cb)`` is a well-formed frame (the ack is the last argument
    in JS): it must be answered, with bad_request or by ignoring the extra arguments."""
    count_case("socket: extra arguments")
    outcome = client.call(event, fill(first, placeholders(fuzz_stack)), *extra)
    if assert_size_rule(outcome, client):
        return
    ack = outcome.ack[0]
    if not (isinstance(ack, dict) and ack.get("ok") is True):
        check_error(ack)


@fuzz_settings(150, shrink=False)
@given(value=codec_rejected_json(), event=st.sampled_from(["subscribe", "unsubscribe"]))
@example(value='{"task_id":"\\ud800"}', event="subscribe")
@example(value='{"task_id":1e400}', event="subscribe")
@example(value='{"task_id":' + "9" * 400 + "}", event="unsubscribe")
@example(value="[" * 1025 + "]" * 1025, event="subscribe")
def test_json_the_codec_refuses_gets_an_ack(client: SocketClient, value: str, event: str) -> None:
    """RFC 8259 allows lone surrogate escapes, numbers beyond a double and any depth (implementations may
    limit them): a frame the server's codec refuses must still be answered — bad_request, or whatever the
    payload deserves if the server reads it after all — not dropped."""
    count_case("socket: JSON the codec refuses")
    outcome = client.send_json(f'["{event}",{value}]')
    if assert_size_rule(outcome, client):
        return
    ack = outcome.ack[0]
    if not (isinstance(ack, dict) and ack.get("ok") is True):
        check_error(ack)


#: Socket.IO packets that are not a well-formed event of ours. None may take the connection down.
MALFORMED = st.one_of(
    st.builds(
        lambda data: "2" + data,
        st.sampled_from(
            ["[]", "{}", '"subscribe"', "[1]", "[null]", "[[]]", "[{}]", '["subscribe"', "", "x", "[1,2,3]"]
        ),
    ),
    st.builds(lambda data: "2" + encode_json(data), JSON),
    st.builds(lambda i, data: f"2{i}{encode_json(data)}", st.integers(0, 10**120), JSON),
    st.builds(
        lambda t, data: f"{t}{data}",
        st.sampled_from(["3", "31", "37", "4", "7", "8", "9", "x", "-", " "]),
        st.sampled_from(["", "[]", '["x"]', "{}", "junk"]),
    ),
    st.builds(lambda nsp, data: f"2/{nsp},{encode_json(data)}", st.text(max_size=8), JSON),
    st.builds(lambda nsp: f"0/{nsp},", st.text(st.characters(min_codepoint=97, max_codepoint=122), max_size=8)),
    st.text(max_size=50).filter(lambda s: s[:1] not in ("1", "5", "6")),
)


@fuzz_settings(400)
@given(packet=MALFORMED)
@example(packet="2[]")
@example(packet="2{}")
@example(packet='2["nonexistent",1]')
def test_malformed_packets_keep_the_connection(fuzz_stack: FuzzStack, client: SocketClient, packet: str) -> None:
    """Packets that are not events of ours (bad JSON shape, unknown types, other namespaces, stray
    acks): no ack is owed (an ack-asking unknown event gets bad_request), but the connection and the
    server must survive them."""
    count_case("socket: malformed packets")
    outcome = client.send_packet(packet)
    assert not outcome.closed, f"packet {packet[:80]!r} closed the connection ({outcome.close_reason})"
    assert outcome.ack == ({"ok": True},), f"the connection stopped answering after {packet[:80]!r}"


@fuzz_settings(150)
@given(
    payload=st.one_of(
        st.binary(max_size=200),
        st.builds(lambda b: {"task_id": b}, st.binary(max_size=300)),
        st.builds(lambda b: {"task_ids": [b, "x"]}, st.binary(max_size=50)),
        st.builds(lambda b: {"task_id": "x", "token": b}, st.binary(max_size=50)),
        st.builds(lambda b: {"task_id": {"_placeholder": True, "num": 0}, "x": b}, st.binary(max_size=10)),
    )
)
def test_binary_payloads(client: SocketClient, client_loop: LoopThread, payload: Any) -> None:
    """Binary attachments, through the client's public ``emit``: bytes are never a task id or a token."""
    count_case("socket: binary payloads")
    client.ensure_connected()

    async def emit() -> Any:
        done: asyncio.Future = asyncio.get_running_loop().create_future()
        await client.sio.emit("subscribe", payload, callback=lambda *a: done.done() or done.set_result(a))
        return await asyncio.wait_for(done, 5)

    ack = client_loop.run(emit())
    assert check_error(ack[0]) in {"bad_request", "unauthorized"}
