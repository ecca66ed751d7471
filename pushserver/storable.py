"""Events as MongoDB can store them: every value plain, every text bounded, and the size known.

Celery's receiver hands over whatever kombu's JSON decoder built: besides
JSON's own types, ``uuid.UUID``, ``Decimal``, dates and times, and bytes
(from ``{"__type__": ...}`` objects), integers of any size, NaN, and lone
surrogates in strings. BSON refuses several of these (a UUID needs a
representation, a Decimal or a date has no BSON type, an integer stops at 64
bits, a key must not hold a NUL byte, a string must be valid UTF-8), and one
refused value used to stop the event log's writer. ``storable`` rewrites
only what BSON cannot hold, the same way on every replica, so the
deterministic ``_id`` still agrees:

==========================  ==============================================
value                       stored as
==========================  ==============================================
``uuid.UUID``               its canonical string
``Decimal``                 its string (exact)
date, time, datetime        ISO 8601 string
bytes, bytearray            kombu's own envelope ``{"__type__": "base64", "__value__": "..."}``
set, frozenset, tuple       a list
integer beyond 64 bits      its decimal string
string with surrogates      backslash-escaped (``"\\ud800"``)
string over TEXT_LIMIT      cut to TEXT_LIMIT characters
key with a NUL, or not str  ``repr``-like string key
nesting deeper than 32      the ``repr`` of the rest, cut
anything else               its ``repr``, cut
==========================  ==============================================

NaN and infinities stay floats (BSON doubles hold them); ``finite_only``
turns them into the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` for
a server that refuses them (nx-27017 stores documents as JSON).
"""

from __future__ import annotations

import base64
import datetime
import decimal
import math
import uuid
from collections.abc import Mapping
from typing import Any

import orjson

#: Longest string kept in a stored event: the longest text any client is ever sent (a traceback).
TEXT_LIMIT = 16 * 1024
#: Deepest nesting kept; kombu's decoder allows far more, MongoDB's limit is 100 levels.
MAX_DEPTH = 32
#: What one value adds to the size estimate besides its text: BSON's type byte, length and padding.
VALUE_OVERHEAD = 16

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_PLAIN = (type(None), bool, float)
_PLAIN_TYPES = frozenset({str, int, float, bool, type(None)})
_STRICT = orjson.OPT_STRICT_INTEGER | orjson.OPT_PASSTHROUGH_DATETIME


class Storable:
    """An event ready for MongoDB: the (possibly rewritten) fields, their approximate size, and what changed."""

    __slots__ = ("changed", "event", "size")

    def __init__(self, event: Mapping[str, Any], size: int, changed: int) -> None:
        self.event = event
        self.size = size
        self.changed = changed


def storable(event: Mapping[str, Any]) -> Storable:
    """``event`` with every value BSON cannot hold rewritten (a new dict only when something changed)."""
    # The fast path, on the hot path of ingest (~1 µs): a flat event of plain
    # values (nearly every real one) is stored as it is, and measured by its
    # JSON. orjson refuses what BSON refuses too (lone surrogates, keys that
    # are not strings) and, strict, integers beyond 53 bits; dates go to
    # ``default``, which raises. Texts over the limit or NUL bytes (which a
    # key must not hold) take the slow path.
    if type(event) is dict and _PLAIN_TYPES.issuperset(map(type, event.values())):
        try:
            text = orjson.dumps(event, option=_STRICT)
        except orjson.JSONEncodeError:
            pass
        else:
            if len(text) <= TEXT_LIMIT and b"\\u0000" not in text:
                return Storable(event, len(text), 0)
    walker = _Walker()
    out = walker.mapping(event, 0)
    return Storable(out, walker.size, walker.changed)


def finite_only(value: Any) -> Any:
    """A copy of a storable value with NaN and infinities as strings, for servers that refuse them."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: finite_only(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_only(v) for v in value]
    return value


class _Walker:
    """One pass over an event: rewrites, counts rewrites, and adds up sizes."""

    __slots__ = ("changed", "size")

    def __init__(self) -> None:
        self.size = 0
        self.changed = 0

    def mapping(self, value: Mapping[Any, Any], depth: int) -> Mapping[str, Any]:
        out: dict[str, Any] | None = None
        for i, (key, item) in enumerate(value.items()):
            if type(key) is str and key.isascii() and "\x00" not in key and len(key) <= TEXT_LIMIT:
                new_key = key
                self.size += len(key)
            else:
                new_key = self.key(key)
            new_item = self.value(item, depth + 1)
            if out is None and (new_key is not key or new_item is not item):
                out = dict(list(value.items())[:i])  # copy on first change: most events need none
            if out is not None:
                out[new_key] = new_item
        if out is None and type(value) is not dict:
            out = dict(value)
        return value if out is None else out

    def value(self, value: Any, depth: int) -> Any:
        kind = type(value)
        if kind is str:
            return self.text(value)
        self.size += VALUE_OVERHEAD
        if kind in _PLAIN:
            return value
        if kind is int:
            if _INT64_MIN <= value <= _INT64_MAX:
                return value
            self.changed += 1
            return self.text(_int_text(value))
        if depth > MAX_DEPTH:
            self.changed += 1
            return self.text(_cut_repr(value))
        if isinstance(value, Mapping):
            return self.mapping(value, depth)
        if kind is list:
            out = [self.value(v, depth + 1) for v in value]
            return value if all(a is b for a, b in zip(out, value)) else out
        self.changed += 1
        if isinstance(value, (tuple, set, frozenset)):
            items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
            return [self.value(v, depth + 1) for v in items]
        if isinstance(value, uuid.UUID):
            return self.text(str(value))
        if isinstance(value, (datetime.date, datetime.time)):  # datetime is a date
            return self.text(value.isoformat())
        if isinstance(value, decimal.Decimal):
            return self.text(str(value))
        if isinstance(value, (bytes, bytearray, memoryview)):
            return {"__type__": "base64", "__value__": self.text(base64.b64encode(value).decode())}
        if isinstance(value, bool):  # a bool subclass (numpy's, say)
            return bool(value)
        if isinstance(value, int):
            return self.value(int(value), depth)
        if isinstance(value, float):
            return float(value)
        if isinstance(value, str):
            return self.text(str(value))
        return self.text(_cut_repr(value))

    def text(self, value: str) -> str:
        if len(value) > TEXT_LIMIT:
            value = value[:TEXT_LIMIT]
            self.changed += 1
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:  # lone surrogates: JSON allows them, UTF-8 (and BSON) does not
                value = value.encode("utf-8", "backslashreplace").decode("utf-8")[:TEXT_LIMIT]
                self.changed += 1
        self.size += len(value) + VALUE_OVERHEAD
        return value

    def key(self, key: Any) -> str:
        text = key if isinstance(key, str) else _cut_repr(key)
        cleaned = text.replace("\x00", "\\x00")
        cleaned = self.text(cleaned)
        if cleaned != key:
            self.changed += 1
        self.size -= VALUE_OVERHEAD  # a key is counted by its length alone
        return cleaned


def _int_text(value: int) -> str:
    try:
        return str(value)
    except ValueError:  # beyond sys.get_int_max_str_digits(): hexadecimal has no such limit
        return hex(value)


def _cut_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # noqa: BLE001 - a repr that raises still must not stop the log
        text = f"<unrepresentable {type(value).__name__}: {type(exc).__name__}>"
    return text[:TEXT_LIMIT]
