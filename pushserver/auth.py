"""Subscription tokens: HS256 JWTs that name the tasks their bearer may watch."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jwt
import jwt.warnings

from .errors import PushserverError

if TYPE_CHECKING:
    from jwt.types import Options  # PyJWT >= 2.10; only read by type checkers

ALGORITHM = "HS256"
#: ``tasks: ["*"]`` grants every task; "*" among other ids is refused, never a wildcard.
WILDCARD = "*"
#: RFC 7518 § 3.2: an HS256 key must have at least as many bits as the hash; shorter ones are refused.
MIN_SECRET_BYTES = 32
#: Most clock skew ``--token-leeway`` may allow, in seconds: more would keep expired tokens alive.
MAX_LEEWAY = 300.0

# Short keys never reach PyJWT in the server; `mint_token` callers (tests) get no warning noise either.
warnings.filterwarnings("ignore", category=jwt.warnings.InsecureKeyLengthWarning)


def secret_problem(secrets: Sequence[str]) -> str | None:
    """Why these secrets cannot sign tokens (empty, or shorter than MIN_SECRET_BYTES), or None when they can."""
    if not secrets:
        return "at least one secret is required"
    if not all(secrets):
        return "empty secret in the list"
    for i, secret in enumerate(secrets, 1):
        size = len(secret.encode())
        if size < MIN_SECRET_BYTES:
            which = f"secret {i} of {len(secrets)}" if len(secrets) > 1 else "the secret"
            return (
                f"{which} is {size} bytes; HS256 needs at least {MIN_SECRET_BYTES}"
                " (make one with `openssl rand -hex 32`)"
            )
    return None


class TokenError(PushserverError):
    """A token that cannot be used; the message says why without echoing the token."""


@dataclass(frozen=True)
class Grant:
    """What a verified token allows: a set of task ids (or every task) until ``expires_at``."""

    tasks: frozenset[str]
    sub: str | None
    expires_at: float

    def allows(self, task_id: str, now: float | None = None, workflows: Iterable[str] = ()) -> bool:
        """Tell whether this grant covers ``task_id`` right now, itself or as a member of one of ``workflows``.

        A workflow id in the ``tasks`` claim grants the workflow and every task
        in it: ``workflows`` are the workflows known to hold ``task_id``.
        """
        if (now if now is not None else time.time()) >= self.expires_at:
            return False
        tasks = self.tasks
        return task_id in tasks or tasks == _EVERY_TASK or any(w in tasks for w in workflows)


_EVERY_TASK = frozenset({WILDCARD})


class TokenVerifier:
    """Checks tokens against one or more shared secrets (the first signs; the rest ease rotation)."""

    def __init__(
        self, secrets: Sequence[str], *, leeway: float = 5.0, audience: str | None = None, issuer: str | None = None
    ) -> None:
        problem = secret_problem(secrets)
        if problem is not None:
            raise ValueError(problem)
        if not 0 <= leeway <= MAX_LEEWAY:
            raise ValueError(f"leeway must be between 0 and {MAX_LEEWAY:g} seconds")
        self.secrets = list(secrets)
        self.leeway = leeway
        self.audience = audience
        self.issuer = issuer

    def verify(self, token: object) -> Grant:
        """Return the Grant a token carries, or raise TokenError saying what is wrong with it."""
        if not isinstance(token, str) or not token:
            raise TokenError("token must be a non-empty string")
        if len(token) > 8192:
            raise TokenError("token is too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenError("token is malformed") from None
        if header.get("alg") != ALGORITHM:
            # Refuse "none" and every other algorithm before touching a key,
            # so no key-confusion trick can reach the verifier.
            raise TokenError(f"token algorithm must be {ALGORITHM}")
        claims = self._decode(token)
        tasks = claims.get("tasks")
        if not isinstance(tasks, list) or not all(isinstance(t, str) and t for t in tasks):
            raise TokenError("token claim 'tasks' must be a list of task ids")
        if WILDCARD in tasks and len(tasks) > 1:
            raise TokenError("token claim 'tasks': '*' grants every task only as the whole claim (tasks: ['*'])")
        sub = claims.get("sub")
        try:
            # The leeway that let the token in at verify time holds afterwards too.
            expires_at = float(claims["exp"]) + self.leeway
        except (OverflowError, TypeError, ValueError):
            raise TokenError("token claim 'exp' is not a usable time") from None
        if expires_at == float("inf"):
            raise TokenError("token claim 'exp' is not a usable time")
        return Grant(frozenset(tasks), sub if isinstance(sub, str) else None, expires_at)

    def _decode(self, token: str) -> dict[str, Any]:
        options: Options = {"require": ["exp"], "verify_aud": self.audience is not None}
        error: TokenError | None = None
        for secret in self.secrets:
            try:
                return jwt.decode(
                    token,
                    secret,
                    algorithms=[ALGORITHM],
                    leeway=self.leeway,
                    audience=self.audience,
                    issuer=self.issuer,
                    options=options,
                )
            except jwt.InvalidSignatureError:
                error = TokenError("token signature is invalid")
            except jwt.ExpiredSignatureError:
                raise TokenError("token has expired") from None
            except jwt.MissingRequiredClaimError as exc:
                raise TokenError(f"token is missing the '{exc.claim}' claim") from None
            except jwt.InvalidAudienceError:
                raise TokenError("token audience is not accepted") from None
            except jwt.InvalidIssuerError:
                raise TokenError("token issuer is not accepted") from None
            except jwt.PyJWTError:
                raise TokenError("token is malformed") from None
        assert error is not None
        raise error


def mint_token(
    secret: str,
    tasks: Iterable[str],
    *,
    ttl: float = 900.0,
    sub: str | None = None,
    audience: str | None = None,
    issuer: str | None = None,
) -> str:
    """Sign a token for ``tasks`` valid for ``ttl`` seconds (what Express does in production)."""
    now = int(time.time())
    claims: dict = {"tasks": list(tasks), "iat": now, "exp": now + int(ttl)}
    if sub is not None:
        claims["sub"] = sub
    if audience is not None:
        claims["aud"] = audience
    if issuer is not None:
        claims["iss"] = issuer
    return jwt.encode(claims, secret, algorithm=ALGORITHM)
