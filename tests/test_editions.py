"""services/editions.py with an in-memory store: an edition's articles and its renders per choice."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta

from feedservice.bootstrap import BUNDLED_TEMPLATES
from feedservice.model import Article, Edition, Section, WeatherBlock
from feedservice.services.digest import DigestRenderer, DigestSite, RenderedDigest
from feedservice.services.editions import AssembledEdition, assemble_edition
from tests.test_digest import ARTICLES, NOW, SECTIONS, SITE

DAY = date(2025, 7, 2)


class FakeEditionStore:
    """The edition port over lists: every stored article is a candidate; ``carried`` by day."""

    def __init__(self, articles: list[Article], carried: dict[date, set[str]] | None = None) -> None:
        self.articles, self.carried = articles, carried or {}

    def get_edition(self, day: date) -> tuple[Edition, str, str] | None:
        return None

    def last_edition_before(self, day: date) -> Edition | None:
        return None

    def articles_carried(self, since: date, before: date) -> set[str]:
        return set().union(*(ids for d, ids in self.carried.items() if since <= d < before))

    def articles_for_edition(self, after: datetime, until: datetime, published_since: datetime) -> list[Article]:
        return list(self.articles)

    def save_edition(
        self, edition: Edition, html: str, text: str, now: datetime, article_ids: object = ()
    ) -> bool:  # pragma: no cover - not used by assembling
        return True


class CountingRenderer(DigestRenderer):
    def __init__(self) -> None:
        super().__init__([BUNDLED_TEMPLATES])
        self.renders = 0

    def render(
        self,
        site: DigestSite,
        edition: Edition,
        chosen: list[tuple[Section, list[Article]]],
        weather: WeatherBlock,
        *,
        web_url: str,
    ) -> RenderedDigest:
        self.renders += 1
        return super().render(site, edition, chosen, weather, web_url=web_url)


def _assemble(store: FakeEditionStore, *, mail_when_empty: bool = False) -> tuple[AssembledEdition, CountingRenderer]:
    renderer = CountingRenderer()
    asked: list[datetime] = []

    async def weather(edition_end: datetime) -> WeatherBlock:
        asked.append(edition_end)
        return WeatherBlock(())

    assembled = asyncio.run(
        assemble_edition(
            store,
            renderer,
            SITE,
            SECTIONS,
            DAY,
            NOW,
            weather=weather,
            web_url="https://feeds.example/digest/2025-07-02",
            mail_when_empty=mail_when_empty,
        )
    )
    assert asked == [assembled.edition.window_end]  # the weather of the edition's own morning
    return assembled, renderer


def test_each_section_choice_is_rendered_once() -> None:
    assembled, renderer = _assemble(FakeEditionStore(ARTICLES))
    assert renderer.renders == 1  # the web copy
    both = assembled.rendered_for(("space-sociology", "bigtech"))
    assert both is not None and assembled.rendered_for(("bigtech", "space-sociology")) is both
    assert assembled.rendered_for(()) is assembled.rendered_for(())
    assert renderer.renders == 3  # the web copy, one choice of two sections, everything
    assert "걷는 도시" in both.text and "걷는 도시" in assembled.preview.rendered.text


def test_a_choice_with_nothing_new_gets_no_mail_unless_asked() -> None:
    assembled, _ = _assemble(FakeEditionStore(ARTICLES[:1]))
    assert assembled.rendered_for(("space-sociology",)) is None
    noted, _ = _assemble(FakeEditionStore(ARTICLES[:1]), mail_when_empty=True)
    assert noted.rendered_for(("space-sociology",)) is not None


def test_an_article_another_edition_carried_is_left_out() -> None:
    carried = {DAY - timedelta(days=1): {"urn:2"}, DAY + timedelta(days=3): {"urn:3"}}
    assembled, _ = _assemble(FakeEditionStore(ARTICLES, carried))
    assert [a.id for a in assembled.articles] == ["urn:1", "urn:4"]
    assert "걷는 도시" not in assembled.preview.rendered.text
