"""What one sending run is given (``DrainSettings``, from ``[delivery]``: ``drain_settings``) and
what it reports (``SendReport``)."""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from feedservice.config import DeliveryConfig
from feedservice.model import DeliveryStatus
from feedservice.services.pacing import LaneRule
from feedservice.services.replies import Outcome

__all__ = ["DrainSettings", "SendReport", "drain_settings"]

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
    paused: str | None = None  # the edition is paused (until `digest send`): why
    stopped: str | None = None  # this run stopped early (the relay refused us, a signal): why
    domains_paused: dict[str, datetime] = field(default_factory=dict)  # lanes this run paused: until
    errors: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    signing_cpu: float = 0.0  # CPU seconds DKIM signing took outside this process (the signing process)
    signing_failure: str | None = None  # why the signing process was given up, if it was

    def count(self, outcome: Outcome) -> None:
        """Count one message's outcome; a reader held back for suppression is counted (failed and
        suppressed, or deferred) when the run settles them (``refusals``)."""
        if outcome.status is DeliveryStatus.SENT:
            self.sent += 1
        elif outcome.status is DeliveryStatus.DEFERRED:
            self.deferred += 1
        elif not outcome.suppress:
            self.failed += 1
        if outcome.policy:
            self.policy += 1

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
        for lane, until in sorted(self.domains_paused.items()):
            extra.append(f"{lane} throttled us: paused until {until:%H:%M:%S} UTC, its messages deferred")
        if self.signing_failure:
            extra.append(f"DKIM signing process given up ({self.signing_failure}): signed on the event loop")
        return (
            f"{self.sent} sent, {self.deferred} deferred, {self.failed} failed "
            f"({self.queued} newly queued, {self.skipped_empty} with nothing new skipped"
            + "".join(f"; {e}" for e in extra)
            + f"; {self.rate:.0f} messages/s)"
            + (f"\n{self.paused or self.stopped}" if self.paused or self.stopped else "")
        )


@dataclass
class DrainSettings:
    worker: str
    pool_size: int = 4
    rate: float = 0.0
    lease: timedelta = timedelta(seconds=60)
    expires: timedelta = timedelta(hours=6)
    wait_for_others: bool = True
    shutdown_timeout: float = 30.0  # seconds a cancelled run gives the messages in flight
    breaker_share: float = 0.05  # pause rather than suppress more than this share of an edition…
    breaker_minimum: int = 20  # …and at least this many readers in one run
    lanes: tuple[LaneRule, ...] = ()  # [delivery.domains]: per-provider limits
    domain_pause: timedelta = timedelta(seconds=300)  # the first pause after a throttle


def drain_settings(delivery: DeliveryConfig, shutdown_timeout: float) -> DrainSettings:
    """A run's settings from ``[delivery]`` (and ``[run] shutdown_timeout``), under a worker name
    of its own (host, process, a random tail) that its claims on the ledger carry."""
    smtp = delivery.smtp if delivery.effective_mode == "smtp" else None
    return DrainSettings(
        worker=f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}",
        pool_size=smtp.pool_size if smtp else 2,
        rate=smtp.rate_limit if smtp else 0.0,
        lease=timedelta(seconds=delivery.lease_seconds),
        expires=timedelta(hours=delivery.expire_hours),
        shutdown_timeout=shutdown_timeout,
        lanes=tuple(
            LaneRule(name, domains, p.concurrency, p.per_minute)
            for name, (domains, p) in delivery.domain_groups().items()
        ),
        domain_pause=timedelta(seconds=delivery.domain_pause_seconds),
    )
