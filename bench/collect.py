"""Collector benchmark: feedservice `collect` against lemon24's reader, same feeds, same run.

    .venv/bin/python bench/collect.py [--n 100 500 1000] [--reps 3] [--reader-reps 1] [--write]

Generates N RSS feeds (50 entries each, Korean text, ~100 KB), serves them from Debian's
nginx on 127.0.0.1 (which honours ETag/Last-Modified; installed with apt-get if missing),
and times a cold collect (empty database) and a warm one (nothing changed: all 304) for
feedservice and, as the baseline, reader's ``update_feeds()`` (reader is installed into its
own virtualenv under var/bench/). Each measurement runs in its own process, so the peak
memory reported is that run's. Medians of --reps runs; ``--write`` records the results in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from xml.sax.saxutils import escape

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, Nginx, Row, TreeMemory, median, run_child, write_section

from feedservice import aio

WORK = ROOT / "var" / "bench"
WORDS = (
    "정부 발표 경제 성장 기술 혁신 인공지능 데이터 센터 투자 시장 기업 소비자 정책 지역 도시 공간 사회 "
    "변화 분석 전문가 전망 올해 내년 지난해 대비 증가 감소 규모 서비스 플랫폼 반도체 수출 금리 물가 "
    "주택 교통 환경 교육 문화 청년 고령화 일자리 연구 발표 계획 추진 확대 강화 논의 과제 협력"
).split()


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 16))) + "."


def make_feed(i: int, base: str, now: datetime) -> bytes:
    rng = random.Random(i)
    items = []
    for n in range(50):
        idx = i * 1000 + n
        # Shaped like the newsroom CMS's feeds: a byline lead, paragraphs with &nbsp;, now and then
        # a photo or a related link (absolute URLs, as the CMS writes them).
        paras = [f"<p>{'&nbsp;'.join(_sentence(rng) for _ in range(4))}</p>" for _ in range(4)]
        if n % 3 == 0:
            paras.insert(
                1,
                f'<figure><img src="{base}/news/photo/{idx}.jpg" alt="{idx}"><figcaption>'
                f"{_sentence(rng)}</figcaption></figure>",
            )
        if n % 5 == 0:
            related = f"{base}/news/articleView.html?idxno={idx - 7}"
            paras.append(f'<p>관련 기사: <a href="{related}">{_sentence(rng)}</a></p>')
        body = "".join(paras)
        items.append(
            f"""    <item>
      <title>{escape(" ".join(rng.choice(WORDS) for _ in range(6)))} {idx}</title>
      <link>{base}/news/articleView.html?idxno={idx}</link>
      <guid isPermaLink="true">{base}/news/articleView.html?idxno={idx}</guid>
      <description><![CDATA[<p>[뉴스스페이스=김정영 기자]</p>{body}]]></description>
      <author>김정영 기자</author>
      <category>{rng.choice(["빅테크", "공간사회학", "경제", "사회"])}</category>
      <pubDate>{format_datetime(now - timedelta(minutes=17 * n + i))}</pubDate>
    </item>
"""
        )
    return (
        f"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0">
  <channel>
    <title>피드 {i}</title>
    <link>{base}/</link>
    <description>벤치마크용 피드 {i}</description>
    <language>ko</language>
{"".join(items)}  </channel>
</rss>
"""
    ).encode()


def generate(root: Path, n: int) -> list[str]:
    feeds = root / "feeds"
    feeds.mkdir(parents=True, exist_ok=True)
    now = datetime(2026, 11, 27, 22, 0, tzinfo=UTC)
    names = []
    for i in range(n):
        path = feeds / f"f{i}.xml"
        if not path.exists():
            path.write_bytes(make_feed(i, "https://www.newsspace.kr", now))
        names.append(f"/feeds/f{i}.xml")
    return names


# -- children ---------------------------------------------------------------------------------
def child_feedservice(urls: list[str], reps: int) -> None:
    from feedservice.bootstrap import make_app
    from feedservice.config import parse_settings

    cold, warm, starts, articles = [], [], [], 0
    memory = TreeMemory().__enter__()
    for _ in range(reps):
        with tempfile.TemporaryDirectory() as tmp:
            data = {
                "site": {"name": "bench", "url": "https://www.newsspace.kr"},
                "database": {"url": f"sqlite:///{tmp}/fs.db"},
                "sections": [{"slug": "bigtech", "title": "빅테크"}],
                "sources": [{"url": u, "section": "bigtech"} for u in urls],
                "collect": {"allow_hosts": ["127.0.0.1"], "concurrency": 50, "per_host": 50, "timeout": 120},
                "weather": {"provider": "none"},
                "digest": {"from": "bench <b@example.com>"},
            }
            app = make_app(parse_settings(data, base_dir=Path(tmp)))
            # The parser processes are up before the clock starts, as in `feedservice run`, which
            # starts them once and keeps them; their start is reported on its own.
            starts.append(app.start_parsers())
            t = time.perf_counter()
            report = aio.run(app.collect(force=True))
            cold.append(time.perf_counter() - t)
            assert report.failed == 0, report.errors
            t = time.perf_counter()
            report2 = aio.run(app.collect(force=True))
            warm.append(time.perf_counter() - t)
            assert report2.not_modified == len(urls), report2.summary()
            articles = app.store.count_articles()
            app.close()
    memory.__exit__()
    # Peak resident memory of the whole process tree (the parser pool included).
    print(json.dumps({"cold": cold, "warm": warm, "start": starts, "entries": articles, "peak_mb": memory.peak_mb}))


def reader_python() -> str:
    venv = WORK / "reader-venv"
    py = venv / "bin" / "python"
    if not py.exists():
        print("creating the baseline's virtualenv with reader (pip) …", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "reader==3.26", "sgmllib3k"], check=True)
    return str(py)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[100, 500, 1000])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--reader-reps", type=int, default=1)
    ap.add_argument("--reader-n", type=int, nargs="*", default=None, help="N values to run reader on (default: all)")
    ap.add_argument("--write", action="store_true", help="record the results in docs/benchmarks.md")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--urls", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "feedservice":
        child_feedservice(Path(args.urls).read_text().split(), args.reps)
        return

    www = WORK / "www"
    generate(www, max(args.n))
    nginx = Nginx(www, WORK / "nginx")
    rows: list[Row] = []
    try:
        for n in args.n:
            urls_file = WORK / f"urls-{n}.txt"
            urls_file.write_text("\n".join(nginx.url(p) for p in generate(www, n)))
            fs = run_child(
                [sys.executable, __file__, "--child", "feedservice", "--urls", str(urls_file), "--reps", str(args.reps)]
            )
            row: Row = {"n": n, "fs": fs}
            if args.reader_n is None or n in args.reader_n:
                row["reader"] = run_child(
                    [
                        reader_python(),
                        str(Path(__file__).with_name("_reader_child.py")),
                        str(urls_file),
                        str(args.reader_reps),
                    ],
                    env={**os.environ, "PYTHONPATH": ""},
                )
            rows.append(row)
            _print_row(row)
    finally:
        nginx.stop()
    md = _markdown(rows, args)
    print(md)
    if args.write:
        write_section("collect", md)


def _rate(n: int, seconds: list[float]) -> float:
    return n / median(seconds)


def _print_row(row: Row) -> None:
    n, fs = row["n"], row["fs"]
    line = (
        f"N={n}: feedservice cold {_rate(n, fs['cold']):.0f} feeds/s, warm {_rate(n, fs['warm']):.0f} feeds/s, "
        f"peak {fs['peak_mb']:.0f} MB, {fs['entries']} articles, parsers started in {median(fs['start']):.2f} s"
    )
    if "reader" in row:
        r = row["reader"]
        line += (
            f" | reader cold {_rate(n, r['cold']):.1f} feeds/s, warm {_rate(n, r['warm']):.0f} feeds/s, "
            f"peak {r['peak_mb']:.0f} MB, {r['entries']} entries"
        )
    print(line, file=sys.stderr)


def _markdown(rows: list[Row], args: argparse.Namespace) -> str:
    out = [
        "## Collect (issue 3)",
        "",
        f"`.venv/bin/python bench/collect.py {' '.join(a for a in sys.argv[1:] if a != '--write')}` on "
        f"{datetime.now(UTC):%Y-%m-%d}, {os.cpu_count()} cores. N RSS feeds of 50 entries "
        "(Korean text, ~100 KB each) served by Debian's nginx on 127.0.0.1; cold = empty database, warm = "
        "nothing changed (all 304). Medians; each side in its own process; reader 3.26 "
        "`update_feeds(scheduled=False)` as the baseline. Peak memory is the resident memory of the whole "
        "process tree (feedservice's parser pool included), sampled every 20 ms. feedservice's two parser "
        "processes are started before the clock starts (as `feedservice run` does once, keeping them for its "
        "lifetime); the last column is what starting them took.",
        "",
        "| N | feedservice cold (feeds/s) | reader cold | ratio | feedservice warm (feeds/s) | reader warm | ratio "
        "| feedservice peak MB | reader peak MB | parser start (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        n, fs, r = row["n"], row["fs"], row.get("reader")
        fc, fw = _rate(n, fs["cold"]), _rate(n, fs["warm"])
        if r:
            rc, rw = _rate(n, r["cold"]), _rate(n, r["warm"])
            out.append(
                f"| {n} | {fc:.0f} | {rc:.1f} | {fc / rc:.1f}× | {fw:.0f} | {rw:.0f} | {fw / rw:.1f}× "
                f"| {fs['peak_mb']:.0f} | {r['peak_mb']:.0f} | {median(fs['start']):.2f} |"
            )
        else:
            out.append(
                f"| {n} | {fc:.0f} | – | – | {fw:.0f} | – | – | {fs['peak_mb']:.0f} | – | {median(fs['start']):.2f} |"
            )
    return "\n".join(out)


if __name__ == "__main__":
    main()
