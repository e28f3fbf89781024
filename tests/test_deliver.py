"""Delivery against real SMTP servers on 127.0.0.1 (aiosmtpd): each fault and its outcome, a
kill -9 in the middle of a run, and three workers draining one edition on PostgreSQL."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from feedservice.adapters.smtp import SmtpMailer
from feedservice.bootstrap import App, make_app
from feedservice.cli.demo import sample_rss
from feedservice.config import load_settings
from feedservice.errors import DeliveryError, DeliveryFatal
from feedservice.model import SubscriberStatus
from tests.conftest import FeedServer, Served, SmtpSink, free_port, subscriber, write_config

KST_DAY = "2026-11-20"
ITEMS = [("빅테크 기사", "요약", "김정영", datetime(2026, 11, 19, 12, 0, tzinfo=UTC), 1)]
# For runs in other processes, on the real clock: an article of the last hour, today's edition.
FRESH = [("빅테크 기사", "요약", "김정영", datetime.now(UTC) - timedelta(hours=1), 1)]
TODAY = datetime.now(ZoneInfo("Asia/Seoul")).date().isoformat()


class FaultySink:
    """Accepts mail, except for addresses given a fault: a reply code, a drop, or a stall."""

    def __init__(self, delay: float = 0.0) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.rcpt_replies: dict[str, str] = {}
        self.drop: set[str] = set()
        self.stall: set[str] = set()
        self.delay = delay

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        to = envelope.rcpt_tos[0]
        if to in self.drop:
            server.transport.close()  # the connection drops in the middle of DATA
            return "250 never seen"
        if to in self.stall:
            await asyncio.sleep(5)
        if self.delay:
            await asyncio.sleep(self.delay)
        self.received.append((to, bytes(envelope.original_content)))
        return "250 2.0.0 Ok: queued"


@pytest.fixture
def sink() -> Iterator[tuple[FaultySink, int]]:
    handler = FaultySink()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    controller.stop()


SEND_TIME = datetime(2026, 11, 19, 22, 5, tzinfo=UTC)  # 07:05 KST on the edition's day


def _app(
    tmp_path: Path,
    feed_server: FeedServer,
    port: int,
    db_url: str | None = None,
    smtp_extra: str = "",
    delivery_extra: str = "",
    clock: Any = lambda: SEND_TIME,
    items: Any = ITEMS,
) -> App:
    feed_server.files["/rss.xml"] = Served(sample_rss("https://www.newsspace.kr", "bigtech", "빅테크", items))
    cfg = write_config(
        tmp_path,
        db_url=db_url,
        sources=[(feed_server.url("/rss.xml"), "bigtech")],
        delivery_extra=f'{delivery_extra}\n[delivery.smtp]\nhost = "127.0.0.1"\nport = {port}\ntls = "none"\n'
        f"timeout = 2.0\n{smtp_extra}",
    )
    app = make_app(load_settings(cfg), clock=clock)
    asyncio.run(app.collect())
    return app


def _add(app: App, *emails: str) -> None:
    for e in emails:
        app.store.add_subscriber(e, (), SubscriberStatus.SUBSCRIBED, datetime.now(UTC))


def test_faults_and_their_outcomes(tmp_path: Path, feed_server: FeedServer, sink: tuple[FaultySink, int]) -> None:
    handler, port = sink
    handler.rcpt_replies = {
        "later@example.com": "451 4.2.2 Mailbox full, try later",
        "gone@example.com": "550 5.1.1 No such user",
        "policy@example.com": "550 5.7.1 Rejected by DMARC policy",
    }
    handler.drop = {"drop@example.com"}
    handler.stall = {"stall@example.com"}
    app = _app(tmp_path, feed_server, port)
    try:
        _add(
            app,
            "ok@example.com",
            "later@example.com",
            "gone@example.com",
            "policy@example.com",
            "drop@example.com",
            "stall@example.com",
            "ok2@example.com",
        )
        report = asyncio.run(app.send_digest(datetime.fromisoformat(KST_DAY).date()))
        assert sorted(to for to, _ in handler.received) == ["ok2@example.com", "ok@example.com"]
        assert (report.sent, report.failed, report.deferred) == (2, 2, 3)
        assert report.suppressed == 1 and report.policy == 1
        status = {d.email: (d.status.value, d.last_reply or "") for d in _deliveries(app)}
        assert status["ok@example.com"][0] == "sent" and "2.0.0" in status["ok@example.com"][1]
        assert status["later@example.com"][0] == "deferred" and "4.2.2" in status["later@example.com"][1]
        # The suppressed address is forgotten: its ledger row keeps only the address's hash.
        assert "gone@example.com" not in status
        assert status[app.store.address_hash("gone@example.com")][0] == "failed"
        assert status["policy@example.com"][0] == "failed"
        assert status["drop@example.com"][0] == "deferred"
        assert status["stall@example.com"][0] == "deferred"
        gone = app.store.get_subscriber("gone@example.com")
        assert gone is not None and gone.status is SubscriberStatus.SUPPRESSED and gone.email == ""
        assert subscriber(app.store, "policy@example.com").status is SubscriberStatus.SUBSCRIBED
        # Re-running sends nothing new to anyone already sent; deferred ones wait for their retry time.
        again = asyncio.run(app.send_digest(datetime.fromisoformat(KST_DAY).date()))
        assert again.sent == 0 and len(handler.received) == 2
    finally:
        app.close()


def _deliveries(app: App) -> list[Any]:
    import sqlalchemy as sa

    from feedservice.adapters.store import schema as t
    from feedservice.adapters.store.ledger import _delivery

    with app.store.engine.connect() as conn:
        return [_delivery(r) for r in conn.execute(sa.select(t.deliveries))]


class RefusingAuth:
    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        return AuthResult(success=False, handled=False)


def test_refused_login_stops_the_run_and_marks_nothing(tmp_path: Path, feed_server: FeedServer) -> None:
    handler = FaultySink()
    port = free_port()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        authenticator=RefusingAuth(),
        auth_require_tls=False,
        auth_required=True,
    )
    controller.start()
    os.environ["FS_TEST_SMTP_PASSWORD"] = "wrong"
    app = _app(tmp_path, feed_server, port, smtp_extra='username = "news"\npassword_env = "FS_TEST_SMTP_PASSWORD"')
    try:
        _add(app, "a@example.com", "b@example.com")
        with pytest.raises(DeliveryFatal, match="refused the login"):
            asyncio.run(app.send_digest(datetime.fromisoformat(KST_DAY).date()))
        assert handler.received == []
        assert {d.status.value for d in _deliveries(app)} == {"queued"}  # handed back, ready for the next run
    finally:
        app.close()
        controller.stop()
        del os.environ["FS_TEST_SMTP_PASSWORD"]


def _start_sink(delay: float) -> tuple[FaultySink, Controller, int]:
    handler = FaultySink(delay=delay)
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    return handler, controller, port


def _cli(cfg: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "feedservice", "--config", str(cfg), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "feedservice", "--config", str(cfg), *args], capture_output=True, text=True, timeout=120
    )


def _subscribers_csv(path: Path, n: int) -> Path:
    path.write_text("email,sections,status\n" + "".join(f"r{i:04d}@example.com,,subscribed\n" for i in range(n)))
    return path


def test_kill_9_mid_run_then_restart(tmp_path: Path, feed_server: FeedServer) -> None:
    handler, controller, port = _start_sink(delay=0.01)
    try:
        app = _app(
            tmp_path,
            feed_server,
            port,
            smtp_extra="pool_size = 4",
            delivery_extra="lease_seconds = 1",
            clock=None,
            items=FRESH,
        )
        cfg = Path(app.settings.source_path)
        app.close()
        n = 300
        assert _run(cfg, "subscribers", "import", str(_subscribers_csv(tmp_path / "s.csv", n))).returncode == 0
        first = _cli(cfg, "digest", "send", "--date", TODAY)
        deadline = time.monotonic() + 90
        while len(handler.received) < 60:
            assert time.monotonic() < deadline and first.poll() is None, "the first run did not get going"
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=10)
        at_kill = len(handler.received)
        assert at_kill < n
        second = _cli(cfg, "digest", "send", "--date", TODAY)
        _, err = second.communicate(timeout=120)
        assert second.returncode == 0, err
        counts = collections.Counter(to for to, _ in handler.received)
        assert set(counts) == {f"r{i:04d}@example.com" for i in range(n)}  # nobody lost
        duplicates = sum(c - 1 for c in counts.values())
        assert duplicates <= 4, f"{duplicates} duplicates, more than the pool size"
    finally:
        controller.stop()


@pytest.mark.postgres
def test_three_workers_on_postgresql_send_each_once(tmp_path: Path, feed_server: FeedServer, postgres_url: str) -> None:
    handler, controller, port = _start_sink(delay=0.005)
    try:
        app = _app(
            tmp_path, feed_server, port, db_url=postgres_url, smtp_extra="pool_size = 3", clock=None, items=FRESH
        )
        cfg = Path(app.settings.source_path)
        app.close()
        n = 300
        assert _run(cfg, "subscribers", "import", str(_subscribers_csv(tmp_path / "s.csv", n))).returncode == 0
        queued = _run(cfg, "digest", "send", "--date", TODAY, "--queue-only")
        assert queued.returncode == 0, queued.stderr
        workers = [_cli(cfg, "worker", "--date", TODAY, "--once") for _ in range(3)]
        results = [w.communicate(timeout=120) for w in workers]
        assert all(w.returncode == 0 for w in workers), [r[1][-500:] for r in results]
        counts = collections.Counter(to for to, _ in handler.received)
        assert len(counts) == n and set(counts.values()) == {1}
        sent_by = [int(r[0].split(" sent", 1)[0].rsplit(" ", 1)[1]) for r in results]
        assert sum(sent_by) == n and sum(1 for s in sent_by if s > 0) >= 2, sent_by  # they really shared it
    finally:
        controller.stop()


def test_message_bytes_and_addresses_on_the_wire(smtp_server: tuple[SmtpSink, int]) -> None:
    """What the server stores is the message as composed: lines that start with a dot survive
    (dot-stuffed on the wire), bare line ends become CRLF. A Korean address goes out with SMTPUTF8
    where the server offers it and fails permanently where it does not; an address that would
    break the command line fails permanently; neither costs the pool its connection."""
    sink, port = smtp_server
    plain = SmtpSink()
    ascii_only = Controller(plain, hostname="127.0.0.1", port=free_port(), enable_SMTPUTF8=False)
    ascii_only.start()
    korean = ("Subject: 점검\r\n\r\n.첫 줄은 점으로\r\n..두 점\r\n끝.\r\n.\r\n").encode()
    bare = b"Subject: x\n\nbare LF\n.dot\rlone CR"
    sender = "newsletter@newsspace.kr"

    async def go() -> tuple[str, list[DeliveryError]]:
        mailer = SmtpMailer("127.0.0.1", port, tls="none", pool_size=1)
        reply = await mailer.send(sender, "reader@example.com", korean)
        await mailer.send(sender, "reader2@example.com", bare)
        await mailer.send(sender, "독자@example.com", korean)
        errors = []
        with pytest.raises(DeliveryError) as info:
            await mailer.send(sender, "evil@example.com>\r\nRCPT TO:<victim@example.com", korean)
        errors.append(info.value)
        await mailer.send(sender, "reader3@example.com", korean)  # the pool still works
        await mailer.aclose()
        strict = SmtpMailer("127.0.0.1", ascii_only.port, tls="none", pool_size=1)
        with pytest.raises(DeliveryError) as info:
            await strict.send(sender, "독자@example.com", korean)
        errors.append(info.value)
        await strict.send(sender, "reader@example.com", korean)
        await strict.aclose()
        return reply, errors

    try:
        reply, errors = asyncio.run(go())
    finally:
        ascii_only.stop()
    assert reply.startswith("250 ")
    got = [(m[1], m[2]) for m in sink.messages]
    assert got == [
        (["reader@example.com"], korean),
        (["reader2@example.com"], b"Subject: x\r\n\r\nbare LF\r\n.dot\r\nlone CR\r\n"),
        (["독자@example.com"], korean),
        (["reader3@example.com"], korean),
    ]
    assert [m[1] for m in plain.messages] == [["reader@example.com"]]
    assert all(e.permanent for e in errors) and "SMTPUTF8" in str(errors[1])
