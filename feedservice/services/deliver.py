"""Send an edition: record one delivery per recipient, then drain the ledger through a Mailer.

The ledger (unique on edition + subscriber) is written before anything is sent, so a
re-run resumes what is left and never sends again to anyone already marked sent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parseaddr

from feedservice.errors import DeliveryError, DeliveryFatal
from feedservice.model import DeliveryStatus, Edition, Subscriber, SubscriberStatus
from feedservice.ports import DeliveryStore, Mailer
from feedservice.services.digest import DigestSite, RenderedDigest, message_id, personalize, prepare

log = logging.getLogger(__name__)

RETRY_BASE = timedelta(minutes=5)


@dataclass
class SendReport:
    queued: int = 0
    skipped_empty: int = 0
    sent: int = 0
    deferred: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.sent} sent, {self.deferred} deferred, {self.failed} failed "
            f"({self.queued} newly queued, {self.skipped_empty} with nothing new skipped)"
        )


def retry_time(now: datetime, attempts: int) -> datetime:
    return now + min(RETRY_BASE * (2**attempts), timedelta(hours=1))


def enqueue_edition(
    store: DeliveryStore,
    site: DigestSite,
    edition: Edition,
    has_content: Callable[[tuple[str, ...]], bool],
    now: datetime,
    batch: int = 500,
) -> tuple[int, int]:
    """Record a queued delivery for every confirmed subscriber with something to read."""
    queued = skipped = 0
    rows: list[tuple[int, str, str]] = []
    for sub in store.iter_subscribers(SubscriberStatus.SUBSCRIBED, batch=batch):
        if not has_content(sub.sections):
            skipped += 1
            continue
        rows.append((sub.id, sub.email, message_id(site, edition.day, sub.id)))
        if len(rows) >= batch:
            queued += store.enqueue_deliveries(edition.day, rows, now)
            rows = []
    queued += store.enqueue_deliveries(edition.day, rows, now)
    return queued, skipped


async def drain_edition(
    store: DeliveryStore,
    mailer: Mailer,
    site: DigestSite,
    edition: Edition,
    rendered_for: Callable[[tuple[str, ...]], RenderedDigest | None],
    links_for: Callable[[Subscriber], tuple[str, str]],
    clock: Callable[[], datetime],
    *,
    expires: timedelta = timedelta(hours=6),
    batch: int = 200,
    report: SendReport | None = None,
    sign: Callable[[bytes], bytes] | None = None,
) -> SendReport:
    """Send every due delivery of ``edition``; a ``DeliveryFatal`` stops the run and propagates."""
    report = report or SendReport()
    envelope_from = parseaddr(site.sender)[1]
    deadline = edition.window_end + expires
    while True:
        now = clock()
        due = store.due_deliveries(edition.day, now, batch)
        if not due:
            return report
        for d in due:
            sub = store.get_subscriber(d.email)
            now = clock()
            if sub is None or sub.status is not SubscriberStatus.SUBSCRIBED:
                store.mark_delivery(d.id, DeliveryStatus.FAILED, "not subscribed any more", now)
                report.failed += 1
                continue
            rendered = rendered_for(sub.sections)
            if rendered is None:
                store.mark_delivery(d.id, DeliveryStatus.FAILED, "nothing to send", now)
                report.failed += 1
                continue
            unsubscribe, preferences = links_for(sub)
            data = personalize(
                site,
                prepare(site, rendered, edition.day),
                to=sub.email,
                msg_id=d.message_id,
                unsubscribe_url=unsubscribe,
                preferences_url=preferences,
                now=now,
            )
            if sign is not None:
                data = sign(data)
            try:
                reply = await mailer.send(envelope_from, sub.email, data)
            except DeliveryFatal:
                raise  # not this recipient's fault: the row stays queued for the next run
            except DeliveryError as exc:
                now = clock()
                if exc.permanent or now >= deadline:
                    store.mark_delivery(d.id, DeliveryStatus.FAILED, str(exc), now)
                    report.failed += 1
                    if (exc.code is not None and 510 <= exc.code <= 511) or "5.1." in str(exc):
                        store.set_subscriber_status(sub.email, SubscriberStatus.SUPPRESSED)
                else:
                    store.mark_delivery(d.id, DeliveryStatus.DEFERRED, str(exc), now, retry_time(now, d.attempts))
                    report.deferred += 1
                report.errors.append(f"{sub.email}: {exc}")
                log.warning("delivery to %s: %s", sub.email, exc, extra={"edition": str(edition.day)})
                continue
            store.mark_delivery(d.id, DeliveryStatus.SENT, reply, clock())
            report.sent += 1
