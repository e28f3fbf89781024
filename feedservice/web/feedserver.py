"""Serving the built feed files: a plain ASGI handler in front of the Starlette app.

Every request under /feeds/ is answered from memory: the file's bytes, its gzip form, a
strong ETag per representation and the response headers are prepared once per file
version (re-read only when the file's mtime or size changes). No database, no
rendering, no framework routing per request: this path is the one feed readers hammer.

It is an ordinary ASGI app and uses nothing of the server's own: any ASGI server runs it, and
the request bounds of ``web/httplimits.py`` apply to feed requests as to every other. Where one process is not
fast enough, nginx serves the same files from disk (docs/publishing.md, tests/test_nginx.py).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import re
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from feedservice.web.pageheaders import ALWAYS

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


@dataclass(frozen=True, slots=True)
class Reply:
    """One complete response, built once per file version: status, ASGI header list, body."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Prepared:
    """One version of one file, ready to send: its replies, each indexed by [gzip]."""

    key: tuple[int, int]
    etags: tuple[bytes, bytes]  # identity, gzip
    mtime: int
    full: tuple[Reply, Reply]  # 200 (to a HEAD too: the caller leaves the body out)
    not_modified: tuple[Reply, Reply]  # 304


class FeedFiles:
    """Built feed files, held in memory and re-read only when their mtime or size changes."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._cache: dict[tuple[str, bytes, bytes], Prepared] = {}
        self._paths: dict[str, str] = {}

    def get(self, name: str, content_type: bytes, cache_control: bytes) -> Prepared | None:
        # One stat per request, so a rebuilt file is served at once; on a remembered path
        # string, because pathlib's joining cost more than the system call.
        path = self._paths.get(name)
        if path is None:
            path = self._paths[name] = os.path.join(self.directory, name)
        try:
            st = os.stat(path)
        except OSError:
            return None
        key = (st.st_mtime_ns, st.st_size)
        cache_key = (name, content_type, cache_control)
        hit = self._cache.get(cache_key)
        if hit is not None and hit.key == key:
            return hit
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            return None
        hit = _prepare(key, data, int(st.st_mtime), content_type, cache_control)
        self._cache[cache_key] = hit
        return hit


def _prepare(key: tuple[int, int], data: bytes, mtime: int, content_type: bytes, cache_control: bytes) -> Prepared:
    digest = hashlib.sha256(data).hexdigest()[:32].encode()
    etags = (b'"' + digest + b'"', b'"' + digest + b'-gz"')
    modified = formatdate(mtime, usegmt=True).encode()
    common = [(b"last-modified", modified), (b"cache-control", cache_control), (b"vary", b"accept-encoding"), *ALWAYS]
    headers = (
        [(b"content-type", content_type), (b"etag", etags[0]), *common],
        [(b"content-type", content_type), (b"etag", etags[1]), (b"content-encoding", b"gzip"), *common],
    )
    bodies = (data, gzip.compress(data, 6, mtime=0))
    full = [Reply(200, [*headers[gz], (b"content-length", b"%d" % len(bodies[gz]))], bodies[gz]) for gz in (0, 1)]
    return Prepared(
        key,
        etags,
        mtime,
        full=(full[0], full[1]),
        not_modified=(Reply(304, headers[0]), Reply(304, headers[1])),
    )


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


def _plain(status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None) -> Reply:
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"%d" % len(body)), *ALWAYS]
    return Reply(status, headers + (extra or []), body)


@functools.lru_cache(maxsize=512)
def choose_coding(accept: bytes) -> bool | None:
    """RFC 9110 §12.5.3 for the two codings we have: True for gzip, False for identity, None if the
    client refuses both (``identity;q=0`` or ``*;q=0`` with gzip not allowed).

    A coding the field lists is acceptable unless its qvalue is 0; ``*`` stands for any coding not
    listed; identity is acceptable unless refused. gzip wins ties and is preferred when identity
    has no qvalue of its own. An element with a malformed qvalue is ignored. (Remembered per field
    value: readers send a handful of distinct ones.)"""
    if not accept.strip():
        return False  # an empty field: the client wants no coding at all
    q: dict[bytes, float] = {}
    for element in accept.lower().split(b","):
        coding, *params = (part.strip() for part in element.split(b";"))
        weight = 1.0
        for param in params:
            name, _, value = param.partition(b"=")
            if name.strip() == b"q":
                m = QVALUE.fullmatch(value.strip())
                weight = float(m[0]) if m else -1.0
        if coding and weight >= 0:
            q[b"gzip" if coding == b"x-gzip" else coding] = weight
    star = q.get(b"*")
    q_gzip = q.get(b"gzip", star if star is not None else 0.0)
    q_identity = q.get(b"identity", star)
    if q_gzip > 0 and (q_identity is None or q_gzip >= q_identity):
        return True
    if q_identity is None or q_identity > 0:
        return False
    return None


QVALUE = re.compile(rb"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")
NOT_ACCEPTABLE = _plain(
    406, b"not acceptable: this feed is sent as gzip or unencoded\n", [(b"vary", b"accept-encoding")]
)
NOT_ALLOWED = _plain(405, b"method not allowed\n", [(b"allow", b"GET, HEAD")])
UNKNOWN = _plain(404, b"unknown feed\n")
NOT_BUILT = _plain(404, b"this feed has not been built yet\n")


class FeedServer:
    """ASGI: /feeds/… from prepared bytes; everything else goes to ``fallback``."""

    def __init__(self, files: FeedFiles, slugs: set[str], max_age: int, fallback: ASGIApp) -> None:
        self.files, self.slugs, self.fallback = files, slugs, fallback
        self.max_age = f"public, max-age={max_age}".encode()
        self._routes: dict[str, tuple[str, bytes, bytes]] = {}

    def answer(self, method: str, path: str, request_headers: list[tuple[bytes, bytes]]) -> Reply:
        """The whole response to a request under /feeds/, decided without awaiting anything.
        (A HEAD gets the GET's headers; the caller sends no body for it.)"""
        if method not in ("GET", "HEAD"):
            return NOT_ALLOWED
        route = self._routes.get(path) or self._route(path)
        if route is None:
            return UNKNOWN
        prepared = self.files.get(*route)
        if prepared is None:
            return NOT_BUILT
        headers = dict(request_headers)
        accept = [v for k, v in request_headers if k == b"accept-encoding"]
        gz = choose_coding(b",".join(accept) if len(accept) > 1 else accept[0]) if accept else False
        if gz is None:
            return NOT_ACCEPTABLE
        if is_not_modified(headers, prepared):
            return prepared.not_modified[gz]
        return prepared.full[gz]

    def _route(self, path: str) -> tuple[str, bytes, bytes] | None:
        """File name, content type and cache policy for a feed URL path (remembered once valid)."""
        m = FEED_PATH.fullmatch(path)
        if m is None or (m["slug"] or m["aslug"] or "all") not in self.slugs:
            return None
        if m["opml"]:
            route = ("index.opml", CONTENT_TYPES["opml"], self.max_age)
        elif m["n"]:
            route = (f"archive/{m['aslug']}/{m['n']}.{m['aext']}", CONTENT_TYPES[m["aext"]], IMMUTABLE)
        else:
            route = (f"{m['slug']}.{m['ext']}", CONTENT_TYPES[m["ext"]], self.max_age)
        if len(self._routes) >= 10_000:  # archive page numbers have no bound; this memory has one
            self._routes.clear()
        self._routes[path] = route
        return route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith("/feeds/"):
            await self.fallback(scope, receive, send)
            return
        reply = self.answer(scope["method"], path, scope["headers"])
        await send({"type": "http.response.start", "status": reply.status, "headers": reply.headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else reply.body})
