"""Signed, purpose-bound tokens for links in mail, and keyed address hashes. Pure.

A token is ``<subscriber id>.<expiry or 0>.<HMAC-SHA256>`` in URL-safe base64, the MAC
covering the purpose, the subscriber id, the address's keyed hash and the expiry, so a token
for one purpose or one subscriber is useless for another. Compared in constant time. The
address enters as its hash, so links keep working after an address is forgotten (kept only as
that hash, for suppression).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import datetime


def address_hash(secret: bytes, email: str) -> str:
    """A keyed hash of an address (HMAC, so a list of hashes cannot be reversed by guessing)."""
    return "h1:" + hmac.new(secret, b"address\x00" + email.strip().lower().encode(), hashlib.sha256).hexdigest()[:40]


def new_nonce() -> str:
    return secrets.token_urlsafe(12)


def _mac(secret: bytes, purpose: str, subscriber_id: int, address: str, expires: int) -> str:
    msg = f"{purpose}\x00{subscriber_id}\x00{address}\x00{expires}".encode()
    digest = hmac.digest(secret, msg, "sha256")  # the one-shot form: a third of hmac.new's cost
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def make_token(secret: bytes, purpose: str, subscriber_id: int, address: str, expires: datetime | None = None) -> str:
    exp = int(expires.timestamp()) if expires else 0
    return f"{subscriber_id}.{exp}.{_mac(secret, purpose, subscriber_id, address, exp)}"


def token_subscriber(token: str) -> int | None:
    """The subscriber id a token claims (not yet verified), or None if it is malformed."""
    head = token.split(".", 1)[0]
    return int(head) if head.isdigit() and len(head) < 12 else None


def verify_token(secret: bytes, token: str, purpose: str, subscriber_id: int, address: str, now: datetime) -> bool:
    parts = token.split(".")
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
        return False
    if int(parts[0]) != subscriber_id:
        return False
    exp = int(parts[1])
    if exp and now.timestamp() > exp:
        return False
    return hmac.compare_digest(parts[2], _mac(secret, purpose, subscriber_id, address, exp))
