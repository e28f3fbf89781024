"""One page of a feed → RSS 2.0, Atom 1.0 (feedgen), JSON Feed 1.1, and the OPML list. Pure.

The bytes depend only on the articles and the page's links: the feed-level date is the
newest article's, not the build time, so the same content gives the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import escape, quoteattr
from zoneinfo import ZoneInfo

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


def _generator(site: FeedSite, page: FeedPage, fmt: str) -> FeedGenerator:
    fg = FeedGenerator()
    fg.load_extension("media", atom=False, rss=True)
    fg.load_extension("dc", atom=False, rss=True)  # dc:creator: RSS <author> must be an e-mail address
    links: list[tuple[str, str]] = []
    if site.websub_hub and not page.archive:
        links.append(("hub", site.websub_hub))
    if page.archive:
        links.append(("current", page.current[fmt]))
    if page.prev_archive:
        links.append(("prev-archive", page.prev_archive[fmt]))
    if page.next_archive:
        links.append(("next-archive", page.next_archive[fmt]))
    fg.register_extension("history", _history_extension(links if fmt == "rss" else [], page.archive))
    fg.id(page.urls["atom"])
    fg.link(href=page.urls[fmt], rel="self")
    if fmt == "atom":
        for rel, href in links:
            fg.link(href=href, rel=rel)
    suffix = " (보관)" if page.archive else ""
    fg.title(f"{site.name} - {page.section.title}{suffix}")
    fg.subtitle(f"{site.name} {page.section.title} 최신 기사")
    fg.link(href=site.url, rel="alternate")  # last: feedgen uses the last link as RSS <link>
    fg.language(site.language)
    fg.ttl(site.ttl_minutes)
    fg.generator("feedservice")
    newest = _newest(page.articles).astimezone(site.tz)
    fg.updated(newest)
    fg.lastBuildDate(newest)
    # feedgen emits entries in reverse order of addition; add oldest first so the newest leads.
    for a in reversed(page.articles):
        fe = fg.add_entry()
        fe.id(a.id)
        fe.guid(a.id, permalink=a.id == a.url)
        fe.title(clean_text(a.title))
        if a.image_url:
            # Before the alternate link: feedgen makes the entry's last link its RSS <link>.
            image_type = a.image_type if a.image_type and "/" in a.image_type.strip("/") else "image/jpeg"
            fe.enclosure(a.image_url, str(a.image_length or 0), image_type)
            fe.media.content(url=a.image_url, type=image_type, medium="image",
                             **({"fileSize": str(a.image_length)} if a.image_length else {}))  # fmt: skip
        if a.url:
            fe.link(href=a.url, rel="alternate")
        fe.published((a.published or EPOCH).astimezone(site.tz))
        fe.updated((a.updated or a.published or EPOCH).astimezone(site.tz))
        if a.summary_html:
            fe.description(a.summary_html)
            fe.summary(a.summary_html, type="html")
        if a.content_html:
            fe.content(a.content_html, type="CDATA")
        if a.author:
            if fmt == "rss":
                fe.dc.dc_creator(a.author)
            else:
                fe.author(name=a.author)
        for term in a.categories:
            fe.category(term=term)
    return fg


ATOM_NS = "http://www.w3.org/2005/Atom"


def _history_extension(links: list[tuple[str, str]], archive: bool) -> type[BaseExtension]:
    """A feedgen extension for what feedgen does not write itself: in RSS, the atom:link
    elements other than rel="self" (hub, current, prev-archive); and RFC 5005's <fh:archive/>."""

    class _History(BaseExtension):  # type: ignore[misc]
        def extend_ns(self) -> dict[str, str]:
            return {"fh": FH} if archive else {}

        def extend_rss(self, feed: Any) -> Any:
            channel = feed[0]
            for rel, href in links:
                etree.SubElement(channel, f"{{{ATOM_NS}}}link", href=href, rel=rel)
            if archive:
                etree.SubElement(channel, f"{{{FH}}}archive")
            return feed

        def extend_atom(self, feed: Any) -> Any:
            if archive:
                etree.SubElement(feed, f"{{{FH}}}archive")
            return feed

    return _History


def render_rss(site: FeedSite, page: FeedPage) -> bytes:
    return bytes(_generator(site, page, "rss").rss_str(pretty=True))


def render_atom(site: FeedSite, page: FeedPage) -> bytes:
    return bytes(_generator(site, page, "atom").atom_str(pretty=True))


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
    doc["items"] = items
    return (json.dumps(doc, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


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
