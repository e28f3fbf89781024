"""WCAG AA contrast of the digest's text in the light and the dark scheme, worked out from the
template's own stylesheet: the light rules, then the ``prefers-color-scheme: dark`` block over them.

A small cascade over the rendered document: each element's colour, background, size and weight
come from the rules whose selector matches it (class, element and ``.a b`` descendant selectors,
the forms the template uses), by specificity and then order, ``!important`` first, inherited
otherwise; the background is the nearest one set on the element or an ancestor.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import lxml.html
import pytest

from feedservice.bootstrap import BUNDLED_TEMPLATES
from feedservice.model import Forecast, WeatherBlock
from feedservice.services.digest import DigestRenderer, pick_sections
from tests.test_digest import ARTICLES, SECTIONS, SITE, WEATHER, _render

NORMAL, LARGE = 4.5, 3.0  # WCAG 2.x AA (1.4.3)


@dataclass(frozen=True)
class Rule:
    selector: list[str]  # descendant chain, e.g. [".footer", "a"]
    props: dict[str, tuple[str, bool]]  # property -> (value, important)
    order: int

    @property
    def specificity(self) -> tuple[int, int]:
        return sum(p.startswith(".") for p in self.selector), sum(not p.startswith(".") for p in self.selector)


def _rules(css: str, order: int = 0) -> list[Rule]:
    out = []
    for n, (selectors, body) in enumerate(re.findall(r"([^{}]+)\{([^{}]*)\}", css)):
        props = {}
        for decl in body.split(";"):
            if ":" in decl:
                name, value = (x.strip() for x in decl.split(":", 1))
                props[name] = (value.replace("!important", "").strip(), "!important" in value)
        for sel in selectors.split(","):
            out.append(Rule(sel.split(), props, order + n))
    return out


def stylesheets(html: str) -> dict[str, list[Rule]]:
    """The light rules, and the light rules followed by the dark block."""
    css = "".join(lxml.html.fromstring(html).xpath("//style/text()"))
    m = re.search(r"@media\s*\(prefers-color-scheme:\s*dark\)\s*\{((?:[^{}]*\{[^{}]*\})*)\s*\}", css)
    assert m, "the template has no dark-scheme block"
    light = _rules(css[: m.start()] + css[m.end() :])
    return {"light": light, "dark": light + _rules(m.group(1), order=10_000)}


def _matches(el: lxml.html.HtmlElement, part: str) -> bool:
    if part.startswith("."):
        return part[1:] in (el.get("class") or "").split()
    return bool(el.tag == part)


def _matches_chain(el: lxml.html.HtmlElement, chain: list[str]) -> bool:
    if not _matches(el, chain[-1]):
        return False
    rest = chain[:-1]
    node = el.getparent()
    while rest and node is not None:
        if _matches(node, rest[-1]):
            rest = rest[:-1]
        node = node.getparent()
    return not rest


def _own(el: lxml.html.HtmlElement, rules: list[Rule], prop: str) -> str | None:
    hits = [
        (r.props[prop][1], r.specificity, r.order, r.props[prop][0])
        for r in rules
        if prop in r.props and _matches_chain(el, r.selector)
    ]
    return max(hits)[3] if hits else None


def _inherited(el: lxml.html.HtmlElement, rules: list[Rule], prop: str) -> str | None:
    node: lxml.html.HtmlElement | None = el
    while node is not None:
        value = _own(node, rules, prop)
        if value is not None:
            return value
        node = node.getparent()
    return None


def _rgb(value: str) -> tuple[float, float, float]:
    h = value.strip().lstrip("#")
    if len(h) == 3:
        h = "".join(c * 2 for c in h)
    assert re.fullmatch(r"[0-9a-fA-F]{6}", h), f"not a hex colour: {value!r}"
    return int(h[0:2], 16) / 255, int(h[2:4], 16) / 255, int(h[4:6], 16) / 255


def _luminance(value: str) -> float:
    def lin(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (lin(c) for c in _rgb(value))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_contrast_formula() -> None:
    assert round(contrast("#000000", "#ffffff"), 2) == 21.0
    assert round(contrast("#777777", "#ffffff"), 2) == 4.48  # just under AA


def _texts(html: str) -> list[tuple[lxml.html.HtmlElement, str]]:
    """Each element that shows text of its own (its text, or text right after one of its children)."""
    body = lxml.html.fromstring(html).body
    assert body is not None
    out = []
    for el in body.iter():
        if not isinstance(el.tag, str):
            continue
        words = (el.text or "") + "".join(c.tail or "" for c in el)
        if words.strip():
            out.append((el, " ".join(words.split())[:30]))
    return out


def _is_large(el: lxml.html.HtmlElement, rules: list[Rule]) -> bool:
    size = float((_inherited(el, rules, "font-size") or "16px").removesuffix("px"))
    bold = _inherited(el, rules, "font-weight") in ("bold", "700", "800", "900")
    return size >= 24 or (bold and size >= 18.66)  # 18 pt, or 14 pt bold


def _everything() -> str:
    """A digest showing every kind of text: forecasts, a stale observation, a notice, thumbnails."""
    ed, _ = _render()
    weather = WeatherBlock(
        WEATHER.observations,
        notice="일부 관측소 자료가 늦습니다.",
        forecasts=(Forecast(108, ed.day, 25.0, 32.0, 20),),
    )
    rendered = DigestRenderer([BUNDLED_TEMPLATES]).render(
        SITE, ed, pick_sections(SECTIONS, ARTICLES, 5), weather, web_url="https://feeds.newsspace.kr/d"
    )
    for kind in ("forecast", "credit", "thumb", "byline", "section-title"):
        assert f'class="{kind}"' in rendered.html, kind
    return rendered.html


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_text_meets_wcag_aa(scheme: str) -> None:
    html = _everything()
    rules = stylesheets(html)[scheme]
    failing = []
    for el, words in _texts(html):
        fg = _inherited(el, rules, "color")
        bg = _inherited(el, rules, "background")
        assert fg and bg, f"{words!r}: no colour or background set"
        need = LARGE if _is_large(el, rules) else NORMAL
        ratio = contrast(fg, bg)
        if ratio < need:
            failing.append(f"{el.get('class') or str(el.tag)} {words!r}: {fg} on {bg} = {ratio:.2f} < {need}")
    assert not failing, "\n".join(failing)
