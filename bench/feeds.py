"""Feed building at archive scale: the first build after N stored articles, and a rebuild after one more.

    .venv/bin/python bench/feeds.py [--n 10000 100000] [--reps 5] [--write]

Stores N articles (two sections, Korean text shaped like the newsroom's: an HTML summary, a photo
on every third, full content on every fifth) in a fresh SQLite database, collected in fetches of
500 as the collector stores them; then times ``build_feeds`` with the default 50 entries per page
on an empty output folder (every section's and "all"'s archive pages, current feeds and OPML), and
--reps rebuilds, each after one new article. Each N runs in its own process; medians of the
rebuilds. ``--write`` records the results in docs/benchmarks.md. Targets (issue 14.11): the first
build of 100,000 articles ≤ 60 s, a rebuild ≤ 100 ms, at 10,000 and at 100,000 alike.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, median, peak_rss_mb, run_child, write_section

from feedservice.adapters.store import open_store
from feedservice.model import Article, FetchRecord, Section
from feedservice.services.feeds import FeedSite, build_feeds

WORK = ROOT / "var" / "bench" / "feeds"
PAGE = 50  # [feeds] max_entries, the default
SECTIONS = [Section("bigtech", "빅테크"), Section("space-sociology", "공간사회학")]
SOURCES = [(f"http://127.0.0.1/{s.slug}.xml", s.slug, None) for s in SECTIONS]
SITE = FeedSite(
    "뉴스스페이스", "https://www.newsspace.kr", "https://feeds.newsspace.kr", "ko", ZoneInfo("Asia/Seoul"), 15
)
START = datetime(2026, 1, 1, tzinfo=UTC)
WORDS = (
    "정부 발표 경제 성장 기술 혁신 인공지능 데이터 센터 투자 시장 기업 소비자 정책 지역 도시 공간 사회 "
    "변화 분석 전문가 전망 올해 내년 지난해 대비 증가 감소 규모 서비스 플랫폼 반도체 수출 금리 물가"
).split()


def article(n: int, rng: random.Random, when: datetime) -> Article:
    section = SECTIONS[n % 2]
    words = " ".join(rng.choice(WORDS) for _ in range(40))
    return Article(
        id=f"https://www.newsspace.kr/news/articleView.html?idxno={n}",
        url=f"https://www.newsspace.kr/news/articleView.html?idxno={n}",
        section=section.slug,
        title=" ".join(rng.choice(WORDS) for _ in range(6)) + f" {n}",
        summary_html=f"<p>[뉴스스페이스=김정영 기자]&nbsp;{words}</p>",
        content_html=f"<p>{words}</p><p>{words}</p>" if n % 5 == 0 else "",
        author="김정영" if n % 4 else "",
        categories=(section.title,),
        image_url=f"https://www.newsspace.kr/news/photo/{n}.jpg" if n % 3 == 0 else None,
        image_type="image/jpeg" if n % 3 == 0 else None,
        image_length=48_000 + n % 1000 if n % 3 == 0 else None,
        published=when - timedelta(minutes=n % 30),
        source_url=SOURCES[n % 2][0],
    )


def store_articles(db: str, n: int) -> None:
    """N articles in fetches of 500 a minute apart (each fetch is one first_seen, as collect stores)."""
    store = open_store(db)
    store.sync_sections(SECTIONS)
    store.sync_sources(SOURCES)
    rng = random.Random(n)
    for batch, start in enumerate(range(0, n, 500)):
        now = START + timedelta(minutes=batch)
        arts = [article(i, rng, now) for i in range(start, min(n, start + 500))]
        records = [
            FetchRecord(url, now, None, None, tuple(a for a in arts if a.source_url == url), None)
            for url, _, _ in SOURCES
        ]
        store.record_fetches(records, now)
    store.close()


def child(n: int, reps: int) -> None:
    folder = WORK / str(n)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    db = f"sqlite:///{folder / 'feeds.db'}"
    t0 = time.perf_counter()
    store_articles(db, n)
    stored = time.perf_counter() - t0
    store = open_store(db)
    out = folder / "feeds"
    t0, c0 = time.perf_counter(), time.process_time()
    first = build_feeds(SITE, SECTIONS, store, out, PAGE)
    first_s, first_cpu = time.perf_counter() - t0, time.process_time() - c0
    rebuilds, rebuild_cpu = [], []
    rng = random.Random(0)
    for r in range(reps):
        now = START + timedelta(days=400, minutes=r)
        a = article(n + r, rng, now)
        store.record_fetch_success(a.source_url, now, now, etag=None, last_modified=None, articles=[a])
        t0, c0 = time.perf_counter(), time.process_time()
        report = build_feeds(SITE, SECTIONS, store, out, PAGE)
        rebuilds.append(time.perf_counter() - t0)
        rebuild_cpu.append(time.process_time() - c0)
        assert report.changed, "the new article changed nothing"
    t0 = time.perf_counter()
    unchanged = build_feeds(SITE, SECTIONS, store, out, PAGE)
    unchanged_s = time.perf_counter() - t0
    assert not unchanged.changed
    store.close()
    pages = sum(1 for _ in (out / "archive").rglob("*.atom"))
    row: dict[str, float | list[float]]
    row = {"n": n, "stored_s": stored, "first_s": first_s, "first_cpu_s": first_cpu, "archive_pages": pages}
    row |= {"first_files": len(first.changed), "rebuild_ms": [x * 1000 for x in rebuilds]}
    row |= {"rebuild_cpu_ms": [x * 1000 for x in rebuild_cpu]}
    row |= {"unchanged_ms": unchanged_s * 1000, "peak_mb": peak_rss_mb(), "load": os.getloadavg()[0]}
    print(json.dumps(row))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--write", action="store_true", help="record the results in docs/benchmarks.md")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.reps)
        return
    rows = []
    for n in args.n:
        row = run_child([sys.executable, __file__, "--child", str(n), "--reps", str(args.reps)], timeout=3600)
        print(json.dumps(row), file=sys.stderr)
        rows.append(row)
    command = " ".join(["bench/feeds.py", "--n", *map(str, args.n), "--reps", str(args.reps)])
    md = [
        "## Building feeds at archive scale (issue 14.11)",
        "",
        f"`.venv/bin/python {command}` on {datetime.now(UTC):%Y-%m-%d}, 2 cores, SQLite. N articles in two "
        f"sections stored as the collector stores them (fetches of 500), then `build_feeds` with {PAGE} entries "
        'per page: the first build on an empty folder (every archive page of both sections and of "all", '
        f"the current feeds, OPML), then {args.reps} rebuilds, each after one new article (median, and the "
        "slowest), and one with nothing new. Each N in its own process. The machine is shared and noisy: the "
        "rebuild figures are medians. Targets: first build of 100,000 ≤ 60 s, a rebuild ≤ 100 ms at any N.",
        "",
        "| N | archive pages | first build (s) | its CPU time (s) | rebuild after one article, median (ms) "
        "| its CPU time (ms) | slowest (ms) | rebuild, nothing new (ms) | peak MB | load average at the end |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        md.append(
            f"| {r['n']:,} | {r['archive_pages']:,} | {r['first_s']:.1f} | {r['first_cpu_s']:.1f} "
            f"| {median(r['rebuild_ms']):.0f} | {median(r['rebuild_cpu_ms']):.0f} | {max(r['rebuild_ms']):.0f} "
            f"| {r['unchanged_ms']:.0f} "
            f"| {r['peak_mb']:.0f} | {r['load']:.1f} |"
        )
    text = "\n".join(md)
    print(text)
    if args.write:
        write_section("feeds", text)


if __name__ == "__main__":
    main()
