"""The package's shape (issue 15): modules of one job under 400 lines, imports that flow one way."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import feedservice

PACKAGE = Path(feedservice.__file__).parent
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_LINES = 400


def _layer(module: str) -> str:
    """The layer a module belongs to: its folder (adapters, services, web, cli), one of the edge
    modules at the package top (bootstrap, scheduler; aio and logs, which set up a process), or core
    (model, errors, ports, config, …)."""
    parts = module.split(".")
    part = parts[1] if len(parts) > 1 else ""  # "" for the package itself: core
    if part in ("adapters", "services", "web", "cli", "bootstrap", "scheduler"):
        return part
    if part in ("aio", "logs"):
        return "process"
    return "cli" if part == "__main__" else "core"


# What each layer may import. Adapters and services know only the core and their own layer;
# bootstrap picks adapters and hands them to services; web, cli and the scheduler receive a
# bootstrap.App. Nothing below them imports web/ or cli/, and web/ never imports cli/.
ALLOWED = {
    "core": {"core"},
    "process": {"core"},
    "adapters": {"core", "adapters"},
    "services": {"core", "services"},
    "bootstrap": {"core", "adapters", "services"},
    "web": {"core", "services", "bootstrap", "process", "web"},
    # `run` and `serve`: the web app, the scheduler and the sending helper in one loop.
    "scheduler": {"core", "adapters", "bootstrap", "process", "web"},
    "cli": {"core", "adapters", "services", "bootstrap", "process", "scheduler", "cli"},
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
    layer = _layer(module)
    wrong = {imported for imported in _imports(path) if _layer(imported) not in ALLOWED[layer]}
    assert not wrong, f"{module} ({layer}) imports {sorted(wrong)}"


ARCHITECTURE = PACKAGE.parent / "docs" / "architecture.md"
# A path as the page writes it: relative to feedservice/ (or to the repository), a module or a folder.
_PATH = re.compile(r"(?<![\w./-])((?:[a-z_]+/)*[a-z_]+(?:\.py|/))(?![\w-])")


def _named_in_architecture() -> set[str]:
    return set(_PATH.findall(ARCHITECTURE.read_text(encoding="utf-8")))


def test_every_path_docs_architecture_names_exists() -> None:
    named = _named_in_architecture()
    missing = sorted(p for p in named if not (PACKAGE / p).exists() and not (PACKAGE.parent / p).exists())
    assert not missing, f"docs/architecture.md names what the tree does not have: {missing}"


def test_docs_architecture_names_every_folder_and_top_level_module() -> None:
    named = _named_in_architecture()
    packages = [p.parent for p in PACKAGE.rglob("__init__.py") if p.parent != PACKAGE]
    folders = {f"{p.relative_to(PACKAGE).as_posix()}/" for p in packages}
    top = {p.name for p in PACKAGE.glob("*.py") if not p.name.startswith("_")}
    assert not (folders | top) - named, f"docs/architecture.md does not show {sorted((folders | top) - named)}"
