"""Helpers shared by the benchmark scripts: nginx from Debian, child processes, results files."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "benchmarks.md"


def ensure_nginx() -> str:
    """Debian's nginx binary, installed with apt-get when missing (the service itself is not started)."""
    path = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if path:
        return path
    print("installing Debian's nginx (apt-get) …", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "nginx-light"], check=False, env=env)
    path = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(path).exists():
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "nginx"], check=True, env=env)
    # Debian starts the packaged service on install; the benchmarks run their own instance.
    subprocess.run(["service", "nginx", "stop"], check=False, capture_output=True)
    return path


def site_config(folder: Path, port: int, *, sources: str = "", web: str = "", rest: str = "") -> str:
    """A config.toml of one section served on 127.0.0.1:``port``, its database and files in
    ``folder``; ``sources``, ``web`` (lines of ``[web]``) and ``rest`` (more tables) are added."""
    return f"""[site]
name = "뉴스스페이스"
url = "https://www.newsspace.kr"
public_url = "http://127.0.0.1:{port}"
[database]
url = "sqlite:///{folder}/fs.db"
[[sections]]
slug = "bigtech"
title = "빅테크"
{sources}[weather]
provider = "none"
[digest]
from = "bench <b@example.com>"
[feeds]
output_dir = "{folder}/feeds"
[web]
port = {port}
{web}{rest}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Nginx:
    """An nginx serving ``root`` on 127.0.0.1 (ETag and Last-Modified on, as it does by default)."""

    def __init__(self, root: Path, workdir: Path, workers: int | str = 1, access_log: bool = False) -> None:
        self.port = free_port()
        workdir = workdir.resolve()
        root = root.resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        conf = workdir / "nginx.conf"
        conf.write_text(
            f"""
worker_processes {workers};
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log {f"{workdir}/access.log" if access_log else "off"};
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    etag on;
    types {{ application/rss+xml xml; application/atom+xml atom; }}
    client_body_temp_path {workdir}/tmp;
    proxy_temp_path {workdir}/tmp;
    fastcgi_temp_path {workdir}/tmp;
    uwsgi_temp_path {workdir}/tmp;
    scgi_temp_path {workdir}/tmp;
    server {{
        listen 127.0.0.1:{self.port};
        root {root};
    }}
}}
"""
        )
        (workdir / "tmp").mkdir(exist_ok=True)
        self.proc = subprocess.Popen([ensure_nginx(), "-c", str(conf), "-p", str(workdir)])
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("nginx did not start") from None
                time.sleep(0.05)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


Row = dict[str, Any]  # a measurement as a child process printed it: JSON, read as it came


def run_child(argv: list[str], env: dict[str, str] | None = None, timeout: float = 1800) -> Row:
    """Run a measurement in its own process (so peak memory is its own); it prints one JSON line."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} … failed:\n{proc.stderr[-3000:]}")
    row: Row = json.loads(proc.stdout.strip().splitlines()[-1])
    return row


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _tree_rss_kb(pid: int) -> int:
    """Resident memory of a process and all its descendants (from /proc), in KiB."""
    total = 0
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
            for task in Path(f"/proc/{p}/task").iterdir():
                stack.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, ValueError):
            continue
    return total


class TreeMemory:
    """Samples the RSS of this process and its children (e.g. a process pool) every 20 ms."""

    def __init__(self) -> None:
        import threading

        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak_kb = max(self.peak_kb, _tree_rss_kb(os.getpid()))

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return self.peak_kb / 1024


def median(values: list[float]) -> float:
    return statistics.median(values)


def write_section(name: str, markdown: str) -> None:
    """Replace (or add) the section between ``<!-- bench:NAME -->`` markers in docs/benchmarks.md."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmarks\n"
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{markdown.rstrip()}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text, encoding="utf-8")
