"""Assembling an edition: its window, its articles, its weather, and its renders.

An edition is rendered once for the web copy and lazily once per distinct section choice
(``AssembledEdition.rendered_for``): a list of 100,000 readers with a dozen choices costs a dozen
renders, not 100,000.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from feedservice.model import Article, Edition, Section, WeatherBlock
from feedservice.ports import EditionStore
from feedservice.services import digest

# An article another edition carried within this many days is not news again.
CARRIED_WINDOW = timedelta(days=14)


@dataclass
class Preview:
    edition: Edition
    rendered: digest.RenderedDigest
    weather: WeatherBlock


def edition_for_day(store: EditionStore, site: digest.DigestSite, day: date, now: datetime) -> Edition:
    """The recorded edition of ``day``, else the one composed ``now`` (its window starts where the
    last earlier edition ended)."""
    stored = store.get_edition(day)
    if stored is not None:
        return stored[0]
    ed = digest.edition_for(day, now, store.last_edition_before(day))
    return Edition(ed.day, ed.window_start, ed.window_end, digest.subject_for(site, day))


def edition_articles(store: EditionStore, edition: Edition) -> list[Article]:
    """The edition's candidates, less any article another edition carried (windows of editions
    composed out of order can overlap), even when a correction moved its date."""
    day = edition.day
    carried = store.articles_carried(day - CARRIED_WINDOW, day)
    carried |= store.articles_carried(day + timedelta(days=1), day + CARRIED_WINDOW)
    since = digest.published_since(edition)
    return [
        a for a in store.articles_for_edition(edition.window_start, edition.window_end, since) if a.id not in carried
    ]


@dataclass
class AssembledEdition:
    """An edition with everything needed to render it for any section choice."""

    edition: Edition
    preview: Preview
    renderer: digest.DigestRenderer
    site: digest.DigestSite
    sections: Sequence[Section]
    articles: Sequence[Article]
    web_url: str
    mail_when_empty: bool
    _cache: dict[tuple[str, ...], digest.RenderedDigest | None] = field(default_factory=dict, repr=False)

    def rendered_for(self, chosen: tuple[str, ...]) -> digest.RenderedDigest | None:
        """The render for readers who chose ``chosen`` (empty: every section); None when those
        sections have nothing new and ``[digest] when_empty`` says no mail."""
        key = tuple(sorted(chosen))
        if key not in self._cache:
            secs = [s for s in self.sections if not key or s.slug in key]
            picked = digest.pick_sections(secs, self.articles, self.site.max_per_section)
            if picked or self.mail_when_empty:
                block = self.preview.weather
                self._cache[key] = self.renderer.render(self.site, self.edition, picked, block, web_url=self.web_url)
            else:
                self._cache[key] = None  # nothing new in the chosen sections: no mail today
        return self._cache[key]


async def assemble_edition(
    store: EditionStore,
    renderer: digest.DigestRenderer,
    site: digest.DigestSite,
    sections: Sequence[Section],
    day: date,
    now: datetime,
    *,
    weather: Callable[[datetime], Awaitable[WeatherBlock]],
    web_url: str,
    mail_when_empty: bool,
) -> AssembledEdition:
    """Fix the edition of ``day``, gather its articles and weather, render its web copy."""
    renderer.check()
    ed = edition_for_day(store, site, day, now)
    articles = edition_articles(store, ed)
    block = await weather(ed.window_end)
    everything = digest.pick_sections(sections, articles, site.max_per_section)
    web = renderer.render(site, ed, everything, block, web_url=web_url)
    return AssembledEdition(ed, Preview(ed, web, block), renderer, site, sections, articles, web_url, mail_when_empty)
