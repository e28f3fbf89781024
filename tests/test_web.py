"""The web app, through its ASGI test client and over HTTP from Granian as `feedservice serve` runs
it: feeds with validators, index, digest pages, unsubscribe."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from feedservice.bootstrap import App
from feedservice.model import Article, Edition, SubscriberStatus
from feedservice.web.app import create_app
from tests.conftest import free_port, subscriber, write_config
from tests.served import app_with_article, process_serving, served

NOW = datetime(2026, 11, 28, 5, 0, tzinfo=UTC)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    source = "http://127.0.0.1/a.xml"
    a = app_with_article(write_config(tmp_path, sources=[(source, "bigtech")]), source, NOW)
    yield a
    a.close()


@pytest.fixture(params=["asgi", "granian"])
def client(app: App, request: pytest.FixtureRequest) -> Iterator[httpx.Client]:
    if request.param == "asgi":
        yield TestClient(create_app(app), base_url="http://localhost")
        return
    with served(app) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
        yield http


def test_feed_200_then_304_with_each_validator(client: httpx.Client) -> None:
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


def test_feed_changes_after_rebuild(app: App, client: httpx.Client) -> None:
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


def test_gzip_head_and_404(client: httpx.Client) -> None:
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


def test_index_has_autodiscovery(client: httpx.Client) -> None:
    r = client.get("/")
    assert r.status_code == 200
    assert 'rel="alternate" type="application/rss+xml"' in r.text
    assert "http://127.0.0.1:8080/feeds/space-sociology.atom" in r.text


def test_digest_pages(app: App, client: httpx.Client) -> None:
    ed = Edition(date(2026, 11, 28), NOW - timedelta(days=1), NOW, "뉴스스페이스 아침 브리핑")
    app.store.save_edition(ed, "<html><body>오늘의 기사 <a href='%%unsubscribe_url%%'>x</a></body></html>", "t", NOW)
    assert "2026-11-28" in client.get("/digest/").text
    page = client.get("/digest/2026-11-28")
    assert page.status_code == 200 and "오늘의 기사" in page.text and "%%" not in page.text
    assert client.get("/digest/2026-11-27").status_code == 404
    assert client.get("/digest/not-a-date").status_code == 404


def test_unsubscribe_get_never_unsubscribes_post_does(app: App, client: httpx.Client) -> None:
    sub, _ = app.store.add_subscriber("reader@example.com", (), SubscriberStatus.SUBSCRIBED, NOW)
    unsub_url, prefs_url = app.links_for(sub)
    path = unsub_url.removeprefix("http://127.0.0.1:8080")
    assert client.get(path).status_code == 200
    assert subscriber(app.store, "reader@example.com").status is SubscriberStatus.SUBSCRIBED
    # RFC 8058 one-click, as a mail provider sends it: no cookies, just the body.
    r = client.post(path, data={"List-Unsubscribe": "One-Click"})
    assert r.status_code == 200
    assert subscriber(app.store, "reader@example.com").status is SubscriberStatus.UNSUBSCRIBED
    assert client.post(path, data={"List-Unsubscribe": "One-Click"}).status_code == 200  # idempotent
    old_prefs = client.get(prefs_url.removeprefix("http://127.0.0.1:8080"))  # signed before leaving: dead
    assert old_prefs.status_code == 400 and "reader@example.com" not in old_prefs.text
    forgotten = app.store.get_subscriber("reader@example.com")  # found by its hash only
    assert forgotten is not None and forgotten.email == "" and forgotten.email_hash.startswith("h1:")
    prefs = client.get(app.links_for(forgotten)[1].removeprefix("http://127.0.0.1:8080"))
    assert prefs.status_code == 200 and "구독 중이 아닙니다" in prefs.text and "reader@example.com" not in prefs.text


def test_tampered_tokens_change_nothing(app: App, client: httpx.Client) -> None:
    a, _ = app.store.add_subscriber("a@example.com", (), SubscriberStatus.SUBSCRIBED, NOW)
    b, _ = app.store.add_subscriber("b@example.com", (), SubscriberStatus.SUBSCRIBED, NOW)
    token = app.links_for(a)[0].rsplit("/", 1)[1]
    forged = f"{b.id}.{token.split('.', 1)[1]}"  # a's signature with b's id
    prefs_token = app.links_for(b)[1].rsplit("/", 1)[1]  # right subscriber, wrong purpose
    for bad in (forged, token[:-2] + "xx", prefs_token, "garbage", "999999.0.abc"):
        r = client.post(f"/unsubscribe/{bad}", data={"List-Unsubscribe": "One-Click"})
        assert r.status_code == 400, bad
    assert {s.status for s in app.store.iter_subscribers()} == {SubscriberStatus.SUBSCRIBED}


def test_healthz(client: httpx.Client) -> None:
    assert client.get("/healthz").text == "ok\n"


def test_json_feed_opml_and_archive_pages(app: App, client: httpx.Client) -> None:
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


def _responses(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Split a stream of HTTP/1.1 responses to GETs (bodies framed by Content-Length)."""
    out = []
    while raw:
        head, _, raw = raw.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
        status = int(status_line.split()[1])
        n = 0 if status == 304 else int(headers.get("content-length", 0))
        out.append((status, headers, raw[:n]))
        raw = raw[n:]
    return out


def _exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_pipelined_keep_alive_and_http10_over_the_wire(app: App) -> None:
    """The server keeps HTTP's rules: pipelined answers in order (feed requests and pages mixed),
    Date on every answer, keep-alive by default, the connection closed for HTTP/1.0 and when asked."""
    with served(app) as port:
        plain = {"Accept-Encoding": "identity"}
        etag = httpx.get(f"http://127.0.0.1:{port}/feeds/bigtech.xml", headers=plain).headers["etag"]
        h = b"Host: 127.0.0.1\r\n"
        raw = _exchange(
            port,
            b"GET /feeds/bigtech.xml HTTP/1.1\r\n" + h + b"If-None-Match: " + etag.encode() + b"\r\n\r\n"
            b"GET /feeds/bigtech.xml?utm=reader HTTP/1.1\r\n" + h + b"\r\n"
            b"GET /healthz HTTP/1.1\r\n" + h + b"\r\n"
            b"GET /feeds/bigtech.atom HTTP/1.1\r\n" + h + b"\r\n"
            b"POST /feeds/bigtech.xml HTTP/1.1\r\n" + h + b"Content-Length: 0\r\n\r\n"
            b"GET /feeds/nosuch.xml HTTP/1.1\r\n" + h + b"Connection: close\r\n\r\n",
        )
        answers = _responses(raw)
        assert [a[0] for a in answers] == [304, 200, 200, 200, 405, 404]
        assert all("date" in a[1] for a in answers)
        assert answers[0][1]["etag"] == etag and answers[0][2] == b""
        assert "빅테크 첫 기사".encode() in answers[1][2] and len(answers[1][2]) == int(answers[1][1]["content-length"])
        assert answers[2][2] == b"ok\n"
        assert answers[3][1]["content-type"] == "application/atom+xml; charset=utf-8"
        assert answers[4][1]["allow"] == "GET, HEAD"
        assert answers[5][1]["connection"] == "close" and answers[5][2] == b"unknown feed\n"
        # HTTP/1.0 without keep-alive: one answer, then the server closes (recv returns b"").
        # Granian answers in HTTP/1.0, where closing is the default (RFC 9112 §9.3), so it may
        # leave out "Connection: close" (uvicorn sent it).
        old = _responses(_exchange(port, b"GET /feeds/bigtech.xml HTTP/1.0\r\n\r\n"))
        assert [a[0] for a in old] == [200] and old[0][1].get("connection", "close") == "close"
        # HEAD: the GET's headers and length, no body (the next answer starts right after).
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"HEAD /feeds/bigtech.xml HTTP/1.1\r\n" + h + b"\r\n")
            time.sleep(0.2)
            sock.sendall(b"GET /feeds/nosuch.xml HTTP/1.1\r\n" + h + b"Connection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and b"content-length: " in head.lower()
        assert rest.startswith(b"HTTP/1.1 404 ")


def test_sigterm_lets_a_request_in_flight_finish_then_exits_0(tmp_path: Path) -> None:
    """`feedservice serve` stops on SIGTERM as uvicorn did: a request whose body is still arriving
    gets its answer, then the process exits 0 (Granian's embedded server is stopped by us)."""
    cfg = write_config(tmp_path)
    port = free_port()
    cfg.write_text(cfg.read_text(encoding="utf-8").replace("[web]\n", f"[web]\nport = {port}\n", 1), encoding="utf-8")
    log = tmp_path / "serve.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "feedservice", "--config", str(cfg), "serve"], stdout=subprocess.DEVNULL, stderr=err
        )
    with process_serving(proc, f"http://127.0.0.1:{port}/healthz", log, 20):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                b"POST /subscribe HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: 20\r\n\r\nemail=a"
            )
            time.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            sock.sendall(b"@example.com&c")  # the rest of the body, after the signal
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 403 ")  # answered (no CSRF token: refused, as always)
        assert proc.wait(15) == 0
    assert "stopped by SIGTERM" in log.read_text(encoding="utf-8")


def _children(pid: int) -> list[str]:
    found: list[str] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            found += task.read_text().split()
    return found


def test_sigterm_while_workers_start_stops_serve_at_once(tmp_path: Path) -> None:
    """With `[web] workers = 2`, a SIGTERM that reaches the workers while they still build the app
    stops them at once. Forked workers inherited the supervisor's handler, which only set a flag in
    the supervisor's memory: the signal was lost and the stop waited 30 s to kill the worker."""
    cfg = write_config(tmp_path)
    port = free_port()
    text = cfg.read_text(encoding="utf-8").replace("[web]\n", f"[web]\nport = {port}\nworkers = 2\n", 1)
    cfg.write_text(text, encoding="utf-8")
    for attempt in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-m", "feedservice", "--config", str(cfg), "serve"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while not _children(proc.pid):  # the moment the supervisor has started a worker
                assert proc.poll() is None and time.monotonic() < deadline, "no worker was started"
                time.sleep(0.002)
            proc.send_signal(signal.SIGTERM)
            started = time.monotonic()
            assert proc.wait(25) == 0, f"attempt {attempt}"
            assert time.monotonic() - started < 15, f"attempt {attempt}: the stop waited for a worker"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
