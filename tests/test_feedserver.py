"""Serving feed files: content coding (RFC 9110 §12.5.3: gzip only where the client accepts it),
over real HTTP through Granian and through the ASGI test client; feed requests are ordinary ASGI
requests under the server."""

from __future__ import annotations

import gzip

import httpx
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from feedservice.bootstrap import App
from feedservice.web.feedserver import choose_coding
from tests import test_web
from tests.served import served

GZIP, PLAIN, REFUSED = True, False, None

CASES = [
    ("gzip", GZIP),
    ("gzip, deflate, br", GZIP),
    ("GZip", GZIP),
    ("x-gzip", GZIP),
    ("gzip;q=0.5", GZIP),  # a lower qvalue is still acceptable, and identity has none of its own
    ("gzip;q=0", PLAIN),  # the reported bug: q=0 means "not acceptable"
    ("gzip; q=0.000", PLAIN),
    ("gzip;Q=0", PLAIN),
    ("br, gzip;q=0", PLAIN),
    ("gzip;q=0.5, identity", PLAIN),  # identity preferred (q=1 > 0.5)
    ("gzip;q=0.8, identity;q=0.5", GZIP),
    ("gzip;q=0.5, identity;q=0.5", GZIP),  # a tie: the smaller one
    ("identity", PLAIN),
    ("deflate, br", PLAIN),
    ("", PLAIN),  # an empty field: no coding wanted
    ("*", GZIP),
    ("*;q=0", REFUSED),
    ("*;q=0, gzip", GZIP),
    ("*;q=0, identity", PLAIN),
    ("gzip;q=0, *", PLAIN),
    ("identity;q=0", REFUSED),  # gzip not listed (so not acceptable), identity refused
    ("identity;q=0, gzip;q=0.1", GZIP),
    ("identity;q=0, *", GZIP),
    ("gzip;q=0, identity;q=0", REFUSED),
    ("gzip;q=2", PLAIN),  # a malformed qvalue: that element is ignored
    ("gzip;q=abc, identity", PLAIN),
]


@pytest.mark.parametrize(("header", "expected"), CASES)
def test_choose_coding(header: str, expected: bool | None) -> None:
    assert choose_coding(header.encode()) is expected


# The web tests' fixtures: the app with one built feed, and a client over ASGI and over Granian.
app = test_web.app
client = test_web.client


def _get(client: httpx.Client, accept: str, path: str = "/feeds/bigtech.atom") -> tuple[int, str | None, bytes]:
    """Status, Content-Encoding and the raw body as sent (not decoded by the client)."""
    with client.stream("GET", path, headers={"Accept-Encoding": accept}) as r:
        return r.status_code, r.headers.get("content-encoding"), b"".join(r.iter_raw())


def test_gzip_only_where_accepted_over_http(client: httpx.Client) -> None:
    status, coding, body = _get(client, "gzip;q=0")
    assert (status, coding) == (200, None) and "빅테크 첫 기사" in body.decode()
    status, coding, body = _get(client, "gzip;q=0.5")
    assert (status, coding) == (200, "gzip") and "빅테크 첫 기사" in gzip.decompress(body).decode()
    status, coding, body = _get(client, "br, gzip;q=0, *;q=0.1")
    assert (status, coding) == (200, None)
    for refused in ("identity;q=0", "*;q=0"):
        status, coding, body = _get(client, refused)
        assert (status, coding) == (406, None) and b"not acceptable" in body, refused
    # A 304 follows the same choice: its ETag is the identity one when gzip is refused.
    etag = client.get("/feeds/bigtech.atom", headers={"Accept-Encoding": "identity"}).headers["etag"]
    r = client.get("/feeds/bigtech.atom", headers={"Accept-Encoding": "gzip;q=0", "If-None-Match": etag})
    assert r.status_code == 304 and r.headers["etag"] == etag and "content-encoding" not in r.headers


def test_feed_requests_pass_through_asgi_middleware_under_the_server(app: App) -> None:
    """Feed requests go through the ASGI app like every other: a middleware around it (here one
    that stamps its responses, as an access log or metrics would count them) sees them too.
    (The server used to answer them in its own parser callback, around every middleware.)"""
    seen: list[str] = []

    class Stamp:
        def __init__(self, inner: ASGIApp) -> None:
            self.app = inner

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            seen.append(scope.get("path", ""))

            async def stamped(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message["headers"] = [*message["headers"], (b"x-stamp", b"1")]
                await send(message)

            await self.app(scope, receive, stamped)

    with served(app, wrap=Stamp) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
        r = http.get("/feeds/bigtech.xml")
        etag = r.headers["etag"]
        again = http.get("/feeds/bigtech.xml", headers={"If-None-Match": etag})
        head = http.head("/feeds/bigtech.atom")
    assert (r.status_code, again.status_code, head.status_code) == (200, 304, 200)
    assert [x.headers.get("x-stamp") for x in (r, again, head)] == ["1", "1", "1"]
    assert seen == ["/feeds/bigtech.xml", "/feeds/bigtech.xml", "/feeds/bigtech.atom"]
