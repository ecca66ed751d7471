"""The package's shape: no import circle, no CLI-only library on the server's import path, one error root."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import pushserver
from pushserver.auth import TokenError
from pushserver.config import ConfigError
from pushserver.errors import PushserverError
from pushserver.protocol import ProtocolError
from pushserver.replay import BadInput, ReplayError

PACKAGE = Path(pushserver.__file__).parent


def module_imports() -> dict[str, set[str]]:
    """Every pushserver module and the pushserver modules it imports, anywhere in it (functions included)."""
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.glob("*.py")):
        name = f"pushserver.{path.stem}" if path.stem != "__init__" else "pushserver"
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from . import x, from .x import y
                    base = "pushserver" + (f".{node.module}" if node.module else "")
                    found.add(base)
                    if not node.module:
                        found.update(f"pushserver.{alias.name}" for alias in node.names)
                elif node.module:
                    found.add(node.module)
        graph[name] = {m for m in found if m.startswith("pushserver.") and m != name}
    return graph


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle in ``graph`` (as the list of modules around it), or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        path.append(module)
        for imported in sorted(graph.get(module, ())):
            if state.get(imported) == "open":
                return path[path.index(imported) :] + [imported]
            if imported not in state and (circle := visit(imported)):
                return circle
        state[module] = "done"
        path.pop()
        return None

    for module in sorted(graph):
        if module not in state and (circle := visit(module)):
            return circle
    return None


def test_the_import_graph_is_read() -> None:
    graph = module_imports()
    assert "pushserver.server" in graph["pushserver.cli"]  # a function-level import counts
    assert {"pushserver.receiver", "pushserver.logs"} <= graph["pushserver.receiver_process"]


def test_no_import_circle_in_the_package() -> None:
    assert find_circle(module_imports()) is None


def test_a_circle_would_be_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_circle(graph) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


@pytest.mark.parametrize("module", ["pushserver.server", "pushserver.receiver_process"])
def test_the_server_does_not_import_rich(module: str) -> None:
    """rich draws the CLI's progress bars; the server runs without it."""
    code = (
        f"import sys, {module}; loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'rich');"
        " print(loaded); sys.exit(1 if loaded else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"importing {module} imports {done.stdout.strip()}{done.stderr}"


@pytest.mark.parametrize("error", [ConfigError, TokenError, ProtocolError, ReplayError, BadInput])
def test_every_error_of_ours_is_a_pushserver_error(error: type[Exception]) -> None:
    assert issubclass(error, PushserverError)
