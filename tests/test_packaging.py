"""The wheel works where it is installed: built from the sources, installed (not editable) into a
fresh virtual environment and run from another folder, ``feedservice demo`` renders and sends.

An installed wheel once failed its first digest with "template digest.html.j2: template not
found", because the templates were looked up beside the source tree. The wheel is built with
this environment's setuptools (no download); the fresh environment borrows this one's installed
dependencies through a ``.pth`` line, so only the wheel's own files are new. ``.ci/run`` also
installs the wheel with its dependencies from the index.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

from tests.conftest import ROOT


def _build_wheel(dest: Path) -> Path:
    src = dest / "src"
    for part in ("feedservice", "templates"):
        shutil.copytree(ROOT / part, src / part, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(src),
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(dest / "dist"),
            "--quiet",
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = (dest / "dist").glob("feedservice-*.whl")
    return wheel


def test_the_wheel_installed_elsewhere_runs_the_demo(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {n.removeprefix("feedservice/templates/") for n in names if n.startswith("feedservice/templates/")}
    assert shipped == {p.name for p in (ROOT / "templates").glob("*.j2")}
    assert not [n for n in names if "demo_data" in n or n.startswith("tests/")]

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (site / "borrowed-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n", encoding="utf-8")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--quiet", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FEEDSERVICE_", "PYTHON"))}
    where = subprocess.run(
        [str(python), "-c", "import feedservice; print(feedservice.__file__)"],
        cwd=elsewhere,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert Path(where.strip()).is_relative_to(site), where  # the installed copy, not the sources
    demo = subprocess.run(
        [str(venv / "bin" / "feedservice"), "demo", "--dir", str(tmp_path / "demo")],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "2 sent" in demo.stdout
    assert "오늘의 날씨" in (tmp_path / "demo" / "preview" / "index.html").read_text(encoding="utf-8")


def _imported_top_modules(package: Path) -> set[str]:
    """The top-level names of every absolute import in the package's sources."""
    names: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"feedservice", "__future__"}


def test_every_library_the_package_imports_is_a_declared_dependency() -> None:
    """An installed wheel gets only what pyproject.toml declares: a library imported but not declared
    (feedgen once was, after it had been dropped from the dependencies) arrives only by luck,
    through another package's requirements, and the service fails to start where it does not."""
    declared = {
        re.split(r"[\s\[<>=!~;]", req, maxsplit=1)[0].lower().replace("_", "-")
        for req in tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    }
    providers = importlib.metadata.packages_distributions()
    undeclared = {
        module: providers.get(module)
        for module in _imported_top_modules(ROOT / "feedservice")
        if not {d.lower().replace("_", "-") for d in providers.get(module, [])} & declared
    }
    assert undeclared == {}


def test_the_service_has_one_http_client() -> None:
    """aiohttp collects, fetches the weather and pings WebSub (issue 15): a second client library
    means a second set of timeouts, proxies and exceptions to get right. httpx stays a test extra,
    for starlette's TestClient."""
    imported = _imported_top_modules(ROOT / "feedservice")
    assert "aiohttp" in imported
    assert imported & {"httpx", "httpcore", "requests", "urllib3"} == set()
    runtime = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    assert not [req for req in runtime if req.lower().startswith(("httpx", "requests"))]
