"""Sending an edition: a ledger row per recipient first, then a pool of senders drains it.

Ledger states: queued → sending (claimed by one worker) → sent | deferred (retry later) |
failed. Rows are claimed in small batches; a row is marked sent right after the server's
250 reply, so a crash (even kill -9) can re-send at most the messages that were inside an
SMTP transaction at that moment: at most one per connection, i.e. ``pool_size``. A claimed
row whose worker died is claimable again once its lease has run out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parseaddr

from feedservice.errors import DeliveryError, DeliveryFatal
from feedservice.model import Delivery, DeliveryStatus, Edition, Subscriber, SubscriberStatus
from feedservice.ports import DeliveryStore, Mailer
from feedservice.services.digest import DigestSite, RenderedDigest, message_id, personalize, prepare

log = logging.getLogger(__name__)

RETRY_BASE = timedelta(minutes=5)
MAX_RETRY = timedelta(hours=1)
KEEP_ERRORS = 20


@dataclass
class SendReport:
    queued: int = 0
    skipped_empty: int = 0
    sent: int = 0
    deferred: int = 0
    failed: int = 0
    suppressed: int = 0
    policy: int = 0  # rejections that are about us (RFC 3463 x.7.x): fix the sending setup
    errors: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def note_error(self, text: str) -> None:
        if len(self.errors) < KEEP_ERRORS:
            self.errors.append(text)

    @property
    def rate(self) -> float:
        return self.sent / max(time.monotonic() - self.started, 1e-6)

    def summary(self) -> str:
        extra = []
        if self.suppressed:
            extra.append(f"{self.suppressed} addresses suppressed")
        if self.policy:
            extra.append(f"{self.policy} refused by policy (a sender problem)")
        return (
            f"{self.sent} sent, {self.deferred} deferred, {self.failed} failed "
            f"({self.queued} newly queued, {self.skipped_empty} with nothing new skipped"
            + "".join(f"; {e}" for e in extra)
            + f"; {self.rate:.0f} messages/s)"
        )


def retry_time(now: datetime, attempts: int) -> datetime:
    """Exponential backoff from 5 minutes, capped at an hour."""
    return now + min(RETRY_BASE * (2**attempts), MAX_RETRY)


class RateLimiter:
    """A token bucket shared by every connection of this process (``rate`` messages/s; 0 = none)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._next = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        if self.rate <= 0:
            return
        async with self._lock:
            now = time.monotonic()
            wait = self._next - now
            self._next = max(self._next, now) + 1 / self.rate
        if wait > 0:
            await asyncio.sleep(wait)


class _GroupCommit:
    """Outcomes from all connections, committed together: one transaction for whatever is waiting."""

    def __init__(self, store: DeliveryStore, clock: Callable[[], datetime]) -> None:
        self.store, self.clock = store, clock
        self.queue: asyncio.Queue[tuple[tuple[int, DeliveryStatus, str | None, datetime | None], asyncio.Future[None]]
                                  | None] = asyncio.Queue()  # fmt: skip

    async def record(self, outcome: tuple[int, DeliveryStatus, str | None, datetime | None]) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self.queue.put((outcome, done))
        await done

    async def close(self) -> None:
        await self.queue.put(None)

    async def run(self) -> None:
        closing = False
        while not closing:
            items = [await self.queue.get()]
            while not self.queue.empty():
                items.append(self.queue.get_nowait())
            closing = items[-1] is None or None in items
            batch = [x for x in items if x is not None]
            if not batch:
                continue
            try:
                await asyncio.to_thread(self.store.mark_deliveries, [o for o, _ in batch], self.clock())
            except Exception as exc:  # handed to every waiting sender
                for _, done in batch:
                    done.set_exception(exc)
                continue
            for _, done in batch:
                done.set_result(None)


def enqueue_edition(
    store: DeliveryStore,
    site: DigestSite,
    edition: Edition,
    has_content: Callable[[tuple[str, ...]], bool],
    now: datetime,
    batch: int = 500,
) -> tuple[int, int]:
    """Record a queued delivery for every confirmed subscriber with something to read.

    Subscribers are streamed in batches, so memory does not grow with the list.
    """
    queued = skipped = 0
    rows: list[tuple[int, str, str]] = []
    for sub in store.iter_subscribers(SubscriberStatus.SUBSCRIBED, batch=batch):
        if not has_content(sub.sections):
            skipped += 1
            continue
        rows.append((sub.id, sub.email, message_id(site, edition, sub.id)))
        if len(rows) >= batch:
            queued += store.enqueue_deliveries(edition.day, rows, now)
            rows = []
    queued += store.enqueue_deliveries(edition.day, rows, now)
    return queued, skipped


@dataclass
class DrainSettings:
    worker: str
    pool_size: int = 4
    rate: float = 0.0
    lease: timedelta = timedelta(seconds=60)
    expires: timedelta = timedelta(hours=6)
    wait_for_others: bool = True


async def drain_edition(
    store: DeliveryStore,
    mailer: Mailer,
    site: DigestSite,
    edition: Edition,
    rendered_for: Callable[[tuple[str, ...]], RenderedDigest | None],
    links_for: Callable[[Subscriber], tuple[str, str]],
    clock: Callable[[], datetime],
    settings: DrainSettings,
    *,
    report: SendReport | None = None,
    sign: Callable[[bytes], bytes] | None = None,
    progress: Callable[[SendReport], None] | None = None,
) -> SendReport:
    """Send every due delivery of ``edition`` through ``pool_size`` concurrent senders.

    A ``DeliveryFatal`` (authentication, TLS) stops the run: what this worker had claimed but
    not sent is handed back (queued), nothing is marked sent that the server did not accept,
    and the error propagates.
    """
    report = report or SendReport()
    envelope_from = parseaddr(site.sender)[1]
    deadline = edition.window_end + settings.expires
    limiter = RateLimiter(settings.rate)
    queue: asyncio.Queue[tuple[Delivery, Subscriber | None] | None] = asyncio.Queue(maxsize=settings.pool_size * 2)
    held: set[int] = set()  # claimed by us and not yet recorded
    stop = asyncio.Event()
    fatal: list[DeliveryFatal] = []

    async def producer() -> None:
        while not stop.is_set():
            now = clock()
            claimed = await asyncio.to_thread(
                store.claim_deliveries, edition.day, now, settings.pool_size * 4, settings.worker, settings.lease
            )
            if not claimed:
                reclaim = store.next_reclaim(edition.day, settings.lease) if settings.wait_for_others else None
                if reclaim is None:
                    return  # nothing due, nothing held by anyone: done (deferred rows wait for a later run)
                # Rows another worker holds: wait until they are done or their lease runs out.
                await asyncio.sleep(min(max((reclaim - clock()).total_seconds(), 0.05), 1.0))
                continue
            for item in claimed:
                held.add(item[0].id)
                await queue.put(item)

    async def sender() -> None:
        while (item := await queue.get()) is not None:
            if stop.is_set():
                continue
            try:
                await _send_one(item)
            except DeliveryFatal as exc:
                fatal.append(exc)
                stop.set()

    async def _send_one(item: tuple[Delivery, Subscriber | None]) -> None:
        d, sub = item
        if sub is None or sub.status is not SubscriberStatus.SUBSCRIBED:
            await _record(d, DeliveryStatus.FAILED, "not subscribed any more")
            report.failed += 1
            return
        rendered = rendered_for(sub.sections)
        if rendered is None:
            await _record(d, DeliveryStatus.FAILED, "nothing to send")
            report.failed += 1
            return
        unsubscribe, preferences = links_for(sub)
        data = personalize(site, prepare(site, rendered, edition.day), to=sub.email, msg_id=d.message_id,
                           unsubscribe_url=unsubscribe, preferences_url=preferences, now=clock())  # fmt: skip
        if sign is not None:
            data = sign(data)
        await limiter.acquire()
        try:
            reply = await mailer.send(envelope_from, sub.email, data)
        except DeliveryFatal:
            raise
        except DeliveryError as exc:
            await _failed(d, sub, exc)
            return
        await _record(d, DeliveryStatus.SENT, reply)
        report.sent += 1
        if progress is not None:
            progress(report)

    async def _failed(d: Delivery, sub: Subscriber, exc: DeliveryError) -> None:
        now = clock()
        enhanced = exc.enhanced or ""
        if enhanced[1:].startswith(".7."):
            report.policy += 1
            log.error("policy rejection for %s: %s: this is about how we send, not about the reader", sub.email, exc,
                      extra={"edition": str(edition.day), "code": enhanced})  # fmt: skip
        if exc.permanent or now >= deadline:
            reason = str(exc) if exc.permanent else f"expired after retries: {exc}"
            await _record(d, DeliveryStatus.FAILED, reason)
            report.failed += 1
            if exc.permanent and enhanced.startswith("5.1."):  # bad mailbox or domain: never again
                await asyncio.to_thread(store.set_subscriber_status, sub.email, SubscriberStatus.SUPPRESSED)
                report.suppressed += 1
        else:
            await _record(d, DeliveryStatus.DEFERRED, str(exc), retry_time(now, d.attempts))
            report.deferred += 1
        report.note_error(f"{sub.email}: {exc}")
        log.warning("delivery to %s: %s", sub.email, exc, extra={"edition": str(edition.day)})
        if progress is not None:
            progress(report)

    async def _record(d: Delivery, status: DeliveryStatus, reply: str | None, retry: datetime | None = None) -> None:
        # Returns once the outcome is committed: a connection sends its next message only then,
        # so at most one accepted-but-unrecorded message per connection exists at any moment.
        await recorder.record((d.id, status, reply, retry))
        held.discard(d.id)

    recorder = _GroupCommit(store, clock)
    recording = asyncio.create_task(recorder.run())
    senders = [asyncio.create_task(sender()) for _ in range(settings.pool_size)]
    produce = asyncio.create_task(producer())
    try:
        # Shielded: cancelling this run must not cancel a claim running in its thread (it would
        # still commit, and its rows would wait for their lease to run out).
        await asyncio.shield(produce)
    except asyncio.CancelledError:
        stop.set()  # stopping (SIGTERM): send nothing more; what is claimed but unsent is handed back
        raise
    finally:
        if not produce.done():
            # Not cancelled: a claim under way in its thread would still commit. It sees ``stop``
            # after its current claim, whose rows are then in ``held`` and handed back below.
            await asyncio.wait([produce])
        for _ in senders:
            await queue.put(None)
        await asyncio.gather(*senders, return_exceptions=True)
        await recorder.close()
        await recording
        if held:  # stopped early (fatal error or cancellation): hand our unsent claims back
            log.info("handing back %d claimed, unsent deliveries", len(held))
            try:
                store.release_deliveries(sorted(held), settings.worker, clock())
            except Exception as exc:  # their lease runs out instead
                log.warning("could not hand back %d deliveries: %s", len(held), exc)
    if fatal:
        raise fatal[0]
    return report
