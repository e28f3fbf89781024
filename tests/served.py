"""The web app under uvicorn, as `feedservice serve` runs it (with web/httplimits.py's protocol), on a
free port in a thread: for tests that need real connections."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TypedDict, Unpack

import httpx
import pytest
import uvicorn

from feedservice.bootstrap import App, make_app
from feedservice.config import load_settings
from feedservice.model import Article
from feedservice.web.app import create_app
from feedservice.web.httplimits import LimitedHttpProtocol
from tests.conftest import free_port


def app_with_article(cfg: Path, source: str, when: datetime, art_id: str = "a1", title: str = "빅테크 첫 기사") -> App:
    """The app of ``cfg`` with one 빅테크 article collected from ``source`` at ``when``, feeds built."""
    app = make_app(load_settings(cfg))
    art = Article(id=f"urn:{art_id}", url=f"https://www.newsspace.kr/{art_id}", section="bigtech", title=title,
                  published=when, source_url=source)  # fmt: skip
    app.store.record_fetch_success(source, when, when, etag=None, last_modified=None, articles=[art])
    app.build_feeds()
    return app


@contextlib.contextmanager
def running(config: uvicorn.Config) -> Iterator[int]:
    """Run a uvicorn server with ``config`` (on a free port) until the block ends; yields the port."""
    config.port = free_port()
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield config.port
    finally:
        server.should_exit = True
        thread.join(10)


class UvicornOptions(TypedDict, total=False):
    """More ``uvicorn.Config`` options for ``served`` (the ones the tests set)."""

    timeout_keep_alive: int


def served(
    app: App, protocol: type[LimitedHttpProtocol] = LimitedHttpProtocol, **config: Unpack[UvicornOptions]
) -> contextlib.AbstractContextManager[int]:
    """Serve ``app`` as `feedservice serve` does; ``config``: more uvicorn.Config options."""
    return running(uvicorn.Config(create_app(app), host="127.0.0.1", http=protocol, lifespan="off",
                                  log_config=None, **config))  # fmt: skip


def serve_config(app: App, monkeypatch: pytest.MonkeyPatch) -> uvicorn.Config:
    """The uvicorn.Config that ``feedservice serve`` builds, caught before it starts serving."""
    from feedservice import scheduler

    captured: list[uvicorn.Config] = []

    class Capture:
        def __init__(self, config: uvicorn.Config) -> None:
            captured.append(config)

        async def serve(self, sockets: object = None) -> None:
            return None

    with monkeypatch.context() as patch:
        patch.setattr(scheduler, "_Server", Capture)
        # serve opens its listening sockets first (web/listen.py): none here, the caller's
        # running() picks a free port, and the configured 8080 may be taken on this machine.
        patch.setattr(scheduler, "open_listeners", lambda *args, **kwargs: [])
        asyncio.run(scheduler.serve(app, with_scheduler=False))
    [config] = captured
    return config


@contextlib.contextmanager
def serve_process(config_path: Path) -> Iterator[int]:
    """``feedservice serve`` in a process of its own (so the test's own work does not share its
    interpreter), on a free port written into the config's ``[web]``; yields the port."""
    port = free_port()
    text = config_path.read_text(encoding="utf-8").replace("[web]\n", f"[web]\nport = {port}\n", 1)
    config_path.write_text(text, encoding="utf-8")
    log = config_path.with_name("serve.log")  # a file, not a pipe nobody reads (it would fill and block)
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "feedservice", "--config", str(config_path), "serve"],
                                stdout=subprocess.DEVNULL, stderr=err)  # fmt: skip
    with process_serving(proc, f"http://127.0.0.1:{port}/healthz", log, 20):
        yield port


@contextlib.contextmanager
def process_serving(proc: subprocess.Popen[bytes], url: str, log: Path, wait: float) -> Iterator[None]:
    """Wait (up to ``wait`` seconds) until the server ``proc`` answers ``url`` with a 2xx/4xx;
    stop it when the block ends. A server that exits fails the test with its ``log``."""
    try:
        deadline = time.monotonic() + wait
        while True:
            assert proc.poll() is None, log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url, timeout=1).status_code < 500:
                    break
            assert time.monotonic() < deadline, f"{proc.args!r} did not start"
            time.sleep(0.05)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
