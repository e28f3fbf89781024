"""Amazon SES bounce and complaint notifications, delivered through Amazon SNS over HTTP(S).

An SNS message is believed only when its signature verifies (AWS, "Verifying the signatures of
Amazon SNS messages"): the string to sign is ``Key\\nValue\\n`` for, in this order,

    Notification                Message, MessageId, Subject (if present), Timestamp, TopicArn, Type
    (Un)SubscriptionConfirmation Message, MessageId, SubscribeURL, Timestamp, Token, TopicArn, Type

signed with RSA PKCS#1 v1.5 over SHA-1 (``SignatureVersion`` 1) or SHA-256 (2), by the key in the
X.509 certificate at ``SigningCertURL``. That URL is in the message, so a forger names their own
certificate: it is fetched only from under a trusted prefix (by default what AWS documents,
``https://sns.<region>.amazonaws.com/``), with a timeout and a size cap, and cached.

Nothing here decides what a bounce does to a reader: ``ses_reading`` turns an SES event into the
same ``BounceReading`` a returned mail gives, and the bounce service applies the one policy.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from feedservice.bounce_model import BounceKind, BounceReading, status_kind

__all__ = ["AWS_CERT_HOST", "CertificateCache", "SnsRefused", "cert_url_trusted", "ses_reading", "string_to_sign"]

log = logging.getLogger(__name__)

# AWS documents certificate URLs as https://sns.<region>.amazonaws.com/… (.com.cn in China).
AWS_CERT_HOST = re.compile(r"sns\.[a-z]{2}(?:-[a-z]+)+-\d\.amazonaws\.com(?:\.cn)?")
MAX_CERT_BYTES = 16 * 1024
_NOTIFICATION = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_CONFIRMATION = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
MESSAGE_TYPES = ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation")


class SnsRefused(Exception):
    """This message is not believed (the reason is logged, never sent back)."""


def string_to_sign(message: Mapping[str, Any]) -> bytes:
    """The canonical string SNS signs for this message's type; ``SnsRefused`` if a field is missing
    or not a string."""
    kind = message.get("Type")
    if kind not in MESSAGE_TYPES:
        raise SnsRefused(f"unknown message type {str(kind)[:40]!r}")
    fields = _NOTIFICATION if kind == "Notification" else _CONFIRMATION
    out = []
    for key in fields:
        value = message.get(key)
        if value is None and key == "Subject":
            continue
        if not isinstance(value, str):
            raise SnsRefused(f"{key} missing or not a string")
        out.append(f"{key}\n{value}\n")
    return "".join(out).encode()


def cert_url_trusted(url: object, prefixes: Sequence[str]) -> bool:
    """Whether ``url`` may be fetched as a signing certificate (or visited as a SubscribeURL).

    Compared parsed, not as text: scheme, host and port exactly, and the path under the prefix's
    path; a URL with user info or a fragment is never trusted. With no prefixes configured, only
    ``https://sns.<region>.amazonaws.com/`` is."""
    if not isinstance(url, str) or len(url) > 2048:
        return False
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError:
        return False
    if u.username is not None or u.password is not None or u.fragment or "\\" in url:
        return False
    if not prefixes:
        return u.scheme == "https" and port in (None, 443) and bool(AWS_CERT_HOST.fullmatch(u.hostname or ""))
    for prefix in prefixes:
        p = urlsplit(prefix)
        if (u.scheme, u.hostname, port) == (p.scheme, p.hostname, p.port) and u.path.startswith(p.path or "/"):
            return True
    return False


class CertificateCache:
    """Signing certificates' public keys by URL; fetched once each through ``fetch`` (which
    returns the body, at most ``MAX_CERT_BYTES``, or raises)."""

    def __init__(self, fetch: Callable[[str], Awaitable[bytes]], prefixes: Sequence[str], size: int = 32) -> None:
        self._fetch, self.prefixes, self._size = fetch, tuple(prefixes), size
        self._keys: dict[str, rsa.RSAPublicKey] = {}

    async def key(self, url: object) -> rsa.RSAPublicKey:
        if not cert_url_trusted(url, self.prefixes):
            raise SnsRefused(f"certificate URL not trusted: {str(url)[:200]}")
        assert isinstance(url, str)
        found = self._keys.get(url)
        if found is not None:
            return found
        try:
            pem = await self._fetch(url)
            cert = x509.load_pem_x509_certificate(pem)
        except Exception as exc:  # any failure to get a certificate refuses this one message
            raise SnsRefused(f"no certificate from {url[:200]}: {exc.__class__.__name__}") from exc
        public = cert.public_key()
        if not isinstance(public, rsa.RSAPublicKey):
            raise SnsRefused(f"the certificate at {url[:200]} has no RSA key")
        if len(self._keys) >= self._size:
            self._keys.pop(next(iter(self._keys)))
        self._keys[url] = public
        return public

    async def verify(self, message: Mapping[str, Any]) -> None:
        """Return if ``message`` is signed by SNS; raise ``SnsRefused`` otherwise."""
        algorithm = _HASHES.get(str(message.get("SignatureVersion")))
        if algorithm is None:
            raise SnsRefused("unknown SignatureVersion")
        signature = message.get("Signature")
        if not isinstance(signature, str) or len(signature) > 2048:
            raise SnsRefused("no signature")
        try:
            raw = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise SnsRefused("signature is not base64") from exc
        text = string_to_sign(message)
        key = await self.key(message.get("SigningCertURL"))
        try:
            key.verify(raw, text, padding.PKCS1v15(), algorithm())
        except InvalidSignature as exc:
            raise SnsRefused("wrong signature") from exc


def _dicts(value: Any, limit: int = 50) -> list[dict[str, Any]]:
    return [v for v in value[:limit] if isinstance(v, dict)] if isinstance(value, list) else []


def _message_ids(mail: Mapping[str, Any]) -> tuple[str, ...]:
    ids: list[str] = []
    common = mail.get("commonHeaders")
    if isinstance(common, dict) and isinstance(common.get("messageId"), str):
        ids.append(common["messageId"])
    headers = mail.get("headers")
    if isinstance(headers, list):
        for h in headers[:200]:
            if not isinstance(h, dict) or str(h.get("name", "")).lower() != "message-id":
                continue
            if isinstance(h.get("value"), str):
                ids.append(h["value"])
    return tuple(dict.fromkeys(i.strip() for i in ids if i.strip()))


def _part(
    event: dict[str, Any], key: str, people_key: str
) -> tuple[dict[str, Any], list[dict[str, Any]], tuple[str, ...]]:
    """The event's ``bounce`` or ``complaint`` object, its recipients' objects and their addresses."""
    part = event.get(key)
    if not isinstance(part, dict):
        raise ValueError(f"no {key} object")
    people = _dicts(part.get(people_key))
    return part, people, tuple(r["emailAddress"] for r in people if isinstance(r.get("emailAddress"), str))


def ses_reading(message_text: str) -> BounceReading | None:
    """What an SES notification (SNS ``Message``) says, as a ``BounceReading``; None for what is
    neither a bounce nor a complaint (deliveries, sends). ``ValueError`` when it is not SES JSON."""
    event = json.loads(message_text)
    if not isinstance(event, dict):
        raise ValueError("not a JSON object")
    kind = event.get("notificationType", event.get("eventType"))
    mail = event.get("mail")
    if not isinstance(mail, dict):
        mail = {}
    envelope = tuple(a for a in (mail.get("source"),) if isinstance(a, str))
    ids = _message_ids(mail)
    subject = ""
    common = mail.get("commonHeaders")
    if isinstance(common, dict) and isinstance(common.get("subject"), str):
        subject = common["subject"][:200]
    if kind == "Bounce":
        bounce, people, recipients = _part(event, "bounce", "bouncedRecipients")
        status = next((r["status"][:20] for r in people if isinstance(r.get("status"), str)), None)
        detail = next((r["diagnosticCode"] for r in people if isinstance(r.get("diagnosticCode"), str)), "")
        detail = " ".join(detail.split())[:300] or f"{bounce.get('bounceType')}/{bounce.get('bounceSubType')}"[:100]
        btype = bounce.get("bounceType")
        if btype == "Permanent":
            found = BounceKind.POLICY if status and status_kind(status) is BounceKind.POLICY else BounceKind.HARD
        elif btype == "Transient":
            found = BounceKind.SOFT
        else:  # Undetermined: SES could not tell; a person looks
            found = BounceKind.UNKNOWN
        return BounceReading(found, recipients, status, detail, envelope, ids, subject)
    if kind == "Complaint":
        complaint, _, recipients = _part(event, "complaint", "complainedRecipients")
        feedback = complaint.get("complaintFeedbackType")
        detail = feedback[:100] if isinstance(feedback, str) else "complaint"
        return BounceReading(BounceKind.COMPLAINT, recipients, None, detail, envelope, ids, subject)
    return None
