"""Hypothesis strategies for what browsers, networks and brokers can send pushserver."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import strategies as st

# -- JSON -------------------------------------------------------------------------

#: Characters a JSON string may carry and orjson (the server's codec) accepts:
#: everything but lone surrogates, which the suite sends separately.
CHARS = st.characters(exclude_categories=("Cs",))
NASTY_TEXT = st.sampled_from(
    [
        "",
        " ",
        "\t\n",
        "\x00",
        "\x00abc",
        "\u2028\u2029",
        "\ufeff",
        "\uffff",
        "\U0010ffff",
        "😀" * 3,
        "é" * 255,
        "a" * 255,
        "a" * 256,
        "*",
        "**",
        "task:",
        "task:*",
        "../../etc/passwd",
        "%00",
        "%2F",
        "<script>alert(1)</script>",
        "' OR 1=1 --",
        "${jndi:ldap://x}",
        "__proto__",
        "constructor",
        "null",
        "undefined",
        "NaN",
        "true",
        "0",
        "-1",
        "1e999",
        "[]",
        "{}",
        "\\",
        '"',
        "\r\nX-Injected: 1",
    ]
)


def text(max_size: int = 40) -> st.SearchStrategy[str]:
    return st.one_of(st.text(CHARS, max_size=max_size), NASTY_TEXT)


#: Numbers orjson reads back: ints within 64 bits, finite floats.
NUMBERS = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, -0.0, 1e308, -1e308, 5e-324, 2**53 + 1, 2**63 - 1, 2**64 - 1]),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, text())
JSON = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(text(12), inner, max_size=5), max_leaves=20
)


def nested(depth: int, leaf: Any = 0, kind: str = "list") -> Any:
    """A value nested ``depth`` levels deep (lists or objects)."""
    value = leaf
    for _ in range(depth):
        value = [value] if kind == "list" else {"a": value}
    return value


def nested_text(depth: int, kind: str = "list") -> str:
    """JSON text nested ``depth`` levels deep, built without recursion (the stdlib encoder recurses)."""
    if kind == "list":
        return "[" * depth + "0" + "]" * depth
    return '{"a":' * depth + "0" + "}" * depth


# -- subscribe / unsubscribe payloads -----------------------------------------------

#: Placeholder for "the token this case is about", filled in once the server's secrets are known.
TOKEN = "\x00<token>\x00"
#: Placeholders for task ids the stack knows (the secret task and the like).
KNOWN = ["\x00<secret>\x00", "\x00<other>\x00", "\x00<fresh>\x00"]

VALID_IDS = st.one_of(
    st.sampled_from(KNOWN),
    st.uuids().map(str),
    st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40),
    st.text(CHARS, min_size=1, max_size=255).filter(lambda s: not s.isspace()),
)
TASK_IDS = st.one_of(VALID_IDS, VALID_IDS, NASTY_TEXT, st.text(CHARS, min_size=250, max_size=260), SCALARS, JSON)


@st.composite
def many_ids(draw: st.DrawFn) -> list[Any]:
    """Hundreds or thousands of ids (cheap to build), sometimes with one bad apple."""
    n = draw(st.integers(90, 6000))
    prefix = draw(st.sampled_from(["", "t", "task-", "\x00<fresh>\x00"]))
    ids: list[Any] = [f"{prefix}{i}" for i in range(n)]
    if draw(st.booleans()):
        ids[draw(st.integers(0, n - 1))] = draw(TASK_IDS)
    return ids


ID_LISTS = st.one_of(
    st.lists(TASK_IDS, max_size=6), st.lists(VALID_IDS, min_size=1, max_size=110), many_ids(), SCALARS, JSON
)
TOKENS = st.one_of(st.just(TOKEN), st.just(TOKEN), st.just(TOKEN), st.none(), text(), SCALARS, JSON)


@st.composite
def payloads(draw: st.DrawFn) -> Any:
    """A subscribe/unsubscribe payload: mostly object-shaped, often nearly right, sometimes anything."""
    shape = draw(
        st.sampled_from(["good", "good", "good", "one", "one", "many", "many", "both", "neither", "junk", "deep"])
    )
    if shape == "junk":
        return draw(JSON)
    if shape == "deep":  # deep, within what the codec reads (orjson: 1024) and this stack can encode
        value = nested(draw(st.integers(20, 400)), draw(SCALARS), draw(st.sampled_from(["list", "object"])))
        return draw(st.sampled_from([value, {"task_id": value}, {"task_ids": value}, {"task_id": "x", "token": value}]))
    if shape == "good":  # right in form: only the token decides
        if draw(st.booleans()):
            return {"task_id": draw(VALID_IDS), "token": TOKEN}
        return {"task_ids": draw(st.lists(VALID_IDS, min_size=1, max_size=5)), "token": TOKEN}
    payload: dict[str, Any] = {}
    if shape in ("one", "both"):
        payload["task_id"] = draw(TASK_IDS)
    if shape in ("many", "both"):
        payload["task_ids"] = draw(ID_LISTS)
    if draw(st.integers(0, 9)) < 8:
        payload["token"] = draw(TOKENS)
    extra = draw(st.dictionaries(text(12), JSON, max_size=3))
    for key, value in extra.items():
        payload.setdefault(key, value)
    return payload


#: How the token of a case is made (see tests' ``materialize``).
TOKEN_KINDS = st.sampled_from(
    [
        "exact",
        "exact",
        "exact",
        "wildcard",
        "old-secret",
        "other-task",
        "first-only",
        "expired",
        "wrong-secret",
        "no-audience",
        "wrong-issuer",
        "garbage",
        "empty",
    ]
)


# -- JSON the codec refuses, though well-formed -----------------------------------------

LONE_SURROGATES = st.one_of(st.integers(0xD800, 0xDBFF), st.integers(0xDC00, 0xDFFF)).map(lambda cp: f"\\u{cp:04x}")


@st.composite
def codec_rejected_json(draw: st.DrawFn) -> str:
    """A well-formed JSON value (RFC 8259's grammar) that orjson refuses: lone surrogates, huge numbers, depth."""
    kind = draw(st.sampled_from(["surrogate", "surrogate-key", "big-int", "big-float", "deep-list", "deep-object"]))
    if kind == "surrogate":
        before = draw(st.text(st.characters(min_codepoint=97, max_codepoint=122), max_size=5))
        return json.dumps(before)[:-1] + draw(LONE_SURROGATES) + '"'
    if kind == "surrogate-key":
        return '{"task_id":"x","' + draw(LONE_SURROGATES) + '":1}'
    if kind == "big-int":
        return '{"task_id":' + "9" * draw(st.integers(310, 2000)) + "}"
    if kind == "big-float":
        return '{"task_id":1e' + str(draw(st.integers(309, 100000))) + "}"
    depth = draw(st.integers(1025, 20000))
    return nested_text(depth, "list" if kind == "deep-list" else "object")


# -- tokens ---------------------------------------------------------------------------

ALGORITHMS = st.sampled_from(
    [
        "none",
        "None",
        "NONE",
        "nOnE",
        "HS384",
        "HS512",
        "RS256",
        "ES256",
        "PS256",
        "EdDSA",
        "hs256",
        "HS256 ",
        " HS256",
        "HS256\x00",
        "HS2560",
        "",
        "HS 256",
    ]
)
ODD_ALGS = st.one_of(
    ALGORITHMS, st.none(), st.integers(), st.lists(st.just("HS256"), min_size=1, max_size=2), st.just({"alg": "HS256"})
)

CLAIM_VALUES = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=3),
    JSON,
    st.sampled_from([math.inf, -math.inf, math.nan, 10**30, 2**64, 10**400, "9999999999"]),
)


@st.composite
def claim_sets(draw: st.DrawFn) -> dict[str, Any]:
    """Claims with every field right, wrong, missing or odd (to be signed with the real secret)."""
    claims: dict[str, Any] = {}
    for name in ("tasks", "exp", "aud", "iss", "iat", "nbf", "sub", "jti"):
        how = draw(st.sampled_from(["right", "right", "missing", "odd"]))
        if how == "right":
            claims[name] = draw(st.just(f"\x00<right:{name}>\x00"))
        elif how == "odd":
            claims[name] = draw(CLAIM_VALUES)
    claims.update(draw(st.dictionaries(text(8), CLAIM_VALUES, max_size=2)))
    return claims


MUTATIONS = st.sampled_from(
    [
        "bitflip-header",
        "bitflip-payload",
        "bitflip-signature",
        "charflip",
        "truncate",
        "extend",
        "drop-signature",
        "swap-segments",
        "extra-segment",
        "whitespace",
        "pad-signature",
        "repeat",
        "alg-swap-keep-signature",
        "alg-swap-resign",
        "alg-none",
        "other-hmac",
        "resign-claims",
        "duplicate-claims",
        "header-extras",
        "huge",
        "case",
        "valid",
        "valid-old-secret",
        "exp-edge",
    ]
)
#: ``exp`` values at the edges of what JSON, PyJWT and floats can hold.
EDGE_EXPIRIES = st.sampled_from(
    [
        10**400,
        10**20,
        2**63,
        2**64,
        1e308,
        math.inf,
        -math.inf,
        math.nan,
        "9999999999",
        "1e400",
        True,
        False,
        None,
        -1,
        0,
        2**53 + 0.5,
        [],
        {},
    ]
)


# -- HTTP -----------------------------------------------------------------------------

PATH_CHARS = st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="?#")


@st.composite
def http_paths(draw: st.DrawFn) -> tuple[str, str | None]:
    """A request path (already percent-encoded where needed) and the task id it names, if any."""
    from urllib.parse import quote

    kind = draw(st.sampled_from(["task", "task", "events", "health", "unknown", "socketio", "weird"]))
    if kind in ("task", "events"):
        task_id = draw(
            st.one_of(st.sampled_from(KNOWN), VALID_IDS, NASTY_TEXT, st.text(CHARS, min_size=250, max_size=300))
        )
        encoded = draw(st.sampled_from(["quote", "quote", "raw-ascii", "double"]))
        if encoded == "raw-ascii" and all(33 <= ord(c) < 127 and c not in "?#%/" for c in task_id):
            segment = task_id
        elif encoded == "double":
            segment = quote(quote(task_id, safe=""), safe="")
        else:
            segment = quote(task_id, safe="")
        suffix = "/events" if kind == "events" else draw(st.sampled_from(["", "", "", "", "/", "//", "/x", "/../"]))
        return f"/tasks/{segment}{suffix}", task_id
    if kind == "health":
        base = draw(st.sampled_from(["/healthz", "/readyz", "/metrics"]))
        return base + draw(st.sampled_from(["", "", "/", "x", "/..", ".json"])), None
    if kind == "socketio":
        return "/socket.io/" + draw(st.sampled_from(["", "x", "../tasks/x"])), None
    if kind == "weird":
        return draw(
            st.sampled_from(
                [
                    "/",
                    "//",
                    "/tasks",
                    "/tasks/",
                    "/tasks//events",
                    "/TASKS/x",
                    "/%2e%2e/",
                    "/tasks/%",
                    "/tasks/%zz",
                    "/tasks/%00",
                    "/tasks/%ff%fe",
                    "/./healthz",
                    "/healthz%00",
                    "/" + "a" * 5000,
                    "/tasks/" + "%41" * 300,
                ]
            )
        ), None
    return "/" + "/".join(draw(st.lists(st.text(PATH_CHARS, min_size=1, max_size=12), min_size=1, max_size=4))), None


HEADER_NAME = st.text(
    st.characters(min_codepoint=33, max_codepoint=126, exclude_characters='()<>@,;:\\"/[]?={} \t'),
    min_size=1,
    max_size=20,
)
HEADER_VALUE = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=200)
ORIGINS = st.one_of(
    st.sampled_from(
        [
            "https://app.example.com",
            "https://app.example.com.evil.com",
            "https://evil.com",
            "null",
            "http://app.example.com",
            "https://APP.example.com",
            "https://app.example.com/",
            "*",
            "",
        ]
    ),
    HEADER_VALUE,
)
AUTH_KINDS = st.sampled_from(
    [
        "none",
        "exact",
        "exact",
        "wildcard",
        "other-task",
        "expired",
        "wrong-secret",
        "garbage",
        "scheme-only",
        "basic",
        "lowercase-bearer",
        "double-space",
        "mutated",
        "mutated",
    ]
)


# -- Celery events --------------------------------------------------------------------

TASK_EVENT_TYPES = [
    "task-sent",
    "task-received",
    "task-started",
    "task-progress",
    "task-retried",
    "task-succeeded",
    "task-failed",
    "task-revoked",
    "task-rejected",
]
OTHER_EVENT_TYPES = [
    "worker-online",
    "worker-heartbeat",
    "worker-offline",
    "task-cancelled",
    "task-unknown",
    "task",
    "",
    "TASK-SUCCEEDED",
]

#: Values that may reach Python from the broker's JSON (kombu's json reads NaN and Infinity too).
EVENT_JUNK = st.one_of(
    SCALARS, JSON, st.sampled_from([math.nan, math.inf, -math.inf, 10**30, -(10**30), 2**64, 2**70, 10**400])
)
#: Numbers Celery's receiver can do arithmetic with (``timestamp - (utcoffset - here) * 3600``):
#: an int too large for a float (10 ** 400) makes it raise, and is among the undecodable events.
CELERY_NUMBERS = st.one_of(
    st.floats(), st.integers(-(10**20), 10**20), st.booleans(), st.sampled_from([10**30, 2**64, -(2**63) - 1])
)
HUGE_FIELDS = ["result", "exception", "traceback", "message", "name", "hostname", "uuid"]


def huge_text() -> st.SearchStrategy[str]:
    """Up to half a million characters: up to 8 MB on the wire (an emoji is 12 bytes of JSON escapes, then
    base64), under the 32 MB at which Redis cuts a pub/sub subscriber off (docs/security.md)."""
    return st.builds(lambda n, c: c * n, st.integers(1000, 500_000), st.sampled_from(["x", "é", "😀", "\x00"]))


@st.composite
def celery_events(draw: st.DrawFn, ids: list[str]) -> dict[str, Any]:
    """An event dict Celery's receiver can decode (type present and hashable, numeric clock and
    timestamps), with everything else missing, wrong, huge or odd."""
    event: dict[str, Any] = {
        "type": draw(
            st.one_of(
                st.sampled_from(TASK_EVENT_TYPES * 3 + OTHER_EVENT_TYPES),
                st.text(CHARS, max_size=30),
                st.integers(),
                st.none(),
            )
        )
    }
    optional = {
        "uuid": st.one_of(st.sampled_from(ids), st.sampled_from(ids), text(), EVENT_JUNK),
        "hostname": st.one_of(text(), EVENT_JUNK),
        "timestamp": CELERY_NUMBERS,
        "utcoffset": CELERY_NUMBERS,
        "clock": st.one_of(st.integers(0, 10**30), st.floats(), st.booleans()),
        "local_received": CELERY_NUMBERS,
        "pid": EVENT_JUNK,
        "name": st.one_of(text(), EVENT_JUNK),
        "result": st.one_of(text(), EVENT_JUNK),
        "exception": st.one_of(text(), EVENT_JUNK),
        "traceback": st.one_of(text(), EVENT_JUNK),
        "runtime": st.one_of(CELERY_NUMBERS, EVENT_JUNK),
        "retries": st.one_of(st.integers(), EVENT_JUNK),
        "current": st.one_of(CELERY_NUMBERS, EVENT_JUNK),
        "total": st.one_of(CELERY_NUMBERS, EVENT_JUNK),
        "percent": st.one_of(CELERY_NUMBERS, EVENT_JUNK),
        "message": st.one_of(text(), EVENT_JUNK),
        "requeue": EVENT_JUNK,
        "terminated": EVENT_JUNK,
        "expired": EVENT_JUNK,
        "signum": EVENT_JUNK,
        "args": st.one_of(text(), EVENT_JUNK),
        "kwargs": st.one_of(text(), EVENT_JUNK),
    }
    for name, strategy in optional.items():
        if draw(st.integers(0, 2)) == 0 or (name == "uuid" and draw(st.integers(0, 5)) > 0):
            event[name] = draw(strategy)
    if draw(st.integers(0, 24)) == 0:  # now and then a field of megabytes
        event[draw(st.sampled_from(HUGE_FIELDS))] = draw(huge_text())
    event.update(draw(st.dictionaries(text(10).filter(lambda k: k not in event), EVENT_JUNK, max_size=3)))
    return event


@st.composite
def undecodable_events(draw: st.DrawFn, ids: list[str]) -> Any:
    """Message bodies that Celery's receiver itself chokes on (exceptions out of ``capture()``)."""
    good = {
        "type": "task-started",
        "uuid": draw(st.sampled_from(ids)),
        "hostname": "h",
        "utcoffset": 0,
        "clock": 1,
        "timestamp": 1.0,
    }
    kind = draw(
        st.sampled_from(
            [
                "no-type",
                "clock",
                "timestamp",
                "utcoffset",
                "huge-number",
                "unhashable-type",
                "not-a-dict",
                "batch-with-bad",
            ]
        )
    )
    if kind == "no-type":
        return {k: v for k, v in good.items() if k != "type"}
    if kind == "clock":
        return {**good, "clock": draw(st.one_of(st.none(), text(), st.lists(st.integers(), max_size=2)))}
    if kind in ("timestamp", "utcoffset"):
        return {**good, kind: draw(st.one_of(st.none(), text(), st.lists(st.integers(), max_size=2)))}
    if kind == "huge-number":
        return {**good, draw(st.sampled_from(["timestamp", "utcoffset"])): 10 ** draw(st.integers(309, 400))}
    if kind == "unhashable-type":
        return {
            **good,
            "type": draw(
                st.one_of(
                    st.lists(st.text(max_size=3), max_size=2),
                    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                )
            ),
        }
    if kind == "not-a-dict":
        return draw(st.one_of(st.text(max_size=20), st.integers(), st.none(), st.lists(st.integers(), max_size=3)))
    return [good, draw(undecodable_events(ids).filter(lambda e: not isinstance(e, list)))]
