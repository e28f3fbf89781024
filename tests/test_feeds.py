"""Built feeds: parse cleanly in more than one consumer, carry what readers need, are rewritten only
when they change, archive into immutable RFC 5005 pages, and announce themselves over WebSub."""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.parse
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Unpack
from zoneinfo import ZoneInfo

import feedparser
import pytest
from lxml import etree

from feedservice.adapters.store import Store, open_store
from feedservice.model import Article, ArticleFields, Section
from feedservice.services.feeds import ArchiveKey, BuildReport, FeedSite, build_feeds, publish_feeds
from tests.conftest import FeedServer

NOW = datetime(2026, 11, 28, 5, 0, tzinfo=UTC)
SITE = FeedSite("뉴스스페이스", "https://www.newsspace.kr", "http://127.0.0.1:8080", "ko", ZoneInfo("Asia/Seoul"), 15)
SECTIONS = [Section("bigtech", "빅테크"), Section("space-sociology", "공간사회학")]
ATOM = "{http://www.w3.org/2005/Atom}"


def _article(n: int, **kw: Unpack[ArticleFields]) -> Article:
    base = Article(
        id=f"https://www.newsspace.kr/news/articleView.html?idxno={n}",
        url=f"https://www.newsspace.kr/news/articleView.html?idxno={n}",
        section="bigtech",
        title=f'빅테크 <기사> & "{n}"',
        summary_html=f"<p>요약 <b>{n}</b></p>",
        content_html=f"<p>본문 {n}</p>" if n == 1 else "",
        author="김정영",
        categories=("빅테크", "AI"),
        image_url=f"https://www.newsspace.kr/photo/{n}.jpg",
        image_type="image/jpeg",
        image_length=12345,
        published=NOW - timedelta(hours=n),
        source_url="http://127.0.0.1/a.xml",
    )
    return replace(base, **kw)


def _store(tmp_path: Path, bigtech: list[Article], url: str | None = None) -> Store:
    store = open_store(url or f"sqlite:///{tmp_path / 'f.db'}")
    store.sync_sections(SECTIONS)
    store.sync_sources(
        [("http://127.0.0.1/a.xml", "bigtech", None), ("http://127.0.0.1/b.xml", "space-sociology", None)]
    )
    space = [
        _article(
            900,
            id="urn:x:space-1",
            url="https://www.newsspace.kr/s1",
            section="space-sociology",
            title="공간사회학 기사",
            source_url="http://127.0.0.1/b.xml",
        )
    ]
    store.record_fetch_success("http://127.0.0.1/a.xml", NOW, NOW, etag=None, last_modified=None, articles=bigtech)
    store.record_fetch_success("http://127.0.0.1/b.xml", NOW, NOW, etag=None, last_modified=None, articles=space)
    return store


def _check_rss_structure(data: bytes) -> None:
    """An independent consumer: lxml, checking what RSS 2.0 requires of channel and items."""
    root = etree.fromstring(data)
    assert root.tag == "rss" and root.get("version") == "2.0"
    channel = root.find("channel")
    assert channel is not None
    for required in ("title", "link", "description"):
        assert (channel.findtext(required) or "").strip(), required
    for item in channel.iterfind("item"):
        assert item.findtext("title") and item.findtext("link") and item.findtext("guid")
        datetime.strptime(item.findtext("pubDate", ""), "%a, %d %b %Y %H:%M:%S %z")


def _check_atom_structure(data: bytes) -> None:
    root = etree.fromstring(data)
    assert root.tag == ATOM + "feed"
    for required in ("id", "title", "updated"):
        assert root.findtext(ATOM + required), required
    assert root.find(f"{ATOM}link[@rel='self']") is not None
    for entry in root.iterfind(ATOM + "entry"):
        for required in ("id", "title", "updated"):
            assert entry.findtext(ATOM + required), required
        datetime.fromisoformat(entry.findtext(ATOM + "updated", ""))  # RFC 3339


def _href(root: etree._Element, rel: str) -> str:
    """The href of a feed's ``atom:link`` with this ``rel``; the test fails when there is none."""
    link = root.find(f"{ATOM}link[@rel='{rel}']")
    href = link.get("href") if link is not None else None
    assert href is not None, f"no atom:link rel={rel!r}"
    return href


def test_feeds_parse_in_two_consumers_and_round_trip(tmp_path: Path) -> None:
    bigtech = [_article(n) for n in range(1, 4)]
    store = _store(tmp_path, bigtech)
    out = tmp_path / "feeds"
    report = build_feeds(SITE, SECTIONS, store, out, 50)
    names = sorted(p.name for p in report.changed)
    for slug in ("bigtech", "space-sociology", "all"):
        assert {f"{slug}.xml", f"{slug}.atom", f"{slug}.json"} <= set(names)
    for name in ("bigtech.xml", "bigtech.atom"):
        data = (out / name).read_bytes()
        (_check_rss_structure if name.endswith(".xml") else _check_atom_structure)(data)
        parsed = feedparser.parse(data)
        assert not parsed.bozo, parsed.bozo_exception
        assert parsed.feed.title == "뉴스스페이스 - 빅테크"
        assert [e.title for e in parsed.entries] == [a.title for a in bigtech]  # newest first, characters intact
        first = parsed.entries[0]
        assert first.link == bigtech[0].url and first.id == bigtech[0].id
        assert first.published_parsed[:5] == (2026, 11, 28, 4, 0)
        assert [t.term for t in first.tags] == ["빅테크", "AI"]
        assert first.author == "김정영"
        assert any(link.get("href") == bigtech[0].image_url for link in first.links + first.get("enclosures", []))
    rss = (out / "bigtech.xml").read_text(encoding="utf-8")
    assert "+0900</pubDate>" in rss and "<ttl>15</ttl>" in rss and "<language>ko</language>" in rss
    assert '<atom:link href="http://127.0.0.1:8080/feeds/bigtech.xml" rel="self" type="application/rss+xml"/>' in rss
    assert "<link>https://www.newsspace.kr</link>" in rss and 'isPermaLink="true"' in rss
    assert 'length="12345"' in rss and 'type="image/jpeg"' in rss
    media = etree.fromstring(rss.encode()).find(".//{http://search.yahoo.com/mrss/}content")
    assert media is not None
    assert (media.get("url"), media.get("type")) == ("https://www.newsspace.kr/photo/1.jpg", "image/jpeg")
    assert "<content:encoded><![CDATA[<p>본문 1</p>]]></content:encoded>" in rss
    atom = (out / "bigtech.atom").read_text(encoding="utf-8")
    assert 'rel="alternate"' in atom and "2026-11-28T13:00:00+09:00" in atom
    feed = json.loads((out / "bigtech.json").read_bytes())
    assert feed["version"] == "https://jsonfeed.org/version/1.1"
    assert feed["feed_url"] == "http://127.0.0.1:8080/feeds/bigtech.json"
    assert [i["title"] for i in feed["items"]] == [a.title for a in bigtech]
    assert feed["items"][0]["date_published"] == "2026-11-28T13:00:00+09:00"
    assert feed["items"][0]["content_html"] == "<p>본문 1</p>" and feed["items"][0]["summary"] == "요약 1"
    assert len(feedparser.parse((out / "all.xml").read_bytes()).entries) == 4
    opml = etree.fromstring((out / "index.opml").read_bytes())
    assert [o.get("xmlUrl") for o in opml.iter("outline")] == [
        "http://127.0.0.1:8080/feeds/bigtech.xml",
        "http://127.0.0.1:8080/feeds/space-sociology.xml",
        "http://127.0.0.1:8080/feeds/all.xml",
    ]
    store.close()


def test_rebuild_without_change_keeps_bytes_and_mtime(tmp_path: Path) -> None:
    bigtech = [_article(n) for n in range(1, 4)]
    store = _store(tmp_path, bigtech)
    out = tmp_path / "feeds"
    build_feeds(SITE, SECTIONS, store, out, 50)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
    assert build_feeds(SITE, SECTIONS, store, out, 50).changed == []
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()} == before
    # One bigtech article corrected: only bigtech and all change, in each format.
    later = NOW + timedelta(minutes=30)
    store.record_fetch_success(
        "http://127.0.0.1/a.xml",
        later,
        later,
        etag=None,
        last_modified=None,
        articles=[replace(bigtech[1], title="빅테크 정정 기사")],
    )
    report = build_feeds(SITE, SECTIONS, store, out, 50)
    assert sorted(p.name for p in report.changed) == [
        "all.atom",
        "all.json",
        "all.xml",
        "bigtech.atom",
        "bigtech.json",
        "bigtech.xml",
    ]
    assert "http://127.0.0.1:8080/feeds/bigtech.xml" in report.changed_urls
    assert not list(out.glob(".*.tmp"))  # no temporary files left behind
    store.close()


def test_archives_walk_back_to_the_oldest_article(tmp_path: Path) -> None:
    store = _store(tmp_path, [_article(n, published=NOW - timedelta(minutes=n)) for n in range(1, 24)])
    out = tmp_path / "feeds"
    build_feeds(SITE, SECTIONS, store, out, 5)  # 23 bigtech articles: 4 full pages of 5
    seen: list[str] = []
    data = (out / "bigtech.atom").read_bytes()
    seen += [e.id for e in feedparser.parse(data).entries]
    hops = 0
    while True:
        root = etree.fromstring(data)
        prev = root.find(f"{ATOM}link[@rel='prev-archive']")
        if prev is None:
            break
        path = out / _href(root, "prev-archive").split("/feeds/", 1)[1]
        data = path.read_bytes()
        archive = etree.fromstring(data)
        assert archive.find("{http://purl.org/syndication/history/1.0}archive") is not None
        assert _href(archive, "current") == "http://127.0.0.1:8080/feeds/bigtech.atom"
        assert not feedparser.parse(data).bozo
        seen += [e.id for e in feedparser.parse(data).entries]
        hops += 1
    assert hops == 4
    assert {f"https://www.newsspace.kr/news/articleView.html?idxno={n}" for n in range(1, 24)} <= set(seen)
    rss_archive = (out / "archive" / "bigtech" / "2.xml").read_text(encoding="utf-8")
    assert "<fh:archive/>" in rss_archive and 'rel="prev-archive"' in rss_archive
    # Full pages never change: a correction to an archived article leaves them alone.
    page1 = (out / "archive" / "bigtech" / "1.xml").read_bytes()
    later = NOW + timedelta(hours=1)
    store.record_fetch_success(
        "http://127.0.0.1/a.xml",
        later,
        later,
        etag=None,
        last_modified=None,
        articles=[_article(23, title="고친 제목", published=NOW - timedelta(minutes=23))],
    )
    build_feeds(SITE, SECTIONS, store, out, 5)
    assert (out / "archive" / "bigtech" / "1.xml").read_bytes() == page1
    store.close()


def test_websub_hub_link_and_ping(tmp_path: Path, feed_server: FeedServer) -> None:
    from feedservice.bootstrap import make_app
    from feedservice.config import load_settings
    from tests.conftest import Served, write_config

    feed_server.files["/hub"] = Served(b"", "text/plain", status=204)
    cfg = write_config(tmp_path, sources=[("http://127.0.0.1/a.xml", "bigtech")])
    text = cfg.read_text(encoding="utf-8").replace("[feeds]", f'[feeds]\nwebsub_hub = "{feed_server.url("/hub")}"')
    cfg.write_text(text, encoding="utf-8")
    app = make_app(load_settings(cfg), clock=lambda: NOW)
    try:
        app.store.record_fetch_success(
            "http://127.0.0.1/a.xml", NOW, NOW, etag=None, last_modified=None, articles=[_article(1)]
        )
        report = asyncio.run(app.publish_feeds())
        assert report.changed_urls
        rss = (app.feeds_dir / "bigtech.xml").read_text(encoding="utf-8")
        assert f'<atom:link href="{feed_server.url("/hub")}" rel="hub"/>' in rss
        [(path, _, body)] = feed_server.posts
        form = urllib.parse.parse_qs(body.decode())
        assert path == "/hub" and form["hub.mode"] == ["publish"]
        assert "http://127.0.0.1:8080/feeds/bigtech.xml" in form["hub.url"]
        assert "http://127.0.0.1:8080/feeds/all.json" in form["hub.url"]
        asyncio.run(app.publish_feeds())  # nothing changed: no second ping
        assert len(feed_server.posts) == 1
    finally:
        app.close()


def test_one_unfit_article_is_left_out_and_logged_not_the_whole_build(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 13.9: an article with neither link nor content (feedparser's own corpus has dozens)
    made feedgen refuse the Atom entry, and every later build of every section failed the same way.
    So did any text a writer refuses (here a control character lxml will not put in XML)."""
    no_link = _article(2, url="", content_html="", id="urn:x:no-link")
    control = _article(3, summary_html="<p>\x0b</p>", id="urn:x:control")
    good = [_article(1), _article(4)]
    store = _store(tmp_path, [*good, no_link, control])
    out = tmp_path / "feeds"
    with caplog.at_level(logging.WARNING, logger="feedservice.services.feeds"):
        build_feeds(SITE, SECTIONS, store, out, 50)
    for slug in ("bigtech", "all"):
        for ext in ("xml", "atom", "json"):
            data = (out / f"{slug}.{ext}").read_bytes()
            assert b"urn:x:no-link" not in data and b"urn:x:control" not in data, (slug, ext)
            for a in good:
                assert a.id.encode() in data, (slug, ext, a.id)
    assert len(feedparser.parse((out / "all.atom").read_bytes()).entries) == 3  # two good ones + space
    left_out = {(r.__dict__["article"], r.__dict__["section"]) for r in caplog.records if hasattr(r, "article")}
    assert {("urn:x:no-link", "bigtech"), ("urn:x:control", "all")} <= left_out
    assert "neither a link nor content" in caplog.text
    # Archive pages are built the same way: a page with an unfit article is written without it.
    build_feeds(SITE, SECTIONS, store, tmp_path / "paged", 2)
    pages = sorted((tmp_path / "paged" / "archive" / "bigtech").glob("*.atom"))
    assert len(pages) == 2 and all(b"urn:x:no-link" not in p.read_bytes() for p in pages)
    store.close()


class _CountingStore:
    """The real store, counting the rows each archive read returns."""

    def __init__(self, store: Store) -> None:
        self.store, self.rows = store, 0

    def recent_articles(self, section: str | None, limit: int) -> list[Article]:
        return self.store.recent_articles(section, limit)

    def archive_articles(
        self, section: str | None, after: ArchiveKey | None, limit: int
    ) -> tuple[list[Article], ArchiveKey | None]:
        articles, last = self.store.archive_articles(section, after, limit)
        self.rows += len(articles)
        return articles, last


def test_a_rebuild_reads_the_same_rows_however_long_the_archive(tmp_path: Path) -> None:
    """Issue 14.11: each archive page was an OFFSET query and every rebuild read the tail by OFFSET
    too, so the cost grew with the archive. Now a rebuild starts at the newest full page."""
    reads = []
    for n_articles in (23, 203):
        arts = [_article(n, published=NOW - timedelta(minutes=n)) for n in range(1, n_articles + 1)]
        store = _store(tmp_path / str(n_articles), arts)
        out = tmp_path / str(n_articles) / "feeds"
        counting = _CountingStore(store)
        build_feeds(SITE, SECTIONS, counting, out, 5)
        assert counting.rows == 2 * (n_articles + 1)  # the first build reads each archive once: bigtech, all
        later = NOW + timedelta(hours=1)
        store.record_fetch_success(
            "http://127.0.0.1/a.xml",
            later,
            later,
            etag=None,
            last_modified=None,
            articles=[_article(5000, published=later)],
        )
        counting.rows = 0
        build_feeds(SITE, SECTIONS, counting, out, 5)
        reads.append(counting.rows)
        store.close()
    assert reads[0] == reads[1] <= 3 * 2 * 5  # per section: the newest page, checked, and the tail


def test_archive_grows_page_by_page_and_the_newest_gains_its_next_link(tmp_path: Path, db_url: str) -> None:
    """On both databases: the mark's keys must compare equal to what the store gives back."""
    store = _store(tmp_path, [_article(n, published=NOW - timedelta(minutes=n)) for n in range(1, 24)], db_url)
    out = tmp_path / "feeds"
    build_feeds(SITE, SECTIONS, store, out, 5)
    folder = out / "archive" / "bigtech"
    before = {p.name: p.read_bytes() for p in folder.glob("[0-9]*.*")}
    assert sorted(before) == sorted(f"{n}.{ext}" for n in range(1, 5) for ext in ("atom", "json", "xml"))
    assert b'rel="next-archive"' not in before["4.atom"] and b'rel="next-archive"' in before["3.atom"]
    later = NOW + timedelta(hours=1)
    store.record_fetch_success(
        "http://127.0.0.1/a.xml",
        later,
        later,
        etag=None,
        last_modified=None,
        articles=[_article(n, published=later) for n in range(100, 105)],
    )
    counting = _CountingStore(store)
    report = build_feeds(SITE, SECTIONS, counting, out, 5)
    assert counting.rows <= 2 * 3 * 5  # resumed at the mark: not the 57 rows of a walk from the start
    changed = {p.name for p in report.changed if p.parent == folder}
    # 1–3 untouched; JSON Feed has no link to a newer page, so 4.json stays as it was
    assert changed == {"4.atom", "4.xml", "5.atom", "5.json", "5.xml"}
    page4 = etree.fromstring((folder / "4.atom").read_bytes())
    assert _href(page4, "next-archive").endswith("/archive/bigtech/5.atom")
    assert [e.findtext(f"{ATOM}id") for e in page4.iterfind(f"{ATOM}entry")] == [
        e.findtext(f"{ATOM}id") for e in etree.fromstring(before["4.atom"]).iterfind(f"{ATOM}entry")
    ]  # the page's entries never change
    current = etree.fromstring((out / "bigtech.atom").read_bytes())
    assert _href(current, "prev-archive").endswith("/archive/bigtech/5.atom")
    # Without its mark (a new output folder, a lost file), the walk starts over and writes the same pages.
    after = {p.name: p.read_bytes() for p in folder.glob("[0-9]*.*")}
    (folder / ".newest-page").unlink()
    assert build_feeds(SITE, SECTIONS, store, out, 5).changed == []
    assert {p.name: p.read_bytes() for p in folder.glob("[0-9]*.*")} == after
    # A mark that does not match the store (another database) is not trusted either.
    (folder / ".newest-page").write_text('{"pages": 9, "start": null, "end": ["2026-01-01T00:00:00+00:00", "x"]}')
    assert build_feeds(SITE, SECTIONS, store, out, 5).changed == []
    store.close()


def test_archive_walk_by_keyset_on_both_databases(db_url: str) -> None:
    """Pages in first-stored order, ties on first_seen broken by id, each article exactly once."""
    store = open_store(db_url)
    store.sync_sections(SECTIONS)
    store.sync_sources(
        [("http://127.0.0.1/a.xml", "bigtech", None), ("http://127.0.0.1/b.xml", "space-sociology", None)]
    )
    first = [_article(n) for n in (5, 1, 3)]  # one fetch: the same first_seen, ordered by id
    store.record_fetch_success("http://127.0.0.1/a.xml", NOW, NOW, etag=None, last_modified=None, articles=first)
    later = NOW + timedelta(minutes=1)
    store.record_fetch_success(
        "http://127.0.0.1/b.xml",
        later,
        later,
        etag=None,
        last_modified=None,
        articles=[_article(9, id="urn:x:9", section="space-sociology")],
    )
    store.record_fetch_success(
        "http://127.0.0.1/a.xml", later, later, etag=None, last_modified=None, articles=[_article(2)]
    )
    cases: list[tuple[str | None, list[int | str]]] = [("bigtech", [1, 3, 5, 2]), (None, [1, 3, 5, 2, "urn:x:9"])]
    for section, expected in cases:
        ids = [a if isinstance(a, str) else _article(a).id for a in expected]
        seen, after = [], None
        while True:
            page, last = store.archive_articles(section, after, 2)
            seen += [a.id for a in page]
            if len(page) < 2:
                break
            assert last is not None and last[1] == page[-1].id
            after = last
        assert seen == ids, section
    store.close()


class _Jobs:
    """The job-run port in memory."""

    def __init__(self) -> None:
        self.runs: list[list[object]] = []

    def job_started(self, job: str, now: datetime) -> int:
        self.runs.append([job, "running", None])
        return len(self.runs) - 1

    def job_finished(self, run_id: int, status: str, now: datetime, detail: str | None = None) -> None:
        self.runs[run_id][1:] = [status, detail]


def test_publishing_records_each_build_and_pings_the_hub_only_for_moved_feeds() -> None:
    jobs, pinged = _Jobs(), []

    async def notify(urls: object) -> None:
        pinged.append(urls)

    def moved() -> BuildReport:
        return BuildReport(changed=[Path("all.xml")], changed_urls=["https://f.example/feeds/all.xml"])

    clock = lambda: NOW  # noqa: E731
    asyncio.run(publish_feeds(moved, jobs, clock, notify))
    asyncio.run(publish_feeds(BuildReport, jobs, clock, notify))  # nothing changed: no ping
    assert pinged == [["https://f.example/feeds/all.xml"]]

    def broken() -> BuildReport:
        raise OSError("disk full")

    with pytest.raises(OSError):
        asyncio.run(publish_feeds(broken, jobs, clock, notify))
    assert jobs.runs == [
        ["feeds", "ok", "1 files rewritten"],
        ["feeds", "ok", "0 files rewritten"],
        ["feeds", "failed", "disk full"],
    ]
