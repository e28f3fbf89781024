"""Feed bytes → Articles: the real Korean feeds, dates, bylines, ids and hostile text."""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from feedservice.adapters.parse import canonical_url, parse_feed
from feedservice.errors import ParseError
from feedservice.model import Article
from feedservice.text import sanitize_html
from tests.conftest import shared_fixture

KST = ZoneInfo("Asia/Seoul")
NOW = datetime(2026, 11, 28, 5, 0, tzinfo=UTC)


def _parse(name: str) -> list[Article]:
    data = shared_fixture("feeds", "real", name).read_bytes()
    return list(parse_feed(data, url=f"http://127.0.0.1/{name}", section="s", tz=KST, now=NOW).articles)


def test_khan_feed_with_dc_date_only() -> None:
    arts = _parse("khan_total_news_2018-04-06.xml")
    assert len(arts) == 324
    first = arts[0]
    assert first.title == "당정청 “정시·수시 적절 수준으로 조정해야”"
    # dc:date "2018-04-06T19:32:01+09:00" → UTC, from the updated field feedparser sets.
    assert first.published == datetime(2018, 4, 6, 10, 32, 1, tzinfo=UTC)
    assert first.author == "박순봉 기자"  # the e-mail address is dropped
    assert all(a.published and a.published.tzinfo is UTC for a in arts)


def test_zoneless_dates_are_site_local_time() -> None:
    arts = _parse("hanion_clicktop_ndsoft_2026-08-29.xml")
    assert len(arts) == 5
    # "2026-08-28 14:57:04" has no zone: it is KST, i.e. 05:57:04 UTC (feedparser alone says 14:57 UTC).
    assert arts[0].published == datetime(2026, 8, 28, 14, 57, 4, tzinfo=KST)
    assert arts[0].author == "한창섭 주주"
    assert arts[0].id == "http://www.hanion.co.kr/news/articleView.html?idxno=38809"


def test_site_root_guid_is_not_an_identity() -> None:
    arts = _parse("knews-rss_derived_chosun_all_2022-07-23.xml")
    assert len(arts) == 100
    ids = [a.id for a in arts]
    assert "https://www.chosun.com" not in ids and "https://www.chosun.com/" not in ids
    assert len(set(ids)) == len(ids)
    # "[OSEN=대전, 이상학 기자]" → the reporter's name.
    assert arts[0].author == "이상학"


def test_hani_content_and_lead_image() -> None:
    arts = _parse("knews-rss_derived_hani_all_2022-07-23.xml")
    assert len(arts) == 30
    assert arts[0].image_url and arts[0].image_url.startswith("https://flexible.img.hani.co.kr/")
    assert all("<script" not in a.content_html for a in arts)


def test_hostile_text_is_made_safe() -> None:
    feed = b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>t</title><link>http://127.0.0.1/</link><description>d</description>
<item><title>\xec\x86\x8d\xeb\xb3\xb4 &lt;script&gt;alert(1)&lt;/script&gt;  \x08\x1b  title</title>
<link>javascript:alert(1)</link><guid isPermaLink="false">hostile-1</guid>
<description><![CDATA[<p onclick="x()">hi <a href="javascript:alert(2)">x</a><script>alert(3)</script>
<img src="http://127.0.0.1/a.jpg"></p>]]></description>
<pubDate>Mon, 01 Jan 2999 00:00:00 +0000</pubDate></item>
</channel></rss>"""
    [a] = parse_feed(feed, url="http://127.0.0.1/h.xml", section="s", tz=KST, now=NOW).articles
    assert "\x08" not in a.title and "\x1b" not in a.title and "  " not in a.title
    assert a.title.startswith("속보 ")
    assert a.url == ""  # a javascript: link is no link
    assert "script" not in a.summary_html and "onclick" not in a.summary_html
    assert "javascript:" not in a.summary_html
    assert a.published is None  # year 2999 is a feed bug: first-seen time is used instead
    assert a.image_url == "http://127.0.0.1/a.jpg"


@pytest.mark.parametrize(
    "body",
    [b"<html><body><h1>Not a feed</h1></body></html>", b"", b"\x00\x01\x02garbage", b"<rss><channel><item>"],
)
def test_not_a_feed_is_a_parse_error(body: bytes) -> None:
    with pytest.raises(ParseError):
        parse_feed(body, url="http://127.0.0.1/x", section="s", tz=KST, now=NOW)


def test_canonical_url_drops_tracking_and_fragment() -> None:
    assert (
        canonical_url("HTTPS://WWW.Example.COM/a?b=1&utm_source=rss&utm_medium=x#top")
        == "https://www.example.com/a?b=1"
    )


def test_sanitizer_keeps_structure() -> None:
    html = sanitize_html('<p>본문 <b>굵게</b> <a href="https://x.kr/a" style="color:red">링크</a></p>')
    assert "<b>굵게</b>" in html and 'href="https://x.kr/a"' in html and "style" not in html


def test_relative_links_resolve_against_the_entry() -> None:
    feed = b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>t</title><link>https://www.newsspace.kr/</link><description>d</description>
<item><title>a</title><link>/news/articleView.html?idxno=7</link>
<description><![CDATA[<p><img src="/photo/7.jpg"> <a href="../related/8">related</a></p>]]></description></item>
</channel></rss>"""
    for fast in (True, False):
        [a] = parse_feed(
            feed, url="https://www.newsspace.kr/rss/S1N1.xml", section="s", tz=KST, now=NOW, fast=fast
        ).articles
        assert a.url == "https://www.newsspace.kr/news/articleView.html?idxno=7"
        assert a.image_url == "https://www.newsspace.kr/photo/7.jpg"
        assert 'src="https://www.newsspace.kr/photo/7.jpg"' in a.summary_html
        assert 'href="https://www.newsspace.kr/related/8"' in a.summary_html


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        ('<a href="https://x.kr/a">a</a>', 'href="https://x.kr/a"'),  # absolute: kept as it is
        ("<a HREF = '/a'>a</a>", 'href="https://www.newsspace.kr/a"'),
        ("<a href=b/c>a</a>", 'href="https://www.newsspace.kr/news/b/c"'),  # unquoted
        ('<img src="//cdn.kr/p.jpg"><a href="x">a</a>', 'href="https://www.newsspace.kr/news/x"'),  # one of two
        ('<a href="&#47;a">a</a>', 'href="https://www.newsspace.kr/a"'),  # an entity hides the slash
        ('<a title="src" href="/a">a</a>', 'href="https://www.newsspace.kr/a"'),  # "src" as a value
        ('<a href="javascript:alert(1)">a</a>', 'rel="noopener noreferrer">a</a>'),  # "absolute"; dropped
    ],
)
def test_links_resolve_whichever_way_they_are_written(html: str, expected: str) -> None:
    out = sanitize_html(html, "https://www.newsspace.kr/news/view")
    assert expected in out and "javascript" not in out


# A value unlike the default, and unlike every other field's, for the i-th field of each type an
# Article has; a field of a new type fails the test below until it gets one here.
_SAMPLES: dict[str, Callable[[int], object]] = {
    "str": lambda i: f"값 {i}",
    "str | None": lambda i: f"https://x.kr/{i}.jpg",
    "int | None": lambda i: 1000 + i,
    "tuple[str, ...]": lambda i: ("빅테크", str(i)),
    "datetime | None": lambda i: NOW + timedelta(minutes=i),
}


def test_articles_cross_process_boundaries_whole() -> None:
    """Parsed articles come back from the parser processes pickled (``Article.__reduce__``): every
    field must survive, in its place, and a field added later too."""
    init = [f for f in dataclasses.fields(Article) if f.init]
    a = Article(**{f.name: _SAMPLES[str(f.type)](i) for i, f in enumerate(init)})  # type: ignore[arg-type]
    a.content_hash()
    b = pickle.loads(pickle.dumps(a))
    for f in init:
        assert getattr(b, f.name) == getattr(a, f.name), f"{f.name} does not survive pickling"
    assert b._digest == a._digest is not None  # worked out in the parser process, kept
