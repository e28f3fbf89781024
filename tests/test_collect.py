"""The collector against real HTTP servers on 127.0.0.1: politeness, safety, encodings, formats.

Each hostile case must end in a clear per-source error, within the timeout, with the
other sources of the same run collected. The service's own rules are also checked on the
in-memory fetcher (``tests/fakes.py``), without a socket.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import time
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Unpack
from zoneinfo import ZoneInfo

import brotli
import pytest

from feedservice.adapters.parse import parse_feed
from feedservice.adapters.store import Store, open_store
from feedservice.bootstrap import App, make_app
from feedservice.cli.demo import sample_rss
from feedservice.config import load_settings
from feedservice.errors import FetchError
from feedservice.model import Section, SourceState
from feedservice.services.collect import CollectReport, collect
from tests.conftest import (
    ConfigOptions,
    FeedServer,
    Served,
    SilentServer,
    free_port,
    shared_fixture,
    write_config,
)
from tests.fakes import FakeFetcher

NOW = datetime(2026, 11, 28, 5, 0, tzinfo=UTC)
KST_ITEMS = [
    ("첫 기사", "요약 하나", "김정영", datetime(2026, 11, 28, 9, 0, tzinfo=UTC), 1),
    ("둘째 기사", "요약 둘", "이서준", datetime(2026, 11, 28, 8, 0, tzinfo=UTC), 2),
]
GOOD = sample_rss("https://www.newsspace.kr", "bigtech", "빅테크", KST_ITEMS)


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., App]]:
    apps: list[App] = []

    def _make(sources: list[tuple[str, str]], **kw: Unpack[ConfigOptions]) -> App:
        folder = tmp_path / f"app{len(apps)}"
        folder.mkdir()
        app = make_app(load_settings(write_config(folder, sources=sources, **kw)), clock=lambda: NOW)
        apps.append(app)
        return app

    yield _make
    for a in apps:
        a.close()


def _collect(app: App, *, force: bool = True) -> CollectReport:
    return asyncio.run(app.collect(force=force))


def _source(app: App, url: str) -> SourceState:
    return next(s for s in app.store.list_sources() if s.url == url)


def test_user_agent_and_validators(feed_server: FeedServer, make: Callable[..., App]) -> None:
    feed_server.files["/a.xml"] = Served(GOOD)
    app = make([(feed_server.url("/a.xml"), "bigtech")])
    assert _collect(app).new_articles == 2
    _, headers = feed_server.requests[-1]
    assert headers["User-Agent"].startswith("feedservice/") and "(+https://www.newsspace.kr)" in headers["User-Agent"]
    report = _collect(app)
    assert report.not_modified == 1 and report.fetched == 0
    assert feed_server.requests[-1][1].get("If-None-Match")


def test_private_addresses_are_refused_by_default(feed_server: FeedServer, make: Callable[..., App]) -> None:
    feed_server.files["/a.xml"] = Served(GOOD)
    port = feed_server.httpd.server_address[1]
    by_ip, by_name = feed_server.url("/a.xml"), f"http://localhost:{port}/a.xml"
    app = make([(by_ip, "bigtech"), (by_name, "bigtech")], allow_hosts=())
    report = _collect(app)
    assert report.failed == 2 and not feed_server.requests
    assert "refused: 127.0.0.1 is not a public address" in report.errors[by_ip]
    assert "refused: localhost resolves to the non-public address" in report.errors[by_name]


def test_redirect_to_a_private_address_is_refused(feed_server: FeedServer, make: Callable[..., App]) -> None:
    port = feed_server.httpd.server_address[1]
    feed_server.files["/hop.xml"] = Served(b"", status=302, headers={"Location": f"http://127.0.0.2:{port}/a.xml"})
    feed_server.files["/hop6.xml"] = Served(b"", status=301, headers={"Location": f"http://[::1]:{port}/a.xml"})
    app = make([(feed_server.url("/hop.xml"), "bigtech"), (feed_server.url("/hop6.xml"), "bigtech")])
    report = _collect(app)
    assert report.failed == 2
    assert all("not a public address" in e for e in report.errors.values()), report.errors


def test_redirect_loops_and_chains(feed_server: FeedServer, make: Callable[..., App]) -> None:
    feed_server.files["/loop1"] = Served(b"", status=302, headers={"Location": "/loop2"})
    feed_server.files["/loop2"] = Served(b"", status=302, headers={"Location": "/loop1"})
    for i in range(7):
        feed_server.files[f"/chain{i}"] = Served(b"", status=307, headers={"Location": f"/chain{i + 1}"})
    feed_server.files["/chain7"] = Served(GOOD)
    feed_server.files["/ok.xml"] = Served(GOOD)
    app = make(
        [
            (feed_server.url("/loop1"), "bigtech"),
            (feed_server.url("/chain0"), "bigtech"),
            (feed_server.url("/ok.xml"), "bigtech"),
        ]
    )
    report = _collect(app)
    assert "redirect loop" in report.errors[feed_server.url("/loop1")]
    assert "more than 5 redirects" in report.errors[feed_server.url("/chain0")]
    assert report.fetched == 1 and report.new_articles == 2


def test_permanent_redirect_moves_the_source(feed_server: FeedServer, make: Callable[..., App]) -> None:
    feed_server.files["/old.xml"] = Served(b"", status=301, headers={"Location": "/new.xml"})
    feed_server.files["/tmp.xml"] = Served(b"", status=302, headers={"Location": "/new.xml"})
    feed_server.files["/new.xml"] = Served(GOOD)
    app = make([(feed_server.url("/old.xml"), "bigtech"), (feed_server.url("/tmp.xml"), "space-sociology")])
    _collect(app)
    assert _source(app, feed_server.url("/old.xml")).fetch_url == feed_server.url("/new.xml")
    assert _source(app, feed_server.url("/tmp.xml")).fetch_url is None
    feed_server.requests.clear()
    _collect(app)
    assert sorted(p for p, _ in feed_server.requests) == ["/new.xml", "/new.xml", "/tmp.xml"]


def test_gone_disables_the_source(feed_server: FeedServer, make: Callable[..., App]) -> None:
    feed_server.files["/gone.xml"] = Served(b"gone", status=410, content_type="text/plain")
    app = make([(feed_server.url("/gone.xml"), "bigtech")])
    report = _collect(app)
    assert "HTTP 410" in report.errors[feed_server.url("/gone.xml")]
    src = _source(app, feed_server.url("/gone.xml"))
    assert not src.enabled and "disabled" in (src.last_error or "")
    feed_server.requests.clear()
    _collect(app)
    assert feed_server.requests == []


def test_retry_after_max_age_and_ttl_are_respected(feed_server: FeedServer, make: Callable[..., App]) -> None:
    feed_server.files["/busy.xml"] = Served(
        b"slow down", status=429, content_type="text/plain", headers={"Retry-After": "7200"}
    )
    feed_server.files["/cached.xml"] = Served(GOOD, headers={"Cache-Control": "public, max-age=5400"})
    feed_server.files["/ttl.xml"] = Served(
        GOOD.replace(b"<language>ko</language>", b"<language>ko</language><ttl>240</ttl>")
    )
    feed_server.files["/plain.xml"] = Served(GOOD)
    app = make([(feed_server.url(p), "bigtech") for p in ("/busy.xml", "/cached.xml", "/ttl.xml", "/plain.xml")])
    _collect(app)
    nxt = {s.url.rsplit("/", 1)[1]: s.next_attempt - NOW for s in app.store.list_sources() if s.next_attempt}
    assert nxt == {
        "busy.xml": timedelta(hours=2),
        "cached.xml": timedelta(minutes=90),
        "ttl.xml": timedelta(hours=4),
        "plain.xml": timedelta(minutes=15),
    }
    # Not due yet: a normal run does not fetch them.
    feed_server.requests.clear()
    assert _collect(app, force=False).skipped == 4 and feed_server.requests == []


# Hostile Cache-Control values: the source is still collected, and its next fetch lands between
# our interval (15 minutes) and a day, never past it and never sooner.
HOSTILE_CACHE_CONTROL = {
    "max-age=99999999999999999999": timedelta(hours=24),  # overflowed timedelta: the source failed
    "max-age=" + "9" * 5000: timedelta(hours=24),
    "max-age=000000000000000005400": timedelta(minutes=90),
    'public, max-age="5400"': timedelta(minutes=90),
    "PUBLIC, MAX-AGE=5400": timedelta(minutes=90),
    "max-age=60, max-age=5400": timedelta(minutes=90),  # duplicates: one of them, bounded either way
    "s-maxage=7200": timedelta(hours=2),
    "max-age=-5400": timedelta(minutes=15),
    "max-age=+5400": timedelta(minutes=15),
    "max-age=5_400": timedelta(minutes=15),
    "max-age=\u0665\u0664\u0660\u0660": timedelta(minutes=15),  # Arabic-Indic digits
    "max-age=1e9": timedelta(minutes=15),
    'max-age, =,,;;="\\': timedelta(minutes=15),
    'no-cache="max-age=5400"': timedelta(minutes=15),
}


def test_hostile_cache_control_values_keep_the_source_polled(feed_server: FeedServer, make: Callable[..., App]) -> None:
    paths = {value: f"/cc{n}.xml" for n, value in enumerate(HOSTILE_CACHE_CONTROL)}
    for value, path in paths.items():
        # A header value is sent as Latin-1 on the wire; the Arabic digits arrive as UTF-8 bytes.
        wire = value.encode().decode("latin-1")
        feed_server.files[path] = Served(GOOD, headers={"Cache-Control": wire})
    app = make([(feed_server.url(p), "bigtech") for p in paths.values()])
    report = _collect(app)
    assert report.errors == {}
    for value, path in paths.items():
        src = _source(app, feed_server.url(path))
        assert src.next_attempt is not None
        assert src.failures == 0 and src.next_attempt - NOW == HOSTILE_CACHE_CONTROL[value], value[:40]


def test_failures_back_off_exponentially(feed_server: FeedServer, make: Callable[..., App]) -> None:
    feed_server.files["/err.xml"] = Served(b"oops", status=500, content_type="text/plain")
    app = make([(feed_server.url("/err.xml"), "bigtech")])
    delays = []
    for _ in range(3):
        _collect(app)
        src = _source(app, feed_server.url("/err.xml"))
        assert src.next_attempt is not None
        delays.append(src.next_attempt - NOW)
    assert delays == [timedelta(minutes=15), timedelta(minutes=30), timedelta(minutes=60)]
    assert src.failures == 3 and src.last_error == "HTTP 500 Internal Server Error"


def test_hanging_and_trickling_servers_time_out(
    feed_server: FeedServer, silent_server: SilentServer, make: Callable[..., App]
) -> None:
    feed_server.files["/trickle.xml"] = Served(GOOD, trickle=1.0)
    feed_server.files["/ok.xml"] = Served(GOOD)
    hang = f"http://127.0.0.1:{silent_server.port}/feed.xml"
    app = make(
        [(hang, "bigtech"), (feed_server.url("/trickle.xml"), "bigtech"), (feed_server.url("/ok.xml"), "bigtech")],
        collect_extra="timeout = 2.0",
    )
    started = time.monotonic()
    report = _collect(app)
    assert time.monotonic() - started < 6
    assert "no complete answer within 2 s" in report.errors[hang]
    assert "no complete answer within 2 s" in report.errors[feed_server.url("/trickle.xml")]
    assert report.fetched == 1 and report.new_articles == 2


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "identity"])
def test_bodies_over_the_limit_stop_at_the_limit(
    feed_server: FeedServer, make: Callable[..., App], encoding: str
) -> None:
    big = b"<rss>" + b" " * (50 * 1024 * 1024) + b"</rss>"  # 50 MB decoded
    if encoding == "gzip":
        body = gzip.compress(big, 9)
    elif encoding == "deflate":
        body = zlib.compress(big, 9)
    elif encoding == "br":
        body = brotli.compress(big, quality=5)
    else:
        body = big[: 2 * 1024 * 1024]
    headers = {} if encoding == "identity" else {"Content-Encoding": encoding}
    feed_server.files["/bomb.xml"] = Served(body, headers=headers)
    feed_server.files["/ok.xml"] = Served(GOOD)
    app = make(
        [(feed_server.url("/bomb.xml"), "bigtech"), (feed_server.url("/ok.xml"), "bigtech")],
        collect_extra="timeout = 5.0\nmax_bytes = 1048576",
    )
    report = _collect(app)
    assert "over the 1048576-byte limit" in report.errors[feed_server.url("/bomb.xml")]
    assert report.new_articles == 2


def test_compressed_feeds_decode(feed_server: FeedServer, make: Callable[..., App]) -> None:
    feed_server.files["/gz.xml"] = Served(gzip.compress(GOOD), headers={"Content-Encoding": "gzip"})
    feed_server.files["/br.xml"] = Served(brotli.compress(GOOD), headers={"Content-Encoding": "br"})
    feed_server.files["/raw-deflate.xml"] = Served(zlib.compress(GOOD)[2:-4], headers={"Content-Encoding": "deflate"})
    app = make([(feed_server.url(p), "bigtech") for p in ("/gz.xml", "/br.xml", "/raw-deflate.xml")])
    report = _collect(app)
    assert report.fetched == 3 and not report.errors


def _billion_laughs(levels: int = 9) -> bytes:
    ents = ['<!ENTITY e0 "lol">'] + [f'<!ENTITY e{n} "{f"&e{n - 1};" * 10}">' for n in range(1, levels + 1)]
    return (
        f'<?xml version="1.0"?>\n<!DOCTYPE rss [\n{chr(10).join(ents)}\n]>\n'
        f'<rss version="2.0"><channel><title>&e{levels};</title><item><title>&e{levels};</title>'
        "<link>http://x/1</link></item></channel></rss>"
    ).encode()


BILLION_LAUGHS = _billion_laughs()
QUADRATIC = (
    b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY x "' + b"A" * 100_000 + b'">]>'
    b'<rss version="2.0"><channel><item><title>'
    + b"&x;" * 200
    + b"</title><link>http://x/1</link></item></channel></rss>"
)
XXE = b"""<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<rss version="2.0"><channel><item><title>&xxe;</title><link>http://x/1</link></item></channel></rss>"""


@pytest.mark.parametrize(
    ("body", "ctype", "message"),
    [
        (BILLION_LAUGHS, "application/xml", "declares its own XML entities"),
        (QUADRATIC, "application/xml", "declares its own XML entities"),
        (XXE, "application/xml", "declares its own XML entities"),
        (b"<html><head><title>Home</title></head><body><p>not a feed</p></body></html>", "text/html", "not a feed"),
        (b"<?xml version='1.0'?><rss version='2.0'><channel><item><title>a</ti", "application/xml", "not a feed"),
        (b'{"version": "https://jsonfeed.org/version/1.1", "items": 3}', "application/feed+json", "items list"),
        (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "image/png", "not a feed"),
    ],
    ids=["billion-laughs", "quadratic-blowup", "xxe", "html", "truncated", "bad-json-feed", "binary"],
)
def test_hostile_documents_fail_clearly(
    feed_server: FeedServer, make: Callable[..., App], body: bytes, ctype: str, message: str
) -> None:
    feed_server.files["/bad"] = Served(body, ctype)
    feed_server.files["/ok.xml"] = Served(GOOD)
    app = make([(feed_server.url("/bad"), "bigtech"), (feed_server.url("/ok.xml"), "bigtech")])
    started = time.monotonic()
    report = _collect(app)
    assert time.monotonic() - started < 5
    assert message in report.errors[feed_server.url("/bad")]
    assert report.new_articles == 2
    assert "root:" not in json.dumps([a.title for a in app.store.recent_articles(None, 10)])


KOREAN = "똠방각하 뷁 햏 - 한글 제목"  # 똠, 뷁 and 햏 exist in CP949 but not in strict EUC-KR


def _euckr_feed(declared: str | None) -> bytes:
    decl = f'<?xml version="1.0" encoding="{declared}"?>\n' if declared else ""
    text = (
        f'{decl}<rss version="2.0"><channel><title>한국 피드</title><link>http://127.0.0.1/</link>'
        f"<description>설명</description><item><title>{KOREAN}</title><link>http://127.0.0.1/k/1</link>"
        f"<description>본문 요약입니다. 경제와 사회 소식을 전합니다.</description></item></channel></rss>"
    )
    return text.encode("cp949")


@pytest.mark.parametrize(
    ("declared", "ctype"),
    [
        ("euc-kr", "application/rss+xml; charset=utf-8"),
        (None, "application/rss+xml"),
        ("euc-kr", "text/xml; charset=EUC-KR"),
        (None, "text/xml; charset=ks_c_5601-1987"),
        ("UTF-8", "application/rss+xml"),
    ],
    ids=["euckr-served-as-utf8", "euckr-no-declaration", "euckr-declared", "ks_c_5601-header", "euckr-declared-utf8"],
)
def test_korean_legacy_encodings(
    feed_server: FeedServer, make: Callable[..., App], declared: str | None, ctype: str
) -> None:
    feed_server.files["/k.xml"] = Served(_euckr_feed(declared), ctype)
    app = make([(feed_server.url("/k.xml"), "bigtech")])
    report = _collect(app)
    assert not report.errors, report.errors
    [art] = app.store.recent_articles(None, 5)
    assert art.title == KOREAN and "경제와 사회" in art.summary_text


def test_real_feed_reencoded_as_euckr(feed_server: FeedServer, make: Callable[..., App]) -> None:
    text = shared_fixture("feeds", "real", "hanion_clicktop_ndsoft_2026-08-29.xml").read_text(encoding="utf-8")
    derived = text.replace('encoding="UTF-8"', 'encoding="euc-kr"').replace('encoding="utf-8"', 'encoding="euc-kr"')
    feed_server.files["/hanion.xml"] = Served(derived.encode("cp949", errors="xmlcharrefreplace"), "text/xml")
    app = make([(feed_server.url("/hanion.xml"), "bigtech")])
    assert _collect(app).new_articles == 5
    assert "승리와 고립, 핵관의 장막에 갇힌 자" in {a.title for a in app.store.recent_articles(None, 5)}


def test_json_feed(feed_server: FeedServer, make: Callable[..., App]) -> None:
    doc = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "뉴스스페이스 JSON",
        "items": [
            {
                "id": "j1",
                "url": "https://www.newsspace.kr/j/1?utm_source=json",
                "title": "JSON 기사 <하나>",
                "content_html": "<p>본문 <script>x()</script>입니다</p>",
                "date_published": "2026-11-28T09:00:00+09:00",
                "authors": [{"name": "김정영"}],
                "tags": ["AI"],
                "image": "https://www.newsspace.kr/j/1.jpg",
            },
            {
                "id": "j2",
                "title": "제목만 있는 기사",
                "content_text": "텍스트 본문",
                "date_published": "2026-11-28T08:00:00",
            },
        ],
    }
    feed_server.files["/feed.json"] = Served(json.dumps(doc, ensure_ascii=False).encode(), "application/feed+json")
    app = make([(feed_server.url("/feed.json"), "bigtech")])
    assert _collect(app).new_articles == 2
    first, second = app.store.recent_articles(None, 5)
    assert first.title == "JSON 기사 <하나>" and first.url == "https://www.newsspace.kr/j/1"
    assert first.published == datetime(2026, 11, 28, 0, 0, tzinfo=UTC)
    assert "script" not in first.content_html + first.summary_html
    assert first.author == "김정영" and first.categories == ("AI",) and (first.image_url or "").endswith("1.jpg")
    assert second.published == datetime(2026, 11, 27, 23, 0, tzinfo=UTC)  # zone-less: site time


def test_routing_rules(feed_server: FeedServer, make: Callable[..., App], tmp_path: Path) -> None:
    items = b"""<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>
<link>https://www.newsspace.kr/</link><description>d</description>
<item><title>AI news</title><link>https://www.newsspace.kr/news/1</link><category>AI</category></item>
<item><title>City news</title><link>https://www.newsspace.kr/space/2</link></item>
<item><title>Other</title><link>https://www.newsspace.kr/etc/3</link></item>
</channel></rss>"""
    feed_server.files["/all.xml"] = Served(items)
    cfg_dir = tmp_path / "routes"
    cfg_dir.mkdir()
    cfg = write_config(cfg_dir, sources=[(feed_server.url("/all.xml"), "bigtech")])
    text = cfg.read_text(encoding="utf-8").replace(
        'section = "bigtech"\n',
        'section = "bigtech"\nroutes = [{ path = "/space/*", section = "space-sociology" }, '
        '{ category = "ai", section = "bigtech" }]\n',
        1,
    )
    cfg.write_text(text, encoding="utf-8")
    app = make_app(load_settings(cfg), clock=lambda: NOW)
    try:
        _collect(app)
        assert [a.title for a in app.store.recent_articles("space-sociology", 5)] == ["City news"]
        assert sorted(a.title for a in app.store.recent_articles("bigtech", 5)) == ["AI news", "Other"]
    finally:
        app.close()


def test_same_article_in_two_sources_is_stored_once(feed_server: FeedServer, make: Callable[..., App]) -> None:
    a = sample_rss("https://www.newsspace.kr", "bigtech", "빅테크", KST_ITEMS)
    b = a.replace(b'<guid isPermaLink="true">', b'<guid isPermaLink="false">other-').replace(
        "빅테크".encode(), "공간사회학".encode()
    )
    feed_server.files["/a.xml"] = Served(a)
    feed_server.files["/b.xml"] = Served(b)
    app = make([(feed_server.url("/a.xml"), "bigtech"), (feed_server.url("/b.xml"), "space-sociology")])
    report = _collect(app)
    assert report.new_articles == 2
    assert len(app.store.recent_articles(None, 10)) == 2
    assert _collect(app).updated_articles == 0  # the second source does not flip it back and forth


def test_unreachable_port(make: Callable[..., App]) -> None:
    url = f"http://127.0.0.1:{free_port()}/x.xml"
    app = make([(url, "bigtech")])
    assert "Connection refused" in _collect(app).errors[url]


def test_parser_processes_start_ahead_and_then_parse(feed_server: FeedServer, make: Callable[..., App]) -> None:
    """`run` starts the parser processes before its first collect; that collect then parses in them
    (the pool itself: tests/test_parser_pool.py)."""
    feed_server.files["/a.xml"] = Served(GOOD)
    app = make([(feed_server.url("/a.xml"), "bigtech")], collect_extra="timeout = 5.0\nparse_processes = 2")
    assert app.start_parsers() > 0
    pool = app.parser_pool()
    assert pool is not None
    workers = set(pool._processes)  # the processes the pool started, by pid
    assert len(workers) == 2 and os.getpid() not in workers
    report = _collect(app)
    assert report.new_articles == 2 and set(pool._processes) == workers  # the same two, nothing new started
    single = make([(feed_server.url("/a.xml"), "bigtech")], collect_extra="timeout = 5.0\nparse_processes = 1")
    single.start_parsers()
    assert single.parser_pool() is None  # one process: parsing happens in threads


# -- the collect service's own rules, on the in-memory fetcher (tests/fakes.py): no socket ---------
def _collect_with(store: Store, fetcher: FakeFetcher, now: datetime) -> CollectReport:
    run = collect(
        store, fetcher, parse_feed, tz=ZoneInfo("Asia/Seoul"), now=now, interval=timedelta(minutes=15), force=True
    )
    return asyncio.run(run)


def test_one_sources_failure_is_its_own_and_the_rest_of_the_run_is_stored(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        store.sync_sections([Section("bigtech", "빅테크")])
        urls = ["https://good.example/rss", "https://broken.example/rss", "https://missing.example/rss"]
        store.sync_sources((url, "bigtech", None) for url in urls)
        fetcher = FakeFetcher({urls[0]: GOOD, urls[1]: FetchError(urls[1], "HTTP 500 Internal Server Error")})
        report = _collect_with(store, fetcher, NOW)
        assert (report.fetched, report.failed, report.new_articles) == (1, 2, 2)
        assert report.errors == {urls[1]: "HTTP 500 Internal Server Error", urls[2]: "HTTP 404 Not Found"}
        failing = {s.url: s.failures for s in store.list_sources(with_counts=False)}
        assert failing == {urls[0]: 0, urls[1]: 1, urls[2]: 1}
        # The next run asks with the validator it was given: unchanged, nothing new, nothing lost.
        fetcher.asked.clear()
        again = _collect_with(store, fetcher, NOW + timedelta(minutes=15))
        assert dict(fetcher.asked)[urls[0]] is not None
        assert (again.not_modified, again.new_articles, store.count_articles()) == (1, 0, 2)
    finally:
        store.close()
