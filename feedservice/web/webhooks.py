"""``POST /webhooks/{provider}``: bounces and complaints that providers report over HTTP.

Each route reads the call and hands it to its provider's receiver (``ports.WebhookReceiver``, which
``bootstrap.App.webhook_receivers`` builds from ``adapters/bounces/webhooks.py``): the receiver
believes a call only when its provider signed it and turns it into events. This module refuses a
replay (an event id recorded before; a timestamp too old is the receiver's) and hands the events
to the same bounce check as returned mail (``App.check_events``): the same matching (VERP
envelope, Message-ID, recipient), policy, breaker and records. Every route reads at most
``[bounces.webhooks] max_body_bytes`` (else 413); a body that is not the JSON expected — deeply
nested, huge numbers, wrong types — is a 400; no answer says more than a word, the reason goes to
the log.

    200  applied, or nothing to do (an event that is not a bounce or complaint)
    400  not the JSON expected        403  unsigned, wrongly signed, untrusted certificate or topic
    409  a replay (recorded before)   413  body too big
    503  not recorded (the store failed, or the breaker held it): the provider retries later
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
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
    """The events not recorded before, in one bounce check (one breaker for a batch); 409 when
    every one of them was recorded before."""
    if not events:
        return _answer(200, "ok")
    new = [e for e in events if not await run_in_threadpool(app.store.bounce_source_known, e.source)]
    if not new:
        raise WebhookRefused(409, "replayed", f"{', '.join(e.source for e in events)[:300]} recorded before")
    report = await run_in_threadpool(app.check_events, new)
    if report.errors or report.held:
        log.error("webhooks: %s not recorded: %s", new[0].source, report.summary())
        return _answer(503, "try later")
    log.info("webhooks: %s: %s", new[0].source, report.summary())
    return _answer(200, "ok")


def _route(app: App, receiver: WebhookReceiver, limit: int) -> Route:
    async def endpoint(request: Request) -> Response:
        try:
            raw, body = await _read_json(request, limit)
            return await _apply(app, await receiver.receive(request.headers, raw, body))
        except WebhookRefused as exc:
            log.warning("webhooks: %s call refused (%d): %s", receiver.name, exc.status, exc)
            return _answer(exc.status, exc.word)

    return Route(f"/webhooks/{receiver.name}", endpoint, methods=["POST"])


def webhook_routes(app: App) -> list[Route]:
    """The routes of the configured providers (none without ``[bounces.webhooks.*]``)."""
    b = app.settings.bounces
    if b is None:
        return []
    return [_route(app, receiver, b.webhooks.max_body_bytes) for receiver in app.webhook_receivers()]
