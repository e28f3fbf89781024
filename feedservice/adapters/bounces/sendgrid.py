"""SendGrid's Event Webhook (bounces, blocks, spam reports), signed with ECDSA.

With signature verification on, SendGrid sends ``X-Twilio-Email-Event-Webhook-Signature``: a
base64 ECDSA (P-256, SHA-256) signature, in DER, over the ``X-Twilio-Email-Event-Webhook-Timestamp``
header followed by the raw request body; the public key is shown base64 (DER SubjectPublicKeyInfo)
in SendGrid's settings. The signature covers the body and the timestamp, so a replay carries events
whose ``sg_event_id`` was recorded before (acknowledged, nothing changes) or is stale (refused by age).

One call carries a batch of events; ``sendgrid_events`` gives each bounce or complaint with its
event id as a ``BounceReading``, for the same bounce check as returned mail.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from feedservice.bounce_model import BounceKind, BounceReading, status_kind

__all__ = ["SendgridRefused", "load_sendgrid_key", "sendgrid_events", "verify_sendgrid"]

MAX_EVENTS = 1000


class SendgridRefused(Exception):
    """This call is not believed (the reason is logged, never sent back)."""


def load_sendgrid_key(text: str) -> ec.EllipticCurvePublicKey:
    """The verification key as SendGrid shows it (base64 DER); ``ValueError`` if it is not one."""
    key = load_der_public_key(base64.b64decode("".join(text.split()), validate=True))
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("not an elliptic-curve public key")
    return key


def verify_sendgrid(key: ec.EllipticCurvePublicKey, signature: str | None, timestamp: str | None, body: bytes) -> int:
    """The timestamp, if SendGrid signed this body at it; ``SendgridRefused`` otherwise. Whether it is
    fresh is the caller's to ask (after whether the events were recorded: a replay)."""
    if not signature or not timestamp:
        raise SendgridRefused("unsigned")
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12) or len(signature) > 512:
        raise SendgridRefused("malformed signature headers")
    try:
        key.verify(base64.b64decode(signature, validate=True), timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, binascii.Error, ValueError):
        raise SendgridRefused("wrong signature") from None
    return int(timestamp)


def _text(value: Any, limit: int = 300) -> str:
    return " ".join(value.split())[:limit] if isinstance(value, str) else ""


def _reading(event: dict[str, Any]) -> BounceReading | None:
    kind = event.get("event")
    email = event.get("email")
    recipients = (email,) if isinstance(email, str) else ()
    smtp_id = event.get("smtp-id")
    ids = (smtp_id.strip(),) if isinstance(smtp_id, str) and smtp_id.strip() else ()
    if kind == "spamreport":
        return BounceReading(BounceKind.COMPLAINT, recipients, None, "abuse", (), ids)
    if kind != "bounce":  # delivered, deferred (SendGrid still retries), dropped (its own suppression), …
        return None
    status = _text(event.get("status"), 20) or None
    found = status_kind(status) if status else None
    if found is None:  # no code: a "blocked" bounce is temporary by SendGrid's account, a "bounce" final
        found = BounceKind.SOFT if event.get("type") == "blocked" else BounceKind.HARD
    return BounceReading(found, recipients, status, _text(event.get("reason")), (), ids)


def sendgrid_events(body: Any) -> list[tuple[str, BounceReading, dict[str, Any]]]:
    """(sg_event_id, reading, the event) of each bounce and spam report in the batch; ``ValueError`` when the
    body is not a list of events or one of them has no event id."""
    if not isinstance(body, list) or len(body) > MAX_EVENTS:
        raise ValueError("not a batch of events")
    out = []
    for event in body:
        if not isinstance(event, dict):
            raise ValueError("an event is not an object")
        reading = _reading(event)
        if reading is None:
            continue
        event_id = event.get("sg_event_id")
        if not isinstance(event_id, str) or not 0 < len(event_id) <= 200:
            raise ValueError("an event without its sg_event_id")
        out.append((event_id, reading, event))
    return out
