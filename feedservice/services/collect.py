"""Collect: choose the due sources, fetch them concurrently, parse, store, record each outcome.

A failing source is recorded (error, failures, next attempt with capped exponential
backoff) and the rest of the batch goes on. Sources are never polled faster than they
ask (Cache-Control max-age, RSS ``<ttl>``, Retry-After); a 301/308 chain moves the
source; 410 Gone disables it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from feedservice.errors import FeedServiceError, FetchError
from feedservice.model import Article, FetchResult, Route, SourceState
from feedservice.ports import FeedParser, Fetcher, SourceStore

log = logging.getLogger(__name__)

MAX_BACKOFF = timedelta(hours=6)
MAX_POLL_INTERVAL = timedelta(hours=24)


@dataclass
class CollectReport:
    fetched: int = 0
    not_modified: int = 0
    failed: int = 0
    skipped: int = 0
    new_articles: int = 0
    updated_articles: int = 0
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.new_articles or self.updated_articles)

    def summary(self) -> str:
        return (
            f"{self.fetched} fetched, {self.not_modified} not modified, {self.failed} failed, "
            f"{self.skipped} not due; {self.new_articles} new and {self.updated_articles} updated articles"
        )


def next_attempt_after_failure(
    now: datetime, interval: timedelta, failures: int, retry_after: float | None = None
) -> datetime:
    """Capped exponential backoff from the normal interval; Retry-After wins when it is later."""
    delay = min(interval * (2 ** min(failures, 16)), MAX_BACKOFF)
    if retry_after is not None:
        delay = max(delay, timedelta(seconds=min(retry_after, 86400)))
    return now + delay


def max_age(headers: Mapping[str, str]) -> timedelta | None:
    """Cache-Control max-age (or s-maxage) of a response, if it gives one."""
    m = re.search(r"(?:^|[,\s])(?:s-)?max-age\s*=\s*\"?(\d+)", headers.get("cache-control", ""), re.IGNORECASE)
    return timedelta(seconds=int(m.group(1))) if m else None


def poll_interval(interval: timedelta, headers: Mapping[str, str], ttl_minutes: int | None = None) -> timedelta:
    """Our interval, unless the server or the feed asks for a longer one (capped at a day)."""
    asked = [interval]
    if (age := max_age(headers)) is not None:
        asked.append(age)
    if ttl_minutes:
        asked.append(timedelta(minutes=ttl_minutes))
    return min(max(asked), max(interval, MAX_POLL_INTERVAL))


def is_due(source: SourceState, now: datetime) -> bool:
    return source.enabled and (source.next_attempt is None or source.next_attempt <= now)


def route(article: Article, routes: Sequence[Route]) -> Article:
    """The article in the section of the first route it matches, else unchanged."""
    for r in routes:
        if r.matches(article):
            return replace(article, section=r.section)
    return article


async def collect(
    store: SourceStore,
    fetcher: Fetcher,
    parse_feed: FeedParser,
    *,
    tz: ZoneInfo,
    now: datetime,
    interval: timedelta,
    intervals: Mapping[str, timedelta] | None = None,
    routes: Mapping[str, Sequence[Route]] | None = None,
    concurrency: int = 20,
    per_host: int = 4,
    force: bool = False,
) -> CollectReport:
    """Fetch every due source once and store what changed; never raises for one source's failure."""
    report = CollectReport()
    sources = store.list_sources()
    due = [s for s in sources if (force and s.enabled) or is_due(s, now)]
    report.skipped = len(sources) - len(due)
    limit = asyncio.Semaphore(concurrency)
    hosts: defaultdict[str, asyncio.Semaphore] = defaultdict(lambda: asyncio.Semaphore(per_host))
    intervals, routes = intervals or {}, routes or {}
    # One writer at a time: deduplication reads what is stored before it writes.
    writing = asyncio.Lock()

    async def one(src: SourceState) -> None:
        every = intervals.get(src.url, interval)
        async with limit, hosts[urlsplit(src.current_url).hostname or ""]:
            try:
                result = await fetcher.fetch(src.current_url, etag=src.etag, last_modified=src.last_modified)
            except FetchError as exc:
                if exc.gone:
                    _gone(store, report, src, exc.message, now)
                else:
                    _fail(store, report, src, exc.message, now, every, exc.retry_after)
                return
        try:
            await _store(src, result, every)
        except FeedServiceError as exc:
            _fail(store, report, src, str(getattr(exc, "message", exc)), now, every, None)

    async def _store(src: SourceState, result: FetchResult, every: timedelta) -> None:
        moved = result.permanent_redirect
        if moved:
            log.info("source moved permanently: %s → %s", src.current_url, moved, extra={"source": src.url})
        if result.not_modified:
            await asyncio.to_thread(
                store.record_fetch_success,
                src.url,
                now,
                now + poll_interval(every, result.headers),
                etag=result.headers.get("etag") or src.etag,
                last_modified=result.headers.get("last-modified") or src.last_modified,
                fetch_url=moved,
            )
            report.not_modified += 1
            return
        parsed = await asyncio.to_thread(
            parse_feed, result.content, url=src.url, section=src.section, tz=tz, now=now, headers=result.headers
        )
        articles = [route(a, routes.get(src.url, ())) for a in parsed.articles]
        async with writing:
            new, updated = await asyncio.to_thread(
                store.record_fetch_success,
                src.url,
                now,
                now + poll_interval(every, result.headers, parsed.ttl_minutes),
                etag=result.headers.get("etag"),
                last_modified=result.headers.get("last-modified"),
                articles=articles,
                fetch_url=moved,
            )
        report.fetched += 1
        report.new_articles += new
        report.updated_articles += updated
        log.info(
            "collected %s: %d entries, %d new, %d updated",
            src.url,
            len(articles),
            new,
            updated,
            extra={"source": src.url, "new": new, "updated": updated},
        )

    await asyncio.gather(*(one(s) for s in due))
    return report


def _fail(
    store: SourceStore,
    report: CollectReport,
    src: SourceState,
    message: str,
    now: datetime,
    every: timedelta,
    retry_after: float | None,
) -> None:
    report.failed += 1
    report.errors[src.url] = message
    retry = next_attempt_after_failure(now, every, src.failures, retry_after)
    log.warning(
        "source failed: %s: %s (retry at %s)",
        src.url,
        message,
        retry.isoformat(timespec="seconds"),
        extra={"source": src.url, "error": message},
    )
    store.record_fetch_failure(src.url, message, now, retry)


def _gone(store: SourceStore, report: CollectReport, src: SourceState, message: str, now: datetime) -> None:
    report.failed += 1
    report.errors[src.url] = f"{message}: disabled"
    log.warning("source gone, disabled: %s: %s", src.url, message, extra={"source": src.url, "error": message})
    store.disable_source(src.url, f"{message} (disabled; change its URL in the config to enable it again)", now)
