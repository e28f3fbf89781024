"""Signed, purpose-bound tokens for links in mail (unsubscribe, preferences, confirm). Pure.

A token is ``<subscriber id>.<expiry or 0>.<HMAC-SHA256>`` in URL-safe base64, the MAC
covering the purpose, the subscriber id, the address and the expiry, so a token for
one purpose or one subscriber is useless for another. Compared in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime


def _mac(secret: bytes, purpose: str, subscriber_id: int, email: str, expires: int) -> str:
    msg = f"{purpose}\x00{subscriber_id}\x00{email.lower()}\x00{expires}".encode()
    digest = hmac.new(secret, msg, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def make_token(secret: bytes, purpose: str, subscriber_id: int, email: str, expires: datetime | None = None) -> str:
    exp = int(expires.timestamp()) if expires else 0
    return f"{subscriber_id}.{exp}.{_mac(secret, purpose, subscriber_id, email, exp)}"


def token_subscriber(token: str) -> int | None:
    """The subscriber id a token claims (not yet verified), or None if it is malformed."""
    head = token.split(".", 1)[0]
    return int(head) if head.isdigit() and len(head) < 12 else None


def verify_token(secret: bytes, token: str, purpose: str, subscriber_id: int, email: str, now: datetime) -> bool:
    parts = token.split(".")
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
        return False
    if int(parts[0]) != subscriber_id:
        return False
    exp = int(parts[1])
    if exp and now.timestamp() > exp:
        return False
    return hmac.compare_digest(parts[2], _mac(secret, purpose, subscriber_id, email, exp))
