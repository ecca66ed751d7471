"""Validation of what browsers send on ``subscribe``/``unsubscribe`` (docs/protocol.md)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pushserver.protocol import (
    MAX_IDS_PER_CALL,
    MAX_TASK_ID_LENGTH,
    ProtocolError,
    Subscription,
    error_ack,
    parse_subscription,
    room_for,
    validate_task_id,
)


def refused(payload: Any, **kwargs: Any) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        parse_subscription(payload, **kwargs)
    return caught.value


# -- valid payloads ----------------------------------------------------------------


def test_single_task_id() -> None:
    assert parse_subscription({"task_id": "5f0c"}) == Subscription(task_ids=("5f0c",), token=None)


def test_single_task_id_with_token() -> None:
    sub = parse_subscription({"task_id": "5f0c", "token": "eyJ.x.y"})
    assert sub.task_ids == ("5f0c",)
    assert sub.token == "eyJ.x.y"


def test_list_of_task_ids() -> None:
    sub = parse_subscription({"task_ids": ["a", "b", "c"], "token": "tok"})
    assert sub == Subscription(task_ids=("a", "b", "c"), token="tok")


def test_duplicates_are_dropped_keeping_first_order() -> None:
    assert parse_subscription({"task_ids": ["b", "a", "b", "c", "a"]}).task_ids == ("b", "a", "c")


def test_null_or_empty_token_means_no_token() -> None:
    assert parse_subscription({"task_id": "t", "token": None}).token is None
    assert parse_subscription({"task_id": "t", "token": ""}).token is None


def test_unknown_keys_are_ignored() -> None:
    assert parse_subscription({"task_id": "t", "extra": [1, 2]}).task_ids == ("t",)


def test_limits_are_inclusive() -> None:
    longest = "x" * MAX_TASK_ID_LENGTH
    assert parse_subscription({"task_id": longest}).task_ids == (longest,)
    ids = [f"task-{i}" for i in range(MAX_IDS_PER_CALL)]
    assert parse_subscription({"task_ids": ids}).task_ids == tuple(ids)


def test_max_ids_can_be_configured() -> None:
    assert parse_subscription({"task_ids": ["a", "b"]}, max_ids=2).task_ids == ("a", "b")
    assert refused({"task_ids": ["a", "b", "c"]}, max_ids=2).code == "too_many"


# -- malformed payloads ------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (None, "null"),
        ("t", "a string"),
        (["t"], "a list"),
        (7, "a number"),
        (1.5, "a number"),
        (True, "a boolean"),
        (b"t", "bytes"),
    ],
)
def test_payload_must_be_an_object(payload: Any, kind: str) -> None:
    error = refused(payload)
    assert error.code == "bad_request"
    assert error.message == f"payload must be an object, not {kind}"


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"token": "t"},
        {"task_id": "a", "task_ids": ["b"]},
        {"task_id": "a", "workflow_id": "w"},
        {"workflow_id": "a", "workflow_ids": ["b"]},
    ],
)
def test_exactly_one_of_task_id_task_ids_workflow_id_or_workflow_ids(payload: dict[str, Any]) -> None:
    error = refused(payload)
    assert error.code == "bad_request"
    assert "exactly one of 'task_id', 'task_ids', 'workflow_id' or 'workflow_ids'" in error.message


def test_workflow_ids_are_parsed_apart_from_task_ids() -> None:
    request = parse_subscription({"workflow_ids": ["w1", "w2", "w1"], "token": "t"})
    assert request.workflow_ids == ("w1", "w2")
    assert request.task_ids == ()
    assert request.token == "t"
    assert parse_subscription({"workflow_id": "w"}).workflow_ids == ("w",)
    assert parse_subscription({"task_id": "t"}).workflow_ids == ()


@pytest.mark.parametrize(
    ("payload", "code", "message"),
    [
        ({"workflow_id": 7}, "bad_request", "workflow id must be a string, not a number"),
        ({"workflow_id": ""}, "bad_request", "workflow id must not be empty"),
        ({"workflow_ids": "w"}, "bad_request", "'workflow_ids' must be a list, not a string"),
        ({"workflow_ids": []}, "bad_request", "'workflow_ids' must not be empty"),
        ({"workflow_ids": ["w"] * 101}, "too_many", "at most 100 workflow ids per call, got 101"),
    ],
)
def test_bad_workflow_ids_are_refused(payload: dict[str, Any], code: str, message: str) -> None:
    error = refused(payload)
    assert (error.code, error.message) == (code, message)


@pytest.mark.parametrize(
    ("task_id", "message"),
    [
        (None, "task id must be a string, not null"),
        (42, "task id must be a string, not a number"),
        (False, "task id must be a string, not a boolean"),
        (["t"], "task id must be a string, not a list"),
        ({"id": "t"}, "task id must be a string, not an object"),
        ("", "task id must not be empty"),
        ("   ", "task id must not be empty"),
        ("\t\n", "task id must not be empty"),
        ("x" * (MAX_TASK_ID_LENGTH + 1), f"task id is longer than {MAX_TASK_ID_LENGTH} characters"),
    ],
)
def test_bad_task_id(task_id: Any, message: str) -> None:
    error = refused({"task_id": task_id})
    assert (error.code, error.message) == ("bad_request", message)
    # The same check applies to every element of a list.
    error = refused({"task_ids": ["ok", task_id]})
    assert (error.code, error.message) == ("bad_request", message)


@pytest.mark.parametrize(
    ("task_ids", "message"),
    [
        ("a,b", "'task_ids' must be a list, not a string"),
        (None, "'task_ids' must be a list, not null"),
        ({"a": 1}, "'task_ids' must be a list, not an object"),
        (3, "'task_ids' must be a list, not a number"),
        ([], "'task_ids' must not be empty"),
    ],
)
def test_bad_task_ids(task_ids: Any, message: str) -> None:
    error = refused({"task_ids": task_ids})
    assert (error.code, error.message) == ("bad_request", message)


def test_too_many_ids_in_one_call() -> None:
    error = refused({"task_ids": [f"task-{i}" for i in range(MAX_IDS_PER_CALL + 1)]})
    assert error.code == "too_many"
    assert error.message == f"at most {MAX_IDS_PER_CALL} task ids per call, got {MAX_IDS_PER_CALL + 1}"


def test_list_with_a_non_string_is_refused() -> None:
    error = refused({"task_ids": ["a", 2, "c"]})
    assert error.code == "bad_request"
    assert "not a number" in error.message


@pytest.mark.parametrize(
    ("token", "kind"), [(1, "a number"), (["t"], "a list"), ({"t": 1}, "an object"), (True, "a boolean")]
)
def test_token_must_be_a_string(token: Any, kind: str) -> None:
    error = refused({"task_id": "t", "token": token})
    assert (error.code, error.message) == ("bad_request", f"'token' must be a string, not {kind}")


def test_error_ack_shape() -> None:
    error = refused({"task_ids": []})
    assert error.ack() == {"ok": False, "error": {"code": "bad_request", "message": "'task_ids' must not be empty"}}
    assert error_ack("forbidden", "no") == {"ok": False, "error": {"code": "forbidden", "message": "no"}}
    assert str(error) == "'task_ids' must not be empty"


def test_validate_task_id_returns_the_id() -> None:
    assert validate_task_id("5f0c-…-ünïcode") == "5f0c-…-ünïcode"


def test_room_for() -> None:
    assert room_for("5f0c") == "task:5f0c"


# -- anything a browser can send ---------------------------------------------------------

JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.one_of(st.sampled_from(["task_id", "task_ids", "token"]), st.text()), inner, max_size=4),
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_any_json_is_either_a_subscription_or_a_protocol_error(payload: Any) -> None:
    try:
        sub = parse_subscription(payload)
    except ProtocolError as error:
        assert error.code in {"bad_request", "too_many"}
        assert isinstance(error.message, str) and error.message
        return
    assert isinstance(sub, Subscription)
    assert sub.task_ids and all(isinstance(t, str) and t.strip() for t in sub.task_ids)
    assert len(set(sub.task_ids)) == len(sub.task_ids)
    assert sub.token is None or isinstance(sub.token, str)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.text(min_size=1, max_size=MAX_TASK_ID_LENGTH).filter(lambda s: not s.isspace()),
        min_size=1,
        max_size=MAX_IDS_PER_CALL,
    )
)
def test_valid_lists_round_trip_deduplicated(ids: list[str]) -> None:
    assert parse_subscription({"task_ids": ids}).task_ids == tuple(dict.fromkeys(ids))


@pytest.mark.parametrize(
    "raw",
    [
        '["subscribe",{"task_id":"\\ud800"}]',  # a lone surrogate: valid JSON, refused by orjson
        '["subscribe",{"task_id":1e400}]',  # beyond a double
        '["subscribe",{"task_id":' + "9" * 400 + "}]",
        '["subscribe",' + "[" * 5000 + "]" * 5000 + "]",  # nested past every parser
    ],
)
def test_json_orjson_refuses_still_reaches_the_handler_as_a_bad_request(raw: str) -> None:
    from pushserver.protocol import OrjsonCodec

    event, payload = OrjsonCodec.loads(raw)[:2]
    assert event == "subscribe"
    with pytest.raises(ProtocolError) as refused:
        parse_subscription(payload)
    assert refused.value.code == "bad_request"
