"""The layer contract: imports point down the layers only, and siblings in one layer stay apart.

schemas <- core <- models | connectors <- pipeline <- triage <- apps <- cli

Checked on the source (every import statement, also those inside functions), so a wrong-way import
fails CI the moment it is written, not when some code path happens to run it.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import ROOT

LAYERS = [["schemas"], ["core"], ["models", "connectors"], ["pipeline"], ["triage"], ["apps"], ["cli"]]
LEVEL = {package: level for level, packages in enumerate(LAYERS) for package in packages}


def imported_packages(path: Path) -> set[tuple[str, int]]:
    """(top-level product package, line) of every import in a file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
        found.update((name.split(".")[0], node.lineno) for name in names if name.split(".")[0] in LEVEL)
    return found


def violations(root: Path) -> list[str]:
    wrong = []
    for package, level in LEVEL.items():
        for path in sorted((root / package).rglob("*.py")):
            for target, line in sorted(imported_packages(path)):
                if target != package and LEVEL[target] >= level:
                    where = "a sibling" if LEVEL[target] == level else "a higher layer"
                    wrong.append(f"{path.relative_to(root)}:{line} imports {target} ({where})")
    return wrong


def test_imports_point_down_the_layers() -> None:
    assert violations(ROOT) == []


@pytest.mark.parametrize("package,target", [("core", "pipeline"), ("models", "connectors"), ("pipeline", "triage")])
def test_a_wrong_way_import_is_caught(tmp_path: Path, package: str, target: str) -> None:
    for name in LEVEL:
        (tmp_path / name).mkdir()
    (tmp_path / package / "bad.py").write_text(f"def f():\n    from {target}.x import y\n")
    assert violations(tmp_path) == [f"{package}/bad.py:2 imports {target} "
                                    f"({'a sibling' if LEVEL[package] == LEVEL[target] else 'a higher layer'})"]
