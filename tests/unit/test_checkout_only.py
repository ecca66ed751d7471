"""The installed package holds production code only: nothing in pushserver/ needs the source checkout."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "pushserver"
#: Top-level folders of the checkout that pyproject.toml does not package.
CHECKOUT_ONLY = {"dev", "tests", "bench", "examples", "workers"}


def imported_modules(path: Path) -> list[str]:
    """The absolute module names a source file imports."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def test_no_module_of_the_package_imports_from_the_checkout() -> None:
    offenders = [
        f"{path.name} imports {name}"
        for path in sorted(PACKAGE.glob("*.py"))
        for name in imported_modules(path)
        if name.split(".")[0] in CHECKOUT_ONLY
    ]
    assert not offenders, offenders


def test_the_harness_and_the_demo_live_outside_the_package() -> None:
    assert not (PACKAGE / "devstack.py").exists() and not (PACKAGE / "demo.py").exists()
    assert (PACKAGE.parent / "dev" / "stack.py").exists() and (PACKAGE.parent / "dev" / "demo.py").exists()
