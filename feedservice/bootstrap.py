"""Settings → concrete adapters and ready-to-call jobs. The only module that picks adapters.

Everything else receives what it needs from an ``App``; tests build an ``App`` from
their own settings (and may replace ``clock``). Adapters only some commands use (aiohttp's, the
parsers, the bounce readers and webhooks) are imported where built: every CLI process imports
this module, and aiohttp alone (its TLS context) costs it ~0.3 s of CPU.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import SecretStr

import feedservice
from feedservice.adapters.bounces.events import EventIntake
from feedservice.adapters.mail_setup import configured_mailer, configured_run_signer, configured_signer
from feedservice.adapters.parser_pool import ParserPool
from feedservice.adapters.store import Store, open_store
from feedservice.addresses import wire_mailbox
from feedservice.bounce_model import BounceReading, BreakerWindow, ProviderEvent
from feedservice.config import Settings
from feedservice.model import Delivery, Edition, Route, Section, Subscriber, WeatherBlock
from feedservice.ports import BounceIntake, Mailer, MessageSigner, RunSigner, WeatherProvider, WebhookReceiver
from feedservice.services import bounces as bounce_service
from feedservice.services import collect as collect_service
from feedservice.services import deliver, digest, editions, feeds, weather
from feedservice.services import readiness as readiness_service
from feedservice.services.send_run import drain_settings
from feedservice.services.sending import Progress, Sending
from feedservice.tokens import make_token
from feedservice.verp import envelope_sender

if TYPE_CHECKING:
    from feedservice.adapters.http import HttpFetcher

log = logging.getLogger("feedservice")


def _bundled_templates() -> Path:
    """The templates shipped with the package: ``feedservice/templates`` in an installed wheel
    (pyproject maps the top-level ``templates/`` there), else the source tree's ``templates/``."""
    package = Path(feedservice.__file__).resolve().parent  # the package, wherever this module sits in it
    installed = package / "templates"
    return installed if installed.is_dir() else package.parent / "templates"


BUNDLED_TEMPLATES = _bundled_templates()


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class App:
    """The configured adapters, and the service calls the CLI, the web app and the scheduler make."""

    settings: Settings
    store: Store
    signing_secret: SecretStr
    clock: Callable[[], datetime] = utcnow
    parsers: ParserPool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.parsers = ParserPool(self.settings.collect.parse_processes)

    # -- parts -------------------------------------------------------------------------------
    @property
    def sections(self) -> list[Section]:
        return [Section(s.slug, s.title, i) for i, s in enumerate(self.settings.sections)]

    @property
    def feed_site(self) -> feeds.FeedSite:
        s = self.settings
        return feeds.FeedSite(
            s.site.name,
            s.site.url,
            s.site.public_url,
            s.site.language,
            s.site.tz,
            s.collect.interval_minutes,
            s.feeds.websub_hub,
        )

    @property
    def digest_site(self) -> digest.DigestSite:
        s = self.settings
        return digest.DigestSite(
            name=s.site.name,
            url=s.site.url,
            public_url=s.site.public_url,
            language=s.site.language,
            tz=s.site.tz,
            sender=wire_mailbox(s.digest.from_),  # its domain in IDNA form, for every header and envelope
            postal_address=s.site.postal_address,
            subject_format=s.digest.subject,
            list_id=s.digest.list_id,
            max_per_section=s.digest.max_per_section,
            message_key=self.secret(),
        )

    @property
    def feeds_dir(self) -> Path:
        return self.settings.path(self.settings.feeds.output_dir)

    def secret(self) -> bytes:
        """The signing secret (``Settings.signing_secret``)."""
        return self.signing_secret.get_secret_value().encode()

    def verify_secrets(self) -> tuple[bytes, ...]:
        """The signing secret, then the retired ones (``[web] previous_secret_envs``): a link signed
        with any of them still verifies, so the secret can be rotated under mailed links."""
        return (self.secret(), *(s.get_secret_value().encode() for s in self.settings.retired_secrets()))

    def make_fetcher(self) -> HttpFetcher:
        from feedservice.adapters.http import configured_fetcher

        return configured_fetcher(self.settings.collect, self.settings.site.url)

    def weather_providers(self) -> list[WeatherProvider]:
        from feedservice.adapters.weather_sources import configured_providers

        return configured_providers(self.settings.weather, self.settings.secret)

    def make_mailer(self) -> Mailer:
        return configured_mailer(self.settings.delivery, self.settings.secret, self.settings.path)

    def signer(self) -> MessageSigner | None:
        """DKIM signing when ``[digest] dkim_selector`` is set (the key from ``dkim_key_env``)."""
        s = self.settings
        return configured_signer(s.digest, s.secret, s.source_path, self.digest_site.sender_domain)

    def run_signer(self) -> RunSigner | None:
        """DKIM for one sending run, where ``[delivery] dkim_signer`` says (a signing process by default)."""
        s = self.settings
        return configured_run_signer(s.delivery, s.digest, s.secret, s.source_path, self.digest_site.sender_domain)

    def renderer(self) -> digest.DigestRenderer:
        dirs = []
        if self.settings.digest.templates_dir:
            dirs.append(self.settings.path(self.settings.digest.templates_dir))
        dirs.append(BUNDLED_TEMPLATES)
        return digest.DigestRenderer(dirs)

    # -- jobs --------------------------------------------------------------------------------
    def sync_config(self) -> None:
        self.store.sync_sections(self.sections)
        self.store.sync_sources((s.url, s.section, s.name) for s in self.settings.sources)

    def parser_pool(self) -> ProcessPoolExecutor | None:
        """The parser processes' executor, or None to parse in threads (``adapters.parser_pool``)."""
        return self.parsers.executor()

    def start_parsers(self) -> float:
        return self.parsers.start()

    async def collect(self, *, force: bool = False) -> collect_service.CollectReport:
        from feedservice.adapters.parse import parse_feed

        fetcher = self.make_fetcher()
        try:
            c = self.settings.collect
            return await collect_service.collect(
                self.store,
                fetcher,
                parse_feed,
                tz=self.settings.site.tz,
                now=self.clock(),
                interval=timedelta(minutes=c.interval_minutes),
                intervals={
                    s.url: timedelta(minutes=s.interval_minutes) for s in self.settings.sources if s.interval_minutes
                },
                routes={
                    s.url: [Route(r.section, r.category, r.path) for r in s.routes]
                    for s in self.settings.sources
                    if s.routes
                },
                concurrency=c.concurrency,
                per_host=c.per_host,
                max_entries=c.max_entries_per_fetch,
                force=force,
                executor=self.parser_pool(),
            )
        finally:
            await fetcher.aclose()

    def build_feeds(self) -> feeds.BuildReport:
        return feeds.build_feeds(
            self.feed_site, self.sections, self.store, self.feeds_dir, self.settings.feeds.max_entries
        )

    async def publish_feeds(self) -> feeds.BuildReport:
        """Rebuild what changed; tell the WebSub hub, when one is configured, which feeds moved."""
        from feedservice.adapters.websub import WebSubPublisher

        hub = self.settings.feeds.websub_hub
        notify = WebSubPublisher(hub).publish if hub else None
        return await feeds.publish_feeds(self.build_feeds, self.store, self.clock, notify)

    async def refresh_weather(self) -> weather.RefreshReport:
        return await weather.refresh_weather(
            self.store,
            self.weather_providers(),
            self.settings.weather.stations,
            self.clock(),
            timeout=self.settings.weather.timeout * 2,
        )

    async def weather_for_digest(self, edition_end: datetime | None = None) -> WeatherBlock:
        from feedservice.adapters.weather_sources import configured_forecast

        w = self.settings.weather
        return await weather.weather_for_edition(
            self.store,
            self.weather_providers(),
            w.stations,
            self.clock,
            max_age=timedelta(minutes=w.max_age_minutes),
            timeout=w.timeout,
            forecast=configured_forecast(w, self.settings.secret),
            edition_end=edition_end,
        )

    def edition(self, day: date) -> Edition:
        return editions.edition_for_day(self.store, self.digest_site, day, self.clock())

    def today(self) -> date:
        return self.clock().astimezone(self.settings.site.tz).date()

    def edition_url(self, day: date) -> str:
        return f"{self.settings.site.public_url.rstrip('/')}/digest/{day.isoformat()}"

    async def assemble_edition(self, day: date) -> editions.AssembledEdition:
        """The edition of ``day``, its web copy, and its renders per section choice."""
        return await editions.assemble_edition(
            self.store,
            self.renderer(),
            self.digest_site,
            self.sections,
            day,
            self.clock(),
            weather=self.weather_for_digest,
            web_url=self.edition_url(day),
            mail_when_empty=self.settings.digest.when_empty == "note",
        )

    def web_links(self) -> dict[str, str]:
        """The web copy's footer links: the pages where a reader finds their own links (no token)."""
        base = self.settings.site.public_url.rstrip("/")
        return {"unsubscribe": f"{base}/unsubscribe", "preferences": f"{base}/"}

    def links_for(self, sub: Subscriber) -> tuple[str, str]:
        base = self.settings.site.public_url.rstrip("/")
        secret, now = self.secret(), self.clock()
        unsub = make_token(secret, "unsubscribe", sub.id, sub.email_hash, now=now)
        prefs = make_token(secret, "preferences", sub.id, sub.email_hash, now=now, version=sub.token_version)
        return f"{base}/unsubscribe/{unsub}", f"{base}/preferences/{prefs}"

    def envelope_for(self) -> Callable[[Delivery], str] | None:
        """``[bounces] return_path``: each message's MAIL FROM names its delivery (VERP); else None."""
        b = self.settings.bounces
        if b is None or b.return_path is None:
            return None
        return_path, secret = b.return_path, self.secret()
        return lambda d: envelope_sender(return_path, secret, d.edition, d.subscriber_id)

    def readiness(self) -> tuple[bool, str]:
        """``/readyz`` and ``feedservice status``: the database answers, the last collect is recent."""
        s = self.settings
        age = s.run.ready_collect_age_minutes or 3 * s.collect.interval_minutes
        return readiness_service.readiness(
            self.store, has_sources=bool(s.sources), max_age=timedelta(minutes=age), now=self.clock()
        )

    def bounce_intakes(self) -> list[BounceIntake]:
        """Every configured ``[bounces]`` intake (none: bounce mail is not read)."""
        from feedservice.adapters.bounces.intakes import configured_intakes

        return configured_intakes(self.settings.bounces, self.settings.path, self.settings.secret)

    def webhook_receivers(self) -> list[WebhookReceiver]:
        """One receiver per configured provider webhook (``[bounces.webhooks.*]``)."""
        from feedservice.adapters.bounces.webhooks import configured_receivers

        return configured_receivers(
            self.settings.bounces, self.settings.secret, self.clock, self.store.bind_webhook_token
        )

    def check_events(self, events: Sequence[ProviderEvent]) -> bounce_service.CheckReport:
        """Provider events (webhook calls) through the same check as returned mail, in one pass;
        their recipients are believed with VERP on only when every event is the provider's word."""
        readings = {e.raw: e.reading for e in events}
        return self.check_bounces(
            intakes=[EventIntake(e) for e in events],
            read=readings.__getitem__,
            provider_says=all(e.provider_says for e in events),
            hold_by_recording=True,
        )

    def bounce_breaker(self) -> BreakerWindow:
        """What the bounce breaker counts now (``bounces check``, ``digest status``)."""
        return self.store.breaker_window(self.clock(), bounce_service.BouncePolicy.window)

    def check_bounces(
        self,
        *,
        force: bool = False,
        intakes: Sequence[BounceIntake] | None = None,
        read: Callable[[bytes], BounceReading] | None = None,
        provider_says: bool = False,
        hold_by_recording: bool = False,
    ) -> bounce_service.CheckReport:
        """Read every intake (or ``intakes``: a webhook's event) once: record, match and apply the
        bounce policy (``services.bounces``); ``read`` defaults to ``adapters.bounces.reading``.
        ``provider_says``: the events' every word is their provider's (the whole call
        authenticated), so the recipient they name is believed with VERP on.
        ``hold_by_recording``: when the breaker trips, record the events with their suppressions held
        (a webhook's provider may not send them again) rather than leave them in their intake."""
        from feedservice.adapters.bounces.reading import read_bounce

        b = self.settings.bounces
        assert b is not None, "check_bounces needs [bounces]"
        policy = bounce_service.BouncePolicy.configured(
            b, provider_says=provider_says, hold_by_recording=hold_by_recording
        )
        intakes = self.bounce_intakes() if intakes is None else intakes
        check = bounce_service.BounceCheck(
            self.store, intakes, read or read_bounce, self.verify_secrets(), self.clock, policy
        )
        report = check.run(force=force)
        log.info("bounces: %s", report.summary())
        return report

    def drain_settings(self) -> deliver.DrainSettings:
        return drain_settings(self.settings.delivery, self.settings.run.shutdown_timeout)

    def sending(self) -> Sending:
        parts = (self.store, self.digest_site, self.make_mailer, self.links_for, self.clock)
        return Sending(*parts, self.signer, self.envelope_for(), self.run_signer)

    async def send_confirmation(self, email: str, confirm_url: str, hours: int) -> None:
        await self.sending().send_confirmation(self.renderer().env, email, confirm_url, hours)

    async def send_digest(
        self, day: date, *, progress: Progress | None = None, queue_only: bool = False
    ) -> deliver.SendReport:
        """Record the edition of ``day`` and its deliveries, then send what is due (``Sending``)."""
        assembled = await self.assemble_edition(day)
        return await self.sending().send_digest(
            assembled, self.web_links(), self.drain_settings(), progress=progress, queue_only=queue_only
        )

    async def drain(self, day: date, *, progress: Progress | None = None) -> deliver.SendReport:
        """Send what is due of an edition that was already recorded (``feedservice worker``)."""
        assembled = await self.assemble_edition(day)
        return await self.sending().drain(assembled, self.drain_settings(), progress=progress)

    async def cycle(self) -> collect_service.CollectReport:
        """collect → feeds (when anything changed or a feed file is missing)."""
        report = await self.collect()
        if report.changed or not (self.feeds_dir / "all.xml").exists():
            await self.publish_feeds()
        return report

    def close(self) -> None:
        self.parsers.close()
        self.store.close()


def make_app(settings: Settings, *, clock: Callable[[], datetime] | None = None) -> App:
    """Open (and migrate) the database, record the configured sections and sources.

    ``clock`` defaults to this module's ``utcnow``, looked up when called, so a test can set
    the time the CLI's commands see.
    """
    secret = settings.signing_secret()
    address_key = settings.address_key(secret).get_secret_value().encode()
    store = open_store(settings.database_url, address_key=address_key)
    try:  # another key would silently forget the list: refused before anything is read or written
        if not store.check_address_key((clock or utcnow)()):
            raise settings.wrong_address_key()
    except BaseException:
        store.close()
        raise
    app = App(settings, store, secret, clock or utcnow)
    app.sync_config()
    return app
