"""Feed bytes → Articles, with feedparser. Pure: no I/O.

feedparser gets bytes (never a URL or path, which it would open itself) plus the
response headers it uses to pick the encoding.
"""

from __future__ import annotations

import calendar
import functools
import hashlib
import html
import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urljoin, urlsplit
from zoneinfo import ZoneInfo

import feedparser

from feedservice.adapters.encoding import decode_feed, plainly_utf8
from feedservice.adapters.fastparse import MIN_YEAR, fast_entries, newest, recency
from feedservice.adapters.jsonfeed import looks_like_json, parse_json_feed
from feedservice.errors import ParseError
from feedservice.model import Article, ParsedFeed
from feedservice.text import clean_text, sanitize_html, sanitized_to_text

log = logging.getLogger(__name__)

# bozo exceptions after which the parse result is still fine (see reader's _parser/feedparser.py).
_SURVIVABLE = (feedparser.CharacterEncodingOverride, feedparser.NonXMLContentType)
_ZONE = re.compile(r"(?:[zZ]|[+-]\d{2}:?\d{2}|\b(?:GMT|UTC?|[ECMP][SD]T|KST|JST)\b)\s*$")
# "[뉴스스페이스=김정영 기자]", "[OSEN=대전, 이상학 기자]": the name is the last word before 기자.
_BYLINE = re.compile(r"\[[^\]\n=]{1,30}=[^\]\n]*?([가-힣]{2,4})\s*(?:기자|특파원|객원기자|통신원)\s*\]")
_EMAIL = re.compile(r"\S+@\S+")
_IMG = re.compile(r"<img\b[^>]*?\bsrc\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)
_FUTURE_SLACK = timedelta(days=1)
_DECL = re.compile(r"^\s*<\?xml[^>]*\?>", re.IGNORECASE)


def canonical_url(url: str) -> str:
    """Lower-case scheme and host, no fragment, no utm_* tracking parameters; the rest as it was.

    Works on the text, without decoding and re-encoding the query, so a link keeps working.
    """
    url = url.strip()
    base, _, query = url.partition("#")[0].partition("?")
    sep = base.find("://")
    if sep > 0:
        rest = base[sep + 3 :]
        slash = rest.find("/")
        host, path = (rest, "/") if slash < 0 else (rest[:slash], rest[slash:])
        base = base[:sep].lower() + "://" + host.lower() + path
    if query:
        query = "&".join(p for p in query.split("&") if p and p[:4].lower() != "utm_")
    return f"{base}?{query}" if query else base


@functools.lru_cache(maxsize=4096)
def _source_root(source_url: str) -> str:
    return canonical_url(source_url).rstrip("/")


def _when(entry: Mapping[str, Any], key: str, tz: ZoneInfo) -> datetime | None:
    # dict.get, not entry.get: feedparser's dict answers "updated" with "published" when there is none.
    plain: dict[str, Any] = entry if isinstance(entry, dict) else dict(entry)
    parsed = dict.get(plain, f"{key}_parsed")
    if not parsed or parsed[0] < MIN_YEAR:  # before 1990: a CMS default or a typo, not a date
        return None
    try:
        year, month, day, hour, minute, second = parsed[:6]
        value = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:  # a leap second, 31 February…: timegm rolls it over, as feedparser's own code does
        value = datetime.fromtimestamp(calendar.timegm(parsed), UTC)
    raw = str(dict.get(plain, key) or "")
    # Only the end can hold the zone; none of its forms is longer than 6 characters, so the
    # last 8 keep the character before it for the \b (a search over the whole date cost more).
    if raw and not _ZONE.search(raw.rstrip()[-8:]):
        # "2026-08-28 14:57:04": feedparser reads a zone-less date as UTC; it is the site's local time.
        value = value.replace(tzinfo=None).replace(tzinfo=tz).astimezone(UTC)
    return value


def _image(entry: Mapping[str, Any], *htmls: str) -> tuple[str | None, str | None, int | None]:
    for enc in entry.get("enclosures", ()):
        if str(enc.get("type", "")).startswith("image/") and enc.get("href"):
            length = str(enc.get("length") or "")
            return enc["href"], enc.get("type"), int(length) if length.isdigit() else None
    for key in ("media_content", "media_thumbnail"):
        for media in entry.get(key, ()):
            url = media.get("url")
            if url and (key == "media_thumbnail" or str(media.get("type", "image/")).startswith("image/")):
                return url, media.get("type"), None
    for text in htmls:
        if m := _IMG.search(text):
            return html.unescape(m.group(1)), None, None
    return None, None, None


def _safe_url(url: str | None) -> str | None:
    if url and urlsplit(url).scheme in ("http", "https"):
        return url
    return None


def entry_to_article(
    entry: Mapping[str, Any], *, section: str, source_url: str, tz: ZoneInfo, now: datetime
) -> Article | None:
    """Normalise one feedparser entry; None when it has neither a title nor a link."""
    raw_link = (entry.get("link") or "").strip()
    link = raw_link if raw_link.startswith(("http://", "https://")) else _absolute(source_url, raw_link)
    url = canonical_url(link) if link else ""
    base = link or source_url
    title = clean_text(html.unescape(entry.get("title", "") or "")) if entry.get("title") else ""
    content_raw = ""
    for c in entry.get("content", ()):
        if c.get("value"):
            content_raw = c["value"]
            break
    # No summary: the content stands in (feedparser's dict does the same on its own).
    summary_raw = entry.get("summary", "") or content_raw
    summary_html = sanitize_html(summary_raw, base)
    content_html = sanitize_html(content_raw, base) if content_raw and content_raw != summary_raw else ""
    if not title and not url:
        return None
    summary_text = ""
    if not title:
        summary_text = sanitized_to_text(summary_html)
        title = summary_text[:80] or url
    updated = _when(entry, "updated", tz)
    published = _when(entry, "published", tz) or updated
    if published and published > now + _FUTURE_SLACK:
        # A far-future date is a feed bug: the fetch time stands in, as the time the article is
        # first stored (None: kept on later fetches, so the article does not change each time).
        published = None
    if updated and updated > now + _FUTURE_SLACK:
        updated = None
    author = clean_text(_EMAIL.sub("", entry.get("author", "") or "")).strip("()<> ").strip()
    if not author:
        m = _BYLINE.search(summary_text or sanitized_to_text(summary_html))
        if m is None and content_html:
            m = _BYLINE.search(sanitized_to_text(content_html))
        author = m.group(1) if m else ""
    guid = clean_text(entry.get("id", "") or "")
    if guid and (guid.rstrip("/") == _source_root(source_url) or _is_site_root(guid)):
        guid = ""  # e.g. a guid that is just the site's home page: not an identity
    if guid and not _GLOBAL_ID.match(guid):
        guid = _source_guid(source_url, guid)
    ident = guid or (url if url and not _is_site_root(url) else "")
    if not ident:
        basis = f"{title}\x00{published.isoformat() if published else ''}\x00{url}"
        ident = "urn:sha256:" + hashlib.sha256(basis.encode()).hexdigest()
    image_url, image_type, image_length = _image(entry, summary_raw, content_raw)
    return Article(
        id=ident,
        url=url,
        section=section,
        title=title,
        summary_html=summary_html,
        content_html=content_html,
        author=author,
        categories=tuple(
            dict.fromkeys(
                clean_text(t.get("term") or "") for t in entry.get("tags", ()) if (t.get("term") or "").strip()
            )
        ),
        image_url=_absolute(base, image_url.strip()) if image_url else None,
        image_type=image_type,
        image_length=image_length,
        published=published,
        updated=updated,
        source_url=source_url,
    )


# A GUID that is an absolute URI (a URL, ``urn:``, ``tag:``) names one article wherever it is
# found; any other (``"1"``, ``"12345"``) only within its own feed. Two JSON Feed sources whose
# items are "1" and "2" are four articles: keyed by the source, the second source's are no
# longer taken for the first's ("owned elsewhere", never stored). Ids that are absolute URIs are
# kept as they are, so no article stored with one changes identity.
_GLOBAL_ID = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s<>\"{}|\\^`]+\Z")


def _source_guid(source_url: str, guid: str) -> str:
    """A feed-local GUID made the source's: "<source URL> <GUID>" (a URL holds no space, so the two
    parts never run together), the same on every fetch, since ``source_url`` is the configured URL,
    not where the source moved to. It stays what it was, not an IRI: the Atom writer mints its
    tag URI under the site's domain (``feed_formats.atom_id``), and a link-less entry's link is
    still the source's page (``publishable``), never the feed file."""
    return f"{source_url} {guid}"


def _is_site_root(url: str) -> bool:
    """http(s)://host or http(s)://host/ (nothing after the host)."""
    if not url.startswith(("http://", "https://")):
        return False
    rest = url.split("://", 1)[1]
    slash = rest.find("/")
    return slash < 0 or rest[slash:] == "/"


def _absolute(base: str, url: str) -> str | None:
    """``url`` resolved against ``base``, if the result is an http(s) URL."""
    if url.startswith(("http://", "https://")):
        return url
    return _safe_url(urljoin(base, url)) if url else None


def _refuse_entities(data: bytes, url: str) -> None:
    """Refuse documents that declare their own entities (billion laughs, quadratic blowup, XXE).

    Feeds have no need for them, and then no parser (lxml, expat, feedparser's loose parser) has
    any entity to expand beyond the predefined five and character references. The whole document
    is searched, not a prolog we would have to delimit: a declaration hidden behind a comment
    holding ``<x>`` passed a check that stopped at the first tag-like text, and 0.9 MB became
    400 MB. (A feed quoting ``<!ENTITY`` inside CDATA is refused too; none was ever seen.) Every
    path reaches here as UTF-8 bytes, so the bytes of the one spelling XML allows are enough.
    expat's amplification limit stays as the second line of defence.
    """
    if b"<!ENTITY" in data:
        raise ParseError(url, "refused: the document declares its own XML entities")


def parse_feed(
    content: bytes,
    *,
    url: str,
    section: str,
    tz: ZoneInfo,
    now: datetime,
    headers: Mapping[str, str] | None = None,
    fast: bool = True,
    max_entries: int = 500,
) -> ParsedFeed:
    """Parse feed bytes (RSS 0.9x/1.0/2.0, Atom 0.3/1.0, JSON Feed 1.x) into Articles.

    Well-formed RSS 2.0 and Atom 1.0 take the lxml fast path unless it declines (or
    ``fast`` is False); everything else goes through feedparser. Raises ``ParseError``
    when the bytes are not a usable feed. At most ``max_entries`` entries are kept, the
    newest by their dates (see ``fastparse.recency``), and no more than ten times as many
    are ever parsed by feedparser (in document order), which bounds memory and CPU per feed.
    """
    hdrs = dict(headers or {})
    latest = (now + _FUTURE_SLACK).astimezone(UTC).timetuple()
    if fast and plainly_utf8(content, hdrs):
        # What every well-kept feed is: lxml reads these bytes as they are, and declines (or
        # fails on bytes that are not UTF-8) into the general path below, which decodes first.
        _refuse_entities(content, url)
        if (quick := fast_entries(content, max_entries, latest)) is not None:
            return _articles(quick[1], _ttl(quick[0].get("ttl")), section, url, tz, now)
    text, _ = decode_feed(content, hdrs)
    ttl: int | None = None
    if looks_like_json(text, hdrs):
        _, entries = parse_json_feed(text, url)
    else:
        data = _DECL.sub('<?xml version="1.0" encoding="utf-8"?>', text, count=1).encode("utf-8")
        del text
        _refuse_entities(data, url)
        quick = fast_entries(data, max_entries, latest) if fast else None
        if quick is not None:
            return _articles(quick[1], _ttl(quick[0].get("ttl")), section, url, tz, now)
        data = _first_entries(data, 10 * max_entries)
        result = feedparser.parse(
            data,
            response_headers={"content-type": "application/xml; charset=utf-8"},
            # nh3 sanitises and resolves links in the normaliser, the same for every path.
            sanitize_html=False,
            resolve_relative_uris=False,
        )
        bozo = result.get("bozo_exception")
        entries = list(result.entries)
        usable = [e for e in entries if e.get("title") or e.get("link")]
        if bozo is not None and not isinstance(bozo, _SURVIVABLE) and not usable:
            raise ParseError(url, f"not a feed: {bozo.__class__.__name__}: {str(bozo)[:200]}")
        if not result.get("version") and not usable:
            raise ParseError(url, "not a feed: no RSS, Atom or JSON Feed document found")
        ttl = _ttl(result.feed.get("ttl"))
    if len(entries) > max_entries:
        keys = [recency(e.get("published_parsed") or e.get("updated_parsed"), latest) for e in entries]
        entries = [entries[i] for i in newest(keys, max_entries)]
    return _articles(entries, ttl, section, url, tz, now)


_ENTRY_START = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?(?:item|entry)[\s>/]")


def _first_entries(data: bytes, limit: int) -> bytes:
    """The document cut before its ``limit + 1``-th entry, if it has more (feedparser builds a
    dict per entry: 160,000 tiny items in 10 MB took 240 MB). The cut document is not well-formed;
    feedparser's loose parser reads it to the cut."""
    for n, m in enumerate(_ENTRY_START.finditer(data)):
        if n == limit:
            return data[: m.start()]
    return data


def _ttl(value: Any) -> int | None:
    """An RSS <ttl> in minutes, if it is a sensible one (up to a week)."""
    raw = str(value or "").strip()
    return int(raw) if raw.isdigit() and 0 < int(raw) <= 7 * 24 * 60 else None


def _articles(entries: list[Any], ttl: int | None, section: str, url: str, tz: ZoneInfo, now: datetime) -> ParsedFeed:
    """The entries as Articles; an entry that cannot be one (whatever the reason: a lone
    surrogate no database can store, a value of an odd type) is left out and logged, and the
    rest of the feed is kept."""
    articles = []
    for entry in entries:
        try:
            art = entry_to_article(entry, section=section, source_url=url, tz=tz, now=now)
            if art is None:
                continue
            art.content_hash()  # here, in the parser processes, rather than in the one writer
            "".join((art.id, art.image_type or "", art.source_url)).encode()  # the rest of its text
        except Exception as exc:
            log.warning("%s: an entry left out: %s: %s", url, exc.__class__.__name__, exc, extra={"source": url})
            continue
        articles.append(art)
    return ParsedFeed(tuple(articles), ttl_minutes=ttl)
