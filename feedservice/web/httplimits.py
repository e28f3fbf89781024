"""Limits on what one HTTP connection may cost the server (issue 13 item 11), on public API only.

Most of them are Granian's documented HTTP/1 settings (``granian.http.HTTP1Settings``, hyper
underneath), built by ``http1_settings``:

- ``header_read_timeout``: a request head must be complete ``head_timeout`` seconds after the
  connection opened or the previous response was sent. hyper runs this clock whenever it waits
  for a head, so it also closes connections that never send anything and idle keep-alive
  connections: the idle timeout between requests is ``head_timeout`` too;
- ``max_buffer_size``: the parser's read buffer is bounded, so a header of any length costs no
  more than about that much memory; past it, hyper answers 431 and closes the connection;
- at most 100 header lines: hyper's own fixed limit (431, connection closed).

Granian has no setting for the rest, so ``RequestLimits``, an ASGI middleware (ASGI's public
interface, nothing of the server's), adds it:

- the head may take exactly ``max_head_bytes`` (hyper's bound is approximate: its buffer grows in
  steps, and a 40 KB head got through a 32 KB buffer); beyond, 431 and the connection closes;
- a body must be complete ``body_timeout`` seconds after its head: ``receive()`` gets that
  deadline; past it the app sees a disconnect, the client a 408, and the connection closes.

Behind nginx (docs/publishing.md) nginx applies its own limits first; these hold when the
server faces clients directly, and against a misconfigured proxy.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from granian.http import HTTP1Settings
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from feedservice.web.pageheaders import ALWAYS

__all__ = ["LIMITS", "Limits", "RequestLimits", "http1_settings", "plain_answer"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Limits:
    """What one request may cost. ``max_headers`` is hyper's fixed limit, stated here to be tested."""

    max_head_bytes: int = 32 * 1024
    max_headers: int = 100
    head_timeout: float = 15.0  # also the idle keep-alive timeout (see the module docstring)
    body_timeout: float = 30.0


LIMITS = Limits()


def http1_settings(limits: Limits = LIMITS) -> HTTP1Settings:
    """Granian's HTTP/1 settings for ``limits`` (its minimum buffer is 8 KB)."""
    return HTTP1Settings(
        header_read_timeout=max(1, round(limits.head_timeout * 1000)),
        keep_alive=True,
        max_buffer_size=max(8192, limits.max_head_bytes),
    )


def plain_answer(status: int, reason: bytes) -> tuple[Message, Message]:
    """A short text answer that closes the connection, with the headers every answer carries."""
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", b"%d" % len(reason)),
        (b"connection", b"close"),
        *ALWAYS,
    ]
    return (
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": reason},
    )


TOO_LARGE = plain_answer(431, b"request header fields too large\n")
TOO_SLOW = plain_answer(408, b"the request body did not arrive in time\n")
_BODY_HEADERS = (b"content-length", b"transfer-encoding")


class RequestLimits:
    """ASGI: the exact head size and the body deadline (see the module docstring)."""

    def __init__(self, app: ASGIApp, limits: Limits = LIMITS) -> None:
        self.app, self.limits = app, limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            await self._limited(scope, receive, send)
        except asyncio.CancelledError:
            # Granian cancels the requests still waiting for their client when it stops (SIGTERM),
            # then logs each cancellation as an application error with a traceback. A request
            # cut off by a shutdown is expected: one line, and the task ends as Granian asked.
            # (Not the path: mail links carry tokens.)
            log.info("a %s request was cut off by the server stopping", scope["method"])

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The head as it came: request line (with the query) and each "name: value\r\n".
        size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") + 16
        has_body = False
        for name, value in scope["headers"]:
            size += len(name) + len(value) + 4
            has_body = has_body or name in _BODY_HEADERS
        if size > self.limits.max_head_bytes:
            log.info("refusing a request head over %d bytes", self.limits.max_head_bytes)
            for message in TOO_LARGE:
                await send(message)
            return
        if has_body:
            await _BodyDeadline(self.limits.body_timeout, receive, send).run(self.app, scope)
        else:  # a GET, the feed readers' request: nothing to time
            await self.app(scope, receive, send)


class _BodyDeadline:
    """One request whose body must arrive by a deadline; past it, a 408 and the connection closes."""

    def __init__(self, seconds: float, receive: Receive, send: Send) -> None:
        self._loop = asyncio.get_running_loop()
        self._deadline = self._loop.time() + seconds
        self._receive, self._send = receive, send
        self._body_done = self._late = self._started = False

    async def run(self, app: ASGIApp, scope: Scope) -> None:
        await app(scope, self.receive, self.send)
        if self._late and not self._started:
            log.info("closing a connection whose request body did not arrive in time")
            for message in TOO_SLOW:
                await self._send(message)

    async def receive(self) -> Message:
        if self._body_done or self._late:  # after the body: waiting for a disconnect is not timed
            return await self._receive()
        try:
            async with asyncio.timeout_at(self._deadline):
                message = await self._receive()
        except TimeoutError:
            self._late = True
            return {"type": "http.disconnect"}
        if message["type"] != "http.request" or not message.get("more_body", False):
            self._body_done = True
        return message

    async def send(self, message: Message) -> None:
        if self._late and not self._started:  # the app was told the client left; the 408 is ours
            return
        if message["type"] == "http.response.start":
            self._started = True
        await self._send(message)
