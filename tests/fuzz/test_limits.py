"""The limits under fuzzing: the subscribe token bucket, connections per client address behind a trusted
proxy (X-Forwarded-For), and the CORS origin allowlist at the Socket.IO handshake."""

from __future__ import annotations

import itertools
import time
from typing import Any

import aiohttp
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from dev.stack import wait_until

from .model import check_error
from .stack import ALLOWED_ORIGIN, LIMITS_PER_IP, LIMITS_RATE, FuzzStack, Server
from .strategies import HEADER_VALUE, ORIGINS
from .support import LoopThread, SocketClient, count_case, fuzz_settings

pytestmark = pytest.mark.integration

#: pushserver serve --subscribe-rate R allows a burst of max(100, 5R) (a reconnecting page re-subscribes
#: all its tasks at once), then R per second.
BURST = max(100.0, 5 * LIMITS_RATE)
_addresses = itertools.count(1)


def fresh_address() -> str:
    n = next(_addresses)
    return f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"


@pytest.fixture(scope="module")
def limits(fuzz_stack: FuzzStack) -> Server:
    return fuzz_stack.limits


@fuzz_settings(40)
@given(
    rush=st.integers(0, int(BURST) + 40),
    well_formed=st.booleans(),
    calls=st.lists(st.tuples(st.sampled_from([0.0] * 8 + [0.005, 0.02, 0.1]), st.booleans()), max_size=12),
)
def test_subscribe_rate_limit(
    limits: Server, client_loop: LoopThread, rush: int, well_formed: bool, calls: list[tuple[float, bool]]
) -> None:
    """However subscribe calls are spaced, at most burst + rate x elapsed get past the bucket, and the
    first ``burst`` always do; a refusal is ``too_many`` and the connection stays up."""
    count_case("limits: subscribe rate")
    client = SocketClient(client_loop, limits.url, headers={"X-Forwarded-For": fresh_address()})
    assert client.connect(), client.connect_error
    try:
        token = limits.token(["rate-task"])

        def payload(well_formed: bool) -> Any:
            return {"task_id": "rate-task", "token": token} if well_formed else {"task_id": 5}

        start = time.monotonic()
        # The rush goes out back to back, as a reconnecting page's re-subscriptions do.
        acks = client.pipeline("subscribe", [payload(well_formed)] * rush)
        for gap, one_well_formed in calls:
            time.sleep(gap)
            acks.append(client.call("subscribe", payload(one_well_formed)).ack)
        elapsed = time.monotonic() - start
        assert client.connected and all(a is not None for a in acks), "a subscribe call got no ack"
        passed = limited = 0
        for (ack,) in acks:
            if isinstance(ack, dict) and ack.get("ok") is True:
                passed += 1
                continue
            code = check_error(ack, [token])
            if code == "too_many" and "rate" in ack["error"]["message"]:
                limited += 1
            else:
                assert code == "bad_request", ack
                passed += 1  # refused by the parser, so it got past the bucket
        event(f"rate-limited: {limited > 0}")
        assert passed <= BURST + LIMITS_RATE * elapsed + 1, (passed, elapsed)
        assert passed >= min(len(acks), BURST), (passed, len(acks))
    finally:
        client.close()


async def polling_handshake(url: str, forwarded_for: str) -> tuple[int, str]:
    """An Engine.IO long-polling handshake from ``forwarded_for``: its status and body."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(url + "/socket.io/?EIO=4&transport=polling", headers={"X-Forwarded-For": forwarded_for}) as r,
    ):
        return r.status, await r.text()


HOPS = st.one_of(st.ip_addresses().map(str), HEADER_VALUE.filter(lambda v: "," not in v and v.strip()))


@fuzz_settings(60)
@given(
    hop=HOPS,
    spoofed=st.lists(st.one_of(HOPS, st.just(""), st.just(" ")), min_size=1, max_size=6),
    n=st.integers(1, LIMITS_PER_IP + 3),
)
def test_connections_per_address(limits: Server, client_loop: LoopThread, hop: str, spoofed: list[str], n: int) -> None:
    """Behind --trust-proxy the address is the last X-Forwarded-For hop (the one our proxy appended):
    whatever a client writes to its left, at most --max-connections-per-ip connections (Engine.IO
    sessions) per address, the rest refused with a reason; closing them frees the address again."""
    count_case("limits: connections per address")
    hop = f"{hop.strip()}-{next(_addresses)}"  # an address no earlier example left half-closed
    clients = []
    try:
        for i in range(n):
            header = f"{spoofed[i % len(spoofed)]}, {hop}"
            client = SocketClient(client_loop, limits.url, headers={"X-Forwarded-For": header}, connect_timeout=3.0)
            clients.append(client)
            accepted = client.connect()
            if i < LIMITS_PER_IP:
                assert accepted, f"connection {i + 1} from {hop!r} refused: {client.connect_error!r}"
            else:
                assert not accepted, f"connection {i + 1} from {hop!r} accepted (limit {LIMITS_PER_IP})"
                # Refused at the Engine.IO handshake (HTTP 401): the reason is in the body, which
                # a WebSocket client never sees and a long-polling handshake shows.
                status, body = client_loop.run(polling_handshake(limits.url, header))
                assert status == 401 and "too many connections" in body, (status, body)
    finally:
        for client in clients:
            client.close()
    again = SocketClient(client_loop, limits.url, headers={"X-Forwarded-For": hop}, connect_timeout=3.0)
    try:
        wait_until(again.connect, 5, f"{hop!r} to be free again after closing its connections", interval=0.05)
    finally:
        again.close()


@fuzz_settings(150)
@given(origin=st.one_of(st.none(), st.just(ALLOWED_ORIGIN), ORIGINS, HEADER_VALUE))
def test_socket_origins(fuzz_stack: FuzzStack, client_loop: LoopThread, origin: str | None) -> None:
    """--cors is enforced at the Socket.IO handshake too: only the allowlisted origin (or no Origin, as
    non-browser clients send) may connect."""
    count_case("limits: Socket.IO origins")
    headers = {} if origin is None else {"Origin": origin}
    client = SocketClient(client_loop, fuzz_stack.main.url, headers=headers, connect_timeout=3.0)
    try:
        accepted = client.connect()
    finally:
        client.close()
    event(f"accepted: {accepted}")
    if origin is None or not origin.strip() or origin.strip() == ALLOWED_ORIGIN:  # a blank Origin is none
        assert accepted, (origin, client.connect_error)
    else:
        assert not accepted, f"Origin {origin!r} connected; the allowlist is {ALLOWED_ORIGIN}"
