"""What a piece of returned mail says, and what it means for a reader: pure, no I/O.

kind        what it is                                          what it does to the reader
hard        5.x.x about the recipient (5.1.x address, 5.2.x     suppressed at once
            mailbox, and the 5.0.0, 5.3.0, 5.4.x MTAs write
            for "no such user")
soft        4.x.x, 5.2.2 (mailbox full)                         suppressed after ``soft_limit``
                                                                within ``soft_days``, no delivery between
policy      5.7.x, 5.6.x, 5.3.4, 5.2.3: about us (auth,         nothing: logged, a sender problem
            reputation, DMARC, our message's size or form)      (fixtures README B2)
complaint   an ARF report (RFC 5965): the reader pressed spam   suppressed at once, counted apart
auto-reply  RFC 3834 ``Auto-Submitted``, vacation, 부재중        nothing
unknown     none of these                                      nothing; kept raw for a person
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

__all__ = [
    "BounceKind",
    "BounceReading",
    "BounceRecord",
    "BounceRow",
    "BreakerWindow",
    "EditionFeedback",
    "ProviderEvent",
    "ReturnedMail",
    "soft_streak",
    "status_kind",
]


class BounceKind(StrEnum):
    HARD = "hard"
    SOFT = "soft"
    POLICY = "policy"
    COMPLAINT = "complaint"
    AUTO_REPLY = "auto-reply"
    UNKNOWN = "unknown"


_STATUS = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})")
# About our message or how we send (RFC 3463): security or policy (5.7.x), media (5.6.x),
# too big for the system (5.3.4) or the mailbox (5.2.3).
_ABOUT_US_SUBJECTS = {"6", "7"}
_ABOUT_US = {("3", "4"), ("2", "3")}


def status_kind(status: str) -> BounceKind | None:
    """The kind of failure an RFC 3463 status code reports; None for success (2.x.x) or no code."""
    m = _STATUS.fullmatch(status.strip())
    if m is None or m[1] == "2":
        return None
    if m[1] == "4" or (m[2], m[3]) == ("2", "2"):
        return BounceKind.SOFT
    if m[2] in _ABOUT_US_SUBJECTS or (m[2], m[3]) in _ABOUT_US:
        return BounceKind.POLICY
    return BounceKind.HARD


@dataclass(frozen=True)
class BounceReading:
    """What one piece of mail to the bounce address says, before it is matched to a delivery."""

    kind: BounceKind
    recipients: tuple[str, ...] = ()  # the original recipients it reports, as written there
    status: str | None = None  # RFC 3463 code, if it gives one
    detail: str = ""  # the diagnostic, or the feedback type of a complaint: one line, bounded
    envelope: tuple[str, ...] = ()  # addresses that may carry our VERP token (To, Delivered-To, …)
    original_ids: tuple[str, ...] = ()  # Message-IDs of the message it is about
    subject: str = ""


@dataclass(frozen=True)
class BounceRecord:
    """A stored piece of returned mail, matched or not (``bounces list``)."""

    id: int
    received: datetime
    source: str
    kind: BounceKind
    edition: date | None
    subscriber_id: int | None
    recipient: str | None
    status: str | None
    detail: str
    action: str
    subject: str


@dataclass(frozen=True)
class ReturnedMail:
    """One message as an intake holds it: its bytes and where it is (for ``done``)."""

    source: str  # "maildir:<folder>/new/<name>"
    raw: bytes
    key: str  # the intake's own name for it


@dataclass(frozen=True)
class ProviderEvent:
    """A bounce or complaint a provider reported over HTTP (a webhook call), already read."""

    source: str  # "webhook:<provider>/<the provider's event id>": recorded, so a replay changes nothing
    raw: bytes  # the event as kept for a person
    reading: BounceReading
    fresh: bool = True  # the call's timestamp is within its provider's max age: a new event is believed
    # The whole call is authenticated (SNS and SendGrid sign the body, Postmark's credentials come
    # over HTTPS), so the recipient it names is the provider's word, believed with VERP on. Mailgun
    # signs only a timestamp and a token: its recipient is not.
    provider_says: bool = False


@dataclass(frozen=True)
class BounceRow:
    """One piece of returned mail to record, and what it does."""

    digest: str
    received: datetime
    source: str
    kind: BounceKind
    raw: bytes
    edition: date | None = None
    subscriber_id: int | None = None
    matched_by: str | None = None
    recipient: str | None = None
    status: str | None = None
    detail: str = ""
    subject: str = ""
    action: str = "none"
    suppress: str | None = None  # the reason, when this message suppresses its reader
    held: str | None = None  # the reason of a suppression the breaker holds until an operator releases it


@dataclass(frozen=True)
class BreakerWindow:
    """What the bounce breaker has counted since ``since`` (a day ago, or the operator's last
    release if later): suppressions made from returned mail and webhooks, and those it holds."""

    since: datetime
    suppressed: int
    held: int

    def summary(self) -> str:
        text = f"{self.suppressed} suppressed by bounces and complaints since {self.since:%Y-%m-%d %H:%M} UTC"
        if self.held:
            text += (
                f"; {self.held} more held by the breaker: look (`feedservice bounces list`), then "
                "`feedservice bounces check --force` applies them"
            )
        return text


def soft_streak(soft: list[date | None], clean: list[date]) -> int:
    """How many soft bounces count against a reader: one per edition that bounced after the last
    edition that reached them before the newest bounce (a delivery "between" resets the count);
    a bounce whose edition is unknown counts once. Editions sent after the newest bounce do not
    reset it: their bounces may still be on the way."""
    known = {e for e in soft if e is not None}
    if known:
        newest = max(known)
        reset = max((c for c in clean if c < newest), default=None)
        if reset is not None:
            known = {e for e in known if e > reset}
    return len(known) + sum(1 for e in soft if e is None)


COMPLAINT_WARNING = 0.001  # Gmail's and Naver's guidance: stay under 0.1%, never reach 0.3%


@dataclass(frozen=True)
class EditionFeedback:
    """What came back from one edition. Bounces and complaints count readers (once each, matched to
    this edition); unsubscribes count readers who left with this edition their last one. ``refused``:
    readers the relay refused while sending (5.1.x to RCPT TO), counted in ``hard`` but never
    delivered, so a bounce rate is a share of the messages sent (delivered or refused), a complaint
    or unsubscribe rate a share of those delivered."""

    delivered: int
    hard: int
    soft: int
    complaints: int
    unsubscribes: int
    refused: int = 0

    def rate(self, n: int, *, of_sent: bool = False) -> float:
        whole = self.delivered + (self.refused if of_sent else 0)
        return n / whole if whole else 0.0

    def kind_rate(self, kind: str) -> float:
        """The rate of ``hard``, ``soft``, ``complaints`` or ``unsubscribes``, each over its own whole."""
        return self.rate(getattr(self, kind), of_sent=kind in ("hard", "soft"))

    @property
    def warning(self) -> str | None:
        share = self.rate(self.complaints)
        if self.complaints and share >= COMPLAINT_WARNING:
            return (
                f"complaints reached {share:.2%} of this edition: Gmail and Naver ask bulk senders to stay "
                "under 0.1% and never reach 0.3%"
            )
        return None

    def summary(self) -> str:
        def part(kind: str, what: str) -> str:
            return f"{getattr(self, kind)} {what} ({self.kind_rate(kind):.2%})"

        refused = f" (+{self.refused} refused while sending)" if self.refused else ""
        return (
            f"{self.delivered} delivered{refused}, {part('hard', 'hard bounces')}, "
            f"{part('soft', 'soft bounces')}, {part('complaints', 'complaints')}, "
            f"{part('unsubscribes', 'unsubscribes')}"
        )
