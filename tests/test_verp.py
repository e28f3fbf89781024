"""VERP (issue 16): with ``[bounces] return_path`` each message's MAIL FROM names its delivery,
in a token no stranger can make; without ``[bounces]`` mail goes out as before."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from feedservice.bootstrap import App, make_app
from feedservice.cli.demo import sample_rss
from feedservice.config import load_settings
from feedservice.errors import ConfigError
from feedservice.model import SubscriberStatus
from feedservice.verp import DeliveryRef, envelope_sender, make_verp_token, read_verp_address, read_verp_token
from tests.conftest import FeedServer, Served, SmtpSink, write_config

DAY = date(2026, 11, 20)
SEND_TIME = datetime(2026, 11, 19, 22, 5, tzinfo=UTC)  # 07:05 KST on the edition's day
ITEMS = [("빅테크 기사", "요약", "김정영", datetime(2026, 11, 19, 12, 0, tzinfo=UTC), 1)]
SECRET = b"test-secret-for-signing"  # FS_TEST_SECRET in tests/conftest.py


def _app(tmp_path: Path, feed_server: FeedServer, port: int, bounces: str) -> App:
    feed_server.files["/rss.xml"] = Served(sample_rss("https://www.newsspace.kr", "bigtech", "빅테크", ITEMS))
    cfg = write_config(
        tmp_path,
        sources=[(feed_server.url("/rss.xml"), "bigtech")],
        delivery_extra=f'[delivery.smtp]\nhost = "127.0.0.1"\nport = {port}\ntls = "none"\ntimeout = 2.0\n{bounces}',
    )
    app = make_app(load_settings(cfg), clock=lambda: SEND_TIME)
    asyncio.run(app.collect())
    return app


def _send(app: App, *emails: str) -> dict[str, int]:
    ids = {}
    for e in emails:
        sub, _ = app.store.add_subscriber(e, (), SubscriberStatus.SUBSCRIBED, datetime.now(UTC))
        ids[e] = sub.id
    report = asyncio.run(app.send_digest(DAY))
    assert report.sent == len(emails)
    return ids


def test_each_message_goes_out_with_its_own_signed_envelope_sender(
    tmp_path: Path, feed_server: FeedServer, smtp_server: tuple[SmtpSink, int]
) -> None:
    sink, port = smtp_server
    app = _app(tmp_path, feed_server, port, '[bounces]\nreturn_path = "bounces@newsspace.kr"\n')
    try:
        ids = _send(app, "a@example.com", "b@example.com")
    finally:
        app.close()
    senders = {rcpts[0]: mail_from for mail_from, rcpts, _ in sink.messages}
    assert len(set(senders.values())) == 2  # one envelope sender per message
    for email, mail_from in senders.items():
        local, _, domain = mail_from.rpartition("@")
        assert domain == "newsspace.kr" and local.startswith("bounces+") and len(local) <= 64
        assert read_verp_address(SECRET, mail_from) == DeliveryRef(DAY, ids[email])
    # The header From is unchanged; the envelope sender is not put in the message.
    for _, _, data in sink.messages:
        assert b"From: =?utf-8?" in data or b"newsletter@newsspace.kr" in data
        assert b"bounces+" not in data


def test_without_bounces_mail_goes_out_as_before(
    tmp_path: Path, feed_server: FeedServer, smtp_server: tuple[SmtpSink, int]
) -> None:
    sink, port = smtp_server
    app = _app(tmp_path, feed_server, port, "")
    try:
        _send(app, "a@example.com")
    finally:
        app.close()
    assert [mail_from for mail_from, _, _ in sink.messages] == ["newsletter@newsspace.kr"]


def test_a_forged_or_altered_token_names_no_delivery() -> None:
    token = make_verp_token(SECRET, DAY, 42)
    assert read_verp_token(SECRET, token) == DeliveryRef(DAY, 42)
    assert read_verp_token(SECRET, token.upper()) == DeliveryRef(DAY, 42)  # a hop that changes case
    day, sub, mac = token.split("-")
    forged = [
        f"{day}-43-{mac}",  # someone else's delivery with this MAC
        f"20261121-{sub}-{mac}",  # another edition
        f"{day}-{sub}-{'a' * len(mac)}",  # a made-up MAC
        f"{day}-{sub}-{mac[:-1]}",  # cut short
        make_verp_token(b"another secret", DAY, 42),  # signed with the wrong key
        f"{day}-{'9' * 400}-{mac}",  # a 400-digit id: not a token, not an exception
        "",
        "20261340-1-aaaaaaaaaaaaaaaa",
        "bounces",
    ]
    assert [read_verp_token(SECRET, f) for f in forged] == [None] * len(forged)
    assert read_verp_address(SECRET, f"bounces+{forged[0]}@newsspace.kr") is None
    assert read_verp_address(SECRET, "bounces@newsspace.kr") is None


def test_tokens_survive_a_secret_rotation_and_a_new_return_path() -> None:
    address = envelope_sender("bounces@newsspace.kr", SECRET, DAY, 7)
    moved = address.replace("bounces+", "returns+").replace("newsspace.kr", "mail.newsspace.kr")
    assert read_verp_address([b"new secret", SECRET], moved) == DeliveryRef(DAY, 7)


def test_the_longest_token_fits_in_a_local_part() -> None:
    address = envelope_sender("b" * 26 + "@newsspace.kr", SECRET, date(9999, 12, 31), 10**11 - 1)
    assert len(address.rpartition("@")[0]) == 64


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('"Bounces <bounces@newsspace.kr>"', "bare mail address"),
        ('"bounces+x@newsspace.kr"', "bare mail address"),
        ('"bounces"', "bare mail address"),
        (f'"{"b" * 27}@newsspace.kr"', "no room for the VERP token"),
    ],
)
def test_config_refuses_a_return_path_that_cannot_carry_a_token(tmp_path: Path, value: str, message: str) -> None:
    cfg = write_config(tmp_path, delivery_extra=f"[bounces]\nreturn_path = {value}\n")
    with pytest.raises(ConfigError, match=message):
        load_settings(cfg)
