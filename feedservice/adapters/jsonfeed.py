"""JSON Feed 1.0/1.1 (https://jsonfeed.org/version/1.1) → entries shaped like feedparser's. Pure.

The shared normaliser in ``parse`` then treats them like RSS/Atom entries; their HTML is
sanitised there like any other (a JSON feed's HTML is no more trusted than XML's).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from feedservice.errors import ParseError


def looks_like_json(text: str, headers: dict[str, str]) -> bool:
    ctype = next((v for k, v in headers.items() if k.lower() == "content-type"), "").lower()
    return "json" in ctype or text.lstrip()[:1] == "{"


def _when(value: Any) -> tuple[str, Any] | tuple[None, None]:
    if not isinstance(value, str) or not value.strip():
        return None, None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return value, None
    if parsed.tzinfo is None:
        return value, parsed.timetuple()  # zone-less: the normaliser reads it as site time
    return value, parsed.utctimetuple()


def _encodable(item: dict[str, Any]) -> bool:
    """False for an item holding a lone surrogate (JSON's "\\ud800" escape decodes to one): no
    UTF-8 text, database or feed can hold it, so that item is dropped, not the feed."""
    try:
        json.dumps(item, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_json_feed(text: str, url: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(feed-level fields, entries) from a JSON Feed document; ``ParseError`` if it is not one."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ParseError(url, f"not a feed: invalid JSON: {exc}") from None
    if not isinstance(doc, dict) or not str(doc.get("version", "")).startswith("https://jsonfeed.org/version/"):
        raise ParseError(url, "not a feed: JSON without a jsonfeed.org version")
    items = doc.get("items")
    if not isinstance(items, list):
        raise ParseError(url, "not a feed: JSON Feed without an items list")
    entries = []
    for item in items:
        if not isinstance(item, dict) or not _encodable(item):
            continue
        e: dict[str, Any] = {}
        for src, dst in (("id", "id"), ("url", "link"), ("title", "title")):
            if isinstance(item.get(src), str | int) and not isinstance(item.get(src), bool):
                e[dst] = str(item[src])
        summary = item.get("summary")
        html = item.get("content_html")
        text_body = item.get("content_text")
        if isinstance(summary, str):
            e["summary"] = summary
        if isinstance(html, str):
            e["content"] = [{"value": html}]
            e.setdefault("summary", html)
        elif isinstance(text_body, str):
            e.setdefault("summary", text_body)
        for src, dst in (("date_published", "published"), ("date_modified", "updated")):
            raw, parsed = _when(item.get(src))
            if raw is not None:
                e[dst], e[f"{dst}_parsed"] = raw, parsed
        authors = item.get("authors") or ([item["author"]] if isinstance(item.get("author"), dict) else [])
        names: list[str] = [a["name"] for a in authors if isinstance(a, dict) and isinstance(a.get("name"), str)]
        if names:
            e["author"] = ", ".join(names)
        tags = item.get("tags")
        if isinstance(tags, list):
            e["tags"] = [{"term": t} for t in tags if isinstance(t, str)]
        images = [item[k] for k in ("image", "banner_image") if isinstance(item.get(k), str)]
        if images:
            e["media_thumbnail"] = [{"url": u} for u in images]
        enclosures = []
        for att in item.get("attachments") or []:
            if isinstance(att, dict) and isinstance(att.get("url"), str):
                size = att.get("size_in_bytes")
                enclosures.append(
                    {
                        "href": att["url"],
                        "type": str(att.get("mime_type") or ""),
                        "length": str(size) if isinstance(size, int) else "",
                    }
                )
        e["enclosures"] = enclosures
        entries.append(e)
    feed = {"title": doc.get("title") if isinstance(doc.get("title"), str) else ""}
    return feed, entries
