"""Every message the service sends, as bytes: the one builder (digest, confirmation, any one-off mail).

A digest is prepared once per edition and section choice, and personalised per reader: the
shared part (headers every reader gets, both bodies, the MIME structure) is encoded once; for
each reader only the To/Date/Message-ID/List-Unsubscribe headers and the two links are put in,
by joining prepared byte segments. A one-off message (the confirmation mail) is the same
template without the list headers, personalised once. Bodies are UTF-8 with 8bit transfer
encoding (lines kept under 998 octets), which every current mail server accepts (8BITMIME), so a
link can be placed without re-encoding the body.

Assembled by hand rather than with ``email.message.EmailMessage``: besides being ~50× slower
per message, the stdlib folder RFC 2047-encodes a long ``List-Unsubscribe`` URL, which breaks
one-click unsubscribe at mail providers. Only display names and the subject get RFC 2047 words;
a non-ASCII local part stays raw UTF-8 (RFC 6532), which the mailer sends only with SMTPUTF8.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.utils import format_datetime, make_msgid, parseaddr

from feedservice.addresses import wire_address

MAX_LINE = 990  # octets, under SMTP's 998
_TAG_GAP = re.compile(r">(?=<)")


def encode_words(text: str) -> str:
    """RFC 2047 encoded words (folded, each at most 75 characters) when ``text`` is not plain ASCII."""
    if text.isascii():
        return text
    # maxlinelen counts the first word alone: at 76 it could be 76 characters, one over RFC 2047's limit.
    return Header(text, "utf-8", maxlinelen=75).encode(linesep="\r\n")


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
    """Everything of a message but the reader: prepared once, personalised many times."""

    head: bytes  # the header lines every reader gets, CRLF-terminated
    body: tuple[bytes, ...]  # the message body cut at each marker
    markers: tuple[str, ...]  # which link goes between body[i] and body[i + 1]
    sender: str
    bulk: bool = True  # a list message (the digest): each reader's List-Unsubscribe goes in

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
        head = [b"To: ", wire_address(to).encode("utf-8"), b"\r\nDate: ", date_header.encode("ascii")]
        head += (b"\r\nMessage-ID: ", msg_id.encode("ascii"), b"\r\n")
        if self.bulk:
            head += (b"List-Unsubscribe: <", links["unsubscribe"].encode("ascii"), b">,\r\n <mailto:")
            head += (self.sender.encode("utf-8"), b"?subject=unsubscribe>\r\n")
        head.append(self.head)
        body = [self.body[0]]
        for marker, segment in zip(self.markers, self.body[1:], strict=True):
            body.append(links[marker].encode("ascii"))
            body.append(segment)
        return b"".join(head), body


def prepare_message(
    *,
    sender: str,
    subject: str,
    list_id: str | None,
    text: str,
    html: str,
    markers: dict[str, str],
) -> MessageTemplate:
    """Encode a message once; ``markers`` maps a link name to the marker string in the bodies.
    With a ``list_id`` it is a list message (the digest: List-Id, List-Unsubscribe and its
    one-click Post, ``Precedence: bulk``); without, a one-off message to one reader."""
    name, addr = parseaddr(sender)
    text_body = _short_lines(text, html=False)
    html_body = _short_lines(html, html=True)
    boundary = "=_fs_" + hashlib.sha256((text_body + html_body).encode()).hexdigest()[:24]
    list_headers: list[str] = []
    if list_id is not None:  # RFC 2919's List-Id, RFC 8058's one-click Post, and bulk
        list_name, _, list_ident = list_id.rpartition(" ")
        list_headers = [f"List-Id: {encode_words(list_name)} {list_ident}"]
        list_headers.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click")
    head = "\r\n".join(
        [
            f"From: {_address(name, addr)}",
            f"Subject: {encode_words(subject)}",
            *list_headers,
            "Auto-Submitted: auto-generated",
            *(["Precedence: bulk"] if list_id is not None else []),
            "MIME-Version: 1.0",
            f'Content-Type: multipart/alternative; boundary="{boundary}"',
            "",
            "",
        ]
    )
    body = "\r\n".join(
        [
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
        ]
    )
    by_marker = {marker: name for name, marker in markers.items()}
    segments: list[bytes] = []
    order: list[str] = []
    last = 0
    if by_marker:
        for m in re.finditer("|".join(re.escape(m) for m in by_marker), body):
            segments.append(body[last : m.start()].encode("utf-8"))
            order.append(by_marker[m.group(0)])
            last = m.end()
    segments.append(body[last:].encode("utf-8"))
    return MessageTemplate(head.encode("utf-8"), tuple(segments), tuple(order), wire_address(addr), list_id is not None)


def one_off_message(*, sender: str, to: str, subject: str, date: datetime, text: str, html: str) -> bytes:
    """A single message to one reader (the confirmation mail): the digest's builder, without the
    list headers, and a Message-ID of its own at the sender's domain."""
    template = prepare_message(sender=sender, subject=subject, list_id=None, text=text, html=html, markers={})
    msg_id = make_msgid(domain=template.sender.rpartition("@")[2])
    return template.personalize(to=to, msg_id=msg_id, links={}, date_header=format_datetime(date))
