"""Digest rendering benchmark: personalised messages per second, against the naive way, same run.

    .venv/bin/python bench/render.py [--subscribers 100000] [--naive 1000] [--write]

One edition (4 sections × 5 articles, the 16-station weather block) for N subscribers spread
over 8 distinct section choices. feedservice's way: render and inline once per choice, encode
the message once (``prepare``), then per subscriber sign the two links and join the bytes
(``personalize``), i.e. complete RFC 5322 bytes ready for SMTP. The naive way, per subscriber:
render the template, inline the CSS, build an ``email.message.EmailMessage`` and serialise it;
it runs on --naive subscribers and its rate is per message. Every 1,000th message of both
ways is parsed back with the ``email`` package to check it holds the subscriber's links.
"""

from __future__ import annotations

import argparse
import email
import os
import sys
import time
from datetime import UTC, date, datetime, timedelta
from email import policy
from email.message import EmailMessage
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, write_section

from feedservice.model import Article, Edition, Observation, Section, WeatherBlock
from feedservice.services import digest
from feedservice.stations import WIDGET_STATIONS
from feedservice.tokens import make_token

KST = ZoneInfo("Asia/Seoul")
SECTIONS = [
    Section("bigtech", "빅테크"),
    Section("space-sociology", "공간사회학"),
    Section("economy", "경제"),
    Section("society", "사회"),
]
CHOICES: list[tuple[str, ...]] = [
    (),
    ("bigtech",),
    ("space-sociology",),
    ("economy",),
    ("society",),
    ("bigtech", "economy"),
    ("space-sociology", "society"),
    ("bigtech", "space-sociology", "economy"),
]
SECRET = b"bench-secret"


def edition() -> tuple[digest.DigestSite, Edition, list[Article], WeatherBlock]:
    site = digest.DigestSite(
        name="뉴스스페이스",
        url="https://www.newsspace.kr",
        public_url="https://feeds.newsspace.kr",
        language="ko",
        tz=KST,
        sender="뉴스스페이스 <newsletter@newsspace.kr>",
        postal_address="서울특별시 중구 세종대로 000",
    )
    ed = digest.edition_for(date(2026, 11, 28), datetime(2026, 11, 28, 7, 0, tzinfo=KST), None)
    arts = [
        Article(
            id=f"urn:{s.slug}:{i}",
            url=f"https://www.newsspace.kr/news/articleView.html?idxno={n * 10 + i}",
            section=s.slug,
            title=f"{s.title} 주요 기사 {i}: 정책 변화와 시장 전망",
            summary_html="<p>[뉴스스페이스=김정영 기자] " + "정부와 기업이 새로운 투자 계획을 발표했다. " * 6 + "</p>",
            author="김정영",
            published=ed.window_end - timedelta(hours=1 + i + n),
            image_url=f"https://www.newsspace.kr/photo/{n}{i}.jpg" if i == 0 else None,
        )
        for n, s in enumerate(SECTIONS)
        for i in range(5)
    ]
    obs = tuple(Observation(s.id, s.name, ed.window_end, 20.0 + s.id % 10, "구름조금") for s in WIDGET_STATIONS)
    return site, ed, arts, WeatherBlock(obs)


def links(sid: int, addr: str) -> tuple[str, str]:
    base = "https://feeds.newsspace.kr"
    now = datetime.now(UTC)
    return (
        f"{base}/unsubscribe/{make_token(SECRET, 'unsubscribe', sid, addr, now=now)}",
        f"{base}/preferences/{make_token(SECRET, 'preferences', sid, addr, now=now)}",
    )


def ours(n: int) -> tuple[float, int]:
    site, ed, arts, block = edition()
    renderer = digest.DigestRenderer([ROOT / "templates"])
    now = datetime.now(UTC)
    started = time.perf_counter()
    templates = {}
    for choice in CHOICES:
        secs = [s for s in SECTIONS if not choice or s.slug in choice]
        rendered = renderer.render(site, ed, digest.pick_sections(secs, arts, 5), block, web_url="https://x/d")
        templates[choice] = digest.prepare(site, rendered, ed.day)
    total = 0
    for sid in range(n):
        addr = f"reader{sid}@example.com"
        unsub, prefs = links(sid, addr)
        template = templates[CHOICES[sid % 8]]
        msg_id = digest.message_id(site, ed, sid)
        data = digest.personalize(
            site, template, to=addr, msg_id=msg_id, unsubscribe_url=unsub, preferences_url=prefs, now=now
        )
        total += len(data)
        if sid % 1000 == 0:
            _check(data, unsub)
    return time.perf_counter() - started, total


def naive(n: int) -> float:
    import css_inline

    site, ed, arts, block = edition()
    renderer = digest.DigestRenderer([ROOT / "templates"])
    renderer._inliner = type("NoInline", (), {"inline": staticmethod(lambda html: html)})()  # inline below, per message
    inliner = css_inline.CSSInliner(keep_style_tags=True, load_remote_stylesheets=False)
    started = time.perf_counter()
    for sid in range(n):
        addr = f"reader{sid}@example.com"
        unsub, prefs = links(sid, addr)
        choice = CHOICES[sid % 8]
        secs = [s for s in SECTIONS if not choice or s.slug in choice]
        rendered = renderer.render(site, ed, digest.pick_sections(secs, arts, 5), block, web_url="https://x/d")
        html, text = rendered.fill({"unsubscribe": unsub, "preferences": prefs})
        html = inliner.inline(html)
        msg = EmailMessage(policy=policy.SMTP)
        msg["From"] = site.sender
        msg["To"] = addr
        msg["Subject"] = digest.subject_for(site, ed.day)
        msg["Message-ID"] = digest.message_id(site, ed, sid)
        msg["List-Unsubscribe"] = f"<{unsub}>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        msg.set_content(text)
        msg.add_alternative(html, subtype="html")
        data = msg.as_bytes()
        if sid % 1000 == 0:
            _check(data, unsub)
    return time.perf_counter() - started


def _check(data: bytes, unsub: str) -> None:
    msg = email.message_from_bytes(data, policy=policy.default)
    plain = msg.get_body(("plain",))
    assert plain is not None and unsub in plain.get_content(), "the subscriber's link is missing"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subscribers", type=int, default=100_000)
    ap.add_argument("--naive", type=int, default=1000)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    seconds, size = ours(args.subscribers)
    naive_seconds = naive(args.naive)
    ours_rate, naive_rate = args.subscribers / seconds, args.naive / naive_seconds
    md = "\n".join(
        [
            "## Rendering the digest (issue 6)",
            "",
            f"`{' '.join(['.venv/bin/python bench/render.py', *(a for a in sys.argv[1:] if a != '--write')])}` on "
            f"{datetime.now(UTC):%Y-%m-%d}, {os.cpu_count()} cores, one process. One edition (4 sections × 5 articles, "
            f"16 weather lines) for {args.subscribers:,} subscribers over 8 section choices; complete message bytes "
            f"(average {size // args.subscribers:,} bytes). The naive way (render, inline CSS, `EmailMessage` per "
            f"subscriber) ran on {args.naive:,} subscribers.",
            "",
            "| way | messages/s | total |",
            "|---|---|---|",
            f"| feedservice (render once per choice, personalise bytes) | {ours_rate:,.0f} | {seconds:.1f} s |",
            f"| naive | {naive_rate:,.0f} | {naive_seconds:.1f} s for {args.naive:,} |",
            f"| ratio | {ours_rate / naive_rate:.0f}× | |",
        ]
    )
    print(md)
    if args.write:
        write_section("render", md)


if __name__ == "__main__":
    main()
