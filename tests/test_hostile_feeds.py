"""Hostile sources against the collector (issue 13, "Collector"): whatever one source sends —
redirects, headers, addresses, documents — it is that source's recorded failure, the collect
completes, and the other sources' articles are stored.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from feedservice.adapters.parse import parse_feed
from feedservice.adapters.store import open_store
from feedservice.entry.bootstrap import App
from feedservice.model import FetchResult, ParsedFeed, Section
from feedservice.services.collect import CollectReport, collect
from tests import test_collect
from tests.conftest import FeedServer, Served
from tests.test_collect import GOOD, NOW

SEOUL = ZoneInfo("Asia/Seoul")
make = test_collect.make  # the fixture: an App on a config with these sources


def _collect(app: App, *, force: bool = True) -> CollectReport:
    return asyncio.run(asyncio.wait_for(app.collect(force=force), 20))


def _good_sources(feed_server: FeedServer, n: int) -> list[tuple[str, str]]:
    """n working sources, each with its own two articles."""
    out = []
    for i in range(n):
        body = GOOD.replace(b"/news/articleView.html?idxno=", f"/s{i}/articleView.html?idxno=".encode())
        feed_server.files[f"/good{i}.xml"] = Served(body)
        out.append((feed_server.url(f"/good{i}.xml"), "bigtech"))
    return out


# -- item 5: one hostile redirect or header ------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "headers", "message"),
    [
        (302, {"Location": "http://[::1/x"}, "invalid Location"),
        (301, {"Location": "http://[：：１]:{port}/good0.xml"}, "invalid Location"),
        (429, {"Retry-After": "²"}, "HTTP 429"),
        (503, {"Retry-After": "٣٦٠٠٠"}, "HTTP 503"),  # 36000 in Arabic-Indic digits: not delta-seconds
    ],
    ids=["unclosed-ipv6-bracket", "fullwidth-ipv6", "superscript-retry-after", "arabic-digit-retry-after"],
)
def test_a_hostile_redirect_or_header_is_that_sources_failure(
    feed_server: FeedServer, make: Callable[..., App], status: int, headers: dict[str, str], message: str
) -> None:
    port = feed_server.httpd.server_address[1]
    # Sent as UTF-8 bytes, as a hostile server would (http.server writes header text as Latin-1).
    raw = {k: v.format(port=port).encode().decode("latin-1") for k, v in headers.items()}
    feed_server.files["/evil.xml"] = Served(b"", status=status, content_type="text/plain", headers=raw)
    evil = feed_server.url("/evil.xml")
    # More good sources than the writer's queue holds, so a stuck writer would show as a hang.
    good = _good_sources(feed_server, 6)
    app = make([good[0], good[1], (evil, "bigtech"), *good[2:]])
    started = time.monotonic()
    report = _collect(app)
    assert time.monotonic() - started < 10
    assert message in report.errors[evil], report.errors
    assert report.failed == 1 and report.fetched == 6 and report.new_articles == 12
    src = next(s for s in app.store.list_sources() if s.url == evil)
    assert src.failures == 1 and message in (src.last_error or "")
    assert src.next_attempt == NOW + timedelta(minutes=15)  # the normal backoff: the header is ignored


# -- the class: any exception in one source ------------------------------------------------------
class _Fetcher:
    """Fake fetcher: the sources named in ``broken`` raise what a bug or a library might."""

    def __init__(self, broken: dict[str, BaseException]) -> None:
        self.broken = broken

    async def fetch(self, url: str, *, etag: str | None = None, last_modified: str | None = None) -> FetchResult:
        await asyncio.sleep(0)
        if url in self.broken:
            raise self.broken[url]
        return FetchResult(url, 200, GOOD.replace(b"idxno=", f"{url[-3:]}=".encode()), {})

    async def aclose(self) -> None:
        return None


def test_any_error_of_one_source_is_recorded_and_the_collect_completes(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'x.db'}")
    store.sync_sections([Section("bigtech", "빅테크")])
    urls = [f"https://feeds.example/{i:03d}" for i in range(150)]  # three times the writer's queue
    store.sync_sources((u, "bigtech", None) for u in urls)
    broken: dict[str, BaseException] = {
        urls[3]: ValueError("Invalid IPv6 URL"),
        urls[70]: KeyError("location"),
        urls[140]: RuntimeError("a library bug"),
    }

    def parse(content: bytes, **kw: object) -> ParsedFeed:
        if kw["url"] == urls[100]:
            raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")
        return parse_feed(content, **kw)  # type: ignore[arg-type]

    run = collect(store, _Fetcher(broken), parse, tz=SEOUL, now=NOW, interval=timedelta(minutes=15), batch=20)
    report = asyncio.run(asyncio.wait_for(run, 20))
    assert report.failed == 4 and report.fetched == 146, report.errors
    assert report.new_articles == 2 * 146
    by_url = {s.url: s for s in store.list_sources()}
    for url in (*broken, urls[100]):
        assert by_url[url].failures == 1 and "internal error" in (by_url[url].last_error or "")
        assert by_url[url].next_attempt == NOW + timedelta(minutes=15)
    store.close()
