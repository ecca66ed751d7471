"""The libraries pushserver relies on inside are the releases it was checked against (pushserver/dependencies.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib

from pushserver import dependencies
from pushserver.dependencies import VETTED, parse_version, unvetted

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_installed_libraries_are_the_vetted_releases() -> None:
    # A failure here means a release nobody checked pushserver/eioserver.py
    # against: read the internals its module doc lists in the new release,
    # run tests/unit/test_eioserver.py and the integration tests, then widen
    # the range in pushserver/dependencies.py and pyproject.toml.
    assert unvetted() == []


def test_pyproject_pins_exactly_the_vetted_ranges() -> None:
    requirements = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    for dist, (low, high) in VETTED.items():
        pinned = [r for r in requirements if re.match(rf"{re.escape(dist)}\s*[<>=!~]", r)]
        assert pinned == [f"{dist}>={low},<{high}"], (dist, pinned)


@pytest.mark.parametrize(
    "version, vetted",
    [
        ("4.15.1", True),
        ("4.15.9", True),
        ("4.15.0", False),
        ("4.16.0", False),
        ("4.16.0rc1", False),
        ("5.0", False),
        ("4.9.1", False),
    ],
)
def test_a_release_outside_the_range_is_reported(monkeypatch: pytest.MonkeyPatch, version: str, vetted: bool) -> None:
    monkeypatch.setattr(dependencies, "VETTED", {"python-engineio": ("4.15.1", "4.16")})
    monkeypatch.setattr(dependencies, "installed", lambda dist: version)
    problems = unvetted()
    assert (problems == []) is vetted, problems
    if not vetted:
        assert problems == [f"python-engineio {version} is outside the vetted range >=4.15.1,<4.16"]


def test_a_missing_library_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dependencies, "VETTED", {"python-engineio": ("4.15.1", "4.16")})
    monkeypatch.setattr(dependencies, "installed", lambda dist: None)
    assert unvetted() == ["python-engineio not installed is outside the vetted range >=4.15.1,<4.16"]


def test_parse_version() -> None:
    assert parse_version("4.15.1") == (4, 15, 1)
    assert parse_version("5.19.0rc1") == (5, 19, 0)
    assert parse_version("5.18.1.post2") == (5, 18, 1)
    assert parse_version("4.15.1+local") == (4, 15, 1)
