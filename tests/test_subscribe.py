"""Signing up, confirming, choosing sections and leaving: the pages, their guards, and the whole
flow in a real browser (Debian's chromium) against the app on 127.0.0.1 and a real SMTP server."""

from __future__ import annotations

import email
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import policy
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from feedservice.bootstrap import App, make_app
from feedservice.config import load_settings
from feedservice.model import SubscriberStatus
from feedservice.web.app import create_app
from tests.conftest import CHROMIUM_ARGS, SmtpSink, body_text, chromium_or_skip, subscriber, write_config
from tests.served import served

BASE = "http://127.0.0.1:8080"


@pytest.fixture
def app(tmp_path: Path, smtp_server: tuple[SmtpSink, int]) -> Iterator[App]:
    _, port = smtp_server
    cfg = write_config(tmp_path, delivery_extra=f'[delivery.smtp]\nhost = "127.0.0.1"\nport = {port}\ntls = "none"')
    cfg.write_text(
        cfg.read_text(encoding="utf-8").replace("[web]\n", "[web]\nsubscribe_per_hour = 3\n"), encoding="utf-8"
    )
    a = make_app(load_settings(cfg))
    yield a
    a.close()


@pytest.fixture
def client(app: App) -> TestClient:
    return TestClient(create_app(app), base_url=BASE)


def _found(pattern: str, text: str) -> str:
    """The first group of ``pattern``'s first match in ``text``; the test fails when there is none."""
    match = re.search(pattern, text)
    assert match is not None, f"{pattern!r} not found"
    return match.group(1)


def _csrf(client: TestClient, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200
    return _found(r'name="csrf" value="([^"]+)"', page.text)


def _signup(client: TestClient, address: str, *sections: str, **headers: str) -> httpx.Response:
    token = _csrf(client, "/subscribe")
    data = {"csrf": token, "email": address, "sections": list(sections)}
    return client.post("/subscribe", data=data, headers=headers)


def _mails(sink: SmtpSink, to: str, wait: float = 5) -> list[email.message.EmailMessage]:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        found = [email.message_from_bytes(raw, policy=policy.default) for _, rcpt, raw in sink.messages if rcpt == [to]]
        if found:
            return found
        time.sleep(0.05)
    return []


def _confirm_link(mail: email.message.EmailMessage) -> str:
    return _found(r"(http://127\.0\.0\.1:8080/confirm/\S+)", body_text(mail, "plain"))


def test_double_opt_in(app: App, client: TestClient, smtp_server: tuple[SmtpSink, int]) -> None:
    sink, _ = smtp_server
    r = _signup(client, "New.Reader@Example.COM", "bigtech")
    assert r.status_code == 200 and "메일을 확인해 주세요" in r.text
    sub = app.store.get_subscriber("New.Reader@example.com")
    assert sub is not None and sub.status is SubscriberStatus.UNCONFIRMED and sub.sections == ("bigtech",)
    [mail] = _mails(sink, "New.Reader@example.com")
    assert "구독을 확인해 주세요" in str(mail["Subject"])
    link = _confirm_link(mail).removeprefix(BASE)
    page = client.get(link)  # a GET (a link scanner) confirms nothing
    assert (
        page.status_code == 200
        and subscriber(app.store, "New.Reader@example.com").status is SubscriberStatus.UNCONFIRMED
    )
    token = _found(r'name="csrf" value="([^"]+)"', page.text)
    done = client.post(link, data={"csrf": token})
    assert done.status_code == 200 and "구독이 시작되었습니다" in done.text
    assert subscriber(app.store, "New.Reader@example.com").status is SubscriberStatus.SUBSCRIBED
    again = client.post(link, data={"csrf": token})  # single use
    assert again.status_code == 400


def test_no_enumeration_and_one_mail_an_hour(app: App, client: TestClient, smtp_server: tuple[SmtpSink, int]) -> None:
    sink, _ = smtp_server
    app.store.add_subscriber("known@example.com", ("bigtech",), SubscriberStatus.SUBSCRIBED, datetime.now(UTC))
    known = _signup(client, "known@example.com", "economy")
    new = _signup(client, "fresh@example.com")
    assert known.status_code == new.status_code == 200

    def strip(page: str) -> str:
        return re.sub(r'value="[^"]*"', "", page)

    assert strip(known.text) == strip(new.text)  # the same answer for a known and a new address
    assert subscriber(app.store, "known@example.com").sections == ("bigtech",)
    _signup(client, "fresh@example.com")  # asked again within the hour: no second mail
    time.sleep(0.3)
    assert len(_mails(sink, "fresh@example.com")) == 1
    assert _mails(sink, "known@example.com", wait=0.5) == []


def test_guards(app: App, client: TestClient) -> None:
    token = _csrf(client, "/subscribe")
    # No CSRF token, a wrong one, another site's Origin: refused, nothing stored.
    assert client.post("/subscribe", data={"email": "a@example.com"}).status_code == 403
    assert client.post("/subscribe", data={"email": "a@example.com", "csrf": "x" + token}).status_code == 403
    cross = client.post(
        "/subscribe", data={"email": "a@example.com", "csrf": token}, headers={"Origin": "https://evil.example"}
    )
    assert cross.status_code == 403
    # Header injection and bad addresses: refused with a clear page.
    for bad in ("a@example.com\r\nBcc: victim@example.com", "not-an-address", "a@b", "x" * 300 + "@example.com"):
        r = client.post("/subscribe", data={"email": bad, "csrf": token})
        assert r.status_code == 400 and "올바른 이메일 주소" in r.text
    big = client.post(
        "/subscribe", content=b"email=" + b"a" * 10_000, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert big.status_code == 413
    assert app.store.get_subscriber("a@example.com") is None
    # The rate limit: three sign-ups an hour from one address in this test config.
    codes = [_signup(client, f"r{i}@example.com").status_code for i in range(4)]
    assert codes == [200, 200, 200, 429]


def test_expired_and_tampered_links(app: App, client: TestClient, smtp_server: tuple[SmtpSink, int]) -> None:
    sink, _ = smtp_server
    _signup(client, "late@example.com")
    link = _confirm_link(_mails(sink, "late@example.com")[0]).removeprefix(BASE)
    tampered = link[:-3] + ("aaa" if not link.endswith("aaa") else "bbb")
    assert client.get(tampered).status_code == 400
    app.clock = lambda: datetime.now(UTC) + timedelta(hours=49)
    assert client.get(link).status_code == 400
    assert subscriber(app.store, "late@example.com").status is SubscriberStatus.UNCONFIRMED


@pytest.fixture
def live_app(app: App) -> Iterator[str]:
    with served(app) as port:
        yield f"http://127.0.0.1:{port}"


def test_whole_flow_in_chromium(app: App, live_app: str, smtp_server: tuple[SmtpSink, int], tmp_path: Path) -> None:
    chromium = chromium_or_skip()
    from playwright import sync_api  # a test extra: make test installs it

    sink, _ = smtp_server
    live = live_app
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{live}/subscribe")
            page.fill("#email", "browser@example.com")
            page.check("input[value='bigtech']")
            page.check("input[value='space-sociology']")
            with page.expect_navigation():
                page.click("button[type=submit]")
            assert "메일을 확인해 주세요" in page.content()
            [mail] = _mails(sink, "browser@example.com")
            page.goto(_confirm_link(mail).replace(BASE, live))
            with page.expect_navigation():
                page.click("button[type=submit]")
            assert "구독이 시작되었습니다" in page.content()
            with page.expect_navigation():
                page.click("text=받을 분야 바꾸기")
            page.uncheck("input[value='bigtech']")
            with page.expect_navigation():
                page.click("button[type=submit]")
            assert "저장했습니다" in page.content()
            assert subscriber(app.store, "browser@example.com").sections == ("space-sociology",)
            with page.expect_navigation():
                page.click("text=수신 거부")
            with page.expect_navigation():
                page.click("button[type=submit]")
            assert "수신 거부 완료" in page.content()
            page.screenshot(path=str(tmp_path / "unsubscribed.png"))
        finally:
            browser.close()
    gone = app.store.get_subscriber("browser@example.com")
    assert gone is not None and gone.status is SubscriberStatus.UNSUBSCRIBED and gone.email == ""


def test_cli_import_export_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from feedservice.cli.main import main

    cfg = write_config(tmp_path)
    c = ["--config", str(cfg)]
    src = tmp_path / "in.csv"
    src.write_text(
        "email,sections,status,created\n"
        "kim@example.com,bigtech,subscribed,2025-01-02T03:04:05+00:00\n"
        "lee@example.com,,paused,\n"
        "bad-address,,subscribed,\n"
        "park@example.com,nosuch,subscribed,\n"
        "choi@example.com,space-sociology,unsubscribed,\n",
        encoding="utf-8",
    )
    assert main([*c, "subscribers", "import", str(src)]) == 1  # bad rows: the job ran, something failed
    out = capsys.readouterr().out
    assert "3 added" in out and "line 4:" in out and "line 5:" in out
    assert main([*c, "subscribers", "import", str(src)]) == 1
    assert "0 added, 0 updated, 3 unchanged" in capsys.readouterr().out  # idempotent
    first = tmp_path / "out1.csv"
    assert main([*c, "subscribers", "export", "--out", str(first)]) == 0
    exported = first.read_text(encoding="utf-8")
    assert "kim@example.com,bigtech,subscribed,2025-01-02T03:04:05+00:00," in exported
    assert "choi@example.com" not in exported and ",unsubscribed," in exported  # forgotten: hash only
    other = tmp_path / "other"
    other.mkdir()
    cfg2 = write_config(other)
    assert main(["--config", str(cfg2), "subscribers", "import", str(first)]) == 0
    second = tmp_path / "out2.csv"
    assert main(["--config", str(cfg2), "subscribers", "export", "--out", str(second)]) == 0
    assert second.read_text(encoding="utf-8") == exported  # lossless


def test_imported_suppressions_carry_their_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A suppressed row of an import (an address, or a forgotten one's hash from an export) records
    why, as a bounce's suppression does, and `subscribers list` shows it. Importing the file again
    records nothing more; a reader suppressed before keeps its own reason; and an import, being
    the operator's word, is not counted by the bounce breaker."""
    from feedservice.cli.main import main

    cfg = write_config(tmp_path)
    c = ["--config", str(cfg)]
    app = make_app(load_settings(cfg))
    try:
        app.store.add_subscriber(
            "bounced@example.com", (), SubscriberStatus.SUPPRESSED, datetime.now(UTC), reason="hard bounce 5.1.1"
        )
        forgotten = app.store.address_hash("gone@example.com")
        src = tmp_path / "old-list.csv"
        src.write_text(
            "email,sections,status,created,email_hash\n"
            "kept@example.com,bigtech,subscribed,,\n"
            "blocked@example.com,,suppressed,2025-01-02T03:04:05+00:00,\n"
            f",,suppressed,2025-01-02T03:04:05+00:00,{forgotten}\n"
            "bounced@example.com,,suppressed,,\n",
            encoding="utf-8",
        )
        today = datetime.now(UTC).astimezone(app.settings.site.tz).date()
        for _ in range(2):  # the second import changes nothing
            assert main([*c, "subscribers", "import", str(src)]) == 0
            capsys.readouterr()
        assert main([*c, "subscribers", "list"]) == 0
        listed = capsys.readouterr().out
        # A suppressed address is forgotten (only its hash is kept): its row shows why, not who.
        why = f"imported from {src} on {today}"
        suppressed = [line.rstrip(" │") for line in listed.splitlines() if "│ suppressed │" in line]
        assert sorted(line.endswith(why) for line in suppressed) == [False, True, True], listed
        assert next(line for line in suppressed if not line.endswith(why)).endswith("hard bounce 5.1.1")
        assert "imported" not in next(line for line in listed.splitlines() if "kept@example.com" in line)
        hashed = app.store.get_subscriber("gone@example.com")
        assert hashed is not None and hashed.status is SubscriberStatus.SUPPRESSED
        for sub in (hashed, subscriber(app.store, "blocked@example.com")):
            assert [reason for _, reason, _ in app.store.suppression_reasons(sub.id)] == [why]
        assert app.bounce_breaker().suppressed == 0
    finally:
        app.close()


def test_an_export_keeps_each_suppressions_reason_where_it_is_imported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bounce's reason survives export and import into another database, for an address and for
    a forgotten one's hash, and the round trip stays lossless; a reason column on a row that does
    not suppress records nothing, and control characters in a reason are dropped."""
    from feedservice.cli.main import main

    cfg = write_config(tmp_path)
    app = make_app(load_settings(cfg))
    try:
        now = datetime.now(UTC)
        app.store.add_subscriber(
            "bounced@example.com", (), SubscriberStatus.SUPPRESSED, now, reason="550 5.1.1 no such user"
        )
        app.store.add_subscriber("reader@example.com", (), SubscriberStatus.SUBSCRIBED, now)
    finally:
        app.close()
    first = tmp_path / "out1.csv"
    assert main(["--config", str(cfg), "subscribers", "export", "--out", str(first)]) == 0
    exported = first.read_text(encoding="utf-8")
    assert exported.splitlines()[0].endswith(",reason")
    assert ",suppressed," in exported and exported.rstrip().count("550 5.1.1 no such user") == 1
    other = tmp_path / "other"
    other.mkdir()
    cfg2 = write_config(other)
    tampered = other / "in.csv"
    tampered.write_text(
        exported + "extra@example.com,,subscribed,,,not suppressed\nnul@example.com,,suppressed,,,a\x07b\u202ec\n",
        encoding="utf-8",
    )
    assert main(["--config", str(cfg2), "subscribers", "import", str(tampered)]) == 0
    capsys.readouterr()
    second = other / "out2.csv"
    assert main(["--config", str(cfg2), "subscribers", "export", "--out", str(second)]) == 0
    again = second.read_text(encoding="utf-8").splitlines()
    assert [line for line in again if "5.1.1" in line] == [line for line in exported.splitlines() if "5.1.1" in line]
    extra_row = next(line for line in again if line.startswith("extra@"))
    assert ",subscribed," in extra_row and extra_row.endswith(",,")  # no hash, and no reason: not suppressed
    app2 = make_app(load_settings(cfg2))
    try:
        why = app2.store.last_suppression_reasons()
        extra = app2.store.get_subscriber("extra@example.com")
        assert extra is not None and extra.id not in why
        nul = app2.store.get_subscriber("nul@example.com")
        assert nul is not None and why[nul.id] == "abc"
    finally:
        app2.close()
