"""The config's cross-references (rules that span tables, checked after each table is valid), and
the wording of a table's own errors."""

from __future__ import annotations

from email.utils import parseaddr
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from feedservice.config_values import mail_domain, web_host
from feedservice.errors import ConfigError
from feedservice.stations import STATIONS

if TYPE_CHECKING:
    from feedservice.config import Settings

__all__ = ["REPLACED", "check_references", "error_key", "error_message"]

# Settings that went, and what took their place: an old config gets this instead of "unknown key".
REPLACED = {
    "delivery.dkim_threads": 'replaced by [delivery] dkim_signer = "process" (the default: DKIM keys in a '
    'signing process beside the sending loop) or "loop"; signing threads measured slower than both',
}


def check_references(s: Settings) -> None:
    """What one table cannot check alone: names that refer to each other, and a few whole-file rules."""
    seen: set[str] = set()
    for i, sec in enumerate(s.sections):
        if sec.slug in seen:
            raise ConfigError(s.source_path, f"sections[{i}].slug", f"duplicate section {sec.slug!r}")
        seen.add(sec.slug)
    urls: set[str] = set()
    for i, src in enumerate(s.sources):
        if src.section not in seen:
            raise ConfigError(
                s.source_path, f"sources[{i}].section", f"no such section {src.section!r} in [[sections]]"
            )
        for j, r in enumerate(src.routes):
            key = f"sources[{i}].routes[{j}]"
            if r.section not in seen:
                raise ConfigError(s.source_path, key + ".section", f"no such section {r.section!r} in [[sections]]")
            if (r.category is None) == (r.path is None):
                raise ConfigError(s.source_path, key, "give exactly one of category or path")
        if src.url in urls:
            raise ConfigError(s.source_path, f"sources[{i}].url", f"duplicate source {src.url!r}")
        urls.add(src.url)
    for i, stn in enumerate(s.weather.stations):
        if stn not in STATIONS:
            raise ConfigError(s.source_path, f"weather.stations[{i}]", f"unknown KMA station id {stn}")
    if s.delivery.effective_mode == "smtp" and s.delivery.smtp is None:
        raise ConfigError(s.source_path, "delivery.smtp", 'mode = "smtp" needs a [delivery.smtp] table')
    _check_from(s)
    _check_domains(s)
    try:  # the host the web app always answers to (Settings.allowed_hosts)
        web_host(urlsplit(s.site.public_url).hostname or "")
    except ValueError as exc:
        raise ConfigError(s.source_path, "site.public_url", str(exc)) from None
    url = s.database.url
    if not (url.startswith("sqlite:///") or url.startswith(("postgresql://", "postgresql+psycopg://"))):
        raise ConfigError(s.source_path, "database.url", f"expected sqlite:///… or postgresql://…, got {url!r}")


def _check_domains(s: Settings) -> None:
    """Every ``[delivery.domains]`` name is a domain or a group, and a domain belongs to one entry."""
    owner: dict[str, str] = {}
    for name, p in s.delivery.domains.items():
        key = f'delivery.domains."{name}"'
        if not p.domains:
            try:
                mail_domain(name)
            except ValueError:
                raise ConfigError(s.source_path, key, "not a domain: name one, or list a group's `domains`") from None
        for domain in p.domains or (mail_domain(name),):
            if domain in owner:
                raise ConfigError(s.source_path, key, f"{domain} is already paced by {owner[domain]!r}")
            owner[domain] = name


def _check_from(s: Settings) -> None:
    _, addr = parseaddr(s.digest.from_)
    if "@" not in addr or "\n" in s.digest.from_ or "\r" in s.digest.from_:
        raise ConfigError(s.source_path, "digest.from", f"not a mail address: {s.digest.from_!r}")


def error_key(loc: tuple[Any, ...]) -> str:
    """pydantic's location of an error as the key a reader finds in config.toml (``sources[2].url``)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + ("from" if part == "from_" else str(part))
    return out


def error_message(err: dict[str, Any]) -> str:
    """pydantic's error as one line for the operator."""
    kind = err["type"]
    if kind == "extra_forbidden":
        return REPLACED.get(error_key(err["loc"]), "unknown key")
    if kind == "missing":
        return "required value is missing"
    msg = str(err["msg"])
    msg = msg.removeprefix("Value error, ")
    if "input" in err and kind not in ("value_error",):
        msg += f" (got {err['input']!r})"
    return msg
