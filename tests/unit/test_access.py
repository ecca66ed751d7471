"""The one authorisation check behind subscribe and GET /tasks/{id}: which token, which tasks, which refusal."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from pushserver.access import Access
from pushserver.auth import Grant, TokenVerifier, mint_token
from pushserver.protocol import ProtocolError

SECRET = "a-shared-secret-long-enough-for-hs256-32b"
ACCESS = Access(TokenVerifier([SECRET], leeway=0))


def refusal(call: Callable[[], object]) -> tuple[str, str]:
    with pytest.raises(ProtocolError) as caught:
        call()
    return caught.value.code, caught.value.message


def test_insecure_allows_everything_and_keeps_no_grant() -> None:
    assert Access(None).authorize(["a", "b"], None) is None
    assert Access(None).verify("not even a token") is None


def test_the_calls_token_names_every_task() -> None:
    grant = ACCESS.authorize(["a", "b"], mint_token(SECRET, ["a", "b", "c"]))
    assert grant is not None and grant.tasks == frozenset({"a", "b", "c"})
    assert refusal(lambda: ACCESS.authorize(["a", "z"], mint_token(SECRET, ["a"]))) == (
        "forbidden",
        "the token does not grant task 'z'",
    )


def test_without_a_token_the_held_grant_decides() -> None:
    held = Grant(frozenset({"a"}), None, time.time() + 60)
    assert ACCESS.authorize(["a"], None, held) is held
    assert refusal(lambda: ACCESS.authorize(["a"], None)) == (
        "unauthorized",
        "a token is required: pass it at connect or in this call",
    )
    # The call's own token wins over the held one, even when it grants less.
    assert refusal(lambda: ACCESS.authorize(["a"], mint_token(SECRET, ["b"]), held))[0] == "forbidden"


def test_a_held_grant_that_ran_out_is_unauthorized_not_forbidden() -> None:
    held = Grant(frozenset({"a"}), None, time.time() - 1)
    assert refusal(lambda: ACCESS.authorize(["a"], None, held)) == ("unauthorized", "token has expired")


def test_a_bad_token_says_why_and_callers_word_their_refusals() -> None:
    code, message = refusal(lambda: ACCESS.authorize(["a"], "not-a-jwt"))
    assert (code, message) == ("unauthorized", "token is malformed")
    assert refusal(lambda: ACCESS.authorize(["a"], None, missing="a bearer token is required")) == (
        "unauthorized",
        "a bearer token is required",
    )
    assert refusal(
        lambda: ACCESS.authorize(["a"], mint_token(SECRET, ["b"]), not_granted="the token does not grant this task")
    ) == ("forbidden", "the token does not grant this task")
    assert refusal(lambda: ACCESS.verify("")) == ("unauthorized", "token must be a non-empty string")


def test_a_token_naming_a_watched_workflow_grants_its_members() -> None:
    # docs/protocol.md, Workflows: a workflow id in the tasks claim grants the workflow and its member tasks.
    holders = {"a": ["g"], "b": ["g"]}
    access = Access(TokenVerifier([SECRET], leeway=0), lambda task_id: holders.get(task_id, ()))
    token = mint_token(SECRET, ["g"])
    assert access.authorize(["g", "a", "b"], token) is not None
    assert refusal(lambda: access.authorize(["z"], token)) == ("forbidden", "the token does not grant task 'z'")
    assert refusal(lambda: access.authorize(["w"], token, noun="workflow")) == (
        "forbidden",
        "the token does not grant workflow 'w'",
    )
    # Without the workflow watch's answer (ACCESS knows of no workflow) a member is not granted.
    assert refusal(lambda: ACCESS.authorize(["a"], token))[0] == "forbidden"
