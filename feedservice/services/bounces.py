"""Learning from returned mail: read each intake once, match each message to a delivery, apply
the policy, record everything.

``BounceCheck`` runs in named steps: gather (every pending message of every intake, read and
matched) → decide (pure: ``decide``) → check the breaker → record (one transaction per message,
its suppression included) → mark done in the intake. A message already recorded (by its digest)
is only marked done, so a second run changes nothing.

Matching, most trusted first: the VERP token in the address the mail came back to (signed:
nobody else can make one), the keyed Message-ID of the original (``digest.message_id``: not
guessable either), then a recipient address the report names. A recipient is something anyone
can write in a forged "bounce"; so when VERP is on (``[bounces] return_path``), a recipient
alone suppresses nobody: the mail is kept as unmatched for a person to look at.

The policy (``bounce_model`` draws the kinds): a hard bounce or a complaint suppresses at once;
soft bounces after ``soft_limit`` within ``soft_days`` with no delivery between (``soft_streak``);
policy rejections (about us), auto-replies and the unmatched suppress nobody. A relay's refusal
during sending (a RCPT-stage 5.1.x about the reader) takes the same path: ``refusal_row`` reads it
as a hard bounce matched to its delivery (``by="relay"``), ``decide`` gives its reason, and it is
recorded like returned mail (the relay's reply kept as its message), so ``bounces list``,
``digest status`` and ``/metrics`` count both alike. A mass suppression
is suspicious (a relay that bounced everything, a forged batch, a flood of webhook calls): when
the suppressions made within ``window`` (a day, or since the operator's last release), those held
and this run's together would be more than ``breaker_share`` of the list and at least
``breaker_minimum``, the run's suppressions are held and the run says so. Returned mail is then
neither recorded nor moved (it waits in its intake); a webhook's events, which the provider may
not send again (SNS gives up within minutes), are recorded with their suppression held
(``hold_by_recording``). ``bounces check --force`` applies both after a look and releases the
breaker: its window starts again.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from feedservice.bounce_model import BounceKind, BounceReading, BounceRow, ReturnedMail, soft_streak, status_kind
from feedservice.config_bounces import BouncesConfig
from feedservice.errors import FeedServiceError, IntakeError
from feedservice.model import Delivery
from feedservice.ports import BounceIntake, BounceStore
from feedservice.services.replies import SuppressionBreaker
from feedservice.verp import read_verp_address

__all__ = ["BounceCheck", "BouncePolicy", "CheckReport", "Decision", "Match", "decide", "refusal_row"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BouncePolicy:
    soft_limit: int = 3
    soft_days: int = 14
    breaker_share: float = 0.05
    breaker_minimum: int = 20
    trust_recipient: bool = True  # False when VERP is on: a named recipient alone suppresses nobody
    window: timedelta = timedelta(hours=24)  # the breaker counts suppressions across runs and calls within it
    hold_by_recording: bool = False  # held: record the events with their suppression held (webhooks)
    batch: int = 1000  # messages read per run: memory stays bounded, the rest waits for the next run

    @classmethod
    def configured(
        cls, config: BouncesConfig, *, provider_says: bool = False, hold_by_recording: bool = False
    ) -> BouncePolicy:
        """``[bounces]``'s policy. A recipient a bounce names is believed when VERP is off, or when
        ``provider_says``: every word of the events is their provider's (the call authenticated)."""
        trust = config.return_path is None or provider_says
        return cls(config.soft_limit, config.soft_days, trust_recipient=trust, hold_by_recording=hold_by_recording)


@dataclass(frozen=True)
class Match:
    subscriber_id: int
    edition: date | None
    by: str  # verp, message-id, recipient; relay: refused while sending, the delivery itself
    recipient: str | None = None


@dataclass
class CheckReport:
    hard: int = 0
    soft: int = 0
    complaints: int = 0
    auto_replies: int = 0
    unmatched: int = 0
    policy: int = 0  # rejections about how we send: fix the setup, nobody suppressed
    suppressed: int = 0
    known: int = 0  # recorded by an earlier run (only moved out of new/ now)
    held: str | None = None  # the breaker tripped: this run suppressed nobody
    withheld: int = 0  # recorded with their suppression held by the breaker (webhook events)
    released: int = 0  # held suppressions an operator's ``--force`` applied
    more: bool = False  # more mail is waiting than one run reads
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = (
            f"{self.hard} hard, {self.soft} soft, {self.complaints} complaints, {self.auto_replies} auto-replies, "
            f"{self.unmatched} unmatched; {self.suppressed} suppressed"
        )
        if self.policy:
            text += f"; {self.policy} refused by policy (about how we send: nobody suppressed)"
        if self.withheld:
            text += f"; {self.withheld} suppressions held by the breaker"
        if self.released:
            text += f"; {self.released} held suppressions released"
        if self.known:
            text += f"; {self.known} read before"
        if self.more:
            text += "; more mail is waiting: the next run goes on"
        for line in (self.held, *self.errors):
            if line:
                text += f"\n{line}"
        return text


@dataclass(frozen=True)
class _Item:
    intake: BounceIntake
    mail: ReturnedMail
    digest: str
    reading: BounceReading
    match: Match | None


@dataclass(frozen=True)
class Decision:
    counted: str  # the report's counter: hard, soft, complaints, auto_replies, unmatched, policy
    action: str
    suppress: str | None = None
    held: str | None = None  # the suppression the breaker holds until an operator releases it


def decide(reading: BounceReading, match: Match | None, streak: int, policy: BouncePolicy) -> Decision:
    """What one message does, given the reader's soft streak including it. Pure."""
    kind = reading.kind
    if kind is BounceKind.AUTO_REPLY:
        return Decision("auto_replies", "ignored: an auto-reply")
    if kind is BounceKind.UNKNOWN:
        return Decision("unmatched", "kept for a person: not a bounce, complaint or auto-reply")
    if match is None:
        return Decision("unmatched", f"kept for a person: a {kind.value} that names no delivery of ours")
    if match.by == "recipient" and not policy.trust_recipient:
        return Decision("unmatched", "kept for a person: names a reader only by address, without our VERP token")
    what = (reading.status or "no code") + (f": {reading.detail}" if reading.detail else "")
    if kind is BounceKind.POLICY:
        return Decision("policy", f"none: refused by policy, about how we send: {what}")
    if kind is BounceKind.HARD:
        return Decision("hard", "suppressed", f"hard bounce {what}")
    if kind is BounceKind.COMPLAINT:
        return Decision("complaints", "suppressed", f"complaint: {reading.detail or 'feedback'}")
    if streak >= policy.soft_limit:
        reason = f"{streak} soft bounces within {policy.soft_days} days, no delivery between; last: {what}"
        return Decision("soft", "suppressed", reason)
    return Decision("soft", f"counted: soft bounce {streak} of {policy.soft_limit}")


def bounce_row(
    digest: str,
    received: datetime,
    source: str,
    raw: bytes,
    reading: BounceReading,
    match: Match | None,
    decision: Decision,
) -> BounceRow:
    """What is recorded of one message and what it does; an unmatched one names no reader."""
    trusted = match if decision.counted != "unmatched" else None
    return BounceRow(
        digest=digest,
        received=received,
        source=source,
        kind=reading.kind,
        raw=raw,
        edition=trusted.edition if trusted else None,
        subscriber_id=trusted.subscriber_id if trusted else None,
        matched_by=trusted.by if trusted else None,
        recipient=(match.recipient if match else None) or (reading.recipients[0] if reading.recipients else None),
        status=reading.status,
        detail=reading.detail,
        subject=reading.subject,
        action=decision.action,
        suppress=decision.suppress,
        held=decision.held,
    )


_CODE = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")


def refusal_row(delivery: Delivery, reply: str, now: datetime, policy: BouncePolicy | None = None) -> BounceRow:
    """A relay's permanent refusal of ``delivery`` while sending (``550 5.1.1 …`` to RCPT TO), as
    the same record and suppression a returned hard bounce makes. Its message is the reply itself,
    with the edition and Message-ID it refused (not the address: a suppressed one is forgotten)."""
    found = _CODE.search(reply)
    status = found[1] if found else None
    kind = status_kind(status) if status else None
    detail = " ".join(reply.split())[:300]
    reading = BounceReading(kind or BounceKind.HARD, status=status, detail=detail)
    match = Match(delivery.subscriber_id, delivery.edition, "relay")
    raw = (
        f"Refused by the relay while sending\nEdition: {delivery.edition}\nMessage-ID: {delivery.message_id}\n"
        f"Reply: {detail}\n"
    ).encode()
    decision = decide(reading, match, 0, policy or BouncePolicy())
    return bounce_row(
        hashlib.sha256(raw).hexdigest(), now, f"relay:{delivery.edition}/{delivery.id}", raw, reading, match, decision
    )


class BounceCheck:
    """One pass over every intake."""

    def __init__(
        self,
        store: BounceStore,
        intakes: Sequence[BounceIntake],
        read: Callable[[bytes], BounceReading],
        secrets: Sequence[bytes],
        clock: Callable[[], datetime],
        policy: BouncePolicy,
    ) -> None:
        self.store, self.intakes, self.read, self.secrets = store, intakes, read, secrets
        self.clock, self.policy = clock, policy
        self.report = CheckReport()

    def run(self, *, force: bool = False) -> CheckReport:
        try:
            return self._run(force)
        finally:
            for intake in self.intakes:
                intake.close()

    def _run(self, force: bool) -> CheckReport:
        if force:
            self.report.released = self.store.release_held_bounces(self.clock())
        items = self._gather()
        now = self.clock()
        decisions = self._decide(items, now)
        to_suppress = sum(1 for d in decisions if d.suppress)
        window = self.store.breaker_window(now, self.policy.window)
        before = window.suppressed + window.held  # across runs and webhook calls
        breaker = SuppressionBreaker(
            self.store.subscribed_count() + window.suppressed, self.policy.breaker_share, self.policy.breaker_minimum
        )
        if to_suppress and breaker.observe(before + to_suppress) and not force:
            earlier = f" (and {before} more since {window.since:%Y-%m-%d %H:%M} UTC)" if before else ""
            kept = (
                "its events were recorded, their suppressions held"
                if self.policy.hold_by_recording
                else "nothing was recorded or moved"
            )
            self.report.held = (
                f"held: this run would suppress {to_suppress} of {breaker.recipients} subscribers{earlier}, more "
                f"than {breaker.share:.0%}: a broken relay or a forged batch is likelier than that many dead "
                f"mailboxes, so {kept}; look (`feedservice bounces list`), then run "
                "`feedservice bounces check --force`"
            )
            log.error("bounces: %s", self.report.held)
            if not self.policy.hold_by_recording:
                return self.report
            decisions = [
                Decision(d.counted, f"held by the breaker: {d.suppress}", None, d.suppress) if d.suppress else d
                for d in decisions
            ]
        for item, decision in zip(items, decisions, strict=True):
            self._record(item, decision, now)
        return self.report

    # -- gather --------------------------------------------------------------------------------
    def _gather(self) -> list[_Item]:
        """At most ``policy.batch`` new messages (a flood of bounces is read over several runs)."""
        items: list[_Item] = []
        for intake in self.intakes:
            try:
                for mail in intake.pending():
                    if len(items) >= self.policy.batch:
                        self.report.more = True
                        return items
                    digest = hashlib.sha256(mail.raw).hexdigest()
                    if self.store.bounce_known(digest):  # recorded before; the move was lost
                        intake.done(mail, matched=True)
                        self.report.known += 1
                        continue
                    reading = self.read(mail.raw)
                    items.append(_Item(intake, mail, digest, reading, self._match(reading)))
            except FeedServiceError as exc:  # this intake's failure; the others are still read
                self.report.errors.append(str(exc) if isinstance(exc, IntakeError) else f"{intake.name}: {exc}")
                log.error("bounces: reading %s failed: %s", intake.name, exc)
        return items

    def _match(self, reading: BounceReading) -> Match | None:
        if reading.kind in (BounceKind.UNKNOWN, BounceKind.AUTO_REPLY):
            return None
        for address in reading.envelope:
            ref = read_verp_address(self.secrets, address)
            if ref is not None and self.store.get_subscriber_by_id(ref.subscriber_id) is not None:
                return Match(ref.subscriber_id, ref.edition, "verp")
        found = self.store.delivery_by_message_id(reading.original_ids)
        if found is not None:
            return Match(found[1], found[0], "message-id")
        for recipient in reading.recipients:
            sub = self.store.get_subscriber(recipient)
            if sub is not None:
                return Match(sub.id, None, "recipient", recipient)
        return None

    # -- decide --------------------------------------------------------------------------------
    def _decide(self, items: list[_Item], now: datetime) -> list[Decision]:
        since = now - timedelta(days=self.policy.soft_days)
        history: dict[int, tuple[list[date | None], list[date]]] = {}
        decisions = []
        for item in items:
            streak = 0
            if item.reading.kind is BounceKind.SOFT and item.match is not None:
                sid = item.match.subscriber_id
                if sid not in history:
                    history[sid] = self.store.soft_history(sid, since)
                soft, clean = history[sid]
                soft.append(item.match.edition)  # this run's soft bounces count with the stored ones
                streak = soft_streak(soft, clean)
            decisions.append(decide(item.reading, item.match, streak, self.policy))
        return decisions

    # -- record --------------------------------------------------------------------------------
    def _record(self, item: _Item, decision: Decision, now: datetime) -> None:
        matched = decision.counted != "unmatched"
        row = bounce_row(item.digest, now, item.mail.source, item.mail.raw, item.reading, item.match, decision)
        try:
            self.store.record_bounce(row)
            item.intake.done(item.mail, matched=matched)
        except FeedServiceError as exc:  # left in new/ (or known, if recorded): the next run goes on
            self.report.errors.append(f"{item.mail.source}: {exc}")
            log.error("bounces: %s not recorded: %s", item.mail.source, exc)
            return
        setattr(self.report, decision.counted, getattr(self.report, decision.counted) + 1)
        if decision.held:
            self.report.withheld += 1
        if decision.suppress:
            self.report.suppressed += 1
            log.info("bounces: reader %s suppressed: %s", row.subscriber_id, decision.suppress)
        if decision.counted == "policy":
            log.error("bounces: %s", decision.action)
