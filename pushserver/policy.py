"""What the server forwards of a task: results, tracebacks and arguments can hold personal data.

One policy serves every way a task leaves the server — Socket.IO updates and
snapshots, ``GET /tasks/{id}`` and the event history — so they can never
disagree about what a client may see.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: ``json``: the value the task returned, read from the result backend; ``repr``: Celery's repr from the
#: event; ``none``: no result at all.
RESULT_MODES = ("json", "repr", "none")


@dataclass(frozen=True)
class ForwardingPolicy:
    """Which sensitive task fields reach clients: results (json, repr or none), tracebacks, arguments."""

    results: str = "json"
    tracebacks: bool = False
    args: bool = False

    def __post_init__(self) -> None:
        if self.results not in RESULT_MODES:
            raise ValueError(f"results must be one of {', '.join(RESULT_MODES)}")

    def never_forwarded(self) -> frozenset[str]:
        """The TaskState fields no client ever gets under this policy: not worth keeping in memory."""
        fields: set[str] = set()
        if self.results == "none":
            fields |= {"result", "result_format"}
        if not self.tracebacks:
            fields.add("traceback")
        if not self.args:
            fields |= {"args", "kwargs"}
        return frozenset(fields)

    def task(self, state: dict[str, Any]) -> dict[str, Any]:
        """Apply the policy to a TaskState dict (in place; it is always a fresh dict)."""
        if self.results == "none":
            state["result"] = state["result_format"] = None
        if not self.tracebacks:
            state["traceback"] = None
        if not self.args:
            state.pop("args", None)
            state.pop("kwargs", None)
        return state

    def event(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """Apply the policy to a recorded Celery event (a copy is returned)."""
        out = dict(event)
        if self.results == "none":
            out.pop("result", None)
            out.pop("result_format", None)
        if not self.tracebacks:
            out.pop("traceback", None)
        if not self.args:
            for name in ("args", "kwargs"):
                out.pop(name, None)
        return out
