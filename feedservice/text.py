"""Text hygiene shared by parsing, feed building and rendering. Pure.

Control characters are stripped (lxml and mail clients refuse them), HTML goes
through an allow-list sanitiser (nh3) whenever it came from outside.
"""

from __future__ import annotations

import html
import re

import nh3

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SPACE = re.compile(r"\s+")

ALLOWED_TAGS = frozenset(
    "a abbr b blockquote br caption cite code dd div dl dt em figcaption figure h1 h2 h3 h4 h5 "
    "h6 hr i img li ol p pre q s small span strong sub sup table tbody td tfoot th thead tr u ul".split()
)
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "img": {"src", "alt", "width", "height"}, "*": {"lang"}}


def clean_text(value: str) -> str:
    """Plain text: no control characters, whitespace collapsed."""
    return _SPACE.sub(" ", _CONTROL.sub("", value)).strip()


def sanitize_html(value: str) -> str:
    """An allow-list sanitiser (nh3): no scripts, handlers, styles or javascript: URLs."""
    return nh3.clean(
        _CONTROL.sub("", value),
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer",
    )


def html_to_text(value: str) -> str:
    text = nh3.clean(re.sub(r"(?i)<br\s*/?>|</p>", " ", value), tags=set())
    return clean_text(html.unescape(text))
