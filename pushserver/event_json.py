"""Celery's JSON message bodies decoded by orjson, with exactly the values kombu's own decoder gives.

Decoding is most of what an event receiver does per event, and orjson takes a
quarter to a third of the time of kombu's ``json.loads`` with its object hook
(docs/benchmarks.md). ``install`` registers ``loads`` in place of kombu's
``json`` decoder through kombu's public hook (``kombu.serialization.register``);
the encoder stays kombu's. Wherever orjson's values could differ, kombu's
decoder decodes instead:

- a body holding kombu's type marker (``__type__``: datetimes, decimals,
  UUIDs, bytes), which only kombu's object hook turns back into objects;
- a run of 19 or more digits: orjson reads an integer past 64 bits as a float,
  Python as an exact integer;
- anything orjson refuses that Python's json accepts: NaN, Infinity, an
  out-of-range float, a lone surrogate.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from kombu.serialization import register
from kombu.utils import json as kombu_json

_LONG_DIGITS = re.compile(rb"[0-9]{19}")
_LONG_DIGITS_STR = re.compile(r"[0-9]{19}")


def loads(data: Any) -> Any:
    """Decode a JSON body as kombu's ``kombu.utils.json.loads`` would, by orjson where that gives the same."""
    if isinstance(data, memoryview):
        data = data.tobytes()
    if isinstance(data, (bytes, bytearray)):
        same = b"__type__" not in data and _LONG_DIGITS.search(data) is None
    elif isinstance(data, str):
        same = "__type__" not in data and _LONG_DIGITS_STR.search(data) is None
    else:
        same = False
    if same:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # maybe JSON only Python's decoder takes (NaN, a lone surrogate), or not JSON: kombu says which
    return kombu_json.loads(data)


def install() -> None:
    """Make this process's kombu decode ``application/json`` bodies with ``loads``."""
    register("json", kombu_json.dumps, loads, content_type="application/json", content_encoding="utf-8")
