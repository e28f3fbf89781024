"""Every feed and archive page we serve, checked by the standards' own tools and by three parsers
that are not ours: Atom against RFC 4287's RELAX NG grammar plus the rules the grammar cannot say
(§4.1.1), RSS against the W3C feed validator's rules that apply to what we write, JSON Feed against
the 1.1 schema; and feedparser, fastfeedparser and atoma each asked for the links, content types,
authors and photos a reader shows."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import atoma
import fastfeedparser
import feedparser
import jsonschema
import pytest
from lxml import etree

from feedservice.cli.main import main
from feedservice.model import Article
from feedservice.services.feed_formats import atom_id
from feedservice.services.feeds import FeedSite, build_feeds
from tests.conftest import FeedServer, Served, shared_fixture, write_config
from tests.test_feeds import NOW, SECTIONS, SITE, _article, _store

A = "{http://www.w3.org/2005/Atom}"
MEDIA = "{http://search.yahoo.com/mrss/}"
DC = "{http://purl.org/dc/elements/1.1/}"
HUB = "http://127.0.0.1:9/hub"
SCHEMA = Path(__file__).parent / "data" / "jsonfeed-1.1.schema.json"


def _articles() -> list[Article]:
    """What sources really send: bylines and none, photos with and without a size, HTML with
    entities and line breaks, full content and summaries only; enough for archive pages."""
    arts = [
        _article(1, summary_html="<p>첫&nbsp;줄<br>둘째 줄</p>", content_html="<p>본문 <b>1</b></p>"),
        # A source without authors, whose GUIDs are not IRIs (an RSS guid isPermaLink="false", a JSON Feed id).
        _article(2, id="20261128-0002", author="", image_url=None, image_type=None, image_length=None),
        _article(3, image_type=None, image_length=None),  # a photo whose type and size the source did not say
    ]
    arts += [_article(n, author="" if n % 2 else "박기자", published=NOW - timedelta(minutes=n)) for n in range(4, 12)]
    arts[4] = replace(arts[4], id="기사 5")  # a GUID with a space and Hangul, on an archive page
    return arts


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Article], FeedSite]:
    tmp = tmp_path_factory.mktemp("validity")
    site = replace(SITE, websub_hub=HUB)
    arts = _articles()
    store = _store(tmp, arts[:6])
    out = tmp / "feeds"
    build_feeds(site, SECTIONS, store, out, 3)
    later = NOW + timedelta(hours=1)  # a second collect: archive pages gain their next-archive links
    store.record_fetch_success("http://127.0.0.1/a.xml", later, later, etag=None, last_modified=None, articles=arts[6:])
    build_feeds(site, SECTIONS, store, out, 3)
    store.close()
    expected = {a.id: a for a in arts}
    space = _article(
        900,
        id="urn:x:space-1",
        url="https://www.newsspace.kr/s1",
        section="space-sociology",
        title="공간사회학 기사",
        source_url="http://127.0.0.1/b.xml",
    )
    expected[space.id] = space
    return out, expected, site


def _files(out: Path, ext: str) -> Iterator[Path]:
    paths = sorted(out.rglob(f"*.{ext}"))
    assert any("archive" in p.parts for p in paths) and any("archive" not in p.parts for p in paths)
    return iter(paths)


# -- Atom ------------------------------------------------------------------------------------------
def atom_rule_problems(root: etree._Element) -> list[str]:
    """RFC 4287 §4.1.1–4.1.2 and §4.2.6's rules that its RELAX NG grammar leaves out."""
    problems = []
    feed_authors = root.findall(A + "author")
    for el in root.iter(A + "id"):
        value = el.text or ""
        if not urlsplit(value).scheme or any(c.isspace() for c in value):
            problems.append(f"{value!r}: an atom:id must be an absolute IRI (§4.2.6)")
    for entry in root.iterfind(A + "entry"):
        eid = entry.findtext(A + "id")
        if not feed_authors and entry.find(A + "author") is None:
            problems.append(f"{eid}: no atom:author in the entry, and none in the feed (§4.1.1)")
        alternates = [
            (link.get("type"), link.get("hreflang"))
            for link in entry.iterfind(A + "link")
            if link.get("rel", "alternate") == "alternate"
        ]
        if entry.find(A + "content") is None and not alternates:
            problems.append(f"{eid}: neither content nor a rel=alternate link (§4.1.2)")
        if len(alternates) != len(set(alternates)):
            problems.append(f"{eid}: two alternate links of the same type and language (§4.1.2)")
        content = entry.find(A + "content")
        if (
            content is not None
            and content.get("type") not in (None, "text", "html", "xhtml")
            and "/" not in content.get("type", "")
        ):
            problems.append(f"{eid}: content type {content.get('type')!r} is not a media type (§4.1.3.1)")
    return problems


def test_atom_author_rule_is_checked() -> None:
    """The §4.1.1 check itself: it refuses what our Atom used to be (no author anywhere)."""
    doc = etree.fromstring(
        b'<feed xmlns="http://www.w3.org/2005/Atom"><id>urn:f</id><title>t</title>'
        b"<updated>2026-11-28T13:00:00+09:00</updated><entry><id>urn:e</id><title>e</title>"
        b'<updated>2026-11-28T13:00:00+09:00</updated><link href="https://x.kr/1"/></entry></feed>'
    )
    assert atom_rule_problems(doc) == ["urn:e: no atom:author in the entry, and none in the feed (§4.1.1)"]
    etree.SubElement(etree.SubElement(doc, A + "author"), A + "name").text = "뉴스스페이스"
    assert atom_rule_problems(doc) == []
    entry_id = doc.find(f"{A}entry/{A}id")
    assert entry_id is not None
    entry_id.text = "12345"  # a source's bare GUID, as we wrote it
    assert atom_rule_problems(doc) == ["'12345': an atom:id must be an absolute IRI (§4.2.6)"]


def test_atom_is_valid_rfc4287(built: tuple[Path, dict[str, Article], FeedSite]) -> None:
    out, _, _ = built
    grammar = etree.RelaxNG(etree.parse(str(shared_fixture("schemas", "atom.rng"))))
    for path in _files(out, "atom"):
        doc = etree.parse(str(path))
        assert grammar.validate(doc), (path, grammar.error_log.last_error)
        assert atom_rule_problems(doc.getroot()) == [], path


def test_atom_in_three_parsers(built: tuple[Path, dict[str, Article], FeedSite]) -> None:
    out, by_id, site = built
    expected = {atom_id(site, k): v for k, v in by_id.items()}  # a bare GUID is written as a tag URI
    for path in _files(out, "atom"):
        data = path.read_bytes()
        fp = feedparser.parse(data)
        assert not fp.bozo, (path, fp.bozo_exception)
        assert fp.feed.author == site.name  # the author of every entry without a byline
        ffp = fastfeedparser.parse(data)
        at = atoma.parse_atom_bytes(data)
        assert len(fp.entries) == len(ffp.entries) == len(at.entries) > 0
        for e, f, a in zip(fp.entries, ffp.entries, at.entries, strict=True):
            art = expected[e.id]
            assert e.link == f.link == art.url  # the headline links to the article, never to its photo
            assert [x.href for x in a.links if x.rel == "alternate"] == [art.url]
            photos = [x for x in a.links if x.rel == "enclosure"]
            if art.image_url:
                assert [enc.href for enc in e.enclosures] == [art.image_url]
                assert e.enclosures[0].type == (art.image_type or "image/jpeg")
                assert [x["href"] for x in f.links if x["rel"] == "enclosure"] == [art.image_url]
                assert [(x.href, x.type_, x.length) for x in photos] == [
                    (art.image_url, art.image_type or "image/jpeg", art.image_length)
                ]
            else:
                assert not e.get("enclosures") and not photos
            # HTML is HTML: readers render it, never show "<p>" or "&nbsp;" as text.
            assert e.summary_detail.type == "text/html" and e.summary.startswith("<p>") and "&lt;" not in e.summary
            assert a.summary is not None and a.summary.text_type.value == "html" and a.summary.value == art.summary_html
            if art.content_html:
                assert [c.type for c in e.content] == ["text/html"] and e.content[0].value == art.content_html
                assert a.content is not None and a.content.text_type.value == "html"
                assert a.content.value == art.content_html
                assert [c["value"] for c in f.content] == [art.content_html]
            else:
                assert a.content is None
            byline = art.author or None
            assert [p.name for p in a.authors] == [byline or site.name]  # atoma applies the feed's author
            assert e.get("author") == (byline or site.name) or (not byline and "author" not in e)
            assert f.get("author") in ({byline} if byline else {None, site.name})


def test_atom_ids_are_iris_that_stay_with_their_article(built: tuple[Path, dict[str, Article], FeedSite]) -> None:
    """A source's bare GUID ("20261128-0002", "기사 5") is written as a tag URI under the site's domain,
    the same in every file that carries the article, so a reader never sees it as a new entry;
    ids that are IRIs already are written as they are."""
    out, _, _ = built
    links: dict[str, set[str | None]] = {}
    for path in out.rglob("*.atom"):
        for entry in etree.parse(str(path)).getroot().iterfind(A + "entry"):
            alternate = entry.find(A + "link[@rel='alternate']")
            links.setdefault(entry.findtext(A + "id") or "", set()).add(
                None if alternate is None else alternate.get("href")
            )
    assert all(len(urls) == 1 for urls in links.values())  # one id, one article, in every file
    assert links["tag:www.newsspace.kr,2026:article/20261128-0002"] == {_article(2).url}
    assert links["tag:www.newsspace.kr,2026:article/%EA%B8%B0%EC%82%AC%205"] == {_article(5).url}
    assert links[_article(1).id] == {_article(1).url}  # a URL id as it is


# -- RSS -------------------------------------------------------------------------------------------
def rss_problems(root: etree._Element, url: str) -> list[str]:
    """The W3C feed validator's rules (validator.w3.org/feed/docs/) that apply to what we write."""
    problems: list[str] = []
    if root.tag != "rss" or root.get("version") != "2.0" or len(root.findall("channel")) != 1:
        return ["not one RSS 2.0 channel"]
    ch = root.find("channel")
    assert ch is not None
    for name in ("title", "link", "description"):
        if len(ch.findall(name)) != 1 or not (ch.findtext(name) or "").strip():
            problems.append(f"channel needs exactly one non-empty <{name}>")
    for name in ("language", "ttl", "lastBuildDate", "pubDate", "generator", "docs"):
        if len(ch.findall(name)) > 1:
            problems.append(f"channel has more than one <{name}>")
    for name in ("lastBuildDate", "pubDate"):
        if ch.findtext(name) is not None and not _rfc822(ch.findtext(name) or ""):
            problems.append(f"<{name}> is not an RFC 822 date with a four-digit year")
    if not (ch.findtext("ttl") or "0").isdigit():
        problems.append("<ttl> is not an integer")
    selfs = [link.get("href") for link in ch.iterfind(A + "link") if link.get("rel") == "self"]
    if selfs != [url]:
        problems.append(f"atom:link rel=self {selfs} is not this document's URL {url}")
    for link in ch.iterfind(A + "link"):
        if not link.get("href") or not link.get("rel"):
            problems.append("an atom:link without href or rel")
    guids = []
    for item in ch.iterfind("item"):
        where = item.findtext("guid") or item.findtext("title")
        if not (item.findtext("title") or item.findtext("description")):
            problems.append(f"{where}: an item needs a title or a description")
        address = item.findtext("link")
        if address is not None and not address.startswith(("http://", "https://")):
            problems.append(f"{where}: <link> is not a full URL")
        guid = item.find("guid")
        if guid is not None:
            guids.append(guid.text)
            if guid.get("isPermaLink", "true") == "true" and not (guid.text or "").startswith(("http://", "https://")):
                problems.append(f"{where}: a permalink <guid> must be a full URL")
        if item.findtext("pubDate") is not None and not _rfc822(item.findtext("pubDate") or ""):
            problems.append(f"{where}: <pubDate> is not an RFC 822 date")
        enclosures = item.findall("enclosure")
        if len(enclosures) > 1:
            problems.append(f"{where}: more than one enclosure")
        for enc in enclosures:
            if not enc.get("url") or not (enc.get("length") or "").isdigit() or "/" not in (enc.get("type") or ""):
                problems.append(f"{where}: an enclosure needs url, a numeric length and a type")
        for group in item.iterfind(MEDIA + "group"):
            if len(group.findall(MEDIA + "content")) < 2:
                problems.append(f"{where}: a media:group must hold more than one media:content")
        for media in item.iter(MEDIA + "content"):
            if not media.get("url"):
                problems.append(f"{where}: media:content without a url")
        for cat in item.iterfind("category"):
            if not (cat.text or "").strip():
                problems.append(f"{where}: an empty <category>")
        if item.find("author") is not None and "@" not in (item.findtext("author") or ""):
            problems.append(f"{where}: <author> must be an e-mail address (use dc:creator)")
    if len(guids) != len(set(guids)):
        problems.append("two items with the same guid")
    return problems


def _rfc822(value: str) -> bool:
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return False
    return when.tzinfo is not None and str(when.year) in value


def test_rss_problems_are_found() -> None:
    """The checker refuses what the W3C validator refused in our RSS: a lone media:content in a group."""
    bad = etree.fromstring(
        b'<rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/" xmlns:atom="http://www.w3.org/2005/Atom">'
        b"<channel><title>t</title><link>https://x.kr</link><description>d</description>"
        b'<atom:link href="https://x.kr/f.xml" rel="self"/><item><title>i</title>'
        b'<media:group><media:content url="https://x.kr/1.jpg"/></media:group></item></channel></rss>'
    )
    assert rss_problems(bad, "https://x.kr/f.xml") == ["i: a media:group must hold more than one media:content"]


def test_rss_follows_the_w3c_rules_and_reads_in_three_parsers(
    built: tuple[Path, dict[str, Article], FeedSite],
) -> None:
    out, expected, site = built
    for path in _files(out, "xml"):
        data = path.read_bytes()
        url = site.public_url + "/feeds/" + path.relative_to(out).as_posix()
        assert rss_problems(etree.fromstring(data), url) == [], path
        fp = feedparser.parse(data)
        assert not fp.bozo, (path, fp.bozo_exception)
        ffp = fastfeedparser.parse(data)
        at = atoma.parse_rss_bytes(data)
        assert len(fp.entries) == len(ffp.entries) == len(at.items) > 0
        for e, f, a in zip(fp.entries, ffp.entries, at.items, strict=True):
            art = expected[e.id]
            assert e.link == f.link == a.link == art.url
            photo = [(art.image_url, art.image_type or "image/jpeg")] if art.image_url else []
            assert [(x.href, x.type) for x in e.get("enclosures", [])] == photo
            assert [(x.url, x.type) for x in a.enclosures] == photo
            assert [(x["url"], x["type"]) for x in f.get("media_content") or []] == photo
            assert e.summary_detail.type == "text/html"
            assert a.content_encoded == (art.content_html or None)
            assert e.get("author") == (art.author or None) and f.get("author") == (art.author or None)


# -- JSON Feed -------------------------------------------------------------------------------------
def test_json_feed_matches_the_schema_and_reads_in_two_parsers(
    built: tuple[Path, dict[str, Article], FeedSite],
) -> None:
    """feedparser 6 does not read JSON Feed at all: fastfeedparser and atoma stand in for it."""
    out, expected, _ = built
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text(encoding="utf-8")))
    for path in _files(out, "json"):
        data = path.read_bytes()
        doc = json.loads(data)
        assert [e.message for e in validator.iter_errors(doc)] == [], path
        ffp = fastfeedparser.parse(data)
        at = atoma.parse_json_feed_bytes(data)
        assert len(doc["items"]) == len(ffp.entries) == len(at.items) > 0
        for item, f, a in zip(doc["items"], ffp.entries, at.items, strict=True):
            art = expected[item["id"]]
            assert f.link == a.url == art.url
            assert a.image == f.get("image") == art.image_url
            # 1.1 "authors" for new readers, 1.0 "author" (what atoma reads) for older ones.
            byline = art.author or None
            assert (a.author.name if a.author else None) == byline
            assert item.get("authors") == ([{"name": byline}] if byline else None)
            assert f.get("author") == byline


def test_schema_refuses_a_broken_item() -> None:
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text(encoding="utf-8")))
    doc: dict[str, Any] = {"version": "https://jsonfeed.org/version/1.1", "title": "t", "items": [{"id": "1"}]}
    assert not validator.is_valid(doc)  # neither content_html nor content_text
    doc["items"][0]["content_html"] = "<p>x</p>"
    assert validator.is_valid(doc)
    doc["items"][0]["autor"] = {"name": "x"}
    assert not validator.is_valid(doc)


# -- archives --------------------------------------------------------------------------------------
def test_archive_pages_link_both_ways(built: tuple[Path, dict[str, Article], FeedSite]) -> None:
    """RFC 5005: every archive page names the current feed and its older page; every page but the
    newest its newer page, in each format."""
    out, _, site = built
    base = site.public_url + "/feeds/archive/all/"
    pages = sorted(int(p.stem) for p in (out / "archive" / "all").glob("*.atom"))
    assert pages == [1, 2, 3, 4]  # 12 articles in pages of 3
    for n in pages:
        atom = etree.parse(str(out / "archive" / "all" / f"{n}.atom")).getroot()
        links = {link.get("rel"): link.get("href") for link in atom.iterfind(A + "link")}
        rss = etree.parse(str(out / "archive" / "all" / f"{n}.xml")).getroot().find("channel")
        assert rss is not None
        rss_links = {link.get("rel"): link.get("href") for link in rss.iterfind(A + "link")}
        assert links["current"] == site.public_url + "/feeds/all.atom"
        assert links.get("prev-archive") == (f"{base}{n - 1}.atom" if n > 1 else None)
        assert links.get("next-archive") == (f"{base}{n + 1}.atom" if n < pages[-1] else None)
        assert rss_links.get("next-archive") == (f"{base}{n + 1}.xml" if n < pages[-1] else None)
        assert "hub" not in links  # archives do not change: nothing to subscribe to
    current = etree.parse(str(out / "all.atom")).getroot()
    assert {link.get("rel"): link.get("href") for link in current.iterfind(A + "link")}["prev-archive"] == (
        f"{base}4.atom"
    )


# -- what real sources send ------------------------------------------------------------------------
REAL = {  # the real Korean feeds of ../shared/fixtures/feeds/real, each in a section
    "khan_total_news_2018-04-06.xml": "bigtech",  # no pubDate, empty CDATA authors, 324 items
    "hanion_clicktop_ndsoft_2026-08-29.xml": "bigtech",  # dates without a zone, names as <author>
    "knews-rss_derived_hani_all_2022-07-23.xml": "space-sociology",  # tables, double-escaped entities
    "knews-rss_derived_chosun_all_2022-07-23.xml": "space-sociology",  # a site-root guid, empty content
}


def test_real_korean_feeds_collected_make_valid_feeds(tmp_path: Path, feed_server: FeedServer) -> None:
    """The four real feeds, collected over HTTP as a site would, make current feeds and archive pages
    that pass the same standards and parsers as the hand-made articles above: what sources really
    send (tables, missing dates and authors, photos only in the HTML) must not make our files invalid."""
    for name in REAL:
        feed_server.files[f"/{name}"] = Served(shared_fixture("feeds", "real", name).read_bytes())
    cfg = write_config(tmp_path, sources=[(feed_server.url(f"/{n}"), s) for n, s in REAL.items()])
    assert main(["--config", str(cfg), "collect"]) == 0
    out, public = tmp_path / "feeds", "http://127.0.0.1:8080/feeds/"
    grammar = etree.RelaxNG(etree.parse(str(shared_fixture("schemas", "atom.rng"))))
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text(encoding="utf-8")))
    checked: dict[str, int] = {}
    for path in sorted(out.rglob("*.*")):
        data, ext = path.read_bytes(), path.suffix
        if ext == ".atom":
            doc = etree.fromstring(data)
            assert grammar.validate(etree.ElementTree(doc)), (path, grammar.error_log.last_error)
            assert atom_rule_problems(doc) == [], path
            fp, ffp, at = feedparser.parse(data), fastfeedparser.parse(data), atoma.parse_atom_bytes(data)
            links = [[x.href for x in e.links if x.rel == "alternate"] for e in at.entries]
            assert [[e.link] for e in fp.entries] == [[e.link] for e in ffp.entries] == links, path
        elif ext == ".xml":
            assert rss_problems(etree.fromstring(data), public + path.relative_to(out).as_posix()) == [], path
            fp, ffp, at = feedparser.parse(data), fastfeedparser.parse(data), atoma.parse_rss_bytes(data)
            assert [e.link for e in fp.entries] == [e.link for e in ffp.entries] == [i.link for i in at.items], path
        elif ext == ".json":
            doc = json.loads(data)
            assert [e.message for e in validator.iter_errors(doc)] == [], path
            ffp, at = fastfeedparser.parse(data), atoma.parse_json_feed_bytes(data)
            assert [i["url"] for i in doc["items"]] == [e.link for e in ffp.entries] == [i.url for i in at.items]
            checked[ext] = checked.get(ext, 0) + 1
            continue
        else:
            continue
        assert not fp.bozo, (path, fp.bozo_exception)
        assert len(fp.entries) > 0 and all(e.link.startswith(("http://", "https://")) for e in fp.entries), path
        checked[ext] = checked.get(ext, 0) + 1
    pages = len(list((out / "archive" / "all").glob("*.atom")))
    assert pages >= 8  # 456 articles in pages of 50: the archive is really walked
    assert checked[".atom"] == checked[".xml"] == checked[".json"] > pages
