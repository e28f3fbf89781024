"""The web app under Granian, as `feedservice serve` runs it (web/server.py, with web/httplimits.py's
limits), on a free port in a thread: for tests that need real connections."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from starlette.types import ASGIApp

from feedservice.bootstrap import App, make_app
from feedservice.config import load_settings
from feedservice.model import Article
from feedservice.web.app import create_app
from feedservice.web.httplimits import LIMITS, CutOff, Limits
from feedservice.web.server import EmbeddedServer, embedded
from tests.conftest import free_port


def app_with_article(cfg: Path, source: str, when: datetime, art_id: str = "a1", title: str = "빅테크 첫 기사") -> App:
    """The app of ``cfg`` with one 빅테크 article collected from ``source`` at ``when``, feeds built."""
    app = make_app(load_settings(cfg))
    art = Article(
        id=f"urn:{art_id}",
        url=f"https://www.newsspace.kr/{art_id}",
        section="bigtech",
        title=title,
        published=when,
        source_url=source,
    )
    app.store.record_fetch_success(source, when, when, etag=None, last_modified=None, articles=[art])
    app.build_feeds()
    return app


ServerFactory = Callable[[int], EmbeddedServer]


@contextlib.contextmanager
def running(factory: ServerFactory) -> Iterator[int]:
    """Run the server ``factory`` builds for a free port, in a thread with its own event loop,
    until the block ends; yields the port."""
    port = free_port()
    server = factory(port)
    loops: list[asyncio.AbstractEventLoop] = []

    async def main() -> None:
        loops.append(asyncio.get_running_loop())
        await server.serve()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    deadline = time.monotonic() + 60  # generous: the machine may be busy; a started server costs none of it
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            break
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        loops[0].call_soon_threadsafe(server.stop)
        thread.join(10)


def served(
    app: App, limits: Limits = LIMITS, wrap: Callable[[ASGIApp], ASGIApp] = lambda inner: inner
) -> contextlib.AbstractContextManager[int]:
    """Serve ``app`` as `feedservice serve` does (``limits``: shorter ones for a test; ``wrap``:
    a middleware around the app)."""
    return running(lambda port: embedded(wrap(create_app(app)), "127.0.0.1", port, limits))


class _Captured(Exception):
    pass


def serve_config(app: App, monkeypatch: pytest.MonkeyPatch) -> ServerFactory:
    """The server ``feedservice serve`` builds (its ASGI app, as given to Granian), caught before
    it starts serving; ``running`` serves it on a free port."""
    from feedservice import scheduler

    captured: list[tuple[ASGIApp, CutOff | None]] = []

    def capture(
        asgi: ASGIApp, host: str, port: int, limits: Limits = LIMITS, cutoff: CutOff | None = None
    ) -> EmbeddedServer:
        captured.append((asgi, cutoff))
        raise _Captured

    with monkeypatch.context() as patch:
        patch.setattr(scheduler, "embedded", capture)
        # serve tries its address first (web/listen.py): not here, running() picks a free port,
        # and the configured 8080 may be taken on this machine.
        patch.setattr(scheduler, "listen_address", lambda *args, **kwargs: "127.0.0.1")
        with contextlib.suppress(_Captured):
            asyncio.run(scheduler.serve(app, with_scheduler=False))
    [(asgi, cutoff)] = captured
    return lambda port: embedded(asgi, "127.0.0.1", port, cutoff=cutoff)


@contextlib.contextmanager
def serve_process(config_path: Path) -> Iterator[int]:
    """``feedservice serve`` in a process of its own (so the test's own work does not share its
    interpreter), on a free port written into the config's ``[web]``; yields the port."""
    port = free_port()
    text = config_path.read_text(encoding="utf-8").replace("[web]\n", f"[web]\nport = {port}\n", 1)
    config_path.write_text(text, encoding="utf-8")
    log = config_path.with_name("serve.log")  # a file, not a pipe nobody reads (it would fill and block)
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "feedservice", "--config", str(config_path), "serve"],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    with process_serving(proc, f"http://127.0.0.1:{port}/healthz", log, 60):
        yield port


@contextlib.contextmanager
def process_serving(proc: subprocess.Popen[bytes], url: str, log: Path, wait: float) -> Iterator[None]:
    """Wait (up to ``wait`` seconds) until the server ``proc`` answers ``url`` with a 2xx/4xx;
    stop it when the block ends. A server that exits fails the test with its ``log``."""
    try:
        deadline = time.monotonic() + wait
        # One client for every try: each httpx.get() would build an SSL context (~40 ms of CPU),
        # taken from the server it waits for.
        with httpx.Client(timeout=1) as http:
            while True:
                assert proc.poll() is None, log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
                with contextlib.suppress(httpx.TransportError):
                    if http.get(url).status_code < 500:
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
