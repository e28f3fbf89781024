"""The daily digest: choose an edition's articles, render HTML and text once, compose mail.

Rendering is done once per edition and per distinct section choice; a subscriber's
own links (unsubscribe, preferences) are put into the rendered bytes by plain string
replacement of marker strings, so no template runs per subscriber.

The markers are drawn at random for each rendering (``_markers``): article-derived text
(a feed's link, image URL or title) cannot know them, so it can never make a place where a
reader's personal link is put. A fixed marker such as ``%%unsubscribe_url%%`` in a feed item
once sent every reader's unsubscribe link to a third-party image host.
"""

from __future__ import annotations

import functools
import hmac
import re
import secrets
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import css_inline
import jinja2
from babel.dates import format_date

from feedservice.errors import TemplateError
from feedservice.model import Article, Edition, Section, WeatherBlock
from feedservice.services.mime import MessageTemplate, prepare_message
from feedservice.services.weather import (
    CREDIT,
    format_forecast,
    format_observation,
    is_stale,
    national_summary,
    observed_label,
)

# The markers that editions stored before the random markers hold (the web copy still replaces them).
UNSUBSCRIBE = "%%unsubscribe_url%%"
PREFERENCES = "%%preferences_url%%"
LINKS = ("unsubscribe", "preferences")  # the personal links a template may place
FIRST_WINDOW = timedelta(hours=24)  # what the very first edition reaches back over
BACKLOG = timedelta(hours=48)  # an article published this long before its edition is a backlog item, not news


@dataclass(frozen=True)
class DigestSite:
    name: str
    url: str
    public_url: str
    language: str
    tz: ZoneInfo
    sender: str
    postal_address: str = ""
    subject_format: str = "{site} 아침 브리핑 {date}"
    list_id: str | None = None
    max_per_section: int = 5
    message_key: bytes = field(default=b"", repr=False)  # the site secret: Message-IDs are HMACs with it

    @functools.cached_property
    def sender_domain(self) -> str:  # asked for every Message-ID: parse the address once
        return parseaddr(self.sender)[1].rpartition("@")[2] or "localhost"

    @property
    def list_id_header(self) -> str:
        ident = self.list_id or f"digest.{self.sender_domain}"
        return f"{self.name} 뉴스레터 <{ident}>"


@dataclass
class RenderedDigest:
    html: str
    text: str
    sections: list[str] = field(default_factory=list)
    article_count: int = 0
    article_ids: list[str] = field(default_factory=list)
    markers: dict[str, str] = field(default_factory=lambda: _markers())  # where the template put the links
    template: MessageTemplate | None = None  # the encoded message, once ``prepare`` has made it

    def fill(self, links: dict[str, str]) -> tuple[str, str]:
        """HTML and text with the template's link places filled (a web copy, a preview)."""
        html, text = self.html, self.text
        for name, marker in self.markers.items():
            html = html.replace(marker, links[name])
            text = text.replace(marker, links[name])
        return html, text


def _markers() -> dict[str, str]:
    """Fresh, unguessable markers for one rendering (128 random bits each)."""
    return {name: f"%%{name}-{secrets.token_hex(16)}%%" for name in LINKS}


def date_label(day: date, language: str = "ko") -> str:
    """ "2025.07.02 (수)": the day in the newsroom's form, weekday from Babel's locale data."""
    return format_date(day, "yyyy.MM.dd (E)", locale=language)


def edition_for(day: date, now: datetime, previous: Edition | None) -> Edition:
    """The edition of ``day`` composed at ``now``: the window of first-collected times it covers.

    An article belongs to the first edition composed after it was first collected, so the
    window runs from the previous edition's end up to the moment of composing, whenever that
    is: an edition sent early closes its window then (the next one starts there), and one
    composed late (a missed send caught up within the grace time, a run after a downtime)
    covers everything collected up to it, as on any other day. Windows on ``published`` lost
    every article published just before an edition but collected just after it. The window
    is half-open at its start, ``(start, end]``, so every instant belongs to exactly one edition.
    The very first edition reaches back ``FIRST_WINDOW``.
    """
    start = previous.window_end if previous is not None and previous.window_end < now else now - FIRST_WINDOW
    return Edition(day=day, window_start=start, window_end=now)


def published_since(edition: Edition) -> datetime:
    """The oldest publication time an edition takes: older ones (a new source's backlog) are not news."""
    return edition.window_end - BACKLOG


def pick_sections(
    sections: Sequence[Section], articles: Sequence[Article], per_section: int
) -> list[tuple[Section, list[Article]]]:
    """Articles grouped by section in config order, newest first, at most ``per_section`` each."""
    by_section: dict[str, list[Article]] = {s.slug: [] for s in sections}
    seen_urls: set[str] = set()
    for a in sorted(articles, key=lambda a: a.sort_key(), reverse=True):
        bucket = by_section.get(a.section)
        if bucket is None or len(bucket) >= per_section or (a.url and a.url in seen_urls):
            continue
        bucket.append(a)
        seen_urls.add(a.url)
    return [(s, by_section[s.slug]) for s in sections if by_section[s.slug]]


_LEAD_BYLINE = re.compile(r"^\s*\[[^\]\n]{1,40}(?:기자|특파원|통신원)\s*\]\s*")


def _summary(text: str, limit: int = 120) -> str:
    """One or two lines of plain text, without the "[뉴스스페이스=김정영 기자]" lead-in."""
    text = " ".join(_LEAD_BYLINE.sub("", text).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _width(s: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in s)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))


def weather_context(block: WeatherBlock, tz: ZoneInfo) -> dict[str, Any]:
    """Lines in the widget's form for HTML, and aligned columns (word, place, temperature) for text."""
    obs = block.observations
    forecasts = {f.station_id: format_forecast(f) for f in block.forecasts}
    word_w = max((_width(o.condition or "") for o in obs), default=0)
    name_w = max((_width(o.station_name) for o in obs), default=0)
    lines = []
    for o in obs:
        stale = o.observed_at.astimezone(tz).strftime("%m/%d %H:%M 관측") if is_stale(block, o) else None
        temp = f"{o.temperature:.1f}℃" if o.temperature is not None else "관측 없음"
        columns = f"{_pad(o.condition or '', word_w)}  {_pad(o.station_name, name_w)}  {temp:>7}"
        lines.append(
            {
                "text": format_observation(o),
                "padded": columns.rstrip(),
                "stale": stale,
                "forecast": forecasts.get(o.station_id) or None,
            }
        )
    return {
        "lines": lines,
        "summary": national_summary(block),
        "observed": observed_label(block, tz),
        "notice": block.notice,
        "credit": CREDIT,
    }


class DigestRenderer:
    """Loads ``digest.html.j2`` / ``digest.txt.j2`` from the override folder, then the bundled one."""

    def __init__(self, template_dirs: Sequence[Path]) -> None:
        self._search_path = [str(d) for d in template_dirs]
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(self._search_path),
            autoescape=jinja2.select_autoescape(["html", "html.j2", "xml"], default_for_string=True),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        self._inliner = css_inline.CSSInliner(keep_style_tags=True, load_remote_stylesheets=False)

    def _render(self, name: str, context: dict[str, Any]) -> str:
        try:
            return self.env.get_template(name).render(**context)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(exc.name or name, exc.lineno, exc.message or "syntax error") from exc
        except jinja2.TemplateNotFound as exc:
            raise TemplateError(name, None, f"not found in {self._search_path}") from exc
        except jinja2.UndefinedError as exc:
            raise TemplateError(name, _template_line(exc, name), exc.message or "undefined value") from exc

    def check(self) -> None:
        """Compile every template now, so a broken one fails before anything is sent."""
        for name in ("digest.html.j2", "digest.txt.j2"):
            try:
                self.env.get_template(name)
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateError(exc.name or name, exc.lineno, exc.message or "syntax error") from exc
            except jinja2.TemplateNotFound as exc:
                raise TemplateError(name, None, "template not found") from exc

    def render(
        self,
        site: DigestSite,
        edition: Edition,
        chosen: list[tuple[Section, list[Article]]],
        weather: WeatherBlock,
        *,
        web_url: str,
    ) -> RenderedDigest:
        sections = [
            {
                "title": s.title,
                "slug": s.slug,
                "articles": [
                    {
                        "title": a.title,
                        "url": a.url,
                        "summary": _summary(a.summary_text),
                        "author": a.author,
                        "time": a.published.astimezone(site.tz).strftime("%m.%d %H:%M") if a.published else "",
                        "image_url": a.image_url,
                    }
                    for a in arts
                ],
            }
            for s, arts in chosen
        ]
        markers = _markers()
        context = {
            "site": {"name": site.name, "url": site.url, "language": site.language},
            "subject": subject_for(site, edition.day),
            "date_label": date_label(edition.day, site.language),
            "weather": weather_context(weather, site.tz),
            "sections": sections,
            "sender": site.sender,
            "postal_address": site.postal_address,
            "links": {"web": web_url, **markers},
        }
        html = self._inliner.inline(self._render("digest.html.j2", context))
        text = self._render("digest.txt.j2", context)
        return RenderedDigest(
            html,
            text,
            [s.slug for s, _ in chosen],
            sum(len(a) for _, a in chosen),
            [a.id for _, arts in chosen for a in arts],
            markers,
        )


def _template_line(exc: BaseException, name: str) -> int | None:
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith(name):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def subject_for(site: DigestSite, day: date) -> str:
    return site.subject_format.format(site=site.name, date=date_label(day, site.language))


def message_id(site: DigestSite, edition: Edition, subscriber_id: int) -> str:
    """Deterministic per (edition, subscriber), and unique to this installation and this edition.

    An HMAC with the site's secret over the edition (its day and the moment its window closed)
    and the subscriber: a plain hash of domain, date and subscriber id gave a staging install or
    a rebuilt database the real edition's IDs for other people, and providers drop mail whose
    Message-ID they think they have seen. The subscriber id is not shown.
    """
    ident = f"message-id|{edition.day.isoformat()}|{int(edition.window_end.timestamp())}|{subscriber_id}"
    h = hmac.digest(site.message_key, ident.encode(), "sha256").hex()[:32]  # one call: once per reader
    return f"<digest.{edition.day:%Y%m%d}.{h}@{site.sender_domain}>"


def prepare(site: DigestSite, rendered: RenderedDigest, day: date) -> MessageTemplate:
    """The edition's message for one section choice, encoded once for all its readers."""
    if rendered.template is not None:
        return rendered.template
    rendered.template = prepare_message(
        sender=site.sender,
        subject=subject_for(site, day),
        list_id=site.list_id_header,
        text=rendered.text,
        html=rendered.html,
        markers=rendered.markers,
    )
    return rendered.template


def personalize(
    site: DigestSite,
    template: MessageTemplate,
    *,
    to: str,
    msg_id: str,
    unsubscribe_url: str,
    preferences_url: str,
    now: datetime,
) -> bytes:
    head, body = personal_parts(
        site, template, to=to, msg_id=msg_id, unsubscribe_url=unsubscribe_url, preferences_url=preferences_url, now=now
    )
    return head + b"".join(body)


def personal_parts(
    site: DigestSite,
    template: MessageTemplate,
    *,
    to: str,
    msg_id: str,
    unsubscribe_url: str,
    preferences_url: str,
    now: datetime,
) -> tuple[bytes, list[bytes]]:
    """``personalize``'s message as its header section and body pieces (``MessageTemplate.parts``)."""
    return template.parts(
        to=to,
        msg_id=msg_id,
        links={"unsubscribe": unsubscribe_url, "preferences": preferences_url},
        date_header=format_datetime(now.astimezone(site.tz)),
    )


def compose(
    site: DigestSite,
    rendered: RenderedDigest,
    *,
    day: date,
    to: str,
    msg_id: str,
    unsubscribe_url: str,
    preferences_url: str,
    now: datetime,
) -> bytes:
    """One reader's complete message (multipart/alternative, UTF-8, RFC 8058 headers)."""
    return personalize(
        site,
        prepare(site, rendered, day),
        to=to,
        msg_id=msg_id,
        unsubscribe_url=unsubscribe_url,
        preferences_url=preferences_url,
        now=now,
    )
