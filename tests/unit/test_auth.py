"""Subscription tokens (docs/protocol.md, Tokens): HS256 JWTs naming the tasks their bearer may watch."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest

from pushserver.auth import Grant, TokenError, TokenVerifier, mint_token, secret_problem

SECRET = "a-shared-secret-long-enough-for-hs256-and-even-for-hs512-64-bytes"
OLD_SECRET = "the-previous-secret-still-accepted-for-now"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made_token(header: dict[str, Any], claims: dict[str, Any], secret: str | None = SECRET) -> str:
    """A JWT built byte by byte, so the header can say whatever an attacker likes."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    if secret is None:
        return signing_input + "."
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def signed(claims: dict[str, Any], secret: str = SECRET) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


def in_an_hour() -> int:
    return int(time.time()) + 3600


def refusal(verifier: TokenVerifier, token: object) -> str:
    with pytest.raises(TokenError) as caught:
        verifier.verify(token)
    return str(caught.value)


@pytest.fixture
def verifier() -> TokenVerifier:
    return TokenVerifier([SECRET])


def test_mint_and_verify_round_trip(verifier: TokenVerifier) -> None:
    token = mint_token(SECRET, ["task-1", "task-2"], ttl=60, sub="user-7")
    grant = verifier.verify(token)
    assert grant.tasks == frozenset({"task-1", "task-2"})
    assert grant.sub == "user-7"
    assert time.time() + 55 < grant.expires_at <= time.time() + 61 + verifier.leeway
    assert grant.allows("task-1") and grant.allows("task-2")
    assert not grant.allows("task-3")


def test_sub_is_optional(verifier: TokenVerifier) -> None:
    assert verifier.verify(mint_token(SECRET, ["t"])).sub is None
    # PyJWT insists that a present ``sub`` is a string (RFC 7519 § 4.1.2).
    refusal(verifier, signed({"tasks": ["t"], "exp": in_an_hour(), "sub": 42}))


def test_expired_token_is_refused(verifier: TokenVerifier) -> None:
    token = signed({"tasks": ["t"], "exp": int(time.time()) - 60})
    assert "expired" in refusal(verifier, token)


def test_leeway_tolerates_a_little_clock_skew() -> None:
    token = signed({"tasks": ["t"], "exp": int(time.time()) - 2})
    assert TokenVerifier([SECRET], leeway=5).verify(token).tasks == {"t"}
    assert "expired" in refusal(TokenVerifier([SECRET], leeway=0), token)


def test_wrong_secret_is_refused(verifier: TokenVerifier) -> None:
    token = mint_token("some-other-secret-of-32-bytes-or-more", ["t"])
    assert "signature" in refusal(verifier, token)


def test_tampered_claims_are_refused(verifier: TokenVerifier) -> None:
    header, _, signature = mint_token(SECRET, ["mine"]).split(".")
    forged = b64url(json.dumps({"tasks": ["*"], "exp": in_an_hour()}).encode())
    assert "signature" in refusal(verifier, f"{header}.{forged}.{signature}")


def test_alg_none_is_refused(verifier: TokenVerifier) -> None:
    token = hand_made_token({"alg": "none", "typ": "JWT"}, {"tasks": ["*"], "exp": in_an_hour()}, secret=None)
    assert "algorithm" in refusal(verifier, token)
    for alg in ("None", "NONE", "nOnE"):
        token = hand_made_token({"alg": alg}, {"tasks": ["*"], "exp": in_an_hour()}, secret=None)
        assert "algorithm" in refusal(verifier, token)


@pytest.mark.parametrize("alg", ["HS512", "HS384", "RS256", "ES256", "PS256", "hs256"])
def test_other_algorithms_are_refused(verifier: TokenVerifier, alg: str) -> None:
    # Signed with the right secret (HMAC-SHA256) but claiming another algorithm:
    # the RS256 case is the classic key-confusion attack.
    token = hand_made_token({"alg": alg, "typ": "JWT"}, {"tasks": ["t"], "exp": in_an_hour()})
    assert "algorithm must be HS256" in refusal(verifier, token)


def test_a_genuine_hs512_token_is_refused(verifier: TokenVerifier) -> None:
    token = jwt.encode({"tasks": ["t"], "exp": in_an_hour()}, SECRET, algorithm="HS512")
    assert "algorithm" in refusal(verifier, token)


def test_header_without_alg_is_refused(verifier: TokenVerifier) -> None:
    token = hand_made_token({"typ": "JWT"}, {"tasks": ["t"], "exp": in_an_hour()})
    assert "algorithm" in refusal(verifier, token)


def test_missing_exp_is_refused(verifier: TokenVerifier) -> None:
    token = signed({"tasks": ["t"]})
    assert "'exp'" in refusal(verifier, token)


@pytest.mark.parametrize("exp", ["tomorrow", [1], {"at": 1}, 1e400])
def test_exp_that_is_not_a_date_is_refused(verifier: TokenVerifier, exp: Any) -> None:
    token = hand_made_token({"alg": "HS256", "typ": "JWT"}, {"tasks": ["t"], "exp": exp})
    refusal(verifier, token)


@pytest.mark.parametrize(
    "tasks",
    ["task-1", None, 7, {"task-1": True}, [1, 2], ["task-1", None], ["task-1", ""], [["task-1"]]],
)
def test_tasks_claim_must_be_a_list_of_ids(verifier: TokenVerifier, tasks: Any) -> None:
    token = signed({"tasks": tasks, "exp": in_an_hour()})
    assert "tasks" in refusal(verifier, token)


def test_missing_tasks_claim_is_refused(verifier: TokenVerifier) -> None:
    assert "tasks" in refusal(verifier, signed({"exp": in_an_hour()}))


def test_empty_task_list_allows_nothing(verifier: TokenVerifier) -> None:
    grant = verifier.verify(mint_token(SECRET, []))
    assert not grant.allows("t")


def test_wildcard_allows_every_task(verifier: TokenVerifier) -> None:
    grant = verifier.verify(mint_token(SECRET, ["*"]))
    assert grant.allows("anything") and grant.allows("5f0c-another")


def test_rotation_accepts_a_token_signed_with_any_listed_secret() -> None:
    verifier = TokenVerifier([SECRET, OLD_SECRET])
    assert verifier.verify(mint_token(OLD_SECRET, ["t"])).allows("t")
    assert verifier.verify(mint_token(SECRET, ["t"])).allows("t")
    assert "signature" in refusal(verifier, mint_token("a-third-secret-nobody-configured!!", ["t"]))


def test_rotation_still_refuses_an_expired_token_signed_with_the_old_secret() -> None:
    verifier = TokenVerifier([SECRET, OLD_SECRET])
    token = signed({"tasks": ["t"], "exp": int(time.time()) - 60}, secret=OLD_SECRET)
    assert "expired" in refusal(verifier, token)


def test_verifier_needs_a_secret() -> None:
    with pytest.raises(ValueError):
        TokenVerifier([])
    with pytest.raises(ValueError):
        TokenVerifier([SECRET, ""])


def test_short_secrets_are_refused() -> None:
    TokenVerifier(["k" * 32])  # exactly 32 bytes is enough
    with pytest.raises(ValueError, match="31 bytes; HS256 needs at least 32"):
        TokenVerifier(["k" * 31])
    with pytest.raises(ValueError, match="secret 2 of 3 is 9 bytes"):
        TokenVerifier([SECRET, "change-me", OLD_SECRET])
    # Bytes, not characters: 11 three-byte characters are 33 bytes.
    TokenVerifier(["€" * 11])
    assert secret_problem(["€" * 10]) is not None


@pytest.mark.parametrize("leeway", [-1, 300.5, float("inf"), float("nan")])
def test_leeway_outside_0_to_300_seconds_is_refused(leeway: float) -> None:
    with pytest.raises(ValueError, match="leeway"):
        TokenVerifier([SECRET], leeway=leeway)


@pytest.mark.parametrize("leeway", [0, 300])
def test_leeway_edges_are_accepted(leeway: float) -> None:
    assert TokenVerifier([SECRET], leeway=leeway).leeway == leeway


def test_the_wildcard_grants_every_task_only_as_the_whole_claim(verifier: TokenVerifier) -> None:
    assert verifier.verify(mint_token(SECRET, ["*"])).allows("any-task")
    for tasks in (["*", "t"], ["t", "*"], ["*", "*"]):
        assert "'*' grants every task only as the whole claim" in refusal(verifier, mint_token(SECRET, tasks))
    # A grant built by hand that holds "*" among ids names those ids, no more.
    grant = Grant(frozenset({"*", "t"}), None, time.time() + 60)
    assert grant.allows("t") and grant.allows("*") and not grant.allows("other")


@pytest.mark.parametrize("token", [None, "", 42, b"abc", ["a.b.c"], "not-a-jwt", "a.b.c", "x" * 9000])
def test_garbage_is_refused_with_token_error(verifier: TokenVerifier, token: object) -> None:
    refusal(verifier, token)


def test_audience_and_issuer_are_checked_when_configured() -> None:
    verifier = TokenVerifier([SECRET], audience="pushserver", issuer="express")
    good = mint_token(SECRET, ["t"], audience="pushserver", issuer="express")
    assert verifier.verify(good).allows("t")
    assert "audience" in refusal(verifier, mint_token(SECRET, ["t"], audience="other", issuer="express"))
    assert "issuer" in refusal(verifier, mint_token(SECRET, ["t"], audience="pushserver", issuer="other"))


def test_error_messages_never_contain_the_token(verifier: TokenVerifier) -> None:
    claims = {"tasks": ["t"], "exp": in_an_hour()}
    bad_tokens = [
        signed({"tasks": ["t"], "exp": int(time.time()) - 60}),
        mint_token("some-other-secret-of-32-bytes-or-more", ["t"]),
        hand_made_token({"alg": "none"}, claims, secret=None),
        hand_made_token({"alg": "HS512"}, claims),
        signed({"tasks": ["t"]}),
        signed({"tasks": "t", "exp": in_an_hour()}),
        "aGVhZGVy.cGF5bG9hZA.c2lnbmF0dXJl",
    ]
    for token in bad_tokens:
        message = refusal(verifier, token)
        assert token not in message
        for part in token.split("."):
            assert not part or part not in message, (part, message)


def test_grant_allows_respects_expiry() -> None:
    grant = Grant(tasks=frozenset({"t"}), sub=None, expires_at=1000.0)
    assert grant.allows("t", now=999.9)
    assert not grant.allows("t", now=1000.0)
    assert not grant.allows("t", now=5000.0)
    assert not grant.allows("other", now=0.0)
    everything = Grant(tasks=frozenset({"*"}), sub="ops", expires_at=1000.0)
    assert everything.allows("any", now=10.0)
    assert not everything.allows("any", now=1000.0)


def test_grant_from_a_short_lived_token_expires() -> None:
    grant = TokenVerifier([SECRET], leeway=5).verify(mint_token(SECRET, ["t"], ttl=30))
    assert grant.allows("t")
    assert grant.allows("t", now=time.time() + 33)  # the leeway holds after verify too
    assert not grant.allows("t", now=time.time() + 36)


def test_an_exp_beyond_any_date_is_refused() -> None:
    for exp in (10**400, 2**1024):
        with pytest.raises(TokenError, match="exp"):
            TokenVerifier([SECRET]).verify(jwt.encode({"tasks": ["t"], "exp": exp}, SECRET, "HS256"))
