"""``POST /webhooks/{provider}``: bounces and complaints that providers report over HTTP.

Each route lets the caller in (``admit``: Postmark's Basic credentials, before the body is read),
reads the call and hands it to its provider's receiver (``ports.WebhookReceiver``, which
``bootstrap.App.webhook_receivers`` builds from ``adapters/bounces/webhooks.py``: SES via SNS,
Mailgun, SendGrid, Postmark): the receiver believes a call only when its provider signed it and
turns it into events. Providers deliver at least once and retry whatever is not answered 2xx (SNS
on 5xx, Mailgun for 8 hours, SendGrid for 24), so an event whose id was recorded before is
acknowledged (200) and changes nothing, whatever its age; a new one is believed only from a fresh
call (``ProviderEvent.fresh``, the receiver's judgement). The new events go to the same bounce
check as returned mail (``App.check_events``): the same matching (VERP envelope, Message-ID,
recipient), policy, breaker and records. When the breaker trips (too many suppressions within a
day, across calls), the events are recorded with their suppressions held for an operator
(``bounces check --force``) and acknowledged: a 503 would be retried only for a while (SNS gives
up within minutes), and what is not retried is lost. Every route reads at most ``[bounces.webhooks]
max_body_bytes`` (else 413); a body that is not the JSON expected — deeply nested, huge numbers,
wrong types — is a 400; no answer says more than a word, the reason goes to the log.

    200  applied; a replay (recorded before: nothing changes); or nothing to do (not a bounce or complaint)
    400  not the JSON expected        403  unsigned, wrongly signed, stale, untrusted certificate or topic
    401  Postmark: no or wrong credentials (Postmark retries it; a 403 would make it stop)
    413  body too big                 503  not recorded (the store failed): the provider retries
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from feedservice.bootstrap import App
from feedservice.bounce_model import ProviderEvent
from feedservice.errors import WebhookRefused
from feedservice.ports import WebhookReceiver

__all__ = ["webhook_routes"]

log = logging.getLogger(__name__)


def _answer(status: int, word: str) -> Response:
    return PlainTextResponse(word + "\n", status_code=status)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def _read_json(request: Request, limit: int) -> tuple[bytes, Any]:
    """The body (at most ``limit`` bytes) and its JSON; ``WebhookRefused`` with 413 or 400."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise WebhookRefused(413, "too large", f"declared {declared} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise WebhookRefused(413, "too large", f"over {limit} bytes")
    try:
        return bytes(body), json.loads(bytes(body), parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, >4300-digit numbers, deep nesting
        raise WebhookRefused(400, "bad request", f"not JSON: {exc.__class__.__name__}") from None


async def _apply(app: App, events: list[ProviderEvent]) -> Response:
    """The events not recorded before, in one bounce check (one breaker for a batch). When every
    one was recorded before, the call is a replay (a provider's retry, or someone repeating it):
    acknowledged, so the provider stops, and nothing changes. New events need a fresh call."""
    if not events:
        return _answer(200, "ok")
    new = [e for e in events if not await run_in_threadpool(app.store.bounce_source_known, e.source)]
    if not new:
        names = ", ".join(e.source for e in events)[:300]
        log.info("webhooks: %s recorded before: acknowledged, nothing changed", names)
        return _answer(200, "ok")
    if not all(e.fresh for e in new):
        raise WebhookRefused(403, "refused", f"stale timestamp: {new[0].source} not applied")
    report = await run_in_threadpool(app.check_events, new)
    if report.errors or (report.held and not report.withheld):
        log.error("webhooks: %s not recorded: %s", new[0].source, report.summary())
        return _answer(503, "try later")
    if report.withheld:  # recorded, so the provider may stop: an operator releases them
        log.error("webhooks: %s recorded, suppression held: %s", new[0].source, report.summary())
        return _answer(200, "ok")
    log.info("webhooks: %s: %s", new[0].source, report.summary())
    return _answer(200, "ok")


def _route(app: App, receiver: WebhookReceiver, limit: int) -> Route:
    async def endpoint(request: Request) -> Response:
        try:
            receiver.admit(request.headers)  # before the body is read: a stranger's call costs nothing
            raw, body = await _read_json(request, limit)
            return await _apply(app, await receiver.receive(request.headers, raw, body))
        except WebhookRefused as exc:
            log.warning("webhooks: %s call refused (%d): %s", receiver.name, exc.status, exc)
            answer = _answer(exc.status, exc.word)
            answer.headers.update(exc.headers)
            return answer
        except ClientDisconnect:  # gone mid-body, or cut off as too slow or by a stop (httplimits logs that)
            return _answer(400, "bad request")

    return Route(f"/webhooks/{receiver.name}", endpoint, methods=["POST"])


def webhook_routes(app: App) -> list[Route]:
    """The routes of the configured providers (none without ``[bounces.webhooks.*]``)."""
    b = app.settings.bounces
    if b is None:
        return []
    return [_route(app, receiver, b.webhooks.max_body_bytes) for receiver in app.webhook_receivers()]
