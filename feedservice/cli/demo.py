"""`feedservice demo`: one full cycle offline, on sample data written for this project.

It serves sample section feeds (RSS 2.0 and Atom) and a sample KMA kma_sfctm2 response
from a local HTTP server on 127.0.0.1, writes a config into a fresh folder (SQLite
database, Maildir), then collects, builds the feeds, refreshes the weather, previews
the digest and delivers it to two sample subscribers, and prints where everything is.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

from feedservice import aio
from feedservice.bootstrap import App, make_app
from feedservice.cli.preview import NOTICE, write_preview
from feedservice.config import load_settings
from feedservice.model import SubscriberStatus

KST = ZoneInfo("Asia/Seoul")

# Sample articles written for the demo: (section, title, summary, reporter).
ARTICLES = [
    (
        "bigtech",
        "빅테크 5사, 생성형 AI 데이터센터 투자 경쟁 본격화",
        "국내외 빅테크 기업들이 올해 데이터센터 증설에 역대 최대 규모의 투자를 예고했다. 전력 확보가 새로운 변수로 떠올랐다.",
        "김정영",
    ),
    (
        "bigtech",
        "클라우드 요금 인상, 스타트업 비용 부담 커진다",
        "주요 클라우드 사업자가 내년부터 저장·전송 요금을 올리기로 하면서 초기 기업들의 비용 구조 재검토가 불가피해졌다.",
        "이서준",
    ),
    (
        "bigtech",
        "앱 마켓 수수료 분쟁, 규제 당국 판단 임박",
        "앱 결제 수수료를 둘러싼 개발사와 플랫폼의 갈등이 이어지는 가운데 규제 당국의 결론이 이달 중 나올 전망이다.",
        "김정영",
    ),
    (
        "bigtech",
        "‘온디바이스 AI’ 스마트폰, 배터리 효율이 승부처",
        "기기 안에서 AI를 돌리는 스마트폰이 늘면서 전력 효율을 높이는 칩 설계 경쟁이 치열하다.",
        "박하늘",
    ),
    (
        "space-sociology",
        "골목 상권의 변화, 걷는 도시가 답이다",
        "보행 친화적 거리로 바뀐 골목에서 소상공인 매출이 늘었다는 분석이 나왔다. 도시 공간 설계가 지역 경제를 바꾼다.",
        "정다은",
    ),
    (
        "space-sociology",
        "1인 가구 시대의 공유 주거, 공동체는 가능한가",
        "공유 주택 입주자들은 비용보다 관계를 이유로 꼽았다. 공간이 사람 사이의 거리를 어떻게 바꾸는지 살펴봤다.",
        "최민호",
    ),
    (
        "space-sociology",
        "도서관이 동네의 거실이 되다",
        "조용한 열람실 대신 대화와 모임이 있는 ‘생활형 도서관’이 늘고 있다.",
        "정다은",
    ),
    (
        "economy",
        "기준금리 동결 전망 우세… 가계부채 관리가 관건",
        "시장에서는 이번 달 기준금리 동결을 점치는 의견이 많다. 가계부채 증가세가 변수로 꼽힌다.",
        "한지우",
    ),
    (
        "economy",
        "수출 3개월 연속 증가, 반도체가 견인",
        "지난달 수출이 전년보다 늘며 3개월 연속 증가세를 이어갔다. 반도체와 선박이 증가를 이끌었다.",
        "한지우",
    ),
    (
        "society",
        "폭염 대비 ‘무더위 쉼터’ 운영 시간 연장",
        "각 지자체가 무더위 쉼터 운영 시간을 밤 9시까지 늘리고 취약계층 방문 점검을 강화한다.",
        "오수빈",
    ),
    (
        "society",
        "지하철 심야 운행 재개 첫 주, 이용객 20% 늘어",
        "심야 연장 운행이 재개된 첫 주 이용객이 지난해보다 20% 늘었다.",
        "오수빈",
    ),
]

# Sample observations for the demo's KMA response: station → (temp, cloud tenths, WC, VS 10 m, RH).
SAMPLE_WEATHER = {
    98: (27.7, 7, -9, 2000, 68),
    105: (29.4, 9, -9, 2500, 63),
    108: (29.1, 4, -9, 2000, 58),
    133: (30.2, 5, -9, 2000, 55),
    143: (32.3, 1, -9, 2500, 45),
    152: (29.4, 3, 5, 650, 62),
    156: (31.6, 2, -9, 2200, 50),
    159: (26.6, 4, -9, 1800, 78),
    172: (32.1, 3, -9, 2000, 52),
    184: (29.6, 0, -9, 2000, 66),
    201: (26.9, 10, -9, 1500, 80),
    226: (28.2, 6, -9, 2000, 64),
    238: (30.3, 5, -9, 2000, 55),
    259: (30.8, 8, -9, 2000, 60),
    283: (32.9, 3, -9, 2000, 46),
    294: (28.1, 4, -9, 2000, 72),
}


def sample_rss(base: str, section: str, title: str, items: list[tuple[str, str, str, datetime, int]]) -> bytes:
    entries = "".join(
        f"""
    <item>
      <title>{escape(t)}</title>
      <link>{base}/news/articleView.html?idxno={idx}</link>
      <guid isPermaLink="true">{base}/news/articleView.html?idxno={idx}</guid>
      <description><![CDATA[<p>[뉴스스페이스={who} 기자] {escape(summary)}</p>]]></description>
      <author>{who} 기자</author>
      <category>{escape(title)}</category>
      <pubDate>{format_datetime(when.astimezone(KST))}</pubDate>
    </item>"""
        for t, summary, who, when, idx in items
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0">
  <channel>
    <title>뉴스스페이스 - {escape(title)}</title>
    <link>{base}/</link>
    <description>뉴스스페이스 {escape(title)} 섹션 (데모)</description>
    <language>ko</language>{entries}
  </channel>
</rss>
""".encode()


def sample_atom(base: str, title: str, items: list[tuple[str, str, str, datetime, int]]) -> bytes:
    newest = max(i[3] for i in items).isoformat()
    entries = "".join(
        f"""
  <entry>
    <title>{escape(t)}</title>
    <id>{base}/news/articleView.html?idxno={idx}</id>
    <link href="{base}/news/articleView.html?idxno={idx}"/>
    <updated>{when.astimezone(KST).isoformat()}</updated>
    <author><name>{who}</name></author>
    <summary type="html">{escape(f"<p>{summary}</p>")}</summary>
  </entry>"""
        for t, summary, who, when, idx in items
    )
    return f"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="ko">
  <title>뉴스스페이스 - {escape(title)}</title>
  <id>{base}/atom/{idx_of(title)}</id>
  <updated>{newest}</updated>
  <link href="{base}/"/>{entries}
</feed>
""".encode()


def idx_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def sample_sfctm2(observed: datetime) -> bytes:
    """A kma_sfctm2 response (help=0) in the API Hub's layout, with the demo's sample values."""
    tm = observed.astimezone(KST).strftime("%Y%m%d%H00")
    lines = [
        "#START7777",
        "#" + "".join(str(i % 10) for i in range(2, 256)),
        "# YYMMDDHHMI STN  WD   WS GST  GST  GST     PA     PS PT    PR    TA    TD    HM    PV     RN     RN"
        "     RN     RN     SD     SD     SD WC WP WW                      CA  CA   CH CT        CT  CT  CT"
        "    VS   SS    SI ST    TS    TE    TE    TE    TE  ST   WH BF IR IX",
    ]
    for stn, (ta, ca, wc, vs, hm) in SAMPLE_WEATHER.items():
        lines.append(
            f"{tm} {stn:3d}  20  2.0  -9 -9.0   -9 1000.0 1006.0  7  -0.5 {ta:5.1f}  20.0 {hm:5.1f}  25.0"
            "   -9.0   -9.0   -9.0   -9.0   -9.0   -9.0   -9.0"
            f" {wc:2d} -9 -                       {ca:2d}  {max(ca - 1, 0):2d}   15 -         -9  -9  -9"
            f" {vs:5d}  0.9  2.12 -9  40.0 -99.0 -99.0 -99.0 -99.0  -9 -9.0 -9  3 -9"
        )
    lines.append("#7777END")
    return ("\n".join(lines) + "\n").encode("cp949")


class _Handler(BaseHTTPRequestHandler):
    files: ClassVar[dict[str, tuple[bytes, str]]] = {}

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path not in self.files:
            self.send_error(404)
            return
        body, ctype = self.files[path]
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        if self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.send_header("ETag", etag)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", etag)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


def _build_files(base: str, now: datetime) -> dict[str, tuple[bytes, str]]:
    anchor = now - timedelta(minutes=20)  # the edition, composed now, holds what was just collected
    titles = {"bigtech": "빅테크", "space-sociology": "공간사회학", "economy": "경제", "society": "사회"}
    by_section: dict[str, list[tuple[str, str, str, datetime, int]]] = {s: [] for s in titles}
    for i, (section, title, summary, who) in enumerate(ARTICLES):
        by_section[section].append((title, summary, who, anchor - timedelta(minutes=75 * i), 1000 + i))
    files = {}
    for section, items in by_section.items():
        if section == "space-sociology":
            files[f"/rss/{section}.xml"] = (sample_atom(base, titles[section], items), "application/atom+xml")
        else:
            files[f"/rss/{section}.xml"] = (
                sample_rss(base, section, titles[section], items),
                "application/rss+xml; charset=utf-8",
            )
    # The last hourly observation before the edition.
    files["/kma_sfctm2.php"] = (sample_sfctm2(now - timedelta(hours=1)), "text/plain; charset=euc-kr")
    return files


CONFIG = """\
[site]
name = "뉴스스페이스"
url = "https://www.newsspace.kr"
public_url = "http://127.0.0.1:8080"
postal_address = "서울특별시 중구 세종대로 000 (데모)"

[database]
url = "sqlite:///{dir}/feedservice.db"

[[sections]]
slug = "bigtech"
title = "빅테크"

[[sections]]
slug = "space-sociology"
title = "공간사회학"

[[sections]]
slug = "economy"
title = "경제"

[[sections]]
slug = "society"
title = "사회"

{sources}
[collect]
allow_hosts = ["127.0.0.1"]

[feeds]
output_dir = "{dir}/feeds"

[weather]
provider = "kma"
api_key_env = "FEEDSERVICE_DEMO_KMA_KEY"
base_url = "{base}/kma_sfctm2.php"
fallback = "none"

[digest]
from = "뉴스스페이스 <newsletter@newsspace.kr>"

[delivery]
maildir = "{dir}/mail"
"""


def run_demo(folder: Path | None = None) -> int:
    folder = (folder or Path(tempfile.mkdtemp(prefix="feedservice-demo-"))).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    now = datetime.now(UTC)
    today = now.astimezone(KST).date()
    _Handler.files = _build_files(base, now)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        sources = "\n".join(
            f'[[sources]]\nurl = "{base}/rss/{s}.xml"\nsection = "{s}"\n'
            for s in ("bigtech", "space-sociology", "economy", "society")
        )
        cfg = folder / "config.toml"
        cfg.write_text(CONFIG.format(dir=folder, base=base, sources=sources), encoding="utf-8")
        os.environ.setdefault("FEEDSERVICE_DEMO_KMA_KEY", "demo-key")
        os.environ.setdefault("FEEDSERVICE_SECRET", "demo-secret-" + idx_of(str(folder)))
        app = make_app(load_settings(cfg))
        try:
            return aio.run(_cycle(app, folder, today))
        finally:
            app.close()
    finally:
        server.shutdown()
        server.server_close()


async def _cycle(app: App, folder: Path, day: date) -> int:
    collected = await app.collect()
    print(f"collect: {collected.summary()}")
    built = await app.publish_feeds()
    print(f"feeds: {len(built.changed)} files in {app.feeds_dir}")
    weather = await app.refresh_weather()
    print(f"weather: {weather.stations} stations from {weather.provider}")
    now = app.clock()
    for email, sections in (("reader@example.com", ()), ("bigtech.fan@example.com", ("bigtech",))):
        app.store.add_subscriber(email, sections, SubscriberStatus.SUBSCRIBED, now)
    assembled = await app.assemble_edition(day)
    ed, preview = assembled.edition, assembled.preview
    preview_dir = folder / "preview"
    write_preview(app, ed, preview.rendered, preview_dir)
    report = await app.send_digest(day)
    print(f"digest {day}: {report.summary()}")
    print()
    print(f"feeds:           {app.feeds_dir}/  (e.g. {app.feeds_dir / 'bigtech.xml'})")
    print(f"digest preview:  {preview_dir / 'index.html'}")
    print(f"                 {preview_dir / 'digest.txt'}")
    print(f"                 {preview_dir / 'digest.eml'}")
    print(f"                 ({NOTICE})")
    print(f"delivered mail:  {app.settings.path(app.settings.delivery.maildir)}/new/  (a Maildir)")
    print(f"database:        {app.settings.database_url}")
    ok = collected.failed == 0 and weather.provider is not None and report.sent > 0 and not report.failed
    return 0 if ok else 1
