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

Stopping (``CutOff``): Granian's embedded server stops gracefully, finishing the requests in
flight, and a request whose client never sends its body would hold the stop up until its
deadline. ``feedservice serve`` gives them ``run.shutdown_timeout`` and then calls
``CutOff.cut``: each request still waiting for its body sees the client gone, its client gets a
503, and the connection closes, so Granian's stop ends by itself. (It used to be cut off by
cancelling Granian's serving task: the requests' tasks were then cancelled as the event loop
closed — each was logged as one line only because the cancellation was swallowed here — and
now and then Granian's own shutdown callback, arriving after its cancelled future, logged an
``InvalidStateError``.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

from granian.http import HTTP1Settings
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from feedservice.web.pageheaders import ALWAYS

__all__ = ["LIMITS", "CutOff", "Limits", "RequestLimits", "http1_settings", "plain_answer"]

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
STOPPING = plain_answer(503, b"the server is stopping\n")
_BODY_HEADERS = (b"content-length", b"transfer-encoding")


class CutOff:
    """The requests still waiting for a body; ``cut`` (the server is stopping) ends each: the
    app sees its client gone, the client gets a 503, the connection closes."""

    def __init__(self) -> None:
        self._waiting: set[_BodyDeadline] = set()
        self.done = False

    def cut(self) -> None:
        self.done = True
        for request in list(self._waiting):
            request.cut()

    @contextlib.contextmanager
    def watching(self, request: _BodyDeadline) -> Iterator[None]:
        """``request`` is cut with the others while the block runs."""
        self._waiting.add(request)
        try:
            yield
        finally:
            self._waiting.discard(request)


class RequestLimits:
    """ASGI: the exact head size and the body deadline (see the module docstring)."""

    def __init__(self, app: ASGIApp, limits: Limits = LIMITS, cutoff: CutOff | None = None) -> None:
        self.app, self.limits = app, limits
        self.cutoff = cutoff or CutOff()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self._limited(scope, receive, send)

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
        if not has_body:  # a GET, the feed readers' request: nothing to time
            await self.app(scope, receive, send)
            return
        request = _BodyDeadline(self.limits.body_timeout, receive, send, stopping=self.cutoff.done)
        with self.cutoff.watching(request):
            await request.run(self.app, scope)


class _BodyDeadline:
    """One request whose body must arrive by a deadline; past it, a 408 and the connection closes.
    ``cut`` (the server stopping) moves the deadline to now, and the answer is a 503."""

    def __init__(self, seconds: float, receive: Receive, send: Send, *, stopping: bool = False) -> None:
        self._loop = asyncio.get_running_loop()
        self._deadline = self._loop.time() + (0 if stopping else seconds)
        self._receive, self._send = receive, send
        self._body_done = self._late = self._started = False
        self._stopping = stopping
        self._timeout: asyncio.Timeout | None = None  # the deadline of the read under way

    def cut(self) -> None:
        self._stopping, self._deadline = True, self._loop.time()
        if self._timeout is not None and not self._body_done:
            self._timeout.reschedule(self._deadline)

    async def run(self, app: ASGIApp, scope: Scope) -> None:
        await app(scope, self.receive, self.send)
        if self._late and not self._started:
            if self._stopping:  # not the path: mail links carry tokens
                log.info("a %s request was cut off by the server stopping", scope["method"])
            else:
                log.info("closing a connection whose request body did not arrive in time")
            for message in STOPPING if self._stopping else TOO_SLOW:
                await self._send(message)

    async def receive(self) -> Message:
        if self._body_done or self._late:  # after the body: waiting for a disconnect is not timed
            return await self._receive()
        try:
            async with asyncio.timeout_at(self._deadline) as self._timeout:
                message = await self._receive()
        except TimeoutError:
            self._late = True
            return {"type": "http.disconnect"}
        finally:
            self._timeout = None
        if message["type"] != "http.request" or not message.get("more_body", False):
            self._body_done = True
        return message

    async def send(self, message: Message) -> None:
        if self._late and not self._started:  # the app was told the client left; the 408 is ours
            return
        if message["type"] == "http.response.start":
            self._started = True
        await self._send(message)
