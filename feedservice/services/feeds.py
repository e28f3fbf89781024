"""Build per-section RSS 2.0 and Atom 1.0 files with feedgen; rewrite only what changed.

The bytes depend only on the articles and the settings (lastBuildDate/updated is the
newest article time, not the build time), so a rebuild with nothing new yields the
same bytes and the file is left alone. Files are replaced atomically.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from feedgen.feed import FeedGenerator

from feedservice.model import Article, Section
from feedservice.text import clean_text

log = logging.getLogger(__name__)

ALL = "all"
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class FeedSite:
    name: str
    url: str
    public_url: str
    language: str
    tz: ZoneInfo
    ttl_minutes: int


def feed_urls(site: FeedSite, slug: str) -> dict[str, str]:
    base = site.public_url.rstrip("/")
    return {"rss": f"{base}/feeds/{slug}.xml", "atom": f"{base}/feeds/{slug}.atom"}


def _generator(site: FeedSite, section: Section, articles: Sequence[Article], self_url: str) -> FeedGenerator:
    urls = feed_urls(site, section.slug)
    fg = FeedGenerator()
    fg.id(urls["atom"])
    fg.link(href=self_url, rel="self")
    fg.title(f"{site.name} - {section.title}")
    fg.subtitle(f"{site.name} {section.title} 최신 기사")
    fg.link(href=site.url, rel="alternate")  # last: feedgen uses the last link as RSS <link>
    fg.language(site.language)
    fg.ttl(site.ttl_minutes)
    fg.generator("feedservice")
    newest = max((a.updated or a.published or EPOCH for a in articles), default=EPOCH)
    fg.updated(newest.astimezone(site.tz))
    fg.lastBuildDate(newest.astimezone(site.tz))
    # feedgen emits entries in reverse order of addition; add oldest first so the newest leads.
    for a in reversed(articles):
        fe = fg.add_entry()
        fe.id(a.id)
        fe.guid(a.id, permalink=a.id == a.url)
        fe.title(clean_text(a.title))
        if a.image_url:
            # Before the alternate link: feedgen makes the entry's last link its RSS <link>.
            fe.enclosure(a.image_url, str(a.image_length or 0), a.image_type or "image/jpeg")
        if a.url:
            fe.link(href=a.url, rel="alternate")
        published = (a.published or EPOCH).astimezone(site.tz)
        fe.published(published)
        fe.updated((a.updated or a.published or EPOCH).astimezone(site.tz))
        if a.summary_html:
            fe.description(a.summary_html)
            fe.summary(a.summary_html, type="html")
        if a.content_html:
            fe.content(a.content_html, type="CDATA")
        if a.author:
            fe.author(name=a.author)
        for term in a.categories:
            fe.category(term=term)
    return fg


def render_section_feeds(site: FeedSite, section: Section, articles: Sequence[Article]) -> dict[str, bytes]:
    """RSS and Atom bytes for one section's articles (already newest first)."""
    urls = feed_urls(site, section.slug)
    rss = _generator(site, section, articles, urls["rss"]).rss_str(pretty=True)
    atom = _generator(site, section, articles, urls["atom"]).atom_str(pretty=True)
    return {f"{section.slug}.xml": rss, f"{section.slug}.atom": atom}


def write_if_changed(path: Path, data: bytes) -> bool:
    """Atomically replace ``path`` with ``data`` unless it already holds exactly that; True if written."""
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def build_feeds(
    site: FeedSite,
    sections: Sequence[Section],
    recent: Callable[[str | None, int], list[Article]],
    output_dir: Path,
    max_entries: int,
) -> list[Path]:
    """Write every section's feeds plus the "all" feed; return the files that changed."""
    changed: list[Path] = []
    everything = Section(ALL, "전체 기사")
    for section in [*sections, everything]:
        articles = recent(None if section.slug == ALL else section.slug, max_entries)
        for name, data in render_section_feeds(site, section, articles).items():
            path = output_dir / name
            if write_if_changed(path, data):
                changed.append(path)
    if changed:
        log.info("feeds rebuilt: %s", ", ".join(p.name for p in changed))
    return changed
