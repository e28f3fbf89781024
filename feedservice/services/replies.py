"""What a relay's answer means for one delivery: pure rules, no I/O (``deliver`` does the doing).

    reply about us (connect, EHLO, STARTTLS, AUTH, MAIL FROM, 421)  → the run stops; nobody is marked
    5xx about the recipient, not mailbox-full                      → failed (5.1.x: suppress the reader)
    552 / 5.2.2 (mailbox full), 4xx, timeouts, dropped connections → deferred, with backoff, until expiry

A refusal that is a mailbox provider slowing us down — ``421``, an x.7.x policy code with a
temporary 4xx, or "too many" in its text, in reply to one recipient — is ``throttled``: the
recipient's domain pauses (``next_pause``) and its messages wait, while other domains go on.

A mass suppression is suspicious: a relay that answers 550 5.1.1 to everyone is broken, not
every reader gone. ``SuppressionBreaker`` counts the suppressions an edition's runs would make and
trips when they exceed a share of the edition (and a minimum count); the run then pauses instead.
The count is the edition's, kept in the store, so k workers draining one edition together trip at
the same total one would, not at k times it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from feedservice.errors import DeliveryError
from feedservice.model import DeliveryStatus, DomainPause

RETRY_BASE = timedelta(minutes=5)
MAX_RETRY = timedelta(hours=1)
MAX_DOMAIN_PAUSE = timedelta(hours=1)


def retry_time(now: datetime, attempts: int) -> datetime:
    """Exponential backoff from 5 minutes, capped at an hour."""
    factor: int = 2**attempts  # typeshed types int ** int as Any (a negative power is a float)
    return now + min(RETRY_BASE * factor, MAX_RETRY)


@dataclass(frozen=True)
class Outcome:
    """How one delivery ends this time."""

    status: DeliveryStatus
    reply: str
    retry: datetime | None = None
    suppress: bool = False  # a permanent 5.1.x about this reader's mailbox or domain
    policy: bool = False  # an x.7.x rejection: about how we send, not about the reader


def mailbox_full(exc: DeliveryError) -> bool:
    """552 or 5.2.2: the mailbox is full, which passes (RFC 3463 §3.3; RFC 5321 treats 552 as 452)."""
    return exc.code == 552 or exc.enhanced == "5.2.2"


def classify(exc: DeliveryError, *, now: datetime, deadline: datetime, attempts: int) -> Outcome:
    """The outcome of a refusal about the recipient (``SendingStopped`` never gets here)."""
    enhanced = exc.enhanced or ""
    policy = enhanced[1:].startswith(".7.")
    if exc.permanent and not mailbox_full(exc):
        return Outcome(DeliveryStatus.FAILED, str(exc), suppress=enhanced.startswith("5.1."), policy=policy)
    if now >= deadline:
        return Outcome(DeliveryStatus.FAILED, f"expired after retries: {exc}", policy=policy)
    return Outcome(DeliveryStatus.DEFERRED, str(exc), retry_time(now, attempts), policy=policy)


def throttled(exc: DeliveryError) -> bool:
    """A temporary refusal that says we send too much or too fast to this recipient's provider.

    Naver's ``421 4.3.1``/``4.3.2``, temporary ``4.7.x`` rate limits (Gmail's ``4.7.32``), and
    any "too many …" wording. Permanent refusals never are (5.7.x is a policy rejection).
    """
    if exc.permanent:
        return False
    text = str(exc).lower()
    return exc.code == 421 or (exc.enhanced or "").startswith("4.7.") or "too many" in text


def next_pause(previous: DomainPause | None, lane: str, reason: str, *, now: datetime, base: timedelta) -> DomainPause:
    """The pause a throttle starts: ``base``, doubled for each throttle in a row, at most an hour.

    A throttle while the lane is paused (other messages were in flight) is the same episode and
    changes nothing; one within an hour of the last pause's end is a repeat and doubles it; later,
    the count starts again.
    """
    if previous is not None and now < previous.until:
        return previous
    repeat = previous is not None and now < previous.until + MAX_DOMAIN_PAUSE
    strikes = previous.strikes + 1 if repeat and previous is not None else 1
    length = min(base * 2 ** min(strikes - 1, 16), max(MAX_DOMAIN_PAUSE, base))
    return DomainPause(lane, now + length, strikes, reason)


@dataclass
class SuppressionBreaker:
    """Trips when an edition would suppress more than ``share`` of ``recipients`` and at least ``minimum``.

    ``add`` counts in this object (one process); ``observe`` takes the edition's total from the
    store, shared by every worker sending it."""

    recipients: int
    share: float = 0.05
    minimum: int = 20
    count: int = 0
    tripped: bool = False

    def add(self) -> bool:
        """Count one more suppression this run would make; True once the breaker has tripped."""
        return self.observe(self.count + 1)

    def observe(self, total: int) -> bool:
        """Take the edition's count of held-back suppressions; True once the breaker has tripped."""
        self.count = max(self.count, total)
        if self.count >= self.minimum and self.count > self.share * self.recipients:
            self.tripped = True
        return self.tripped

    def reason(self) -> str:
        return (
            f"paused: {self.count} of {self.recipients} recipients were refused as unknown (5.1.x) in this edition, "
            f"more than {self.share:.0%}: the relay is more likely wrong than the list, so nobody was suppressed"
        )
