"""Shared test fixtures: real servers on 127.0.0.1 (feeds over HTTP, SMTP), databases, configs."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from email.message import MIMEPart
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NoReturn, TypedDict

import pytest

from feedservice.model import Subscriber
from feedservice.ports import SubscriberStore

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FEEDSERVICE_SHARED", ROOT.parent / "shared"))
FIXTURES = SHARED / "fixtures"
PG_ADMIN_URL = os.environ.get("FEEDSERVICE_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def skip_unless_ci(reason: str) -> NoReturn:
    """Skip for a missing platform piece (PostgreSQL, ../shared, chromium, openssl, the package
    registry) — but fail in CI (``CI`` set, as .ci/run does), where each of them is provided."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI provides it, so this is a failure there)")
    pytest.skip(reason)


def shared_fixture(*parts: str) -> Path:
    """A file from ../shared/fixtures; the test skips (with the reason) where that folder is absent."""
    path = FIXTURES.joinpath(*parts)
    if not path.exists():
        skip_unless_ci(f"shared fixture {path} is not present (it lives beside the repository, in ../shared)")
    return path


# Other projects' test corpora, from their source distributions on the package index. Cached
# outside the clone (CI clones afresh; the versions are pinned, so a cached copy never goes stale).
CORPUS_CACHE = Path(
    os.environ.get("FEEDSERVICE_TEST_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "feedservice" / "test-corpus"
)


def sdist_tree(requirement: str, folder: str) -> Path:
    """``folder`` of the unpacked source distribution ``requirement`` (``name==version``), downloaded
    with pip the first time. Unpacked into a temporary folder and renamed into place, so a test
    running beside it (another xdist worker, another checkout) never sees half a tree."""
    target = CORPUS_CACHE / folder
    if target.exists():
        return target
    import subprocess
    import sys
    import tarfile
    import tempfile

    CORPUS_CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CORPUS_CACHE) as tmp:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                ":all:",
                requirement,
                "-d",
                tmp,
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if proc.returncode != 0:
            skip_unless_ci(f"cannot download the {requirement} sdist from the package registry: {proc.stderr[-300:]}")
        [sdist] = Path(tmp).glob("*.tar.gz")
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        with contextlib.suppress(OSError):  # another process got there first: its copy is the same
            (Path(tmp) / folder).rename(target)
    return target


# -- an HTTP server serving feed files -------------------------------------------------------------
@dataclass
class Served:
    body: bytes
    content_type: str = "application/rss+xml; charset=utf-8"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    mtime: float = 1_700_000_000.0
    trickle: float | None = None  # seconds between single bytes of the body


class FeedServer:
    """Files by path with ETag and Last-Modified validators; records each request's headers."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.files: dict[str, Served] = {}
        # path → function of the query parameters, for servers that answer by query (APIs)
        self.dynamic: dict[str, Callable[[dict[str, str]], Served]] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.closing = False
        self.posts: list[tuple[str, dict[str, str], bytes]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                server.requests.append((self.path, dict(self.headers)))
                path, _, query = self.path.partition("?")
                item = server.files.get(path)
                if path in server.dynamic:
                    item = server.dynamic[path](dict(urllib.parse.parse_qsl(query)))
                if item is None:
                    self._send(404, b"not found", {"Content-Type": "text/plain"})
                    return
                etag = '"' + hashlib.sha256(item.body).hexdigest()[:16] + '"'
                validators = {"ETag": etag, "Last-Modified": formatdate(item.mtime, usegmt=True)}
                if item.status == 200 and self.headers.get("If-None-Match") == etag:
                    self._send(304, b"", validators)
                    return
                headers = {"Content-Type": item.content_type, **validators, **item.headers}
                self._send(item.status, item.body, headers, item.trickle)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                server.posts.append((self.path, dict(self.headers), body))
                item = server.files.get(self.path.partition("?")[0])
                status = item.status if item else 404
                self._send(status, b"" if status == 204 else b"ok", {"Content-Type": "text/plain"})

            def _send(self, status: int, body: bytes, headers: dict[str, str], trickle: float | None = None) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if status not in (204, 304):
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if status in (204, 304):
                    return
                if trickle is None:
                    self.wfile.write(body)
                    return
                try:
                    for i in range(len(body)):
                        self.wfile.write(body[i : i + 1])
                        self.wfile.flush()
                        time.sleep(trickle)
                        if server.closing:
                            return
                except OSError:
                    return

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://{host}:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return self.base + path

    def close(self) -> None:
        self.closing = True
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Throw-away DKIM keys (RSA and Ed25519) and the TXT records that publish them, a module's."""
    from tests.test_dkim import make_keys

    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    server = FeedServer()
    yield server
    server.close()


class SilentServer:
    """Accepts TCP connections and never answers (a server that hangs)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._stop = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
                self.conns.append(conn)
            except OSError:
                continue

    def close(self) -> None:
        self._stop = True
        self.thread.join()
        for c in self.conns:
            c.close()
        self.sock.close()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


# -- an SMTP server (aiosmtpd) --------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SmtpSink:
    """Accepts every message and keeps (envelope sender, recipients, bytes)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.refuse: dict[str, str] = {}

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.original_content)))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server() -> Iterator[tuple[SmtpSink, int]]:
    from aiosmtpd.controller import Controller

    sink = SmtpSink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    yield sink, port
    controller.stop()


# -- databases ------------------------------------------------------------------------------------
def _postgres_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return True
    except Exception:
        return False


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards."""
    if not _postgres_available():
        skip_unless_ci(f"no PostgreSQL server answers at {PG_ADMIN_URL}")
    import psycopg

    name = f"fs_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'feedservice.db'}"
    return str(request.getfixturevalue("postgres_url"))


# -- configs --------------------------------------------------------------------------------------
BASE_CONFIG = """\
[site]
name = "뉴스스페이스"
url = "https://www.newsspace.kr"
public_url = "http://127.0.0.1:8080"
postal_address = "서울특별시 중구 (테스트)"

[database]
url = "{db_url}"

[[sections]]
slug = "bigtech"
title = "빅테크"

[[sections]]
slug = "space-sociology"
title = "공간사회학"

{sources}
[collect]
allow_hosts = {allow_hosts}
{collect_extra}

[feeds]
output_dir = "{dir}/feeds"

[weather]
provider = "{weather_provider}"
api_key_env = "FS_TEST_KMA_KEY"
data_go_kr_key_env = "FS_TEST_KMA_KEY"
fallback = "{fallback}"
{weather_extra}

[digest]
from = "뉴스스페이스 <newsletter@newsspace.kr>"

[delivery]
maildir = "{dir}/mail"
{delivery_extra}

[web]
secret_env = "FS_TEST_SECRET"
"""


class ConfigOptions(TypedDict, total=False):
    """``write_config``'s keyword options but the sources, for helpers that pass them on."""

    db_url: str | None
    weather_provider: str
    weather_extra: str
    fallback: str
    delivery_extra: str
    collect_extra: str
    allow_hosts: tuple[str, ...]


def write_config(
    folder: Path,
    *,
    db_url: str | None = None,
    sources: Sequence[tuple[str, str]] = (),
    weather_provider: str = "none",
    weather_extra: str = "",
    fallback: str = "none",
    delivery_extra: str = "",
    collect_extra: str = "timeout = 5.0",
    allow_hosts: tuple[str, ...] = ("127.0.0.1",),
) -> Path:
    src = "\n".join(f'[[sources]]\nurl = "{u}"\nsection = "{s}"\n' for u, s in sources)
    text = BASE_CONFIG.format(
        db_url=db_url or f"sqlite:///{folder / 'feedservice.db'}",
        sources=src,
        dir=folder,
        weather_provider=weather_provider,
        weather_extra=weather_extra,
        fallback=fallback,
        delivery_extra=delivery_extra,
        collect_extra=collect_extra,
        allow_hosts="[" + ", ".join(f'"{h}"' for h in allow_hosts) + "]",
    )
    path = folder / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def subscriber(store: SubscriberStore, email: str) -> Subscriber:
    """The stored subscriber with this address; the test fails when there is none."""
    found = store.get_subscriber(email)
    assert found is not None, f"no subscriber {email!r}"
    return found


def body_part(message: MIMEPart, subtype: str) -> MIMEPart:
    """A mail's ``text/<subtype>`` body part; the test fails when it has none."""
    part = message.get_body((subtype,))
    assert part is not None, f"the message has no text/{subtype} body"
    return part


def body_text(message: MIMEPart, subtype: str) -> str:
    """The decoded text of a mail's ``text/<subtype>`` body."""
    text: str = body_part(message, subtype).get_content()  # the content manager's str, typed Any
    return text


@pytest.fixture(autouse=True)
def _test_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("FS_TEST_SECRET", "test-secret-for-signing")
    monkeypatch.setenv("FS_TEST_KMA_KEY", "test-kma-key")
    # In-process CLI runs set up logging on the stderr pytest lends that test; a later test's log
    # lines must not go to that closed stream (an "unraisable exception" failing the later test).
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


# -- a real browser -------------------------------------------------------------------------------
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_or_skip() -> str:
    """Debian's chromium; the test skips where it is not installed (CI installs it and requires it)."""
    import shutil

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        skip_unless_ci("Debian's chromium is not installed (.ci/run installs it; or: apt-get install chromium)")
    return chromium
