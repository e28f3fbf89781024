"""services/mime.py: every message the service sends comes out of one builder, and reads right in a
mail client (Python's own parser stands in for one)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
from datetime import datetime
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from feedservice.bootstrap import make_app
from feedservice.config import load_settings
from feedservice.errors import DeliveryError
from feedservice.services.mime import one_off_message, prepare_message
from tests.conftest import write_config
from tests.fakes import FakeMailer

SENDER = "뉴스스페이스 아침 브리핑 <newsletter@newsspace.kr>"
SUBJECT = "뉴스스페이스 뉴스레터 구독을 확인해 주세요 — 링크는 24시간 동안 유효합니다"
WHEN = datetime(2026, 11, 30, 7, 0, tzinfo=ZoneInfo("Asia/Seoul"))
TEXT = "구독을 확인하려면 이 링크를 여세요:\nhttp://127.0.0.1:8080/confirm/abc\n"
HTML = (
    "<html><body><p>구독을 확인하려면 "
    "<a href='http://127.0.0.1:8080/confirm/abc'>여기</a>를 누르세요.</p></body></html>"
)


def _parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def _headers(raw: bytes) -> list[bytes]:
    return raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


def _confirmation(to: str = "reader@example.com") -> bytes:
    return one_off_message(sender=SENDER, to=to, subject=SUBJECT, date=WHEN, text=TEXT, html=HTML)


def test_the_confirmation_mail_reads_right_korean_subject_and_sender_name_date_and_message_id() -> None:
    raw = _confirmation()
    msg = _parse(raw)
    assert msg["Subject"] == SUBJECT
    sender = msg["From"].addresses[0]
    assert (sender.display_name, sender.addr_spec) == ("뉴스스페이스 아침 브리핑", "newsletter@newsspace.kr")
    assert msg["To"].addresses[0].addr_spec == "reader@example.com"
    assert parsedate_to_datetime(msg["Date"]) == WHEN and msg["Date"].endswith("+0900")
    assert re.fullmatch(r"<[^<>@\s]+@newsspace\.kr>", msg["Message-ID"])
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg.get_content_type() == "multipart/alternative" and not msg.defects
    text, html = msg.get_body(("plain",)), msg.get_body(("html",))
    assert text is not None and html is not None
    assert text.get_content().replace("\r\n", "\n") == TEXT
    assert html.get_content().replace("\r\n", "\n").strip() == HTML
    # Korean goes as RFC 2047 words (each at most 75 characters), never raw in a header.
    for line in _headers(raw):
        assert line.isascii() and len(line) <= 998, line
    subject = [line for line in _headers(raw) if line.startswith((b"Subject:", b" "))]
    assert len(subject) > 1 and all(len(w) <= 75 for line in subject for w in re.findall(rb"=\?[^ ]+\?=", line))


def test_a_confirmation_is_not_a_list_message() -> None:
    msg = _parse(_confirmation())
    for header in ("List-Unsubscribe", "List-Unsubscribe-Post", "List-Id", "Precedence"):
        assert msg[header] is None, header


@pytest.mark.parametrize(
    ("reader", "on_the_wire"),
    [("user@bücher.de", b"To: user@xn--bcher-kva.de"), ("사용자@example.com", "To: 사용자@example.com".encode())],
)
def test_a_confirmation_names_its_reader_in_wire_form_never_in_encoded_words(reader: str, on_the_wire: bytes) -> None:
    raw = _confirmation(reader)
    assert on_the_wire in _headers(raw)


def _field(raw: bytes, name: bytes) -> list[bytes]:
    """A header field as written: its first line and the folded lines after it."""
    lines = _headers(raw)
    i = next(n for n, line in enumerate(lines) if line.startswith(name + b":"))
    rest = lines[i + 1 :]
    folded = next((n for n, line in enumerate(rest) if not line.startswith((b" ", b"\t"))), len(rest))
    return [lines[i], *rest[:folded]]


def test_digest_and_confirmation_share_the_builder_so_their_common_headers_are_the_same_bytes() -> None:
    digest = prepare_message(
        sender=SENDER, subject=SUBJECT, list_id="뉴스스페이스 <briefing.newsspace.kr>", text=TEXT, html=HTML, markers={}
    ).personalize(
        to="reader@example.com",
        msg_id="<digest.1@newsspace.kr>",
        links={"unsubscribe": "http://127.0.0.1:8080/unsubscribe/t"},
        date_header="Mon, 30 Nov 2026 07:00:00 +0900",
    )
    confirmation = _confirmation()
    for name in (b"To", b"Date", b"From", b"Subject", b"Auto-Submitted", b"MIME-Version"):
        assert _field(digest, name) == _field(confirmation, name), name
    assert _parse(digest)["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert _parse(digest)["List-Unsubscribe"] is not None


# -- the confirmation mail the app sends, on the in-memory relay (tests/fakes.py): no socket -------
def test_the_app_sends_its_confirmation_mail_through_the_builder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(load_settings(write_config(tmp_path)), clock=lambda: WHEN)
    relay = FakeMailer()
    monkeypatch.setattr(app, "make_mailer", lambda: relay)
    try:
        asyncio.run(app.send_confirmation("reader@bücher.de", "http://127.0.0.1:8080/confirm/abc", 24))
    finally:
        app.close()
    [(envelope, recipient, raw)] = relay.sent
    assert (envelope, recipient, relay.closed) == ("newsletter@newsspace.kr", "reader@bücher.de", True)
    msg = _parse(raw)
    assert msg["Subject"] == "뉴스스페이스 뉴스레터 구독을 확인해 주세요"
    assert msg["From"].addresses[0].display_name == "뉴스스페이스"
    assert msg["To"].addresses[0].addr_spec == "reader@xn--bcher-kva.de"
    assert parsedate_to_datetime(msg["Date"]) == WHEN and msg["Date"].endswith("+0900")  # the site's time zone
    assert re.fullmatch(r"<[^<>@\s]+@newsspace\.kr>", msg["Message-ID"]) and msg["List-Unsubscribe"] is None
    text = msg.get_body(("plain",))
    assert text is not None and "http://127.0.0.1:8080/confirm/abc" in text.get_content()


def test_a_relay_refusing_the_confirmation_mail_is_logged_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(load_settings(write_config(tmp_path)), clock=lambda: WHEN)
    relay = FakeMailer(refuse={"reader@example.com": DeliveryError("550 5.1.1 no such user", code=550)})
    monkeypatch.setattr(app, "make_mailer", lambda: relay)
    try:
        asyncio.run(app.send_confirmation("reader@example.com", "http://127.0.0.1:8080/confirm/abc", 24))
    finally:
        app.close()
    assert relay.sent == [] and relay.closed
    assert "confirmation mail to a new subscriber failed: 550 5.1.1 no such user" in caplog.text
