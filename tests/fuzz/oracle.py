"""An independent judge of subscription tokens, written from RFC 7515/7519 and the protocol, not from PyJWT.

``judge(token, task_id)`` says what the server must do with a token for a
task: VALID (must grant), INVALID (must refuse), or UNSURE (an odd but
authentic token whose fate depends on PyJWT's details; either answer is
acceptable, but a grant still needs an authentic token naming the task).
``authentic(token)`` is the security property itself: an HS256 signature by
one of the server's secrets over the exact header.payload text.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

VALID, INVALID, UNSURE = "valid", "invalid", "unsure"

ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
MAX_TOKEN_CHARS = 8192  # pushserver.auth refuses longer tokens before parsing them
MARGIN = 3.0  # seconds kept away from every time boundary, so the clock never decides


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(segment: str, padding: bool = False) -> bytes | None:
    """Strict base64url (RFC 7515 § 2): the alphabet only, canonical, no padding; None otherwise.

    ``padding=True`` also takes a correctly ``=``-padded segment (PyJWT does, for AWS ALB's tokens):
    the bytes are the same, so it changes nothing about who signed them.
    """
    if padding and len(segment) % 4 == 0 and segment.endswith("="):
        segment = segment.rstrip("=") if len(segment) - len(segment.rstrip("=")) <= 2 else segment
    if any(c not in ALPHABET for c in segment) or len(segment) % 4 == 1:
        return None
    try:
        data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        return None
    return data if b64url(data) == segment else None


def sign(signing_input: str, secret: str, digest: Any = hashlib.sha256) -> str:
    return b64url(hmac.new(secret.encode(), signing_input.encode(), digest).digest())


def make_token(header: Any, payload_text: str, secret: str | None, digest: Any = hashlib.sha256) -> str:
    """A JWS compact token from a header (dict or raw JSON text) and raw payload JSON text."""
    header_text = header if isinstance(header, str) else json.dumps(header, separators=(",", ":"))
    signing_input = f"{b64url(header_text.encode())}.{b64url(payload_text.encode())}"
    signature = sign(signing_input, secret, digest) if secret is not None else ""
    return f"{signing_input}.{signature}"


@dataclass(frozen=True)
class Expectations:
    """What the server under test is configured with."""

    secrets: Sequence[str]
    audience: str | None
    issuer: str | None
    leeway: float = 5.0


def authentic(token: Any, expect: Expectations) -> tuple[dict, Any] | None:
    """(header, claims) when the token carries a valid HS256 signature by one of the secrets, else None."""
    if not isinstance(token, str):
        return None
    segments = token.split(".")
    if len(segments) != 3:
        return None
    header_b, payload_b, signature_b = (unb64url(s, padding=True) for s in segments)
    if header_b is None or payload_b is None or signature_b is None:
        return None
    try:
        header = json.loads(header_b)
    except (ValueError, RecursionError):
        return None
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        return None
    signing_input = f"{segments[0]}.{segments[1]}".encode()  # the text as sent, padding and all
    if not any(
        hmac.compare_digest(hmac.new(s.encode(), signing_input, hashlib.sha256).digest(), signature_b)
        for s in expect.secrets
    ):
        return None
    try:
        claims = json.loads(payload_b)
    except (ValueError, RecursionError):
        claims = None
    return header, claims


def _clean_number(value: Any) -> bool:
    """A plain NumericDate: an int or a finite float, not a bool, within a sane range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(value, int):
        return abs(value) < 10**15
    return math.isfinite(value) and abs(value) < 1e15


def judge_token(token: Any, expect: Expectations, now: float | None = None) -> tuple[str, Any]:
    """VALID/INVALID/UNSURE for the token itself (as at connect), with its claims when authentic."""
    now = time.time() if now is None else now
    found = authentic(token, expect)
    if found is None:
        return INVALID, None
    header, claims = found
    if not isinstance(claims, dict):
        return INVALID, None
    unsure = False
    if len(token) > MAX_TOKEN_CHARS:
        unsure = True  # the server may refuse a long token before looking at it
    if "=" in token:
        unsure = True  # padded segments: RFC 7515 says no, PyJWT says yes
    if set(header) - {"alg", "typ"} or not isinstance(header.get("typ", ""), str):
        unsure = True  # kid, crit, b64 ...: PyJWT's business
    if set(claims) - {"tasks", "exp", "iat", "nbf", "sub", "aud", "iss", "jti", "pad"}:
        unsure = True
    exp = claims.get("exp")
    if "exp" not in claims:
        return INVALID, claims
    if not _clean_number(exp):
        unsure = True
    elif exp <= now - expect.leeway - MARGIN:
        return INVALID, claims
    elif exp <= now + MARGIN:
        unsure = True
    for name in ("iat", "nbf"):
        if name in claims:
            value = claims[name]
            if not _clean_number(value):
                unsure = True
            elif value > now + expect.leeway + MARGIN and name == "nbf":
                return INVALID, claims
            elif value > now - MARGIN:
                unsure = True
    for name in ("sub", "jti"):
        if name in claims and not isinstance(claims[name], str):
            unsure = True
    if expect.issuer is not None:
        iss = claims.get("iss")
        if "iss" not in claims:
            return INVALID, claims
        if isinstance(iss, str):
            if iss != expect.issuer:
                return INVALID, claims
        else:
            unsure = True
    if expect.audience is not None:
        if "aud" not in claims:
            return INVALID, claims
        aud = claims["aud"]
        if isinstance(aud, str):
            aud = [aud]
        if isinstance(aud, list) and all(isinstance(a, str) for a in aud):
            if expect.audience not in aud:
                return INVALID, claims
        else:
            unsure = True
    tasks = claims.get("tasks")
    if not isinstance(tasks, list) or not all(isinstance(t, str) and t for t in tasks):
        return INVALID, claims  # pushserver.auth: a list of non-empty task ids ([] grants nothing)
    if "*" in tasks and len(tasks) > 1:
        return INVALID, claims  # "*" is a wildcard only as the whole claim, and refused among other ids
    return (UNSURE if unsure else VALID), claims


def judge(token: Any, task_id: str, expect: Expectations, now: float | None = None) -> str:
    """VALID/INVALID/UNSURE for subscribing to ``task_id`` with ``token``."""
    verdict, claims = judge_token(token, expect, now)
    if verdict == INVALID:
        return INVALID
    tasks = claims.get("tasks")
    if isinstance(tasks, list) and "*" not in tasks and task_id not in tasks:
        return INVALID
    return verdict


def names(token: Any, task_id: str, expect: Expectations) -> bool:
    """The least a granted token must satisfy: authentic, and naming the task (or every task)."""
    found = authentic(token, expect)
    if found is None or not isinstance(found[1], dict):
        return False
    tasks = found[1].get("tasks")
    return isinstance(tasks, list) and (tasks == ["*"] or ("*" not in tasks and task_id in tasks))
