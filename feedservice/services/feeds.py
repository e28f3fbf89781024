"""Build every section's feeds (and "all"): RSS 2.0, Atom 1.0 and JSON Feed 1.1, RFC 5005 archive
pages, and the OPML list. Only what changed is rewritten, atomically.

Archives: a section's articles in the order they were first stored, cut into pages of
``max_entries``; a page is written once, when it is full, and never again (so links to it
stay valid and readers can cache it forever). The current feed links to the newest full
page with rel="prev-archive", each page to the one before it, back to the oldest.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from feedservice.model import Article, Section
from feedservice.services.feed_formats import FeedPage, FeedSite, render_atom, render_json, render_opml, render_rss

log = logging.getLogger(__name__)

ALL = "all"
EVERYTHING = Section(ALL, "전체 기사")
RENDERERS = {"xml": ("rss", render_rss), "atom": ("atom", render_atom), "json": ("json", render_json)}

__all__ = ["ALL", "FeedSite", "FeedStore", "build_feeds", "feed_urls", "write_if_changed"]


class FeedStore(Protocol):
    def recent_articles(self, section: str | None, limit: int) -> list[Article]: ...

    def count_section_articles(self, section: str | None) -> int: ...

    def archive_articles(self, section: str | None, offset: int, limit: int) -> list[Article]: ...


@dataclass
class BuildReport:
    changed: list[Path] = field(default_factory=list)
    changed_urls: list[str] = field(default_factory=list)  # current feeds whose content moved (for WebSub)


def feed_urls(site: FeedSite, slug: str) -> dict[str, str]:
    base = site.public_url.rstrip("/")
    return {"rss": f"{base}/feeds/{slug}.xml", "atom": f"{base}/feeds/{slug}.atom", "json": f"{base}/feeds/{slug}.json"}


def archive_urls(site: FeedSite, slug: str, page: int) -> dict[str, str]:
    base = site.public_url.rstrip("/")
    return {fmt: f"{base}/feeds/archive/{slug}/{page}.{ext}" for ext, (fmt, _) in RENDERERS.items()}


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


def _write_page(site: FeedSite, page: FeedPage, folder: Path, stem: str, report: BuildReport) -> bool:
    moved = False
    for ext, (_, render) in RENDERERS.items():
        path = folder / f"{stem}.{ext}"
        if write_if_changed(path, render(site, page)):
            report.changed.append(path)
            moved = True
    return moved


def _build_archives(site: FeedSite, store: FeedStore, section: Section, output_dir: Path, size: int) -> int:
    """Write the full archive pages that do not exist yet; return the number of full pages."""
    key = None if section.slug == ALL else section.slug
    pages = store.count_section_articles(key) // size
    folder = output_dir / "archive" / section.slug
    current = feed_urls(site, section.slug)
    for n in range(1, pages + 1):
        if all((folder / f"{n}.{ext}").exists() for ext in RENDERERS):
            continue  # immutable once written
        articles = store.archive_articles(key, (n - 1) * size, size)
        page = FeedPage(
            section=section,
            articles=list(reversed(articles)),  # newest first within the page
            urls=archive_urls(site, section.slug, n),
            current=current,
            prev_archive=archive_urls(site, section.slug, n - 1) if n > 1 else None,
            archive=True,
        )
        for ext, (_, render) in RENDERERS.items():
            write_if_changed(folder / f"{n}.{ext}", render(site, page))
    return pages


def build_feeds(
    site: FeedSite, sections: Sequence[Section], store: FeedStore, output_dir: Path, max_entries: int
) -> BuildReport:
    """Write every section's current feeds, new archive pages and the OPML list."""
    report = BuildReport()
    for section in [*sections, EVERYTHING]:
        pages = _build_archives(site, store, section, output_dir, max_entries)
        key = None if section.slug == ALL else section.slug
        # The newest articles, plus any not yet on a full archive page, so that the current
        # feed and its archives together hold every article.
        newest = {a.id: a for a in store.recent_articles(key, max_entries)}
        newest.update((a.id, a) for a in store.archive_articles(key, pages * max_entries, max_entries))
        page = FeedPage(
            section=section,
            articles=sorted(newest.values(), key=lambda a: (a.sort_key(), a.id), reverse=True),
            urls=feed_urls(site, section.slug),
            prev_archive=archive_urls(site, section.slug, pages) if pages else None,
        )
        if _write_page(site, page, output_dir, section.slug, report):
            report.changed_urls.extend(page.urls[f] for f in ("rss", "atom", "json"))
    opml = render_opml(site, [(s, feed_urls(site, s.slug)) for s in [*sections, EVERYTHING]])
    if write_if_changed(output_dir / "index.opml", opml):
        report.changed.append(output_dir / "index.opml")
    if report.changed:
        log.info("feeds rebuilt: %d files", len(report.changed), extra={"files": [p.name for p in report.changed]})
    return report
