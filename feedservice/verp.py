"""VERP: an envelope sender per message that names the delivery it belongs to. Pure.

With ``[bounces] return_path = "bounces@newsspace.kr"`` each digest goes out with
``MAIL FROM:<bounces+20261130-1234-k3j5…@newsspace.kr>``. A bounce comes back to that address
(RFC 5321 §4.5.5: to the envelope sender), so whatever its body looks like, its recipient
address says which edition and which subscriber it is about.

The token is ``<edition YYYYMMDD>-<subscriber id>-<MAC>``: the MAC is HMAC-SHA256 over the
purpose, the day and the id with the site's signing secret, cut to 80 bits and written in
lower-case base32 (MTAs and mailbox software may change the case of a local part; digits, lower
case letters and '-' survive every hop). A stranger who mails our bounce address cannot name a
delivery: a forged or altered token verifies as nothing, never as someone else's delivery.

The token does not depend on the return path itself: the address may move to another mailbox
or domain and tokens already out there still verify. Retired secrets are accepted too, so the
secret can be rotated while bounces of mail signed before are still arriving. The longest token
is 38 characters; with ``bounces+`` the local part stays within RFC 5321's 64 octets.
"""

from __future__ import annotations

import base64
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

__all__ = ["MAX_TOKEN", "DeliveryRef", "envelope_sender", "make_verp_token", "read_verp_address", "read_verp_token"]

MAX_LOCAL_PART = 64  # RFC 5321 §4.5.3.1.1
MAX_ID_DIGITS = 11  # ids below 10**11, as in tokens.py
_MAC_CHARS = 16  # 80 bits in base32
MAX_TOKEN = 8 + 1 + MAX_ID_DIGITS + 1 + _MAC_CHARS  # 37
_TOKEN = re.compile(rf"(\d{{8}})-(\d{{1,{MAX_ID_DIGITS}}})-([a-z2-7]{{{_MAC_CHARS}}})")


@dataclass(frozen=True)
class DeliveryRef:
    """The delivery a bounce is about: one edition, one subscriber."""

    edition: date
    subscriber_id: int


def _mac(secret: bytes, day: date, subscriber_id: int) -> str:
    digest = hmac.digest(secret, f"verp\x00{day:%Y%m%d}\x00{subscriber_id}".encode(), "sha256")
    return base64.b32encode(digest[:10]).decode().lower()


def make_verp_token(secret: bytes, day: date, subscriber_id: int) -> str:
    if not 0 < subscriber_id < 10**MAX_ID_DIGITS:
        raise ValueError(f"subscriber id out of range: {subscriber_id}")
    return f"{day:%Y%m%d}-{subscriber_id}-{_mac(secret, day, subscriber_id)}"


def envelope_sender(return_path: str, secret: bytes, day: date, subscriber_id: int) -> str:
    """``local+token@domain`` for the return path ``local@domain``."""
    local, _, domain = return_path.rpartition("@")
    address = f"{local}+{make_verp_token(secret, day, subscriber_id)}@{domain}"
    if len(address.rpartition("@")[0].encode()) > MAX_LOCAL_PART:  # config refuses such a return path
        raise ValueError(f"the return path's local part is too long for a VERP token: {return_path!r}")
    return address


def read_verp_token(secrets: bytes | Sequence[bytes], token: str) -> DeliveryRef | None:
    """The delivery a token names, if one of ``secrets`` made it; None for anything else."""
    m = _TOKEN.fullmatch(token.strip().lower())
    if m is None:
        return None
    try:
        day = date(int(m[1][:4]), int(m[1][4:6]), int(m[1][6:]))
    except ValueError:
        return None
    sub = int(m[2])
    keys = [secrets] if isinstance(secrets, bytes) else list(secrets)
    found = False
    for key in keys:  # every key, no early exit: the time does not tell which one matched
        found |= hmac.compare_digest(m[3], _mac(key, day, sub))
    return DeliveryRef(day, sub) if found and sub > 0 else None


def read_verp_address(secrets: bytes | Sequence[bytes], address: str) -> DeliveryRef | None:
    """The delivery named by an address such as ``bounces+<token>@domain`` (any local name before
    the '+', any domain), or None."""
    local = address.strip().strip("<>").rpartition("@")[0]
    if "+" not in local:
        return None
    return read_verp_token(secrets, local.rpartition("+")[2])
