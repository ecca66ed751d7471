"""The library versions pushserver was checked against where it relies on more than their public API.

pushserver extends python-engineio and python-socketio through their public
hooks where they have one; where they have none (listed in
``pushserver/eioserver.py``'s module doc), it depends on how a given release
works inside. Those releases are declared here, once: pyproject.toml pins the
same ranges, tests/unit/test_dependencies.py fails on an installed version
outside them, and the server logs a warning at start-up if one is installed
anyway. To accept a new release: read the points eioserver.py lists against
its source, run tests/unit/test_eioserver.py and the integration tests, then
widen the range here and in pyproject.toml.
"""

from __future__ import annotations

import importlib.metadata
import re

#: distribution -> [lowest vetted, first unvetted) release, as written in pyproject.toml.
VETTED: dict[str, tuple[str, str]] = {
    "python-engineio": ("4.15.1", "4.16"),
    "python-socketio": ("5.18", "5.19"),
}


def parse_version(text: str) -> tuple[int, ...]:
    """The numeric release of a version string ("4.15.1" -> (4, 15, 1); "5.19.0rc1" -> (5, 19, 0))."""
    numbers = []
    for part in text.split("."):
        match = re.match(r"\d+", part)
        if match is None:
            break
        numbers.append(int(match.group()))
        if match.end() != len(part):  # a pre-release or local suffix ends the release numbers
            break
    return tuple(numbers)


def installed(dist: str) -> str | None:
    """The installed version of ``dist``, or None if it is not installed."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def unvetted() -> list[str]:
    """One line per installed library outside its vetted range (empty when all are vetted)."""
    problems = []
    for dist, (low, high) in VETTED.items():
        version = installed(dist)
        if version is None or not parse_version(low) <= parse_version(version) < parse_version(high):
            problems.append(f"{dist} {version or 'not installed'} is outside the vetted range >={low},<{high}")
    return problems
