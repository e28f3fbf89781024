"""The digest: its structure in HTML and text, the MIME message and its headers."""

from __future__ import annotations

import email
from datetime import UTC, date, datetime, timedelta
from email import policy
from email.message import EmailMessage
from pathlib import Path
from zoneinfo import ZoneInfo

import lxml.html
import pytest

from feedservice.bootstrap import BUNDLED_TEMPLATES, App
from feedservice.errors import TemplateError
from feedservice.model import Article, Edition, Observation, Section, WeatherBlock
from feedservice.services.digest import (
    DigestRenderer,
    DigestSite,
    RenderedDigest,
    compose,
    date_label,
    edition_for,
    message_id,
    pick_sections,
)
from tests.conftest import body_part, body_text

KST = ZoneInfo("Asia/Seoul")
NOW = datetime(2025, 7, 1, 21, 0, tzinfo=UTC)  # 2025-07-02 06:00 KST
SITE = DigestSite(
    name="뉴스스페이스",
    url="https://www.newsspace.kr",
    public_url="https://feeds.newsspace.kr",
    language="ko",
    tz=KST,
    sender="뉴스스페이스 <newsletter@newsspace.kr>",
    postal_address="서울특별시 중구 세종대로 000",
)
SECTIONS = [Section("bigtech", "빅테크"), Section("space-sociology", "공간사회학"), Section("economy", "경제")]


def _art(n: int, section: str, title: str, hours: float) -> Article:
    return Article(
        id=f"urn:{n}",
        url=f"https://www.newsspace.kr/news/{n}",
        section=section,
        title=title,
        summary_html=f"<p>[뉴스스페이스=김정영 기자] 기사 {n}의 요약입니다.</p>",
        author="김정영",
        published=NOW - timedelta(hours=hours),
        image_url="https://www.newsspace.kr/p.jpg" if n == 1 else None,
    )


ARTICLES = [
    _art(1, "bigtech", "AI 데이터센터 <script>alert(1)</script> 경쟁", 1),
    _art(2, "space-sociology", "걷는 도시", 2),
    _art(3, "bigtech", "클라우드 & 요금", 3),
    _art(4, "economy", "경제 기사", 30),  # outside the window
]
WEATHER = WeatherBlock(
    (
        Observation(108, "서울", NOW, 29.1, "구름조금"),
        Observation(152, "울산", NOW, 29.4, "연무"),
        Observation(98, "동두천", NOW, None, None),
    )
)


def _render(chosen: tuple[str, ...] = ()) -> tuple[Edition, RenderedDigest]:
    ed = edition_for(date(2025, 7, 2), datetime(2025, 7, 2, 7, 0, tzinfo=KST), None)
    window = [a for a in ARTICLES if a.published and ed.window_start <= a.published < ed.window_end]
    secs = [s for s in SECTIONS if not chosen or s.slug in chosen]
    picked = pick_sections(secs, window, 5)
    renderer = DigestRenderer([BUNDLED_TEMPLATES])
    return ed, renderer.render(SITE, ed, picked, WEATHER, web_url="https://feeds.newsspace.kr/digest/2025-07-02")


def test_date_label_is_korean() -> None:
    assert date_label(date(2025, 7, 2)) == "2025.07.02 (수)"


def test_edition_window_runs_from_the_previous_edition_to_its_composing() -> None:
    at = datetime(2025, 7, 2, 7, 0, tzinfo=KST)
    first = edition_for(date(2025, 7, 2), at, None)
    assert (first.window_start, first.window_end) == (at - timedelta(hours=24), at)
    prev = Edition(date(2025, 7, 1), datetime(2025, 6, 30, 7, tzinfo=KST), datetime(2025, 7, 1, 9, tzinfo=KST))
    assert edition_for(date(2025, 7, 2), at, prev).window_start == datetime(2025, 7, 1, 9, tzinfo=KST)
    early = at - timedelta(minutes=40)  # sent early: the window closes then
    assert edition_for(date(2025, 7, 2), early, prev).window_end == early


def test_html_structure() -> None:
    _, r = _render()
    doc = lxml.html.fromstring(r.html)
    assert doc.xpath("//script") == []
    assert not doc.xpath("//link[@rel='stylesheet']")
    assert "2025.07.02 (수)" in doc.text_content()
    titles = [e.text_content() for e in doc.xpath("//*[contains(@class,'section-title')]")]
    assert titles == ["빅테크", "공간사회학"]  # config order; 경제 has nothing in the window
    headlines = [(a.text_content(), a.get("href")) for a in doc.xpath("//a[contains(@class,'headline')]")]
    assert headlines == [
        ("AI 데이터센터 <script>alert(1)</script> 경쟁", "https://www.newsspace.kr/news/1"),
        ("클라우드 & 요금", "https://www.newsspace.kr/news/3"),
        ("걷는 도시", "https://www.newsspace.kr/news/2"),
    ]
    weather = doc.xpath("//*[contains(@class,'weather-line')]")
    assert [w.text_content() for w in weather] == ["구름조금 서울 29.1℃", "연무 울산 29.4℃", "동두천 관측 없음"]
    assert "기상청 제공" in doc.text_content()
    # Thumbnails are decorative (the headline is beside them): with images blocked they show nothing,
    # and their duplicate link is hidden from screen readers.
    [thumb] = doc.xpath("//img")
    assert thumb.get("alt") == "" and thumb.getparent().get("aria-hidden") == "true"
    assert 'style="' in r.html  # CSS inlined
    footer_links = {a.text_content(): a.get("href") for a in doc.xpath("//td[contains(@class,'footer')]//a")}
    assert footer_links["웹에서 보기"] == "https://feeds.newsspace.kr/digest/2025-07-02"
    assert set(footer_links) == {"웹에서 보기", "구독 설정", "수신 거부"}
    assert "서울특별시 중구 세종대로 000" in doc.text_content()
    assert "기사 1의 요약입니다." in r.html and "[뉴스스페이스=김정영 기자]" not in r.html


def test_text_part_has_the_same_headlines() -> None:
    _, r = _render()
    for title in ("AI 데이터센터 <script>alert(1)</script> 경쟁", "클라우드 & 요금", "걷는 도시"):
        assert title in r.text
    assert "https://www.newsspace.kr/news/3" in r.text
    assert "&amp;" not in r.text and "<table" not in r.text
    assert "  구름조금  서울      29.1℃" in r.text


def test_section_choice() -> None:
    _, r = _render(("space-sociology",))
    assert "걷는 도시" in r.html and "클라우드" not in r.html


def test_message_headers_and_parts() -> None:
    ed, r = _render()
    mid = message_id(SITE, ed, 42)
    assert mid == message_id(SITE, ed, 42) and mid.endswith("@newsspace.kr>")
    raw = compose(
        SITE,
        r,
        day=ed.day,
        to="reader@example.com",
        msg_id=mid,
        unsubscribe_url="https://feeds.newsspace.kr/unsubscribe/42.0.sig",
        preferences_url="https://feeds.newsspace.kr/preferences/42.0.sig",
        now=NOW,
    )
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert str(msg["Subject"]) == "뉴스스페이스 아침 브리핑 2025.07.02 (수)"
    assert msg["From"].addresses[0].display_name == "뉴스스페이스"
    assert msg["From"].addresses[0].addr_spec == "newsletter@newsspace.kr"
    assert msg["Message-ID"] == mid
    assert msg["List-Id"].endswith("<digest.newsspace.kr>")
    assert msg["List-Unsubscribe"] == (
        "<https://feeds.newsspace.kr/unsubscribe/42.0.sig>, <mailto:newsletter@newsspace.kr?subject=unsubscribe>"
    )
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["Date"].datetime == NOW
    assert msg.get_content_type() == "multipart/alternative"
    text = body_text(msg, "plain")
    html = body_text(msg, "html")
    assert "수신 거부: https://feeds.newsspace.kr/unsubscribe/42.0.sig" in text
    assert 'href="https://feeds.newsspace.kr/preferences/42.0.sig"' in html
    assert "%%" not in text and "%%" not in html


def test_message_ids_are_keyed_to_the_installation_and_the_edition() -> None:
    from dataclasses import replace

    ed, _ = _render()
    here, staging = replace(SITE, message_key=b"secret-a"), replace(SITE, message_key=b"secret-b")
    assert message_id(here, ed, 42) == message_id(here, ed, 42)  # a re-send is the same message
    assert message_id(here, ed, 42) != message_id(staging, ed, 42)  # another installation
    rebuilt = replace(ed, window_end=ed.window_end + timedelta(minutes=3))  # the same day, a rebuilt database
    assert message_id(here, ed, 42) != message_id(here, rebuilt, 42)
    assert message_id(here, ed, 42) != message_id(here, ed, 43)
    assert ".42." not in message_id(here, ed, 42)  # the subscriber id is not shown


def test_two_installations_send_different_message_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = []
    for n, secret in enumerate(("production-secret", "staging-secret")):
        monkeypatch.setenv("FS_TEST_SECRET", secret)
        clock = Clock(kst(2, 7))
        (tmp_path / str(n)).mkdir()
        app = _app(tmp_path / str(n), clock)
        _editions(app, tmp_path / str(n), clock, (kst(2, 7), [_news(1, kst(2, 6))], date(2025, 7, 2)))
        [msg] = _sent(tmp_path / str(n))
        ids.append(msg["Message-ID"])
    assert ids[0] != ids[1]


def test_broken_template_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "digest.html.j2").write_text("<html>\n<p>\n{% for x in %}\n</html>\n", encoding="utf-8")
    renderer = DigestRenderer([tmp_path, BUNDLED_TEMPLATES])
    with pytest.raises(TemplateError) as info:
        renderer.check()
    assert info.value.name == "digest.html.j2" and info.value.line == 3


def test_message_lines_fit_smtp_and_bodies_are_8bit() -> None:
    ed, r = _render()
    long_html = r.html.replace("</body>", "<p>" + "가나다라 " * 2000 + "</p></body>")
    r2 = type(r)(long_html, r.text + "\n" + "마바사 " * 1000, r.sections, r.article_count, markers=r.markers)
    raw = compose(
        SITE,
        r2,
        day=ed.day,
        to="a@example.com",
        msg_id="<m@newsspace.kr>",
        unsubscribe_url="https://x/u",
        preferences_url="https://x/p",
        now=NOW,
    )
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert body_part(msg, "plain")["Content-Transfer-Encoding"] == "8bit"
    assert "가나다라 가나다라" in body_text(msg, "html")


def test_dkim_signature_covers_unsubscribe_headers_and_verifies(tmp_path: Path) -> None:
    import base64
    import shutil
    import subprocess

    import dkim

    from feedservice.adapters.dkim import DkimSigner

    if not shutil.which("openssl"):
        from tests.conftest import skip_unless_ci

        skip_unless_ci("the openssl command is needed to make a test key")
    key = tmp_path / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    pub = subprocess.run(
        ["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"], check=True, capture_output=True
    ).stdout
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(pub)
    signer = DkimSigner(selector="news", domain="newsspace.kr", private_key_pem=key.read_bytes())
    ed, r = _render()
    raw = signer.sign(
        compose(
            SITE,
            r,
            day=ed.day,
            to="reader@example.com",
            msg_id="<m@newsspace.kr>",
            unsubscribe_url="https://feeds.newsspace.kr/unsubscribe/1.0.sig",
            preferences_url="https://feeds.newsspace.kr/preferences/1.0.sig",
            now=NOW,
        )
    )
    header = email.message_from_bytes(raw, policy=policy.default)["DKIM-Signature"]
    signed = header.split("h=", 1)[1].split(";", 1)[0].replace(" ", "").lower().split(":")
    assert {"list-unsubscribe", "list-unsubscribe-post", "from", "subject"} <= set(signed)

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"news._domainkey.newsspace.kr."
        return record

    assert dkim.verify(raw, dnsfunc=dns)
    tampered = raw.replace(
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click", b"List-Unsubscribe-Post: List-Unsubscribe=Two-Clicks"
    )
    assert not dkim.verify(tampered, dnsfunc=dns)


@pytest.mark.parametrize("width", [375, 640])
def test_preview_renders_without_horizontal_scrolling(tmp_path: Path, width: int) -> None:
    from tests.conftest import CHROMIUM_ARGS, chromium_or_skip

    chromium = chromium_or_skip()
    from playwright import sync_api  # a test extra: make test installs it

    from tests.conftest import ROOT

    _, r = _render()
    page_file = tmp_path / "index.html"
    page_file.write_text(r.html, encoding="utf-8")
    shots = ROOT / "var" / "test-artifacts"
    shots.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium,
            args=CHROMIUM_ARGS,
        )
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.goto(page_file.as_uri())
            scroll, client = page.evaluate(
                "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
            )
            assert scroll <= client, f"horizontal scrolling at {width} px: {scroll} > {client}"
            assert page.locator("a.headline").count() == 3
            page.screenshot(path=str(shots / f"digest-{width}.png"), full_page=True)
        finally:
            browser.close()
    assert (shots / f"digest-{width}.png").stat().st_size > 10_000


# -- what a whole send puts where: an App on a Maildir, a controlled clock --------------------------
class Clock:
    """The time the app sees; a test moves it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _app(tmp_path: Path, clock: Clock) -> App:
    from feedservice.bootstrap import make_app
    from feedservice.config import load_settings
    from tests.conftest import write_config

    return make_app(load_settings(write_config(tmp_path)), clock=clock)


def _store(app: App, clock: Clock, *articles: Article) -> None:
    """Collect ``articles`` at the clock's time (their first_seen)."""
    from feedservice.model import FetchRecord

    app.store.record_fetches([FetchRecord("https://src.example/rss", clock.now, articles=articles)], clock.now)


def _sent(tmp_path: Path) -> list[EmailMessage]:
    import mailbox

    box = mailbox.Maildir(str(tmp_path / "mail"), create=False)
    return [email.message_from_bytes(m.as_bytes(), policy=policy.default) for m in box]


PLACES = "u=%%unsubscribe_url%%&p=%%preferences_url%%"


def test_feed_text_never_places_a_readers_link(tmp_path: Path) -> None:
    """A feed item carrying the marker strings in its link, image URL and title gets no reader's link."""
    import asyncio

    from feedservice.model import SubscriberStatus

    clock = Clock(datetime(2025, 7, 1, 21, 0, tzinfo=UTC))  # 06:00 KST, before the 07:00 edition
    app = _app(tmp_path, clock)
    hostile = Article(
        id="urn:hostile",
        url=f"https://tracker.example/a?{PLACES}",
        section="bigtech",
        title=f"제목 {PLACES}",
        image_url=f"https://tracker.example/pixel.gif?{PLACES}",
        published=clock.now - timedelta(hours=1),
    )
    _store(app, clock, hostile)
    app.store.add_subscriber("reader@example.com", (), SubscriberStatus.SUBSCRIBED, clock.now)
    asyncio.run(app.send_digest(date(2025, 7, 2)))
    [msg] = _sent(tmp_path)
    reader = app.store.get_subscriber("reader@example.com")
    assert reader is not None
    unsub, prefs = app.links_for(reader)
    html = body_text(msg, "html")
    text = body_text(msg, "plain")
    doc = lxml.html.fromstring(html)
    # The reader's links are where the template puts them (footer and List-Unsubscribe), nowhere else.
    assert [a.get("href") for a in doc.xpath("//a") if a.get("href") in (unsub, prefs)] == [prefs, unsub]
    assert html.count(unsub) == 1 and html.count(prefs) == 1
    assert text.count(unsub) == 1 and text.count(prefs) == 1
    assert doc.xpath("//img")[0].get("src") == f"https://tracker.example/pixel.gif?{PLACES}"  # left as the feed gave it
    assert f"https://tracker.example/a?{PLACES}" in text and f"제목 {PLACES}" in text
    assert unsub in msg["List-Unsubscribe"]
    # The web copy has no reader's link at all.
    stored = app.store.get_edition(date(2025, 7, 2))
    assert stored is not None and unsub not in stored[1] and prefs not in stored[1]
    app.close()


# -- which edition an article is in: a controlled clock for each case -------------------------------
def kst(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2025, 7, day, hour, minute, tzinfo=KST)


def _news(n: int, published: datetime, title: str | None = None) -> Article:
    return Article(
        id=f"urn:e{n}",
        url=f"https://www.newsspace.kr/news/e{n}",
        section="bigtech",
        title=title or f"기사 {n}",
        published=published,
    )


_Step = tuple[datetime, list[Article], date | None]  # when; what is collected then; the edition sent then


def _editions(app: App, tmp_path: Path, clock: Clock, *steps: _Step) -> dict[str, str]:
    """Run (time, articles to collect then, edition day to send or None) steps; each sent edition's text."""
    import asyncio

    from feedservice.model import SubscriberStatus

    app.store.add_subscriber("reader@example.com", (), SubscriberStatus.SUBSCRIBED, kst(1, 0))
    for when, articles, day in steps:
        clock.now = when
        if articles:
            _store(app, clock, *articles)
        if day is not None:
            asyncio.run(app.send_digest(day))
    texts = {str(m["Subject"]).split()[-2]: body_text(m, "plain") for m in _sent(tmp_path)}
    app.close()
    return texts


def test_an_article_collected_after_an_edition_is_in_the_next(tmp_path: Path) -> None:
    clock = Clock(kst(1, 7))
    app = _app(tmp_path, clock)
    texts = _editions(
        app,
        tmp_path,
        clock,
        (kst(1, 7), [_news(1, kst(1, 6))], date(2025, 7, 1)),
        (kst(2, 6, 50), [_news(2, kst(2, 6, 45))], None),  # collected before the edition
        (kst(2, 7), [], date(2025, 7, 2)),
        (kst(2, 7, 5), [_news(3, kst(2, 6, 50))], None),  # published 06:50, collected 07:05: late
        (kst(3, 7), [], date(2025, 7, 3)),
    )
    assert "기사 1" in texts["2025.07.01"]
    assert "기사 2" in texts["2025.07.02"] and "기사 3" not in texts["2025.07.02"]
    assert "기사 3" in texts["2025.07.03"] and "기사 2" not in texts["2025.07.03"]


def test_a_backlog_older_than_48_hours_is_not_news(tmp_path: Path) -> None:
    clock = Clock(kst(3, 7))
    app = _app(tmp_path, clock)
    texts = _editions(
        app,
        tmp_path,
        clock,
        # A new source brings its archive: 49 h and 47 h before the edition.
        (kst(3, 7), [_news(1, kst(1, 6)), _news(2, kst(1, 8)), _news(3, kst(3, 5))], date(2025, 7, 3)),
    )
    assert "기사 1" not in texts["2025.07.03"]
    assert "기사 2" in texts["2025.07.03"] and "기사 3" in texts["2025.07.03"]


def test_no_edition_repeats_an_article_even_corrected(tmp_path: Path) -> None:
    clock = Clock(kst(1, 7))
    app = _app(tmp_path, clock)
    texts = _editions(
        app,
        tmp_path,
        clock,
        (kst(1, 6), [_news(1, kst(1, 5))], date(2025, 7, 1)),
        # Corrected after the edition: a new title and a date moved into the next window.
        (kst(1, 12), [_news(1, kst(1, 11), "기사 1 (수정)"), _news(2, kst(1, 11))], None),
        (kst(2, 7), [], date(2025, 7, 2)),
    )
    assert "기사 1" in texts["2025.07.01"]
    assert "기사 2" in texts["2025.07.02"] and "기사 1" not in texts["2025.07.02"]


def test_an_edition_sent_early_closes_its_window_then(tmp_path: Path) -> None:
    clock = Clock(kst(2, 6))
    app = _app(tmp_path, clock)
    texts = _editions(
        app,
        tmp_path,
        clock,
        (kst(2, 6), [_news(1, kst(2, 5))], None),
        (kst(2, 6, 10), [], date(2025, 7, 2)),  # sent 50 minutes before 07:00
        (kst(2, 6, 40), [_news(2, kst(2, 6, 30))], None),
        (kst(2, 7), [], date(2025, 7, 2)),  # the scheduled run: already recorded, nothing new
        (kst(3, 7), [], date(2025, 7, 3)),
    )
    assert "기사 1" in texts["2025.07.02"] and "기사 2" not in texts["2025.07.02"]
    assert "기사 2" in texts["2025.07.03"] and "기사 1" not in texts["2025.07.03"]
    stored = app.store.get_edition(date(2025, 7, 3))
    assert stored is not None and stored[0].window_start == kst(2, 6, 10)


def test_a_missed_send_within_the_grace_behaves_as_on_time(tmp_path: Path) -> None:
    clock = Clock(kst(2, 6))
    app = _app(tmp_path, clock)
    texts = _editions(
        app,
        tmp_path,
        clock,
        (kst(1, 7), [_news(1, kst(1, 6))], date(2025, 7, 1)),
        (kst(2, 6), [_news(2, kst(2, 5))], None),
        (kst(2, 8, 30), [_news(3, kst(2, 8, 20))], None),  # the service was down at 07:00
        (kst(2, 9, 0), [], date(2025, 7, 2)),  # started again within the 3 h grace: sent now
        (kst(2, 9, 30), [_news(4, kst(2, 9, 20))], None),
        (kst(3, 7), [], date(2025, 7, 3)),
    )
    assert "기사 2" in texts["2025.07.02"] and "기사 3" in texts["2025.07.02"] and "기사 4" not in texts["2025.07.02"]
    assert "기사 4" in texts["2025.07.03"] and "기사 3" not in texts["2025.07.03"]
