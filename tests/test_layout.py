"""The package's shape (issue 15): modules of one job under 400 lines, imports that flow one way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import feedservice

PACKAGE = Path(feedservice.__file__).parent
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_LINES = 400


def _layer(module: str) -> str:
    """core (model, errors, ports, config, …), adapters, services, or entry (the wiring and the edges)."""
    part = module.split(".")[1]
    if part in ("adapters", "services", "entry"):
        return part
    return "entry" if part == "__main__" else "core"


# What each layer may import: adapters and services know only the core and their own layer;
# entry (bootstrap, CLI, web, scheduler) picks adapters and hands them to services.
ALLOWED = {
    "core": {"core"},
    "adapters": {"core", "adapters"},
    "services": {"core", "services"},
    "entry": {"core", "adapters", "services", "entry"},
}


def _name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {n for n in found if n.startswith("feedservice.")}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_over_400_lines(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE)}: {lines} lines; split it by concept"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_flow_one_way(path: Path) -> None:
    module = _name(path)
    wrong = {imported for imported in _imports(path) if _layer(imported) not in ALLOWED[_layer(module)]}
    assert not wrong, f"{module} ({_layer(module)}) imports {sorted(wrong)}"
