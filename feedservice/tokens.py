"""Signed, purpose-bound tokens for links in mail, and keyed address hashes. Pure.

A token is ``<subscriber id>.<expiry or 0>.<HMAC-SHA256>`` in URL-safe base64, the MAC
covering the purpose, the subscriber id, the address's keyed hash, the expiry and the
subscriber's token version, so a token for one purpose or one subscriber is useless for another.
Compared in constant time. The address enters as its hash, so links keep working after an
address is forgotten (kept only as that hash, for suppression).

The token version is a per-subscriber counter the store raises when a reader leaves: every
preferences link mailed before is then dead. Version 0 adds nothing to the MAC, so links made
before versions existed still verify.

Verification takes several secrets (the current one first, then retired ones), so the signing
secret can be rotated while links already in mailboxes keep working; new tokens are only ever
signed with the current one. Anything that does not look like a token (wrong shape, a number
too long to be an id or a timestamp) is simply not valid: never an exception.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from datetime import datetime

MAX_ID_DIGITS = 11  # ids below 10**11
MAX_EXPIRY_DIGITS = 12  # Unix seconds up to the year 33658


def address_hash(secret: bytes, email: str) -> str:
    """A keyed hash of an address (HMAC, so a list of hashes cannot be reversed by guessing)."""
    return "h1:" + hmac.new(secret, b"address\x00" + email.strip().lower().encode(), hashlib.sha256).hexdigest()[:40]


def new_nonce() -> str:
    return secrets.token_urlsafe(12)


def _mac(secret: bytes, purpose: str, subscriber_id: int, address: str, expires: int, version: int = 0) -> str:
    msg = f"{purpose}\x00{subscriber_id}\x00{address}\x00{expires}".encode()
    if version:
        msg += b"\x00v%d" % version
    digest = hmac.digest(secret, msg, "sha256")  # the one-shot form: a third of hmac.new's cost
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def make_token(
    secret: bytes, purpose: str, subscriber_id: int, address: str, expires: datetime | None = None, version: int = 0
) -> str:
    exp = int(expires.timestamp()) if expires else 0
    return f"{subscriber_id}.{exp}.{_mac(secret, purpose, subscriber_id, address, exp, version)}"


def token_subscriber(token: str) -> int | None:
    """The subscriber id a token claims (not yet verified), or None if it is malformed."""
    head = token.split(".", 1)[0]
    return int(head) if _digits(head, MAX_ID_DIGITS) else None


def _digits(text: str, most: int) -> bool:
    """ASCII digits only, at most ``most`` of them (``str.isdigit`` also takes '²' and '١')."""
    return 0 < len(text) <= most and text.isascii() and text.isdigit()


def verify_token(
    secret: bytes | Sequence[bytes],
    token: str,
    purpose: str,
    subscriber_id: int,
    address: str,
    now: datetime,
    version: int = 0,
) -> bool:
    """True if ``token`` was made by ``make_token`` with one of the secrets (current first, then
    retired ones) for exactly this purpose, subscriber, address hash and version, unexpired."""
    parts = token.split(".")
    if len(parts) != 3 or not _digits(parts[0], MAX_ID_DIGITS) or not _digits(parts[1], MAX_EXPIRY_DIGITS):
        return False
    if int(parts[0]) != subscriber_id:
        return False
    exp = int(parts[1])
    if exp and now.timestamp() > exp:
        return False
    keys = [secret] if isinstance(secret, bytes) else list(secret)
    # Every key is tried (no early exit), so the time taken does not tell which one matched.
    found = False
    for key in keys:
        found |= hmac.compare_digest(parts[2], _mac(key, purpose, subscriber_id, address, exp, version))
    return found
