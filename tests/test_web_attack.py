"""The running server (Granian, as `feedservice serve` runs it) attacked as a stranger would: over
raw sockets, with what the framing, the Host header, the peer address, the process supervisor
and shutdown let a client try. Each test failed before its fix (see CHANGELOG.md)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from feedservice.bootstrap import App, make_app
from feedservice.config import load_settings
from feedservice.model import SubscriberStatus
from feedservice.web.app import create_app
from feedservice.web.clients import ClientAddress
from feedservice.web.requestchecks import AllowedHosts, origin_allowed
from feedservice.web.server import embedded
from tests.conftest import free_port, write_config
from tests.served import app_with_article, process_serving, running, served

NOW = datetime(2026, 11, 28, 5, 0, tzinfo=UTC)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    a = app_with_article(write_config(tmp_path), "http://127.0.0.1:9/feed.xml", NOW)
    yield a
    a.close()


def _exchange(port: int, request: bytes, wait: float = 10.0) -> bytes:
    """Send ``request`` on a new connection and read until the server closes it (every request
    here says ``Connection: close`` or is refused with a close) or ``wait`` runs out."""
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(request)
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            while chunk := sock.recv(65536):
                data += chunk
    return data


def _head(answer: bytes) -> tuple[bytes, dict[bytes, list[bytes]]]:
    """The status line and the header fields (lower-case names) of a raw answer."""
    head = answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    fields: dict[bytes, list[bytes]] = {}
    for line in head[1:]:
        name, _, value = line.partition(b":")
        fields.setdefault(name.strip().lower(), []).append(value.strip())
    return head[0], fields


# -- the Host header: one, well-formed, and never echoed into a URL --------------------------------
@pytest.mark.parametrize(
    "request_head",
    [
        b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n",  # RFC 9112 3.2: an HTTP/1.1 request needs Host
        b"GET /healthz HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: evil.example/@x\r\nConnection: close\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n",
    ],
    ids=["missing", "twice", "path-in-host", "space-in-host"],
)
def test_a_request_without_exactly_one_well_formed_host_gets_400(app: App, request_head: bytes) -> None:
    with served(app) as port:
        status, fields = _head(_exchange(port, request_head))
        assert status.startswith(b"HTTP/1.1 400 ")
        assert fields[b"connection"] == [b"close"]
        # an HTTP/1.0 request may leave Host out (it predates it); an ordinary one still works
        assert _exchange(port, b"GET /healthz HTTP/1.0\r\n\r\n").endswith(b"\r\n\r\nok\n")
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").text == "ok\n"


def test_a_redirect_never_carries_the_clients_host(app: App) -> None:
    """Web cache poisoning / open redirect: the Location used to be built from the Host header
    (``/digest`` -> ``http://evil.example/digest/``), and CONNECT sent the client anywhere."""
    with served(app) as port:
        # A name the app answers to, but not the public one: the Location is still the public URL.
        answer = _exchange(port, b"GET /digest HTTP/1.1\r\nHost: localhost:9999\r\nConnection: close\r\n\r\n")
        status, fields = _head(answer)
        assert b"localhost" not in answer
        assert status.split()[1] in (b"301", b"307", b"308")
        public = app.settings.site.public_url.rstrip("/").encode()
        assert fields[b"location"] == [public + b"/digest/"]
        for target in (b"CONNECT evil.example:443", b"OPTIONS *", b"GET evil.example:443"):
            answer = _exchange(port, target + b" HTTP/1.1\r\nHost: evil.example:443\r\nConnection: close\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 400 ") and b"location" not in answer.lower(), target


# -- the Host allowlist ([web] hosts): DNS rebinding ----------------------------------------------
# Names a browser may put in Host when a page of the attacker's resolves to our address, and
# disguises of ours: each gets 421 whatever the path. (What RequestChecks refuses as malformed
# gets its 400 before: tests above.)
FOREIGN_HOSTS = [
    b"attacker.example",
    b"attacker.example:8080",
    b"attacker.example.",
    b"127.0.0.1.attacker.example",
    b"localhost.attacker.example",
    b"localhost%2eattacker.example",
    b"127.1",
    b"0x7f.0.0.1",
    b"xn--localhost",
]
# The default names (the public URL's 127.0.0.1 and the loopback names), on any port, as a
# browser may spell them.
OUR_HOSTS = [b"127.0.0.1", b"127.0.0.1:8080", b"localhost:1", b"LOCALHOST", b"localhost.", b"[::1]:8080", b"[0:0::1]"]
# Addresses as written: what a health check or a scraper connecting by address sends. Rebinding
# needs a name, so they are answered whatever [web] hosts lists (but no form takes them as Origin).
ADDRESS_HOSTS = [b"10.0.0.5:8080", b"192.0.2.1", b"[::ffff:127.0.0.1]", b"[fd00::5]:8080"]


def test_a_request_for_a_host_we_do_not_answer_to_gets_421_before_anything_is_routed(app: App) -> None:
    paths = [b"/subscribe", b"/feeds/bigtech.xml", b"/healthz", b"/nope", b"/digest"]
    with served(app) as port:
        for host in FOREIGN_HOSTS:
            for path in paths:
                request = b"GET " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n"
                answer = _exchange(port, request)
                status, fields = _head(answer)
                assert status.startswith(b"HTTP/1.1 421 "), (host, path, status)
                assert fields[b"x-content-type-options"] == [b"nosniff"]
                assert fields[b"referrer-policy"] == [b"no-referrer"]
                assert b"set-cookie" not in fields and b"location" not in fields
                body = answer.split(b"\r\n\r\n", 1)[1]
                assert body == b"misdirected request: this server does not answer for that host name\n", host
        for host in OUR_HOSTS + ADDRESS_HOSTS:
            answer = _exchange(port, b"GET /healthz HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\r\n\r\nok\n"), host


def test_a_dns_rebinding_page_can_neither_read_a_token_nor_sign_anyone_up(app: App) -> None:
    """attacker.example resolves to our address: its page is same-origin with what it loads from
    us under that name. It could read the form's CSRF token (the app answered any Host) and post
    with ``Origin: http://attacker.example``, which the check took for our own origin (it
    compared with the request's own Host): sign-ups from every visitor's browser and address."""
    with served(app) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}") as browser:
        rebound = {"Host": f"attacker.example:{port}"}
        page = browser.get("/subscribe", headers=rebound)
        assert page.status_code == 421 and "csrf" not in page.text and "set-cookie" not in page.headers
        # Worst case: the page holds a valid token and cookie anyway (from a visit of its own).
        ours = browser.get("/subscribe")
        csrf = ours.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        form = {"csrf": csrf, "email": "victim@example.com"}
        posted = browser.post("/subscribe", data=form, headers={**rebound, "Origin": f"http://attacker.example:{port}"})
        assert posted.status_code == 421
        # Sent to one of our names (the request itself may say anything), another Origin is refused.
        for origin in (f"http://attacker.example:{port}", "http://127.0.0.1.attacker.example", "null.example"):
            refused = browser.post("/subscribe", data=form, headers={"Origin": origin})
            assert refused.status_code == 403, origin
        time.sleep(0.3)  # a sign-up would be recorded right after its answer
        assert app.store.get_subscriber("victim@example.com") is None
        # The same post from our own page is a sign-up: the refusals above are about the names.
        accepted = browser.post("/subscribe", data=form, headers={"Origin": f"http://127.0.0.1:{port}"})
        assert accepted.status_code == 200
        deadline = time.monotonic() + 10
        while app.store.get_subscriber("victim@example.com") is None:
            assert time.monotonic() < deadline, "the sign-up from our own origin was not recorded"
            time.sleep(0.05)


def test_a_mail_providers_one_click_unsubscribe_is_answered_under_any_of_our_host_spellings(app: App) -> None:
    """RFC 8058: the provider posts ``List-Unsubscribe=One-Click`` from its own servers, with no
    Origin and no cookie, to the link's host as it spells it. Under Granian and the host check,
    every spelling of ours unsubscribes; a foreign Host is a 421 and changes nothing."""
    sub, _ = app.store.add_subscriber("reader@example.com", (), SubscriberStatus.SUBSCRIBED, NOW)
    path = app.links_for(sub)[0].removeprefix("http://127.0.0.1:8080").encode()
    body = b"List-Unsubscribe=One-Click"

    def one_click(port: int, host: bytes) -> bytes:
        head = b"POST " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\nContent-Length: %d\r\n" % len(body)
        form = b"Content-Type: application/x-www-form-urlencoded\r\nConnection: close\r\n\r\n"
        return _head(_exchange(port, head + form + body))[0]

    def status() -> SubscriberStatus:
        found = app.store.get_subscriber_by_id(sub.id)
        assert found is not None
        return found.status

    with served(app) as port:
        for host in FOREIGN_HOSTS:
            assert one_click(port, host).startswith(b"HTTP/1.1 421 "), host
        assert status() is SubscriberStatus.SUBSCRIBED
        for host in [b"127.0.0.1:8080", b"127.0.0.1.", b"LOCALHOST:8080", b"[::1]"]:
            assert one_click(port, host).startswith(b"HTTP/1.1 200 "), host  # idempotent after the first
            assert status() is SubscriberStatus.UNSUBSCRIBED


@pytest.mark.parametrize(
    ("origin", "ours"),
    [
        ("http://127.0.0.1:8080", True),
        ("https://localhost", True),
        ("http://[::1]:3000", True),
        ("http://LOCALHOST.", True),
        ("http://attacker.example", False),
        ("http://localhost.attacker.example", False),
        ("http://10.0.0.5:8080", False),  # answered as a Host, never taken as a form's origin
        ("http://localhost@attacker.example", False),
        ("http://attacker.example#@localhost", False),
        ("javascript://localhost", False),
        ("http://localhost/path", False),
        ("http://localhost?x", False),
        ("http://localhost#x", False),
        ("http://[::1", False),
        ("localhost", False),
        ("", False),
    ],
)
def test_the_forms_origin_is_one_of_the_allowed_hosts(origin: str, ours: bool) -> None:
    assert origin_allowed(origin, frozenset({"127.0.0.1", "localhost", "[::1]"})) is ours


def test_the_host_check_alone_refuses_two_hosts_and_remembers_a_bounded_few() -> None:
    """``AllowedHosts`` under any server (no ``RequestChecks`` in front): two Host headers are
    refused, a missing one only passes for HTTP/1.0; the allowed values it remembers (so the feed
    path pays a set lookup) stay bounded however many ports a stranger tries, and a refused value
    is never remembered."""
    answered: list[int] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        answered.append(200)

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            answered.append(message["status"])

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    checks = AllowedHosts(app, frozenset({"127.0.0.1", "localhost", "[::1]"}))

    def status(*hosts: bytes, version: str = "1.1") -> int:
        scope = {"type": "http", "http_version": version, "headers": [(b"host", h) for h in hosts]}
        asyncio.run(checks(scope, receive, send))
        return answered.pop()

    assert status(b"localhost", b"localhost") == 421
    assert (status(version="1.1"), status(version="1.0"), status(b"", version="1.0")) == (421, 200, 200)
    assert {status(b"localhost:%d" % port) for port in range(1, 2000)} == {200}
    assert {status(b"attacker.example:%d" % port) for port in range(1, 2000)} == {421}
    assert len(checks._seen) == AllowedHosts.SEEN and not any(b"attacker" in h for h in checks._seen)


def test_web_hosts_replace_the_loopback_names_and_keep_the_public_one(tmp_path: Path) -> None:
    """Behind a proxy that passes the public Host (docs/publishing.md): ``hosts = ["news.example"]``
    answers that name and the public URL's, and no longer ``localhost``."""
    cfg = write_config(tmp_path)
    cfg.write_text(
        cfg.read_text(encoding="utf-8").replace("[web]\n", '[web]\nhosts = ["news.example"]\n'), encoding="utf-8"
    )
    app = make_app(load_settings(cfg))
    try:
        with served(app) as port:
            for host, status in ((b"news.example", b"200"), (b"127.0.0.1:8080", b"200"), (b"localhost", b"421")):
                request = b"GET /healthz HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n"
                assert _head(_exchange(port, request))[0].split()[1] == status, host
    finally:
        app.close()


# -- headers every response carries ---------------------------------------------------------------
def test_every_response_has_nosniff_and_no_referrer(app: App) -> None:
    """Not only the pages: the feeds (whose text comes from hostile sources), their 404s and the
    limits' own 431 answer."""
    with served(app) as port:
        requests = [
            b"GET /feeds/bigtech.xml HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            b"HEAD /feeds/all.json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            b"GET /feeds/nope.xml HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: localhost\r\nCookie: " + b"c" * 33_000 + b"\r\n\r\n",
            b"GET /nope HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        ]
        for request in requests:
            status, fields = _head(_exchange(port, request))
            assert fields.get(b"x-content-type-options") == [b"nosniff"], (request[:30], status)
            assert fields.get(b"referrer-policy") == [b"no-referrer"], (request[:30], status)


# -- the peer address behind a dual-stack listener ------------------------------------------------
@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("::ffff:127.0.0.1", ["203.0.113.9"], "203.0.113.9"),  # web.host = "::": IPv4 peers look like this
        ("::ffff:127.0.0.1", ["::ffff:203.0.113.9"], "203.0.113.9"),
        ("::ffff:198.51.100.1", ["203.0.113.9"], "198.51.100.1"),  # not the proxy: the header is ignored
        ("127.0.0.1", ["::ffff:127.0.0.1, 203.0.113.9"], "203.0.113.9"),
    ],
)
def test_an_ipv4_mapped_peer_is_its_ipv4_address(peer: str, forwarded: list[str], client: str) -> None:
    assert ClientAddress(["127.0.0.1"]).of(peer, forwarded) == client


def test_behind_a_trusted_proxy_on_a_dual_stack_listener_each_visitor_has_a_bucket(tmp_path: Path) -> None:
    """With ``web.host = "::"`` Granian reports an IPv4 peer as ``::ffff:127.0.0.1``: the trusted
    nginx at 127.0.0.1 was not recognised and every visitor shared its one sign-up bucket."""
    cfg = write_config(tmp_path)
    web = '[web]\nhost = "::"\nsubscribe_per_hour = 2\ntrusted_proxies = ["127.0.0.1"]\n'
    cfg.write_text(cfg.read_text(encoding="utf-8").replace("[web]\n", web), encoding="utf-8")
    app = make_app(load_settings(cfg))
    codes = []
    try:
        with running(lambda port: embedded(create_app(app), "::", port)) as port:
            for i in range(4):
                with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
                    xff = {"X-Forwarded-For": f"203.0.113.{i}"}
                    page = http.get("/subscribe", headers=xff)
                    csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
                    codes.append(
                        http.post(
                            "/subscribe", data={"csrf": csrf, "email": f"r{i}@example.com"}, headers=xff
                        ).status_code
                    )
    finally:
        app.close()
    assert codes == [200] * 4


# -- shutdown and the supervisor, in processes of their own ---------------------------------------
@contextlib.contextmanager
def _serve(tmp_path: Path, web_extra: str = "") -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """``feedservice serve`` in its own process (``run.shutdown_timeout = 1``); yields the
    process, its port and its log file."""
    port = free_port()
    cfg = write_config(tmp_path)
    text = cfg.read_text(encoding="utf-8").replace("[web]\n", f"[web]\nport = {port}\n{web_extra}", 1)
    cfg.write_text(text + "\n[run]\nshutdown_timeout = 1\n", encoding="utf-8")
    log = tmp_path / "serve.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "feedservice", "--config", str(cfg), "serve"], stdout=subprocess.DEVNULL, stderr=err
        )
    with process_serving(proc, f"http://127.0.0.1:{port}/healthz", log, 30):
        yield proc, port, log


def _slow_bodies(port: int, count: int) -> list[socket.socket]:
    """Connections each in the middle of a sign-up body that will never be finished."""
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(
            b"POST /subscribe HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 100\r\n\r\nema"
        )
        socks.append(sock)
    return socks


def _stopped_in(proc: subprocess.Popen[bytes], limit: float) -> float:
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(limit)
    return time.monotonic() - start


def test_sigterm_cuts_off_each_request_waiting_for_its_body_in_one_line_and_stops_by_itself(tmp_path: Path) -> None:
    """SIGTERM with three sign-ups waiting for bodies that never come, and an idle keep-alive
    connection: at ``shutdown_timeout`` each sign-up is cut off (its client gets a 503, the log one
    line) and Granian's stop then ends by itself. It used to end by cancelling Granian's serving
    task: each cut request was a cancelled task whose CancelledError was swallowed, logged only as
    the event loop closed, and about one stop in fifteen Granian's shutdown callback, arriving after
    its cancelled future, logged an InvalidStateError traceback."""
    with _serve(tmp_path) as (proc, port, log):
        idle = socket.create_connection(("127.0.0.1", port), timeout=5)
        idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert idle.recv(65536).startswith(b"HTTP/1.1 200 ")
        socks = _slow_bodies(port, 3)
        time.sleep(0.5)  # the handlers are waiting for the bodies
        waited = _stopped_in(proc, 15)
        answers = [_exchange_rest(sock) for sock in socks]
        idle.close()
    assert proc.returncode == 0 and waited < 8  # shutdown_timeout = 1, generous for a loaded machine
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 503 ") and answer.endswith(b"\r\n\r\nthe server is stopping\n"), answer
    lines = log.read_text(encoding="utf-8").splitlines()
    cut = [i for i, line in enumerate(lines) if "a POST request was cut off by the server stopping" in line]
    assert len(cut) == 3, lines
    assert not [line for line in lines if "Traceback" in line or "Error" in line or "Exception" in line], lines
    # Granian stopped by itself once the requests had answered, not when the server was cancelled
    # (a second later, as the last resort): its caller's last line comes after the cut-offs.
    assert max(cut) < next(i for i, line in enumerate(lines) if "stopped by SIGTERM" in line), lines


def _exchange_rest(sock: socket.socket) -> bytes:
    """What the server sends on ``sock`` until it closes it (at most 5 s)."""
    data = b""
    with sock, contextlib.suppress(ConnectionResetError, TimeoutError):
        sock.settimeout(5)
        while chunk := sock.recv(65536):
            data += chunk
    return data


def _workers(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False)
    return {int(word) for word in out.stdout.split()}


def test_a_worker_killed_under_the_supervisor_comes_back(tmp_path: Path) -> None:
    """``[web] workers = 2``: a ``kill -9`` of one worker (the OOM killer, an operator's slip)
    used to bring the whole server down with 'Unexpected exit from worker-1'."""
    with _serve(tmp_path, "workers = 2\n") as (proc, port, log):
        deadline = time.monotonic() + 30
        while len(before := _workers(proc.pid)) < 2:
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.1)
        os.kill(min(before), signal.SIGKILL)
        while len(after := _workers(proc.pid) - {min(before)}) < 2:
            assert proc.poll() is None, log.read_text(encoding="utf-8")
            assert time.monotonic() < deadline, f"no new worker: {after}"
            time.sleep(0.1)
        while True:  # the new worker takes requests again
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).text == "ok\n":
                    break
            assert time.monotonic() < deadline, "the server stopped answering"
            time.sleep(0.1)
        socks = _slow_bodies(port, 2)
        waited = _stopped_in(proc, 30)
        for sock in socks:
            sock.close()
    assert proc.returncode == 0 and waited < 15
    assert not {pid for pid in after if Path(f"/proc/{pid}").exists() and _alive(pid)}


def _alive(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    return False
