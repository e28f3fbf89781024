"""The whole path on real components: HTTP feeds → collect → store → feeds → digest → SMTP.

A real HTTP server on 127.0.0.1 serves the feeds and a KMA response; aiosmtpd on
127.0.0.1 receives the mail; the CLI runs in-process; SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import email
import mailbox
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from pathlib import Path
from zoneinfo import ZoneInfo

import feedparser
import pytest

from feedservice.cli.demo import sample_rss, sample_sfctm2
from feedservice.cli.main import main
from tests.conftest import FeedServer, Served, SmtpSink, body_text, shared_fixture, write_config
from tests.test_digest import Clock

KST = ZoneInfo("Asia/Seoul")
DAY = "2026-11-20"  # sent at 07:00 KST that day (the clock below): everything collected before it

BIGTECH = [
    (
        "빅테크 5사, AI 데이터센터 투자 경쟁",
        "데이터센터 증설 경쟁이 본격화했다.",
        "김정영",
        datetime(2026, 11, 19, 21, 0, tzinfo=KST),
        101,
    ),
    (
        "클라우드 요금 인상 예고",
        "스타트업의 비용 부담이 커진다.",
        "이서준",
        datetime(2026, 11, 19, 15, 0, tzinfo=KST),
        102,
    ),
    ("사흘 전의 오래된 기사", "창 밖의 기사.", "박하늘", datetime(2026, 11, 17, 9, 0, tzinfo=KST), 103),
]
SPACE = [("걷는 도시가 답이다", "골목 상권이 달라졌다.", "정다은", datetime(2026, 11, 20, 6, 30, tzinfo=KST), 201)]


@pytest.fixture(autouse=True)
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The time the commands see: the edition's send time. An edition holds what was collected
    before it was composed, so these tests collect and send on the edition's morning."""
    from feedservice import bootstrap

    now = Clock(datetime(2026, 11, 20, 7, 0, tzinfo=KST))
    monkeypatch.setattr(bootstrap, "utcnow", now)
    return now


def _serve(feed_server: FeedServer) -> None:
    base = "https://www.newsspace.kr"
    feed_server.files["/rss/bigtech.xml"] = Served(sample_rss(base, "bigtech", "빅테크", BIGTECH))
    feed_server.files["/rss/space.xml"] = Served(sample_rss(base, "space-sociology", "공간사회학", SPACE))
    feed_server.files["/rss/broken.xml"] = Served(b"<html><body>502 Bad Gateway</body></html>", "text/html")
    # The observation of the edition's own morning (06:00 KST on 2026-11-20): a late send shows that.
    feed_server.files["/kma"] = Served(sample_sfctm2(datetime(2026, 11, 19, 21, 0, tzinfo=UTC)), "text/plain")


def test_whole_cycle_into_smtp(
    tmp_path: Path,
    db_url: str,
    feed_server: FeedServer,
    smtp_server: tuple[SmtpSink, int],
    capsys: pytest.CaptureFixture[str],
) -> None:
    sink, port = smtp_server
    _serve(feed_server)
    cfg = write_config(
        tmp_path,
        db_url=db_url,
        sources=[
            (feed_server.url("/rss/bigtech.xml"), "bigtech"),
            (feed_server.url("/rss/space.xml"), "space-sociology"),
            (feed_server.url("/rss/broken.xml"), "bigtech"),
        ],
        weather_provider="kma",
        weather_extra=f'base_url = "{feed_server.url("/kma")}"',
        delivery_extra=f'[delivery.smtp]\nhost = "127.0.0.1"\nport = {port}\ntls = "none"',
    )
    c = ["--config", str(cfg)]
    # One broken source: the job ran but something failed → 1; the others are collected.
    assert main([*c, "collect"]) == 1
    out = capsys.readouterr().out
    assert "2 fetched" in out and "1 failed" in out and "7 new" not in out and "4 new" in out
    assert main([*c, "build-feeds"]) == 0

    rss = feedparser.parse((tmp_path / "feeds" / "bigtech.xml").read_bytes())
    assert not rss.bozo
    assert [e.title for e in rss.entries] == [t for t, *_ in BIGTECH]
    atom = feedparser.parse((tmp_path / "feeds" / "all.atom").read_bytes())
    assert not atom.bozo and len(atom.entries) == 4

    assert main([*c, "weather", "--refresh"]) in (0, 1)  # stores the morning's observations
    assert main([*c, "subscribers", "add", "all@example.com"]) == 0
    assert main([*c, "subscribers", "add", "Space.Fan@Example.COM", "--sections", "space-sociology"]) == 0
    assert main([*c, "subscribers", "add", "x@example.com", "--sections", "nope"]) == 2
    capsys.readouterr()
    assert main([*c, "digest", "send", "--date", DAY]) == 0
    assert "2 sent" in capsys.readouterr().out

    assert sorted(to for _, [to], _ in sink.messages) == ["Space.Fan@example.com", "all@example.com"]
    by_rcpt = {to: email.message_from_bytes(raw, policy=policy.default) for _, [to], raw in sink.messages}
    full = by_rcpt["all@example.com"]
    assert str(full["Subject"]) == "뉴스스페이스 아침 브리핑 2026.11.20 (금)"
    html = body_text(full, "html")
    text = body_text(full, "plain")
    for title in ("빅테크 5사, AI 데이터센터 투자 경쟁", "클라우드 요금 인상 예고", "걷는 도시가 답이다"):
        assert title in html and title in text
    assert "오래된 기사" not in html  # published more than 48 h before the edition: a backlog item
    assert "구름조금 서울 29.1℃" in html and "기상청 제공" in html
    space_only = body_text(by_rcpt["Space.Fan@example.com"], "html")
    assert "걷는 도시가 답이다" in space_only and "클라우드" not in space_only

    # Sending again resumes nothing: everyone already has it.
    assert main([*c, "digest", "send", "--date", DAY]) == 0
    assert len(sink.messages) == 2
    assert main([*c, "digest", "status", "--date", DAY]) == 0
    assert "2 sent" in capsys.readouterr().out

    # A second collect sends validators and gets 304s.
    assert main([*c, "collect", "--all"]) == 1
    assert "2 not modified" in capsys.readouterr().out
    assert any(h.get("If-None-Match") for p, h in feed_server.requests if p == "/rss/bigtech.xml")

    assert main([*c, "sources"]) == 0
    table = capsys.readouterr().out
    assert "failing ×2" in table and "not a feed" in table


def test_default_delivery_is_a_maildir(tmp_path: Path, feed_server: FeedServer) -> None:
    _serve(feed_server)
    cfg = write_config(tmp_path, sources=[(feed_server.url("/rss/bigtech.xml"), "bigtech")])
    c = ["--config", str(cfg)]
    assert main([*c, "collect"]) == 0
    assert main([*c, "subscribers", "add", "reader@example.com"]) == 0
    assert main([*c, "digest", "send", "--date", DAY]) == 0
    box = mailbox.Maildir(str(tmp_path / "mail"), create=False)
    [msg] = [email.message_from_bytes(m.as_bytes(), policy=policy.default) for m in box]
    assert msg["To"] == "reader@example.com"
    assert "빅테크 5사" in body_text(msg, "plain")


def test_digest_preview_writes_three_files(
    tmp_path: Path, feed_server: FeedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    _serve(feed_server)
    cfg = write_config(tmp_path, sources=[(feed_server.url("/rss/bigtech.xml"), "bigtech")])
    assert main(["--config", str(cfg), "collect"]) == 0
    out_dir = tmp_path / "preview"
    assert main(["--config", str(cfg), "digest", "preview", "--date", DAY, "--out", str(out_dir)]) == 0
    printed = capsys.readouterr().out
    for name in ("index.html", "digest.txt", "digest.eml"):
        assert str(out_dir / name) in printed
    assert "빅테크 5사" in (out_dir / "index.html").read_text(encoding="utf-8")
    eml = email.message_from_bytes((out_dir / "digest.eml").read_bytes(), policy=policy.default)
    assert eml["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_broken_template_fails_preview_before_sending(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tpl = tmp_path / "tpl"
    tpl.mkdir()
    (tpl / "digest.txt.j2").write_text("{{ site.name }}\n{% if %}\n", encoding="utf-8")
    cfg = write_config(tmp_path)
    cfg.write_text(
        cfg.read_text(encoding="utf-8").replace("[digest]", f'[digest]\ntemplates_dir = "{tpl}"'), encoding="utf-8"
    )
    assert main(["--config", str(cfg), "subscribers", "add", "r@example.com"]) == 0
    assert main(["--config", str(cfg), "digest", "preview", "--date", DAY, "--out", str(tmp_path / "p")]) == 1
    err = capsys.readouterr().err
    assert "digest.txt.j2:2" in err
    assert main(["--config", str(cfg), "digest", "send", "--date", DAY]) == 1
    assert not (tmp_path / "mail").exists() or not list((tmp_path / "mail" / "new").iterdir())


def test_real_korean_feed_over_http(tmp_path: Path, feed_server: FeedServer) -> None:
    data = shared_fixture("feeds", "real", "khan_total_news_2018-04-06.xml").read_bytes()
    feed_server.files["/khan.xml"] = Served(data, "application/rss+xml; charset=utf-8")
    cfg = write_config(tmp_path, sources=[(feed_server.url("/khan.xml"), "bigtech")])
    assert main(["--config", str(cfg), "collect"]) == 0
    assert main(["--config", str(cfg), "build-feeds"]) == 0
    parsed = feedparser.parse((tmp_path / "feeds" / "bigtech.xml").read_bytes())
    assert not parsed.bozo and len(parsed.entries) == 50
    assert parsed.entries[0].title == "당정청 “정시·수시 적절 수준으로 조정해야”"


def _maildir_messages(folder: Path) -> list[EmailMessage]:
    box = mailbox.Maildir(str(folder), create=False)
    return [email.message_from_bytes(m.as_bytes(), policy=policy.default) for m in box]


def test_corrected_article_is_not_news_again(tmp_path: Path, feed_server: FeedServer, clock: Clock) -> None:
    feed_server.files["/rss/bigtech.xml"] = Served(sample_rss("https://www.newsspace.kr", "bigtech", "빅테크", BIGTECH))
    cfg = write_config(tmp_path, sources=[(feed_server.url("/rss/bigtech.xml"), "bigtech")])
    c = ["--config", str(cfg)]
    assert main([*c, "collect"]) == 0
    assert main([*c, "subscribers", "add", "reader@example.com"]) == 0
    assert main([*c, "digest", "send", "--date", DAY]) == 0
    # The CMS corrects the first article and moves its date into the next edition's window;
    # a genuinely new article comes too.
    corrected = [
        (
            "빅테크 5사, AI 데이터센터 투자 경쟁 (수정)",
            "고친 요약.",
            "김정영",
            datetime(2026, 11, 20, 9, 0, tzinfo=KST),
            101,
        ),
        ("새 기사", "새 요약.", "이서준", datetime(2026, 11, 20, 10, 0, tzinfo=KST), 104),
    ]
    feed_server.files["/rss/bigtech.xml"] = Served(
        sample_rss("https://www.newsspace.kr", "bigtech", "빅테크", corrected)
    )
    clock.now = datetime(2026, 11, 21, 7, 0, tzinfo=KST)
    assert main([*c, "collect", "--all"]) == 0
    assert main([*c, "digest", "send", "--date", "2026-11-21"]) == 0
    [second] = [m for m in _maildir_messages(tmp_path / "mail") if "2026.11.21" in str(m["Subject"])]
    text = body_text(second, "plain")
    assert "새 기사" in text and "수정" not in text


@pytest.mark.parametrize("when_empty", ["skip", "note"])
def test_reader_whose_sections_have_nothing_new(tmp_path: Path, feed_server: FeedServer, when_empty: str) -> None:
    feed_server.files["/rss/bigtech.xml"] = Served(sample_rss("https://www.newsspace.kr", "bigtech", "빅테크", BIGTECH))
    cfg = write_config(tmp_path, sources=[(feed_server.url("/rss/bigtech.xml"), "bigtech")])
    cfg.write_text(
        cfg.read_text(encoding="utf-8").replace("[digest]", f'[digest]\nwhen_empty = "{when_empty}"'), encoding="utf-8"
    )
    c = ["--config", str(cfg)]
    assert main([*c, "collect"]) == 0
    assert main([*c, "subscribers", "add", "space@example.com", "--sections", "space-sociology"]) == 0
    assert main([*c, "subscribers", "add", "all@example.com"]) == 0
    assert main([*c, "digest", "send", "--date", DAY]) == 0
    by_rcpt = {m["To"]: m for m in _maildir_messages(tmp_path / "mail")}
    assert "all@example.com" in by_rcpt
    if when_empty == "skip":
        assert "space@example.com" not in by_rcpt
    else:
        note = body_text(by_rcpt["space@example.com"], "plain")
        assert "새 기사가 없습니다" in note and "빅테크 5사" not in note
