"""Collect: choose the due sources, fetch them concurrently, parse, store, record each outcome.

A failing source is recorded (error, failures, next attempt with capped exponential
backoff) and the rest of the batch goes on. Sources are never polled faster than they
ask (Cache-Control max-age, RSS ``<ttl>``, Retry-After); a 301/308 chain moves the
source; 410 Gone disables it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from werkzeug.datastructures import ResponseCacheControl
from werkzeug.http import parse_cache_control_header

from feedservice.errors import FeedServiceError, FetchError
from feedservice.model import Article, FetchRecord, ParsedFeed, Route, SourceState
from feedservice.ports import FeedParser, Fetcher, SourceStore
from feedservice.services.publishable import make_publishable

log = logging.getLogger(__name__)

MAX_BACKOFF = timedelta(hours=6)
MAX_POLL_INTERVAL = timedelta(hours=24)
DELTA_SECONDS_CAP = 2**31  # RFC 9111 §1.2.2: a larger delta-seconds is taken as this


@dataclass
class CollectReport:
    fetched: int = 0
    not_modified: int = 0
    failed: int = 0
    skipped: int = 0
    new_articles: int = 0
    updated_articles: int = 0
    errors: dict[str, str] = field(default_factory=dict)
    # per source: entries whose GUID or link another source already owns (kept as that source's)
    owned_elsewhere: dict[str, int] = field(default_factory=dict)
    # per source: entries no output format could carry (see services.publishable), not stored
    refused: dict[str, int] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.new_articles or self.updated_articles)

    def summary(self) -> str:
        return (
            f"{self.fetched} fetched, {self.not_modified} not modified, {self.failed} failed, "
            f"{self.skipped} not due; {self.new_articles} new and {self.updated_articles} updated articles"
            + (f"; {sum(self.owned_elsewhere.values())} entries owned by other sources" if self.owned_elsewhere else "")
            + (f"; {sum(self.refused.values())} entries refused" if self.refused else "")
        )


def next_attempt_after_failure(
    now: datetime, interval: timedelta, failures: int, retry_after: float | None = None
) -> datetime:
    """Capped exponential backoff from the normal interval; Retry-After wins when it is later."""
    factor: int = 2 ** min(failures, 16)  # typeshed types int ** int as Any (a negative power is a float)
    delay = min(interval * factor, MAX_BACKOFF)
    if retry_after is not None:
        delay = max(delay, timedelta(seconds=min(retry_after, 86400)))
    return now + delay


def max_age(headers: Mapping[str, str]) -> timedelta | None:
    """Cache-Control max-age (else s-maxage) of a response, if it gives a usable one.

    werkzeug splits the header and unquotes values (the last of duplicated directives wins; the
    result is bounded by ``poll_interval`` either way). The number is checked here, because
    werkzeug's ``int()`` also takes ``-5``, ``+5``, ``1_000`` and non-ASCII digits: RFC 9111's
    delta-seconds are ASCII digits, and any value above 2**31 means 2**31 (§1.2.2) — a 20-digit
    value overflowed ``timedelta`` and failed the source's collect.
    """
    directives = parse_cache_control_header(headers.get("cache-control", "").lower(), cls=ResponseCacheControl)
    for name in ("max-age", "s-maxage"):
        raw = directives.get(name)
        if isinstance(raw, str) and raw.isascii() and raw.isdigit():
            digits = raw.lstrip("0") or "0"
            return timedelta(seconds=int(digits) if len(digits) <= 10 else DELTA_SECONDS_CAP)
    return None


def poll_interval(interval: timedelta, headers: Mapping[str, str], ttl_minutes: int | None = None) -> timedelta:
    """Our interval, unless the server or the feed asks for a longer one (capped at a day)."""
    asked = [interval]
    if (age := max_age(headers)) is not None:
        asked.append(age)
    if ttl_minutes:
        asked.append(timedelta(minutes=ttl_minutes))
    return min(max(asked), max(interval, MAX_POLL_INTERVAL))


DUE_SLACK = 0.1  # of the collect interval: see is_due


def is_due(source: SourceState, now: datetime, slack: timedelta = timedelta(0)) -> bool:
    """Whether the source's due time falls within the run starting at ``now``.

    A run's ``now`` is read when its job starts, a few milliseconds after the scheduled time, and
    the next due time is that ``now`` plus the interval; the next run can start a millisecond
    earlier in its own period than this one did, and without ``slack`` (a fraction of the collect
    interval) the source would wait a whole extra interval: fetched at 0, 60 and 180 s.
    """
    return source.enabled and (source.next_attempt is None or source.next_attempt <= now + slack)


def route(article: Article, routes: Sequence[Route]) -> Article:
    """The article in the section of the first route it matches, else unchanged."""
    for r in routes:
        if r.matches(article):
            return replace(article, section=r.section)
    return article


@dataclass(frozen=True, slots=True)
class _Failure:
    url: str
    message: str
    next_attempt: datetime
    gone: bool = False


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
    max_entries: int = 500,
    force: bool = False,
    batch: int = 50,
    linger: float = 0.05,
    executor: Executor | None = None,
) -> CollectReport:
    """Fetch every due source once and store what changed; never raises for one source's failure.

    Fetching and parsing run concurrently (parsing in ``executor``, e.g. a process pool, or
    in threads); one writer stores the results in batches (one transaction each, so a crash
    never leaves half a feed) and is the only one writing, which also keeps deduplication by
    link free of races. At most ``concurrency`` sources are in flight, from request to queued
    result, and the queue is bounded, so memory does not grow with the number of sources.
    Unless a batch is already waiting, the writer gives new articles ``linger`` seconds to gather.
    """
    report = CollectReport()
    sources = store.list_sources(with_counts=False)
    due = [s for s in sources if (force and s.enabled) or is_due(s, now, interval * DUE_SLACK)]
    report.skipped = len(sources) - len(due)
    limit = asyncio.Semaphore(concurrency)
    hosts: defaultdict[str, asyncio.Semaphore] = defaultdict(lambda: asyncio.Semaphore(per_host))
    intervals, routes = intervals or {}, routes or {}
    queue: asyncio.Queue[FetchRecord | _Failure | None] = asyncio.Queue(maxsize=2 * batch)
    loop = asyncio.get_running_loop()

    async def one(src: SourceState) -> None:
        async with limit, hosts[_host(src.current_url)]:
            try:
                outcome = await _fetch_and_parse(src)
            except Exception as exc:  # whatever one source does, it is that source's failure
                log.exception("fetching %s failed unexpectedly", src.url, extra={"source": src.url})
                every = intervals.get(src.url, interval)
                outcome = _Failure(
                    src.url,
                    f"internal error: {exc.__class__.__name__}: {exc}",
                    next_attempt_after_failure(now, every, src.failures),
                )
            await queue.put(outcome)

    async def _fetch_and_parse(src: SourceState) -> FetchRecord | _Failure:
        every = intervals.get(src.url, interval)
        try:
            result = await fetcher.fetch(src.current_url, etag=src.etag, last_modified=src.last_modified)
        except FetchError as exc:
            retry = next_attempt_after_failure(now, every, src.failures, exc.retry_after)
            return _Failure(src.url, exc.message, retry, gone=exc.gone)
        if result.permanent_redirect:
            log.info(
                "source moved permanently: %s → %s",
                src.current_url,
                result.permanent_redirect,
                extra={"source": src.url},
            )
        if result.not_modified:
            return FetchRecord(
                src.url,
                now + poll_interval(every, result.headers),
                result.headers.get("etag") or src.etag,
                result.headers.get("last-modified") or src.last_modified,
                None,
                result.permanent_redirect,
            )
        nonlocal executor
        job = functools.partial(
            _parse_fit,
            parse_feed,
            routes.get(src.url, ()),
            result.content,
            url=src.url,
            section=src.section,
            tz=tz,
            now=now,
            headers=result.headers,
            max_entries=max_entries,
        )
        try:
            parsed, refused = await loop.run_in_executor(executor, job)
        except FeedServiceError as exc:
            retry = next_attempt_after_failure(now, every, src.failures)
            return _Failure(src.url, str(getattr(exc, "message", exc)), retry)
        except BrokenProcessPool:
            log.error("the parser process died on %s; parsing in threads for the rest of this run", src.url)
            executor = None
            return _Failure(
                src.url, "the parser process died on this feed", next_attempt_after_failure(now, every, src.failures)
            )
        except Exception as exc:  # a bug must not stop the other sources
            log.exception("parsing %s failed unexpectedly", src.url, extra={"source": src.url})
            retry = next_attempt_after_failure(now, every, src.failures)
            return _Failure(src.url, f"internal error while parsing: {exc.__class__.__name__}: {exc}", retry)
        if refused:
            report.refused[src.url] = len(refused)
            log.warning(
                "%s: %d entries refused, e.g. %s",
                src.url,
                len(refused),
                refused[0],
                extra={"source": src.url, "refused": len(refused)},
            )
        return FetchRecord(
            src.url,
            now + poll_interval(every, result.headers, parsed.ttl_minutes),
            result.headers.get("etag"),
            result.headers.get("last-modified"),
            parsed.articles,
            result.permanent_redirect,
        )

    async def writer() -> None:
        done = False
        while not done:
            items = [await queue.get()]
            first = items[0]
            if isinstance(first, FetchRecord) and first.articles and queue.qsize() < batch - 1:
                # Let a few more feeds arrive: storing articles one or two feeds at a time (the
                # writer keeps up with the parsers) costs a commit and a rewrite of the touched
                # index pages each; a cold collect of 500 feeds ran ~10% faster with this pause.
                # Not-modified sources and failures only update a row: they do not wait, and
                # nothing waits once every source is done.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(finished.wait(), linger)
            while len(items) < batch and not queue.empty():
                items.append(queue.get_nowait())
            done = any(x is None for x in items)
            records = [x for x in items if isinstance(x, FetchRecord)]
            failures = [x for x in items if isinstance(x, _Failure)]
            if records:
                await asyncio.to_thread(_store_records, store, records, now, report)
            for f in failures:
                await asyncio.to_thread(_record_failure, store, f, now, report)

    finished = asyncio.Event()
    writing = asyncio.create_task(writer())
    fetching = asyncio.ensure_future(asyncio.gather(*(one(s) for s in due)))
    try:
        # The writer only ends early by crashing: then nobody would take the fetchers' results.
        both: list[asyncio.Future[Any]] = [fetching, writing]
        await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
        if writing.done():
            fetching.cancel()
        await asyncio.gather(fetching, return_exceptions=True)
    finally:
        if not fetching.done():  # the collect itself was cancelled: stop its fetchers too
            fetching.cancel()
        finished.set()
        if not writing.done():
            await queue.put(None)  # after every result: the writer stores them all, then ends
        await writing
    return report


def _parse_fit(
    parse_feed: FeedParser, routes: Sequence[Route], content: bytes, **kw: Any
) -> tuple[ParsedFeed, list[str]]:
    """Parse, route, and keep the articles every output format can carry (fixed where they can
    be), with the reasons for the others (their source's problem: counted and logged, not
    stored). Runs where the parsing runs (a parser process when there is a pool), so the
    collector's one event loop does not pay for it."""
    parsed = parse_feed(content, **kw)
    kept, refused = [], []
    for article in parsed.articles:
        fit = make_publishable(route(article, routes))
        if isinstance(fit, str):
            refused.append(fit)
        else:
            fit.content_hash()  # a routed or fixed article is a new one: its digest is worked out here
            kept.append(fit)
    return replace(parsed, articles=tuple(kept)), refused


def _host(url: str) -> str:
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


def _store_records(store: SourceStore, records: list[FetchRecord], now: datetime, report: CollectReport) -> None:
    try:
        counts = store.record_fetches(records, now)
    except Exception as exc:
        if not isinstance(exc, FeedServiceError):
            log.exception("storing %d sources failed unexpectedly", len(records))
        # The batch failed as a whole (a database problem): record it per source, keep going.
        for r in records:
            _record_failure(store, _Failure(r.url, f"storing failed: {exc}", r.next_attempt), now, report)
        return
    for record, (new, updated, foreign) in zip(records, counts, strict=True):
        if record.articles is None:
            report.not_modified += 1
            continue
        report.fetched += 1
        report.new_articles += new
        report.updated_articles += updated
        log.info(
            "collected %s: %d entries, %d new, %d updated",
            record.url,
            len(record.articles),
            new,
            updated,
            extra={"source": record.url, "new": new, "updated": updated},
        )
        if foreign:
            report.owned_elsewhere[record.url] = foreign
            log.info(
                "%s: %d entries have the GUID or link of another source's article: kept as that source's",
                record.url,
                foreign,
                extra={"source": record.url, "owned_elsewhere": foreign},
            )


def _record_failure(store: SourceStore, failure: _Failure, now: datetime, report: CollectReport) -> None:
    """Count, log and store one source's failure; a store that fails too is logged, not raised
    (the writer must go on to the other sources)."""
    try:
        _store_failure(store, failure, now, report)
    except Exception:
        log.exception("recording the failure of %s failed", failure.url, extra={"source": failure.url})


def _store_failure(store: SourceStore, failure: _Failure, now: datetime, report: CollectReport) -> None:
    report.failed += 1
    if failure.gone:
        report.errors[failure.url] = f"{failure.message}: disabled"
        log.warning(
            "source gone, disabled: %s: %s",
            failure.url,
            failure.message,
            extra={"source": failure.url, "error": failure.message},
        )
        store.disable_source(
            failure.url, f"{failure.message} (disabled; change its URL in the config to enable it again)", now
        )
        return
    report.errors[failure.url] = failure.message
    log.warning(
        "source failed: %s: %s (retry at %s)",
        failure.url,
        failure.message,
        failure.next_attempt.isoformat(timespec="seconds"),
        extra={"source": failure.url, "error": failure.message},
    )
    store.record_fetch_failure(failure.url, failure.message, now, failure.next_attempt)
