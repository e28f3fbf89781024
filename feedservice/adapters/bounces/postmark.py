"""Postmark's webhooks (Bounce, SpamComplaint, SubscriptionChange), behind HTTP Basic auth.

Postmark signs nothing: it protects a webhook with the credentials written into its URL
(``https://<username>:<password>@host/webhooks/postmark``, sent as ``Authorization: Basic``) and
with its published source addresses (Postmark, "Webhooks overview": "Protecting your webhook").
So a call is believed only with the configured username and password, compared in constant time;
over HTTPS the whole call, body included, is then Postmark's. Postmark retries what is not
answered 200 (about 10 hours) and stops at a 403, so a refusal of the credentials is a 401: a
password being rotated does not lose events.

``postmark_event`` turns a record into the provider's event id and the same ``BounceReading`` a
returned mail gives:

    Bounce, Type HardBounce, BadEmailAddress          hard (policy, if its code says 5.7.x and the like)
    Bounce, Type SoftBounce, Transient, DnsError      soft
    Bounce, Type Blocked, DMARCPolicy, SpamNotification   policy: about how we send
    Bounce, Type AutoResponder                        auto-reply
    Bounce, Type SpamComplaint; SpamComplaint         complaint
    Bounce, any other Type                            kept for a person
    SubscriptionChange, SuppressSending true          by SuppressionReason: HardBounce → hard,
                                                      SpamComplaint → complaint, else kept for a person
    SubscriptionChange (a reactivation), anything else   nothing to do
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from typing import Any

from feedservice.bounce_model import BounceKind, BounceReading, status_kind

__all__ = ["PostmarkRefused", "postmark_event", "verify_postmark"]

_HARD = {"HardBounce", "BadEmailAddress"}
_SOFT = {"SoftBounce", "Transient", "DnsError"}
_POLICY = {"Blocked", "DMARCPolicy", "SpamNotification"}
_CODE = re.compile(r"\b([45]\.\d{1,3}\.\d{1,3})\b")


class PostmarkRefused(Exception):
    """This call is not believed (the reason is logged, never sent back)."""


def verify_postmark(authorization: str | None, username: str, password: str) -> None:
    """Return if ``authorization`` (the header) carries these Basic credentials; else ``PostmarkRefused``."""
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic" or not encoded or len(encoded) > 1024:
        raise PostmarkRefused("no Basic credentials")
    try:
        user, sep, given = base64.b64decode(encoded.strip(), validate=True).partition(b":")
    except (binascii.Error, ValueError):
        raise PostmarkRefused("malformed Basic credentials") from None
    # Both compared whole, whatever the first says: the time taken tells nothing about either.
    same_user = hmac.compare_digest(user, username.encode())
    same_password = hmac.compare_digest(given, password.encode())
    if not (sep and same_user and same_password):
        raise PostmarkRefused("wrong credentials")


def _text(value: Any, limit: int = 300) -> str:
    return " ".join(value.split())[:limit] if isinstance(value, str) else ""


def _bounce_kind(kind: str, status: str | None) -> BounceKind:
    if kind in _HARD:
        return BounceKind.POLICY if status and status_kind(status) is BounceKind.POLICY else BounceKind.HARD
    if kind in _SOFT:
        return BounceKind.SOFT
    if kind in _POLICY:
        return BounceKind.POLICY
    if kind == "AutoResponder":
        return BounceKind.AUTO_REPLY
    if kind == "SpamComplaint":
        return BounceKind.COMPLAINT
    return BounceKind.UNKNOWN


def postmark_event(body: Any) -> tuple[str, BounceReading] | None:
    """(event id, reading) of a Bounce, SpamComplaint or SubscriptionChange record; None for a record
    with nothing to do (deliveries, opens, reactivations). ``ValueError`` when it is not a record."""
    if not isinstance(body, dict) or not isinstance(body.get("RecordType"), str):
        raise ValueError("not a Postmark webhook record")
    record = body["RecordType"]
    mid = body.get("MessageID")
    ids = (f"<{mid.strip('<>')}>", mid.strip("<>")) if isinstance(mid, str) and mid.strip("<> ") else ()
    subject = _text(body.get("Subject"), 200)
    if record in ("Bounce", "SpamComplaint"):
        bounce_id, email = body.get("ID"), body.get("Email")
        if not isinstance(bounce_id, int) or isinstance(bounce_id, bool) or not isinstance(email, str):
            raise ValueError("a bounce record without its ID or Email")
        kind = "SpamComplaint" if record == "SpamComplaint" else _text(body.get("Type"), 40)
        details = _text(body.get("Details")) or _text(body.get("Description"))
        found = _CODE.search(details)
        status = found[1] if found else None
        reading = BounceReading(_bounce_kind(kind, status), (email,), status, details or kind, (), ids, subject)
        return f"bounce-{bounce_id}", reading
    if record != "SubscriptionChange" or body.get("SuppressSending") is not True:
        return None
    recipient, reason = body.get("Recipient"), body.get("SuppressionReason")
    if not isinstance(recipient, str):
        raise ValueError("a subscription change without its Recipient")
    kind = {"HardBounce": BounceKind.HARD, "SpamComplaint": BounceKind.COMPLAINT}.get(str(reason), BounceKind.UNKNOWN)
    detail = f"Postmark suppressed the address: {_text(reason, 40) or 'no reason'} (by {_text(body.get('Origin'), 40)})"
    # No id of its own: the change is named by what it says, so Postmark's retry of it is the same event.
    said = json.dumps([recipient, body.get("ChangedAt"), reason, body.get("MessageStream")], default=str)
    return f"change-{hashlib.sha256(said.encode()).hexdigest()[:32]}", BounceReading(
        kind, (recipient,), None, detail, (), ids
    )
