"""Sending, as use cases over ``deliver``: record and queue an edition, drain it, a confirmation.

``deliver`` knows how to send one edition's due deliveries; this module decides what a
"digest send", a queue-only run, a worker's drain and a sign-up's confirmation mail each do,
and owns the mailer for the length of one run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.utils import parseaddr
from typing import Protocol

import jinja2

from feedservice.errors import FeedServiceError
from feedservice.model import Delivery, Edition, Subscriber, SubscriberStatus
from feedservice.ports import DeliveryStore, EditionStore, Mailer, MessageSigner, RunSigner
from feedservice.services import deliver, mime
from feedservice.services.digest import DigestSite, message_id
from feedservice.services.editions import AssembledEdition

log = logging.getLogger("feedservice")

Progress = Callable[[deliver.SendReport], None]


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


class SendingStore(DeliveryStore, EditionStore, Protocol):
    pass


@dataclass
class Sending:
    """What one sending run needs; built by the composition root for each run."""

    store: SendingStore
    site: DigestSite
    make_mailer: Callable[[], Mailer]
    links_for: Callable[[Subscriber], tuple[str, str]]
    clock: Callable[[], datetime]
    # DKIM signing, or None; asked for within each run, so a key problem is that run's failure
    signer: Callable[[], MessageSigner | None] = lambda: None
    # the MAIL FROM per delivery (VERP, ``[bounces] return_path``), or None for the From address
    envelope: Callable[[Delivery], str] | None = None
    # DKIM for a sending run (``[delivery] dkim_signer``), or None; started and stopped per run
    run_signer: Callable[[], RunSigner | None] = lambda: None

    async def send_digest(
        self,
        assembled: AssembledEdition,
        web_links: dict[str, str],
        settings: deliver.DrainSettings,
        *,
        progress: Progress | None = None,
        queue_only: bool = False,
    ) -> deliver.SendReport:
        """Record the edition and its deliveries, then drain what is due (resuming a previous run).

        With ``queue_only`` nothing is sent: ``feedservice worker`` processes do that. A paused
        edition (the relay refused our sender, or the suppression breaker tripped) is resumed:
        this is how an operator says "go on".
        """
        ed, preview = assembled.edition, assembled.preview
        now = self.clock()
        html, text = preview.rendered.fill(web_links)
        self.store.save_edition(ed, html, text, now, preview.rendered.article_ids)
        if self.store.resume_sending(ed.day):
            log.info("digest %s: resuming a paused edition", ed.day)
        report = deliver.SendReport()
        report.queued, report.skipped_empty = enqueue_edition(
            self.store, self.site, ed, lambda chosen: assembled.rendered_for(chosen) is not None, now
        )
        if queue_only:
            return report
        return await self.drain(assembled, settings, report=report, progress=progress)

    async def drain(
        self,
        assembled: AssembledEdition,
        settings: deliver.DrainSettings,
        *,
        report: deliver.SendReport | None = None,
        progress: Progress | None = None,
    ) -> deliver.SendReport:
        """Send what is due of an edition already recorded, with one mailer for the run."""
        report = report or deliver.SendReport()
        signer = self.run_signer()
        mailer = self.make_mailer()
        try:
            await deliver.EditionDrain(
                self.store,
                mailer,
                self.site,
                assembled.edition,
                assembled.rendered_for,
                self.links_for,
                self.clock,
                settings,
                report=report,
                sign=signer,
                progress=progress,
                envelope=self.envelope,
            ).run()
        finally:
            try:
                await mailer.aclose()
            finally:
                if signer is not None:
                    report.signing_cpu = await signer.aclose()
                    report.signing_failure = signer.failure
        log.info("digest %s: %s", assembled.edition.day, report.summary())
        return report

    async def send_confirmation(self, templates: jinja2.Environment, email: str, confirm_url: str, hours: int) -> None:
        """The double opt-in mail (its own templates). A failure is logged; the reader can ask again."""
        site = self.site
        context = {
            "site_name": site.name,
            "confirm_url": confirm_url,
            "hours": hours,
            "sender": site.sender,
            "postal_address": site.postal_address,
        }
        mailer = self.make_mailer()
        try:
            data = mime.one_off_message(
                sender=site.sender,
                to=email,
                subject=f"{site.name} 뉴스레터 구독을 확인해 주세요",
                date=self.clock().astimezone(site.tz),
                text=templates.get_template("confirm.txt.j2").render(**context),
                html=templates.get_template("confirm.html.j2").render(**context),
            )
            if (signer := self.signer()) is not None:
                data = signer.sign(data)
            await mailer.send(parseaddr(site.sender)[1], email, data)
        except FeedServiceError as exc:
            log.warning("confirmation mail to a new subscriber failed: %s", exc)
        except Exception as exc:  # e.g. an address with no IDNA form: logged, never a silent task death
            log.error("confirmation mail to a new subscriber failed: %s: %s", exc.__class__.__name__, exc, exc_info=exc)
        finally:
            await mailer.aclose()
