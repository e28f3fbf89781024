"""Digest messages as bytes: prepared once per edition and section choice, personalised per reader.

The shared part (headers every reader gets, both bodies, the MIME structure) is encoded once;
for each reader only the To/Date/Message-ID/List-Unsubscribe headers and the two links are
put in, by joining prepared byte segments. Bodies are UTF-8 with 8bit transfer encoding
(lines kept under 998 octets), which every current mail server accepts (8BITMIME), so a
link can be placed without re-encoding the body.

Assembled by hand rather than with ``email.message.EmailMessage``: besides being ~50× slower
per message, the stdlib folder RFC 2047-encodes a long ``List-Unsubscribe`` URL, which breaks
one-click unsubscribe at mail providers.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr

from feedservice.addresses import wire_address

MAX_LINE = 990  # octets, under SMTP's 998
_TAG_GAP = re.compile(r">(?=<)")


def encode_words(text: str) -> str:
    """RFC 2047 encoded words (folded, each at most 75 characters) when ``text`` is not plain ASCII."""
    if text.isascii():
        return text
    return Header(text, "utf-8", maxlinelen=76).encode(linesep="\r\n")


def _address(display: str, addr: str) -> str:
    """A mailbox header value: RFC 2047 words for the display name only, never in the address."""
    addr = wire_address(addr)
    return f"{encode_words(display)} <{addr}>" if display else addr


def _short_lines(text: str, html: bool) -> str:
    """CRLF line ends and no line longer than ``MAX_LINE`` octets.

    HTML is cut between two tags (``><``), where a line break changes nothing a reader sees;
    text, and HTML without such a place, at a space.
    """
    out: list[str] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        while len(line.encode("utf-8")) > MAX_LINE:
            cut = _cut(line, html)
            out.append(line[:cut])
            line = line[cut:]
        out.append(line)
    return "\r\n".join(out)


def _cut(line: str, html: bool) -> int:
    limit = MAX_LINE // 3  # characters: a Korean syllable is 3 octets
    head = line[: max(limit, 1)]
    if html:
        gaps = [m.end() for m in _TAG_GAP.finditer(head)]
        if gaps:
            return gaps[-1]
    space = head.rfind(" ")
    return space + 1 if space > 0 else len(head)


@dataclass(frozen=True)
class MessageTemplate:
    """Everything of a digest message but the reader: prepared once, personalised many times."""

    head: bytes  # the header lines every reader gets, CRLF-terminated
    body: tuple[bytes, ...]  # the message body cut at each marker
    markers: tuple[str, ...]  # which link goes between body[i] and body[i + 1]
    sender: str

    def personalize(self, *, to: str, msg_id: str, links: dict[str, str], date_header: str) -> bytes:
        """One reader's message. ``to`` goes in with its domain in IDNA form; a non-ASCII local part
        stays UTF-8 (RFC 6532): such a message can only travel with SMTPUTF8, which the mailer
        asks the relay for (and refuses to send without)."""
        head, body = self.parts(to=to, msg_id=msg_id, links=links, date_header=date_header)
        body.insert(0, head)
        return b"".join(body)

    def parts(self, *, to: str, msg_id: str, links: dict[str, str], date_header: str) -> tuple[bytes, list[bytes]]:
        """One reader's message as its header section (with the empty line that ends it) and its
        body in pieces: this template's segments (the same objects for every reader) and the
        reader's links between them. A DKIM signer works on the segments once per template."""
        head = b"".join([
            b"To: ", wire_address(to).encode("utf-8"), b"\r\nDate: ", date_header.encode("ascii"),
            b"\r\nMessage-ID: ", msg_id.encode("ascii"),
            b"\r\nList-Unsubscribe: <", links["unsubscribe"].encode("ascii"), b">,\r\n <mailto:",
            self.sender.encode("utf-8"), b"?subject=unsubscribe>\r\n", self.head,
        ])  # fmt: skip
        body = [self.body[0]]
        for marker, segment in zip(self.markers, self.body[1:], strict=True):
            body.append(links[marker].encode("ascii"))
            body.append(segment)
        return head, body


def prepare_message(
    *,
    sender: str,
    subject: str,
    list_id: str,
    text: str,
    html: str,
    markers: dict[str, str],
) -> MessageTemplate:
    """Encode a message once; ``markers`` maps a link name to the marker string in the bodies."""
    name, addr = parseaddr(sender)
    list_name, _, list_ident = list_id.rpartition(" ")
    text_body = _short_lines(text, html=False)
    html_body = _short_lines(html, html=True)
    boundary = "=_fs_" + hashlib.sha256((text_body + html_body).encode()).hexdigest()[:24]
    head = "\r\n".join([
        f"From: {_address(name, addr)}",
        f"Subject: {encode_words(subject)}",
        f"List-Id: {encode_words(list_name)} {list_ident}",
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
        "Auto-Submitted: auto-generated",
        "Precedence: bulk",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/alternative; boundary="{boundary}"',
        "",
        "",
    ])  # fmt: skip
    body = "\r\n".join([
        f"--{boundary}",
        'Content-Type: text/plain; charset="utf-8"',
        "Content-Transfer-Encoding: 8bit",
        "",
        text_body,
        f"--{boundary}",
        'Content-Type: text/html; charset="utf-8"',
        "Content-Transfer-Encoding: 8bit",
        "",
        html_body,
        f"--{boundary}--",
        "",
    ])  # fmt: skip
    by_marker = {marker: name for name, marker in markers.items()}
    pattern = re.compile("|".join(re.escape(m) for m in by_marker))
    segments: list[bytes] = []
    order: list[str] = []
    last = 0
    for m in pattern.finditer(body):
        segments.append(body[last : m.start()].encode("utf-8"))
        order.append(by_marker[m.group(0)])
        last = m.end()
    segments.append(body[last:].encode("utf-8"))
    return MessageTemplate(head.encode("utf-8"), tuple(segments), tuple(order), wire_address(addr))


def _header_address(display: str, addr: str) -> Address:
    """An ``email`` package Address: the display name is the folder's to encode, the address is
    put in as username and domain (domain in IDNA form), so it is never RFC 2047-encoded."""
    local, _, domain = wire_address(addr).rpartition("@")
    return Address(display_name=display, username=local, domain=domain)


def one_off_message(*, sender: str, to: str, subject: str, date: datetime, text: str, html: str) -> bytes:
    """A single message (the confirmation mail), built with the ``email`` package.

    Only display names and the subject get RFC 2047 words. A non-ASCII local part (in ``to`` or
    the sender) makes it an RFC 6532 message (``policy.SMTPUTF8``: raw UTF-8 headers), which
    the mailer sends only with SMTPUTF8.
    """
    name, from_addr = parseaddr(sender)
    sender_address = _header_address(name, from_addr)
    to_address = _header_address("", to)
    utf8 = not (sender_address.addr_spec + to_address.addr_spec).isascii()
    msg = EmailMessage(policy=policy.SMTPUTF8 if utf8 else policy.SMTP)
    msg["From"] = sender_address
    msg["To"] = to_address
    msg["Subject"] = subject
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = make_msgid(domain=sender_address.domain)
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    return msg.as_bytes()
