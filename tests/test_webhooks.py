"""Provider webhooks for bounces and complaints (issue 16): Amazon SES through SNS, Mailgun, SendGrid
and Postmark.

Real-shaped calls signed here: SNS messages with a throw-away RSA key whose certificate a local
HTTP server serves (the trusted prefix points at it), Mailgun calls with an HMAC key, SendGrid
batches with an ECDSA key, Postmark records with Basic credentials. Each event must go through
the same policy and records as returned mail; each forged or unsigned call must be refused, and
each replay acknowledged (providers retry what is not), with nothing changed."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import socket
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from feedservice import bootstrap
from feedservice.adapters.bounces.sns import cert_url_trusted, string_to_sign
from feedservice.bootstrap import App, make_app
from feedservice.bounce_model import BounceKind, BounceReading, ProviderEvent
from feedservice.cli.main import main
from feedservice.config import load_settings
from feedservice.errors import StorageError, WebhookRefused
from feedservice.model import Edition, SubscriberStatus
from feedservice.verp import envelope_sender
from feedservice.web.app import create_app
from feedservice.web.httplimits import Limits
from tests.conftest import FeedServer, Served, write_config
from tests.served import serve_process, served

NOW = datetime(2026, 11, 30, 7, 30, tzinfo=UTC)
DAY = date(2026, 11, 30)
TOPIC = "arn:aws:sns:ap-northeast-2:123456789012:ses-bounces"
MAILGUN_KEY = "key-mailgun-webhook-test"
POSTMARK_USER, POSTMARK_PASSWORD = "postmark-hooks", "pm-webhook-test-password"


def _key_and_cert() -> tuple[rsa.RSAPrivateKey, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.test")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.PEM)


SENDGRID_KEY = ec.generate_private_key(ec.SECP256R1())
SENDGRID_PUBLIC = base64.b64encode(
    SENDGRID_KEY.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
).decode()
KEY, CERT = _key_and_cert()
OTHER_KEY, OTHER_CERT = _key_and_cert()


class Setup:
    def __init__(self, app: App, client: TestClient, server: FeedServer) -> None:
        self.app, self.client, self.server = app, client, server
        self.sid = app.store.add_subscriber("reader@example.com", (), SubscriberStatus.SUBSCRIBED, NOW)[0].id
        self.other = app.store.add_subscriber("other@example.com", (), SubscriberStatus.SUBSCRIBED, NOW)[0].id
        self.envelope = envelope_sender("bounces@newsspace.kr", app.secret(), DAY, self.sid)

    def status(self, sid: int | None = None) -> SubscriberStatus:
        sub = self.app.store.get_subscriber_by_id(sid or self.sid)
        assert sub is not None
        return sub.status

    def records(self) -> int:
        return len(self.app.store.list_bounces())


@pytest.fixture
def setup(tmp_path: Path, feed_server: FeedServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    monkeypatch.setenv("FS_TEST_MAILGUN", MAILGUN_KEY)
    monkeypatch.setenv("FS_TEST_SENDGRID", SENDGRID_PUBLIC)
    monkeypatch.setenv("FS_TEST_POSTMARK", POSTMARK_PASSWORD)
    feed_server.files["/sns/cert.pem"] = Served(CERT, content_type="application/x-pem-file")
    feed_server.files["/sns/confirm"] = Served(b"<ConfirmSubscriptionResponse/>", content_type="text/xml")
    cfg = write_config(
        tmp_path,
        delivery_extra=(
            '[bounces]\nreturn_path = "bounces@newsspace.kr"\n'
            "[bounces.webhooks]\nmax_body_bytes = 65536\n"
            f'[bounces.webhooks.ses]\ntopic_arns = ["{TOPIC}"]\ntrusted_cert_urls = ["{feed_server.url("/sns/")}"]\n'
            '[bounces.webhooks.mailgun]\nsigning_key_env = "FS_TEST_MAILGUN"\n'
            '[bounces.webhooks.sendgrid]\npublic_key_env = "FS_TEST_SENDGRID"\n'
            f'[bounces.webhooks.postmark]\nusername = "{POSTMARK_USER}"\npassword_env = "FS_TEST_POSTMARK"\n'
        ),
    )
    app = make_app(load_settings(cfg), clock=lambda: NOW)
    try:
        with TestClient(create_app(app), base_url="http://localhost") as client:
            yield Setup(app, client, feed_server)
    finally:
        app.close()


# -- SES through SNS ------------------------------------------------------------------------------
def ses_bounce(envelope: str, bounce_type: str = "Permanent", status: str = "5.1.1") -> str:
    return json.dumps(
        {
            "notificationType": "Bounce",
            "bounce": {
                "bounceType": bounce_type,
                "bounceSubType": "General",
                "timestamp": "2026-11-30T07:29:00.000Z",
                "feedbackId": "0100018c-bounce",
                "reportingMTA": "dsn; a27-1.smtp-out.ap-northeast-2.amazonses.com",
                "bouncedRecipients": [
                    {
                        "emailAddress": "reader@example.com",
                        "action": "failed",
                        "status": status,
                        "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                    }
                ],
            },
            "mail": {
                "timestamp": "2026-11-29T22:05:00.000Z",
                "source": envelope,
                "messageId": "0100018c-ses",
                "destination": ["reader@example.com"],
                "headersTruncated": False,
                "commonHeaders": {"from": ["뉴스스페이스 <news@newsspace.kr>"], "subject": "오늘의 뉴스"},
            },
        }
    )


def ses_complaint(envelope: str) -> str:
    return json.dumps(
        {
            "notificationType": "Complaint",
            "complaint": {
                "complainedRecipients": [{"emailAddress": "reader@example.com"}],
                "complaintFeedbackType": "abuse",
                "timestamp": "2026-11-30T07:29:00.000Z",
            },
            "mail": {"source": envelope, "messageId": "0100018c-ses2", "destination": ["reader@example.com"]},
        }
    )


def sns(
    server: FeedServer,
    message: str,
    *,
    message_id: str = "m-1",
    version: str = "2",
    key: rsa.RSAPrivateKey = KEY,
    cert_path: str = "/sns/cert.pem",
    when: datetime = NOW,
    kind: str = "Notification",
    topic: str = TOPIC,
    **extra: str,
) -> dict[str, str]:
    msg = {
        "Type": kind,
        "MessageId": message_id,
        "TopicArn": topic,
        "Message": message,
        "Timestamp": when.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "SignatureVersion": version,
        "SigningCertURL": server.url(cert_path),
        **extra,
    }
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    msg["Signature"] = base64.b64encode(key.sign(string_to_sign(msg), padding.PKCS1v15(), algorithm)).decode()
    return msg


def basic(user: str = POSTMARK_USER, password: str = POSTMARK_PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def post(s: Setup, provider: str, body: Any, *, auth: str | None = None) -> tuple[int, str]:
    """A call as the provider makes it: Postmark's with its Basic credentials (``auth``, else the right ones)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "text/plain"}
    if provider == "postmark":
        headers["Authorization"] = basic() if auth is None else auth
    r = s.client.post(f"/webhooks/{provider}", content=data, headers=headers)
    return r.status_code, r.text


def test_a_signed_ses_bounce_suppresses_its_reader_through_the_bounce_policy(setup: Setup) -> None:
    s = setup
    assert post(s, "ses", sns(s.server, ses_bounce(s.envelope), version="2")) == (200, "ok\n")
    assert s.status() is SubscriberStatus.SUPPRESSED
    [(_, reason, bounce_id)] = s.app.store.suppression_reasons(s.sid)
    assert reason.startswith("hard bounce 5.1.1") and bounce_id is not None
    [record] = s.app.store.list_bounces()
    assert (record.source, record.kind.value, record.edition) == ("webhook:ses/m-1", "hard", DAY)
    assert s.status(s.other) is SubscriberStatus.SUBSCRIBED


def test_a_signature_version_1_complaint_suppresses_and_counts_as_a_complaint(setup: Setup) -> None:
    s = setup
    assert post(s, "ses", sns(s.server, ses_complaint(s.envelope), version="1"))[0] == 200
    assert s.status() is SubscriberStatus.SUPPRESSED
    [record] = s.app.store.list_bounces()
    assert record.kind.value == "complaint"


def test_a_transient_ses_bounce_counts_soft_and_suppresses_nobody_yet(setup: Setup) -> None:
    s = setup
    assert post(s, "ses", sns(s.server, ses_bounce(s.envelope, "Transient", "4.2.2")))[0] == 200
    assert s.status() is SubscriberStatus.SUBSCRIBED
    [record] = s.app.store.list_bounces()
    assert record.kind.value == "soft" and record.action.startswith("counted: soft bounce 1 of 3")


def test_forged_unsigned_untrusted_and_replayed_sns_messages_change_nothing(
    setup: Setup, feed_server: FeedServer
) -> None:
    s = setup
    good = sns(s.server, ses_bounce(s.envelope))
    unsigned = {k: v for k, v in good.items() if k != "Signature"}
    wrong = dict(good, Message=ses_bounce(envelope_sender("bounces@newsspace.kr", s.app.secret(), DAY, s.other)))
    other_server = FeedServer()  # a forger's own certificate, outside the trusted prefix
    try:
        other_server.files["/sns/cert.pem"] = Served(OTHER_CERT)
        untrusted = sns(other_server, ses_bounce(s.envelope), key=OTHER_KEY, message_id="m-2")
        # the forger's certificate under our prefix's host but another path is not trusted either
        s.server.files["/elsewhere/cert.pem"] = Served(OTHER_CERT)
        elsewhere = sns(
            s.server, ses_bounce(s.envelope), key=OTHER_KEY, message_id="m-3", cert_path="/elsewhere/cert.pem"
        )
        stale = sns(s.server, ses_bounce(s.envelope), message_id="m-4", when=NOW - timedelta(hours=2))
        other_topic = sns(s.server, ses_bounce(s.envelope), message_id="m-5", topic=TOPIC + "-x")
        for body in (unsigned, wrong, untrusted, elsewhere, other_topic, stale):
            assert post(s, "ses", body) == (403, "refused\n")
        assert other_server.requests == []
        assert "/elsewhere/cert.pem" not in [p for p, _ in s.server.requests]
        assert (s.status(), s.status(s.other), s.records()) == (SubscriberStatus.SUBSCRIBED,) * 2 + (0,)
        # the good one applies once; its replay (SNS retries what it thinks failed, attackers repeat) is
        # acknowledged, so the provider stops, and changes nothing — even once it is old
        assert post(s, "ses", good) == (200, "ok\n")
        assert post(s, "ses", good) == (200, "ok\n")
        assert s.records() == 1
        s.app.clock = lambda: NOW + timedelta(days=2)
        assert post(s, "ses", good) == (200, "ok\n")
        assert (s.records(), s.status(s.other)) == (1, SubscriberStatus.SUBSCRIBED)
    finally:
        other_server.close()


def test_the_certificate_is_fetched_once(setup: Setup) -> None:
    s = setup
    for i in range(3):
        assert post(s, "ses", sns(s.server, ses_bounce(s.envelope, "Transient", "4.2.2"), message_id=f"c{i}"))[0] == 200
    assert [p for p, _ in s.server.requests].count("/sns/cert.pem") == 1


def test_a_subscription_is_confirmed_only_for_an_allowed_topic_and_a_trusted_url(setup: Setup) -> None:
    s = setup
    confirm = s.server.url("/sns/confirm?Action=ConfirmSubscription&Token=t")
    outside = s.server.url("/elsewhere/confirm?Token=t")

    def sub(url: str, topic: str = TOPIC) -> dict[str, str]:
        kind = "SubscriptionConfirmation"
        return sns(s.server, "You have chosen to subscribe", kind=kind, topic=topic, Token="t", SubscribeURL=url)

    assert post(s, "ses", sub(confirm, topic=TOPIC + "-x"))[0] == 403
    assert post(s, "ses", sub(outside))[0] == 403
    assert not any(p.startswith(("/sns/confirm", "/elsewhere")) for p, _ in s.server.requests)
    stale = sns(
        s.server,
        "You have chosen to subscribe",
        kind="SubscriptionConfirmation",
        Token="t",
        SubscribeURL=confirm,
        when=NOW - timedelta(hours=2),
    )
    assert post(s, "ses", stale) == (403, "refused\n")
    assert not any(p.startswith("/sns/confirm") for p, _ in s.server.requests)
    assert post(s, "ses", sub(confirm)) == (200, "ok\n")
    assert any(p.startswith("/sns/confirm?Action=ConfirmSubscription") for p, _ in s.server.requests)
    # SNS sends it again when unsure it arrived: confirming twice is harmless, and answered 200
    assert post(s, "ses", sub(confirm)) == (200, "ok\n")
    assert s.records() == 0


@pytest.mark.parametrize(
    ("url", "trusted"),
    [
        ("https://sns.ap-northeast-2.amazonaws.com/SimpleNotificationService-abc.pem", True),
        ("https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem", True),
        ("http://sns.ap-northeast-2.amazonaws.com/SimpleNotificationService-abc.pem", False),
        ("https://sns.ap-northeast-2.amazonaws.com.evil.example/x.pem", False),
        ("https://sns.ap-northeast-2.amazonaws.com@evil.example/x.pem", False),
        ("https://evil.example/sns.ap-northeast-2.amazonaws.com/x.pem", False),
        ("https://sns.ap-northeast-2.amazonaws.com:8443/x.pem", False),
        (None, False),
    ],
)
def test_the_default_trusted_certificate_urls_are_the_ones_aws_documents(url: str | None, trusted: bool) -> None:
    assert cert_url_trusted(url, ()) is trusted


def test_a_prefix_is_compared_by_host_port_and_path_not_as_text() -> None:
    prefix = ("http://127.0.0.1:8000/sns/",)
    assert cert_url_trusted("http://127.0.0.1:8000/sns/cert.pem", prefix)
    assert not cert_url_trusted("http://127.0.0.1:80001/sns/cert.pem", prefix)
    assert not cert_url_trusted("http://127.0.0.1:8000/snsx/cert.pem", prefix)
    assert not cert_url_trusted("http://127.0.0.1:8000@evil.example/sns/cert.pem", prefix)


# -- Mailgun --------------------------------------------------------------------------------------
def mailgun(
    envelope: str,
    *,
    token: str = "tok-1",
    when: datetime = NOW,
    key: str = MAILGUN_KEY,
    severity: str = "permanent",
    event: str = "failed",
) -> dict[str, Any]:
    ts = str(int(when.timestamp()))
    signature = hmac.new(key.encode(), (ts + token).encode(), hashlib.sha256).hexdigest()
    return {
        "signature": {"timestamp": ts, "token": token, "signature": signature},
        "event-data": {
            "event": event,
            "severity": severity,
            "recipient": "reader@example.com",
            "reason": "bounce",
            "envelope": {"sender": envelope, "targets": "reader@example.com", "transport": "smtp"},
            "delivery-status": {"code": 550, "enhanced-code": "5.1.1", "message": "5.1.1 user unknown"},
            "message": {"headers": {"message-id": "20261130.abc@newsspace.kr", "subject": "오늘의 뉴스"}},
        },
    }


def test_a_signed_mailgun_failure_suppresses_its_reader(setup: Setup) -> None:
    s = setup
    assert post(s, "mailgun", mailgun(s.envelope)) == (200, "ok\n")
    assert s.status() is SubscriberStatus.SUPPRESSED
    [record] = s.app.store.list_bounces()
    assert (record.source, record.kind.value, record.status) == ("webhook:mailgun/tok-1", "hard", "5.1.1")


def test_a_mailgun_complaint_suppresses_and_a_temporary_failure_counts_soft(setup: Setup) -> None:
    s = setup
    other = envelope_sender("bounces@newsspace.kr", s.app.secret(), DAY, s.other)
    assert post(s, "mailgun", mailgun(other, token="t-soft", severity="temporary"))[0] == 200
    assert s.status(s.other) is SubscriberStatus.SUBSCRIBED
    assert post(s, "mailgun", mailgun(s.envelope, token="t-spam", event="complained"))[0] == 200
    assert s.status() is SubscriberStatus.SUPPRESSED
    assert sorted(r.kind.value for r in s.app.store.list_bounces()) == ["complaint", "soft"]


def test_unsigned_wrongly_signed_stale_and_reused_mailgun_calls_change_nothing(setup: Setup) -> None:
    s = setup
    good = mailgun(s.envelope)
    unsigned = {"event-data": good["event-data"]}
    wrong = mailgun(s.envelope, key="not-the-key")
    stale = mailgun(s.envelope, token="tok-old", when=NOW - timedelta(hours=1))
    for body in (unsigned, wrong, stale):
        assert post(s, "mailgun", body) == (403, "refused\n")
    assert (s.status(), s.records()) == (SubscriberStatus.SUBSCRIBED, 0)
    assert post(s, "mailgun", good)[0] == 200
    # the same call again (Mailgun retries for 8 hours what was not answered 200): acknowledged;
    # its token with another event in the (unsigned) body: a forgery, refused; nothing changes
    other = envelope_sender("bounces@newsspace.kr", s.app.secret(), DAY, s.other)
    reused = dict(good, **{"event-data": mailgun(other)["event-data"]})
    assert post(s, "mailgun", good) == (200, "ok\n")
    assert post(s, "mailgun", reused) == (403, "refused\n")
    assert (s.status(s.other), s.records()) == (SubscriberStatus.SUBSCRIBED, 1)


def test_a_captured_mailgun_call_of_an_ignored_event_cannot_carry_a_forged_bounce(setup: Setup) -> None:
    """Mailgun signs only timestamp and token: a "delivered" call (ignored, so never recorded)
    captured and replayed within its freshness with a bounce in its body must not suppress."""
    s = setup
    delivered = mailgun(s.envelope, token="tok-delivered", event="delivered")
    assert post(s, "mailgun", delivered) == (200, "ok\n")
    forged = dict(delivered, **{"event-data": mailgun(s.envelope)["event-data"]})
    assert post(s, "mailgun", forged) == (403, "refused\n")
    assert (s.status(), s.records()) == (SubscriberStatus.SUBSCRIBED, 0)
    assert post(s, "mailgun", delivered) == (200, "ok\n")  # Mailgun's own retry of it: still fine
    # the forged body with a lone surrogate in it (valid JSON, no UTF-8): refused the same, not a 500
    surrogate = dict(delivered, **{"event-data": dict(forged["event-data"], reason="\ud800")})
    assert post(s, "mailgun", surrogate) == (403, "refused\n")
    assert (s.status(), s.records()) == (SubscriberStatus.SUBSCRIBED, 0)


def test_a_captured_mailgun_call_replayed_as_it_goes_stale_cannot_carry_a_forged_bounce(setup: Setup) -> None:
    """The replay arrives at the last instant its timestamp is fresh. The receiver judged it fresh
    at one reading of the clock and dropped the bindings stale at a later one: the call's own
    binding went, the forged body was bound in its place, and its bounce was believed, fresh."""
    s = setup
    delivered = mailgun(s.envelope, token="tok-edge", event="delivered")
    assert post(s, "mailgun", delivered) == (200, "ok\n")
    forged = dict(delivered, **{"event-data": mailgun(s.envelope)["event-data"]})

    class Ticking:  # the last fresh microsecond, then a microsecond later at each reading
        now = NOW + timedelta(seconds=300) - timedelta(microseconds=1)

        def __call__(self) -> datetime:
            self.now += timedelta(microseconds=1)
            return self.now

    s.app.clock = Ticking()
    with TestClient(create_app(s.app), base_url="http://localhost") as client:
        answer = client.post("/webhooks/mailgun", content=json.dumps(forged).encode())
    assert (s.status(), s.records()) == (SubscriberStatus.SUBSCRIBED, 0)
    assert (answer.status_code, answer.text) == (403, "refused\n")


def test_a_mailgun_token_is_bound_in_the_database_for_every_worker(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token's binding to its body is the database's, not one process's memory: a second app
    on the same database (another web worker, or the service restarted) refuses the captured
    call with a forged body and acknowledges Mailgun's own retry, the same event however its JSON
    is spaced. A store that cannot bind answers 503, so Mailgun retries, and nothing changes."""
    s = setup
    delivered = mailgun(s.envelope, token="tok-w", event="delivered")
    assert post(s, "mailgun", delivered) == (200, "ok\n")
    forged = dict(delivered, **{"event-data": mailgun(s.envelope)["event-data"]})
    other_worker = make_app(s.app.settings, clock=lambda: NOW + timedelta(seconds=299))
    try:
        with TestClient(create_app(other_worker), base_url="http://localhost") as client:
            answer = client.post("/webhooks/mailgun", content=json.dumps(forged).encode())
            assert (answer.status_code, answer.text) == (403, "refused\n")
            respaced = json.dumps(delivered, indent=2, sort_keys=True).encode()
            assert client.post("/webhooks/mailgun", content=respaced).status_code == 200
    finally:
        other_worker.close()
    assert (s.status(), s.records()) == (SubscriberStatus.SUBSCRIBED, 0)

    failing = make_app(s.app.settings, clock=lambda: NOW)

    def broken(*args: object) -> bool:
        raise StorageError("binding a webhook token: OperationalError: database is locked")

    monkeypatch.setattr(failing.store, "bind_webhook_token", broken)
    try:
        with TestClient(create_app(failing), base_url="http://localhost") as client:
            answer = client.post("/webhooks/mailgun", content=json.dumps(mailgun(s.envelope, token="t-2")).encode())
            assert (answer.status_code, answer.text) == (503, "try later\n")
    finally:
        failing.close()
    assert (s.status(), s.records()) == (SubscriberStatus.SUBSCRIBED, 0)


# -- SendGrid -------------------------------------------------------------------------------------
def sendgrid_batch(message_id: str, *events: tuple[str, str, dict[str, str]]) -> bytes:
    return json.dumps(
        [
            {
                "email": email,
                "timestamp": int(NOW.timestamp()),
                "event": event,
                "smtp-id": message_id,
                "sg_event_id": f"ev-{event}-{email}",
                "sg_message_id": "sg.1",
                **extra,
            }
            for event, email, extra in events
        ]
    ).encode()


def post_sendgrid(
    s: Setup,
    body: bytes,
    *,
    key: ec.EllipticCurvePrivateKey = SENDGRID_KEY,
    when: datetime = NOW,
    signed_body: bytes | None = None,
    sign: bool = True,
) -> tuple[int, str]:
    ts = str(int(when.timestamp()))
    headers = {"Content-Type": "application/json"}
    if sign:
        signature = key.sign(ts.encode() + (signed_body or body), ec.ECDSA(hashes.SHA256()))
        headers["X-Twilio-Email-Event-Webhook-Signature"] = base64.b64encode(signature).decode()
        headers["X-Twilio-Email-Event-Webhook-Timestamp"] = ts
    r = s.client.post("/webhooks/sendgrid", content=body, headers=headers)
    return r.status_code, r.text


def _sent_message_id(s: Setup) -> str:
    """The edition of DAY queued to the reader with a Message-ID, as the sender records it."""
    s.app.store.save_edition(Edition(DAY, NOW - timedelta(hours=24), NOW, "오늘의 뉴스"), "<html>", "text", NOW)
    s.app.store.enqueue_deliveries(DAY, [(s.sid, "reader@example.com", "<d1@newsspace.kr>")], NOW)
    return "<d1@newsspace.kr>"


def test_a_signed_sendgrid_batch_applies_its_bounces_and_spam_reports(setup: Setup) -> None:
    s = setup
    mid = _sent_message_id(s)
    batch = sendgrid_batch(
        mid,
        ("delivered", "other@example.com", {}),
        ("bounce", "reader@example.com", {"type": "bounce", "status": "5.1.1", "reason": "550 5.1.1 no such user"}),
    )
    assert post_sendgrid(s, batch) == (200, "ok\n")
    assert s.status() is SubscriberStatus.SUPPRESSED
    [record] = s.app.store.list_bounces()
    assert (record.source, record.kind.value, record.edition) == (
        "webhook:sendgrid/ev-bounce-reader@example.com",
        "hard",
        DAY,
    )


def test_forged_unsigned_stale_and_replayed_sendgrid_calls_change_nothing(setup: Setup) -> None:
    s = setup
    mid = _sent_message_id(s)
    batch = sendgrid_batch(mid, ("spamreport", "reader@example.com", {}))
    forged = ec.generate_private_key(ec.SECP256R1())
    tampered = sendgrid_batch(mid, ("spamreport", "reader@example.com", {"x": "y"}))
    assert post_sendgrid(s, batch, sign=False) == (403, "refused\n")
    assert post_sendgrid(s, batch, key=forged) == (403, "refused\n")
    assert post_sendgrid(s, tampered, signed_body=batch) == (403, "refused\n")
    assert post_sendgrid(s, batch, when=NOW - timedelta(hours=1)) == (403, "refused\n")
    assert (s.status(), s.records()) == (SubscriberStatus.SUBSCRIBED, 0)
    assert post_sendgrid(s, batch)[0] == 200
    assert s.status() is SubscriberStatus.SUPPRESSED
    # SendGrid retries for 24 hours and often sends an event twice: acknowledged, nothing changes
    assert post_sendgrid(s, batch) == (200, "ok\n")
    assert [r.kind.value for r in s.app.store.list_bounces()] == ["complaint"]


def test_a_signed_sendgrid_body_of_the_wrong_shape_is_a_400(setup: Setup) -> None:
    s = setup
    for body in (b"{}", b"[1, 2]", b'[{"event": "bounce", "email": "reader@example.com"}]', b"[" * 5000 + b"]" * 5000):
        assert post_sendgrid(s, body) == (400, "bad request\n")
    assert s.records() == 0


def test_with_verp_on_a_sendgrid_bounce_that_names_only_its_recipient_is_sendgrids_word(setup: Setup) -> None:
    """SendGrid signs the body, so the address an event names is SendGrid's word, not a stranger's:
    believed with VERP on (a mailed "bounce" naming a reader is not). Mailgun signs only a timestamp
    and a token, so its events still need the VERP envelope."""
    s = setup
    batch = sendgrid_batch("<not-ours@elsewhere>", ("bounce", "reader@example.com", {"status": "5.1.1"}))
    assert post_sendgrid(s, batch) == (200, "ok\n")
    assert s.status() is SubscriberStatus.SUPPRESSED
    [record] = s.app.store.list_bounces()
    assert (record.subscriber_id, record.kind.value) == (s.sid, "hard")
    no_envelope = mailgun("someone@elsewhere.example", token="t-bare")
    no_envelope["event-data"]["recipient"] = "other@example.com"
    assert post(s, "mailgun", no_envelope) == (200, "ok\n")
    assert s.status(s.other) is SubscriberStatus.SUBSCRIBED
    assert [r.action for r in s.app.store.list_bounces() if r.source == "webhook:mailgun/t-bare"] == [
        "kept for a person: names a reader only by address, without our VERP token"
    ]


# -- Postmark -------------------------------------------------------------------------------------
def postmark_bounce(
    kind: str = "HardBounce",
    *,
    bounce_id: int = 4323372036854775807,
    email: str = "reader@example.com",
    details: str = "smtp;550 5.1.1 The email account that you tried to reach does not exist",
    record: str = "Bounce",
) -> dict[str, Any]:
    """A record shaped as Postmark's documentation shows it."""
    return {
        "RecordType": record,
        "MessageStream": "broadcast",
        "ID": bounce_id,
        "Type": kind,
        "TypeCode": 1,
        "Name": "Hard bounce",
        "Tag": "digest",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "Metadata": {},
        "ServerID": 23,
        "Description": "The server was unable to deliver your message.",
        "Details": details,
        "Email": email,
        "From": "news@newsspace.kr",
        "BouncedAt": "2026-11-30T07:29:00.0Z",
        "DumpAvailable": True,
        "Inactive": True,
        "CanActivate": True,
        "Subject": "오늘의 뉴스",
    }


def postmark_change(
    reason: str | None = "HardBounce", *, suppress: bool = True, recipient: str = "reader@example.com"
) -> dict[str, Any]:
    return {
        "RecordType": "SubscriptionChange",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "ServerID": 123456,
        "MessageStream": "broadcast",
        "ChangedAt": "2026-11-30T07:29:34.416071Z",
        "Recipient": recipient,
        "Origin": "Recipient",
        "SuppressSending": suppress,
        "SuppressionReason": reason,
        "Tag": "digest",
        "Metadata": {},
    }


def test_a_postmark_hard_bounce_suppresses_its_reader_through_the_bounce_policy(setup: Setup) -> None:
    s = setup
    assert post(s, "postmark", postmark_bounce()) == (200, "ok\n")
    assert s.status() is SubscriberStatus.SUPPRESSED
    [(_, reason, bounce_id)] = s.app.store.suppression_reasons(s.sid)
    assert reason.startswith("hard bounce 5.1.1: smtp;550 5.1.1 The email account") and bounce_id is not None
    [record] = s.app.store.list_bounces()
    assert (record.source, record.kind.value, record.status) == (
        "webhook:postmark/bounce-4323372036854775807",
        "hard",
        "5.1.1",
    )
    assert s.status(s.other) is SubscriberStatus.SUBSCRIBED


def test_postmark_record_types_and_bounce_types(setup: Setup) -> None:
    s = setup
    calls = [
        (postmark_bounce("SoftBounce", bounce_id=1, email="other@example.com", details="4.2.2 mailbox full"), "soft"),
        (postmark_bounce("AutoResponder", bounce_id=2, email="other@example.com", details="부재중"), "auto-reply"),
        (postmark_bounce("DMARCPolicy", bounce_id=3, email="other@example.com", details="5.7.1 DMARC"), "policy"),
        (postmark_bounce("ChallengeVerification", bounce_id=4, email="other@example.com"), "unknown"),
        (postmark_change("ManualSuppression", recipient="other@example.com"), "unknown"),
        (postmark_change(None, suppress=False, recipient="other@example.com"), None),  # a reactivation
        ({"RecordType": "Delivery", "MessageID": "x", "Recipient": "other@example.com"}, None),
        (postmark_bounce("SpamComplaint", bounce_id=5, record="SpamComplaint", details=""), "complaint"),
    ]
    for body, kind in calls:
        before = s.records()
        assert post(s, "postmark", body) == (200, "ok\n"), body
        assert s.records() == before + (kind is not None)
        if kind is not None:
            assert s.app.store.list_bounces()[-1].kind.value == kind
    assert s.status(s.other) is SubscriberStatus.SUBSCRIBED  # soft 1 of 3; the rest suppress nobody
    assert s.status() is SubscriberStatus.SUPPRESSED
    [(_, reason, _)] = s.app.store.suppression_reasons(s.sid)
    assert reason.startswith("complaint")


def test_a_postmark_subscription_change_suppresses_for_a_hard_bounce(setup: Setup) -> None:
    s = setup
    assert post(s, "postmark", postmark_change("HardBounce")) == (200, "ok\n")
    assert s.status() is SubscriberStatus.SUPPRESSED
    [record] = s.app.store.list_bounces()
    assert record.kind.value == "hard" and record.source.startswith("webhook:postmark/change-")
    assert post(s, "postmark", postmark_change("HardBounce")) == (200, "ok\n")  # Postmark's retry of it
    assert s.records() == 1


def test_unauthenticated_postmark_calls_are_401_and_change_nothing(setup: Setup) -> None:
    s = setup
    body = postmark_bounce()
    for auth in (
        "",
        basic(password="wrong"),
        basic(user="someone"),
        basic(password=POSTMARK_PASSWORD + "x"),
        "Basic !!!",
        "Bearer " + POSTMARK_PASSWORD,
        basic(password="")[:-2],
        "Basic " + base64.b64encode(POSTMARK_PASSWORD.encode()).decode(),
    ):
        r = s.client.post(
            "/webhooks/postmark", content=json.dumps(body).encode(), headers={"Authorization": auth} if auth else {}
        )
        assert (r.status_code, r.text) == (401, "unauthorized\n"), auth
        assert r.headers["www-authenticate"].startswith("Basic realm=")
    assert (s.status(), s.records()) == (SubscriberStatus.SUBSCRIBED, 0)
    # the same signed-in record twice: both acknowledged, one bounce recorded
    assert post(s, "postmark", body) == (200, "ok\n")
    assert post(s, "postmark", body) == (200, "ok\n")
    assert s.records() == 1


def test_without_the_postmark_password_every_call_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FS_TEST_POSTMARK", raising=False)
    cfg = write_config(
        tmp_path,
        delivery_extra=(
            '[bounces]\n[bounces.webhooks.postmark]\nusername = "postmark-hooks"\npassword_env = "FS_TEST_POSTMARK"\n'
        ),
    )
    app = make_app(load_settings(cfg), clock=lambda: NOW)
    try:
        app.store.add_subscriber("reader@example.com", (), SubscriberStatus.SUBSCRIBED, NOW)
        with TestClient(create_app(app), base_url="http://localhost") as client:
            for auth in ("", basic(password=""), basic()):
                r = client.post(
                    "/webhooks/postmark",
                    content=json.dumps(postmark_bounce()).encode(),
                    headers={"Authorization": auth},
                )
                assert r.status_code == 401
        assert app.store.list_bounces() == []
    finally:
        app.close()


# -- the breaker across calls (issue 16: "the mass-suppression circuit breaker applies here too") --
def test_a_flood_of_single_event_calls_trips_the_breaker_holds_the_rest_recorded_until_released(
    setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """30 signed Postmark calls of one hard bounce each, against a list of 100: each call alone is
    far under the breaker, but within a day they are 30% of the list. From the 20th on (at least 20
    and over 5%) the events are recorded and acknowledged, their suppressions held; `bounces check`
    and `digest status` say so, and `bounces check --force` applies them and starts the window again."""
    s = setup
    for i in range(98):
        s.app.store.add_subscriber(f"r{i:03d}@example.com", (), SubscriberStatus.SUBSCRIBED, NOW)
    s.app.store.save_edition(Edition(DAY, NOW - timedelta(hours=24), NOW, "오늘의 뉴스"), "<html>", "text", NOW)

    def suppressed() -> int:  # a suppressed address is forgotten: no longer found by its address
        subs = [s.app.store.get_subscriber(f"r{i:03d}@example.com") for i in range(98)]
        return sum(1 for sub in subs if sub is None or sub.status is SubscriberStatus.SUPPRESSED)

    for i in range(30):
        assert post(s, "postmark", postmark_bounce(bounce_id=i, email=f"r{i:03d}@example.com")) == (200, "ok\n"), i
    assert (s.records(), suppressed()) == (30, 19)
    held = [r for r in s.app.store.list_bounces() if r.action.startswith("held by the breaker")]
    assert [r.recipient for r in held] == [f"r{i:03d}@example.com" for i in range(19, 30)]
    assert s.app.bounce_breaker().held == 11
    assert _breaker_metrics(s) == {"feedservice_bounce_breaker_held": 11, "feedservice_bounce_breaker_suppressions": 19}
    # Postmark's retry of a held event: acknowledged, nothing changes
    assert post(s, "postmark", postmark_bounce(bounce_id=25, email="r025@example.com")) == (200, "ok\n")
    assert (s.records(), suppressed()) == (30, 19)

    monkeypatch.setattr(bootstrap, "utcnow", lambda: NOW)
    cfg = ["--config", str(s.app.settings.source_path)]
    assert main([*cfg, "digest", "status", "--date", DAY.isoformat()]) == 0
    assert "bounce breaker: 19 suppressed by bounces and complaints since 2026-11-29 07:30 UTC; 11 more held" in (
        capsys.readouterr().out
    )
    assert main([*cfg, "bounces", "check", "--force"]) == 0
    assert "11 held suppressions released" in capsys.readouterr().out
    assert suppressed() == 30
    # the window starts again at the release: the next bounce suppresses at once
    assert post(s, "postmark", postmark_bounce(bounce_id=30, email="r030@example.com")) == (200, "ok\n")
    assert suppressed() == 31 and s.app.bounce_breaker().held == 0
    assert _breaker_metrics(s)["feedservice_bounce_breaker_held"] == 0  # the alert clears


def _breaker_metrics(s: Setup) -> dict[str, float]:
    """The bounce breaker's gauges as Prometheus reads them from `/metrics`."""
    families = text_string_to_metric_families(s.client.get("/metrics").text)
    return {f.name: f.samples[0].value for f in families if f.name.startswith("feedservice_bounce_breaker")}


# -- hostile bodies -------------------------------------------------------------------------------
@pytest.mark.parametrize("provider", ["ses", "mailgun", "sendgrid", "postmark"])
def test_hostile_bodies_are_4xx_with_no_detail_and_change_nothing(setup: Setup, provider: str) -> None:
    s = setup
    hostile: list[tuple[bytes | Any, int]] = [
        (b"x" * 70000, 413),
        (b"[" * 50000 + b"]" * 50000, 413),
        (b"[" * 30000 + b"]" * 30000, 400),
        (b'{"a": ' + b"9" * 20000 + b"}", 400),
        (b"\xff\xfe not utf-8", 400),
        (b'{"Type": NaN}', 400),
        (b"[]", 400),
        (b'"text"', 400),
        (b"12", 400),
        ({"Type": 5, "Message": [], "Signature": {}, "SignatureVersion": None, "SigningCertURL": 1}, 403),
        ({"signature": "abc", "event-data": []}, 403),
        ({"signature": {"timestamp": [], "token": {}, "signature": 1}}, 403),
        # a lone surrogate is valid JSON but no UTF-8; a non-ASCII signature is no hex (both were 500s)
        ({"signature": {"timestamp": "1764460800", "token": "\ud800", "signature": "ab"}}, 403),
        ({"signature": {"timestamp": "1764460800", "token": "t", "signature": "\ud800é"}}, 403),
    ]
    for body, expected in hostile:
        if provider == "sendgrid" and expected == 400 and _json(body):
            expected = 403  # the signature covers the raw body: it is checked before the body's shape
        if provider == "postmark" and expected == 403:
            expected = 400  # the credentials are right (checked first): what is wrong is the body's shape
        status, text = post(s, provider, body)
        assert status == expected, body if isinstance(body, dict) else body[:40]
        assert text in ("too large\n", "bad request\n", "refused\n")
    assert s.records() == 0


def _no_constant(name: str) -> float:
    raise ValueError(name)  # NaN and Infinity are not JSON


def _json(body: Any) -> bool:
    try:
        json.loads(body if isinstance(body, bytes) else json.dumps(body), parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return False
    return True


def test_a_signed_ses_message_of_the_wrong_shape_is_a_400(setup: Setup) -> None:
    s = setup
    for i, message in enumerate(
        ["not json", "[]", "[" * 5000 + "]" * 5000, json.dumps({"notificationType": "Bounce", "bounce": []})]
    ):
        assert post(s, "ses", sns(s.server, message, message_id=f"bad{i}")) == (400, "bad request\n")
    # a bounce that names nobody is kept for a person, and suppresses nobody
    nobody = json.dumps({"notificationType": "Bounce", "bounce": {"bounceType": "Permanent", "bouncedRecipients": {}}})
    assert post(s, "ses", sns(s.server, nobody, message_id="nobody"))[0] == 200
    [record] = s.app.store.list_bounces()
    assert record.action.startswith("kept for a person")
    assert s.status() is SubscriberStatus.SUBSCRIBED


def test_without_webhook_config_there_is_no_route(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, delivery_extra='[bounces]\nreturn_path = "bounces@newsspace.kr"\n')
    app = make_app(load_settings(cfg), clock=lambda: NOW)
    try:
        with TestClient(create_app(app), base_url="http://localhost") as client:
            assert client.post("/webhooks/ses", content=b"{}").status_code == 404
            assert client.post("/webhooks/mailgun", content=b"{}").status_code == 404
            assert client.post("/webhooks/sendgrid", content=b"[]").status_code == 404
            assert client.post("/webhooks/postmark", content=b"{}").status_code == 404
    finally:
        app.close()


# -- the port: web/webhooks.py serves whatever receiver bootstrap hands it -------------------------
class FakeReceiver:
    """A provider that believes a call with ``"ok": true`` and reports a hard bounce of ``to``."""

    name = "fake"

    def admit(self, headers: Mapping[str, str]) -> None:
        return None

    async def receive(self, headers: Mapping[str, str], raw: bytes, body: Any) -> list[ProviderEvent]:
        if headers.get("x-fake-signature") != "yes":
            raise WebhookRefused(403, "refused", "unsigned")
        if not isinstance(body, dict) or not isinstance(body.get("to"), str):
            raise WebhookRefused(400, "bad request", "no recipient")
        reading = BounceReading(BounceKind.HARD, (body["to"],), "5.1.1", "user unknown")
        return [ProviderEvent(f"webhook:fake/{body['id']}", raw, reading)] if body.get("bounce") else []


def test_any_receiver_bootstrap_hands_the_web_layer_gets_the_same_body_limit_replay_check_and_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write_config(tmp_path, delivery_extra="[bounces]\n[bounces.webhooks]\nmax_body_bytes = 1024\n")
    app = make_app(load_settings(cfg), clock=lambda: NOW)
    monkeypatch.setattr(app, "webhook_receivers", lambda: [FakeReceiver()])
    try:
        sid = app.store.add_subscriber("reader@example.com", (), SubscriberStatus.SUBSCRIBED, NOW)[0].id
        with TestClient(create_app(app), base_url="http://localhost") as client:

            def call(body: Any, signed: bool = True) -> tuple[int, str]:
                headers = {"X-Fake-Signature": "yes"} if signed else {}
                r = client.post("/webhooks/fake", content=json.dumps(body).encode(), headers=headers)
                return r.status_code, r.text

            assert call({"id": "1", "to": "reader@example.com", "bounce": True}, signed=False) == (403, "refused\n")
            assert call({"id": "1"}) == (400, "bad request\n")
            assert call({"id": "1", "to": "x" * 2000}) == (413, "too large\n")
            assert call({"id": "0", "to": "reader@example.com"}) == (200, "ok\n")  # nothing to apply
            sub = app.store.get_subscriber_by_id(sid)
            assert sub is not None and sub.status is SubscriberStatus.SUBSCRIBED
            assert call({"id": "1", "to": "reader@example.com", "bounce": True}) == (200, "ok\n")
            sub = app.store.get_subscriber_by_id(sid)
            assert sub is not None and sub.status is SubscriberStatus.SUPPRESSED
            # a replay (recorded before) is acknowledged, so the provider stops, and changes nothing
            assert call({"id": "1", "to": "reader@example.com", "bounce": True}) == (200, "ok\n")
            assert len(app.store.list_bounces()) == 1
    finally:
        app.close()


def _mailgun_under_two_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str) -> tuple[Path, App]:
    """A config for `feedservice serve` with ``[web] workers = 2`` and Mailgun's webhook, and its app."""
    monkeypatch.setenv("FS_TEST_MAILGUN", MAILGUN_KEY)
    hooks = (
        '[bounces]\nreturn_path = "bounces@newsspace.kr"\n'
        '[bounces.webhooks.mailgun]\nsigning_key_env = "FS_TEST_MAILGUN"\n'
    )
    cfg = write_config(tmp_path, db_url=db_url, delivery_extra=hooks)
    cfg.write_text(cfg.read_text(encoding="utf-8").replace("[web]\n", "[web]\nworkers = 2\n"), encoding="utf-8")
    return cfg, make_app(load_settings(cfg))


def test_under_two_web_workers_a_known_token_with_another_body_is_never_applied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str
) -> None:
    """`feedservice serve` with ``[web] workers = 2``: each token's genuine call, then the same
    token with a forged bounce in its body (what a captured call replayed at once looks like),
    many times over new connections, so calls land on both workers. The token memory used to be
    each worker's own: a forgery reaching the worker that had not seen the token was applied."""
    cfg, app = _mailgun_under_two_workers(tmp_path, monkeypatch, db_url)
    try:
        genuine_reader, forged_reader = (
            app.store.add_subscriber(f"{name}@example.com", (), SubscriberStatus.SUBSCRIBED, NOW)[0].id
            for name in ("genuine", "target")
        )
        envelope = {
            sid: envelope_sender("bounces@newsspace.kr", app.secret(), DAY, sid)
            for sid in (genuine_reader, forged_reader)
        }
        with serve_process(cfg) as port:
            now = datetime.now(UTC)
            tokens = [f"tok-{n}" for n in range(24)]

            def calls(token: str) -> list[tuple[str, int]]:
                event = "failed" if token == "tok-0" else "delivered"  # one genuine bounce, the rest ignored
                genuine = mailgun(envelope[genuine_reader], token=token, when=now, event=event)
                forged = dict(genuine, **{"event-data": mailgun(envelope[forged_reader], when=now)["event-data"]})
                out = []
                for name, body in [("genuine", genuine), *[("forged", forged), ("genuine", genuine)] * 3]:
                    answer = httpx.post(
                        f"http://127.0.0.1:{port}/webhooks/mailgun", content=json.dumps(body), timeout=30
                    )
                    out.append((name, answer.status_code))
                return out

            with ThreadPoolExecutor(4) as pool:
                answers = [a for per_token in pool.map(calls, tokens) for a in per_token]
        assert {a for a in answers if a[0] == "genuine"} == {("genuine", 200)}
        assert {a for a in answers if a[0] == "forged"} == {("forged", 403)}
        status = {sid: app.store.get_subscriber_by_id(sid) for sid in (genuine_reader, forged_reader)}
        assert {sid: sub.status if sub else None for sid, sub in status.items()} == {
            genuine_reader: SubscriberStatus.SUPPRESSED,
            forged_reader: SubscriberStatus.SUBSCRIBED,
        }
        assert [r.source for r in app.store.list_bounces()] == ["webhook:mailgun/tok-0"]
    finally:
        app.close()


def test_under_two_web_workers_one_tokens_first_calls_at_once_with_two_bodies_apply_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str
) -> None:
    """Two first calls under one token, with bounces for two different readers, sent at the same
    instant over two connections (so often to both workers): for each token exactly one is
    answered 200 and applied, the other is refused, and only the winner's reader is suppressed."""
    cfg, app = _mailgun_under_two_workers(tmp_path, monkeypatch, db_url)
    tokens = [f"tok-race-{n}" for n in range(12)]
    try:
        readers = {
            (token, side): app.store.add_subscriber(
                f"{token}-{side}@example.com", (), SubscriberStatus.SUBSCRIBED, NOW
            )[0].id
            for token in tokens
            for side in ("a", "b")
        }
        with serve_process(cfg) as port, httpx.Client(timeout=30) as warm:
            assert warm.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
            now = datetime.now(UTC)

            def race(token: str) -> dict[str, int]:
                bodies = {
                    side: json.dumps(
                        mailgun(
                            envelope_sender("bounces@newsspace.kr", app.secret(), DAY, readers[token, side]),
                            token=token,
                            when=now,
                        )
                    )
                    for side in ("a", "b")
                }
                ready = threading.Barrier(2)

                def one(side: str) -> tuple[str, int]:
                    with httpx.Client(timeout=30) as client:  # a connection of its own
                        ready.wait()
                        answer = client.post(f"http://127.0.0.1:{port}/webhooks/mailgun", content=bodies[side])
                        return side, answer.status_code

                with ThreadPoolExecutor(2) as pair:
                    return dict(pair.map(one, ("a", "b")))

            results = {token: race(token) for token in tokens}
        for token, answers in results.items():
            assert sorted(answers.values()) == [200, 403], (token, answers)
            winner = next(side for side, status in answers.items() if status == 200)
            for side in ("a", "b"):
                sub = app.store.get_subscriber_by_id(readers[token, side])
                assert sub is not None
                expected = SubscriberStatus.SUPPRESSED if side == winner else SubscriberStatus.SUBSCRIBED
                assert sub.status is expected, (token, side, answers)
        assert sorted(r.source for r in app.store.list_bounces()) == sorted(f"webhook:mailgun/{t}" for t in tokens)
    finally:
        app.close()


def test_a_webhook_body_that_never_arrives_is_a_408_in_one_line(setup: Setup, caplog: pytest.LogCaptureFixture) -> None:
    """A provider's (or a stranger's) call whose body stops coming: at the body deadline the
    client gets the 408 and the log one line per call, not a traceback of the app's
    ClientDisconnect (nor, at a stop, Granian's 500); nothing is recorded."""
    caplog.set_level(logging.INFO, logger="feedservice")
    quick = Limits(head_timeout=5.0, body_timeout=1.0)
    with served(setup.app, quick) as port, socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"POST /webhooks/mailgun HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"signature"'
        )
        answer = b""
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            while chunk := sock.recv(65536):
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "WARNING")], caplog.text
    assert [r.getMessage() for r in caplog.records if "did not arrive" in r.getMessage()] == [
        "closing a connection whose request body did not arrive in time"
    ]
    assert "Traceback" not in caplog.text and setup.records() == 0
