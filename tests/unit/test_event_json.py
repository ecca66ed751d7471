"""pushserver.event_json gives exactly kombu's values (types included), by orjson or by kombu's own decoder."""

from __future__ import annotations

import datetime
import decimal
import json
import math
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kombu.utils import json as kombu_json

from pushserver import event_json


def same(a: Any, b: Any) -> bool:
    """Equal, with the same types all the way down (1 vs 1.0 vs True differ), NaN equal to NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()  # big ones too: past 64 bits orjson would give a float
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),  # lone surrogates too
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_any_json_value_decodes_as_kombu_decodes_it(value: Any) -> None:
    body = json.dumps(value)
    for data in (body, body.encode("utf-8", "surrogatepass"), memoryview(body.encode("utf-8", "surrogatepass"))):
        try:
            expected = kombu_json.loads(data)
        except Exception as exc:  # noqa: BLE001 - then ours must fail the same way
            with pytest.raises(type(exc)):
                event_json.loads(data)
            continue
        assert same(event_json.loads(data), expected)


@pytest.mark.parametrize(
    "body",
    [
        '{"clock": 1180591620717411303424, "n": -99999999999999999999}',
        '{"runtime": NaN, "eta": Infinity, "x": -Infinity}',
        '{"tiny": 1e400}',
        '{"s": "\\ud800"}',
        '{"a": 1, "a": 2}',
        '{"v": -0.0, "w": 9223372036854775807, "u": 18446744073709551615}',
    ],
)
def test_values_orjson_would_read_differently_or_refuse(body: str) -> None:
    assert same(event_json.loads(body.encode()), kombu_json.loads(body.encode()))


def test_kombu_type_markers_are_turned_back_into_objects() -> None:
    value = {
        "when": datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.timezone.utc),
        "amount": decimal.Decimal("1.10"),
        "id": uuid.UUID(int=7),
        "raw": b"bytes",
    }
    body = kombu_json.dumps(value)
    assert event_json.loads(body) == kombu_json.loads(body) == value


def test_not_json_fails_as_kombu_fails() -> None:
    for data in (b"{nope", b"\xff\xfe", b""):
        with pytest.raises(Exception) as ours:
            event_json.loads(data)
        with pytest.raises(Exception) as theirs:
            kombu_json.loads(data)
        assert type(ours.value) is type(theirs.value)


@pytest.fixture
def kombu_decoders() -> Iterator[Any]:
    """kombu's JSON decoder and the Redis transport's envelope decoder as kombu ships them, put back afterwards."""
    from kombu.serialization import registry
    from kombu.transport import redis as redis_transport

    before, before_envelope = registry._decoders["application/json"], redis_transport.loads
    redis_transport.loads = kombu_json.loads  # another test may have installed ours
    try:
        yield redis_transport
    finally:
        registry._decoders["application/json"] = before
        redis_transport.loads = before_envelope


def test_install_makes_kombu_decode_json_bodies_and_redis_envelopes_with_it(kombu_decoders: Any) -> None:
    from kombu.serialization import loads, registry

    event_json.install()
    assert registry._decoders["application/json"] is event_json.loads
    assert loads(b'{"type": "task-started"}', "application/json", "utf-8") == {"type": "task-started"}
    assert kombu_decoders.loads is event_json.loads


def test_install_leaves_an_envelope_decoder_that_is_not_kombus_alone(kombu_decoders: Any) -> None:
    def someone_elses(data: Any) -> Any:
        return kombu_json.loads(data)

    kombu_decoders.loads = someone_elses
    event_json.install()
    assert kombu_decoders.loads is someone_elses


def test_long_digit_runs_are_found_wherever_they_are() -> None:
    # The scan must see a run of 19 digits that starts or ends the body, or sits in a string or fraction.
    for body in (
        "1234567890123456789",
        "[1, 12345678901234567890]",
        '{"x": "1234567890123456789"}',
        "0.12345678901234567891",
    ):
        assert not event_json._orjson_reads_it_as_kombu(body.encode())
    for body in ("123456789012345678", '{"timestamp": 1764512345.1234567}', '"__typ__"'):
        assert event_json._orjson_reads_it_as_kombu(body.encode())
