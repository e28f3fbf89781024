"""Signed, purpose-bound tokens for links in mail and for forms, and keyed address hashes. Pure.

Signing is itsdangerous's ``TimestampSigner`` (HMAC-SHA256, ``hmac`` key derivation): a token is
``<subscriber id>.<signing time>.<signature>``, URL-safe. What a token is for is its *salt*, so
the key that signs it is derived for exactly that use::

    feedservice.<purpose> \\0 <address's keyed hash> \\0 v<token version>

A token for one purpose, one subscriber or one address is therefore useless for another, and the
address enters as its hash, so links keep working after an address is forgotten (kept only as
that hash, for suppression). The token version is a per-subscriber counter the store raises when
a reader leaves: every preferences link mailed before is then dead.

Expiry is decided when a token is verified (``max_age``), not written into it: confirmation links
are checked against 48 hours, unsubscribe and preferences links never expire.

Verification takes several secrets (the current one first, then retired ones), so the signing
secret can be rotated while links already in mailboxes keep working; new tokens are only ever
signed with the current one. Anything that does not look like a token is simply not valid: never
an exception.

Links mailed before this format (``<id>.<expiry or 0>.<HMAC>``, written by hand) keep verifying
until ``LEGACY_UNTIL``, 60 days after the switch: see ``_legacy_valid``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from itsdangerous import BadData, Signer, TimestampSigner

__all__ = [
    "LEGACY_UNTIL",
    "address_hash",
    "address_key_fingerprint",
    "csrf_token",
    "make_token",
    "new_nonce",
    "token_subscriber",
    "verify_csrf",
    "verify_token",
]

MAX_ID_DIGITS = 11  # ids below 10**11
MAX_EXPIRY_DIGITS = 12  # Unix seconds up to the year 33658
MAX_TOKEN_CHARS = 200  # ours are about 55; anything longer is not worth hashing
# The hand-written format (before itsdangerous) is accepted until then: 60 days of mailed links.
LEGACY_UNTIL = datetime(2027, 1, 29, tzinfo=UTC)

Secrets = bytes | Sequence[bytes]


def address_hash(secret: bytes, email: str) -> str:
    """A keyed hash of an address (HMAC, so a list of hashes cannot be reversed by guessing)."""
    return "h1:" + hmac.new(secret, b"address\x00" + email.strip().lower().encode(), hashlib.sha256).hexdigest()[:40]


def address_key_fingerprint(secret: bytes) -> str:
    """What a database keeps of its address key, to know it again: an HMAC of a fixed label, never
    the key. Another key gives another fingerprint; the fingerprint gives no way back to the key."""
    return "k1:" + hmac.new(secret, b"feedservice address key fingerprint\x00", hashlib.sha256).hexdigest()


def new_nonce() -> str:
    return secrets.token_urlsafe(12)


class _Signer(TimestampSigner):
    """A ``TimestampSigner`` whose clock is the caller's ``now`` (the service's clock, which tests
    set), overriding the documented ``get_timestamp`` hook."""

    def __init__(self, keys: Secrets, salt: bytes, now: datetime) -> None:
        # itsdangerous signs with the last key and tries them newest first: ours come current first.
        super().__init__(_newest_last(keys), salt=salt, key_derivation="hmac", digest_method=hashlib.sha256)
        self._now = int(now.timestamp())

    def get_timestamp(self) -> int:
        return self._now


def _newest_last(keys: Secrets) -> list[bytes]:
    return [keys] if isinstance(keys, bytes) else list(reversed(keys))


def _salt(purpose: str, address: str, version: int) -> bytes:
    return f"feedservice.{purpose}\x00{address}\x00v{version}".encode()


def make_token(
    secret: bytes, purpose: str, subscriber_id: int, address: str, *, now: datetime, version: int = 0
) -> str:
    """A token for ``purpose`` (``unsubscribe``, ``preferences``, ``confirm:<nonce>``), signed at ``now``."""
    return _Signer(secret, _salt(purpose, address, version), now).sign(str(subscriber_id)).decode()


def token_subscriber(token: str) -> int | None:
    """The subscriber id a token claims (not yet verified), or None if it is malformed."""
    head = token.split(".", 1)[0]
    return int(head) if _digits(head, MAX_ID_DIGITS) else None


def _digits(text: str, most: int) -> bool:
    """ASCII digits only, at most ``most`` of them (``str.isdigit`` also takes '²' and '١')."""
    return 0 < len(text) <= most and text.isascii() and text.isdigit()


def verify_token(
    secret: Secrets,
    token: str,
    purpose: str,
    subscriber_id: int,
    address: str,
    now: datetime,
    version: int = 0,
    max_age: timedelta | None = None,
) -> bool:
    """True if ``token`` was signed with one of the secrets (current first, then retired ones) for
    exactly this purpose, subscriber, address hash and version, at most ``max_age`` before ``now``."""
    if len(token) > MAX_TOKEN_CHARS or not token.isascii() or token_subscriber(token) != subscriber_id:
        return False
    signer = _Signer(secret, _salt(purpose, address, version), now)
    try:
        seconds = None if max_age is None else int(max_age.total_seconds())
        signer.unsign(token, max_age=seconds)
        return True
    except BadData:
        pass
    return now < LEGACY_UNTIL and _legacy_valid(secret, token, purpose, subscriber_id, address, now, version)


def _csrf_signer(secret: Secrets) -> Signer:
    return Signer(_newest_last(secret), salt=b"feedservice.csrf", key_derivation="hmac", digest_method=hashlib.sha256)


def csrf_token(secret: bytes, cookie: str) -> str:
    """The form field that goes with a CSRF cookie (the signed double-submit pattern)."""
    return _csrf_signer(secret).get_signature(cookie).decode()


def verify_csrf(secret: Secrets, cookie: str, sent: str) -> bool:
    """Whether ``sent`` is the field for ``cookie`` under any of the secrets (current first), so a
    form loaded just before the secret was rotated still posts."""
    return len(sent) <= MAX_TOKEN_CHARS and sent.isascii() and _csrf_signer(secret).verify_signature(cookie, sent)


# -- the hand-written format, verification only; delete after LEGACY_UNTIL ----------------------
def _legacy_mac(secret: bytes, purpose: str, subscriber_id: int, address: str, expires: int, version: int) -> str:
    msg = f"{purpose}\x00{subscriber_id}\x00{address}\x00{expires}".encode()
    if version:
        msg += b"\x00v%d" % version
    return base64.urlsafe_b64encode(hmac.digest(secret, msg, "sha256")).rstrip(b"=").decode()


def _legacy_valid(
    secret: Secrets, token: str, purpose: str, subscriber_id: int, address: str, now: datetime, version: int
) -> bool:
    """``<id>.<expiry or 0>.<HMAC-SHA256 over purpose, id, address hash, expiry[, version]>``: the
    links mailed before itsdangerous signed them (their expiry, if any, is inside the token)."""
    parts = token.split(".")
    if len(parts) != 3 or not _digits(parts[1], MAX_EXPIRY_DIGITS):
        return False
    exp = int(parts[1])
    if exp and now.timestamp() > exp:
        return False
    keys = [secret] if isinstance(secret, bytes) else list(secret)
    found = False
    for key in keys:  # every key, no early exit
        found |= hmac.compare_digest(parts[2], _legacy_mac(key, purpose, subscriber_id, address, exp, version))
    return found
