"""Bounces and complaints (issue 16): returned mail read from a Maildir, matched to the delivery
it is about (VERP, Message-ID, recipient), and the policy applied — against real digests sent
through aiosmtpd, our own samples (tests/data/bounces/README.md) and flufl.bounce's corpus of
real bounces from many MTAs (downloaded at test time)."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, date, datetime, timedelta
from email import message_from_bytes
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from feedservice import bootstrap
from feedservice.adapters.bounces.reading import read_bounce
from feedservice.bootstrap import App, make_app
from feedservice.bounce_model import EditionFeedback, soft_streak
from feedservice.cli.demo import sample_rss
from feedservice.cli.main import main
from feedservice.config import load_settings
from feedservice.model import SubscriberStatus
from feedservice.services.bounces import BounceCheck, BouncePolicy
from feedservice.verp import envelope_sender
from feedservice.web.app import create_app
from tests.conftest import FeedServer, Served, SmtpSink, write_config
from tests.test_bounce_reading import SECRET, sample

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "var" / "test-corpus"
FLUFL_SDIST = "flufl.bounce==6.0.0"
DAY = date(2026, 11, 20)
SEND_TIME = datetime(2026, 11, 19, 22, 5, tzinfo=UTC)  # 07:05 KST on the edition's day
CHECK_TIME = SEND_TIME + timedelta(days=1)
ITEMS = [("빅테크 기사", "요약", "김정영", datetime(2026, 11, 19, 12, 0, tzinfo=UTC), 1)]
VERP_ON = 'return_path = "bounces@newsspace.kr"\n'


def deliver(maildir: Path, name: str, data: bytes) -> None:
    """As an MTA delivers into a Maildir: write in tmp/, then rename into new/."""
    (maildir / "tmp" / name).write_bytes(data)
    os.rename(maildir / "tmp" / name, maildir / "new" / name)


def _setup(
    tmp_path: Path, feed_server: FeedServer, port: int, bounces: str, db_url: str | None = None
) -> tuple[Path, Path]:
    feed_server.files["/rss.xml"] = Served(sample_rss("https://www.newsspace.kr", "bigtech", "빅테크", ITEMS))
    maildir = tmp_path / "bounces"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    cfg = write_config(
        tmp_path,
        db_url=db_url,
        sources=[(feed_server.url("/rss.xml"), "bigtech")],
        delivery_extra=f'[delivery.smtp]\nhost = "127.0.0.1"\nport = {port}\ntls = "none"\ntimeout = 2.0\n'
        f'[bounces]\nmaildir = "{maildir}"\n{bounces}',
    )
    return cfg, maildir


def _app(cfg: Path, clock: datetime) -> App:
    return make_app(load_settings(cfg), clock=lambda: clock)


def _send(cfg: Path, sink: SmtpSink, *emails: str) -> dict[str, tuple[int, str, str]]:
    """Send the edition of DAY to ``emails``: (subscriber id, envelope sender, Message-ID) of each."""
    app = _app(cfg, SEND_TIME)
    try:
        asyncio.run(app.collect())
        ids = {e: app.store.add_subscriber(e, (), SubscriberStatus.SUBSCRIBED, SEND_TIME)[0].id for e in emails}
        assert asyncio.run(app.send_digest(DAY)).sent == len(emails)
    finally:
        app.close()
    sent = {}
    for mail_from, rcpts, data in sink.messages:
        sent[rcpts[0]] = (ids[rcpts[0]], mail_from, str(message_from_bytes(data)["Message-ID"]))
    return sent


def _status(app: App, email_or_id: str | int) -> SubscriberStatus:
    sub = (
        app.store.get_subscriber_by_id(email_or_id)
        if isinstance(email_or_id, int)
        else app.store.get_subscriber(email_or_id)
    )
    assert sub is not None
    return sub.status


@pytest.fixture
def verp_on(
    tmp_path: Path, feed_server: FeedServer, smtp_server: tuple[SmtpSink, int], db_url: str
) -> tuple[SmtpSink, Path, Path]:
    """A relay, and a config with VERP and a bounce Maildir: (the relay's sink, config, Maildir)."""
    sink, port = smtp_server
    return sink, *_setup(tmp_path, feed_server, port, VERP_ON, db_url)


def test_check_learns_from_every_kind_once(
    verp_on: tuple[SmtpSink, Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sink, cfg, maildir = verp_on
    readers = [
        "hard@example.com",
        "gmail@gmail.com",
        "naver@naver.com",
        "full@example.org",
        "slow@daum.net",
        "complains@example.net",
        "away@example.net",
        "victim@example.com",
    ]
    sent = _send(cfg, sink, *readers)
    mail = {
        "postfix": sample(
            "postfix-5.1.1.eml",
            verp=sent["hard@example.com"][1],
            rcpt="hard@example.com",
            message_id=sent["hard@example.com"][2],
        ),
        "gmail": sample(
            "gmail-ko-5.1.1.eml",
            verp=sent["gmail@gmail.com"][1],
            rcpt="gmail@gmail.com",
            message_id=sent["gmail@gmail.com"][2],
        ),
        "naver": sample("naver-ko-plain.eml", verp=sent["naver@naver.com"][1]),
        "exim": sample("exim-5.2.2.eml", verp=sent["full@example.org"][1], rcpt="full@example.org"),
        "daum": sample("daum-ko-4.4.7.eml", verp=sent["slow@daum.net"][1], rcpt="slow@daum.net"),
        # The feedback loop redacts the recipient: only the (keyed) Message-ID says who complained.
        "arf": sample("arf-complaint.eml", message_id=sent["complains@example.net"][2]),
        "vacation": sample("autoreply-ko.eml", verp=sent["away@example.net"][1], rcpt="away@example.net"),
        "outlook": sample("outlook-autoreply.eml", verp=sent["away@example.net"][1], rcpt="away@example.net"),
        "spam": sample("spam.eml"),
        # Anyone can mail a "bounce" naming a reader; with VERP on, an address alone suppresses nobody.
        "forged": sample("forged-dsn.eml", rcpt="victim@example.com"),
    }
    for name, data in mail.items():
        deliver(maildir, f"1763590000.{name}.mx1", data)
    monkeypatch.setattr(bootstrap, "utcnow", lambda: CHECK_TIME)

    assert main(["--config", str(cfg), "bounces", "check"]) == 0
    out = capsys.readouterr().out
    assert "3 hard, 2 soft, 1 complaints, 2 auto-replies, 2 unmatched; 4 suppressed" in out

    app = _app(cfg, CHECK_TIME)
    try:
        gone = {
            e: sent[e][0] for e in ("hard@example.com", "gmail@gmail.com", "naver@naver.com", "complains@example.net")
        }
        for sid in gone.values():
            assert _status(app, sid) is SubscriberStatus.SUPPRESSED
        for e in ("full@example.org", "slow@daum.net", "away@example.net", "victim@example.com"):
            assert _status(app, e) is SubscriberStatus.SUBSCRIBED
        # Every suppression has its reason and the very message that caused it.
        [(_, reason, bounce_id)] = app.store.suppression_reasons(gone["hard@example.com"])
        assert reason.startswith("hard bounce 5.1.1: smtp; 550 5.1.1") and "User unknown" in reason
        assert bounce_id is not None and app.store.bounce_raw(bounce_id) == mail["postfix"]
        [(_, reason, bounce_id)] = app.store.suppression_reasons(gone["complains@example.net"])
        assert reason == "complaint: feedback: abuse"
        assert bounce_id is not None and app.store.bounce_raw(bounce_id) == mail["arf"]
        [(_, reason, _)] = app.store.suppression_reasons(gone["naver@naver.com"])
        assert "5.1.1" in reason and "계정이 없습니다" in reason
        unmatched = app.store.list_bounces(unmatched=True)
        assert sorted(r.kind.value for r in unmatched) == ["hard", "unknown"]
        assert all(app.store.bounce_raw(r.id) in (mail["spam"], mail["forged"]) for r in unmatched)
    finally:
        app.close()
    # Nothing is deleted: all moved to cur/, the unmatched flagged for a person.
    assert list((maildir / "new").iterdir()) == []
    flags = {p.name.split(".")[1]: p.name.rsplit(":2,", 1)[1] for p in (maildir / "cur").iterdir()}
    assert flags == {name: ("FS" if name in ("spam", "forged") else "S") for name in mail}

    # A second run changes nothing; a message read before but left in new/ (a crash before the
    # move) is only moved.
    deliver(maildir, "1763590001.again.mx1", mail["postfix"])
    assert main(["--config", str(cfg), "bounces", "check"]) == 0
    out = capsys.readouterr().out
    assert "0 hard, 0 soft, 0 complaints, 0 auto-replies, 0 unmatched; 0 suppressed; 1 read before" in out
    assert main(["--config", str(cfg), "bounces", "check"]) == 0
    assert "0 hard, 0 soft, 0 complaints, 0 auto-replies, 0 unmatched; 0 suppressed\n" in capsys.readouterr().out
    assert len(list((maildir / "cur").iterdir())) == len(mail) + 1

    assert main(["--config", str(cfg), "bounces", "list", "--unmatched"]) == 0
    listed = capsys.readouterr().out
    assert "(광고) 11월 특가" in listed and "2 messages (unmatched only)" in listed
    assert main(["--config", str(cfg), "bounces", "list", "--since", "2026-11-21"]) == 0
    assert "10 messages" in capsys.readouterr().out


def test_a_refusal_while_sending_is_recorded_as_a_bounce_read_later_is(
    verp_on: tuple[SmtpSink, Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The relay refuses one reader at RCPT TO with 550 5.1.1: the suppression records its reason and
    the reply that caused it, and `bounces list`, `digest status` and /metrics count it as a hard
    bounce of the edition, like the returned mail of another reader."""
    sink, cfg, maildir = verp_on
    sink.refuse["gone@example.com"] = "550 5.1.1 <gone@example.com>: Recipient address rejected: User unknown"
    app = _app(cfg, SEND_TIME)
    try:
        asyncio.run(app.collect())
        ids = {
            e: app.store.add_subscriber(e, (), SubscriberStatus.SUBSCRIBED, SEND_TIME)[0].id
            for e in ("ok@example.com", "gone@example.com", "later@example.com")
        }
        report = asyncio.run(app.send_digest(DAY))
        assert (report.sent, report.failed, report.suppressed) == (2, 1, 1)
        assert _status(app, ids["gone@example.com"]) is SubscriberStatus.SUPPRESSED
        [(_, reason, bounce_id)] = app.store.suppression_reasons(ids["gone@example.com"])
        assert reason == "hard bounce 5.1.1: 550 5.1.1 <gone@example.com>: Recipient address rejected: User unknown"
        assert bounce_id is not None
        raw = app.store.bounce_raw(bounce_id) or b""
        assert b"Reply: 550 5.1.1" in raw and f"Edition: {DAY}".encode() in raw and b"Message-ID: <" in raw
        # a second run over the edition records nothing twice
        assert asyncio.run(app.send_digest(DAY)).sent == 0
        assert len(app.store.suppression_reasons(ids["gone@example.com"])) == 1
    finally:
        app.close()
    later = next(m[0] for m in sink.messages if m[1] == ["later@example.com"])
    deliver(maildir, "hard", sample("postfix-5.1.1.eml", verp=later))
    monkeypatch.setattr(bootstrap, "utcnow", lambda: CHECK_TIME)
    assert main(["--config", str(cfg), "bounces", "check"]) == 0
    assert "1 hard, 0 soft, 0 complaints, 0 auto-replies, 0 unmatched; 1 suppressed" in capsys.readouterr().out

    assert main(["--config", str(cfg), "bounces", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "2 messages"
    relay = next(line for line in lines if f"subscriber {ids['gone@example.com']}" in line)
    assert relay.split()[3:8] == ["hard", str(DAY), "subscriber", str(ids["gone@example.com"]), "5.1.1"]
    assert relay.split()[8] == "suppressed"
    assert main(["--config", str(cfg), "digest", "status", "--date", DAY.isoformat()]) == 0
    # a bounce rate is a share of the messages sent: 2 delivered and 1 refused, 2 of them bounced
    assert "came back: 2 delivered (+1 refused while sending), 2 hard bounces (66.67%)" in capsys.readouterr().out
    app = _app(cfg, CHECK_TIME)
    try:
        [unmatched] = [r for r in app.store.list_bounces() if r.source.startswith("relay:")]
        assert unmatched.subscriber_id == ids["gone@example.com"]
        text = TestClient(create_app(app), base_url="http://localhost").get("/metrics").text
        families = {f.name: f for f in text_string_to_metric_families(text)}
        counts = {s.labels["kind"]: s.value for s in families["feedservice_edition_feedback"].samples}
        assert (counts["delivered"], counts["refused"], counts["hard"]) == (2, 1, 2)
        rates = {s.labels["kind"]: s.value for s in families["feedservice_edition_feedback_rate"].samples}
        assert rates["hard"] == pytest.approx(2 / 3) and rates["complaints"] == 0
    finally:
        app.close()


def test_a_complaint_is_matched_by_its_envelope_or_without_verp_by_its_recipient(
    tmp_path: Path, feed_server: FeedServer, smtp_server: tuple[SmtpSink, int]
) -> None:
    """An ARF report whose original Message-ID is gone (some feedback loops strip it) is still
    matched: by the VERP envelope it names (Original-Mail-From), or, with VERP off, by the reader
    it names (Original-Rcpt-To)."""
    sink, port = smtp_server
    arf = sample("arf-complaint.eml").replace(b"Message-ID: <none@newsspace.kr>\n", b"")
    for verp in (True, False):
        folder = tmp_path / ("verp" if verp else "plain")
        folder.mkdir()
        sink.messages.clear()
        cfg, maildir = _setup(folder, feed_server, port, VERP_ON if verp else "")
        sent = _send(cfg, sink, "complains@example.net", "stays@example.net")
        sid, envelope, _ = sent["complains@example.net"]
        if verp:
            report = arf.replace(
                b"Original-Mail-From: <newsletter@newsspace.kr>", f"Original-Mail-From: <{envelope}>".encode()
            )
        else:
            report = arf.replace(
                b"Original-Rcpt-To: <redacted@mail.example.net>", b"Original-Rcpt-To: <complains@example.net>"
            )
        assert report != arf
        deliver(maildir, "arf", report)
        app = _app(cfg, CHECK_TIME)
        try:
            report_of_check = app.check_bounces()
            assert (report_of_check.complaints, report_of_check.suppressed) == (1, 1), verp
            assert _status(app, sid) is SubscriberStatus.SUPPRESSED
            assert _status(app, sent["stays@example.net"][0]) is SubscriberStatus.SUBSCRIBED
            [record] = app.store.list_bounces()
            edition = DAY if verp else None  # the VERP token names the edition; an address does not
            assert (record.kind.value, record.subscriber_id, record.edition) == ("complaint", sid, edition)
        finally:
            app.close()


def test_soft_bounces_suppress_after_the_limit_unless_a_delivery_came_between(
    verp_on: tuple[SmtpSink, Path, Path],
) -> None:
    sink, cfg, maildir = verp_on
    sent = _send(cfg, sink, "a@example.com", "b@example.com")
    a, b = sent["a@example.com"][0], sent["b@example.com"][0]
    before, after = DAY - timedelta(days=1), DAY + timedelta(days=1)

    def soft(sid: int, day: date) -> None:
        verp = envelope_sender("bounces@newsspace.kr", SECRET, day, sid)
        deliver(maildir, f"{sid}.{day}", sample("exim-5.2.2.eml", verp=verp, rcpt=f"{sid}@x"))

    # a: the edition of DAY reached them (no bounce for it): the count starts again after it.
    soft(a, before - timedelta(days=1))
    soft(a, before)
    soft(a, after)
    # b: DAY bounced too: three editions in a row, nothing delivered between.
    soft(b, before)
    soft(b, DAY)
    app = _app(cfg, CHECK_TIME)
    try:
        first = app.check_bounces()
        assert (first.soft, first.suppressed) == (5, 0)  # b has two so far
        soft(b, after)
        second = app.check_bounces()
        assert (second.soft, second.suppressed) == (1, 1)
        assert _status(app, a) is SubscriberStatus.SUBSCRIBED
        assert _status(app, b) is SubscriberStatus.SUPPRESSED
        [(_, reason, _)] = app.store.suppression_reasons(b)
        assert reason.startswith("3 soft bounces within 14 days, no delivery between; last: 5.2.2: X-Exim; mailbox")
        actions = [r.action for r in app.store.list_bounces() if r.subscriber_id == a]
        assert actions == ["counted: soft bounce 1 of 3", "counted: soft bounce 2 of 3", "counted: soft bounce 1 of 3"]
    finally:
        app.close()


def test_soft_bounces_older_than_soft_days_do_not_count(
    tmp_path: Path, feed_server: FeedServer, smtp_server: tuple[SmtpSink, int]
) -> None:
    sink, port = smtp_server
    cfg, maildir = _setup(tmp_path, feed_server, port, VERP_ON + "soft_limit = 2\nsoft_days = 3\n")
    sid = _send(cfg, sink, "a@example.com")["a@example.com"][0]
    verp = envelope_sender("bounces@newsspace.kr", SECRET, DAY - timedelta(days=9), sid)
    deliver(maildir, "old", sample("daum-ko-4.4.7.eml", verp=verp))
    app = _app(cfg, CHECK_TIME - timedelta(days=8))
    try:
        app.check_bounces()
    finally:
        app.close()
    verp = envelope_sender("bounces@newsspace.kr", SECRET, DAY + timedelta(days=2), sid)
    deliver(maildir, "new", sample("daum-ko-4.4.7.eml", verp=verp))
    app = _app(cfg, CHECK_TIME)
    try:
        report = app.check_bounces()
        assert (report.soft, report.suppressed) == (1, 0)
        assert _status(app, sid) is SubscriberStatus.SUBSCRIBED
    finally:
        app.close()


def test_a_mass_suppression_is_held_until_forced(
    tmp_path: Path,
    feed_server: FeedServer,
    smtp_server: tuple[SmtpSink, int],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, port = smtp_server
    cfg, maildir = _setup(tmp_path, feed_server, port, "")  # no VERP: matched by recipient
    app = _app(cfg, SEND_TIME)
    try:
        for i in range(100):
            app.store.add_subscriber(f"r{i:03d}@example.com", (), SubscriberStatus.SUBSCRIBED, SEND_TIME)
    finally:
        app.close()
    for i in range(20):  # 20 of 100 in one run: more than 5% and at least 20
        deliver(maildir, f"m{i}", sample("forged-dsn.eml", rcpt=f"r{i:03d}@example.com"))
    monkeypatch.setattr(bootstrap, "utcnow", lambda: CHECK_TIME)
    assert main(["--config", str(cfg), "bounces", "check"]) == 1
    assert "held: this run would suppress 20 of 100 subscribers" in capsys.readouterr().out
    assert len(list((maildir / "new").iterdir())) == 20
    app = _app(cfg, CHECK_TIME)
    try:
        assert app.store.list_bounces() == [] and _status(app, "r000@example.com") is SubscriberStatus.SUBSCRIBED
    finally:
        app.close()
    assert main(["--config", str(cfg), "bounces", "check", "--force"]) == 0
    assert "20 hard, 0 soft, 0 complaints, 0 auto-replies, 0 unmatched; 20 suppressed" in capsys.readouterr().out
    app = _app(cfg, CHECK_TIME)
    try:
        assert _status(app, "r019@example.com") is SubscriberStatus.SUPPRESSED
    finally:
        app.close()


D = [date(2026, 11, d) for d in range(1, 10)]


@pytest.mark.parametrize(
    ("soft", "clean", "streak"),
    [
        ([D[0], D[1], D[2]], [], 3),
        ([D[0], D[0], D[1]], [], 2),  # one edition bounced twice (delayed, then failed) counts once
        ([D[0], D[1], D[3]], [D[2]], 1),  # a delivery between: the count starts again
        ([D[0], D[1], D[2]], [D[3]], 3),  # sent after the newest bounce: its bounce may be on the way
        ([None, None, D[1]], [D[0]], 3),  # unknown editions count once each
    ],
)
def test_soft_streak(soft: list[date | None], clean: list[date], streak: int) -> None:
    assert soft_streak(soft, clean) == streak


def test_run_reads_the_bounce_maildir_every_check_minutes(
    tmp_path: Path, feed_server: FeedServer, smtp_server: tuple[SmtpSink, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    from feedservice import aio, scheduler

    _, port = smtp_server
    cfg, maildir = _setup(tmp_path, feed_server, port, "check_minutes = 7\n")
    app = _app(cfg, CHECK_TIME)
    try:
        sid = app.store.add_subscriber("gone@example.com", (), SubscriberStatus.SUBSCRIBED, SEND_TIME)[0].id
        sched = scheduler.build_scheduler(app)
        scheduler.install_jobs(sched, app)
        job = sched.get_job("bounces")
        assert job is not None and job.trigger.interval == timedelta(minutes=7)
        deliver(maildir, "m1", sample("postfix-5.1.1.eml", rcpt="gone@example.com"))
        monkeypatch.setattr(scheduler, "_APP", app)
        aio.run(scheduler.bounces_job())
        assert _status(app, sid) is SubscriberStatus.SUPPRESSED
        run = app.store.last_job_runs()["bounces"]
        assert run.status == "ok" and "1 hard" in (run.detail or "")
    finally:
        app.close()


def test_digest_status_and_metrics_show_what_came_back_from_an_edition(
    verp_on: tuple[SmtpSink, Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sink, cfg, maildir = verp_on
    sent = _send(cfg, sink, "a@example.com", "b@example.com", "c@example.com", "d@example.com")
    deliver(maildir, "hard", sample("postfix-5.1.1.eml", verp=sent["a@example.com"][1]))
    deliver(maildir, "soft", sample("exim-5.2.2.eml", verp=sent["b@example.com"][1]))
    deliver(maildir, "arf", sample("arf-complaint.eml", message_id=sent["c@example.com"][2]))
    app = _app(cfg, CHECK_TIME)
    try:
        app.check_bounces()
        app.store.set_subscriber_status("d@example.com", SubscriberStatus.UNSUBSCRIBED)
        text = TestClient(create_app(app), base_url="http://localhost").get("/metrics").text
        families = {f.name: f for f in text_string_to_metric_families(text)}
        counts = {s.labels["kind"]: s.value for s in families["feedservice_edition_feedback"].samples}
        assert counts == {"delivered": 4, "refused": 0, "hard": 1, "soft": 1, "complaints": 1, "unsubscribes": 1}
        rates = {s.labels["kind"]: s.value for s in families["feedservice_edition_feedback_rate"].samples}
        assert rates == {"hard": 0.25, "soft": 0.25, "complaints": 0.25, "unsubscribes": 0.25}
        assert {s.labels["edition"] for s in families["feedservice_edition_feedback"].samples} == {DAY.isoformat()}
    finally:
        app.close()
    monkeypatch.setattr(bootstrap, "utcnow", lambda: CHECK_TIME)
    assert main(["--config", str(cfg), "digest", "status", "--date", DAY.isoformat()]) == 0
    out = capsys.readouterr().out
    assert (
        "came back: 4 delivered, 1 hard bounces (25.00%), 1 soft bounces (25.00%), 1 complaints (25.00%), "
        "1 unsubscribes (25.00%)"
    ) in out
    assert "warning: complaints reached 25.00% of this edition" in out


@pytest.mark.parametrize(
    ("delivered", "complaints", "warned"), [(1000, 1, True), (1001, 1, False), (10, 0, False), (0, 0, False)]
)
def test_a_warning_when_complaints_reach_a_tenth_of_a_percent(delivered: int, complaints: int, warned: bool) -> None:
    feedback = EditionFeedback(delivered=delivered, hard=0, soft=0, complaints=complaints, unsubscribes=0)
    assert (feedback.warning is not None) is warned


def test_a_flood_of_bounce_mail_is_read_over_several_runs(
    tmp_path: Path, feed_server: FeedServer, smtp_server: tuple[SmtpSink, int]
) -> None:
    _, port = smtp_server
    cfg, maildir = _setup(tmp_path, feed_server, port, VERP_ON)
    for i in range(5):
        deliver(maildir, f"spam{i}", sample("spam.eml").replace(b"promo.1@", f"promo.{i}@".encode()))
    app = _app(cfg, CHECK_TIME)
    try:

        def check() -> str:
            return (
                BounceCheck(app.store, app.bounce_intakes(), read_bounce, [SECRET], app.clock, BouncePolicy(batch=2))
                .run()
                .summary()
            )

        assert [check() for _ in range(4)] == [
            "0 hard, 0 soft, 0 complaints, 0 auto-replies, 2 unmatched; 0 suppressed; more mail is waiting: "
            "the next run goes on"
        ] * 2 + [
            "0 hard, 0 soft, 0 complaints, 0 auto-replies, 1 unmatched; 0 suppressed",
            "0 hard, 0 soft, 0 complaints, 0 auto-replies, 0 unmatched; 0 suppressed",
        ]
        assert len(app.store.list_bounces()) == 5
    finally:
        app.close()
