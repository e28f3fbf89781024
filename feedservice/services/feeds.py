"""Build every section's feeds (and "all"): RSS 2.0, Atom 1.0 and JSON Feed 1.1, RFC 5005 archive
pages, and the OPML list. Only what changed is rewritten, atomically.

Archives: a section's articles in the order they were first stored, cut into pages of
``max_entries``; a page is written when it is full, and its entries never change (so links to
it stay valid and readers can cache it). The current feed links to the newest full page with
rel="prev-archive", each page to the one before it, back to the oldest, and each page but the
newest to the one after it with rel="next-archive" (the newest gains that link once, when the
next page is written).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Protocol

from feedservice.model import Article, Section
from feedservice.ports import JobStore
from feedservice.services.feed_formats import (
    FeedPage,
    FeedSite,
    check_entry,
    render_atom,
    render_json,
    render_opml,
    render_rss,
)

log = logging.getLogger(__name__)

ALL = "all"
EVERYTHING = Section(ALL, "전체 기사")
RENDERERS = {"xml": ("rss", render_rss), "atom": ("atom", render_atom), "json": ("json", render_json)}

__all__ = [
    "ALL",
    "ArchiveKey",
    "FeedSite",
    "FeedStore",
    "build_feeds",
    "feed_urls",
    "publish_feeds",
    "render_page",
    "write_if_changed",
]


ArchiveKey = tuple[datetime, str]  # (first_seen, id): an article's place in the archive


class FeedStore(Protocol):
    def recent_articles(self, section: str | None, limit: int) -> list[Article]: ...

    def archive_articles(
        self, section: str | None, after: ArchiveKey | None, limit: int
    ) -> tuple[list[Article], ArchiveKey | None]: ...


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


def write_if_changed(path: Path, data: bytes, *, sync: bool = True) -> bool:
    """Atomically replace ``path`` with ``data`` unless it already holds exactly that; True if written.

    ``sync=False`` leaves flushing the data to disk to the caller (one ``os.sync()`` after many files:
    an fsync per archive page was most of the first build's time on a busy disk)."""
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
            if sync:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def render_page(site: FeedSite, page: FeedPage) -> dict[str, bytes]:
    """Every format of one page, by file extension. An article that any format refuses (or that
    makes a writer fail) is left out of all of them and logged: one odd article never stops a
    section's feeds from being built."""
    try:
        return {ext: render(site, page) for ext, (_, render) in RENDERERS.items()}
    except Exception:  # find the articles at fault below; anything else fails again there
        pass
    keep: list[Article] = []
    for a in page.articles:
        try:
            check_entry(a)
            alone = replace(page, articles=[a])
            for _, render in RENDERERS.values():
                render(site, alone)
        except Exception as exc:
            log.warning(
                "article left out of the %s feed: %s",
                page.section.slug,
                exc,
                extra={"section": page.section.slug, "article": a.id, "source": a.source_url, "reason": str(exc)},
            )
            continue
        keep.append(a)
    page = replace(page, articles=keep)
    return {ext: render(site, page) for ext, (_, render) in RENDERERS.items()}


def _write_page(site: FeedSite, page: FeedPage, folder: Path, stem: str, report: BuildReport) -> bool:
    moved = False
    for ext, data in render_page(site, page).items():
        path = folder / f"{stem}.{ext}"
        if write_if_changed(path, data):
            report.changed.append(path)
            moved = True
    return moved


MARK = ".newest-page"  # JSON, named so that no *.json of the served feeds matches it


@dataclass(frozen=True)
class _Mark:
    """The newest full archive page of a section, kept beside the pages (``archive/<slug>/.newest-page``)
    so that a rebuild starts there instead of walking the whole archive again."""

    pages: int
    start: ArchiveKey | None  # the last article before that page (None for page 1)
    end: ArchiveKey  # the page's last article

    def to_json(self) -> bytes:
        keys = [None if k is None else [k[0].isoformat(), k[1]] for k in (self.start, self.end)]
        return json.dumps({"pages": self.pages, "start": keys[0], "end": keys[1]}).encode()


def _read_mark(folder: Path) -> _Mark | None:
    try:
        doc = json.loads((folder / MARK).read_bytes())
        start = None if doc["start"] is None else (datetime.fromisoformat(doc["start"][0]), str(doc["start"][1]))
        end = (datetime.fromisoformat(doc["end"][0]), str(doc["end"][1]))
        return _Mark(int(doc["pages"]), start, end)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None  # no mark, or not one we can trust: walk the archive from its start


def _build_archives(
    site: FeedSite, store: FeedStore, section: Section, output_dir: Path, size: int, report: BuildReport
) -> tuple[int, list[Article]]:
    """Write the full archive pages that do not exist yet; return the number of full pages and
    the articles after the last one (in the order they were first stored).

    The archive is read once, in order, a page at a time (keyset on (first_seen, id)). A rebuild
    starts at the newest full page (its mark, checked against the store): its cost does not grow
    with the archive. A page's entries never change; the newest page gains its next-archive link
    once, when the page after it is written."""
    key = None if section.slug == ALL else section.slug
    folder = output_dir / "archive" / section.slug
    current = feed_urls(site, section.slug)

    def write(n: int, articles: list[Article], has_next: bool) -> None:
        page = FeedPage(
            section=section,
            articles=list(reversed(articles)),  # newest first within the page
            urls=archive_urls(site, section.slug, n),
            current=current,
            prev_archive=archive_urls(site, section.slug, n - 1) if n > 1 else None,
            next_archive=archive_urls(site, section.slug, n + 1) if has_next else None,
            archive=True,
        )
        for ext, data in render_page(site, page).items():
            if write_if_changed(folder / f"{n}.{ext}", data, sync=False):
                report.changed.append(folder / f"{n}.{ext}")
                flush.append(n)

    flush: list[int] = []
    pages, start, after, pending = 0, None, None, None
    mark = _read_mark(folder)
    if mark and all((folder / f"{mark.pages}.{ext}").exists() for ext in RENDERERS):
        newest, end = store.archive_articles(key, mark.start, size)
        if len(newest) == size and end == mark.end:  # the store still has that page
            pages, start, after, pending = mark.pages, mark.start, mark.end, newest
    written = pages
    while True:
        batch, last = store.archive_articles(key, after, size)
        full = len(batch) == size
        if pending is not None and (full or pages > written):
            write(pages, pending, has_next=full)
        if not full:
            break
        pages, start, after, pending = pages + 1, after, last, batch
    if flush:
        # The pages reach the disk before the mark that says they exist: after a crash, the next
        # build walks from the previous mark and rewrites whatever did not survive.
        os.sync()
    if pages != written and after is not None:
        write_if_changed(folder / MARK, _Mark(pages, start, after).to_json())
    return pages, batch


def build_feeds(
    site: FeedSite, sections: Sequence[Section], store: FeedStore, output_dir: Path, max_entries: int
) -> BuildReport:
    """Write every section's current feeds, new archive pages and the OPML list."""
    report = BuildReport()
    for section in [*sections, EVERYTHING]:
        pages, tail = _build_archives(site, store, section, output_dir, max_entries, report)
        key = None if section.slug == ALL else section.slug
        # The newest articles, plus any not yet on a full archive page, so that the current
        # feed and its archives together hold every article.
        newest = {a.id: a for a in store.recent_articles(key, max_entries)}
        newest.update((a.id, a) for a in tail)
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


async def publish_feeds(
    build: Callable[[], BuildReport],
    jobs: JobStore,
    clock: Callable[[], datetime],
    notify: Callable[[Sequence[str]], Awaitable[object]] | None = None,
) -> BuildReport:
    """Rebuild what changed (``build``, in a thread) and tell the WebSub hub (``notify``) which
    current feeds moved. Each build is recorded as a run of the job "feeds"."""
    run_id = await asyncio.to_thread(jobs.job_started, "feeds", clock())
    try:
        report = await asyncio.to_thread(build)
    except BaseException as exc:
        await asyncio.to_thread(jobs.job_finished, run_id, "failed", clock(), str(exc))
        raise
    await asyncio.to_thread(jobs.job_finished, run_id, "ok", clock(), f"{len(report.changed)} files rewritten")
    if notify is not None and report.changed_urls:
        await notify(report.changed_urls)
    return report
