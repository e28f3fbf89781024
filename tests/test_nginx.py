"""docs/publishing.md's nginx configuration as a tested path: a real nginx started with the very
text of the doc (only its address, folder and upstream port filled in), serving the feed files
the build wrote, and passing the rest to `feedservice serve` with the visitor's address.

The answers are checked against the ASGI path's for the same files, so a reader sees the same
bytes, types and caching rules whichever of the two answers. Debian's ``nginx`` package
(.ci/run installs it); without it the test skips here and fails in CI.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from feedservice.bootstrap import App
from feedservice.model import Article
from feedservice.web.app import create_app
from tests.conftest import free_port, skip_unless_ci, write_config
from tests.served import app_with_article, process_serving, running, serve_config

DOC = Path(__file__).resolve().parents[1] / "docs" / "publishing.md"
NOW = datetime(2026, 11, 28, 5, 0, tzinfo=UTC)
SOURCE = "http://127.0.0.1/a.xml"
FEEDS = ["/feeds/bigtech.xml", "/feeds/bigtech.atom", "/feeds/bigtech.json", "/feeds/all.xml", "/feeds/index.opml"]


def nginx_binary() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
    if found is None:
        skip_unless_ci("nginx is not installed (Debian's nginx package; .ci/run installs it)")
    return found


def doc_server_block(*, port: int, feeds_dir: Path, upstream: int) -> str:
    """The ``server { … }`` block of docs/publishing.md with the three site-specific values
    replaced; each must be found exactly once, so an edit to the doc that the test no longer
    understands fails here instead of testing something else."""
    blocks = re.findall(r"```nginx\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 1, "docs/publishing.md should hold exactly one nginx block"
    text: str = blocks[0]
    for pattern, value in [
        (r"listen 443 ssl http2;", f"listen 127.0.0.1:{port};"),
        (r"alias /srv/feedservice/var/feeds/;", f"alias {feeds_dir}/;"),
        (r"proxy_pass http://127\.0\.0\.1:8080;", f"proxy_pass http://127.0.0.1:{upstream};"),
    ]:
        text, n = re.subn(pattern, value, text)
        assert n == 1, f"{pattern!r} not found once in docs/publishing.md's nginx block"
    return text


@contextlib.contextmanager
def nginx(server_block: str, port: int, tmp: Path) -> Iterator[Path]:
    """nginx in the foreground with ``server_block`` as its one server; yields its error log."""
    tmp.mkdir()
    log = tmp / "error.log"
    conf = tmp / "nginx.conf"
    kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    temp_paths = "".join(f"    {kind}_temp_path {tmp / kind};\n" for kind in kinds)
    conf.write_text(
        ("user root;\n" if os.geteuid() == 0 else "")  # the workers read the test's private tmp folder
        + f"worker_processes 1;\nerror_log {log} info;\nevents {{ worker_connections 64; }}\n"
        + f"http {{\n    access_log off;\n{temp_paths}{server_block}}}\n",
        encoding="utf-8",
    )
    pid = tmp / "nginx.pid"
    argv = [nginx_binary(), "-c", str(conf), "-p", str(tmp), "-e", str(log), "-g", f"daemon off; pid {pid};"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    with process_serving(proc, f"http://127.0.0.1:{port}/feeds/index.opml", log, 60):
        yield log


@dataclass
class Site:
    app: App
    nginx: int  # nginx's port
    feeds_dir: Path


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    """Built feeds; `feedservice serve` as configured (trusting nginx's X-Forwarded-For, three
    sign-ups an hour per visitor); nginx in front with the doc's configuration."""
    cfg = write_config(tmp_path, sources=[(SOURCE, "bigtech")])
    web = '[web]\nsubscribe_per_hour = 3\ntrusted_proxies = ["127.0.0.1"]\n'
    cfg.write_text(cfg.read_text(encoding="utf-8").replace("[web]\n", web, 1), encoding="utf-8")
    app = app_with_article(cfg, SOURCE, NOW)
    try:
        with running(serve_config(app, monkeypatch)) as upstream:
            port = free_port()
            block = doc_server_block(port=port, feeds_dir=app.feeds_dir.resolve(), upstream=upstream)
            with nginx(block, port, tmp_path / "nginx"):
                yield Site(app, port, app.feeds_dir)
    finally:
        app.close()


def test_nginx_serves_the_built_feeds_as_the_asgi_path_does(site: Site) -> None:
    asgi = TestClient(create_app(site.app), base_url="http://localhost")
    with httpx.Client(base_url=f"http://127.0.0.1:{site.nginx}") as http:
        for path in FEEDS:
            plain = {"Accept-Encoding": "identity"}
            mine, theirs = http.get(path, headers=plain), asgi.get(path, headers=plain)
            assert mine.status_code == theirs.status_code == 200, path
            assert mine.content == theirs.content == (site.feeds_dir / path.removeprefix("/feeds/")).read_bytes()
            assert "content-encoding" not in mine.headers
            for field in (
                "content-type",
                "cache-control",
                "last-modified",
                "x-content-type-options",
                "referrer-policy",
            ):
                assert mine.headers[field] == theirs.headers[field], (path, field)

            # 304 by either validator (nginx's own ETag, as a reader stores it)
            etag, modified = mine.headers["etag"], mine.headers["last-modified"]
            assert http.get(path, headers={"If-None-Match": etag}).status_code == 304
            assert http.get(path, headers={"If-Modified-Since": modified}).status_code == 304
            assert http.get(path, headers={"If-None-Match": '"other"', **plain}).status_code == 200

            # gzip where accepted, and not where refused
            with http.stream("GET", path, headers={"Accept-Encoding": "gzip"}) as r:
                raw = b"".join(r.iter_raw())
            assert r.headers["content-encoding"] == "gzip" and gzip.decompress(raw) == theirs.content, path
            with http.stream("GET", path, headers={"Accept-Encoding": "gzip;q=0"}) as r:
                raw = b"".join(r.iter_raw())
            assert "content-encoding" not in r.headers and raw == theirs.content, path

            # HEAD: GET's headers, no body
            head = http.head(path, headers=plain)
            assert head.status_code == 200 and head.content == b""
            assert head.headers["etag"] == etag and head.headers["content-length"] == str(len(theirs.content))


def test_nginx_answers_a_feed_rebuilt_under_it(site: Site) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{site.nginx}") as http:
        first = http.get("/feeds/all.xml", headers={"Accept-Encoding": "identity"})
        later = datetime(2026, 11, 28, 7, 0, tzinfo=UTC)
        art = Article(
            id="urn:a2",
            url="https://www.newsspace.kr/a2",
            section="bigtech",
            title="두 번째 기사",
            published=later,
            source_url=SOURCE,
        )
        site.app.store.record_fetch_success(SOURCE, later, later, etag=None, last_modified=None, articles=[art])
        os.utime(site.feeds_dir / "all.xml", (0, 0))  # the rebuild below must change the mtime nginx sees
        site.app.build_feeds()
        again = http.get("/feeds/all.xml", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 200 and "두 번째 기사" in again.text


def _signups(port: int, visitor: str, forwarded: list[str]) -> list[int]:
    """One sign-up through nginx per X-Forwarded-For value the visitor sends, from ``visitor``
    (a loopback address of its own, so nginx sees a client that is not itself)."""
    codes = []
    for i, xff in enumerate(forwarded):
        transport = httpx.HTTPTransport(local_address=visitor)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", transport=transport) as http:
            page = http.get("/subscribe", headers={"X-Forwarded-For": xff})
            assert page.status_code == 200 and page.headers.get("content-security-policy"), "not feedservice's page"
            csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
            r = http.post(
                "/subscribe",
                data={"csrf": csrf, "email": f"r{i}-{visitor}@example.com"},
                headers={"X-Forwarded-For": xff},
            )
            codes.append(r.status_code)
    return codes


def test_nginx_passes_subscribe_to_the_app_with_the_visitors_address(site: Site) -> None:
    # Each visitor is counted on its own address (which nginx appends), not as nginx, and not by
    # what the visitor wrote into the header itself.
    visitors = [_signups(site.nginx, f"127.0.0.{10 + i}", ["10.9.9.9"]) for i in range(5)]
    assert visitors == [[200]] * 5
    one_visitor = _signups(site.nginx, "127.0.0.20", [f"198.51.100.{i}" for i in range(4)])
    assert one_visitor == [200, 200, 200, 429]


def test_nginx_passes_the_visitors_host_so_a_rebound_name_is_refused(site: Site) -> None:
    """The doc's ``proxy_set_header Host $host``: the app sees the name the browser used, so a
    DNS-rebinding page's (``attacker.example``, resolved to our address) gets the app's 421. A
    proxy that sent the upstream's own name (``127.0.0.1:8080``, nginx's default) would pass it."""
    with httpx.Client(base_url=f"http://127.0.0.1:{site.nginx}") as http:
        for host in ("attacker.example", f"attacker.example:{site.nginx}"):
            refused = http.get("/subscribe", headers={"Host": host})
            assert refused.status_code == 421 and "csrf" not in refused.text, host
        assert http.get("/subscribe").status_code == 200
