"""Raw returned mail → ``BounceReading``: what it says, not yet whom it is about.

Bounces are read with flufl.bounce, GNU Mailman's detector library: RFC 3464 DSNs and the many
MTAs that write their own format (qmail, Exim, old Sendmail and Exchange, Yahoo, …), learnt over
twenty years of real lists. What it does not tell — the RFC 3463 status code — comes from the
DSN's per-recipient fields, else from the first 4.x.x/5.x.x code in the text (Postfix, qmail and
Korean providers' plain-text bounces carry one). Complaints are ARF reports (RFC 5965);
auto-replies are told by RFC 3834's ``Auto-Submitted`` and the headers and subjects vacation
programs use (Outlook, Gmail, Naver's and Daum's 부재중 replies).

Order matters: a complaint is a report too; a vacation reply must not be taken for a bounce by a
heuristic detector; and Exim's and Postfix's bounces carry ``Auto-Submitted: auto-replied``, so
that header alone only decides once no detector found a failure.

Hostile input: anything a stranger mails to the bounce address arrives here. A message is read
from at most ``MAX_MESSAGE`` bytes; whatever the parser or a detector raises makes it ``unknown``
(kept for a person), never an exception.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Set
from dataclasses import replace
from email import message_from_bytes
from email.header import decode_header, make_header
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses

from flufl.bounce import all_failures

from feedservice.bounce_model import BounceKind, BounceReading, status_kind

__all__ = ["MAX_MESSAGE", "read_bounce"]

log = logging.getLogger(__name__)

MAX_MESSAGE = 2 * 1024 * 1024  # a bounce quotes at most our ~100 KB digest; more is not read
MAX_DETAIL = 300

_ENVELOPE_HEADERS = ("delivered-to", "x-original-to", "envelope-to", "x-envelope-to", "to")
_AUTOREPLY_HEADERS = ("x-autoreply", "x-autorespond", "x-vacation", "x-mailautoreply")
# Subjects of vacation replies: Outlook ("Automatic reply:", "자동 회신:"), Gmail and Naver (the
# user's own subject, often "부재중"), Daum ("[자동응답]"), and the English and German classics.
_AUTOREPLY_START = re.compile(
    r"\s*\[?\s*(auto(matic)?[ -]?(reply|response|antwort)|out of (the )?office|vacation|abwesenheit"
    r"|자동\s*(회신|응답|답장)|부재\s*중)",
    re.IGNORECASE,
)
_AUTOREPLY_ANYWHERE = re.compile(r"부재\s*중|자동\s*(회신|응답|답장)|out of (the )?office|vacation", re.IGNORECASE)
_CODE = re.compile(r"(?<![\d.])([45]\.\d{1,3}\.\d{1,3})(?![\d.]*\d)")


def read_bounce(raw: bytes) -> BounceReading:
    """What ``raw`` says; ``unknown`` for anything that cannot be read."""
    try:
        msg = message_from_bytes(raw[:MAX_MESSAGE])
        return _read(msg)
    except Exception as exc:  # a hostile or broken message is kept for a person, not a crash
        log.warning("returned mail not readable: %s: %s", exc.__class__.__name__, exc)
        return BounceReading(BounceKind.UNKNOWN, detail=_line(f"not readable: {exc.__class__.__name__}: {exc}"))


def _read(msg: Message) -> BounceReading:
    subject = _decoded(msg.get("subject", ""))
    envelope = _addresses(msg, _ENVELOPE_HEADERS)
    originals = _originals(msg)
    ids = tuple(
        dict.fromkeys(
            [i for o in originals for i in _ids(o.get("message-id", ""))]
            + _ids(msg.get("in-reply-to", ""))
            + _ids(msg.get("references", ""))
        )
    )
    # The original's own Return-Path (added where it was delivered) is our VERP address.
    envelope += _addresses_of(originals, ("return-path",))
    base = BounceReading(BounceKind.UNKNOWN, envelope=envelope, original_ids=ids, subject=_line(subject))
    report = msg.get_param("report-type", header="content-type") or ""
    report_type = str(report).lower() if msg.get_content_type() == "multipart/report" else ""
    if report_type == "feedback-report":
        return _complaint(msg, base)
    if report_type != "delivery-status" and _vacation(msg, subject):
        return replace(base, kind=BounceKind.AUTO_REPLY)
    temporary, permanent = all_failures(msg)
    if temporary or permanent:
        return _bounce(msg, temporary, permanent, base)
    if _from_mail_system(msg) and (status := _first_code(msg)) and (kind := status_kind(status)):
        # A bounce no detector knows (a Korean provider's own wording): its code says what
        # happened, and the VERP address it came back to says to whom.
        return replace(base, kind=kind, status=status, detail=_line(_first_line_with(msg, status)))
    if (msg.get("auto-submitted") or "no").strip().lower() != "no":
        return replace(base, kind=BounceKind.AUTO_REPLY)
    return base


def _from_mail_system(msg: Message) -> bool:
    """Sent by a mail system, not a person: from MAILER-DAEMON or postmaster, or a "Mail Delivery
    System/Subsystem". (Not a null return path alone: RFC 3834 asks auto-replies for one too.)"""
    name, sender = (getaddresses([str(msg.get("from", ""))]) or [("", "")])[0]
    return sender.lower().split("@")[0] in ("mailer-daemon", "postmaster") or "mail delivery" in name.lower()


def _first_line_with(msg: Message, code: str) -> str:
    for part in msg.walk():
        if part.get_content_maintype() == "text":
            for line in _text(part).splitlines():
                if code in line:
                    return line
    return code


def _bounce(msg: Message, temporary: Set[bytes], permanent: Set[bytes], base: BounceReading) -> BounceReading:
    recipients = tuple(sorted({a.decode("utf-8", "replace") for a in (*permanent, *temporary)}))
    status, detail = _dsn_status(msg)
    if status is None:
        status = _first_code(msg)
    kind = status_kind(status) if status else None
    if kind is None:  # no code (or a success code): what flufl says, failed for good or not
        kind = BounceKind.HARD if permanent else BounceKind.SOFT
    return replace(base, kind=kind, recipients=recipients, status=status, detail=_line(detail))


def _complaint(msg: Message, base: BounceReading) -> BounceReading:
    fields = Message()
    for part in msg.walk():
        if part.get_content_type() == "message/feedback-report":
            fields = _fields(part)
            break
    recipients = tuple(a for _, a in getaddresses(fields.get_all("original-rcpt-to", [])) if a)
    mail_from = tuple(a for _, a in getaddresses(fields.get_all("original-mail-from", [])) if a)
    feedback = (fields.get("feedback-type") or "abuse").strip()
    return replace(
        base,
        kind=BounceKind.COMPLAINT,
        recipients=recipients,
        detail=_line(f"feedback: {feedback}"),
        envelope=(*base.envelope, *mail_from),
    )


def _vacation(msg: Message, subject: str) -> bool:
    if any(msg.get(h) is not None for h in _AUTOREPLY_HEADERS):
        return True
    if (msg.get("precedence") or "").strip().lower() == "auto_reply":
        return True
    if _AUTOREPLY_START.match(subject):
        return True
    auto = (msg.get("auto-submitted") or "no").strip().lower()
    return auto != "no" and _AUTOREPLY_ANYWHERE.search(subject) is not None


def _fields(part: Message) -> Message:
    """The header block of a message/feedback-report or the first of a message/delivery-status."""
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        return payload[0]
    text = payload if isinstance(payload, str) else ""
    return HeaderParser().parsestr(text.lstrip())


def _dsn_status(msg: Message) -> tuple[str | None, str]:
    """The worst per-recipient Status of a DSN (5 over 4), with its diagnostic."""
    found: list[tuple[str, str]] = []
    for part in msg.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        blocks = part.get_payload()
        for block in blocks[1:] if isinstance(blocks, list) else []:
            if not isinstance(block, Message):
                continue
            code = _CODE.search(str(block.get("status", "")))
            if code:
                found.append((code[1], str(block.get("diagnostic-code", "") or block.get("action", ""))))
    if not found:
        return None, ""
    found.sort(key=lambda f: f[0][0], reverse=True)
    return found[0]


def _first_code(msg: Message) -> str | None:
    """The first 4.x.x/5.x.x code in the text parts written by the MTA (not in the quoted original)."""
    for part in msg.walk():
        if part.get_content_type() in ("message/rfc822", "text/rfc822-headers"):
            break
        if part.get_content_maintype() != "text":
            continue
        text = _text(part)
        if m := _CODE.search(text):
            return m[1]
    return None


def _originals(msg: Message) -> list[Message]:
    """The header blocks of the message this mail is about (message/rfc822, text/rfc822-headers)."""
    out: list[Message] = []
    for part in msg.walk():
        kind = part.get_content_type()
        if kind == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                out.append(payload[0])
        elif kind == "text/rfc822-headers":
            out.append(HeaderParser().parsestr(_text(part).lstrip()))
    return out


def _text(part: Message) -> str:
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return str(part.get_payload())
    return data.decode(part.get_content_charset() or "utf-8", "replace")


def _addresses(msg: Message, names: tuple[str, ...]) -> tuple[str, ...]:
    return _addresses_of([msg], names)


def _addresses_of(msgs: list[Message], names: tuple[str, ...]) -> tuple[str, ...]:
    values = [str(v) for m in msgs for n in names for v in m.get_all(n, [])]
    return tuple(dict.fromkeys(a for _, a in getaddresses(values) if "@" in a))


def _ids(value: str) -> list[str]:
    return re.findall(r"<[^<>\s]{1,500}>", str(value))


def _decoded(value: object) -> str:
    try:
        return str(make_header(decode_header(str(value))))
    except Exception:
        return str(value)


def _line(text: str) -> str:
    return " ".join(str(text).split())[:MAX_DETAIL]
