"""Limits on what one HTTP connection may cost the server: uvicorn's httptools protocol with
a bounded request head, and timeouts for slow heads, slow bodies and idle connections.

uvicorn's httptools path has none of these: httptools gathers a header of any length in memory
(three connections with 100 MB of headers took 300 MB), a connection that sends nothing, or
one header byte a second, is kept for ever, and a body that never ends holds its request open.
uvicorn's own ``timeout_keep_alive`` only starts after a response. So:

- the request line and headers together may take ``max_head_bytes``; beyond, the answer is
  431 and the connection closes. The parser is fed no more than that while it reads a head,
  so its buffer stays bounded whatever the client sends;
- at most ``max_headers`` header lines (beyond: uvicorn's 400, connection closed);
- a head must be complete ``head_timeout`` seconds after the connection opened or the previous
  request ended — this also closes connections that never send anything;
- a body must be complete ``body_timeout`` seconds after its head;
- between requests, uvicorn's ``timeout_keep_alive`` (5 s by default) closes an idle connection.

Behind nginx (docs/publishing.md) nginx applies its own limits first; these hold when the
server faces clients directly, and against a misconfigured proxy.
"""

from __future__ import annotations

from asyncio import TimerHandle
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["LimitedHttpProtocol"]

_TOO_LARGE_BODY = b"request header fields too large\n"
TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: %d\r\n"
    b"connection: close\r\n\r\n%s" % (len(_TOO_LARGE_BODY), _TOO_LARGE_BODY)
)


class TooManyHeaders(Exception):
    """Raised from the parser callback; httptools turns it into a parse error (uvicorn: 400)."""


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounded heads and timeouts (see the module docstring)."""

    max_head_bytes = 32 * 1024
    max_headers = 100
    head_timeout = 15.0
    body_timeout = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # the next bytes belong to a request line and headers
        self._head_bytes = 0
        self._header_count = 0
        self._timer: TimerHandle | None = None

    # -- the connection ---------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._wait_for_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        # While a head is being read, feed the parser at most what a head may take, so a
        # header of any length costs no more than ``max_head_bytes`` before it is refused.
        while self._in_head and data:
            room = self.max_head_bytes - self._head_bytes
            if room <= 0:
                self._refuse_head()
                return
            piece, data = data[:room], data[room:]
            self._head_bytes += len(piece)
            super().data_received(piece)
            if self.transport.is_closing():
                return
        if data:
            super().data_received(data)

    # -- parser callbacks -------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._header_count = 0
        super().on_message_begin()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.max_headers:
            raise TooManyHeaders(f"more than {self.max_headers} header lines")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.end_head()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._wait_for_head()
        super().on_message_complete()

    # -- the limits -------------------------------------------------------------------------
    def end_head(self) -> None:
        """The head is complete: count no more bytes against it; the body has its own deadline."""
        self._in_head = False
        self._arm(self.body_timeout)

    def _wait_for_head(self) -> None:
        self._in_head, self._head_bytes = True, 0
        self._arm(self.head_timeout)

    def _arm(self, seconds: float) -> None:
        self._cancel_timer()
        self._timer = self.loop.call_later(seconds, self._on_timeout)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timeout(self) -> None:
        self._timer = None
        if self.transport is None or self.transport.is_closing():
            return
        if self._in_head and (self.pipeline or (self.cycle is not None and not self.cycle.response_complete)):
            # Waiting for the next head while a response is still being written: the clock
            # for that head starts again (a slow answer is not the client's fault).
            self._arm(self.head_timeout)
            return
        self.logger.info("closing a connection whose request %s did not arrive in time",
                         "head" if self._in_head else "body")  # fmt: skip
        self.transport.close()

    def _refuse_head(self) -> None:
        self.logger.info("refusing a request head over %d bytes", self.max_head_bytes)
        self._cancel_timer()
        self.transport.write(TOO_LARGE)
        self.transport.close()
