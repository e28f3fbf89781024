"""The web app through its ASGI test client: feeds with validators, index, digest pages, unsubscribe."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from feedservice.config import load_settings
from feedservice.entry.bootstrap import App, make_app
from feedservice.entry.web import create_app
from feedservice.model import Article, Edition, SubscriberStatus
from tests.conftest import write_config

NOW = datetime(2026, 11, 28, 5, 0, tzinfo=UTC)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    a = make_app(load_settings(write_config(tmp_path, sources=[("http://127.0.0.1/a.xml", "bigtech")])))
    art = Article(
        id="urn:a1",
        url="https://www.newsspace.kr/a1",
        section="bigtech",
        title="빅테크 첫 기사",
        published=NOW,
        source_url="http://127.0.0.1/a.xml",
    )
    a.store.record_fetch_success("http://127.0.0.1/a.xml", NOW, NOW, etag=None, last_modified=None, articles=[art])
    a.build_feeds()
    yield a
    a.close()


@pytest.fixture
def client(app: App) -> TestClient:
    return TestClient(create_app(app))


def test_feed_200_then_304_with_each_validator(client: TestClient) -> None:
    r = client.get("/feeds/bigtech.xml", headers={"Accept-Encoding": "identity"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/rss+xml; charset=utf-8"
    assert "빅테크 첫 기사" in r.text
    etag, modified = r.headers["etag"], r.headers["last-modified"]
    assert etag.startswith('"') and "max-age=300" in r.headers["cache-control"]
    assert client.get("/feeds/bigtech.xml", headers={"If-None-Match": etag}).status_code == 304
    assert client.get("/feeds/bigtech.xml", headers={"If-Modified-Since": modified}).status_code == 304
    assert client.get("/feeds/bigtech.xml", headers={"If-None-Match": '"other"'}).status_code == 200
    atom = client.get("/feeds/bigtech.atom")
    assert atom.headers["content-type"] == "application/atom+xml; charset=utf-8"


def test_feed_changes_after_rebuild(app: App, client: TestClient) -> None:
    etag = client.get("/feeds/all.xml").headers["etag"]
    later = NOW + timedelta(hours=1)
    art = Article(
        id="urn:a2",
        url="https://www.newsspace.kr/a2",
        section="bigtech",
        title="두 번째 기사",
        published=later,
        source_url="http://127.0.0.1/a.xml",
    )
    app.store.record_fetch_success(
        "http://127.0.0.1/a.xml", later, later, etag=None, last_modified=None, articles=[art]
    )
    app.build_feeds()
    r = client.get("/feeds/all.xml", headers={"If-None-Match": etag})
    assert r.status_code == 200 and "두 번째 기사" in r.text


def test_gzip_head_and_404(client: TestClient) -> None:
    r = client.get("/feeds/bigtech.xml", headers={"Accept-Encoding": "gzip"})
    assert r.headers["content-encoding"] == "gzip" and "빅테크 첫 기사" in r.text
    raw = client.get("/feeds/bigtech.xml", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in raw.headers
    assert r.headers["etag"] != raw.headers["etag"]  # each representation has its own strong ETag
    head = client.head("/feeds/bigtech.xml")
    assert head.status_code == 200 and head.content == b""
    missing = client.get("/feeds/nonexistent.xml")
    assert missing.status_code == 404 and missing.text == "unknown feed\n"
    assert client.get("/feeds/../config.toml").status_code == 404


def test_index_has_autodiscovery(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200
    assert 'rel="alternate" type="application/rss+xml"' in r.text
    assert "http://127.0.0.1:8080/feeds/space-sociology.atom" in r.text


def test_digest_pages(app: App, client: TestClient) -> None:
    ed = Edition(date(2026, 11, 28), NOW - timedelta(days=1), NOW, "뉴스스페이스 아침 브리핑")
    app.store.save_edition(ed, "<html><body>오늘의 기사 <a href='%%unsubscribe_url%%'>x</a></body></html>", "t", NOW)
    assert "2026-11-28" in client.get("/digest/").text
    page = client.get("/digest/2026-11-28")
    assert page.status_code == 200 and "오늘의 기사" in page.text and "%%" not in page.text
    assert client.get("/digest/2026-11-27").status_code == 404
    assert client.get("/digest/not-a-date").status_code == 404


def test_unsubscribe_get_never_unsubscribes_post_does(app: App, client: TestClient) -> None:
    sub, _ = app.store.add_subscriber("reader@example.com", (), SubscriberStatus.SUBSCRIBED, NOW)
    unsub_url, prefs_url = app.links_for(sub)
    path = unsub_url.removeprefix("http://127.0.0.1:8080")
    assert client.get(path).status_code == 200
    assert app.store.get_subscriber("reader@example.com").status is SubscriberStatus.SUBSCRIBED  # type: ignore[union-attr]
    # RFC 8058 one-click, as a mail provider sends it: no cookies, just the body.
    r = client.post(path, data={"List-Unsubscribe": "One-Click"})
    assert r.status_code == 200
    assert app.store.get_subscriber("reader@example.com").status is SubscriberStatus.UNSUBSCRIBED  # type: ignore[union-attr]
    assert client.post(path, data={"List-Unsubscribe": "One-Click"}).status_code == 200  # idempotent
    prefs = client.get(prefs_url.removeprefix("http://127.0.0.1:8080"))
    assert prefs.status_code == 200 and "구독 중이 아닙니다" in prefs.text and "reader@example.com" not in prefs.text
    forgotten = app.store.get_subscriber("reader@example.com")  # found by its hash only
    assert forgotten is not None and forgotten.email == "" and forgotten.email_hash.startswith("h1:")


def test_tampered_tokens_change_nothing(app: App, client: TestClient) -> None:
    a, _ = app.store.add_subscriber("a@example.com", (), SubscriberStatus.SUBSCRIBED, NOW)
    b, _ = app.store.add_subscriber("b@example.com", (), SubscriberStatus.SUBSCRIBED, NOW)
    token = app.links_for(a)[0].rsplit("/", 1)[1]
    forged = f"{b.id}.{token.split('.', 1)[1]}"  # a's signature with b's id
    prefs_token = app.links_for(b)[1].rsplit("/", 1)[1]  # right subscriber, wrong purpose
    for bad in (forged, token[:-2] + "xx", prefs_token, "garbage", "999999.0.abc"):
        r = client.post(f"/unsubscribe/{bad}", data={"List-Unsubscribe": "One-Click"})
        assert r.status_code == 400, bad
    assert {s.status for s in app.store.iter_subscribers()} == {SubscriberStatus.SUBSCRIBED}


def test_healthz(client: TestClient) -> None:
    assert client.get("/healthz").text == "ok\n"


def test_json_feed_opml_and_archive_pages(app: App, client: TestClient) -> None:
    r = client.get("/feeds/bigtech.json")
    assert r.status_code == 200 and r.headers["content-type"] == "application/feed+json; charset=utf-8"
    assert r.json()["items"][0]["title"] == "빅테크 첫 기사"
    assert client.get("/feeds/bigtech.json", headers={"If-None-Match": r.headers["etag"]}).status_code == 304
    opml = client.get("/feeds/index.opml")
    assert opml.status_code == 200 and opml.headers["content-type"] == "text/x-opml; charset=utf-8"
    assert "http://127.0.0.1:8080/feeds/bigtech.xml" in opml.text
    # 50 more articles make one full archive page, served as immutable.
    arts = [
        Article(
            id=f"urn:b{i}",
            url=f"https://www.newsspace.kr/b{i}",
            section="bigtech",
            title=f"기사 {i}",
            published=NOW + timedelta(minutes=i),
            source_url="http://127.0.0.1/a.xml",
        )
        for i in range(50)
    ]
    later = NOW + timedelta(hours=2)
    app.store.record_fetch_success("http://127.0.0.1/a.xml", later, later, etag=None, last_modified=None, articles=arts)
    app.build_feeds()
    current = client.get("/feeds/bigtech.atom").text
    assert 'href="http://127.0.0.1:8080/feeds/archive/bigtech/1.atom" rel="prev-archive"' in current
    page = client.get("/feeds/archive/bigtech/1.atom")
    assert page.status_code == 200 and "immutable" in page.headers["cache-control"]
    assert "fh:archive" in page.text
    assert client.get("/feeds/archive/bigtech/2.atom").status_code == 404
    assert client.get("/feeds/archive/nosuch/1.atom").status_code == 404
    assert client.get("/feeds/archive/bigtech/..%2f..%2fconfig.toml").status_code == 404
