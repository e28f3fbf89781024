"""``POST /webhooks/{provider}``: bounces and complaints that providers report over HTTP.

Each route believes a call only when it is signed by its provider (``adapters/bounces/sns.py``,
``mailgun.py``, ``sendgrid.py``; Postmark's, which signs nothing, by its Basic credentials:
``postmark.py``) and hands the event to the same bounce check as returned mail
(``App.check_bounces`` with an ``EventIntake``): the same matching (VERP envelope, Message-ID,
recipient), policy, breaker and records. Providers deliver at least once and retry whatever is
not answered 2xx (SNS on 5xx, Mailgun for 8 hours, SendGrid for 24), so a signed event whose id
was recorded before is acknowledged (200) and changes nothing, whatever its age; a new one is
believed only with a fresh timestamp. Every route reads at most ``[bounces.webhooks]
max_body_bytes`` (else 413); a body that is not the JSON expected — deeply nested, huge numbers,
wrong types — is a 400; no answer says more than a word, the reason goes to the log.

    200  applied; a replay (recorded before: nothing changes); or nothing to do (not a bounce or complaint)
    400  not the JSON expected        403  unsigned, wrongly signed, stale, untrusted certificate or topic
    401  Postmark: no or wrong credentials (Postmark retries it; a 403 would make it stop)
    413  body too big                 503  not recorded (the store failed, or the breaker held it): retried
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from feedservice.adapters import apiclient
from feedservice.adapters.bounces.events import EventIntake
from feedservice.adapters.bounces.mailgun import MailgunRefused, mailgun_reading, verify_mailgun
from feedservice.adapters.bounces.postmark import PostmarkRefused, postmark_event, verify_postmark
from feedservice.adapters.bounces.sendgrid import SendgridRefused, load_sendgrid_key, sendgrid_events, verify_sendgrid
from feedservice.adapters.bounces.sns import MAX_CERT_BYTES, CertificateCache, SnsRefused, cert_url_trusted, ses_reading
from feedservice.bootstrap import App
from feedservice.bounce_model import BounceReading
from feedservice.config_bounces import WebhooksConfig

__all__ = ["webhook_routes"]

log = logging.getLogger(__name__)
_Handle = Callable[[Request], Awaitable[Response]]  # a provider's handler of one webhook call

FETCH_TIMEOUT = 10.0


class _Refused(Exception):
    def __init__(self, status: int, word: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.word = status, word


def _answer(status: int, word: str) -> Response:
    return PlainTextResponse(word + "\n", status_code=status)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def _read_json(request: Request, limit: int) -> tuple[bytes, Any]:
    """The body (at most ``limit`` bytes) and its JSON; ``_Refused`` with 413 or 400."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _Refused(413, "too large", f"declared {declared} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _Refused(413, "too large", f"over {limit} bytes")
    try:
        return bytes(body), json.loads(bytes(body), parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, >4300-digit numbers, deep nesting
        raise _Refused(400, "bad request", f"not JSON: {exc.__class__.__name__}") from None


def _fresh(app: App, timestamp: float, max_age: float) -> bool:
    return abs(app.clock().timestamp() - timestamp) <= max_age


async def _apply(app: App, source: str, raw: bytes, reading: BounceReading, *, fresh: bool,
                 provider_says: bool) -> Response:  # fmt: skip
    """Through the one bounce check, unless ``source`` (the provider's event id) was recorded."""
    return await _apply_all(app, [EventIntake(source, raw, reading)], fresh=fresh, provider_says=provider_says)


async def _apply_all(app: App, events: list[EventIntake], *, fresh: bool, provider_says: bool) -> Response:
    """The events not recorded before, in one bounce check (one breaker for a batch). When every
    one was recorded before, the call is a replay (a provider's retry, or someone repeating it):
    acknowledged, so the provider stops, and nothing changes. New events need a fresh call.

    ``provider_says``: the whole call is authenticated (SNS and SendGrid sign the body, Postmark's
    credentials come over HTTPS), so the recipient an event names is the provider's word and is
    believed with VERP on; Mailgun signs only a timestamp and a token, so there it is not."""
    new = [e for e in events if not await run_in_threadpool(app.store.bounce_source_known, e.name)]
    if not new:
        log.info("webhooks: %s recorded before: acknowledged, nothing changed", ", ".join(e.name for e in events)[:300])
        return _answer(200, "ok")
    if not fresh:
        raise _Refused(403, "refused", f"stale timestamp: {new[0].name} not applied")
    readings = {e.mail.raw: e.reading for e in new}
    report = await run_in_threadpool(lambda: app.check_bounces(intakes=new, read=readings.__getitem__,
                                                               provider_says=provider_says))  # fmt: skip
    if report.errors or report.held:
        log.error("webhooks: %s not recorded: %s", new[0].name, report.summary())
        return _answer(503, "try later")
    log.info("webhooks: %s: %s", new[0].name, report.summary())
    return _answer(200, "ok")


class _Ses:
    def __init__(self, app: App, webhooks: WebhooksConfig) -> None:
        assert webhooks.ses is not None
        self.app, self.limit, self.cfg = app, webhooks.max_body_bytes, webhooks.ses
        self.certs = CertificateCache(self._fetch, self.cfg.trusted_cert_urls)

    async def _fetch(self, url: str) -> bytes:
        return await apiclient.get_bounded(url, timeout=FETCH_TIMEOUT, max_bytes=MAX_CERT_BYTES)

    async def handle(self, request: Request) -> Response:
        _, message = await _read_json(request, self.limit)
        if not isinstance(message, dict):
            raise _Refused(400, "bad request", "not an SNS message")
        try:
            await self.certs.verify(message)
        except SnsRefused as exc:
            raise _Refused(403, "refused", str(exc)) from None
        if message["TopicArn"] not in self.cfg.topic_arns:
            raise _Refused(403, "refused", f"topic not allowed: {message['TopicArn'][:200]}")
        try:
            sent = datetime.fromisoformat(message["Timestamp"])
        except ValueError:
            raise _Refused(400, "bad request", "Timestamp is not ISO 8601") from None
        fresh = sent.tzinfo is not None and _fresh(self.app, sent.timestamp(), self.cfg.max_age_minutes * 60)
        kind = message["Type"]
        if kind != "Notification" and not fresh:
            raise _Refused(403, "refused", f"Timestamp {message['Timestamp'][:40]} is too old")
        if kind == "SubscriptionConfirmation":
            return await self._confirm(message)
        if kind == "UnsubscribeConfirmation":
            log.warning("webhooks: SNS unsubscribed %s", message["TopicArn"][:200])
            return _answer(200, "ok")
        try:
            reading = ses_reading(message["Message"])
        except (ValueError, RecursionError):
            raise _Refused(400, "bad request", "Message is not an SES event") from None
        if reading is None:
            return _answer(200, "ok")
        source = f"webhook:ses/{message['MessageId'][:200]}"
        signed = json.dumps({k: message[k] for k in ("Type", "MessageId", "TopicArn", "Timestamp")})
        return await _apply(
            self.app, source, (signed + "\n" + message["Message"]).encode(), reading, fresh=fresh, provider_says=True
        )

    async def _confirm(self, message: dict[str, Any]) -> Response:
        url = message["SubscribeURL"]
        log.warning("webhooks: SNS subscription to %s: confirming", message["TopicArn"][:200])
        if not cert_url_trusted(url, self.cfg.trusted_cert_urls):
            raise _Refused(403, "refused", f"SubscribeURL not trusted: {url[:200]}")
        try:
            await apiclient.get_bounded(url, timeout=FETCH_TIMEOUT, max_bytes=64 * 1024)
        except (ValueError, aiohttp.ClientError, TimeoutError) as exc:
            log.error("webhooks: confirming the SNS subscription failed: %s", apiclient.describe(exc))
            return _answer(503, "try later")
        return _answer(200, "ok")


class _Mailgun:
    def __init__(self, app: App, webhooks: WebhooksConfig) -> None:
        assert webhooks.mailgun is not None
        self.app, self.limit, self.cfg = app, webhooks.max_body_bytes, webhooks.mailgun
        secret = app.settings.secret(self.cfg.signing_key_env)
        self.key = secret.get_secret_value().encode() if secret is not None else None
        if self.key is None:
            log.error("webhooks: %s is not set: every Mailgun call is refused", self.cfg.signing_key_env)

    async def handle(self, request: Request) -> Response:
        raw, body = await _read_json(request, self.limit)
        if not isinstance(body, dict):
            raise _Refused(400, "bad request", "not a Mailgun webhook")
        if self.key is None:
            raise _Refused(403, "refused", f"{self.cfg.signing_key_env} is not set")
        try:
            token, timestamp = verify_mailgun(body, self.key)
        except MailgunRefused as exc:
            raise _Refused(403, "refused", str(exc)) from None
        try:
            reading = mailgun_reading(body.get("event-data"))
        except ValueError:
            raise _Refused(400, "bad request", "event-data is not an event") from None
        if reading is None:
            return _answer(200, "ok")
        fresh = _fresh(self.app, timestamp, self.cfg.max_age_seconds)
        return await _apply(self.app, f"webhook:mailgun/{token}", raw, reading, fresh=fresh, provider_says=False)


class _Sendgrid:
    def __init__(self, app: App, webhooks: WebhooksConfig) -> None:
        assert webhooks.sendgrid is not None
        self.app, self.limit, self.cfg = app, webhooks.max_body_bytes, webhooks.sendgrid
        secret = app.settings.secret(self.cfg.public_key_env)
        self.key: ec.EllipticCurvePublicKey | None = None
        try:
            self.key = load_sendgrid_key(secret.get_secret_value()) if secret is not None else None
        except ValueError:
            log.error("webhooks: %s is not SendGrid's verification key (base64)", self.cfg.public_key_env)
        if secret is None:
            log.error("webhooks: %s is not set: every SendGrid call is refused", self.cfg.public_key_env)

    async def handle(self, request: Request) -> Response:
        raw, body = await _read_json(request, self.limit)
        if self.key is None:
            raise _Refused(403, "refused", f"{self.cfg.public_key_env} is not a usable key")
        h = request.headers
        try:
            timestamp = verify_sendgrid(self.key, h.get("x-twilio-email-event-webhook-signature"),
                                        h.get("x-twilio-email-event-webhook-timestamp"), raw)  # fmt: skip
            events = sendgrid_events(body)
        except SendgridRefused as exc:
            raise _Refused(403, "refused", str(exc)) from None
        except ValueError:
            raise _Refused(400, "bad request", "not a batch of SendGrid events") from None
        if not events:
            return _answer(200, "ok")
        intakes = [EventIntake(f"webhook:sendgrid/{event_id}", json.dumps(e).encode(), reading)
                   for event_id, reading, e in events]  # fmt: skip
        fresh = _fresh(self.app, timestamp, self.cfg.max_age_seconds)
        return await _apply_all(self.app, intakes, fresh=fresh, provider_says=True)


class _Postmark:
    def __init__(self, app: App, webhooks: WebhooksConfig) -> None:
        assert webhooks.postmark is not None
        self.app, self.limit, self.cfg = app, webhooks.max_body_bytes, webhooks.postmark
        secret = app.settings.secret(self.cfg.password_env)
        self.password = secret.get_secret_value() if secret is not None else None
        if not self.password:
            log.error("webhooks: %s is not set: every Postmark call is refused", self.cfg.password_env)

    async def handle(self, request: Request) -> Response:
        try:  # before the body is read: a stranger's call costs nothing
            if not self.password:
                raise PostmarkRefused(f"{self.cfg.password_env} is not set")
            verify_postmark(request.headers.get("authorization"), self.cfg.username, self.password)
        except PostmarkRefused as exc:
            raise _Refused(401, "unauthorized", str(exc)) from None
        raw, body = await _read_json(request, self.limit)
        try:
            event = postmark_event(body)
        except ValueError:
            raise _Refused(400, "bad request", "not a Postmark webhook record") from None
        if event is None:
            return _answer(200, "ok")
        event_id, reading = event
        return await _apply(self.app, f"webhook:postmark/{event_id}", raw, reading, fresh=True, provider_says=True)


def webhook_routes(app: App) -> list[Route]:
    """The routes of the configured providers (none without ``[bounces.webhooks.*]``)."""
    b = app.settings.bounces
    if b is None:
        return []
    w = b.webhooks
    handlers: dict[str, _Ses | _Mailgun | _Sendgrid | _Postmark | None] = {
        "ses": _Ses(app, w) if w.ses else None, "mailgun": _Mailgun(app, w) if w.mailgun else None,
        "sendgrid": _Sendgrid(app, w) if w.sendgrid else None, "postmark": _Postmark(app, w) if w.postmark else None,
    }  # fmt: skip
    routes = []
    for name, handler in handlers.items():
        if handler is None:
            continue

        async def endpoint(request: Request, handle: _Handle = handler.handle, name: str = name) -> Response:
            try:
                return await handle(request)
            except _Refused as exc:
                log.warning("webhooks: %s call refused (%d): %s", name, exc.status, exc)
                answer = _answer(exc.status, exc.word)
                if exc.status == 401:
                    answer.headers["WWW-Authenticate"] = f'Basic realm="feedservice {name} webhook"'
                return answer

        routes.append(Route(f"/webhooks/{name}", endpoint, methods=["POST"]))
    return routes
