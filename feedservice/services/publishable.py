"""Before an article is stored: what every output format needs of it. Pure.

The feeds are built from stored articles by feedgen (RSS 2.0, Atom 1.0) and our JSON Feed
writer; an article one of them refuses stops that build for every later run. Atom needs an
entry's alternate link or content (feedgen raises without), a title and an id; lxml refuses
text with characters XML cannot hold; readers follow only http(s) links. So each article is
made fit here, or refused as its source's problem:

- an http(s) link: its own; else its GUID when that is one; else the source's site page with
  the GUID as the fragment (unique per article, so deduplication by link stays right);
- a title: its own, else the start of its summary text; with neither it is refused;
- no character XML 1.0 cannot hold (C0 controls but TAB, LF and CR; surrogates; U+FFFE/U+FFFF)
  in any text field; an image URL that is not http(s) is dropped.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Literal, get_args
from urllib.parse import quote, urlsplit

from feedservice.model import Article, ArticleFields
from feedservice.text import sanitized_to_text

_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_SPACE = re.compile(r"\s")
_TextField = Literal["id", "url", "title", "summary_html", "content_html", "author", "image_url", "image_type"]
_TEXT_FIELDS: tuple[_TextField, ...] = get_args(_TextField)


def _http_url(value: str | None) -> bool:
    if not value or _SPACE.search(value):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _site_page(source_url: str) -> str | None:
    if not _http_url(source_url):
        return None
    parts = urlsplit(source_url)
    return f"{parts.scheme}://{parts.netloc}/"


def make_publishable(article: Article) -> Article | str:
    """The article as every output format can carry it, or why it cannot be stored."""
    fixes: ArticleFields = {}
    texts = [getattr(article, name) or "" for name in _TEXT_FIELDS]
    if _NOT_XML.search("\n".join((*texts, *article.categories))):  # one search for the usual case
        for name, value in zip(_TEXT_FIELDS, texts, strict=True):
            if _NOT_XML.search(value):
                fixes[name] = _NOT_XML.sub("", value)
        if any(_NOT_XML.search(c) for c in article.categories):
            fixes["categories"] = tuple(c for c in (_NOT_XML.sub("", c) for c in article.categories) if c)
    ident = str(fixes.get("id", article.id))
    if not ident.strip():
        return "an entry with no identity"
    if not _http_url(str(fixes.get("url", article.url))):
        page = _site_page(article.source_url)
        if _http_url(ident):
            fixes["url"] = ident
        elif page is not None:
            fixes["url"] = f"{page}#{quote(ident, safe='')}"
        else:
            return f"an entry with no usable link ({article.url[:100]!r})"
    if not str(fixes.get("title", article.title)).strip():
        text = sanitized_to_text(str(fixes.get("summary_html", article.summary_html))).strip()
        if not text:
            return f"an entry with neither a title nor a summary ({ident[:100]!r})"
        fixes["title"] = text[:80]
    if article.image_url and not _http_url(str(fixes.get("image_url", article.image_url))):
        fixes["image_url"] = fixes["image_type"] = fixes["image_length"] = None
    return replace(article, **fixes) if fixes else article
