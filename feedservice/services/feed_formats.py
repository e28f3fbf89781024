"""One page of a feed → RSS 2.0 (feedgen), Atom 1.0 (lxml), JSON Feed 1.1, and the OPML list. Pure.

The bytes depend only on the articles and the page's links: the feed-level date is the
newest article's, not the build time, so the same content gives the same bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit
from xml.sax.saxutils import escape, quoteattr
from zoneinfo import ZoneInfo

from feedgen.entry import FeedEntry
from feedgen.ext.base import BaseExtension
from feedgen.feed import FeedGenerator
from lxml import etree

from feedservice.model import Article, Section
from feedservice.text import clean_text

EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
FH = "http://purl.org/syndication/history/1.0"


@dataclass(frozen=True)
class FeedSite:
    name: str
    url: str
    public_url: str
    language: str
    tz: ZoneInfo
    ttl_minutes: int
    websub_hub: str | None = None


@dataclass(frozen=True)
class FeedPage:
    """One document of a section's feed: the current one or an archive page (RFC 5005)."""

    section: Section
    articles: Sequence[Article]  # newest first
    urls: dict[str, str]  # format ("rss", "atom", "json") → this page's URL
    current: dict[str, str] = field(default_factory=dict)  # format → the current feed's URL
    prev_archive: dict[str, str] | None = None  # format → the next older archive page
    next_archive: dict[str, str] | None = None  # format → the next newer archive page (archives only)
    archive: bool = False


def _newest(articles: Sequence[Article]) -> datetime:
    return max((a.updated or a.published or EPOCH for a in articles), default=EPOCH)


def _links(page: FeedPage, fmt: str, hub: str | None) -> list[tuple[str, str]]:
    """The feed-level links besides self and alternate: WebSub hub and RFC 5005 history."""
    links: list[tuple[str, str]] = []
    if hub and not page.archive:
        links.append(("hub", hub))
    if page.archive:
        links.append(("current", page.current[fmt]))
    if page.prev_archive:
        links.append(("prev-archive", page.prev_archive[fmt]))
    if page.next_archive:
        links.append(("next-archive", page.next_archive[fmt]))
    return links


def _image_type(a: Article) -> str:
    return a.image_type if a.image_type and "/" in a.image_type.strip("/") else "image/jpeg"


def _title(site: FeedSite, page: FeedPage) -> str:
    return f"{site.name} - {page.section.title}" + (" (보관)" if page.archive else "")


def _subtitle(site: FeedSite, page: FeedPage) -> str:
    return f"{site.name} {page.section.title} 최신 기사"


ATOM_NS = "http://www.w3.org/2005/Atom"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


class _HistoryExtension(BaseExtension):  # type: ignore[misc]  # feedgen ships no stubs: its base class is Any
    """What feedgen does not write itself in an RSS channel: the atom:link elements other than
    rel="self" (WebSub hub and the RFC 5005 ``current``, ``prev-archive``, ``next-archive``) and
    RFC 5005's <fh:archive/>. Registered on each generator as ``history``; ``set`` gives it the page's."""

    def __init__(self) -> None:
        self._links: list[tuple[str, str]] = []
        self._archive = False

    def set(self, links: list[tuple[str, str]], archive: bool) -> None:
        self._links, self._archive = links, archive

    def extend_ns(self) -> dict[str, str]:
        return {"fh": FH} if self._archive else {}

    def extend_rss(self, rss: etree._Element) -> etree._Element:
        channel = rss[0]
        for rel, href in self._links:
            etree.SubElement(channel, f"{{{ATOM_NS}}}link", href=href, rel=rel)
        if self._archive:
            etree.SubElement(channel, f"{{{FH}}}archive")
        return rss


def render_rss(site: FeedSite, page: FeedPage) -> bytes:
    """RSS 2.0 written with feedgen, with the Atom (self, hub, RFC 5005 links), Media RSS, Dublin
    Core (the byline: RSS's <author> must be an e-mail address) and content (full text) modules."""
    fg = FeedGenerator()
    fg.load_extension("media", atom=False, rss=True)
    fg.load_extension("dc", atom=False, rss=True)
    fg.register_extension("history", _HistoryExtension, atom=False, rss=True)
    fg.history.set(_links(page, "rss", site.websub_hub), page.archive)
    fg.title(_title(site, page))
    fg.description(_subtitle(site, page))
    fg.link(href=page.urls["rss"], rel="self", type="application/rss+xml")
    fg.link(href=site.url, rel="alternate")  # last: feedgen writes the last link as the channel's <link>
    fg.docs("https://www.rssboard.org/rss-specification")
    fg.generator("feedservice")
    fg.language(site.language)
    fg.lastBuildDate(_newest(page.articles).astimezone(site.tz))
    fg.ttl(site.ttl_minutes)
    for a in page.articles:
        _rss_item(site, a, fg.add_entry(order="append"))  # newest first, as the page has them
    return bytes(fg.rss_str(pretty=True))


def _rss_item(site: FeedSite, a: Article, fe: FeedEntry) -> None:
    check_entry(a)
    fe.title(clean_text(a.title))  # an empty title writes no <title>
    if a.url:
        fe.link(href=a.url, rel="alternate")
    if a.summary_html or a.content_html:
        fe.description(a.summary_html or a.content_html)
    if a.content_html:
        fe.content(a.content_html, type="CDATA")  # content:encoded; lxml splits the CDATA at any "]]>"
    fe.guid(a.id, permalink=a.id == a.url)
    for term in a.categories:
        fe.category(term=term)
    if a.image_url:
        image_type = _image_type(a)
        fe.enclosure(a.image_url, str(a.image_length or 0), image_type)
        # One photo: media:content stands in the item (group=None; a media:group holds alternatives).
        size = {"fileSize": str(a.image_length)} if a.image_length else {}
        fe.media.content(url=a.image_url, type=image_type, medium="image", group=None, **size)
    fe.pubDate((a.published or EPOCH).astimezone(site.tz))
    if a.author:
        fe.dc.dc_creator(a.author)


def check_entry(a: Article) -> None:
    """Raise ``UnfitArticle`` if an article cannot be an entry of every format we write.

    RFC 4287 §4.1.1: an Atom entry without content needs an alternate link; RSS 2.0: an item
    needs a title or a description."""
    if not a.url and not a.content_html:
        raise UnfitArticle(a.id, "neither a link nor content (an Atom entry needs one of them)")
    if not clean_text(a.title) and not a.summary_html and not a.content_html:
        raise UnfitArticle(a.id, "neither a title nor a description (an RSS item needs one of them)")


class UnfitArticle(ValueError):
    """An article that some feed format cannot carry; the build leaves it out and logs why."""

    def __init__(self, article_id: str, reason: str) -> None:
        super().__init__(f"article {article_id!r}: {reason}")
        self.article_id, self.reason = article_id, reason


def _el(parent: etree._Element, name: str, text: str | None = None, **attrs: str) -> etree._Element:
    el = etree.SubElement(parent, f"{{{ATOM_NS}}}{name}", attrs)
    if text is not None:
        el.text = text
    return el


def render_atom(site: FeedSite, page: FeedPage) -> bytes:
    """Atom 1.0 (RFC 4287), written with lxml: feedgen 1.0 dropped the rel/type/length of entry
    links (an enclosure became the headline's link) and wrote content as type="CDATA".

    The feed has the site as its author, so every entry has one (§4.1.1) and a byline overrides
    it; summaries and content are type="html"; the photo is a rel="enclosure" link."""
    nsmap: dict[str | None, str] = {None: ATOM_NS}
    if page.archive:
        nsmap["fh"] = FH
    feed = etree.Element(f"{{{ATOM_NS}}}feed", nsmap=nsmap)
    feed.set(XML_LANG, site.language)
    _el(feed, "id", page.urls["atom"])
    _el(feed, "title", _title(site, page))
    _el(feed, "subtitle", _subtitle(site, page))
    _el(feed, "updated", _newest(page.articles).astimezone(site.tz).isoformat())
    author = _el(feed, "author")
    _el(author, "name", site.name)
    _el(author, "uri", site.url)
    _el(feed, "link", href=page.urls["atom"], rel="self", type="application/atom+xml")
    _el(feed, "link", href=site.url, rel="alternate", type="text/html")
    for rel, href in _links(page, "atom", site.websub_hub):
        _el(feed, "link", href=href, rel=rel)
    _el(feed, "generator", "feedservice")
    if page.archive:
        etree.SubElement(feed, f"{{{FH}}}archive")
    for a in page.articles:
        feed.append(_atom_entry(site, a))
    return bytes(etree.tostring(feed, encoding="UTF-8", xml_declaration=True, pretty_print=True))


# An absolute IRI as RFC 3987 writes it: a scheme, then no space and none of the characters an
# IRI cannot hold. Enough to tell a URL or URN from a bare GUID such as "12345".
_ABSOLUTE_IRI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s<>\"{}|\\^`]+\Z")
_TAG_DATE = "2026"  # the year feedservice started minting tag URIs; it must never change (RFC 4151)


def atom_id(site: FeedSite, article_id: str) -> str:
    """The atom:id of an article: its own id when that is an absolute IRI (RFC 4287 §4.2.6), else a
    tag URI (RFC 4151) minted under the site's domain from that id.

    Sources' GUIDs are often not IRIs (``<guid isPermaLink="false">12345</guid>``, a JSON Feed
    item's ``"id": "1"``); written as they are, they made the Atom invalid. Stored ids are unique,
    so the tag URI is unique too, and the same on every build and on every archive page."""
    if _ABSOLUTE_IRI.match(article_id):
        return article_id
    authority = urlsplit(site.url).hostname or "feedservice.invalid"
    return f"tag:{authority},{_TAG_DATE}:article/{quote(article_id, safe='')}"


def _atom_entry(site: FeedSite, a: Article) -> etree._Element:
    check_entry(a)
    entry = etree.Element(f"{{{ATOM_NS}}}entry")
    _el(entry, "id", atom_id(site, a.id))
    _el(entry, "title", clean_text(a.title), type="text")
    _el(entry, "updated", (a.updated or a.published or EPOCH).astimezone(site.tz).isoformat())
    _el(entry, "published", (a.published or EPOCH).astimezone(site.tz).isoformat())
    if a.author:
        _el(_el(entry, "author"), "name", a.author)
    if a.url:
        _el(entry, "link", href=a.url, rel="alternate", type="text/html")
    if a.image_url:
        length = {"length": str(a.image_length)} if a.image_length else {}
        _el(entry, "link", href=a.image_url, rel="enclosure", type=_image_type(a), **length)
    if a.summary_html:
        _el(entry, "summary", a.summary_html, type="html")
    if a.content_html:
        _el(entry, "content", a.content_html, type="html")
    for term in a.categories:
        _el(entry, "category", term=term)
    return entry


def render_json(site: FeedSite, page: FeedPage) -> bytes:
    """JSON Feed 1.1 (https://jsonfeed.org/version/1.1)."""
    items = []
    for a in page.articles:
        item: dict[str, object] = {"id": a.id}
        if a.url:
            item["url"] = a.url
        item["title"] = clean_text(a.title)
        if a.content_html:
            item["content_html"] = a.content_html
            item["summary"] = a.summary_text
        else:
            item["content_html"] = a.summary_html
        if a.image_url:
            item["image"] = a.image_url
        item["date_published"] = (a.published or EPOCH).astimezone(site.tz).isoformat()
        if a.updated:
            item["date_modified"] = a.updated.astimezone(site.tz).isoformat()
        if a.author:
            item["authors"] = [{"name": a.author}]
            item["author"] = {"name": a.author}  # JSON Feed 1.0, for readers that predate 1.1
        if a.categories:
            item["tags"] = list(a.categories)
        items.append(item)
    doc: dict[str, object] = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": f"{site.name} - {page.section.title}",
        "home_page_url": site.url,
        "feed_url": page.urls["json"],
        "description": f"{site.name} {page.section.title} 최신 기사",
        "language": site.language,
    }
    if site.websub_hub and not page.archive:
        doc["hubs"] = [{"type": "WebSub", "url": site.websub_hub}]
    if page.prev_archive:
        doc["next_url"] = page.prev_archive["json"]  # JSON Feed's pagination walks back in time
    # The feed's fields indented, each item on one line: json's C encoder does not indent, and
    # the pure-Python one that indenting needs took a third of the time of building an archive.
    head = json.dumps(doc, ensure_ascii=False, indent=2)[:-2]  # without the closing "\n}"
    lines = ",\n".join("    " + json.dumps(item, ensure_ascii=False) for item in items)
    body = f',\n  "items": [\n{lines}\n  ]\n}}\n' if items else ',\n  "items": []\n}\n'
    return (head + body).encode("utf-8")


def render_opml(site: FeedSite, sections: Sequence[tuple[Section, dict[str, str]]]) -> bytes:
    """An OPML 2.0 subscription list of every section's RSS feed (with Atom and JSON as hints)."""
    outlines = "\n".join(
        f'    <outline type="rss" text={quoteattr(s.title)} title={quoteattr(f"{site.name} - {s.title}")} '
        f"xmlUrl={quoteattr(urls['rss'])} htmlUrl={quoteattr(site.url)}/>"
        for s, urls in sections
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<opml version="2.0">\n  <head>\n'
        f"    <title>{escape(site.name)} 피드</title>\n  </head>\n  <body>\n{outlines}\n  </body>\n</opml>\n"
    ).encode()
