"""The lxml fast path stores exactly what the feedparser path stores, wherever it does not decline.

Corpora: the real Korean feeds in ../shared/fixtures, feedparser's own test corpus from its
source distribution (downloaded from PyPI at test time, never vendored), and the benchmark's
generated feeds.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from feedservice.adapters.encoding import decode_feed
from feedservice.adapters.fastparse import fast_entries
from feedservice.adapters.parse import parse_feed
from feedservice.errors import ParseError
from feedservice.model import ParsedFeed
from tests.conftest import ROOT, sdist_tree, shared_fixture

KST = ZoneInfo("Asia/Seoul")
NOW = datetime(2026, 11, 28, tzinfo=UTC)
FEEDPARSER_SDIST = "feedparser==6.0.12"


def _both(data: bytes) -> tuple[ParsedFeed | str, ParsedFeed | str]:
    """The fast path's result and the reference parser's: a feed, or the error's text."""

    def run(fast: bool) -> ParsedFeed | str:
        try:
            return parse_feed(data, url="http://127.0.0.1/feed.xml", section="s", tz=KST, now=NOW, fast=fast)
        except ParseError as exc:
            return f"error: {exc}"

    return run(True), run(False)


def _accepted(data: bytes) -> bool:
    return fast_entries(decode_feed(data)[0].encode("utf-8")) is not None


@pytest.mark.parametrize(
    "name",
    [
        "khan_total_news_2018-04-06.xml",
        "hanion_clicktop_ndsoft_2026-08-29.xml",
        "knews-rss_derived_chosun_all_2022-07-23.xml",
        "knews-rss_derived_hani_all_2022-07-23.xml",
    ],
)
def test_real_feeds_take_the_fast_path_and_match(name: str) -> None:
    data = shared_fixture("feeds", "real", name).read_bytes()
    assert _accepted(data)
    fast, reference = _both(data)
    assert fast == reference


def test_benchmark_feeds_take_the_fast_path_and_match() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from collect import make_feed  # bench/collect.py; mypy checks bench/ with the tests

    data = make_feed(7, "https://www.newsspace.kr", NOW)
    assert _accepted(data)
    fast, reference = _both(data)
    assert isinstance(fast, ParsedFeed)
    assert fast == reference and len(fast.articles) == 50


@pytest.fixture(scope="module")
def feedparser_corpus() -> list[Path]:
    return sorted((sdist_tree(FEEDPARSER_SDIST, "feedparser-6.0.12") / "tests").rglob("*.xml"))


def test_feedparser_corpus_differential(feedparser_corpus: list[Path]) -> None:
    assert len(feedparser_corpus) > 2000
    accepted, mismatched = 0, []
    for path in feedparser_corpus:
        data = path.read_bytes()
        if not _accepted(data):
            continue
        accepted += 1
        fast, reference = _both(data)
        if fast != reference:
            mismatched.append(str(path.relative_to(path.parents[2])))
    assert mismatched == []
    assert accepted >= 150  # the fast path really is exercised on the corpus


def test_fast_path_declines_what_it_cannot_match() -> None:
    no_link = b"""<rss version="2.0"><channel><title>t</title><item><title>x</title>
<description>d</description></item></channel></rss>"""
    based = b"""<feed xmlns="http://www.w3.org/2005/Atom" xml:base="http://x/"><entry><title>t</title>
<link href="http://x/1"/><id>1</id></entry></feed>"""
    rdf = b"""<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/">
<item><title>t</title><link>http://x/1</link></item></rdf:RDF>"""
    for doc in (no_link, based, rdf, b"<rss version='2.0'><channel><item><title>a</title>"):
        assert not _accepted(doc)


@pytest.mark.parametrize(
    "value",
    [
        "Fri, 27 Nov 2026 22:00:00 +0000",
        "Sat, 28 Nov 2026 07:00:00 +0900",
        "28 Nov 2026 07:00:00 -0430",
        "Mon, 1 Feb 2027 00:00:59 GMT",
        "Tue, 29 Feb 2028 23:59:59 UT",
        "Tue, 29 Feb 2028 23:59:59 Z",
    ],
)
def test_common_rfc822_dates_read_as_the_standard_library_reads_them(value: str) -> None:
    import email.utils
    import time

    from feedservice.adapters.fastparse import _rfc822

    parsed = email.utils.parsedate_tz(value)
    assert parsed is not None
    assert _rfc822(value) == time.gmtime(email.utils.mktime_tz(parsed))
