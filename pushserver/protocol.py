"""The Socket.IO protocol's payloads: validation of what clients send, and the acks we answer.

Everything here is pure so that every malformed payload a browser can send is
covered by fast unit tests; the Socket.IO handlers (sockets.py) only call ``parse_subscription``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import orjson

from .errors import PushserverError

MAX_TASK_ID_LENGTH = 255
MAX_IDS_PER_CALL = 100

ROOM_PREFIX = "task:"
UPDATE_EVENT = "task:update"
WORKFLOW_ROOM_PREFIX = "workflow:"
WORKFLOW_EVENT = "workflow:update"
#: The server's own notices to one client: ``{code, message, ...}`` (token_expired, slow_consumer, too_many).
ERROR_EVENT = "pushserver:error"


class OrjsonCodec:
    """The ``json`` module interface python-socketio expects, backed by orjson (faster: docs/benchmarks.md)."""

    @staticmethod
    def dumps(obj: Any, **_: Any) -> str:
        return orjson.dumps(obj, default=str).decode()

    @staticmethod
    def loads(data: str | bytes, **_: Any) -> Any:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
        # Valid JSON orjson refuses (lone surrogates, 1e400, huge integers),
        # or JSON nested past any parser's depth: the call must still get an
        # ack, so keep the event name and hand the handler a marker.
        try:
            return json.loads(data)
        except (ValueError, RecursionError):
            text = data if isinstance(data, str) else data.decode("utf-8", "replace")
            name = _EVENT_NAME.match(text)
            if name is None:
                raise ValueError("a Socket.IO payload that is not JSON") from None
            return [name.group(1), UNDECODABLE]


class _Undecodable:
    """Stands for a payload that was not JSON any parser could read."""

    def __repr__(self) -> str:
        return "UNDECODABLE"


UNDECODABLE = _Undecodable()
_EVENT_NAME = re.compile(r'\s*\[\s*"([A-Za-z:_-]{1,64})"')


class ProtocolError(PushserverError):
    """A request the server refuses; ``code`` is one of the protocol's error codes."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def ack(self) -> dict[str, Any]:
        """The ``{ok: false, error}`` ack for this error."""
        return error_ack(self.code, self.message)


def error_ack(code: str, message: str) -> dict[str, Any]:
    """An error ack (or HTTP body) with the protocol's shape."""
    return {"ok": False, "error": {"code": code, "message": message}}


def room_for(task_id: str) -> str:
    """The Socket.IO room whose members receive a task's updates."""
    return ROOM_PREFIX + task_id


def workflow_room_for(workflow_id: str) -> str:
    """The Socket.IO room whose members receive a workflow's updates."""
    return WORKFLOW_ROOM_PREFIX + workflow_id


@dataclass(frozen=True)
class Subscription:
    """A validated subscribe/unsubscribe request: task ids or workflow ids (deduplicated, in order), a token or None."""

    task_ids: tuple[str, ...]
    token: str | None
    workflow_ids: tuple[str, ...] = ()


def validate_task_id(value: Any, noun: str = "task") -> str:
    """Return ``value`` if it is a usable task (or workflow) id, else raise ProtocolError(bad_request)."""
    if not isinstance(value, str):
        raise ProtocolError("bad_request", f"{noun} id must be a string, not {_kind(value)}")
    if not value or value.isspace():
        raise ProtocolError("bad_request", f"{noun} id must not be empty")
    if len(value) > MAX_TASK_ID_LENGTH:
        raise ProtocolError("bad_request", f"{noun} id is longer than {MAX_TASK_ID_LENGTH} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ProtocolError("bad_request", f"{noun} id is not valid Unicode (a lone surrogate)") from None
    return value


def parse_subscription(payload: Any, max_ids: int = MAX_IDS_PER_CALL) -> Subscription:
    """Validate a ``subscribe``/``unsubscribe`` payload: ``{task_id|task_ids|workflow_id|workflow_ids, token?}``."""
    if payload is UNDECODABLE:
        raise ProtocolError("bad_request", "payload is not JSON this server can read")
    if not isinstance(payload, dict):
        raise ProtocolError("bad_request", f"payload must be an object, not {_kind(payload)}")
    keys = [k for k in ("task_id", "task_ids", "workflow_id", "workflow_ids") if k in payload]
    if len(keys) != 1:
        raise ProtocolError(
            "bad_request", "payload needs exactly one of 'task_id', 'task_ids', 'workflow_id' or 'workflow_ids'"
        )
    key = keys[0]
    noun = "workflow" if key.startswith("workflow") else "task"
    if not key.endswith("s"):
        ids = [validate_task_id(payload[key], noun)]
    else:
        raw = payload[key]
        if not isinstance(raw, list):
            raise ProtocolError("bad_request", f"'{key}' must be a list, not {_kind(raw)}")
        if not raw:
            raise ProtocolError("bad_request", f"'{key}' must not be empty")
        if len(raw) > max_ids:
            raise ProtocolError("too_many", f"at most {max_ids} {noun} ids per call, got {len(raw)}")
        ids = [validate_task_id(v, noun) for v in raw]
    token = payload.get("token")
    if isinstance(token, str):
        try:
            token.encode("utf-8")
        except UnicodeEncodeError:
            raise ProtocolError("bad_request", "'token' is not valid Unicode") from None
    if token is not None and not isinstance(token, str):
        raise ProtocolError("bad_request", f"'token' must be a string, not {_kind(token)}")
    unique = tuple(dict.fromkeys(ids))
    if noun == "workflow":
        return Subscription((), token or None, unique)
    return Subscription(unique, token or None)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }.get(type(value), type(value).__name__)
