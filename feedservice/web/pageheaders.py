"""Security headers on every response of the pages app, set in one place so no page can miss them.

- ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer`` on everything (``ALWAYS``,
  on the feeds too: their text comes from hostile sources and must never be sniffed as HTML):
  mail links carry tokens in their URLs, and no page should hand its URL to another site.
- ``Content-Security-Policy`` on every HTML page: only this site's own resources (the pages'
  styles are one stylesheet, ``/site.css``), no framing, forms post only here. A digest's web
  copy is mail HTML — inline styles and the articles' images from their own sites — so it gets
  a policy of its own that allows exactly that and still no scripts, frames or plugins.
- ``Cache-Control: no-store`` on pages reached through a token or carrying a form's CSRF value:
  a shared or back-button cache must not keep them.
"""

from __future__ import annotations

import re

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ALWAYS", "COPY_POLICY", "PAGE_POLICY", "PageHeaders"]

# The two headers every response of the server carries, pages or not: ``PageHeaders`` sets them
# on the pages, and the answers written outside Starlette (the feeds and their errors in
# ``feedserver``, the refusals of ``httplimits`` and ``requestchecks``) include them as built.
ALWAYS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)

PAGE_POLICY = "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
COPY_POLICY = (
    "default-src 'none'; img-src https: data:; style-src 'unsafe-inline'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)
DIGEST_COPY = re.compile(r"/digest/[^/]+")
PRIVATE = ("/subscribe", "/confirm/", "/preferences/", "/unsubscribe")


class PageHeaders:
    """ASGI middleware that adds the headers above to each response it passes on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Content-Type-Options"] = "nosniff"
                headers["Referrer-Policy"] = "no-referrer"
                if headers.get("content-type", "").startswith("text/html"):
                    policy = COPY_POLICY if DIGEST_COPY.fullmatch(path) else PAGE_POLICY
                    headers["Content-Security-Policy"] = policy
                if path.startswith(PRIVATE):
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)
