"""The running server (Granian, as `feedservice serve` runs it) attacked as a stranger would: over
raw sockets, with what the framing, the Host header, the peer address, the process supervisor
and shutdown let a client try. Each test failed before its fix (see CHANGELOG.md)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from feedservice.bootstrap import App, make_app
from feedservice.config import load_settings
from feedservice.web.app import create_app
from feedservice.web.clients import ClientAddress
from feedservice.web.server import embedded
from tests.conftest import write_config
from tests.served import app_with_article, running

NOW = datetime(2026, 11, 28, 5, 0, tzinfo=UTC)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    a = app_with_article(write_config(tmp_path), "http://127.0.0.1:9/feed.xml", NOW)
    yield a
    a.close()


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
                    codes.append(http.post("/subscribe", data={"csrf": csrf, "email": f"r{i}@example.com"},
                                           headers=xff).status_code)  # fmt: skip
    finally:
        app.close()
    assert codes == [200] * 4
