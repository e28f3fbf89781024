"""Built feeds: parse cleanly, carry what readers need, and are rewritten only when they change."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import feedparser
from lxml import etree

from feedservice.adapters.store import open_store
from feedservice.model import Article, Section
from feedservice.services.feeds import FeedSite, build_feeds

NOW = datetime(2026, 11, 28, 5, 0, tzinfo=UTC)
SITE = FeedSite("뉴스스페이스", "https://www.newsspace.kr", "http://127.0.0.1:8080", "ko", ZoneInfo("Asia/Seoul"), 15)
SECTIONS = [Section("bigtech", "빅테크"), Section("space-sociology", "공간사회학")]


def _store_with_articles(tmp_path: Path):  # type: ignore[no-untyped-def]
    store = open_store(f"sqlite:///{tmp_path / 'f.db'}")
    store.sync_sections(SECTIONS)
    store.sync_sources(
        [("http://127.0.0.1/a.xml", "bigtech", None), ("http://127.0.0.1/b.xml", "space-sociology", None)]
    )
    bigtech = [
        Article(
            id=f"https://www.newsspace.kr/news/articleView.html?idxno={n}",
            url=f"https://www.newsspace.kr/news/articleView.html?idxno={n}",
            section="bigtech",
            title=f'빅테크 <기사> & "{n}"',
            summary_html=f"<p>요약 <b>{n}</b></p>",
            author="김정영",
            categories=("빅테크", "AI"),
            image_url=f"https://www.newsspace.kr/photo/{n}.jpg",
            image_type="image/jpeg",
            published=NOW - timedelta(hours=n),
            source_url="http://127.0.0.1/a.xml",
        )
        for n in range(1, 4)
    ]
    space = [
        replace(
            bigtech[0],
            id="urn:x:space-1",
            url="https://www.newsspace.kr/s1",
            section="space-sociology",
            title="공간사회학 기사",
            source_url="http://127.0.0.1/b.xml",
        )
    ]
    store.record_fetch_success("http://127.0.0.1/a.xml", NOW, NOW, etag=None, last_modified=None, articles=bigtech)
    store.record_fetch_success("http://127.0.0.1/b.xml", NOW, NOW, etag=None, last_modified=None, articles=space)
    return store, bigtech


def test_feeds_parse_and_round_trip(tmp_path: Path) -> None:
    store, bigtech = _store_with_articles(tmp_path)
    out = tmp_path / "feeds"
    written = build_feeds(SITE, SECTIONS, store.recent_articles, out, 50)
    assert sorted(p.name for p in written) == sorted(
        ["bigtech.xml", "bigtech.atom", "space-sociology.xml", "space-sociology.atom", "all.xml", "all.atom"]
    )
    for name in ("bigtech.xml", "bigtech.atom"):
        data = (out / name).read_bytes()
        etree.fromstring(data)  # strict XML
        parsed = feedparser.parse(data)
        assert not parsed.bozo, parsed.bozo_exception
        assert parsed.feed.title == "뉴스스페이스 - 빅테크"
        assert parsed.feed.language == "ko" if name.endswith(".xml") else True
        titles = [e.title for e in parsed.entries]
        assert titles == [a.title for a in bigtech]  # newest first, hostile characters intact
        first = parsed.entries[0]
        assert first.link == bigtech[0].url
        assert first.id == bigtech[0].id
        assert first.published_parsed[:5] == (2026, 11, 28, 4, 0)
        assert [t.term for t in first.tags] == ["빅테크", "AI"]
        assert any(link.get("href") == bigtech[0].image_url for link in first.links + first.get("enclosures", []))
    rss = (out / "bigtech.xml").read_text(encoding="utf-8")
    assert "+0900</pubDate>" in rss and "<ttl>15</ttl>" in rss
    assert '<atom:link href="http://127.0.0.1:8080/feeds/bigtech.xml" rel="self"/>' in rss
    assert "<link>https://www.newsspace.kr</link>" in rss
    assert 'isPermaLink="true"' in rss
    everything = feedparser.parse((out / "all.xml").read_bytes())
    assert len(everything.entries) == 4
    store.close()


def test_rebuild_without_change_keeps_bytes_and_mtime(tmp_path: Path) -> None:
    store, bigtech = _store_with_articles(tmp_path)
    out = tmp_path / "feeds"
    build_feeds(SITE, SECTIONS, store.recent_articles, out, 50)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}
    assert build_feeds(SITE, SECTIONS, store.recent_articles, out, 50) == []
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()} == before
    # One bigtech article corrected: only bigtech and all change.
    later = NOW + timedelta(minutes=30)
    store.record_fetch_success(
        "http://127.0.0.1/a.xml",
        later,
        later,
        etag=None,
        last_modified=None,
        articles=[replace(bigtech[1], title="빅테크 정정 기사")],
    )
    changed = build_feeds(SITE, SECTIONS, store.recent_articles, out, 50)
    assert sorted(p.name for p in changed) == ["all.atom", "all.xml", "bigtech.atom", "bigtech.xml"]
    assert not list(out.glob(".*.tmp"))  # no temporary files left behind
    store.close()
