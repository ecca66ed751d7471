"""What the protocol (docs/protocol.md) says the server must answer, written independently of pushserver/."""

from __future__ import annotations

import json
import secrets as _secrets
from typing import Any

from tests.support.protocol_doc import task_states, taskstate_fields

from .oracle import INVALID, UNSURE, VALID, judge, judge_token, names
from .stack import MARKER, Server

CODES = {"bad_request", "unauthorized", "forbidden", "too_many"}
STATES = task_states()
TASK_STATE_FIELDS = taskstate_fields()
MAX_IDS = 100


def is_task_id(value: Any) -> bool:
    """A task id the protocol accepts: a non-empty, not blank string of at most 255 characters."""
    return isinstance(value, str) and bool(value) and not value.isspace() and len(value) <= 255


def requested_ids(payload: Any) -> list[Any]:
    """The ids a payload asks for (whatever their type), in order."""
    if not isinstance(payload, dict):
        return []
    if "task_id" in payload:
        return [payload["task_id"]]
    raw = payload.get("task_ids")
    return list(raw) if isinstance(raw, list) else []


def expected(payload: Any, server: Server, *, subscribe: bool, connect_token: str | None = None) -> set[str]:
    """The answers the protocol allows: "ok" and/or error codes (several when two rules apply at once)."""
    if not isinstance(payload, dict):
        return {"bad_request"}
    one, many = "task_id" in payload, "task_ids" in payload
    if one == many:
        return {"bad_request"}
    problems: set[str] = set()
    if one:
        ids = [payload["task_id"]]
    else:
        raw = payload["task_ids"]
        if not isinstance(raw, list) or not raw:
            return {"bad_request"}
        if len(raw) > MAX_IDS:
            problems.add("too_many")
        ids = raw
    if not all(is_task_id(i) for i in ids):
        problems.add("bad_request")
    token = payload.get("token")
    if token is not None and not isinstance(token, str):
        problems.add("bad_request")
    if problems:
        return problems
    if not subscribe:
        return {"ok"}
    token = token or connect_token  # "" counts as no token
    if not token:
        return {"unauthorized"}
    verdict, _ = judge_token(token, server.expect)
    if verdict == INVALID:
        return {"unauthorized"}
    per_task = {judge(token, i, server.expect) for i in dict.fromkeys(ids)}
    if verdict == UNSURE:
        return {"unauthorized", "forbidden"} | ({"ok"} if INVALID not in per_task else set())
    if INVALID in per_task:
        return {"forbidden"}
    if UNSURE in per_task:
        return {"ok", "forbidden"}
    assert per_task == {VALID}
    return {"ok"}


def check_error(ack: Any, tokens: list[str] = ()) -> str:
    """Check an ``{ok: false, error: {code, message}}`` ack; return its code."""
    assert isinstance(ack, dict), f"ack is not an object: {ack!r}"
    assert ack.get("ok") is False, ack
    assert set(ack) == {"ok", "error"}, f"an error ack carries nothing but the error: {ack!r}"
    error = ack["error"]
    assert isinstance(error, dict) and set(error) == {"code", "message"}, ack
    assert error["code"] in CODES, ack
    assert isinstance(error["message"], str) and error["message"].strip(), ack
    text = json.dumps(ack)
    assert MARKER not in text, f"task state leaked in an error: {ack!r}"
    for token in tokens:
        if isinstance(token, str) and len(token) >= 16:
            assert token not in error["message"], "the error message echoes the token"
    return error["code"]


def check_ok(ack: Any, ids: list[str], token: Any, server: Server, connect_token: str | None = None) -> None:
    """Check an ``{ok: true, tasks}`` ack: one TaskState per distinct id, in order, and a token naming each."""
    assert set(ack) == {"ok", "tasks"}, ack
    wanted = list(dict.fromkeys(ids))
    tasks = ack["tasks"]
    assert isinstance(tasks, list) and [t.get("task_id") for t in tasks] == wanted, (wanted, tasks)
    grant = token or connect_token
    for task in tasks:
        assert TASK_STATE_FIELDS <= set(task) and task["state"] in STATES, task
        assert names(grant, task["task_id"], server.expect), (
            f"granted {task['task_id']!r} to a token that does not name it: {grant!r}"
        )


def make_token(kind: str, ids: list[Any], server: Server) -> str:
    """A token of the given kind for the ids of a request (see strategies.TOKEN_KINDS)."""
    named = [i for i in ids if isinstance(i, str) and i] or ["nothing"]
    if kind == "exact":
        return server.token(named)
    if kind == "wildcard":
        return server.token(["*"])
    if kind == "old-secret":
        return server.token(named, secret=server.expect.secrets[1])
    if kind == "other-task":
        return server.token(["somebody-else's-task"])
    if kind == "first-only":
        return server.token(named[:1])
    if kind == "expired":
        return server.token(named, ttl=-60)
    if kind == "wrong-secret":
        return server.token(named, secret=_secrets.token_hex(32))
    if kind == "no-audience":
        return server.token(named, aud=None)
    if kind == "wrong-issuer":
        return server.token(named, iss="someone-else")
    if kind == "garbage":
        return "not.a.token"
    if kind == "empty":
        return ""
    raise ValueError(kind)
