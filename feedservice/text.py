"""Text hygiene shared by parsing, feed building and rendering. Pure.

Control characters are stripped (lxml and mail clients refuse them), HTML goes
through an allow-list sanitiser (nh3) whenever it came from outside.
"""

from __future__ import annotations

import html
import re

import nh3

# C0 controls except TAB, LF and CR, and DEL: lxml refuses them and mail clients choke on them.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_BLOCK_TAG = re.compile(r"(?i)<(?:br|/?p|/?div|/?li|/?tr|/?td|/?th|/?h[1-6]|/?blockquote|/?table|hr)\b[^>]*>")
_TAG = re.compile(r"<[^>]*>")

ALLOWED_TAGS = frozenset(
    "a abbr b blockquote br caption cite code dd div dl dt em figcaption figure h1 h2 h3 h4 h5 "
    "h6 hr i img li ol p pre q s small span strong sub sup table tbody td tfoot th thead tr u ul".split()
)
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "img": {"src", "alt", "width", "height"}, "*": {"lang"}}
URL_SCHEMES = frozenset({"http", "https", "mailto"})
LINK_REL = "noopener noreferrer"

# Building nh3's sanitiser costs about as much as running it on a feed entry: keep one, and
# build one per call only when a relative link must be resolved against the entry's own URL.
_CLEANER = nh3.Cleaner(
    tags=set(ALLOWED_TAGS), attributes=ALLOWED_ATTRIBUTES, url_schemes=set(URL_SCHEMES), link_rel=LINK_REL
)
# In nh3's output every attribute is lower-case and double-quoted (a quote inside a value is
# &quot;), so this finds each href/src whose value is not absolute; text that merely looks like
# one only costs a second pass.
_RELATIVE_URL = re.compile(r"""(?:href|src)="(?!\s*(?:[A-Za-z][A-Za-z0-9+.-]*:|//))""")


def strip_controls(value: str) -> str:
    if value.isprintable():  # C, and stops at the first newline: most text is done here
        return value
    return _CONTROL.sub("", value) if _CONTROL.search(value) else value


def clean_text(value: str) -> str:
    """Plain text: no control characters, whitespace collapsed."""
    return " ".join(strip_controls(value).split())


def sanitize_html(value: str, base: str | None = None) -> str:
    """An allow-list sanitiser (nh3): no scripts, handlers, styles or javascript: URLs.

    Relative links and image sources are resolved against ``base`` when one is given.
    """
    if not value:
        return ""
    value = strip_controls(value)
    clean = _CLEANER.clean(value)
    if not base or not _RELATIVE_URL.search(clean):
        return clean
    return nh3.clean(
        value,
        tags=set(ALLOWED_TAGS),
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=set(URL_SCHEMES),
        link_rel=LINK_REL,
        url_relative=("rewrite_with_base", base),
    )


def sanitized_to_text(value: str) -> str:
    """Plain text of HTML that ``sanitize_html`` produced (well-formed, no scripts left)."""
    return clean_text(html.unescape(_TAG.sub("", _BLOCK_TAG.sub(" ", value))))
