"""The value types of config.toml: strings checked when the file is loaded, each with a message
that says what is wrong (``config`` turns it into a ``ConfigError`` naming the key)."""

from __future__ import annotations

import ipaddress
import re
import string
import unicodedata
from typing import Annotated, Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError
from pydantic import AfterValidator, BaseModel, ConfigDict, field_validator

from feedservice.addresses import ascii_domain
from feedservice.verp import MAX_TOKEN

__all__ = [
    "HHMM",
    "EnvName",
    "HttpUrl",
    "IpNetwork",
    "Language",
    "ListenHost",
    "MailDomain",
    "MailboxName",
    "ReturnPath",
    "Slug",
    "Subject",
    "Table",
    "TimeZone",
    "UrlPrefix",
    "WebHost",
    "control_character",
    "mail_domain",
    "web_host",
]


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {value!r}")
    return value


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}") from None
    return value


def _hh_mm(value: str) -> str:
    if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
        raise ValueError(f"not a time of day as HH:MM: {value!r}")
    return value


def _slug(value: str) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", value):
        raise ValueError(f"a slug is lower-case ASCII letters, digits, '-' or '_': {value!r}")
    if value == "all":
        raise ValueError("'all' is reserved for the feed of every section")
    return value


def _env_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        raise ValueError(f"not an environment variable name: {value!r}")
    return value


def _language(value: str) -> str:
    """The feeds' <language> and the digest's date locale: what babel knows (``ko``, ``en``, ``ko_KR``)."""
    try:
        Locale.parse(value)
    except (ValueError, UnknownLocaleError):
        raise ValueError(f"unknown language {value!r}: use a locale such as 'ko' or 'en'") from None
    return value


_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")


def _listen_host(value: str) -> str:
    """An IP address or a host name (RFC 1123), so that a typo stops at load, not when binding."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if len(value) > 253 or not _HOSTNAME.fullmatch(value):
            raise ValueError(f"not an IP address or host name: {value!r}") from None
    return value


# A DNS name as a Host header carries it, after IDNA: letters, digits, '-' and (Docker's service
# names) '_', in dot-separated labels.
_WEB_HOSTNAME = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*")


def web_host(value: str) -> str:
    """A host name or address as a request's ``Host`` names it, without a port, in one spelling:
    lower case, IDNA A-labels (``뉴스.kr`` → ``xn--...``, what browsers send), no trailing dot, an
    IP address in its compressed form and an IPv6 address in brackets (``::1`` → ``[::1]``).
    ``[web] hosts`` and each request's ``Host`` are compared in this form."""
    name = value.strip().lower()
    bare = name[1:-1] if name.startswith("[") and name.endswith("]") else name
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        pass
    else:
        return f"[{address.compressed}]" if address.version == 6 else address.compressed
    name = name.removesuffix(".")
    try:
        name = ascii_domain(name).lower()
    except ValueError:
        raise ValueError(f"not a host name or IP address (without scheme, port or path): {value!r}") from None
    if len(name) > 253 or not _WEB_HOSTNAME.fullmatch(name):
        raise ValueError(f"not a host name or IP address (without scheme, port or path): {value!r}")
    return name


SUBJECT_FIELDS = frozenset({"site", "date"})


def _subject(value: str) -> str:
    """A format string with only ``{site}`` and ``{date}``: anything else would fail at send time."""
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(value) if name is not None]
    except ValueError as exc:
        raise ValueError(f"not a valid subject template ({exc}); write {{{{ and }}}} for braces") from None
    for name, spec, conv in fields:
        if name not in SUBJECT_FIELDS or spec or conv:
            raise ValueError(f"unknown placeholder {{{name}}}: the subject may use {{site}} and {{date}} only")
    return value


_CONTROL_NAMES = {"\t": "tab", "\n": "line feed", "\r": "carriage return", "\x00": "NUL"}


def control_character(value: str) -> str | None:
    """The first control character or line/paragraph separator in ``value``, described, if any."""
    for ch in value:
        if unicodedata.category(ch) in ("Cc", "Zl", "Zp"):
            name = _CONTROL_NAMES.get(ch) or unicodedata.name(ch, "").lower()
            return f"U+{ord(ch):04X}" + (f" ({name})" if name else "")
    return None


def _ip_network(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"not an IP address or network: {value!r}") from None
    return value


def _return_path(value: str) -> str:
    """A bare address whose local part leaves room for ``+<VERP token>`` within 64 octets."""
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain or "." not in domain or any(c in value for c in ' <>"+'):
        raise ValueError(f"not a bare mail address without '+' (as bounces@example.com): {value!r}")
    if len(local.encode()) + 1 + MAX_TOKEN > 64:
        raise ValueError(
            f"the local part {local!r} leaves no room for the VERP token: use at most {63 - MAX_TOKEN} characters"
        )
    return value


def mail_domain(value: str) -> str:
    domain = value.strip().lower().rstrip(".")
    if not re.fullmatch(r"[^\s@/:]+\.[^\s@/:]+", domain):
        raise ValueError(f"not a mail domain: {value!r}")
    return domain


def _url_prefix(value: str) -> str:
    if not _http_url(value).endswith("/"):
        raise ValueError(f"a URL prefix ends with '/' (a host or folder, not part of a name): {value!r}")
    return value


def _mailbox_name(value: str) -> str:
    """An IMAP folder name in printable ASCII (names beyond it need modified UTF-7, RFC 3501 5.1.3)."""
    if not value or not all(" " <= c <= "~" for c in value):
        raise ValueError(f"not a folder name in printable ASCII: {value!r}")
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url)]
UrlPrefix = Annotated[str, AfterValidator(_url_prefix)]
TimeZone = Annotated[str, AfterValidator(_timezone)]
HHMM = Annotated[str, AfterValidator(_hh_mm)]
Slug = Annotated[str, AfterValidator(_slug)]
EnvName = Annotated[str, AfterValidator(_env_name)]
Language = Annotated[str, AfterValidator(_language)]
ListenHost = Annotated[str, AfterValidator(_listen_host)]
WebHost = Annotated[str, AfterValidator(web_host)]
Subject = Annotated[str, AfterValidator(_subject)]
IpNetwork = Annotated[str, AfterValidator(_ip_network)]
ReturnPath = Annotated[str, AfterValidator(_return_path)]
MailDomain = Annotated[str, AfterValidator(mail_domain)]
MailboxName = Annotated[str, AfterValidator(_mailbox_name)]


class Table(BaseModel):
    """The base of every config table: unknown keys refused, values frozen, and one rule for every string."""

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
