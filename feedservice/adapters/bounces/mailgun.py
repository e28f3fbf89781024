"""Mailgun's webhooks (bounces, temporary failures, complaints), signed with the webhook signing key.

Mailgun signs each call: ``signature`` is the hex HMAC-SHA256, keyed with the account's webhook
signing key, of ``timestamp`` followed by ``token`` (Mailgun, "Securing webhooks"). The signature
does not cover the event, so a captured call could be replayed with another body: the receiver
binds every fresh call's token to ``call_digest`` of its body in the database (ignored events
too: a captured "delivered" call must not carry a forged bounce) and refuses the token with
another body, whichever web worker the replay reaches; the caller acknowledges a token recorded
before, and believes a new one only with a fresh timestamp.

``mailgun_reading`` turns the event into the same ``BounceReading`` a returned mail gives.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from feedservice.bounce_model import BounceKind, BounceReading, status_kind

__all__ = ["MailgunRefused", "call_digest", "mailgun_reading", "verify_mailgun"]


class MailgunRefused(Exception):
    """This call is not believed (the reason is logged, never sent back)."""


def call_digest(body: Mapping[str, Any]) -> str:
    """SHA-256 of what a call said, as JSON with sorted keys: the same event however it is spaced
    or ordered (a retry), another event under the same token (a forgery) differs. A lone surrogate
    (valid JSON, no UTF-8) is hashed as it came, not a 500."""
    said = json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8", "surrogatepass")
    return hashlib.sha256(said).hexdigest()


def verify_mailgun(body: Mapping[str, Any], key: bytes) -> tuple[str, int]:
    """The call's token and timestamp if its signature is Mailgun's; ``MailgunRefused`` otherwise.
    Whether it is fresh is the caller's to ask (after whether the token was recorded: a replay)."""
    sig = body.get("signature")
    if not isinstance(sig, dict):
        raise MailgunRefused("unsigned")
    timestamp, token, signature = sig.get("timestamp"), sig.get("token"), sig.get("signature")
    if not (isinstance(timestamp, str) and isinstance(token, str) and isinstance(signature, str)):
        raise MailgunRefused("unsigned")
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12) or not 0 < len(token) <= 200:
        raise MailgunRefused("malformed signature fields")
    if not signature.isascii():  # hex; compare_digest refuses other strings with a TypeError
        raise MailgunRefused("malformed signature fields")
    try:
        signed = (timestamp + token).encode()
    except UnicodeEncodeError:  # a lone surrogate: valid JSON, no UTF-8, and so never Mailgun's
        raise MailgunRefused("malformed signature fields") from None
    expected = hmac.new(key, signed, "sha256").hexdigest()
    if not hmac.compare_digest(expected, signature.lower()):
        raise MailgunRefused("wrong signature")
    return token, int(timestamp)


def _text(value: Any, limit: int = 300) -> str:
    return " ".join(value.split())[:limit] if isinstance(value, str) else ""


def mailgun_reading(event: Any) -> BounceReading | None:
    """What an ``event-data`` object says; None for events that are neither a failure nor a
    complaint (delivered, opened, …). ``ValueError`` when it is not an event."""
    if not isinstance(event, dict):
        raise ValueError("event-data is not an object")
    kind = event.get("event")
    recipient = event.get("recipient")
    recipients = (recipient,) if isinstance(recipient, str) else ()
    envelope: tuple[str, ...] = ()
    env = event.get("envelope")
    if isinstance(env, dict) and isinstance(env.get("sender"), str):
        envelope = (env["sender"],)
    ids: tuple[str, ...] = ()
    subject = ""
    message = event.get("message")
    headers = message.get("headers") if isinstance(message, dict) else None
    if isinstance(headers, dict):
        mid = headers.get("message-id")
        if isinstance(mid, str) and mid.strip():
            bare = mid.strip().strip("<>")
            ids = (f"<{bare}>", bare)  # Mailgun writes it without the angle brackets
        subject = _text(headers.get("subject"), 200)
    if kind == "complained":
        return BounceReading(BounceKind.COMPLAINT, recipients, None, "abuse", envelope, ids, subject)
    if kind != "failed":
        return None
    status_obj = event.get("delivery-status")
    status_obj = status_obj if isinstance(status_obj, dict) else {}
    code = status_obj.get("enhanced-code")
    status = code if isinstance(code, str) and status_kind(code) is not None else None
    detail = _text(status_obj.get("message")) or _text(status_obj.get("description")) or _text(event.get("reason"))
    severity = event.get("severity")
    if severity == "permanent":
        found = BounceKind.POLICY if status and status_kind(status) is BounceKind.POLICY else BounceKind.HARD
    elif severity == "temporary":
        found = BounceKind.SOFT
    else:
        found = BounceKind.UNKNOWN
    return BounceReading(found, recipients, status, detail, envelope, ids, subject)
