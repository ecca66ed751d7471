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

The Redis transport decodes each message's envelope (headers, properties and
the base64 body) with ``kombu.utils.json.loads`` as a module name of its own,
not through the registry; ``install`` points that name at ``loads`` too, but
only while it still names kombu's function, since there is no public hook
for it.
"""

from __future__ import annotations

from typing import Any

import orjson
from kombu.serialization import register
from kombu.utils import json as kombu_json

# Digits as zeros, then one substring search: a C-speed scan for a long run of digits. A regex
# ``[0-9]{19}`` restarts at every digit and took 4x orjson's own decoding time on event bodies.
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_RUN = b"0" * 19


def _orjson_reads_it_as_kombu(data: bytes | bytearray) -> bool:
    """Whether the body holds neither a type marker nor a run of 19+ digits."""
    return b"__type__" not in data and _LONG_RUN not in data.translate(_DIGITS_AS_ZERO)


def loads(data: Any) -> Any:
    """Decode a JSON body as kombu's ``kombu.utils.json.loads`` would, by orjson where that gives the same."""
    if isinstance(data, memoryview):
        data = data.tobytes()
    if isinstance(data, (bytes, bytearray)):
        same = _orjson_reads_it_as_kombu(data)
    elif isinstance(data, str):
        same = _orjson_reads_it_as_kombu(data.encode("utf-8", "surrogatepass"))
    else:
        same = False
    if same:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # maybe JSON only Python's decoder takes (NaN, a lone surrogate), or not JSON: kombu says which
    return kombu_json.loads(data)


def install() -> None:
    """Make this process's kombu decode ``application/json`` bodies, and Redis envelopes, with ``loads``."""
    register("json", kombu_json.dumps, loads, content_type="application/json", content_encoding="utf-8")
    from kombu.transport import redis as redis_transport

    if getattr(redis_transport, "loads", None) is kombu_json.loads:
        redis_transport.loads = loads
