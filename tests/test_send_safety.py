"""Sending that cannot hang, wipe the list or hide a failure (issue 13 "Sending", issue 15 item 1).

Real relays on 127.0.0.1 (aiosmtpd), each refusing in its own way; every test asserts what a
reader or an operator would notice: who got mail, who was marked, that the run ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import signal
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from feedservice.bootstrap import make_app
from feedservice.errors import DeliveryFatal
from feedservice.model import Subscriber, SubscriberStatus
from tests.conftest import FeedServer, body_text, free_port
from tests.test_deliver import FRESH, KST_DAY, SEND_TIME, TODAY, FaultySink, _add, _app, _cli, _deliveries, _run

DAY = datetime.fromisoformat(KST_DAY).date()
IDN_READERS = ["사용자@example.com", "ok@bücher.de", "ok@例子.广告", "plain@example.com"]


class Relay(FaultySink):
    """A FaultySink that can also refuse MAIL FROM, answer every RCPT the same, or stall DATA."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__(delay)
        self.mail_reply: str | None = None
        self.every_rcpt: str | None = None
        self.in_data = 0
        self.mail_from: list[str] = []

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if self.mail_reply is not None:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        self.mail_from.append(address)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if self.every_rcpt is not None:
            return self.every_rcpt
        return await super().handle_RCPT(server, session, envelope, address, options)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.in_data += 1
        return await super().handle_DATA(server, session, envelope)


def _relay(smtputf8: bool = True, delay: float = 0.0) -> Iterator[tuple[Relay, int]]:
    handler = Relay(delay)
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, enable_SMTPUTF8=smtputf8)
    controller.start()
    yield handler, port
    controller.stop()


@pytest.fixture
def relay() -> Iterator[tuple[Relay, int]]:
    yield from _relay()


@pytest.fixture
def ascii_relay() -> Iterator[tuple[Relay, int]]:
    yield from _relay(smtputf8=False)


def _send(app: Any, timeout: float = 60) -> Any:
    """``digest send`` as the CLI runs it, bounded: a run that does not end fails the test."""
    return asyncio.run(asyncio.wait_for(app.send_digest(DAY), timeout))


@contextlib.contextmanager
def _edition(tmp_path: Path, feed_server: FeedServer, port: int, readers: list[str]) -> Iterator[Any]:
    """An app whose edition has ``readers`` subscribed, closed afterwards."""
    app = _app(tmp_path, feed_server, port, clock=lambda: SEND_TIME)
    try:
        _add(app, *readers)
        yield app
    finally:
        app.close()


def _parse(message: bytes) -> Any:
    """The message as a reader's mail client sees it (RFC 6532: headers may be raw UTF-8)."""
    return email.message_from_string(message.decode("utf-8"), policy=email.policy.SMTPUTF8)


def _to(message: bytes) -> str:
    return str(_parse(message)["To"].addresses[0].addr_spec)


# -- 1. internationalised addresses ------------------------------------------------------------------
def test_international_addresses_go_out_with_smtputf8_where_offered(
    tmp_path: Path, feed_server: FeedServer, relay: tuple[Relay, int]
) -> None:
    handler, port = relay
    with _edition(tmp_path, feed_server, port, IDN_READERS) as app:
        report = _send(app)
        assert (report.sent, report.failed, report.deferred) == (4, 0, 0)
        got = {to: data for to, data in handler.received}
        # A domain-only IDN travels as plain ASCII; a non-ASCII local part as UTF-8 (RFC 6531/6532).
        assert set(got) == {
            "사용자@example.com",
            "ok@xn--bcher-kva.de",
            "ok@xn--fsqu00a.xn--4rr70v",
            "plain@example.com",
        }
        assert {to: _to(data) for to, data in got.items()} == {to: to for to in got}
        assert {d.status.value for d in _deliveries(app)} == {"sent"}


def test_without_smtputf8_only_the_utf8_local_part_fails_with_a_reason(
    tmp_path: Path, feed_server: FeedServer, ascii_relay: tuple[Relay, int]
) -> None:
    handler, port = ascii_relay
    with _edition(tmp_path, feed_server, port, IDN_READERS) as app:
        report = _send(app)
        assert (report.sent, report.failed, report.deferred, report.suppressed) == (3, 1, 0, 0)
        assert sorted(to for to, _ in handler.received) == [
            "ok@xn--bcher-kva.de",
            "ok@xn--fsqu00a.xn--4rr70v",
            "plain@example.com",
        ]
        status = {d.email: (d.status.value, d.last_reply or "") for d in _deliveries(app)}
        assert status["사용자@example.com"][0] == "failed" and "SMTPUTF8" in status["사용자@example.com"][1]
        reader = app.store.get_subscriber("사용자@example.com")
        assert reader is not None and reader.status is SubscriberStatus.SUBSCRIBED  # not the reader's fault


def test_a_sender_with_an_idn_domain_is_sent_in_idna_form(
    tmp_path: Path, feed_server: FeedServer, ascii_relay: tuple[Relay, int]
) -> None:
    handler, port = ascii_relay
    app = _app(tmp_path, feed_server, port, clock=lambda: SEND_TIME)
    cfg = Path(app.settings.source_path)
    app.close()
    cfg.write_text(cfg.read_text().replace("newsletter@newsspace.kr", "newsletter@뉴스스페이스.kr"))
    from feedservice.bootstrap import make_app
    from feedservice.config import load_settings

    app = make_app(load_settings(cfg), clock=lambda: SEND_TIME)
    try:
        _add(app, "reader@example.com")
        report = _send(app)
        assert report.sent == 1
        assert handler.mail_from == ["newsletter@xn--vg1b002aaa372d1mu.kr"]
        parsed = _parse(handler.received[0][1])
        assert parsed["From"].addresses[0].addr_spec == "newsletter@xn--vg1b002aaa372d1mu.kr"
        assert parsed["From"].addresses[0].display_name == "뉴스스페이스"
        assert "xn--vg1b002aaa372d1mu.kr" in parsed["Message-ID"] and parsed["Message-ID"].isascii()
    finally:
        app.close()


def test_preview_for_an_international_reader(tmp_path: Path, feed_server: FeedServer, relay: tuple[Relay, int]) -> None:
    """An international reader on the list no longer breaks the preview, which is addressed to an
    inert sample and carries nobody's address (issue 14 item 7)."""
    _, port = relay
    app = _app(tmp_path, feed_server, port, clock=lambda: SEND_TIME)
    cfg = Path(app.settings.source_path)
    try:
        _add(app, "사용자@bücher.de")
    finally:
        app.close()
    result = _run(cfg, "digest", "preview", "--date", KST_DAY, "--out", str(tmp_path / "preview"))
    assert result.returncode == 0, result.stderr
    eml = (tmp_path / "preview" / "digest.eml").read_bytes()
    assert _to(eml) == "preview@example.invalid"
    assert "사용자".encode() not in eml and b"xn--bcher-kva" not in eml


# -- 2. the sending loop: any exception is one message's outcome ------------------------------------
def test_an_unexpected_error_in_one_message_is_its_outcome(
    tmp_path: Path, feed_server: FeedServer, relay: tuple[Relay, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    handler, port = relay
    app = _app(tmp_path, feed_server, port, clock=lambda: SEND_TIME)
    real_links = app.links_for

    def links_for(sub: Subscriber) -> tuple[str, str]:
        if sub.email == "cursed@example.com":
            raise RuntimeError("personalisation blew up")
        return real_links(sub)

    monkeypatch.setattr(app, "links_for", links_for)
    try:
        _add(app, "a@example.com", "cursed@example.com", "b@example.com", "c@example.com")
        report = _send(app)  # ends: before, the sender task died and the row stayed "sending"
        assert sorted(to for to, _ in handler.received) == ["a@example.com", "b@example.com", "c@example.com"]
        assert (report.sent, report.failed) == (3, 1)
        status = {d.email: (d.status.value, d.last_reply or "") for d in _deliveries(app)}
        assert status["cursed@example.com"] == ("failed", "not sent: RuntimeError: personalisation blew up")
        assert any("personalisation blew up" in e for e in report.errors)
    finally:
        app.close()


def test_sigterm_ends_a_run_within_shutdown_timeout(tmp_path: Path, feed_server: FeedServer) -> None:
    """The relay holds every DATA for 30 s (within the 60 s SMTP timeout): SIGTERM must not wait
    for it. What was claimed and not sent is queued again; nobody is lost or marked."""
    gen = _relay(delay=30)
    handler, port = next(gen)
    try:
        app = _app(
            tmp_path,
            feed_server,
            port,
            smtp_extra="pool_size = 2",
            delivery_extra="lease_seconds = 600",
            clock=None,
            items=FRESH,
        )
        cfg = Path(app.settings.source_path)
        _add(app, *(f"r{i}@example.com" for i in range(10)))
        app.close()
        cfg.write_text(cfg.read_text().replace("timeout = 2.0", "timeout = 60.0") + "\n[run]\nshutdown_timeout = 2\n")
        proc = _cli(cfg, "digest", "send", "--date", TODAY)
        deadline = time.monotonic() + 60
        while handler.in_data < 2:
            assert time.monotonic() < deadline and proc.poll() is None, "the run did not get going"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        proc.communicate(timeout=20)
        assert time.monotonic() - stopped < 2 + 10  # shutdown_timeout, plus handing back on a busy machine (not 30 s)
        assert proc.returncode == 0
        from feedservice.bootstrap import make_app
        from feedservice.config import load_settings

        app = make_app(load_settings(cfg))
        try:
            assert {d.status.value for d in _deliveries(app)} == {"queued"}
        finally:
            app.close()
    finally:
        next(gen, None)


# -- 3. a relay that refuses the sender never suppresses readers --------------------------------------
def _nobody_marked(app: Any, readers: list[str]) -> None:
    """Every reader still subscribed with their address, every delivery queued for a later run."""
    assert _all_subscribed(app, readers)
    assert {d.status.value for d in _deliveries(app)} == {"queued"}


def _all_subscribed(app: Any, emails: list[str]) -> bool:
    subs = [app.store.get_subscriber(e) for e in emails]
    return all(
        s is not None and s.status is SubscriberStatus.SUBSCRIBED and s.email == e
        for s, e in zip(subs, emails, strict=True)
    )


def test_sender_refused_permanently_stops_and_pauses_the_run(
    tmp_path: Path, feed_server: FeedServer, relay: tuple[Relay, int]
) -> None:
    handler, port = relay
    handler.mail_reply = "553 5.1.8 Sender address rejected: domain not found"
    readers = [f"r{i}@example.com" for i in range(5)]
    with _edition(tmp_path, feed_server, port, readers) as app:
        cfg = Path(app.settings.source_path)
        with pytest.raises(DeliveryFatal, match="refused our sender"):
            _send(app)
        assert handler.received == []
        _nobody_marked(app, readers)  # before: every reader suppressed and forgotten
        assert app.store.editions_with_work(SEND_TIME) == []  # workers leave a paused edition alone
        status = _run(cfg, "digest", "status", "--date", KST_DAY)
        assert "paused" in status.stdout and "5.1.8" in status.stdout and "digest send --date" in status.stdout
        # The operator fixes the relay and resumes with `digest send`: everyone gets the edition.
        handler.mail_reply = None
        report = _send(app)
        assert report.sent == 5 and sorted(to for to, _ in handler.received) == readers
        assert "paused" not in _run(cfg, "digest", "status", "--date", KST_DAY).stdout


def test_sender_refused_temporarily_defers_the_run(
    tmp_path: Path, feed_server: FeedServer, relay: tuple[Relay, int]
) -> None:
    handler, port = relay
    handler.mail_reply = "421 4.3.2 Service shutting down, try later"
    readers = [f"r{i}@example.com" for i in range(5)]
    with _edition(tmp_path, feed_server, port, readers) as app:
        report = _send(app)
        assert report.stopped is not None and "421" in report.stopped and "deferred" in report.stopped
        assert "421" in report.summary()
        assert (report.sent, report.failed, report.suppressed) == (0, 0, 0)
        _nobody_marked(app, readers)  # a later run sends them all
        assert app.store.editions_with_work(SEND_TIME) == [DAY]  # not paused: `worker` retries


def test_mass_unknown_user_trips_the_breaker_instead_of_suppressing(
    tmp_path: Path, feed_server: FeedServer, relay: tuple[Relay, int]
) -> None:
    handler, port = relay
    handler.every_rcpt = "550 5.1.1 User unknown"
    readers = [f"r{i:02d}@example.com" for i in range(30)]
    with _edition(tmp_path, feed_server, port, readers) as app:
        cfg = Path(app.settings.source_path)
        report = _send(app)
        assert report.paused is not None and "nobody was suppressed" in report.paused
        assert report.suppressed == 0 and report.sent == 0
        _nobody_marked(app, readers)  # nothing lost
        assert app.store.editions_with_work(SEND_TIME) == []
        status = _run(cfg, "digest", "status", "--date", KST_DAY).stdout
        assert "paused" in status and "5.1.x" in status


def test_the_breaker_counts_per_edition_not_per_worker(
    tmp_path: Path, feed_server: FeedServer, relay: tuple[Relay, int], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers drain one edition against a relay that refuses everyone as unknown. Each sees
    about 15 refusals, under the breaker's minimum of 20 on its own; before, each counted only its
    own and together they suppressed (and forgot) all 30 readers."""
    handler, port = relay
    handler.every_rcpt = "550 5.1.1 User unknown"
    refuse = handler.handle_RCPT

    async def slowly(server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        await asyncio.sleep(0.02)  # both workers are sending when the refusals come in
        return await refuse(server, session, envelope, address, options)

    monkeypatch.setattr(handler, "handle_RCPT", slowly)
    readers = [f"r{i:02d}@example.com" for i in range(30)]
    app = _app(tmp_path, feed_server, port, db_url=db_url, smtp_extra="pool_size = 1", clock=lambda: SEND_TIME)
    other = make_app(app.settings, clock=lambda: SEND_TIME)  # a second worker process
    try:
        _add(app, *readers)
        asyncio.run(app.send_digest(DAY, queue_only=True))

        async def both() -> list[Any]:
            return list(await asyncio.wait_for(asyncio.gather(app.drain(DAY), other.drain(DAY)), 60))

        reports = asyncio.run(both())
        assert all(r.deferred + r.failed > 0 for r in reports)  # both workers took part
        assert sum(r.suppressed for r in reports) == 0
        _nobody_marked(app, readers)  # nobody suppressed, everyone queued for the resumption
        paused = app.store.sending_paused(DAY)
        assert paused is not None and "5.1.x" in paused and "nobody was suppressed" in paused
        assert app.store.editions_with_work(SEND_TIME) == []  # no worker goes on without an operator
    finally:
        other.close()
        app.close()


def test_mailbox_full_is_temporary(tmp_path: Path, feed_server: FeedServer, relay: tuple[Relay, int]) -> None:
    handler, port = relay
    handler.rcpt_replies = {"full@example.com": "552 5.2.2 Mailbox full"}
    with _edition(tmp_path, feed_server, port, ["ok@example.com", "full@example.com"]) as app:
        report = _send(app)
        assert (report.sent, report.deferred, report.failed, report.suppressed) == (1, 1, 0, 0)
        status = {d.email: d.status.value for d in _deliveries(app)}
        assert status == {"ok@example.com": "sent", "full@example.com": "deferred"}
        assert _all_subscribed(app, ["full@example.com"])


# -- 4. the confirmation mail: display names encoded, addresses never --------------------------------
@pytest.mark.parametrize(
    ("reader", "on_the_wire"),
    [("user@bücher.de", "user@xn--bcher-kva.de"), ("사용자@bücher.de", "사용자@xn--bcher-kva.de")],
)
def test_confirmation_mail_encodes_display_names_never_addresses(
    tmp_path: Path, feed_server: FeedServer, relay: tuple[Relay, int], reader: str, on_the_wire: str
) -> None:
    handler, port = relay
    with _edition(tmp_path, feed_server, port, []) as app:
        asyncio.run(app.send_confirmation(reader, "http://127.0.0.1:8080/confirm/abc", 24))
    [(rcpt, data)] = handler.received
    assert rcpt == on_the_wire
    raw_to = next(line for line in data.split(b"\r\n") if line.startswith(b"To:"))
    assert b"=?" not in raw_to  # before: user@=?utf-8?q?b=C3=BCcher?=.de
    parsed = _parse(data)
    assert parsed["To"].addresses[0].addr_spec == on_the_wire
    sender = parsed["From"].addresses[0]
    assert (sender.display_name, sender.addr_spec) == ("뉴스스페이스", "newsletter@newsspace.kr")
    assert "구독을 확인" in parsed["Subject"]
    assert "http://127.0.0.1:8080/confirm/abc" in body_text(parsed, "plain")


def test_a_reader_held_back_from_suppression_is_not_tried_again_in_a_long_run(
    tmp_path: Path, feed_server: FeedServer, relay: tuple[Relay, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 5.1.1 waits as deferred (5 min) until the run's end decides; in a run longer than that
    (here a clock that moves 20 s per reading) the row comes due again and must not be sent."""
    handler, port = relay
    handler.rcpt_replies = {"gone@example.com": "550 5.1.1 No such user"}
    tried: list[str] = []
    refuse = handler.handle_RCPT

    async def counting(server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        tried.append(address)
        return await refuse(server, session, envelope, address, options)

    monkeypatch.setattr(handler, "handle_RCPT", counting)
    ticks = iter(range(10_000))
    app = _app(
        tmp_path,
        feed_server,
        port,
        smtp_extra="pool_size = 1",
        delivery_extra="lease_seconds = 3600",
        clock=lambda: SEND_TIME + timedelta(seconds=20 * next(ticks)),
    )
    try:
        _add(app, "gone@example.com", *(f"r{i}@example.com" for i in range(12)))
        report = _send(app)
        assert tried.count("gone@example.com") == 1
        assert (report.sent, report.suppressed) == (12, 1)
        gone = app.store.get_subscriber("gone@example.com")
        assert gone is not None and gone.status is SubscriberStatus.SUPPRESSED
    finally:
        app.close()
