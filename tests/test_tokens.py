"""Mail-link and form tokens (feedservice/tokens.py): what each is bound to, rotation, expiry,
hostile input, and the links mailed before tokens were signed with itsdangerous."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from feedservice.bootstrap import App, make_app
from feedservice.config import load_settings
from feedservice.model import SubscriberStatus
from feedservice.tokens import (
    LEGACY_UNTIL,
    address_hash,
    csrf_token,
    make_token,
    token_subscriber,
    verify_csrf,
    verify_token,
)
from feedservice.web.app import create_app
from tests.conftest import write_config

NOW = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)
KEY = b"current-secret"
OLD_KEY = b"retired-secret"
ADDRESS = address_hash(KEY, "reader@example.com")

# Tokens written on 2026-11-30 by the hand-written signer (commit d1373e3, before itsdangerous),
# for subscriber 7 = reader@example.com under this secret: links in mailboxes today look like these.
RECORDED_SECRET = "recorded-secret-2026-11-30"
RECORDED_HASH = "h1:0d3c51b6d2d82479a4edb8c9c0db6116abb11a0d"
RECORDED_UNSUBSCRIBE = "7.0.Txvr1tM5Xkl0r8Gxnu3wV50QrOtS9in0BRsJrruuLSo"
RECORDED_PREFERENCES_V0 = "7.0.HGOzmAVdJUX9ZxHrPugOn3vMdrWXZjDd__htxScjT6U"
RECORDED_PREFERENCES_V2 = "7.0.JNR_RXD-chxPmlervRg-6weBiqxofCGuWqfbhS_Ijdw"
RECORDED_CONFIRM = "7.1796191200.ayLwsPvgOndcDuHuYB83W_RhFfOobGw7_HZ0ZSx3kpA"  # nonce n0nce, expires 2026-12-02 06:00Z


def test_recorded_address_hash_is_unchanged() -> None:
    assert address_hash(RECORDED_SECRET.encode(), "reader@example.com") == RECORDED_HASH


@pytest.mark.parametrize(
    ("token", "purpose", "version", "now", "valid"),
    [
        (RECORDED_UNSUBSCRIBE, "unsubscribe", 0, NOW, True),
        (RECORDED_UNSUBSCRIBE, "unsubscribe", 0, LEGACY_UNTIL - timedelta(seconds=1), True),
        (RECORDED_UNSUBSCRIBE, "unsubscribe", 0, LEGACY_UNTIL, False),  # the 60 days are over
        (RECORDED_UNSUBSCRIBE, "preferences", 0, NOW, False),  # another purpose
        (RECORDED_PREFERENCES_V0, "preferences", 0, NOW, True),
        (RECORDED_PREFERENCES_V0, "preferences", 1, NOW, False),  # the reader has left since
        (RECORDED_PREFERENCES_V2, "preferences", 2, NOW, True),
        (RECORDED_CONFIRM, "confirm:n0nce", 0, NOW, True),
        (RECORDED_CONFIRM, "confirm:n0nce", 0, datetime(2026, 12, 2, 6, 1, tzinfo=UTC), False),  # its own expiry
        (RECORDED_CONFIRM, "confirm:other", 0, NOW, False),
    ],
)
def test_links_mailed_before_the_switch(token: str, purpose: str, version: int, now: datetime, valid: bool) -> None:
    secrets = (b"a-newer-secret", RECORDED_SECRET.encode())
    assert verify_token(secrets, token, purpose, 7, RECORDED_HASH, now, version) is valid
    assert not verify_token(secrets, token, purpose, 8, RECORDED_HASH, now, version)
    assert not verify_token(secrets, token, purpose, 7, "h1:another", now, version)


def test_a_token_is_bound_to_purpose_subscriber_address_and_version() -> None:
    token = make_token(KEY, "preferences", 7, ADDRESS, now=NOW, version=3)
    assert token_subscriber(token) == 7
    assert verify_token(KEY, token, "preferences", 7, ADDRESS, NOW, 3)
    assert not verify_token(KEY, token, "unsubscribe", 7, ADDRESS, NOW, 3)
    assert not verify_token(KEY, token, "preferences", 8, ADDRESS, NOW, 3)
    assert not verify_token(KEY, token, "preferences", 7, "h1:other", NOW, 3)
    assert not verify_token(KEY, token, "preferences", 7, ADDRESS, NOW, 4)
    assert not verify_token(KEY, "8" + token[1:], "preferences", 8, ADDRESS, NOW, 3)  # id swapped


def test_rotation_verifies_retired_secrets_and_signs_with_the_current_one() -> None:
    old = make_token(OLD_KEY, "unsubscribe", 7, ADDRESS, now=NOW)
    new = make_token(KEY, "unsubscribe", 7, ADDRESS, now=NOW)
    assert verify_token((KEY, OLD_KEY), old, "unsubscribe", 7, ADDRESS, NOW)
    assert verify_token((KEY, OLD_KEY), new, "unsubscribe", 7, ADDRESS, NOW)
    assert not verify_token((KEY,), old, "unsubscribe", 7, ADDRESS, NOW)  # retired secret dropped
    assert not verify_token((b"unknown",), new, "unsubscribe", 7, ADDRESS, NOW)


def test_max_age_is_checked_when_the_token_is_used() -> None:
    token = make_token(KEY, "confirm:abc", 7, ADDRESS, now=NOW)
    day = timedelta(days=1)
    assert verify_token(KEY, token, "confirm:abc", 7, ADDRESS, NOW + day, max_age=day)
    assert not verify_token(KEY, token, "confirm:abc", 7, ADDRESS, NOW + day + timedelta(seconds=1), max_age=day)
    # without max_age (unsubscribe, preferences) a link never expires
    assert verify_token(KEY, token, "confirm:abc", 7, ADDRESS, NOW + timedelta(days=3650))


@pytest.mark.parametrize(
    "token",
    [
        "",
        ".",
        "7",
        "7..",
        "7.0.",
        "7.aaaa.bbbb.cccc",
        "7.!!!.???",
        "7.ü.ß",
        "7.0." + "A" * 5000,
        f"7.{'9' * 5000}.abc",
        "7.²³.abc",
        "7.\x00.\x00",
        "-7.0.abc",
    ],
)
def test_anything_else_is_simply_not_valid(token: str) -> None:
    assert not verify_token((KEY, OLD_KEY), token, "unsubscribe", 7, ADDRESS, NOW)


def test_csrf_field_belongs_to_its_cookie_and_survives_rotation() -> None:
    field = csrf_token(OLD_KEY, "cookie-a")
    assert verify_csrf((KEY, OLD_KEY), "cookie-a", field)  # a form loaded just before the rotation
    assert not verify_csrf((KEY,), "cookie-a", field)
    assert not verify_csrf((KEY, OLD_KEY), "cookie-b", field)
    for sent in ("", "x", "é" * 10, field + "A", "A" * 5000):
        assert not verify_csrf((KEY, OLD_KEY), "cookie-a", sent)


# -- in the web app: a link a reader received before the upgrade still works -----------------------
@pytest.fixture
def recorded_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    monkeypatch.setenv("FS_TEST_SECRET", RECORDED_SECRET)
    app = make_app(load_settings(write_config(tmp_path)), clock=lambda: NOW)  # before LEGACY_UNTIL, whenever run
    for n in range(1, 7):
        app.store.add_subscriber(f"other{n}@example.com", (), SubscriberStatus.SUBSCRIBED, NOW)
    sub, _ = app.store.add_subscriber("reader@example.com", (), SubscriberStatus.SUBSCRIBED, NOW)
    assert (sub.id, sub.email_hash) == (7, RECORDED_HASH)
    yield app
    app.close()


def test_mailed_links_from_before_the_upgrade_keep_working(recorded_app: App) -> None:
    client = TestClient(create_app(recorded_app), base_url="http://127.0.0.1:8080")
    prefs = client.get(f"/preferences/{RECORDED_PREFERENCES_V0}")
    assert prefs.status_code == 200 and "reader@example.com" in prefs.text
    done = client.post(f"/unsubscribe/{RECORDED_UNSUBSCRIBE}", data={"List-Unsubscribe": "One-Click"})
    assert done.status_code == 200
    sub = recorded_app.store.get_subscriber("reader@example.com")
    assert sub is not None and sub.status is SubscriberStatus.UNSUBSCRIBED


def test_mailed_links_from_before_the_upgrade_die_after_60_days(recorded_app: App) -> None:
    recorded_app.clock = lambda: LEGACY_UNTIL
    client = TestClient(create_app(recorded_app), base_url="http://127.0.0.1:8080")
    assert client.get(f"/preferences/{RECORDED_PREFERENCES_V0}").status_code == 400
    r = client.post(f"/unsubscribe/{RECORDED_UNSUBSCRIBE}", data={"List-Unsubscribe": "One-Click"})
    assert r.status_code == 400
    sub = recorded_app.store.get_subscriber("reader@example.com")
    assert sub is not None and sub.status is SubscriberStatus.SUBSCRIBED
