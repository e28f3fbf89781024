"""The web app under uvicorn, as `feedservice serve` runs it (feedservice's HTTP protocol), on a
free port in a thread: for tests that need real connections."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import uvicorn

from feedservice.entry.bootstrap import App
from feedservice.entry.feedproto import FeedProtocol
from feedservice.entry.web import create_app
from tests.conftest import free_port


@contextlib.contextmanager
def served(app: App, protocol: type[FeedProtocol] = FeedProtocol, **config: object) -> Iterator[int]:
    """Serve ``app`` until the block ends; yields the port. ``config``: more uvicorn.Config options."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(app), host="127.0.0.1", port=port, http=protocol,
                                           lifespan="off", log_config=None, **config))  # type: ignore[arg-type]  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)
