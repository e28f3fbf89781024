"""Collect: choose the due sources, fetch them concurrently, parse, store, record each outcome.

A failing source is recorded (error, failures, next attempt with capped exponential
backoff) and the rest of the batch goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from feedservice.errors import FeedServiceError, FetchError
from feedservice.model import SourceState
from feedservice.ports import FeedParser, Fetcher, SourceStore

log = logging.getLogger(__name__)

MAX_BACKOFF = timedelta(hours=6)


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


def is_due(source: SourceState, now: datetime) -> bool:
    return source.enabled and (source.next_attempt is None or source.next_attempt <= now)


async def collect(
    store: SourceStore,
    fetcher: Fetcher,
    parse_feed: FeedParser,
    *,
    tz: ZoneInfo,
    now: datetime,
    interval: timedelta,
    intervals: dict[str, timedelta] | None = None,
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
    intervals = intervals or {}

    async def one(src: SourceState) -> None:
        every = intervals.get(src.url, interval)
        host = urlsplit(src.url).hostname or ""
        async with limit, hosts[host]:
            try:
                result = await fetcher.fetch(src.url, etag=src.etag, last_modified=src.last_modified)
            except FetchError as exc:
                _fail(store, report, src, exc.message, now, every, exc.retry_after)
                return
        try:
            if result.not_modified:
                await asyncio.to_thread(
                    store.record_fetch_success,
                    src.url,
                    now,
                    now + every,
                    etag=result.headers.get("etag") or src.etag,
                    last_modified=result.headers.get("last-modified") or src.last_modified,
                )
                report.not_modified += 1
                return
            articles = await asyncio.to_thread(
                parse_feed,
                result.content,
                url=src.url,
                section=src.section,
                tz=tz,
                now=now,
                headers=result.headers,
            )
            new, updated = await asyncio.to_thread(
                store.record_fetch_success,
                src.url,
                now,
                now + every,
                etag=result.headers.get("etag"),
                last_modified=result.headers.get("last-modified"),
                articles=articles,
            )
        except FeedServiceError as exc:
            _fail(store, report, src, str(getattr(exc, "message", exc)), now, every, None)
            return
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
