"""What the services need from the outside world, as Protocols.

Adapters in ``feedservice.adapters`` provide these; ``feedservice.bootstrap`` wires
them together. Services import only this module, ``model`` and ``errors``.
"""

from __future__ import annotations

from asyncio import Future
from collections.abc import Iterator, Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from feedservice.bounce_model import BounceRow, BreakerWindow, ProviderEvent, ReturnedMail
from feedservice.model import (
    Article,
    Delivery,
    DeliveryStatus,
    DomainPause,
    Edition,
    FetchRecord,
    FetchResult,
    Forecast,
    Observation,
    ParsedFeed,
    SourceState,
    Subscriber,
    SubscriberStatus,
)


class Fetcher(Protocol):
    async def fetch(self, url: str, *, etag: str | None = None, last_modified: str | None = None) -> FetchResult:
        """GET ``url`` conditionally; raise ``FetchError`` on any failure."""
        ...

    async def aclose(self) -> None: ...


class FeedParser(Protocol):
    def __call__(
        self,
        content: bytes,
        *,
        url: str,
        section: str,
        tz: ZoneInfo,
        now: datetime,
        headers: Mapping[str, str] | None = None,
        max_entries: int = 500,
    ) -> ParsedFeed:
        """Feed bytes → Articles (the ``max_entries`` newest); raise ``ParseError`` when they are not a usable feed."""
        ...


class WeatherProvider(Protocol):
    name: str

    async def observe(self, station_ids: Sequence[int], now: datetime) -> list[Observation]:
        """The latest observation per station; raise ``WeatherError`` when the provider fails."""
        ...


class ForecastProvider(Protocol):
    name: str

    async def forecast(self, station_ids: Sequence[int], now: datetime) -> list[Forecast]:
        """Today's forecast per station; raise ``WeatherError`` when the provider fails."""
        ...


class Mailer(Protocol):
    async def send(self, sender: str, recipient: str, message: bytes) -> str:
        """Hand one message over; return the server's reply. Raise ``DeliveryError``."""
        ...

    async def aclose(self) -> None: ...


class MessageSigner(Protocol):
    """DKIM: a message under its signature header(s), CRLF line endings throughout."""

    def sign(self, message: bytes) -> bytes: ...

    def sign_parts(self, head: bytes, body: Sequence[bytes]) -> bytes:
        """``head + b"".join(body)`` signed; pieces repeated across messages may be worked on once."""
        ...


class RunSigner(Protocol):
    """DKIM for one sending run: awaited per message, so the signing may run in another process
    while the loop goes on sending (``adapters/dkim_process.py``)."""

    failure: str | None  # why signing elsewhere was given up in this run (then: on the loop), if it was

    def sign_parts(self, head: bytes, body: Sequence[bytes]) -> Future[bytes]:
        """Ask now for ``head + b"".join(body)`` signed (as ``MessageSigner.sign_parts``); the future
        has it. It never fails for want of a helper (it signs here instead); cancel what is not needed."""
        ...

    async def aclose(self) -> float:
        """End what the run started; the CPU seconds signing took outside this process (0: none)."""
        ...


class SourceStore(Protocol):
    """What the collector needs from storage."""

    def list_sources(self, *, with_counts: bool = True) -> list[SourceState]: ...

    def record_fetch_failure(self, url: str, error: str, now: datetime, next_attempt: datetime) -> None: ...

    def record_fetches(self, records: Sequence[FetchRecord], now: datetime) -> list[tuple[int, int, int]]:
        """(new, updated, owned by another source) article counts per record."""
        ...

    def disable_source(self, url: str, error: str, now: datetime) -> None: ...


class HealthStore(Protocol):
    """What the readiness rule reads (``services/readiness.py``)."""

    def ping(self) -> bool:
        """Whether the database answers."""
        ...

    def list_sources(self, *, with_counts: bool = True) -> list[SourceState]: ...


class WeatherStore(Protocol):
    def save_observations(self, observations: Sequence[Observation], fetched_at: datetime) -> None: ...

    def latest_observations(
        self, station_ids: Sequence[int], before: datetime | None = None
    ) -> dict[int, Observation]: ...


class EditionStore(Protocol):
    def get_edition(self, day: date) -> tuple[Edition, str, str] | None: ...

    def last_edition_before(self, day: date) -> Edition | None: ...

    def articles_carried(self, since: date, before: date) -> set[str]: ...

    def articles_for_edition(self, after: datetime, until: datetime, published_since: datetime) -> list[Article]: ...

    def save_edition(
        self, edition: Edition, html: str, text: str, now: datetime, article_ids: Sequence[str] = ()
    ) -> bool: ...


class JobStore(Protocol):
    """Runs of the scheduled jobs, for ``/metrics`` and ``feedservice status``."""

    def job_started(self, job: str, now: datetime) -> int: ...

    def job_finished(self, run_id: int, status: str, now: datetime, detail: str | None = None) -> None: ...


class SubscriberStore(Protocol):
    def get_subscriber(self, email: str) -> Subscriber | None: ...

    def add_subscriber(
        self,
        email: str,
        sections: Sequence[str],
        status: SubscriberStatus,
        now: datetime,
        created: datetime | None = None,
        *,
        reason: str = ...,
    ) -> tuple[Subscriber, bool]:
        """Insert or update by address; one that becomes suppressed has ``reason`` recorded."""

    def keep_forgotten(
        self,
        email_hash: str,
        status: SubscriberStatus,
        sections: Sequence[str],
        created: datetime,
        *,
        now: datetime | None = None,
        reason: str = ...,
    ) -> bool:
        """A forgotten address (hash only); a suppressed one has ``reason`` recorded at ``now``."""

    def set_subscriber_status(
        self, subscriber: int | str, status: SubscriberStatus, sections: Sequence[str] | None = None
    ) -> bool:
        """By id, or by address; False if there is no such subscriber."""

    def iter_subscribers(self, status: SubscriberStatus | None = None, batch: int = 1000) -> Iterator[Subscriber]: ...


class SignupStore(SubscriberStore, Protocol):
    def get_subscriber_by_id(self, subscriber_id: int) -> Subscriber | None: ...

    def start_confirmation(self, subscriber_id: int, nonce: str, now: datetime) -> None: ...

    def consume_confirmation(self, subscriber_id: int, nonce: str, now: datetime) -> bool: ...


class DeliveryStore(SubscriberStore, Protocol):
    """The delivery ledger, plus the subscriber look-ups sending needs."""

    def enqueue_deliveries(self, day: date, rows: Sequence[tuple[int, str, str]], now: datetime) -> int: ...

    def claim_deliveries(
        self, day: date, now: datetime, limit: int, worker: str, lease: timedelta
    ) -> list[tuple[Delivery, Subscriber | None]]: ...

    def release_deliveries(self, ids: Sequence[int], worker: str, now: datetime) -> None: ...

    def requeue_deliveries(self, ids: Sequence[int], now: datetime) -> None: ...

    def delivery_counts(self, day: date) -> dict[str, int]: ...

    def sending_paused(self, day: date) -> str | None: ...

    def resume_sending(self, day: date) -> bool: ...

    def pause_sending(self, day: date, reason: str, now: datetime) -> None: ...

    def hold_suppression(self, day: date) -> int: ...

    def held_suppressions(self, day: date) -> int: ...

    def next_reclaim(self, day: date, lease: timedelta) -> datetime | None: ...

    def domain_pauses(self) -> list[DomainPause]: ...

    def save_domain_pause(self, pause: DomainPause) -> None: ...

    def record_bounce(self, row: BounceRow) -> bool:
        """A relay's refusal while sending, recorded (and its suppression) as returned mail is."""
        ...

    def mark_deliveries(
        self, outcomes: Sequence[tuple[int, DeliveryStatus, str | None, datetime | None]], now: datetime
    ) -> None: ...


class BounceIntake(Protocol):
    """Where returned mail arrives (a Maildir the MTA delivers into, an IMAP folder)."""

    name: str

    def pending(self) -> Iterator[ReturnedMail]:
        """Every message not yet handled."""
        ...

    def done(self, mail: ReturnedMail, *, matched: bool) -> None:
        """Mark a message handled (it is never deleted); ``matched`` False flags it for a person."""
        ...

    def close(self) -> None:
        """Release what ``pending`` opened (a server connection); called once the pass is over."""
        ...


class WebhookReceiver(Protocol):
    """A provider's webhook (``POST /webhooks/{name}``): believes a call only when the provider
    signed it, and turns what it reports into bounce events (``adapters/bounces/webhooks.py``)."""

    name: str

    def admit(self, headers: Mapping[str, str]) -> None:
        """Checked before the body is read: raise ``WebhookRefused`` for a caller not let in at all
        (Postmark's Basic credentials), so a stranger's call costs nothing; signed providers admit all."""
        ...

    async def receive(self, headers: Mapping[str, str], raw: bytes, body: Any) -> list[ProviderEvent]:
        """The call's bounces and complaints (none: nothing to apply, e.g. a delivery notice).
        ``headers`` are looked up by lower-case name, ``body`` is ``raw`` as JSON. Each event says
        whether the call was fresh and whether its recipient is the provider's word. Raise
        ``WebhookRefused`` when the call is not believed, not understood or cannot be answered now."""
        ...


class BounceStore(Protocol):
    """What reading returned mail needs from storage."""

    def bounce_known(self, digest: str) -> bool: ...

    def record_bounce(self, row: BounceRow) -> bool: ...

    def delivery_by_message_id(self, message_ids: Sequence[str]) -> tuple[date, int] | None: ...

    def get_subscriber(self, email: str) -> Subscriber | None: ...

    def get_subscriber_by_id(self, subscriber_id: int) -> Subscriber | None: ...

    def soft_history(self, subscriber_id: int, since: datetime) -> tuple[list[date | None], list[date]]: ...

    def subscribed_count(self) -> int: ...

    def breaker_window(self, now: datetime, length: timedelta) -> BreakerWindow: ...

    def release_held_bounces(self, now: datetime) -> int: ...
