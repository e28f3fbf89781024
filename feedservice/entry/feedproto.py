"""uvicorn's httptools protocol, with requests for feed files answered as soon as their headers parse.

A feed reader's poll is a GET that ends, nine times in ten, in a 304. Through ASGI each one costs
a scope, a request/response cycle object, a task and two awaited messages; for an answer that
``FeedServer.answer`` decides synchronously from bytes in memory, that machinery was most of the
time a request took. ``FeedProtocol`` writes those answers straight to the transport from the
parser callback and leaves everything else (other paths, other methods, pipelined requests
behind one still in flight, a connection whose writes are paused) to uvicorn's own path, so
keep-alive, flow control and shutdown behave exactly as before.

This leans on uvicorn's protocol internals (``cycle``, ``pipeline``, ``flow``, ``server_state``),
so pyproject.toml pins uvicorn to the minor versions it is tested against.
"""

from __future__ import annotations

from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from feedservice.entry.feedserver import FeedServer
from feedservice.entry.httplimits import LimitedHttpProtocol

__all__ = ["FeedProtocol"]

EOH = b"\r\n"
CLOSE = b"connection: close\r\n\r\n"


class _Answered:
    """Stands in for uvicorn's request/response cycle once a request was answered directly."""

    response_complete = True
    disconnected = False
    keep_alive = True

    class message_event:
        @staticmethod
        def set() -> None:
            return None


ANSWERED = _Answered()


def find_feed_server(app: Any) -> FeedServer | None:
    """The FeedServer inside uvicorn's wrappers (proxy headers, …), if the app has one."""
    for _ in range(8):
        if isinstance(app, FeedServer):
            return app
        app = getattr(app, "app", None)
    return None


class FeedProtocol(LimitedHttpProtocol):
    """HTTP/1.1 as uvicorn does it (with ``LimitedHttpProtocol``'s bounds), with GET/HEAD under
    /feeds/ answered in the parser callback."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.feeds = find_feed_server(self.app)
        self._date_src: list[tuple[bytes, bytes]] | None = None
        self._date_bytes = b""

    def on_headers_complete(self) -> None:
        if self.feeds is None or not self._answer_directly():
            super().on_headers_complete()

    def _answer_directly(self) -> bool:
        url = self.url
        if not url.startswith(b"/feeds/") or self.expect_100_continue or b"%" in url:
            return False
        if self.cycle is not None and not self.cycle.response_complete:
            return False  # pipelined behind a request still being answered: keep the order
        if self.flow.write_paused or self.parser.should_upgrade():
            return False
        method = self.parser.get_method()
        if method not in (b"GET", b"HEAD"):
            return False
        try:
            path = httptools.parse_url(url).path.decode("ascii")
        except (httptools.HttpParserInvalidURLError, UnicodeDecodeError):
            return False  # uvicorn's own path answers it as it would any other request
        assert self.feeds is not None
        self.end_head()
        reply = self.feeds.answer(method.decode("ascii"), path, self.headers)
        keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        transport = self.transport
        transport.write(
            b"".join((STATUS_LINE[reply.status], self._default_headers(), reply.head, EOH if keep_alive else CLOSE))
        )
        if reply.body and method == b"GET":
            transport.write(reply.body)
        self.cycle = ANSWERED  # type: ignore[assignment]
        if not keep_alive:
            self.server_state.total_requests += 1
            transport.close()
            return True
        # A request pipelined in the same read may already have armed the keep-alive timer.
        self._unset_keepalive_if_required()
        self.on_response_complete()
        return True

    def _default_headers(self) -> bytes:
        """uvicorn's Date and Server headers, serialised once per change (once a second)."""
        current = self.server_state.default_headers
        if current is not self._date_src:
            self._date_src = current
            self._date_bytes = b"".join(b"%s: %s\r\n" % pair for pair in current)
        return self._date_bytes
