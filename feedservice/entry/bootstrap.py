"""Settings → concrete adapters and ready-to-call jobs. The only module that picks adapters.

Everything else receives what it needs from an ``App``; tests build an ``App`` from
their own settings (and may replace ``clock``).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import multiprocessing
import os
import secrets
import socket
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.utils import parseaddr
from pathlib import Path
from typing import Any

from feedservice.adapters.asos import AsosHourlyProvider
from feedservice.adapters.dkim import DkimSigner
from feedservice.adapters.forecast import VilageForecastProvider
from feedservice.adapters.http import HttpFetcher, user_agent
from feedservice.adapters.kma import KmaSurfaceProvider
from feedservice.adapters.maildir import MaildirMailer
from feedservice.adapters.openmeteo import OpenMeteoProvider
from feedservice.adapters.parse import parse_feed
from feedservice.adapters.smtp import SmtpMailer
from feedservice.adapters.store import Store, open_store
from feedservice.adapters.websub import WebSubPublisher
from feedservice.addresses import wire_mailbox
from feedservice.config import Settings
from feedservice.errors import ConfigError, FeedServiceError
from feedservice.model import Edition, Route, Section, Subscriber, WeatherBlock
from feedservice.ports import Mailer, WeatherProvider
from feedservice.services import collect as collect_service
from feedservice.services import deliver, digest, feeds, mime, weather
from feedservice.tokens import make_token
from feedservice.workers import exit_with_parent

log = logging.getLogger("feedservice")


def _bundled_templates() -> Path:
    """The templates shipped with the package: ``feedservice/templates`` in an installed wheel
    (pyproject maps the top-level ``templates/`` there), else the source tree's ``templates/``."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "templates"
    return installed if installed.is_dir() else package.parent / "templates"


BUNDLED_TEMPLATES = _bundled_templates()


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Preview:
    edition: Edition
    rendered: digest.RenderedDigest
    weather: WeatherBlock


@dataclass
class App:
    settings: Settings
    store: Store
    clock: Callable[[], datetime] = utcnow
    _secret: bytes | None = field(default=None, repr=False)
    _parser_pool: ProcessPoolExecutor | None = field(default=None, repr=False)

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
        """The signing secret from the environment, else one generated once under var/ (0600)."""
        if self._secret is None:
            env = self.settings.secret(self.settings.web.secret_env)
            if env:
                self._secret = env.reveal().encode()
            else:
                path = self.settings.path("var/secret.key")
                if not path.exists():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.touch(mode=0o600)
                    path.write_text(secrets.token_urlsafe(32))
                    log.warning("%s is not set: generated a signing secret in %s", self.settings.web.secret_env, path)
                self._secret = path.read_text().strip().encode()
        return self._secret

    def verify_secrets(self) -> tuple[bytes, ...]:
        """The signing secret, then the retired ones (``[web] previous_secret_envs``): a link signed
        with any of them still verifies, so the secret can be rotated under mailed links."""
        retired = (self.settings.secret(name) for name in self.settings.web.previous_secret_envs)
        return (self.secret(), *(s.reveal().encode() for s in retired if s))

    def make_fetcher(self) -> HttpFetcher:
        c = self.settings.collect
        return HttpFetcher(
            user_agent=user_agent(self.settings.site.url),
            connect_timeout=c.connect_timeout,
            timeout=c.timeout,
            max_bytes=c.max_bytes,
            allow_hosts=c.allow_hosts,
            concurrency=c.concurrency,
            per_host=c.per_host,
        )

    def weather_providers(self) -> list[WeatherProvider]:
        w = self.settings.weather
        if w.provider == "none":
            return []
        if w.provider == "open-meteo":
            return [OpenMeteoProvider(base_url=w.base_url, timeout=w.timeout)]
        providers: list[WeatherProvider]
        if w.provider == "asos":
            key = self.settings.secret(w.data_go_kr_key_env)
            providers = [AsosHourlyProvider(key, base_url=w.base_url, timeout=w.timeout)]
        else:
            providers = [
                KmaSurfaceProvider(self.settings.secret(w.api_key_env), base_url=w.base_url, timeout=w.timeout)
            ]
        if w.fallback == "open-meteo":
            providers.append(OpenMeteoProvider(base_url=w.fallback_base_url, timeout=w.timeout))
        return providers

    def make_mailer(self) -> Mailer:
        d = self.settings.delivery
        if d.effective_mode == "smtp" and d.smtp is not None:
            return SmtpMailer(
                d.smtp.host,
                d.smtp.port,
                tls=d.smtp.tls,
                username=d.smtp.username,
                password=self.settings.secret(d.smtp.password_env),
                timeout=d.smtp.timeout,
                pool_size=d.smtp.pool_size,
                messages_per_connection=d.smtp.messages_per_connection,
            )
        return MaildirMailer(self.settings.path(d.maildir))

    def signer(self) -> Callable[[bytes], bytes] | None:
        """DKIM signing when ``[digest] dkim_selector`` is set (the key from ``dkim_key_env``)."""
        d = self.settings.digest
        if not d.dkim_selector:
            return None
        key = self.settings.secret(d.dkim_key_env)
        if not key:
            raise ConfigError(
                self.settings.source_path,
                "digest.dkim_key_env",
                f"dkim_selector is set but the environment variable {d.dkim_key_env} is empty",
            )
        ed25519 = self.settings.secret(d.dkim_ed25519_key_env)
        if d.dkim_ed25519_key_env and not ed25519:
            raise ConfigError(self.settings.source_path, "digest.dkim_ed25519_key_env",
                              f"the environment variable {d.dkim_ed25519_key_env} is empty")  # fmt: skip
        domain = d.dkim_domain or self.digest_site.sender_domain
        signer = DkimSigner(selector=d.dkim_selector, domain=domain, private_key_pem=key.reveal().encode(),
                            source=self.settings.source_path, ed25519_selector=d.dkim_ed25519_selector,
                            ed25519_key_pem=ed25519.reveal().encode() if ed25519 else None)  # fmt: skip
        return signer.sign

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
        """Worker processes for feed parsing (CPU-bound), or None to parse in threads.

        ``collect.parse_processes`` = 0 means one per CPU core when there are several.
        """
        wanted = self._parse_processes()
        if wanted < 2:
            return None
        if self._parser_pool is None:
            # spawn: fresh interpreters, not forks of a process with threads.
            ctx = multiprocessing.get_context("spawn")
            self._parser_pool = ProcessPoolExecutor(
                max_workers=wanted, mp_context=ctx, initializer=exit_with_parent, initargs=(os.getpid(),)
            )
            _widen_pipes(self._parser_pool)
        return self._parser_pool

    def _parse_processes(self) -> int:
        return self.settings.collect.parse_processes or (os.cpu_count() or 1)

    def start_parsers(self) -> float:
        """Start the parser processes now and wait until each answers; returns the seconds taken.

        Left to the first collect, starting them (fresh interpreters importing lxml, feedparser
        and nh3) stalls that collect for a second or two while its fetched feeds wait; `run`
        starts them when it begins scheduling, so no collect waits for them.
        """
        started = time.perf_counter()
        pool = self.parser_pool()
        if pool is not None:
            # Submitted together, before any worker is idle: the pool starts one process for each.
            pids = {f.result() for f in [pool.submit(os.getpid) for _ in range(self._parse_processes())]}
            log.debug("parser processes ready: %s", sorted(pids))
        return time.perf_counter() - started

    async def collect(self, *, force: bool = False) -> collect_service.CollectReport:
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
        """Rebuild what changed and, when a WebSub hub is configured, tell it which feeds moved.

        Each build is recorded as a run of the job "feeds" (for `/metrics` and `status`).
        """
        run_id = await asyncio.to_thread(self.store.job_started, "feeds", self.clock())
        try:
            report = await asyncio.to_thread(self.build_feeds)
        except BaseException as exc:
            await asyncio.to_thread(self.store.job_finished, run_id, "failed", self.clock(), str(exc))
            raise
        await asyncio.to_thread(
            self.store.job_finished, run_id, "ok", self.clock(), f"{len(report.changed)} files rewritten"
        )
        hub = self.settings.feeds.websub_hub
        if hub and report.changed_urls:
            await WebSubPublisher(hub).publish(report.changed_urls)
        return report

    async def refresh_weather(self) -> weather.RefreshReport:
        return await weather.refresh_weather(
            self.store,
            self.weather_providers(),
            self.settings.weather.stations,
            self.clock(),
            timeout=self.settings.weather.timeout * 2,
        )

    async def weather_for_digest(self, edition_end: datetime | None = None) -> WeatherBlock:
        """A fresh stored observation if there is one, else one refresh, else the stale or empty block.

        An edition sent late (past its send time by more than half an hour) shows the weather of
        its own morning: what was stored by then, without asking the providers.
        """
        w = self.settings.weather
        if w.provider == "none":
            return WeatherBlock(())
        max_age = timedelta(minutes=w.max_age_minutes)
        if edition_end is not None and self.clock() - edition_end > timedelta(minutes=30):
            return weather.weather_block(self.store, w.stations, edition_end, max_age, as_of=True)
        block = weather.weather_block(self.store, w.stations, self.clock(), max_age)
        if not block.observations or block.stale_before is not None:
            try:
                # Bounded as a whole: a weather problem never holds the digest up for long.
                await asyncio.wait_for(self.refresh_weather(), w.timeout * 2)
            except TimeoutError:
                log.warning("weather refresh gave no answer within %g s; using what is stored", w.timeout * 2)
            block = weather.weather_block(self.store, w.stations, self.clock(), max_age)
        if w.forecast:
            provider = VilageForecastProvider(
                self.settings.secret(w.data_go_kr_key_env), base_url=w.forecast_base_url, timeout=w.timeout
            )
            block = await weather.with_forecast(block, provider, w.stations, self.clock(), timeout=w.timeout * 2)
        return block

    def edition(self, day: date) -> Edition:
        stored = self.store.get_edition(day)
        if stored is not None:
            return stored[0]
        ed = digest.edition_for(day, self.clock(), self.store.last_edition_before(day))
        return Edition(ed.day, ed.window_start, ed.window_end, digest.subject_for(self.digest_site, day))

    def today(self) -> date:
        return self.clock().astimezone(self.settings.site.tz).date()

    def edition_url(self, day: date) -> str:
        return f"{self.settings.site.public_url.rstrip('/')}/digest/{day.isoformat()}"

    async def prepare(
        self, day: date
    ) -> tuple[Edition, Callable[[tuple[str, ...]], digest.RenderedDigest | None], Preview]:
        """Render the edition once for the web copy and lazily once per distinct section choice."""
        renderer = self.renderer()
        renderer.check()
        ed = self.edition(day)
        # An article another edition carried is not news again (windows of editions composed out of
        # order can overlap), even when a correction moved its date.
        around = timedelta(days=14)
        carried = self.store.articles_carried(day - around, day)
        carried |= self.store.articles_carried(day + timedelta(days=1), day + around)
        since = digest.published_since(ed)
        articles = [
            a for a in self.store.articles_for_edition(ed.window_start, ed.window_end, since) if a.id not in carried
        ]
        block = await self.weather_for_digest(ed.window_end)
        site = self.digest_site
        note = self.settings.digest.when_empty == "note"
        cache: dict[tuple[str, ...], digest.RenderedDigest | None] = {}

        def rendered_for(chosen: tuple[str, ...]) -> digest.RenderedDigest | None:
            key = tuple(sorted(chosen))
            if key not in cache:
                secs = [s for s in self.sections if not key or s.slug in key]
                picked = digest.pick_sections(secs, articles, site.max_per_section)
                web_url = self.edition_url(day)
                if picked or note:
                    cache[key] = renderer.render(site, ed, picked, block, web_url=web_url)
                else:
                    cache[key] = None  # nothing new in the chosen sections: no mail today
            return cache[key]

        everything = digest.pick_sections(self.sections, articles, site.max_per_section)
        web = renderer.render(site, ed, everything, block, web_url=self.edition_url(day))
        return ed, rendered_for, Preview(ed, web, block)

    def web_links(self) -> dict[str, str]:
        """The web copy's footer links: the pages where a reader finds their own links (no token)."""
        base = self.settings.site.public_url.rstrip("/")
        return {"unsubscribe": f"{base}/unsubscribe", "preferences": f"{base}/"}

    def links_for(self, sub: Subscriber) -> tuple[str, str]:
        base = self.settings.site.public_url.rstrip("/")
        secret = self.secret()
        unsub = make_token(secret, "unsubscribe", sub.id, sub.email_hash)
        prefs = make_token(secret, "preferences", sub.id, sub.email_hash, version=sub.token_version)
        return f"{base}/unsubscribe/{unsub}", f"{base}/preferences/{prefs}"

    def drain_settings(self) -> deliver.DrainSettings:
        d = self.settings.delivery
        smtp = d.smtp if d.effective_mode == "smtp" else None
        return deliver.DrainSettings(
            worker=f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}",
            pool_size=smtp.pool_size if smtp else 2,
            rate=smtp.rate_limit if smtp else 0.0,
            lease=timedelta(seconds=d.lease_seconds),
            expires=timedelta(hours=d.expire_hours),
            shutdown_timeout=self.settings.run.shutdown_timeout,
            lanes=tuple(
                deliver.LaneRule(name, domains, p.concurrency, p.per_minute)
                for name, (domains, p) in d.domain_groups().items()
            ),
            domain_pause=timedelta(seconds=d.domain_pause_seconds),
            sign_threads=d.dkim_threads,
        )

    async def send_confirmation(self, email: str, confirm_url: str, hours: int) -> None:
        """The double opt-in mail (its own templates). A failure is logged; the reader can ask again."""
        site = self.digest_site
        env = self.renderer().env
        context = {"site_name": site.name, "confirm_url": confirm_url, "hours": hours, "sender": site.sender,
                   "postal_address": site.postal_address}  # fmt: skip
        mailer = self.make_mailer()
        try:
            data = mime.one_off_message(
                sender=site.sender, to=email, subject=f"{site.name} 뉴스레터 구독을 확인해 주세요",
                date=self.clock().astimezone(site.tz), text=env.get_template("confirm.txt.j2").render(**context),
                html=env.get_template("confirm.html.j2").render(**context),
            )  # fmt: skip
            if (sign := self.signer()) is not None:
                data = sign(data)
            await mailer.send(parseaddr(site.sender)[1], email, data)
        except FeedServiceError as exc:
            log.warning("confirmation mail to a new subscriber failed: %s", exc)
        except Exception as exc:  # e.g. an address with no IDNA form: logged, never a silent task death
            log.error("confirmation mail to a new subscriber failed: %s: %s", exc.__class__.__name__, exc,
                      exc_info=exc)  # fmt: skip
        finally:
            await mailer.aclose()

    async def send_digest(
        self, day: date, *, progress: Callable[[deliver.SendReport], None] | None = None, queue_only: bool = False
    ) -> deliver.SendReport:
        """Record the edition and its deliveries, then send what is due (resuming a previous run).

        With ``queue_only`` nothing is sent: ``feedservice worker`` processes do that. A paused
        edition (the relay refused our sender, or the suppression breaker tripped) is resumed:
        this is how an operator says "go on".
        """
        ed, rendered_for, preview = await self.prepare(day)
        now = self.clock()
        html, text = preview.rendered.fill(self.web_links())
        self.store.save_edition(ed, html, text, now, preview.rendered.article_ids)
        if self.store.resume_sending(day):
            log.info("digest %s: resuming a paused edition", day)
        report = deliver.SendReport()
        report.queued, report.skipped_empty = deliver.enqueue_edition(
            self.store, self.digest_site, ed, lambda chosen: rendered_for(chosen) is not None, now
        )
        if queue_only:
            return report
        return await self._drain(ed, rendered_for, report, progress)

    async def drain(
        self, day: date, *, progress: Callable[[deliver.SendReport], None] | None = None
    ) -> deliver.SendReport:
        """Send what is due of an edition that was already recorded (``feedservice worker``)."""
        ed, rendered_for, _ = await self.prepare(day)
        return await self._drain(ed, rendered_for, deliver.SendReport(), progress)

    async def _drain(self, ed: Edition, rendered_for: Callable[[tuple[str, ...]], digest.RenderedDigest | None],
                     report: deliver.SendReport, progress: Callable[[deliver.SendReport], None] | None
                     ) -> deliver.SendReport:  # fmt: skip
        mailer = self.make_mailer()
        try:
            await deliver.EditionDrain(
                self.store, mailer, self.digest_site, ed, rendered_for, self.links_for, self.clock,
                self.drain_settings(), report=report, sign=self.signer(), progress=progress,
            ).run()  # fmt: skip
        finally:
            await mailer.aclose()
        log.info("digest %s: %s", ed.day, report.summary())
        return report

    async def cycle(self) -> collect_service.CollectReport:
        """collect → feeds (when anything changed or a feed file is missing)."""
        report = await self.collect()
        if report.changed or not (self.feeds_dir / "all.xml").exists():
            await self.publish_feeds()
        return report

    def close(self) -> None:
        if self._parser_pool is not None:
            self._parser_pool.shutdown(wait=True, cancel_futures=True)
            self._parser_pool = None
        self.store.close()


def make_app(settings: Settings, *, clock: Callable[[], datetime] | None = None) -> App:
    """Open (and migrate) the database, record the configured sections and sources.

    ``clock`` defaults to this module's ``utcnow``, looked up when called, so a test can set
    the time the CLI's commands see.
    """
    clock = clock or utcnow
    secret = App(settings, None, clock).secret()  # type: ignore[arg-type]
    pinned = settings.secret(settings.web.address_key_env)  # survives a rotation of the signing secret
    address_key = pinned.reveal().encode() if pinned else secret
    app = App(settings, open_store(settings.database_url, address_key=address_key), clock, _secret=secret)
    app.sync_config()
    return app


PIPE_SIZE = 1 << 20


def _widen_pipes(pool: ProcessPoolExecutor) -> None:
    """Give the pool's two pipes room for several feeds (Linux; elsewhere a no-op).

    A feed's bytes going out and its parsed articles coming back are ~100 KB each, more than a
    pipe's default 64 KB: a worker then blocked writing its result until the parent's result
    thread (which shares the parent's GIL with the fetching and the storing) read it, and sat
    idle for about a third of a cold collect. With 1 MB pipes, workers hand results over and go
    on. The queues are the executor's private attributes (CPython 3.11); if they are not there,
    or the kernel refuses, the pool works as it did.
    """
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)  # Linux only
    readers: list[Any] = [getattr(getattr(pool, n, None), "_reader", None) for n in ("_call_queue", "_result_queue")]
    if set_size is None or None in readers:
        log.debug("parser pool pipes left at their default size")
        return
    for reader in readers:
        try:
            fcntl.fcntl(reader.fileno(), set_size, PIPE_SIZE)
        except OSError as exc:  # above /proc/sys/fs/pipe-max-size, or the user's pipe quota
            log.debug("parser pool pipes left at their default size: %s", exc)
            return
