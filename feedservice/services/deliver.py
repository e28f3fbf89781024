"""Sending an edition: a ledger row per recipient first, then a pool of senders drains it.

Ledger states: queued → sending (claimed by one worker) → sent | deferred (retry later) |
failed. Rows are claimed in small batches; a row is marked sent right after the server's
250 reply, so a crash (even kill -9) can re-send at most the messages that were inside an
SMTP transaction at that moment: at most one per connection, i.e. ``pool_size``. A claimed
row whose worker died is claimable again once its lease has run out.

``EditionDrain`` is the loop, in named steps: claim (and ask for each message, signed, as it is
queued: ``outgoing``) → send one (take the message, hand it over) →
classify the reply (``replies``) → record. Whatever goes wrong with one message — a refusal, a
bug, an address no relay can carry — becomes that message's recorded outcome, with its reason;
a sender task never dies, and a run always ends: by itself, when the relay refuses us (the run
stops, nobody is marked), when the suppression breaker trips (the edition pauses until an
operator runs ``digest send`` again), or on cancellation (SIGTERM), within ``shutdown_timeout``.

Between claim and send, each message goes through its provider's lane (``pacing.DomainPacer``):
at most the lane's ``concurrency`` in flight and its ``per_minute``. A throttling reply
(``replies.throttled``) pauses the lane — recorded, so it survives a restart — and its messages
are deferred, unsent, to the end of the pause, while the other lanes keep sending.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime
from email.utils import parseaddr

from feedservice.errors import DeliveryError, DeliveryFatal, SendingStopped
from feedservice.model import Delivery, DeliveryStatus, Edition, Subscriber, SubscriberStatus
from feedservice.ports import DeliveryStore, Mailer, RunSigner
from feedservice.services import pacing
from feedservice.services.digest import DigestSite, RenderedDigest
from feedservice.services.outgoing import Outgoing
from feedservice.services.pacing import DomainPacer, GroupCommit, Lane, LaneRule, RateLimiter
from feedservice.services.refusals import settle_refusals
from feedservice.services.replies import Outcome, SuppressionBreaker, classify, retry_time, throttled
from feedservice.services.send_run import DrainSettings, SendReport

__all__ = ["DrainSettings", "EditionDrain", "LaneRule", "RateLimiter", "SendReport"]

log = logging.getLogger(__name__)

Item = tuple[Delivery, Subscriber | None]


class EditionDrain:
    """One run over one edition's due deliveries, with ``pool_size`` concurrent senders."""

    def __init__(
        self,
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
        sign: RunSigner | None = None,
        progress: Callable[[SendReport], None] | None = None,
        envelope: Callable[[Delivery], str] | None = None,
    ) -> None:
        self.store, self.mailer, self.site, self.edition = store, mailer, site, edition
        self.clock, self.settings = clock, settings
        self.report = report or SendReport()
        self.messages = Outgoing(site, edition, rendered_for, links_for, clock, sign)
        self.progress = progress
        self.envelope_from = parseaddr(site.sender)[1]
        self.envelope = envelope  # the MAIL FROM per delivery (VERP, ``[bounces] return_path``)
        self.deadline = edition.window_end + settings.expires
        self.limiter = RateLimiter(settings.rate)
        self.queue: asyncio.Queue[Item | None] = asyncio.Queue(maxsize=settings.pool_size * 2)
        # Claimed items between the queue and their outcome, backlogs included: a lane that is
        # slow cannot make the producer claim (and hold, past its lease) ever more of the ledger.
        self.window = asyncio.Semaphore(settings.pool_size * 8)
        self.pacer = DomainPacer(settings.lanes)
        self.held: set[int] = set()  # claimed by us and not yet recorded: handed back if we stop
        self.stopping = asyncio.Event()
        self.error: BaseException | None = None  # raised when the run ends (fatal, storage)
        self.breaker = SuppressionBreaker(0, settings.breaker_share, settings.breaker_minimum)
        self.to_suppress: list[tuple[Delivery, str]] = []  # with the refusal: applied if the run ends well
        self.held_back: set[int] = set()  # their delivery ids
        self.recorder = GroupCommit(store, clock)

    # -- the run -------------------------------------------------------------------------------
    async def run(self) -> SendReport:
        """Send what is due. A ``DeliveryFatal`` or a storage failure is raised once everything
        claimed and unsent has been handed back; a cancellation too, within ``shutdown_timeout``."""
        day = self.edition.day
        paused = await asyncio.to_thread(self.store.sending_paused, day)
        if paused is not None:
            self.report.paused = f"{paused} (resume with: feedservice digest send --date {day})"
            return self.report
        counts = await asyncio.to_thread(self.store.delivery_counts, day)
        self.breaker.recipients = sum(counts.values())
        self.pacer = DomainPacer(self.settings.lanes, await asyncio.to_thread(self.store.domain_pauses))
        recording = asyncio.create_task(self.recorder.run())
        senders = [asyncio.create_task(self._sender()) for _ in range(self.settings.pool_size)]
        producer = asyncio.create_task(self._produce())
        cancelled = False
        try:
            # Shielded: a cancellation must not cut a claim short in its thread (it would still
            # commit, and its rows would wait for their lease); the producer sees ``stopping``.
            await asyncio.shield(producer)
        except asyncio.CancelledError:
            cancelled = True
            self._stop("stopped by a signal: what was not sent is left for the next run")
        except Exception as exc:
            self._stop(f"claiming deliveries failed: {exc}", exc)
        finally:
            await self._wind_down(producer, senders, self.settings.shutdown_timeout if cancelled else None)
            self.messages.close()
            await self.recorder.close()
            await recording
            await self._settle_suppressions(apply=not cancelled)
            await self._hand_back()
        if cancelled:
            raise asyncio.CancelledError
        if self.error is not None:
            raise self.error
        return self.report

    def _stop(self, reason: str, error: BaseException | None = None) -> None:
        """Send nothing more; the first reason is the one reported."""
        if not self.stopping.is_set():
            self.stopping.set()
            self.report.stopped = reason
            self.error = error
            log.warning("digest %s: %s", self.edition.day, reason, extra={"edition": str(self.edition.day)})

    async def _wind_down(
        self, producer: asyncio.Task[None], senders: list[asyncio.Task[None]], limit: float | None
    ) -> None:
        """Let the producer end, the senders finish what they hold; after ``limit`` s, cancel them."""

        async def finish() -> None:
            await asyncio.wait([producer])
            for _ in senders:
                await self.queue.put(None)
            await asyncio.wait(senders)

        finishing = asyncio.create_task(finish())
        await asyncio.wait([finishing], timeout=limit)
        if not finishing.done():
            log.warning(
                "digest %s: messages still in flight after %g s: abandoned (handed back)", self.edition.day, limit
            )
            for task in (finishing, producer, *senders):
                task.cancel()
        await asyncio.gather(finishing, producer, *senders, return_exceptions=True)

    # -- claim ---------------------------------------------------------------------------------
    async def _produce(self) -> None:
        s = self.settings
        while not self.stopping.is_set():
            claimed = await self._claim()
            if not claimed:
                reclaim = (
                    await asyncio.to_thread(self.store.next_reclaim, self.edition.day, s.lease)
                    if s.wait_for_others
                    else None
                )
                if reclaim is None:
                    return  # nothing due, nothing held by anyone: done (deferred rows wait for a later run)
                # Rows another worker holds: wait until they are done or their lease runs out.
                await self._wait(min(max((reclaim - self.clock()).total_seconds(), 0.05), 1.0))
                continue
            for item in claimed:
                await self.window.acquire()
                if self.stopping.is_set():
                    self.window.release()
                    return  # the rest stay in ``held`` and are handed back
                self.messages.ask(*item)  # signed meanwhile (``outgoing``)
                await self.queue.put(item)

    async def _claim(self) -> list[Item]:
        s = self.settings
        claiming = asyncio.ensure_future(
            asyncio.to_thread(
                self.store.claim_deliveries, self.edition.day, self.clock(), s.pool_size * 4, s.worker, s.lease
            )
        )
        try:
            claimed = await asyncio.shield(claiming)
        except asyncio.CancelledError:
            claimed = await claiming  # it commits anyway: know its rows, to hand them back
            self.held.update(d.id for d, _ in claimed)
            raise
        self.held.update(d.id for d, _ in claimed)
        return claimed

    async def _wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    # -- send one --------------------------------------------------------------------------------
    async def _sender(self) -> None:
        while (item := await self.queue.get()) is not None:
            await self._through_lane(item)

    async def _through_lane(self, item: Item) -> None:
        """Send ``item`` in its lane's slot, then the lane's backlog; a full lane keeps it for later.

        No sender waits for a busy lane: the message joins the backlog, which the senders holding
        that lane's slots work through (nothing awaits between the check and the append, so a
        backlog never outlives its lane's last slot).
        """
        d, sub = item
        lane = self.pacer.lane_for(sub.email if sub is not None and sub.email else d.email)
        if lane.full():
            lane.backlog.append(item)
            return
        lane.active += 1
        try:
            while True:
                try:
                    if not self.stopping.is_set():
                        await self._handle(d, sub, lane)
                finally:
                    self.window.release()
                    self.messages.drop(d.id)
                if not lane.backlog:
                    break
                d, sub = lane.backlog.popleft()
        finally:
            lane.active -= 1

    async def _handle(self, d: Delivery, sub: Subscriber | None, lane: Lane) -> None:
        """One message, start to end. Never raises (but for cancellation): anything that goes wrong
        is this message's outcome, or — when it is about us — stops the run."""
        if d.id in self.held_back:  # due again in a long run: it waits for the end of this run, unsent
            await self._commit(d, DeliveryStatus.DEFERRED, d.last_reply, retry_time(self.clock(), d.attempts))
            return
        try:
            outcome = await self._attempt(d, sub, lane)
        except SendingStopped as exc:  # about us: this message is handed back with the others
            self._stop_for(exc)
            return
        except Exception as exc:
            log.error(
                "digest %s: message %s not sent: %s: %s",
                self.edition.day,
                d.id,
                exc.__class__.__name__,
                exc,
                exc_info=exc,
                extra={"edition": str(self.edition.day)},
            )
            outcome = Outcome(DeliveryStatus.FAILED, f"not sent: {exc.__class__.__name__}: {exc}")
        try:
            await self._record(d, sub, outcome)
        except Exception as exc:
            self._stop(f"recording outcomes failed: {exc}", exc)

    async def _attempt(self, d: Delivery, sub: Subscriber | None, lane: Lane) -> Outcome:
        if sub is None or sub.status is not SubscriberStatus.SUBSCRIBED:
            return Outcome(DeliveryStatus.FAILED, "not subscribed any more")
        if (waiting := pacing.paused_outcome(lane, self.clock(), self.deadline)) is not None:
            return waiting
        if (data := await self.messages.take(d, sub)) is None:
            return Outcome(DeliveryStatus.FAILED, "nothing to send")
        await self.limiter.acquire()
        await lane.limiter.acquire()
        # Paused while this one waited its turn?
        if (waiting := pacing.paused_outcome(lane, self.clock(), self.deadline)) is not None:
            return waiting
        try:
            sender = self.envelope(d) if self.envelope is not None else self.envelope_from
            reply = await self.mailer.send(sender, sub.email, data)
        except SendingStopped:
            raise
        except DeliveryError as exc:
            now = self.clock()
            if throttled(exc) and now < self.deadline:
                pause = await pacing.pause_lane(
                    self.store,
                    lane,
                    str(exc),
                    now=now,
                    base=self.settings.domain_pause,
                    edition=self.edition.day,
                    paused=self.report.domains_paused,
                )
                return Outcome(DeliveryStatus.DEFERRED, str(exc), pause.until)
            return classify(exc, now=now, deadline=self.deadline, attempts=d.attempts)
        return Outcome(DeliveryStatus.SENT, reply)

    def _stop_for(self, exc: SendingStopped) -> None:
        if isinstance(exc, DeliveryFatal):
            reason = f"stopped: {exc}; nobody was marked; fix the setup, then run `digest send` again"
            self._stop(reason, exc)
            self._pause_edition(f"paused: {exc}")
        else:
            self._stop(f"deferred: {exc}; nobody was marked; a later run (or `worker`) tries again")

    def _pause_edition(self, reason: str) -> None:
        self.report.paused = f"{reason} (resume with: feedservice digest send --date {self.edition.day})"
        try:
            self.store.pause_sending(self.edition.day, reason, self.clock())
        except Exception as exc:  # the run stops anyway; only the note is missing
            log.error("could not record the pause of digest %s: %s", self.edition.day, exc)

    # -- record ----------------------------------------------------------------------------------
    async def _record(self, d: Delivery, sub: Subscriber | None, outcome: Outcome) -> None:
        r = self.report
        if outcome.suppress and sub is not None:
            # Not suppressed yet: held back (deferred) until the run shows it is not a mass refusal.
            # Counted in the store, per edition: every worker sending it trips at the same total.
            if self.breaker.observe(await asyncio.to_thread(self.store.hold_suppression, self.edition.day)):
                self._stop(self.breaker.reason())
                self._pause_edition(self.breaker.reason())
            self.to_suppress.append((d, outcome.reply))
            self.held_back.add(d.id)
            await self._commit(d, DeliveryStatus.DEFERRED, outcome.reply, retry_time(self.clock(), d.attempts))
        else:
            await self._commit(d, outcome.status, outcome.reply, outcome.retry)
        r.count(outcome)
        if outcome.policy:
            log.error(
                "policy rejection for %s: %s: this is about how we send, not about the reader",
                sub.email if sub else d.email,
                outcome.reply,
                extra={"edition": str(self.edition.day)},
            )
        if outcome.status is not DeliveryStatus.SENT:
            who = sub.email if sub is not None and sub.email else d.email
            r.note_error(f"{who}: {outcome.reply}")
            log.warning("delivery to %s: %s", who, outcome.reply, extra={"edition": str(self.edition.day)})
        if self.progress is not None:
            self.progress(r)

    async def _commit(self, d: Delivery, status: DeliveryStatus, reply: str | None, retry: datetime | None) -> None:
        # Returns once the outcome is committed: a connection sends its next message only then,
        # so at most one accepted-but-unrecorded message per connection exists at any moment.
        await self.recorder.record((d.id, status, reply, retry))
        self.held.discard(d.id)

    async def _settle_suppressions(self, *, apply: bool) -> None:
        """At the end of a run: suppress the readers refused as unknown, unless the edition's breaker tripped
        (in this run or another worker's) or the run was cut short; then they are queued again, for resumption."""
        held, self.to_suppress = self.to_suppress, []
        if not held:
            return
        try:
            settled = await settle_refusals(self.store, self.edition.day, held, self.breaker, self.clock, apply=apply)
        except Exception as exc:  # they stay deferred: retried later, nothing lost
            log.error("digest %s: could not settle %d refused readers: %s", self.edition.day, len(held), exc)
            return
        if not settled:
            self.report.deferred += len(held)
            return
        self.report.failed += len(held)
        self.report.suppressed += len(held)

    async def _hand_back(self) -> None:
        if not self.held:
            return
        log.info("handing back %d claimed, unsent deliveries", len(self.held))
        try:
            await asyncio.to_thread(
                self.store.release_deliveries, sorted(self.held), self.settings.worker, self.clock()
            )
        except Exception as exc:  # their lease runs out instead
            log.warning("could not hand back %d deliveries: %s", len(self.held), exc)
