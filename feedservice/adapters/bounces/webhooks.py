"""One receiver per provider webhook (``[bounces.webhooks.*]``): is the call signed, what does it report.

Each receiver is a ``ports.WebhookReceiver``: it believes a call only when its provider signed it
(``sns.py``, ``mailgun.py``, ``sendgrid.py``; Postmark, which signs nothing, by its HTTP Basic
credentials: ``postmark.py``), and turns the payload into ``ProviderEvent``\\ s for the same bounce
check as returned mail. Each event carries two decisions: ``fresh`` (the call's timestamp is within
the provider's max age; a replayed event is acknowledged at any age, a new one needs a fresh call)
and ``provider_says`` (the whole call is authenticated, so its recipient is believed with VERP on:
SNS, SendGrid, Postmark; not Mailgun, which signs only a timestamp and a token). What is HTTP about
a call (the body's size, JSON, the replay check against the store, the answer) stays in
``web/webhooks.py``; a call that is not believed or not understood is a ``WebhookRefused``
carrying the answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import SecretStr

from feedservice.adapters import apiclient
from feedservice.adapters.bounces.mailgun import MailgunRefused, call_digest, mailgun_reading, verify_mailgun
from feedservice.adapters.bounces.postmark import PostmarkRefused, postmark_event, verify_postmark
from feedservice.adapters.bounces.sendgrid import SendgridRefused, load_sendgrid_key, sendgrid_events, verify_sendgrid
from feedservice.adapters.bounces.sns import MAX_CERT_BYTES, CertificateCache, SnsRefused, cert_url_trusted, ses_reading
from feedservice.bounce_model import ProviderEvent
from feedservice.config_bounces import (
    BouncesConfig,
    MailgunWebhookConfig,
    PostmarkWebhookConfig,
    SendgridWebhookConfig,
    SesWebhookConfig,
)
from feedservice.errors import StorageError, WebhookRefused
from feedservice.ports import WebhookReceiver

__all__ = ["MailgunReceiver", "PostmarkReceiver", "SendgridReceiver", "SesReceiver", "configured_receivers"]

log = logging.getLogger(__name__)

FETCH_TIMEOUT = 10.0
Secrets = Callable[[str], SecretStr | None]
# The store's ``bind_webhook_token(token, digest, stale_at, now)``: whether the token is bound to
# that digest (bound now, or before); False when it came before with another body.
TokenBinder = Callable[[str, str, datetime, datetime], bool]


def _fresh(now: datetime, timestamp: float, max_age: float) -> bool:
    return abs(now.timestamp() - timestamp) <= max_age


class _Signed:
    """A provider that signs its calls: every caller is let in, the signature decides in ``receive``."""

    def admit(self, headers: Mapping[str, str]) -> None:
        return None


class SesReceiver(_Signed):
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
        fresh = sent.tzinfo is not None and abs(self.clock() - sent) <= timedelta(minutes=self.cfg.max_age_minutes)
        kind = body["Type"]
        if kind != "Notification" and not fresh:  # nothing recorded to acknowledge it by: refused unvisited
            raise WebhookRefused(403, "refused", f"Timestamp {body['Timestamp'][:40]} is too old")
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
        return [ProviderEvent(f"webhook:ses/{body['MessageId'][:200]}", kept, reading, fresh, provider_says=True)]

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


class MailgunReceiver(_Signed):
    """Mailgun's webhooks: an HMAC of a timestamp and a token, keyed with the signing key."""

    name = "mailgun"

    def __init__(
        self, cfg: MailgunWebhookConfig, secret: Secrets, clock: Callable[[], datetime], bind: TokenBinder
    ) -> None:
        self.cfg, self.clock, self.bind = cfg, clock, bind
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
            token, timestamp = verify_mailgun(body, self.key)
        except MailgunRefused as exc:
            raise WebhookRefused(403, "refused", str(exc)) from None
        now = self.clock()
        fresh = _fresh(now, timestamp, self.cfg.max_age_seconds)
        if fresh:  # a stale call's new events are refused anyway: nothing to bind
            await self._bind(token, body, datetime.fromtimestamp(timestamp + self.cfg.max_age_seconds, UTC), now)
        try:
            reading = mailgun_reading(body.get("event-data"))
        except ValueError:
            raise WebhookRefused(400, "bad request", "event-data is not an event") from None
        if reading is None:
            return []
        return [ProviderEvent(f"webhook:mailgun/{token}", raw, reading, fresh, provider_says=False)]

    async def _bind(self, token: str, body: Mapping[str, Any], stale_at: datetime, now: datetime) -> None:
        """The token bound to this body in the store, for every worker: 403 when it came with
        another one; 503 when the store cannot say (Mailgun retries). ``now``: when the call was
        found fresh (a later reading of the clock could be past ``stale_at``)."""
        try:
            same = await asyncio.to_thread(self.bind, f"mailgun/{token}", call_digest(body), stale_at, now)
        except StorageError as exc:
            raise WebhookRefused(503, "try later", f"binding token {token[:100]}: {exc}") from None
        if not same:
            raise WebhookRefused(403, "refused", f"token {token[:100]} seen before with another body")


class SendgridReceiver(_Signed):
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
            signed_at = verify_sendgrid(self.key, signature, timestamp, raw)
            events = sendgrid_events(body)
        except SendgridRefused as exc:
            raise WebhookRefused(403, "refused", str(exc)) from None
        except ValueError:
            raise WebhookRefused(400, "bad request", "not a batch of SendGrid events") from None
        fresh = _fresh(self.clock(), signed_at, self.cfg.max_age_seconds)
        return [
            ProviderEvent(f"webhook:sendgrid/{i}", json.dumps(e).encode(), reading, fresh, provider_says=True)
            for i, reading, e in events
        ]


class PostmarkReceiver:
    """Postmark's webhooks: no signature, HTTP Basic credentials (checked before the body is read).

    A wrong or missing one is a 401 with ``WWW-Authenticate``: Postmark retries that (about 10
    hours) and stops at a 403, which would lose events while a password is rotated. Postmark sends
    no timestamp to judge, so every believed call is fresh."""

    name = "postmark"

    def __init__(self, cfg: PostmarkWebhookConfig, secret: Secrets) -> None:
        self.cfg = cfg
        password = secret(cfg.password_env)
        self.password = password.get_secret_value() if password is not None else None
        if not self.password:
            log.error("webhooks: %s is not set: every Postmark call is refused", cfg.password_env)

    def admit(self, headers: Mapping[str, str]) -> None:
        try:
            if not self.password:
                raise PostmarkRefused(f"{self.cfg.password_env} is not set")
            verify_postmark(headers.get("authorization"), self.cfg.username, self.password)
        except PostmarkRefused as exc:
            challenge = {"WWW-Authenticate": f'Basic realm="feedservice {self.name} webhook"'}
            raise WebhookRefused(401, "unauthorized", str(exc), challenge) from None

    async def receive(self, headers: Mapping[str, str], raw: bytes, body: Any) -> list[ProviderEvent]:
        self.admit(headers)  # whoever calls receive alone is held to the same credentials
        try:
            event = postmark_event(body)
        except ValueError:
            raise WebhookRefused(400, "bad request", "not a Postmark webhook record") from None
        if event is None:
            return []
        event_id, reading = event
        return [ProviderEvent(f"webhook:postmark/{event_id}", raw, reading, fresh=True, provider_says=True)]


def configured_receivers(
    b: BouncesConfig | None, secret: Secrets, clock: Callable[[], datetime], bind: TokenBinder
) -> list[WebhookReceiver]:
    """A receiver per configured provider (none without ``[bounces.webhooks.*]``); ``secret``
    reads an environment variable (or its file), ``bind`` binds a token to a call's body in the store."""
    if b is None:
        return []
    w = b.webhooks
    receivers: list[WebhookReceiver] = []
    if w.ses is not None:
        receivers.append(SesReceiver(w.ses, clock))
    if w.mailgun is not None:
        receivers.append(MailgunReceiver(w.mailgun, secret, clock, bind))
    if w.sendgrid is not None:
        receivers.append(SendgridReceiver(w.sendgrid, secret, clock))
    if w.postmark is not None:
        receivers.append(PostmarkReceiver(w.postmark, secret))
    return receivers
