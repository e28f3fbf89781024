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
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from feedservice.config_checks import check_references
from feedservice.config_values import (
    HHMM,
    EnvName,
    HttpUrl,
    IpNetwork,
    Language,
    ListenHost,
    MailboxName,
    MailDomain,
    ReturnPath,
    Slug,
    Subject,
    TimeZone,
    control_character,
    mail_domain,
)
from feedservice.errors import ConfigError
from feedservice.stations import DEFAULT_STATION_IDS

_log = logging.getLogger("feedservice")

__all__ = ["MAX_CONFIG_BYTES", "Settings", "load_settings", "parse_settings"]

MAX_CONFIG_BYTES = 1024 * 1024  # a config file is a few KB; /dev/zero or a wrong path must not eat the memory


class _Table(BaseModel):
    # No NaN or infinity in any number: each one is a duration, a size or a count.
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True, allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _one_line(cls, value: Any) -> Any:
        """No config string holds a control character or a line break: many reach a mail header
        (site name, from, subject, List-Id, the URLs in List-Unsubscribe, DKIM's domain), where a
        CR/LF would start a header of the attacker's choosing (``Bcc:``). One rule for every key."""
        for item in value if isinstance(value, tuple) else (value,):
            if isinstance(item, str) and (found := control_character(item)):
                raise ValueError(f"control character {found} is not allowed (values must be one line)")
        return value


class SiteConfig(_Table):
    name: str = Field(min_length=1)
    url: HttpUrl
    public_url: HttpUrl = "http://127.0.0.1:8080"
    timezone: TimeZone = "Asia/Seoul"
    language: Language = "ko"
    postal_address: str = ""

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class DatabaseConfig(_Table):
    url: str = "sqlite:///var/feedservice.db"


class SectionConfig(_Table):
    slug: Slug
    title: str = Field(min_length=1)
    description: str = ""


class RouteConfig(_Table):
    """An entry whose category is ``category``, or whose URL path matches the glob ``path``, goes to ``section``."""

    section: str
    category: str | None = Field(default=None, min_length=1)
    path: str | None = Field(default=None, min_length=1)


class SourceConfig(_Table):
    url: HttpUrl
    section: str
    name: str | None = None
    interval_minutes: int | None = Field(default=None, ge=1, le=24 * 60)
    routes: tuple[RouteConfig, ...] = ()


class CollectConfig(_Table):
    interval_minutes: int = Field(default=15, ge=1, le=24 * 60)
    concurrency: int = Field(default=20, ge=1, le=500)
    per_host: int = Field(default=4, ge=1, le=100)
    connect_timeout: float = Field(default=5.0, gt=0, le=120)
    timeout: float = Field(default=30.0, gt=0, le=600)
    max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, le=1024**3)
    max_entries_per_fetch: int = Field(default=500, ge=1, le=100_000)
    allow_hosts: tuple[str, ...] = ()
    parse_processes: int = Field(default=0, ge=0, le=64)


class FeedsConfig(_Table):
    output_dir: str = "var/feeds"
    max_entries: int = Field(default=50, ge=1, le=1000)
    cache_max_age: int = Field(default=300, ge=0, le=365 * 24 * 3600)
    websub_hub: HttpUrl | None = None


class WeatherConfig(_Table):
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


class DigestConfig(_Table):
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


class SmtpConfig(_Table):
    host: str = Field(min_length=1)
    port: int = Field(default=587, ge=1, le=65535)
    tls: Literal["starttls", "implicit", "none"] = "starttls"
    username: str | None = None
    password_env: EnvName | None = None
    timeout: float = Field(default=30.0, gt=0, le=600)
    pool_size: int = Field(default=4, ge=1, le=200)
    messages_per_connection: int = Field(default=100, ge=1, le=100_000)
    rate_limit: float = Field(default=0.0, ge=0, le=10_000)


class DomainPacingConfig(_Table):
    """``[delivery.domains.NAME]``: NAME is a domain, or names a group listed in ``domains``."""

    domains: tuple[MailDomain, ...] = ()  # a group (one mailbox provider's domains); empty: NAME itself
    concurrency: int = Field(default=2, ge=1, le=200)  # messages in flight to these domains at once
    per_minute: float = Field(default=0.0, ge=0, le=100_000)  # 0: no rate limit


class DeliveryConfig(_Table):
    mode: Literal["maildir", "smtp"] | None = None
    maildir: str = "var/mail"
    smtp: SmtpConfig | None = None
    expire_hours: float = Field(default=6.0, gt=0, le=72)
    lease_seconds: float = Field(default=60.0, ge=1, le=3600)
    # A throttling reply from a domain pauses it this long, doubling on repeats up to an hour.
    domain_pause_seconds: float = Field(default=300.0, gt=0, le=3600)
    dkim_threads: int = Field(default=2, ge=0, le=16)  # threads that DKIM-sign; 0: on the event loop
    domains: dict[str, DomainPacingConfig] = {}

    def domain_groups(self) -> dict[str, tuple[tuple[str, ...], DomainPacingConfig]]:
        """Each ``[delivery.domains]`` entry: its name, the domains it covers and its limits."""
        return {
            name: (p.domains or (mail_domain(name),), p) for name, p in self.domains.items()
        }

    @property
    def effective_mode(self) -> str:
        """The explicit mode, else SMTP when a server is configured, else the local Maildir."""
        return self.mode or ("smtp" if self.smtp else "maildir")


class WebConfig(_Table):
    host: ListenHost = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    secret_env: EnvName = "FEEDSERVICE_SECRET"
    previous_secret_envs: tuple[EnvName, ...] = ()  # retired secrets: verify mailed links, sign nothing
    address_key_env: EnvName | None = None  # keys forgotten addresses' hashes; default: the signing secret
    subscribe_per_hour: int = Field(default=10, ge=1, le=10000)
    # Peers whose X-Forwarded-For is believed (addresses or networks); none: the peer is the client.
    trusted_proxies: tuple[IpNetwork, ...] = ()


class BouncesImapConfig(_Table):
    """``[bounces.imap]``: an IMAP folder the bounce address's mail is read from (and moved out of)."""

    host: str = Field(min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535)  # default: 993 with tls = "ssl", else 143
    tls: Literal["ssl", "starttls", "none"] = "ssl"
    username: str = Field(min_length=1)
    password_env: EnvName  # the password itself is never in the file
    folder: MailboxName = "INBOX"
    processed_folder: MailboxName = "Processed"  # handled mail is moved here (created when missing)
    ca_file: str | None = None  # a CA certificate to trust instead of the system's (a private server)
    timeout: float = Field(default=30.0, gt=0, le=600)  # seconds each step (login, one fetch, one move) may take
    limit: int = Field(default=1000, ge=1, le=100_000)  # messages read per run; the rest waits for the next

    @property
    def server_port(self) -> int:
        return self.port or (993 if self.tls == "ssl" else 143)


class BouncesConfig(_Table):
    """``[bounces]``: where bounce mail comes back, and when a reader is suppressed for it."""

    # The envelope sender: each message goes out as local+<token>@domain (VERP); unset: as today.
    return_path: ReturnPath | None = None
    maildir: str | None = None  # a Maildir the MTA delivers bounce mail into
    imap: BouncesImapConfig | None = None  # an IMAP folder bounce mail is read from
    soft_limit: int = Field(default=3, ge=1, le=100)  # soft bounces that suppress…
    soft_days: int = Field(default=14, ge=1, le=365)  # …within this many days, no delivery between
    check_minutes: int = Field(default=5, ge=1, le=24 * 60)  # how often `run` reads the intakes


class RunConfig(_Table):
    """`feedservice run`: scheduling, several instances, stopping."""

    digest_grace_hours: float = Field(default=3.0, ge=0, le=23)
    leader_retry_seconds: float = Field(default=15.0, ge=0.5, le=300)
    helper_interval_seconds: float = Field(default=30.0, ge=1, le=3600)
    shutdown_timeout: float = Field(default=30.0, ge=1, le=600)
    ready_collect_age_minutes: int = Field(default=0, ge=0, le=30 * 24 * 60)  # 0: three collect intervals


class LoggingConfig(_Table):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class Settings(_Table):
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


def _key(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + ("from" if part == "from_" else str(part))
    return out


def _message(err: dict[str, Any]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required value is missing"
    msg = str(err["msg"])
    msg = msg.removeprefix("Value error, ")
    if "input" in err and kind not in ("value_error",):
        msg += f" (got {err['input']!r})"
    return msg


def parse_settings(data: dict[str, Any], *, source: str = "config.toml", base_dir: Path | None = None) -> Settings:
    """Validate a parsed TOML document; raise ``ConfigError`` for the first problem found."""
    if "base_dir" in data or "source_path" in data:
        raise ConfigError(source, "base_dir" if "base_dir" in data else "source_path", "unknown key")
    try:
        settings = Settings.model_validate({**data, "base_dir": base_dir or Path("."), "source_path": source})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(source, _key(first["loc"]), _message(dict(first))) from None
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
