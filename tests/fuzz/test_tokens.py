"""Random and mutated tokens at subscribe, at connect and over HTTP.

The judge is ``oracle.py`` (RFC 7515/7519 and the protocol, not PyJWT):
a token that is not an authentic HS256 token naming the task never gets
``ok: true``/200 and never sees the task's state; a clean, valid one always
does; odd-but-authentic tokens may go either way.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from .model import check_error, check_ok, expected
from .oracle import INVALID, VALID, b64url, judge, judge_token, make_token, names, unb64url
from .stack import AUDIENCE, ISSUER, MARKER, FuzzStack, Server
from .strategies import CLAIM_VALUES, EDGE_EXPIRIES, MUTATIONS, ODD_ALGS, claim_sets
from .support import MAX_MESSAGE_BYTES, LoopThread, SocketClient, count_case, fuzz_settings

pytestmark = pytest.mark.integration

B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@pytest.fixture(scope="module")
def http(client_loop: LoopThread) -> Iterator[aiohttp.ClientSession]:
    async def open_session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

    session = client_loop.run(open_session())
    yield session
    client_loop.run(session.close())


# -- making tokens -------------------------------------------------------------------


def right_claims(task: str, now: int) -> dict[str, Any]:
    return {
        "tasks": [task],
        "exp": now + 600,
        "aud": AUDIENCE,
        "iss": ISSUER,
        "iat": now - 10,
        "nbf": now - 10,
        "sub": "user-1",
        "jti": "jti-1",
    }


def fill_claims(claims: dict[str, Any], task: str, data: st.DataObject) -> dict[str, Any]:
    now = int(time.time())
    right = right_claims(task, now)
    # "*" among other ids is refused (a wildcard only as the whole claim): the oracle says so.
    right["tasks"] = data.draw(
        st.sampled_from([[task], ["*"], ["other", task], [task, task], ["*", task], ["other", "*"]]), label="tasks"
    )
    out = {}
    for key, value in claims.items():
        if isinstance(value, str) and value.startswith("\x00<right:"):
            out[key] = right[value[len("\x00<right:") : -2]]
        else:
            out[key] = value
    return out


def mutated_token(kind: str, task: str, server: Server, data: st.DataObject) -> str:
    """A token made by one mutation of a valid token (or of its parts), drawn step by step."""
    secret = server.expect.secrets[0]
    valid = server.token([task])
    header, payload, signature = valid.split(".")
    draw = data.draw
    now = int(time.time())

    def flip_segment(index: int) -> str:
        parts = [header, payload, signature]
        raw = bytearray(unb64url(parts[index]) or b"")
        at = draw(st.integers(0, len(raw) - 1), label="byte")
        raw[at] ^= 1 << draw(st.integers(0, 7), label="bit")
        parts[index] = b64url(bytes(raw))
        return ".".join(parts)

    def with_header(new_header: Any, sign_with: Any = "keep") -> str:
        header_text = json.dumps(new_header, separators=(",", ":"))
        h = b64url(header_text.encode())
        if sign_with == "keep":
            return f"{h}.{payload}.{signature}"
        if sign_with is None:
            return f"{h}.{payload}."
        return make_token(header_text, _payload_text(payload), secret, sign_with)

    if kind == "valid":
        return valid
    if kind == "valid-old-secret":
        return server.token([task], secret=server.expect.secrets[1])
    if kind.startswith("bitflip-"):
        return flip_segment(["bitflip-header", "bitflip-payload", "bitflip-signature"].index(kind))
    if kind == "charflip":
        at = draw(st.integers(0, len(valid) - 1), label="at")
        flipped = chr((ord(valid[at]) ^ (1 << draw(st.integers(0, 6), label="bit"))) or 1)
        return valid[:at] + flipped + valid[at + 1 :]
    if kind == "truncate":
        return valid[: draw(st.integers(0, len(valid) - 1), label="keep")]
    if kind == "extend":
        return valid + draw(st.text(alphabet=B64 + "=.", min_size=1, max_size=8), label="tail")
    if kind == "drop-signature":
        return draw(
            st.sampled_from(
                [
                    f"{header}.{payload}.",
                    f"{header}.{payload}",
                    f"{header}..{signature}",
                    f".{payload}.{signature}",
                    f"{payload}.{signature}",
                ]
            ),
            label="shape",
        )
    if kind == "swap-segments":
        return draw(
            st.sampled_from(
                [
                    f"{payload}.{header}.{signature}",
                    f"{header}.{signature}.{payload}",
                    f"{signature}.{payload}.{header}",
                ]
            ),
            label="order",
        )
    if kind == "extra-segment":
        return draw(
            st.sampled_from(
                [
                    f"{valid}.{signature}",
                    f"{header}.{payload}.{payload}.{signature}",
                    f"{header}.{header}.{payload}.{signature}",
                    f"{valid}.",
                ]
            ),
            label="shape",
        )
    if kind == "whitespace":
        at = draw(st.integers(0, len(valid)), label="at")
        return valid[:at] + draw(st.sampled_from([" ", "\t", "%20", "+", "\u00a0", "\x00"]), label="ws") + valid[at:]
    if kind == "pad-signature":
        return valid + draw(st.sampled_from(["=", "==", "===", "A", "AA"]), label="pad")
    if kind == "repeat":
        return draw(
            st.sampled_from([valid + valid, f"{valid}.{valid}", f"{valid} {valid}", f"{valid},{valid}"]), label="how"
        )
    if kind == "alg-swap-keep-signature":
        return with_header({"alg": draw(ODD_ALGS, label="alg"), "typ": "JWT"})
    if kind == "alg-swap-resign":
        # Signed correctly with HMAC-SHA256 and the real secret, but labelled with another algorithm.
        return with_header({"alg": draw(ODD_ALGS, label="alg"), "typ": "JWT"}, hashlib.sha256)
    if kind == "alg-none":
        alg = draw(st.sampled_from(["none", "None", "NONE", "nOnE"]), label="alg")
        how = draw(st.sampled_from(["empty", "keep"]), label="signature")
        return with_header({"alg": alg, "typ": "JWT"}, None if how == "empty" else "keep")
    if kind == "other-hmac":
        alg, digest = draw(st.sampled_from([("HS384", hashlib.sha384), ("HS512", hashlib.sha512)]), label="alg")
        return make_token({"alg": alg, "typ": "JWT"}, _payload_text(payload), secret, digest)
    if kind == "resign-claims":
        claims = fill_claims(draw(claim_sets(), label="claims"), task, data)
        return make_token({"alg": "HS256", "typ": "JWT"}, _dumps(claims), secret)
    if kind == "duplicate-claims":
        first = draw(st.sampled_from(["tasks", "exp", "aud", "iss"]), label="duplicated")
        bad = {"tasks": ["somebody-else"], "exp": now - 3600, "aud": "other-audience", "iss": "other-issuer"}[first]
        good = right_claims(task, now)
        body = _dumps(good)[1:-1]
        extra = f'"{first}":{_dumps(bad)}'
        text = "{" + (f"{extra},{body}" if draw(st.booleans(), label="bad first") else f"{body},{extra}") + "}"
        return make_token({"alg": "HS256", "typ": "JWT"}, text, secret)
    if kind == "exp-edge":
        claims = {**right_claims(task, now), "exp": draw(EDGE_EXPIRIES, label="exp")}
        return make_token({"alg": "HS256", "typ": "JWT"}, _dumps(claims), secret)
    if kind == "header-extras":
        extras = draw(
            st.dictionaries(
                st.sampled_from(["kid", "crit", "b64", "jku", "jwk", "x5u", "typ", "cty", "zip", "enc"]),
                CLAIM_VALUES,
                min_size=1,
                max_size=3,
            ),
            label="extras",
        )
        return make_token({"alg": "HS256", **extras}, _payload_text(payload), secret)
    if kind == "huge":
        size = draw(st.sampled_from([7000, 8192, 9000, 30000, 49000, 70000]), label="pad")
        return server.token([task], pad="x" * size)
    if kind == "case":
        return draw(st.sampled_from([valid.upper(), valid.lower(), valid.swapcase()]), label="case")
    raise ValueError(kind)


def _payload_text(segment: str) -> str:
    return (unb64url(segment) or b"{}").decode()


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


RANDOM_TOKENS = st.one_of(
    st.text(max_size=60),
    st.text(alphabet=B64 + ".", max_size=300),
    st.builds(lambda a, b, c: f"{a}.{b}.{c}", *[st.text(alphabet=B64, max_size=60)] * 3),
    st.builds(lambda h, p: f"{b64url(h.encode())}.{b64url(p.encode())}.", st.text(max_size=40), st.text(max_size=40)),
)


@st.composite
def tokens(draw: st.DrawFn) -> tuple[str, Any]:
    """(kind, what to build): a mutation of a valid token, or random text."""
    if draw(st.integers(0, 5)) == 0:
        return "random", draw(RANDOM_TOKENS)
    return draw(MUTATIONS), None


def build(spec: tuple[str, Any], task: str, server: Server, data: st.DataObject) -> str:
    kind, value = spec
    return value if kind == "random" else mutated_token(kind, task, server, data)


# -- the tests -----------------------------------------------------------------------


def test_the_judge_and_the_server_agree_on_plain_tokens(
    fuzz_stack: FuzzStack, main: Server, client: SocketClient
) -> None:
    """Before fuzzing: a valid token (either secret) is granted, and the judge says so."""
    task = fuzz_stack.secret_task
    for token in (main.token([task]), main.token([task], secret=main.expect.secrets[1]), main.token(["*"])):
        assert judge(token, task, main.expect) == VALID
        ack = client.call("subscribe", {"task_id": task, "token": token}).ack[0]
        check_ok(ack, [task], token, main)
        assert client.call("unsubscribe", {"task_id": task}).ack == ({"ok": True},)
    for token in (main.token([task], ttl=-60), main.token(["other"]), main.token([task], aud="x")):
        assert judge(token, task, main.expect) == INVALID
        assert check_error(client.call("subscribe", {"task_id": task, "token": token}).ack[0], [token])


@fuzz_settings(1500)
@given(spec=tokens(), data=st.data())
def test_tokens_at_subscribe(
    fuzz_stack: FuzzStack, main: Server, client: SocketClient, spec: tuple, data: st.DataObject
) -> None:
    count_case("tokens: at subscribe")
    task = fuzz_stack.secret_task
    token = build(spec, task, main, data)
    payload = {"task_id": task, "token": token}
    outcome = client.call("subscribe", payload)
    if outcome.frame_bytes >= MAX_MESSAGE_BYTES:  # see test_socket_payloads: the connection is closed
        assert outcome.closed and not outcome.acked
        client.connect()
        return
    assert outcome.acked and not outcome.closed, outcome
    (ack,) = outcome.ack
    verdict = judge(token, task, main.expect)
    event(f"{spec[0]}: {verdict}")
    if isinstance(ack, dict) and ack.get("ok") is True:
        assert verdict != INVALID, f"granted with a token the judge refuses: {token!r}"
        check_ok(ack, [task], token, main)
        assert MARKER in ack["tasks"][0]["result"]
        assert client.call("unsubscribe", {"task_id": task}).ack == ({"ok": True},)
    else:
        code = check_error(ack, [token])
        assert verdict != VALID, f"refused ({ack['error']}) a valid token: {token!r}"
        assert code in expected(payload, main, subscribe=True), (code, ack, token)


@fuzz_settings(300)
@given(spec=tokens(), data=st.data())
def test_tokens_at_connect(
    fuzz_stack: FuzzStack, main: Server, client_loop: LoopThread, spec: tuple, data: st.DataObject
) -> None:
    count_case("tokens: at connect")
    task = fuzz_stack.secret_task
    token = build(spec, task, main, data)
    verdict, _ = judge_token(token, main.expect)
    event(f"{spec[0]}: {verdict}")
    conn = SocketClient(client_loop, main.url, token=token, connect_timeout=2.0)
    try:
        accepted = conn.connect()
        if not accepted:
            assert verdict != VALID, f"refused a valid token at connect ({conn.connect_error!r}): {token!r}"
            error = conn.connect_error
            message = error.get("message") if isinstance(error, dict) else error
            assert isinstance(message, str) and message, error
            assert MARKER not in message
            if len(token) >= 16 and len(token) < MAX_MESSAGE_BYTES - 100:
                assert token not in message, "connect_error echoes the token"
            return
        assert verdict != INVALID, f"accepted a token the judge refuses at connect: {token!r}"
        # Connected with it: subscribe without a token of its own relies on the connect token.
        outcome = conn.call("subscribe", {"task_id": task})
        (ack,) = outcome.ack
        if isinstance(ack, dict) and ack.get("ok") is True:
            assert judge(token, task, main.expect) != INVALID
            check_ok(ack, [task], None, main, connect_token=token)
        else:
            check_error(ack, [token])
            assert judge(token, task, main.expect) != VALID, ack
    finally:
        conn.close()


@fuzz_settings(1000)
@given(spec=tokens(), data=st.data(), route=st.sampled_from(["", "/events"]))
def test_tokens_over_http(
    fuzz_stack: FuzzStack,
    main: Server,
    http: aiohttp.ClientSession,
    client_loop: LoopThread,
    spec: tuple,
    data: st.DataObject,
    route: str,
) -> None:
    count_case("tokens: over HTTP")
    task = fuzz_stack.secret_task
    token = build(spec, task, main, data)
    header = f"Bearer {token}"
    if any(c in header for c in "\r\n\x00") or not header.isprintable() or len(header) > 8000:
        # Not a header value an HTTP client can send (aiohttp refuses; the server's limit is 8 KiB per line).
        return

    async def get() -> tuple[int, bytes, str]:
        async with http.get(f"{main.url}/tasks/{task}{route}", headers={"Authorization": header}) as response:
            return response.status, await response.read(), response.content_type

    status, body, content_type = client_loop.run(get())
    # HTTP trims the blanks around a header value, and the server those after "Bearer ".
    token = token.strip()
    verdict = judge(token, task, main.expect)
    event(f"{spec[0]}: {verdict}: {status}")
    assert status < 500 or (route == "/events" and status == 503), (status, body[:200])
    if status in (200, 503):
        assert verdict != INVALID and names(token, task, main.expect), f"{status} for {token!r}"
        if route == "":
            assert MARKER.encode() in body
        else:
            assert json.loads(body)["error"]["code"] == "unavailable"  # no --mongo: the event log is off
        return
    assert MARKER.encode() not in body, "task state in an error response"
    assert content_type == "application/json", content_type
    error = json.loads(body)["error"]
    assert error["code"] in {"unauthorized", "forbidden", "bad_request"} and error["message"], error
    assert {401: "unauthorized", 403: "forbidden", 400: "bad_request"}[status] == error["code"]
    assert verdict != VALID, f"{status} {error} for a valid token {token!r}"
    if len(token) >= 16:
        assert token not in error["message"]


@pytest.mark.parametrize("exp", [10**400, 2**1024], ids=["1e400", "2^1024"])
def test_an_expiry_beyond_any_float_is_answered(
    fuzz_stack: FuzzStack, main: Server, client: SocketClient, client_loop: LoopThread, exp: int
) -> None:
    """A signed token whose ``exp`` is an integer too large for a float (PyJWT accepts it: exp is in the
    future) must get an answer everywhere: an ack, a connect verdict with a message, an HTTP status < 500."""
    task = fuzz_stack.secret_task
    claims = {**right_claims(task, int(time.time())), "exp": exp}
    token = make_token({"alg": "HS256", "typ": "JWT"}, _dumps(claims), main.expect.secrets[0])
    problems = []
    outcome = client.call("subscribe", {"task_id": task, "token": token})
    if not outcome.acked:
        problems.append("subscribe: no ack")
    status, body = main.get(f"/tasks/{task}", {"Authorization": f"Bearer {token}"})
    if status >= 500:
        problems.append(f"GET /tasks/{{id}}: {status} {body[:80]!r}")
    conn = SocketClient(client_loop, main.url, token=token, connect_timeout=2.0)
    try:
        if not conn.connect():
            error = conn.connect_error
            message = error.get("message") if isinstance(error, dict) else None
            if not message or "namespaces failed" in str(message):
                problems.append(f"connect: refused without a reason ({error!r})")
    finally:
        conn.close()
    assert not problems, f"exp={str(exp)[:12]}... ({len(str(exp))} digits): " + "; ".join(problems)


def test_the_clock_leeway_applies_everywhere(
    fuzz_stack: FuzzStack, main: Server, client: SocketClient, client_loop: LoopThread
) -> None:
    """docs/protocol.md: "a few seconds of clock leeway are allowed" (--token-leeway, 5 s here). A token
    that expired 2 s ago is inside it: connect, subscribe and GET /tasks/{id} must agree and accept it."""
    task = fuzz_stack.secret_task
    token = main.token([task], ttl=-2)
    verdicts = {}
    conn = SocketClient(client_loop, main.url, token=token, connect_timeout=3.0)
    try:
        verdicts["connect"] = "accepted" if conn.connect() else f"refused: {conn.connect_error!r}"
    finally:
        conn.close()
    ack = client.call("subscribe", {"task_id": task, "token": token}).ack[0]
    verdicts["subscribe"] = "accepted" if ack.get("ok") else f"refused: {ack['error']}"
    if ack.get("ok"):
        client.call("unsubscribe", {"task_id": task})
    status, body = main.get(f"/tasks/{task}", {"Authorization": f"Bearer {token}"})
    verdicts["GET /tasks/{id}"] = "accepted" if status == 200 else f"refused: {status} {body[:90]!r}"
    assert set(verdicts.values()) == {"accepted"}, verdicts
