"""The web app against clients that do not play nice: HEAD and odd bodies on the one-click
unsubscribe, replayed and rotated tokens, hostile connections, spoofed proxy headers, missing
security headers and timing. Each test sends the worst case and checks what a reader would see."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from feedservice.config import load_settings
from feedservice.entry.bootstrap import App, make_app
from feedservice.entry.web import create_app
from feedservice.model import Subscriber, SubscriberStatus
from tests.conftest import write_config

NOW = datetime(2026, 11, 28, 5, 0, tzinfo=UTC)
BASE = "http://127.0.0.1:8080"
MULTIPART_BODY = (  # RFC 8058 §8.1's own example body, with CRLF line ends as sent on the wire
    b"--XXXXXXXXXXXX\r\n"
    b'Content-Disposition: form-data; name="List-Unsubscribe"\r\n'
    b"\r\n"
    b"One-Click\r\n"
    b"--XXXXXXXXXXXX--\r\n"
)
MULTIPART_TYPE = "multipart/form-data; boundary=XXXXXXXXXXXX"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    a = make_app(load_settings(write_config(tmp_path)))
    yield a
    a.close()


@pytest.fixture
def client(app: App) -> TestClient:
    return TestClient(create_app(app), base_url=BASE)


def _subscribed(app: App, address: str = "reader@example.com") -> Subscriber:
    sub, _ = app.store.add_subscriber(address, (), SubscriberStatus.SUBSCRIBED, NOW)
    return sub


def _status(app: App, address: str = "reader@example.com") -> SubscriberStatus:
    sub = app.store.get_subscriber(address)
    assert sub is not None
    return sub.status


def _path(url: str) -> str:
    return url.removeprefix(BASE)


# -- 1. the one-click unsubscribe (RFC 8058) -------------------------------------------------------
def test_head_on_every_token_page_changes_nothing(app: App, client: TestClient) -> None:
    sub = _subscribed(app)
    unsub, prefs = (_path(u) for u in app.links_for(sub))
    for path in (unsub, prefs, "/subscribe"):
        assert client.head(path).status_code == 200, path
    assert _status(app) is SubscriberStatus.SUBSCRIBED


def test_unsubscribe_post_needs_the_one_click_field(app: App, client: TestClient) -> None:
    unsub = _path(app.links_for(_subscribed(app))[0])
    refused = [
        client.post(unsub, data={"foo": "bar"}),
        client.post(unsub, data={"List-Unsubscribe": "Yes"}),
        client.post(unsub, content=b""),
        client.post(unsub, content=b"List-Unsubscribe=One-Click", headers={"Content-Type": "text/plain"}),
        client.post(unsub, content=b'{"List-Unsubscribe": "One-Click"}', headers={"Content-Type": "application/json"}),
        client.post(unsub, content=MULTIPART_BODY, headers={"Content-Type": "multipart/form-data; boundary=OTHER"}),
    ]
    assert [r.status_code for r in refused] == [400, 400, 400, 415, 415, 400]
    assert _status(app) is SubscriberStatus.SUBSCRIBED


def test_unsubscribe_by_rfc8058_multipart_example(app: App, client: TestClient) -> None:
    unsub = _path(app.links_for(_subscribed(app))[0])
    r = client.post(unsub, content=MULTIPART_BODY, headers={"Content-Type": MULTIPART_TYPE})
    assert r.status_code == 200 and "수신 거부 완료" in r.text
    assert _status(app) is SubscriberStatus.UNSUBSCRIBED


def test_unsubscribe_page_button_posts_the_one_click_field(app: App, client: TestClient) -> None:
    unsub = _path(app.links_for(_subscribed(app))[0])
    page = client.get(unsub)
    assert '<form method="post" action="' + unsub + '">' in page.text
    assert '<input type="hidden" name="List-Unsubscribe" value="One-Click">' in page.text
    r = client.post(unsub, data={"List-Unsubscribe": "One-Click"})
    assert r.status_code == 200 and _status(app) is SubscriberStatus.UNSUBSCRIBED
