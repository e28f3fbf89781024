"""The domain model's own promises."""

from __future__ import annotations

from dataclasses import fields, replace
from datetime import UTC, datetime
from typing import get_type_hints

from feedservice.model import Article, ArticleFields


def test_article_fields_names_every_field_of_an_article_with_its_type() -> None:
    hints = get_type_hints(Article)
    declared = {f.name: hints[f.name] for f in fields(Article) if f.init}
    assert get_type_hints(ArticleFields) == declared


def test_replacing_fields_gives_a_new_article_with_its_own_digest() -> None:
    article = Article(id="urn:1", url="https://www.newsspace.kr/1", section="bigtech", title="제목")
    changes: ArticleFields = {"title": "고친 제목", "published": datetime(2026, 11, 28, tzinfo=UTC)}
    fixed = replace(article, **changes)
    assert (fixed.title, fixed.published, fixed.url) == ("고친 제목", changes["published"], article.url)
    assert fixed.content_hash() != article.content_hash()
