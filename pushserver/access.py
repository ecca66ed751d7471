"""Who may watch a task: the one authorisation check behind Socket.IO subscriptions and the HTTP API.

Both ways in ask the same question — does this token (or the one the
connection presented at connect) grant every one of these tasks, now? — and
get the same answer as a ``ProtocolError`` (``unauthorized`` for a missing,
bad or expired token, ``forbidden`` for a good token that names other tasks).
Only the wording of the "no token" and "not granted" messages differs, since
a Socket.IO client and an HTTP client pass their token in different places.

A token naming a workflow grants its member tasks too (docs/protocol.md,
Workflows): ``containing`` tells which watched workflows hold a task
(WorkflowWatch.containing, workflow_watch.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from .auth import Grant, TokenError, TokenVerifier
from .protocol import ProtocolError


def _names(noun: str, name: str) -> str:
    return f"the token does not grant {noun} {name[:64]!r}"


class Access:
    """Checks subscription tokens against task ids; with no verifier (``--insecure``) everything is allowed."""

    def __init__(
        self, verifier: TokenVerifier | None, containing: Callable[[str], Iterable[str]] = lambda task_id: ()
    ) -> None:
        self.verifier = verifier
        self.containing = containing

    def verify(self, token: object) -> Grant | None:
        """The Grant a token carries (None when insecure); ProtocolError(unauthorized) saying why it is unusable."""
        if self.verifier is None:
            return None
        try:
            return self.verifier.verify(token)
        except TokenError as exc:
            raise ProtocolError("unauthorized", str(exc)) from None

    def authorize(
        self,
        task_ids: Iterable[str],
        token: str | None,
        held: Grant | None = None,
        *,
        missing: str = "a token is required: pass it at connect or in this call",
        not_granted: str | None = None,
        noun: str = "task",
    ) -> Grant | None:
        """The grant naming every task in ``task_ids``, or ProtocolError.

        ``token`` is the call's own token; without one, ``held`` (the grant a
        connection presented at connect) is used. ``missing`` and
        ``not_granted`` word the refusals for the caller's kind of client;
        ``noun`` names what the ids are (``task``, ``workflow``) in the default wording.
        Returns None when insecure (nothing to enforce, no expiry to keep).
        """
        if self.verifier is None:
            return None
        grant = self.verify(token) if token is not None else held
        if grant is None:
            raise ProtocolError("unauthorized", missing)
        now = time.time()
        # A held grant outlives its verify: its expiry is checked again on every use.
        if now >= grant.expires_at:
            raise ProtocolError("unauthorized", "token has expired")
        for task_id in task_ids:
            if not grant.allows(task_id, now, self.containing(task_id)):
                raise ProtocolError("forbidden", not_granted or _names(noun, task_id))
        return grant
