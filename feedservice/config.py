"""config.toml (plus environment variables for secrets) → one typed ``Settings`` object.

Loaded once, at the edge (``load_settings``); services get the parts they need.
Every problem becomes a ``ConfigError`` that names the file, the key and what is
wrong, so the CLI can print one line and exit 2.
"""

from __future__ import annotations

import logging
import os
import secrets
import tomllib
from datetime import time
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from pydantic import Field, SecretStr, ValidationError

from feedservice.config_bounces import BouncesConfig
from feedservice.config_checks import check_references, error_key, error_message
from feedservice.config_values import (
    HHMM,
    EnvName,
    HttpUrl,
    IpNetwork,
    Language,
    ListenHost,
    MailDomain,
    Slug,
    Subject,
    Table,
    TimeZone,
    WebHost,
    mail_domain,
    web_host,
)
from feedservice.errors import ConfigError
from feedservice.stations import DEFAULT_STATION_IDS

_log = logging.getLogger("feedservice")

__all__ = ["MAX_CONFIG_BYTES", "Settings", "load_settings", "parse_settings"]

MAX_CONFIG_BYTES = 1024 * 1024  # a config file is a few KB; /dev/zero or a wrong path must not eat the memory


class SiteConfig(Table):
    name: str = Field(min_length=1)
    url: HttpUrl
    public_url: HttpUrl = "http://127.0.0.1:8080"
    timezone: TimeZone = "Asia/Seoul"
    language: Language = "ko"
    postal_address: str = ""

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class DatabaseConfig(Table):
    url: str = "sqlite:///var/feedservice.db"


class SectionConfig(Table):
    slug: Slug
    title: str = Field(min_length=1)
    description: str = ""


class RouteConfig(Table):
    """An entry whose category is ``category``, or whose URL path matches the glob ``path``, goes to ``section``."""

    section: str
    category: str | None = Field(default=None, min_length=1)
    path: str | None = Field(default=None, min_length=1)


class SourceConfig(Table):
    url: HttpUrl
    section: str
    name: str | None = None
    interval_minutes: int | None = Field(default=None, ge=1, le=24 * 60)
    routes: tuple[RouteConfig, ...] = ()


class CollectConfig(Table):
    interval_minutes: int = Field(default=15, ge=1, le=24 * 60)
    concurrency: int = Field(default=20, ge=1, le=500)
    per_host: int = Field(default=4, ge=1, le=100)
    connect_timeout: float = Field(default=5.0, gt=0, le=120)
    timeout: float = Field(default=30.0, gt=0, le=600)
    max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, le=1024**3)
    max_entries_per_fetch: int = Field(default=500, ge=1, le=100_000)
    allow_hosts: tuple[str, ...] = ()
    parse_processes: int = Field(default=0, ge=0, le=64)


class FeedsConfig(Table):
    output_dir: str = "var/feeds"
    max_entries: int = Field(default=50, ge=1, le=1000)
    cache_max_age: int = Field(default=300, ge=0, le=365 * 24 * 3600)
    websub_hub: HttpUrl | None = None


class WeatherConfig(Table):
    provider: Literal["kma", "asos", "open-meteo", "none"] = "kma"
    stations: tuple[int, ...] = DEFAULT_STATION_IDS
    api_key_env: EnvName = "KMA_API_KEY"
    data_go_kr_key_env: EnvName = "DATA_GO_KR_KEY"
    forecast: bool = False
    forecast_base_url: HttpUrl | None = None
    base_url: HttpUrl | None = None
    fallback: Literal["open-meteo", "none"] = "open-meteo"
    fallback_base_url: HttpUrl | None = None
    max_age_minutes: int = Field(default=180, ge=1, le=7 * 24 * 60)
    refresh_minutes: int = Field(default=30, ge=1, le=24 * 60)
    timeout: float = Field(default=10.0, gt=0, le=120)


class DigestConfig(Table):
    send_at: HHMM = "07:00"
    from_: str = Field(alias="from", min_length=3)
    subject: Subject = "{site} 아침 브리핑 {date}"
    max_per_section: int = Field(default=5, ge=1, le=50)
    templates_dir: str | None = None
    list_id: str | None = None
    when_empty: Literal["skip", "note"] = "skip"
    dkim_selector: str | None = None
    dkim_domain: str | None = None
    dkim_key_env: EnvName = "FEEDSERVICE_DKIM_KEY"
    dkim_ed25519_key_env: EnvName | None = None
    dkim_ed25519_selector: str | None = None

    @property
    def send_time(self) -> time:
        hh, mm = self.send_at.split(":")
        return time(int(hh), int(mm))


class SmtpConfig(Table):
    host: str = Field(min_length=1)
    port: int = Field(default=587, ge=1, le=65535)
    tls: Literal["starttls", "implicit", "none"] = "starttls"
    username: str | None = None
    password_env: EnvName | None = None
    timeout: float = Field(default=30.0, gt=0, le=600)
    pool_size: int = Field(default=4, ge=1, le=200)
    messages_per_connection: int = Field(default=100, ge=1, le=100_000)
    rate_limit: float = Field(default=0.0, ge=0, le=10_000)


class DomainPacingConfig(Table):
    """``[delivery.domains.NAME]``: NAME is a domain, or names a group listed in ``domains``."""

    domains: tuple[MailDomain, ...] = ()  # a group (one mailbox provider's domains); empty: NAME itself
    concurrency: int = Field(default=2, ge=1, le=200)  # messages in flight to these domains at once
    per_minute: float = Field(default=0.0, ge=0, le=100_000)  # 0: no rate limit


class DeliveryConfig(Table):
    mode: Literal["maildir", "smtp"] | None = None
    maildir: str = "var/mail"
    smtp: SmtpConfig | None = None
    expire_hours: float = Field(default=6.0, gt=0, le=72)
    lease_seconds: float = Field(default=60.0, ge=1, le=3600)
    # A throttling reply from a domain pauses it this long, doubling on repeats up to an hour.
    domain_pause_seconds: float = Field(default=300.0, gt=0, le=3600)
    # Where a run's DKIM signatures are made: a signing process beside the sending loop, or the loop.
    dkim_signer: Literal["process", "loop"] = "process"
    domains: dict[str, DomainPacingConfig] = Field(default_factory=dict)

    def domain_groups(self) -> dict[str, tuple[tuple[str, ...], DomainPacingConfig]]:
        """Each ``[delivery.domains]`` entry: its name, the domains it covers and its limits."""
        return {name: (p.domains or (mail_domain(name),), p) for name, p in self.domains.items()}

    @property
    def effective_mode(self) -> str:
        """The explicit mode, else SMTP when a server is configured, else the local Maildir."""
        return self.mode or ("smtp" if self.smtp else "maildir")


class WebConfig(Table):
    host: ListenHost = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    secret_env: EnvName = "FEEDSERVICE_SECRET"
    previous_secret_envs: tuple[EnvName, ...] = ()  # retired secrets: verify mailed links, sign nothing
    address_key_env: EnvName | None = None  # keys forgotten addresses' hashes; default: the signing secret
    subscribe_per_hour: int = Field(default=10, ge=1, le=10000)
    # Peers whose X-Forwarded-For is believed (addresses or networks); none: the peer is the client.
    trusted_proxies: tuple[IpNetwork, ...] = ()
    # The host names the app answers to (any port), besides [site] public_url's; none: the loopback names.
    hosts: tuple[WebHost, ...] | None = None


# The names `make run`, the demo and a local browser reach the app by, answered unless [web] hosts says otherwise.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")


class RunConfig(Table):
    """`feedservice run`: scheduling, several instances, stopping."""

    digest_grace_hours: float = Field(default=3.0, ge=0, le=23)
    leader_retry_seconds: float = Field(default=15.0, ge=0.5, le=300)
    helper_interval_seconds: float = Field(default=30.0, ge=1, le=3600)
    shutdown_timeout: float = Field(default=30.0, ge=1, le=600)
    ready_collect_age_minutes: int = Field(default=0, ge=0, le=30 * 24 * 60)  # 0: three collect intervals


class LoggingConfig(Table):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class Settings(Table):
    """The whole configuration. ``base_dir`` is the config file's folder; relative paths start there."""

    site: SiteConfig
    database: DatabaseConfig = DatabaseConfig()
    sections: tuple[SectionConfig, ...] = Field(min_length=1)
    sources: tuple[SourceConfig, ...] = ()
    collect: CollectConfig = CollectConfig()
    feeds: FeedsConfig = FeedsConfig()
    weather: WeatherConfig = WeatherConfig()
    digest: DigestConfig
    delivery: DeliveryConfig = DeliveryConfig()
    web: WebConfig = WebConfig()
    bounces: BouncesConfig | None = None
    run: RunConfig = RunConfig()
    logging: LoggingConfig = LoggingConfig()
    base_dir: Path = Path(".")
    source_path: str = "config.toml"

    def path(self, value: str) -> Path:
        p = Path(value)
        return p if p.is_absolute() else self.base_dir / p

    @property
    def database_url(self) -> str:
        """The database URL with a relative SQLite path made absolute against ``base_dir``."""
        url = self.database.url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite:///:memory:":
            return prefix + str(self.path(url[len(prefix) :]).resolve())
        return url

    def allowed_hosts(self) -> frozenset[str]:
        """The host names (``web_host`` form) the web app answers to, on any port: ``[web] hosts``
        (default: the loopback names) and always the host of ``[site] public_url``, where every
        link points."""
        public = web_host(urlsplit(self.site.public_url).hostname or "")
        return frozenset((public, *(LOOPBACK_HOSTS if self.web.hosts is None else self.web.hosts)))

    def secret(self, env_name: str | None) -> SecretStr | None:
        """Read a secret from the environment, or from the file named by ``<NAME>_FILE``."""
        if not env_name:
            return None
        if value := os.environ.get(env_name):
            return SecretStr(value)
        if file := os.environ.get(env_name + "_FILE"):
            try:
                return SecretStr(Path(file).read_text(encoding="utf-8").strip())
            except OSError as exc:
                raise ConfigError(self.source_path, env_name + "_FILE", f"cannot read {file}: {exc}") from exc
        return None

    def signing_secret(self) -> SecretStr:
        """The secret that signs links and forms: ``[web] secret_env`` (or its ``_FILE``), else one
        generated once into ``var/secret.key`` (mode 0600) and read from there ever after."""
        if (env := self.secret(self.web.secret_env)) is not None:
            return env
        path = self.path("var/secret.key")
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(32))
            _log.warning("%s is not set: generated a signing secret in %s", self.web.secret_env, path)
        return SecretStr(path.read_text().strip())

    def retired_secrets(self) -> tuple[SecretStr, ...]:
        """``[web] previous_secret_envs``: links they signed still verify; they sign nothing new."""
        return tuple(s for s in (self.secret(name) for name in self.web.previous_secret_envs) if s)

    def address_key(self, signing: SecretStr) -> SecretStr:
        """The key of forgotten addresses' hashes: ``[web] address_key_env`` (which survives a
        rotation of the signing secret), else the signing secret. A named key that is not set is
        an error: hashing with another key would make the list forget whom it suppresses."""
        env = self.web.address_key_env
        if not env:
            return signing
        if (pinned := self.secret(env)) is None:
            raise ConfigError(self.source_path, "web.address_key_env", f"{env} is not set")
        return pinned

    def wrong_address_key(self) -> ConfigError:
        """The error for a database whose addresses were hashed with another key than ours (its
        recorded fingerprint differs): going on would make every forgotten address unknown — a
        removal finds "no subscriber", a re-add makes a second row, suppressed addresses return."""
        w, path = self.web, self.source_path
        if w.address_key_env:
            return ConfigError(
                path,
                "web.address_key_env",
                f"{w.address_key_env} is not the key this database's "
                "addresses were hashed with: set it to that key; nothing was changed",
            )
        return ConfigError(
            path,
            "web.secret_env",
            f"the signing secret ({w.secret_env}, else var/secret.key) is not the key this database's addresses "
            f"were hashed with: set {w.secret_env} to the secret it was first used with (after a rotation, name "
            "the old one in [web] address_key_env); nothing was changed",
        )


def parse_settings(data: dict[str, Any], *, source: str = "config.toml", base_dir: Path | None = None) -> Settings:
    """Validate a parsed TOML document; raise ``ConfigError`` for the first problem found."""
    if "base_dir" in data or "source_path" in data:
        raise ConfigError(source, "base_dir" if "base_dir" in data else "source_path", "unknown key")
    try:
        settings = Settings.model_validate({**data, "base_dir": base_dir or Path("."), "source_path": source})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(source, error_key(first["loc"]), error_message(dict(first))) from None
    check_references(settings)
    return settings


def load_settings(path: str | os.PathLike[str]) -> Settings:
    """Read and validate a config file; every failure is a ``ConfigError``."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(str(p), "", f"cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(str(p), "", f"larger than {MAX_CONFIG_BYTES // 1024 // 1024} MB: not a config file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(str(p), "", "not UTF-8 text") from None
    try:
        data = tomllib.loads(text)
        return parse_settings(data, source=str(p), base_dir=p.resolve().parent)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(p), "", f"not valid TOML: {exc}") from None
    except RecursionError:  # tomllib (and any walk over the values) recurse once per level
        raise ConfigError(str(p), "", "values nested too deeply: not a config file") from None
