"""Serving the built feed files: a plain ASGI handler in front of the Starlette app.

Every request under /feeds/ is answered from memory: the file's bytes, its gzip form, a
strong ETag per representation and the response headers are prepared once per file
version (re-read only when the file's mtime or size changes). No database, no
rendering, no framework routing per request: this path is the one feed readers hammer.
"""

from __future__ import annotations

import gzip
import hashlib
import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

FEED_PATH = re.compile(
    r"/feeds/(?:(?P<opml>index\.opml)|archive/(?P<aslug>[a-z0-9][a-z0-9_-]{0,63})/(?P<n>[1-9][0-9]{0,8})"
    r"\.(?P<aext>xml|atom|json)|(?P<slug>[a-z0-9][a-z0-9_-]{0,63})\.(?P<ext>xml|atom|json))"
)
CONTENT_TYPES = {
    "xml": b"application/rss+xml; charset=utf-8",
    "atom": b"application/atom+xml; charset=utf-8",
    "json": b"application/feed+json; charset=utf-8",
    "opml": b"text/x-opml; charset=utf-8",
}
IMMUTABLE = b"public, max-age=31536000, immutable"


@dataclass(frozen=True)
class Prepared:
    """One version of one file, ready to send."""

    key: tuple[int, int]
    data: bytes
    gz: bytes
    etags: tuple[bytes, bytes]  # identity, gzip
    mtime: int
    headers: tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]  # identity, gzip (without length)


class FeedFiles:
    """Built feed files, held in memory and re-read only when their mtime or size changes."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._cache: dict[tuple[str, bytes, bytes], Prepared] = {}

    def get(self, name: str, content_type: bytes, cache_control: bytes) -> Prepared | None:
        path = self.directory / name
        try:
            st = path.stat()
        except OSError:
            return None
        key = (st.st_mtime_ns, st.st_size)
        cache_key = (name, content_type, cache_control)
        hit = self._cache.get(cache_key)
        if hit is not None and hit.key == key:
            return hit
        try:
            data = path.read_bytes()
        except OSError:
            return None
        digest = hashlib.sha256(data).hexdigest()[:32].encode()
        etags = (b'"' + digest + b'"', b'"' + digest + b'-gz"')
        modified = formatdate(int(st.st_mtime), usegmt=True).encode()
        common = [(b"last-modified", modified), (b"cache-control", cache_control), (b"vary", b"accept-encoding")]
        headers = (
            [(b"content-type", content_type), (b"etag", etags[0]), *common],
            [(b"content-type", content_type), (b"etag", etags[1]), (b"content-encoding", b"gzip"), *common],
        )
        hit = Prepared(key, data, gzip.compress(data, 6, mtime=0), etags, int(st.st_mtime), headers)
        self._cache[cache_key] = hit
        return hit


def is_not_modified(headers: dict[bytes, bytes], prepared: Prepared) -> bool:
    """RFC 9110 §13.2.2: If-None-Match decides when present; otherwise If-Modified-Since."""
    inm = headers.get(b"if-none-match")
    if inm is not None:
        if inm in prepared.etags:
            return True
        tags = {t.strip().removeprefix(b"W/") for t in inm.split(b",")}
        return b"*" in tags or any(e in tags for e in prepared.etags)
    ims = headers.get(b"if-modified-since")
    if ims:
        try:
            return int(parsedate_to_datetime(ims.decode("latin-1")).timestamp()) >= prepared.mtime
        except (TypeError, ValueError):
            return False
    return False


class FeedServer:
    """ASGI: /feeds/… from prepared bytes; everything else goes to ``fallback``."""

    def __init__(self, files: FeedFiles, slugs: set[str], max_age: int, fallback: ASGIApp) -> None:
        self.files, self.slugs, self.fallback = files, slugs, fallback
        self.max_age = f"public, max-age={max_age}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith("/feeds/"):
            await self.fallback(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _plain(send, 405, b"method not allowed\n", [(b"allow", b"GET, HEAD")])
            return
        m = FEED_PATH.fullmatch(path)
        if m is None or (m["slug"] or m["aslug"] or "all") not in self.slugs:
            await _plain(send, 404, b"unknown feed\n")
            return
        if m["opml"]:
            name, ctype, cache = "index.opml", CONTENT_TYPES["opml"], self.max_age
        elif m["n"]:
            name, ctype, cache = f"archive/{m['aslug']}/{m['n']}.{m['aext']}", CONTENT_TYPES[m["aext"]], IMMUTABLE
        else:
            name, ctype, cache = f"{m['slug']}.{m['ext']}", CONTENT_TYPES[m["ext"]], self.max_age
        prepared = self.files.get(name, ctype, cache)
        if prepared is None:
            await _plain(send, 404, b"this feed has not been built yet\n")
            return
        headers = dict(scope["headers"])
        gz = b"gzip" in headers.get(b"accept-encoding", b"")
        response_headers = prepared.headers[gz]
        if is_not_modified(headers, prepared):
            await send({"type": "http.response.start", "status": 304, "headers": response_headers})
            await send({"type": "http.response.body", "body": b""})
            return
        body = prepared.gz if gz else prepared.data
        await send({
            "type": "http.response.start", "status": 200,
            "headers": [*response_headers, (b"content-length", str(len(body)).encode())],
        })  # fmt: skip
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


async def _plain(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": body})
