"""What docs/protocol.md, the contract users read, says a TaskState holds: read from its table, not restated."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

PROTOCOL = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


@cache
def _taskstate_rows() -> dict[str, str]:
    """Each field of the ``## TaskState`` table, with its meaning."""
    section = PROTOCOL.read_text().split("\n## TaskState\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = line.split("|")
        if len(cells) < 4 or not cells[1].strip().startswith("`"):
            continue
        for name in re.findall(r"`([a-z_]+)`", cells[1]):
            rows[name] = cells[2]
    return rows


def taskstate_fields() -> frozenset[str]:
    """The TaskState JSON keys, exactly as docs/protocol.md (TaskState) lists them."""
    return frozenset(_taskstate_rows())


def task_states() -> frozenset[str]:
    """The values of TaskState ``state`` that docs/protocol.md names."""
    return frozenset(re.findall(r"[A-Z]+", _taskstate_rows()["state"].split("`")[1]))
