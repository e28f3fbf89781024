"""One receiver per provider webhook (``[bounces.webhooks.*]``): is the call signed, what does it report.

Each receiver is a ``ports.WebhookReceiver``: it believes a call only when its provider signed it
(``sns.py``, ``mailgun.py``, ``sendgrid.py``), and turns the payload into ``ProviderEvent``\\ s for
the same bounce check as returned mail. What is HTTP about a call (the body's size, JSON, the
replay check against the store, the answer) stays in ``web/webhooks.py``; a call that is not
believed or not understood is a ``WebhookRefused`` carrying the answer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import SecretStr

from feedservice.adapters import apiclient
from feedservice.adapters.bounces.mailgun import MailgunRefused, mailgun_reading, verify_mailgun
from feedservice.adapters.bounces.sendgrid import SendgridRefused, load_sendgrid_key, sendgrid_events, verify_sendgrid
from feedservice.adapters.bounces.sns import MAX_CERT_BYTES, CertificateCache, SnsRefused, cert_url_trusted, ses_reading
from feedservice.bounce_model import ProviderEvent
from feedservice.config_bounces import BouncesConfig, MailgunWebhookConfig, SendgridWebhookConfig, SesWebhookConfig
from feedservice.errors import WebhookRefused
from feedservice.ports import WebhookReceiver

__all__ = ["MailgunReceiver", "SendgridReceiver", "SesReceiver", "configured_receivers"]

log = logging.getLogger(__name__)

FETCH_TIMEOUT = 10.0
Secrets = Callable[[str], SecretStr | None]


class SesReceiver:
    """Amazon SES events through SNS: signed by a certificate fetched from a trusted URL."""

    name = "ses"

    def __init__(self, cfg: SesWebhookConfig, clock: Callable[[], datetime]) -> None:
        self.cfg, self.clock = cfg, clock
        self.certs = CertificateCache(self._fetch, cfg.trusted_cert_urls)

    async def _fetch(self, url: str) -> bytes:
        return await apiclient.get_bounded(url, timeout=FETCH_TIMEOUT, max_bytes=MAX_CERT_BYTES)

    async def receive(self, headers: Mapping[str, str], raw: bytes, body: Any) -> list[ProviderEvent]:
        if not isinstance(body, dict):
            raise WebhookRefused(400, "bad request", "not an SNS message")
        try:
            await self.certs.verify(body)
        except SnsRefused as exc:
            raise WebhookRefused(403, "refused", str(exc)) from None
        if body["TopicArn"] not in self.cfg.topic_arns:
            raise WebhookRefused(403, "refused", f"topic not allowed: {body['TopicArn'][:200]}")
        try:
            sent = datetime.fromisoformat(body["Timestamp"])
        except ValueError:
            raise WebhookRefused(400, "bad request", "Timestamp is not ISO 8601") from None
        if sent.tzinfo is None or abs(self.clock() - sent) > timedelta(minutes=self.cfg.max_age_minutes):
            raise WebhookRefused(409, "replayed", f"Timestamp {body['Timestamp'][:40]} is too old")
        kind = body["Type"]
        if kind == "SubscriptionConfirmation":
            await self._confirm(body)
            return []
        if kind == "UnsubscribeConfirmation":
            log.warning("webhooks: SNS unsubscribed %s", body["TopicArn"][:200])
            return []
        try:
            reading = ses_reading(body["Message"])
        except (ValueError, RecursionError):
            raise WebhookRefused(400, "bad request", "Message is not an SES event") from None
        if reading is None:
            return []
        signed = json.dumps({k: body[k] for k in ("Type", "MessageId", "TopicArn", "Timestamp")})
        kept = (signed + "\n" + body["Message"]).encode()
        return [ProviderEvent(f"webhook:ses/{body['MessageId'][:200]}", kept, reading)]

    async def _confirm(self, message: dict[str, Any]) -> None:
        """Visit the SubscribeURL (only under a trusted prefix); 503 when that fails, so SNS retries."""
        url = message["SubscribeURL"]
        log.warning("webhooks: SNS subscription to %s: confirming", message["TopicArn"][:200])
        if not cert_url_trusted(url, self.cfg.trusted_cert_urls):
            raise WebhookRefused(403, "refused", f"SubscribeURL not trusted: {url[:200]}")
        try:
            await apiclient.get_bounded(url, timeout=FETCH_TIMEOUT, max_bytes=64 * 1024)
        except (ValueError, aiohttp.ClientError, TimeoutError) as exc:
            log.error("webhooks: confirming the SNS subscription failed: %s", apiclient.describe(exc))
            raise WebhookRefused(503, "try later", "confirming the SNS subscription failed") from None


class MailgunReceiver:
    """Mailgun's webhooks: an HMAC of a timestamp and a token, keyed with the signing key."""

    name = "mailgun"

    def __init__(self, cfg: MailgunWebhookConfig, secret: Secrets, clock: Callable[[], datetime]) -> None:
        self.cfg, self.clock = cfg, clock
        key = secret(cfg.signing_key_env)
        self.key = key.get_secret_value().encode() if key is not None else None
        if self.key is None:
            log.error("webhooks: %s is not set: every Mailgun call is refused", cfg.signing_key_env)

    async def receive(self, headers: Mapping[str, str], raw: bytes, body: Any) -> list[ProviderEvent]:
        if not isinstance(body, dict):
            raise WebhookRefused(400, "bad request", "not a Mailgun webhook")
        if self.key is None:
            raise WebhookRefused(403, "refused", f"{self.cfg.signing_key_env} is not set")
        try:
            token = verify_mailgun(body, self.key, self.clock().timestamp(), self.cfg.max_age_seconds)
        except MailgunRefused as exc:
            raise WebhookRefused(403, "refused", str(exc)) from None
        try:
            reading = mailgun_reading(body.get("event-data"))
        except ValueError:
            raise WebhookRefused(400, "bad request", "event-data is not an event") from None
        return [] if reading is None else [ProviderEvent(f"webhook:mailgun/{token}", raw, reading)]


class SendgridReceiver:
    """SendGrid's Event Webhook: an ECDSA signature over the timestamp and the body; a batch of events."""

    name = "sendgrid"

    def __init__(self, cfg: SendgridWebhookConfig, secret: Secrets, clock: Callable[[], datetime]) -> None:
        self.cfg, self.clock = cfg, clock
        text = secret(cfg.public_key_env)
        self.key: ec.EllipticCurvePublicKey | None = None
        try:
            self.key = load_sendgrid_key(text.get_secret_value()) if text is not None else None
        except ValueError:
            log.error("webhooks: %s is not SendGrid's verification key (base64)", cfg.public_key_env)
        if text is None:
            log.error("webhooks: %s is not set: every SendGrid call is refused", cfg.public_key_env)

    async def receive(self, headers: Mapping[str, str], raw: bytes, body: Any) -> list[ProviderEvent]:
        if self.key is None:
            raise WebhookRefused(403, "refused", f"{self.cfg.public_key_env} is not a usable key")
        signature = headers.get("x-twilio-email-event-webhook-signature")
        timestamp = headers.get("x-twilio-email-event-webhook-timestamp")
        try:
            verify_sendgrid(self.key, signature, timestamp, raw, self.clock().timestamp(), self.cfg.max_age_seconds)
            events = sendgrid_events(body)
        except SendgridRefused as exc:
            raise WebhookRefused(403, "refused", str(exc)) from None
        except ValueError:
            raise WebhookRefused(400, "bad request", "not a batch of SendGrid events") from None
        return [ProviderEvent(f"webhook:sendgrid/{i}", json.dumps(e).encode(), reading) for i, reading, e in events]


def configured_receivers(
    b: BouncesConfig | None, secret: Secrets, clock: Callable[[], datetime]
) -> list[WebhookReceiver]:
    """A receiver per configured provider (none without ``[bounces.webhooks.*]``); ``secret``
    reads an environment variable (or its file)."""
    if b is None:
        return []
    w = b.webhooks
    receivers: list[WebhookReceiver] = []
    if w.ses is not None:
        receivers.append(SesReceiver(w.ses, clock))
    if w.mailgun is not None:
        receivers.append(MailgunReceiver(w.mailgun, secret, clock))
    if w.sendgrid is not None:
        receivers.append(SendgridReceiver(w.sendgrid, secret, clock))
    return receivers
