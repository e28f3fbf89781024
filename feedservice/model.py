"""The domain model: frozen dataclasses with no I/O.

Everything the services pass around is one of these; adapters turn the outside
world (feeds, KMA text, database rows) into them and back.
"""

from __future__ import annotations

import enum
import fnmatch
import hashlib
import operator
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from datetime import UTC, date, datetime
from typing import Any, TypedDict
from urllib.parse import urlsplit

from feedservice.text import sanitized_to_text


@dataclass(frozen=True, slots=True)
class Section:
    slug: str
    title: str
    position: int = 0


@dataclass(frozen=True, slots=True)
class SourceState:
    """What we remember about fetching one source between runs."""

    url: str
    section: str
    name: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    last_attempt: datetime | None = None
    last_success: datetime | None = None
    last_error: str | None = None
    failures: int = 0
    next_attempt: datetime | None = None
    articles: int = 0
    enabled: bool = True
    fetch_url: str | None = None  # where the source moved to (301/308); ``url`` stays the configured one

    @property
    def current_url(self) -> str:
        return self.fetch_url or self.url


@dataclass(frozen=True, slots=True)
class Article:
    """One news article, normalised from a feed entry.

    ``id`` is stable across fetches (the guid, else the canonical link, else a
    hash of title and date); ``published``/``updated`` are timezone-aware UTC.
    """

    id: str
    url: str
    section: str
    title: str
    summary_html: str = ""
    content_html: str = ""
    author: str = ""
    categories: tuple[str, ...] = ()
    image_url: str | None = None
    image_type: str | None = None
    image_length: int | None = None
    published: datetime | None = None
    updated: datetime | None = None
    source_url: str = ""

    _digest: str | None = field(default=None, init=False, repr=False, compare=False)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Articles cross from the parser processes in pickles: rebuilt through __init__ they
        # unpickle in two thirds of the time of the per-field __setstate__ of slotted dataclasses.
        # The fields are every __init__ field, in order (``_ARTICLE_FIELDS``, read off the class).
        return _unpickle_article, (_ARTICLE_FIELDS(self), self._digest)

    def content_hash(self) -> str:
        """A digest of everything a reader would see change; an equal digest means "not modified".

        Worked out once per article and kept with it, in pickles too: the parser processes work
        it out, not the collector's one writer. ``replace()`` makes a new article, which works
        out its own.
        """
        if self._digest is None:
            fields = (
                self.url,
                self.section,
                self.title,
                self.summary_html,
                self.content_html,
                self.author,
                "\x1e".join(self.categories),
                self.image_url or "",
                self.published.isoformat() if self.published else "",
            )
            digest = hashlib.blake2b("\x1f".join(fields).encode(), digest_size=16).hexdigest()
            object.__setattr__(self, "_digest", digest)
            return digest
        return self._digest

    @property
    def summary_text(self) -> str:
        """The summary as plain text (derived from the sanitised HTML, not stored)."""
        return sanitized_to_text(self.summary_html)

    def sort_key(self) -> datetime:
        return self.published or self.updated or datetime.min.replace(tzinfo=UTC)


class ArticleFields(TypedDict, total=False):
    """Some of an ``Article``'s fields by name, as ``dataclasses.replace(article, **fields)`` takes
    them (tests/test_model.py checks that it names every field)."""

    id: str
    url: str
    section: str
    title: str
    summary_html: str
    content_html: str
    author: str
    categories: tuple[str, ...]
    image_url: str | None
    image_type: str | None
    image_length: int | None
    published: datetime | None
    updated: datetime | None
    source_url: str


# What ``Article.__reduce__`` pickles: the values of its __init__ fields, in their order.
_ARTICLE_FIELDS = operator.attrgetter(*(f.name for f in dataclass_fields(Article) if f.init))


def _unpickle_article(fields: tuple[Any, ...], digest: str | None) -> Article:
    article = Article(*fields)
    if digest is not None:
        object.__setattr__(article, "_digest", digest)
    return article


@dataclass(frozen=True, slots=True)
class Route:
    """Send a source's entries with a given category, or a URL path matching a glob, to another section."""

    section: str
    category: str | None = None
    path: str | None = None

    def matches(self, article: Article) -> bool:
        if self.category is not None and self.category.casefold() in (c.casefold() for c in article.categories):
            return True
        return self.path is not None and fnmatch.fnmatchcase(urlsplit(article.url).path, self.path)


@dataclass(frozen=True, slots=True)
class FetchResult:
    """One HTTP fetch: either new bytes, or "not modified" (status 304)."""

    url: str
    status: int
    content: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    permanent_redirect: str | None = None  # the new URL when every hop was a 301/308

    @property
    def not_modified(self) -> bool:
        return self.status == 304


@dataclass(frozen=True, slots=True)
class FetchRecord:
    """A successful fetch of one source, to be stored: its articles, or None when not modified."""

    url: str
    next_attempt: datetime
    etag: str | None = None
    last_modified: str | None = None
    articles: tuple[Article, ...] | None = None
    fetch_url: str | None = None


@dataclass(frozen=True, slots=True)
class ParsedFeed:
    """What one fetched document holds: its articles and the polling interval it asks for."""

    articles: tuple[Article, ...]
    ttl_minutes: int | None = None


@dataclass(frozen=True, slots=True)
class Observation:
    """One station's surface observation. ``None`` means "관측 없음" for that field."""

    station_id: int
    station_name: str
    observed_at: datetime
    temperature: float | None
    condition: str | None
    humidity: float | None = None
    cloud_tenths: int | None = None
    provider: str = ""


@dataclass(frozen=True, slots=True)
class Forecast:
    """Today's forecast for a station's grid cell (KMA 단기예보)."""

    station_id: int
    day: date
    low: float | None
    high: float | None
    rain_chance: int | None  # the highest POP between 06 and 21 h, in %


@dataclass(frozen=True, slots=True)
class WeatherBlock:
    """The weather lines shown in the digest, in station order, plus a notice when degraded."""

    observations: tuple[Observation, ...]
    notice: str | None = None
    stale_before: datetime | None = None
    forecasts: tuple[Forecast, ...] = ()


class SubscriberStatus(enum.StrEnum):
    UNCONFIRMED = "unconfirmed"
    SUBSCRIBED = "subscribed"
    PAUSED = "paused"
    UNSUBSCRIBED = "unsubscribed"
    SUPPRESSED = "suppressed"


@dataclass(frozen=True, slots=True)
class Subscriber:
    id: int
    email: str
    status: SubscriberStatus
    sections: tuple[str, ...] = ()  # empty means "all sections"
    created: datetime | None = None
    email_hash: str = ""
    confirm_nonce: str | None = None
    confirm_sent: datetime | None = None
    token_version: int = 0  # signs the preferences link; raised when the reader leaves


class DeliveryStatus(enum.StrEnum):
    QUEUED = "queued"
    SENDING = "sending"  # claimed by a worker, which sends it now
    SENT = "sent"
    DEFERRED = "deferred"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Edition:
    """One day's digest: its date in the site timezone and the window of articles it covers."""

    day: date
    window_start: datetime
    window_end: datetime
    subject: str = ""


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    edition: date
    subscriber_id: int
    email: str
    status: DeliveryStatus
    message_id: str
    attempts: int = 0
    last_reply: str | None = None
    next_attempt: datetime | None = None


@dataclass(frozen=True, slots=True)
class DomainPause:
    """A mailbox provider (a domain or a ``[delivery.domains]`` group) that throttled us.

    Nothing is sent to it before ``until``; ``strikes`` counts the throttles in a row (the
    pause doubles with each); ``reason`` is the reply that caused it.
    """

    lane: str
    until: datetime
    strikes: int
    reason: str
