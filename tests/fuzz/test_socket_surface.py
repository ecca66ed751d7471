"""What a client may send beyond subscribe/unsubscribe payloads: other event names (the server's own
lifecycle names included), binary packets and attachment frames, and floods of messages.

Invariants: no event but ``subscribe``/``unsubscribe`` reaches a handler (an
ack-asking one gets ``bad_request``; the connection's subscriptions, slot and
limits are untouched); binary packets are refused and never buffered (the
connection answers right after them); a flood is cut at the documented rate
(``too_many``), and a client that keeps flooding is dropped with a
``pushserver:error`` notice.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from typing import Any

import aiohttp
import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from dev.stack import http_get

from .model import check_error
from .stack import FuzzStack, Server
from .strategies import JSON
from .support import LoopThread, SocketClient, count_case, encode_json, fuzz_settings

pytestmark = pytest.mark.integration

#: The `limits` server runs the default --message-rate: 50 a second after a burst of max(250, 5 x 50).
MESSAGE_RATE, MESSAGE_BURST = 50.0, 250
#: Over-limit packets within 10 s after which a client is dropped (pushserver/inbound.py FLOOD_STRIKES).
FLOOD_STRIKES = 100

RESERVED = [
    "connect",
    "disconnect",
    "connect_error",
    "message",
    "error",
    "task:update",
    "pushserver:error",
    "*",
    "__disconnect_final",
    "newListener",
    "Subscribe",
    "subscribe ",
    "unsubscribe\x00",
    "",
]
EVENT_NAMES = st.one_of(st.sampled_from(RESERVED), st.text(max_size=30)).filter(
    lambda name: name not in ("subscribe", "unsubscribe")
)
_addresses = itertools.count(1)


def fresh_address() -> str:
    n = next(_addresses)
    return f"10.{200 + (n >> 16 & 31)}.{n >> 8 & 255}.{n & 255}"


@pytest.fixture(scope="module")
def watched(fuzz_stack: FuzzStack, client: SocketClient) -> str:
    """A task the module's connection subscribes to first: no reserved event may take it away."""
    task_id = f"surface-watched-{time.time_ns()}"
    outcome = client.call("subscribe", {"task_id": task_id, "token": fuzz_stack.main.token([task_id])})
    assert outcome.ack and outcome.ack[0]["ok"], outcome
    return task_id


@fuzz_settings(300, shrink=False)
@given(name=EVENT_NAMES, args=st.lists(JSON, max_size=3))
@example(name="disconnect", args=["io client disconnect"])
@example(name="connect", args=[{"REMOTE_ADDR": "192.0.2.1", "HTTP_X_FORWARDED_FOR": "192.0.2.1"}, None])
@example(name="connect", args=[])
def test_other_event_names_never_reach_a_handler(
    fuzz_stack: FuzzStack, client: SocketClient, watched: str, name: str, args: list[Any]
) -> None:
    count_case("surface: other event names")
    before = fuzz_stack.main.readyz()
    outcome = client.call(name, *args)
    assert not outcome.closed, f"event {name!r} closed the connection ({outcome.close_reason})"
    assert outcome.acked, f"no ack for event {name!r}"
    assert check_error(outcome.ack[0]) == "bad_request", outcome.ack
    # Unsubscribing the watched task answers ok and subscribing again works: the
    # connection's state is its own, whatever the event claimed.
    after = fuzz_stack.main.readyz()
    assert after["subscriptions"] == before["subscriptions"], (name, before["subscriptions"], after["subscriptions"])


#: Binary packets: type 5 (event) or 6 (ack), an attachment count, a namespace, an ack id, JSON with placeholders.
BINARY_PACKETS = st.builds(
    lambda kind, count, nsp, ack_id, data: f"{kind}{count}-{nsp}{'' if ack_id is None else ack_id}{data}",
    st.sampled_from(["5", "6"]),
    st.one_of(st.integers(0, 3), st.integers(4, 10**12)),
    st.sampled_from(["", "/,", "/admin,"]),
    st.one_of(st.none(), st.integers(0, 10**6)),
    st.one_of(st.just('["subscribe",{"_placeholder":true,"num":0}]'), st.builds(encode_json, JSON)),
)


@fuzz_settings(200, shrink=False)
@given(packet=BINARY_PACKETS, frames=st.lists(st.binary(max_size=4096), max_size=8))
@example(packet='51000000000-7["subscribe",{"_placeholder":true,"num":0}]', frames=[b"\x04" + b"x" * 4000] * 8)
def test_binary_packets_are_refused_and_never_buffered(
    fuzz_stack: FuzzStack, client: SocketClient, client_loop: LoopThread, packet: str, frames: list[bytes]
) -> None:
    count_case("surface: binary packets")
    client.ensure_connected()
    sio = client.sio
    assert sio is not None

    async def send() -> None:
        await sio.eio.send(packet)
        for frame in frames:
            await sio.eio.send(frame)

    client_loop.run(send())
    # The probe is answered at once: nothing waits for the announced attachments.
    outcome = client.send_packet("2[]")
    assert not outcome.closed and outcome.ack == ({"ok": True},), (packet[:60], outcome)


def refusals(server: Server, reason: str) -> float:
    body = http_get(server.url + "/metrics")[1].decode()
    match = re.search(
        rf'^pushserver_client_messages_refused_total{{reason="{reason}"}} ([0-9.e+]+)$', body, re.MULTILINE
    )
    return float(match.group(1)) if match else 0.0


@fuzz_settings(25, shrink=False)
@given(
    count=st.integers(MESSAGE_BURST - 50, MESSAGE_BURST + FLOOD_STRIKES + 150),
    kinds=st.lists(st.sampled_from(["ack", "no-ack", "unknown", "binary"]), min_size=1, max_size=4),
)
@example(count=MESSAGE_BURST + FLOOD_STRIKES + 20, kinds=["ack"])
@example(count=MESSAGE_BURST + FLOOD_STRIKES + 20, kinds=["no-ack"])
@example(count=MESSAGE_BURST + 20, kinds=["ack", "unknown"])
def test_floods_are_cut_at_the_message_rate(
    fuzz_stack: FuzzStack, client_loop: LoopThread, count: int, kinds: list[str]
) -> None:
    """Sent back to back: about the burst gets through, an ack-asking message over it gets too_many, and
    more than FLOOD_STRIKES over it drop the connection with a pushserver:error notice."""
    count_case("surface: message floods")
    limits = fuzz_stack.limits
    frames = []
    for i in range(count):
        kind = kinds[i % len(kinds)]
        frames.append(
            {
                "ack": f'42{i}["unsubscribe",{{"task_id":"f{i}"}}]',
                "no-ack": f'42["unsubscribe",{{"task_id":"f{i}"}}]',
                "unknown": f'42{i}["flood-{i}",{i}]',
                "binary": f'451-{i}["subscribe",{{"_placeholder":true,"num":0}}]',
            }[kind]
        )
    rate_before, floods_before = refusals(limits, "rate"), refusals(limits, "flood")
    result = client_loop.run(_flood(limits, frames))
    over = refusals(limits, "rate") - rate_before
    dropped = refusals(limits, "flood") - floods_before
    event(f"dropped: {bool(dropped)}")
    assert over <= FLOOD_STRIKES + 1 and dropped in (0, 1), (over, dropped)
    assert dropped == result["dropped"] == (over > FLOOD_STRIKES), (over, result)
    if dropped:
        assert result["notice"]["code"] == "too_many" and "disconnected" in result["notice"]["message"], result
    else:
        admitted = count + 1 - over  # the Socket.IO connect took a token too
        assert min(count + 1, MESSAGE_BURST) <= admitted <= MESSAGE_BURST + MESSAGE_RATE * result["elapsed"] + 2, (
            admitted,
            result,
        )
    # Each ack-asking message over the rate was answered too_many (until the drop).
    assert result["too_many"] <= over, result
    if "ack" in kinds and not dropped and over >= len(kinds):
        assert result["too_many"] >= 1, result
    assert limits.healthy()


async def _flood(server: Server, frames: list[str]) -> dict[str, Any]:
    """Send ``frames`` over a raw WebSocket as fast as possible, then read every answer until quiet or closed."""
    url = server.url.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket"
    codes: list[str] = []
    notice = None
    dropped = False
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url, headers={"X-Forwarded-For": fresh_address()}) as ws,
    ):
        await ws.receive_str(timeout=5)
        await ws.send_str("40")
        assert (await ws.receive_str(timeout=5)).startswith("40")
        started = last = time.monotonic()
        for frame in frames:
            try:
                await ws.send_str(frame)
            except (ConnectionError, aiohttp.ClientError):
                break
        while True:
            try:
                msg = await ws.receive(timeout=1.5)
            except asyncio.TimeoutError:
                break
            if msg.type != aiohttp.WSMsgType.TEXT:
                dropped = True
                break
            last = time.monotonic()
            data = msg.data
            if data.startswith("43"):
                ack = json.loads(data[len(data) - len(data[2:].lstrip("0123456789")) :])[0]
                codes.append(ack.get("error", {}).get("code", "ok") if isinstance(ack, dict) else "ok")
            elif data.startswith('42["pushserver:error"'):
                notice = json.loads(data[2:])[1]
            elif data == "2":
                await ws.send_str("3")
    return {
        "too_many": codes.count("too_many"),
        "answered": len(codes),
        "dropped": dropped,
        "notice": notice,
        "elapsed": last - started,
    }
