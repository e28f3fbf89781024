"""DKIM signing (RFC 6376, relaxed/relaxed) with OpenSSL's RSA, and optionally Ed25519 (RFC 8463).

Why our own signer: dkimpy's pure-Python path cost ~16 ms a message, which made a signed
edition go out at a sixth of the unsigned rate; OpenSSL (through ``cryptography``) signs with a
2048-bit key in a fraction of a millisecond. What remains is small and follows the RFC:

- once, at start-up: load and check the keys (RSA of at least 2048 bits, as Gmail and Naver
  expect of bulk senders), the selector and the domain;
- once per header set (every message of an edition has the same one): the ``h=`` list and the
  folded signature header up to ``h=``;
- per message: line endings, the relaxed body and its SHA-256 (``bh=``), the relaxed signed
  headers, ``t=``, and one signature per key.

Signing comes in three steps: ``prepare`` (or ``prepare_parts``) does everything up to the data
to sign and gives its SHA-256 per key (``Unsigned``); ``sign_digests`` is the key operation on
that digest (``dkim_keys``); ``finish`` puts the signatures in their headers on top of the
message. ``sign`` and ``sign_parts`` run the three in a row. The signing process
(``adapters/dkim_child.py``, run by ``adapters/dkim_process.py``) runs them apart: it gets the
signer through ``handover``, signs with the parent's ``t=`` (``timestamp``), so a message comes
out the same bytes on either side, checks each RSA signature against its digest (``verifies``)
and hands back only the signature headers (``signature_headers``).

``sign_parts`` takes a message as its header section and its body in pieces: the template's
segments, the same objects for every reader, between the reader's links. Relaxed body
canonicalisation works line by line, so where no run of whitespace or line break spans a piece
boundary (a link has neither) each piece can be made canonical on its own: a template segment
once per edition (cached), a link as it is. Per message only the SHA-256 over the pieces remains of the body's
work (the whitespace runs of indented HTML made it the larger part of signing, after RSA).
Anything else is signed whole, as ``sign`` does: the bytes are the same either way.

RFC 8058 §4: the signature must cover List-Unsubscribe and List-Unsubscribe-Post, or a provider
will not offer one-click unsubscribe. Every header of SIGNED_HEADERS that is present is signed
(§5.4), in RFC 5322's obsolete syntax (``Subject :``) too, and signed once more than it occurs
(§5.4.2, "over-signing"), so that a header added on the way, say a second From or
List-Unsubscribe, breaks the signature instead of riding on it. A message with more than one
From is refused: verifiers differ on which one the signature speaks for. Relaxed
canonicalisation keeps the signature valid across the refolding relays may do.

Input may use CRLF or bare LF (or CR) line endings. ``sign`` returns the message with CRLF line
endings throughout and a final CRLF, under its signature header(s): exactly the bytes it signed,
which is what SMTP puts on the wire.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from feedservice.adapters.dkim_keys import MIN_RSA_BITS, Ed25519Key, RsaKey, load_ed25519_key, load_rsa_key
from feedservice.errors import ConfigError, DeliveryError

__all__ = [
    "MIN_RSA_BITS",
    "SIGNED_HEADERS",
    "DkimSigner",
    "LoopSigner",
    "Unsigned",
    "canonical_body",
    "canonical_header",
]

SIGNED_HEADERS = (
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"list-id",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
    b"mime-version",
    b"content-type",
)

_SIGNED = frozenset(SIGNED_HEADERS)
_EOL = re.compile(rb"\r\n|\r|\n")
_FIELD_END = re.compile(rb"\r\n(?![ \t])")  # a line break that does not continue a folded field
_SPACES = re.compile(rb"  +")
_LABELS = re.compile(rb"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9])?)*")
_OPEN = frozenset(b" \t\r\n")  # bytes that may join a whitespace run or a line break across pieces
_WIDTH = 78  # RFC 5322 §2.1.1: lines SHOULD stay within 78 characters


def _squeeze(data: bytes) -> bytes:
    """Every run of WSP made one SP. Tabs first, then a regex with a literal prefix: both are fast
    scans, where one regex for ``[ \t]+`` would stop at every single space of the text."""
    if b"\t" in data:
        data = data.replace(b"\t", b" ")
    return _SPACES.sub(b" ", data) if b"  " in data else data


def canonical_body(body: bytes) -> bytes:
    """RFC 6376 §3.4.4 relaxed body: WSP runs become one SP, none ends a line, no empty lines at the end.

    ``body`` has CRLF line endings and ends in CRLF, or is empty; an empty body stays empty.
    """
    body = _squeeze(body).replace(b" \r\n", b"\r\n")
    body = body.rstrip(b"\r\n")  # only CRLF pairs are left, so this drops whole empty lines
    return body + b"\r\n" if body else b""


def canonical_header(field: bytes) -> bytes:
    """RFC 6376 §3.4.2 relaxed header: ``name:value`` + CRLF, the name lower-cased, the value unfolded,
    WSP runs made one SP, none around the colon or at the end. ``field`` is one field as it appears
    (folded lines joined by CRLF + WSP), without its final CRLF."""
    name, _, value = field.partition(b":")
    value = _squeeze(value.replace(b"\r\n", b"")).strip(b" ")
    return name.rstrip(b" \t").lower() + b":" + value + b"\r\n"


def _normalise(message: bytes) -> bytes:
    """CRLF line endings throughout, ending in CRLF (counting first: the usual input needs nothing)."""
    lf = message.count(b"\n")
    if lf != message.count(b"\r\n") or lf != message.count(b"\r"):
        message = _EOL.sub(b"\r\n", message)
    return message if message.endswith(b"\r\n") else message + b"\r\n"


def _split(message: bytes) -> tuple[list[bytes], bytes]:
    """The header fields (each without its final CRLF) and the body of a normalised message."""
    if message.startswith(b"\r\n"):
        return [], message[2:]
    end = message.find(b"\r\n\r\n")
    if end < 0:
        return _FIELD_END.split(message[:-2]), b""
    return _FIELD_END.split(message[:end]), message[end + 4 :]


def _field_name(field: bytes) -> bytes:
    """The lower-cased name, without WSP before its colon: ``Subject :`` is RFC 5322's obsolete
    syntax for Subject (§4.5.3), which a receiver must read as that field (§4) and RFC 6376 §3.4.2
    canonicalises as one, so it is signed as one. OpenDKIM reads it so; dkimpy refuses the message,
    or skips a ``From :`` line as an mbox separator, and cannot judge such a signature."""
    colon = field.find(b":")
    return field[:colon].rstrip(b" \t").lower() if colon > 0 else b""


def _fold(column: int, parts: Sequence[tuple[bytes, bytes]]) -> bytes:
    """Join (separator, text) parts, breaking the line before a part that would pass 78 columns.

    A break replaces the separator with CRLF + SP; in a tag list that is folding whitespace,
    which relaxed canonicalisation reads as one SP and RFC 6376 §3.2 allows between tags and
    around the colons of ``h=``.
    """
    out: list[bytes] = []
    for sep, text in parts:
        if column + len(sep) + len(text) > _WIDTH and column > 1:
            out.append(b"\r\n ")
            column = 1
        else:
            out.append(sep)
            column += len(sep)
        out.append(text)
        column += len(text)
    return b"".join(out)


@dataclass(frozen=True)
class _Key:
    """One signing key and its selector."""

    key: RsaKey | Ed25519Key
    selector: bytes


@dataclass(frozen=True, slots=True)
class Unsigned:
    """A message ready for its signature(s): per key, in the order of ``DkimSigner.keys``, the
    DKIM-Signature header up to ``b=`` and the SHA-256 of the data that key signs (§3.7); then
    the message the signature headers go on top of (CRLF line endings throughout)."""

    headers: tuple[bytes, ...]
    digests: tuple[bytes, ...]
    message: bytes


@dataclass(frozen=True)
class _Plan:
    """What a header set decides: the ``h=`` names in order, and each key's signature header up to ``h=``."""

    names: tuple[bytes, ...]
    prefixes: tuple[bytes, ...]  # one per key, in the order of DkimSigner._keys


class DkimSigner:
    """Signs the digest's messages; built once per run, so the key checks run at start-up.

    A key that cannot sign (unreadable, not RSA, shorter than 2048 bits) is a ConfigError naming
    the configuration key it came from. ``ed25519_key_pem`` adds a second signature
    (``a=ed25519-sha256``, RFC 8463) under ``ed25519_selector``; the RSA one stays on top for the
    verifiers that know only RSA.
    """

    def __init__(
        self,
        *,
        selector: str,
        domain: str,
        private_key_pem: bytes,
        source: str = "config",
        ed25519_selector: str | None = None,
        ed25519_key_pem: bytes | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.domain = _dns_name(domain, source, "digest.dkim_domain")
        self._keys = [_Key(load_rsa_key(private_key_pem, source), _dns_name(selector, source, "digest.dkim_selector"))]
        if ed25519_key_pem is not None:
            ed_selector = _dns_name(ed25519_selector or f"{selector}-ed25519", source, "digest.dkim_ed25519_selector")
            self._keys.append(_Key(load_ed25519_key(ed25519_key_pem, source), ed_selector))
        self.keys: tuple[RsaKey | Ed25519Key, ...] = tuple(k.key for k in self._keys)  # RSA first
        self._clock = clock
        self._plans: dict[tuple[bytes, ...], _Plan] = {}
        self._pieces: dict[bytes, bytes] = {}  # body pieces seen before: their canonical form

    def sign(self, message: bytes) -> bytes:
        """``message`` under one DKIM-Signature header per key (see the module docstring)."""
        unsigned = self.prepare(message)
        return self.finish(unsigned, self.sign_digests(unsigned.digests))

    def sign_parts(self, head: bytes, body: Sequence[bytes], *, timestamp: int | None = None) -> bytes:
        """``head + b"".join(body)`` signed, as ``sign`` would sign it; ``head`` is the header
        section with its closing empty line. Pieces of ``body`` seen before (a template's segments)
        are made canonical once (see the module docstring). ``timestamp``: the ``t=`` to sign
        with instead of the clock's (a signing process signs with its parent's)."""
        unsigned = self.prepare_parts(head, body, timestamp=timestamp)
        return self.finish(unsigned, self.sign_digests(unsigned.digests))

    def verifies(self, signature: bytes, digest: bytes) -> bool:
        """Whether ``signature`` is the RSA key's over ``digest``."""
        key = self.keys[0]
        return isinstance(key, RsaKey) and key.verifies(signature, digest)

    def now(self) -> int:
        """The ``t=`` a signature made now carries."""
        return int(self._clock())

    def handover(self) -> bytes:
        """Everything another process needs to sign as this signer does, the private keys
        included: for a pipe to a child of ours only, never a file, an argument or the environment."""
        keys = [{"selector": k.selector.decode(), "pem": k.key.pem().decode()} for k in self._keys]
        return json.dumps({"domain": self.domain.decode(), "keys": keys}).encode()

    @classmethod
    def from_handover(cls, data: bytes) -> DkimSigner:
        """The signer ``handover`` describes (its keys checked again)."""
        given = json.loads(data)
        rsa_key, *ed25519 = given["keys"]
        return cls(
            selector=rsa_key["selector"],
            domain=given["domain"],
            private_key_pem=rsa_key["pem"].encode(),
            source="the signing process's pipe",
            ed25519_selector=ed25519[0]["selector"] if ed25519 else None,
            ed25519_key_pem=ed25519[0]["pem"].encode() if ed25519 else None,
        )

    def sign_digests(self, digests: Sequence[bytes]) -> list[bytes]:
        """The private-key step alone: each key's signature over its digest."""
        return [key.sign(digest) for key, digest in zip(self.keys, digests, strict=True)]

    def prepare(self, message: bytes, *, timestamp: int | None = None) -> Unsigned:
        """``sign`` up to the private-key step."""
        message = _normalise(message)
        fields, body = _split(message)
        body_hash = base64.b64encode(hashlib.sha256(canonical_body(body)).digest())
        return self._unsigned(fields, body_hash, message, timestamp)

    def prepare_parts(self, head: bytes, body: Sequence[bytes], *, timestamp: int | None = None) -> Unsigned:
        """``sign_parts`` up to the private-key step."""
        pieces = [piece for piece in body if piece]
        canonical = self._canonical_pieces(pieces)
        head = _normalise(head)
        if canonical is None or not pieces or not pieces[-1].endswith(b"\r\n") or not head.endswith(b"\r\n\r\n"):
            return self.prepare(head + b"".join(pieces), timestamp=timestamp)
        fields, _ = _split(head)
        while canonical:  # §3.4.4: no empty lines at the end, then one CRLF
            last = canonical.pop().rstrip(b"\r\n")
            if last:
                canonical += (last, b"\r\n")
                break
        digest = hashlib.sha256()
        for piece in canonical:
            digest.update(piece)
        return self._unsigned(fields, base64.b64encode(digest.digest()), head + b"".join(pieces), timestamp)

    @classmethod
    def finish(cls, unsigned: Unsigned, signatures: Sequence[bytes]) -> bytes:
        """The signed message: its signature headers on top of it."""
        return cls.signature_headers(unsigned, signatures) + unsigned.message

    @staticmethod
    def signature_headers(unsigned: Unsigned, signatures: Sequence[bytes]) -> bytes:
        """The DKIM-Signature headers, each ending in its signature (base64, folded) and CRLF."""
        out: list[bytes] = []
        for header, signature in zip(unsigned.headers, signatures, strict=True):
            encoded = base64.b64encode(signature)
            out += (header, _fold(3, [(b"", encoded[i : i + 72]) for i in range(0, len(encoded), 72)]), b"\r\n")
        return b"".join(out)

    def _canonical_pieces(self, pieces: list[bytes]) -> list[bytes] | None:
        """Each piece made canonical (but for the end of the body), or None where that would not
        give the canonical whole: a bare CR or LF, or whitespace or a line break on both sides of
        a boundary."""
        out = []
        previous_open = False  # the previous piece ends with WSP, CR or LF
        for piece in pieces:
            if previous_open and piece[0] in _OPEN:
                return None
            previous_open = piece[-1] in _OPEN
            if not (b" " in piece or b"\t" in piece or b"\r" in piece or b"\n" in piece):
                out.append(piece)  # a link: nothing to canonicalise, nothing to keep
                continue
            canonical = self._pieces.get(piece)
            if canonical is None:
                lf = piece.count(b"\n")
                if lf != piece.count(b"\r\n") or lf != piece.count(b"\r"):
                    return None
                canonical = _squeeze(piece).replace(b" \r\n", b"\r\n")
                if len(self._pieces) >= 256:  # an edition has a few dozen: this only bounds the odd caller
                    self._pieces.clear()
                self._pieces[piece] = canonical
            out.append(canonical)
        return out

    def _unsigned(self, fields: list[bytes], body_hash: bytes, message: bytes, timestamp: int | None) -> Unsigned:
        """The signature headers up to ``b=`` over the header ``fields`` and the body's hash, and
        what each key signs, as its digest."""
        signable = [(name, field) for field in fields if (name := _field_name(field)) in _SIGNED]
        present = tuple(name for name, _ in signable)
        plan = self._plans.get(present) or self._plan(present)
        instances: dict[bytes, list[bytes]] = {}
        for name, field in signable:
            instances.setdefault(name, []).append(field)
        # §5.4.2: the n-th listing of a name signs its n-th instance from the bottom; none left, nothing.
        headers = b"".join(canonical_header(instances[name].pop()) for name in plan.names if instances.get(name))
        t = self.now() if timestamp is None else timestamp
        tail = b"\r\n t=" + str(t).encode() + b"; bh=" + body_hash + b";\r\n b="
        tops = tuple(prefix + tail for prefix in plan.prefixes)
        # §3.7: the signed header fields, then this signature's own header, without its final CRLF.
        digests = tuple(hashlib.sha256(headers + canonical_header(top)[:-2]).digest() for top in tops)
        return Unsigned(tops, digests, message)

    def _plan(self, present: tuple[bytes, ...]) -> _Plan:
        if b"from" not in present:  # §5.4: From MUST be signed
            raise DeliveryError("cannot DKIM-sign a message without a From header", permanent=True)
        if present.count(b"from") > 1:  # RFC 5322 §3.6: one From; verifiers differ on which one counts
            raise DeliveryError("cannot DKIM-sign a message with more than one From header", permanent=True)
        listed = [name for name in SIGNED_HEADERS if name in present]
        names = tuple(name for name in listed for _ in range(present.count(name) + 1))
        h = [(b" ", b"h=" + names[0])] + [(b"", b":" + name) for name in names[1:]]
        h[-1] = (h[-1][0], h[-1][1] + b";")
        prefixes = []
        for key in self._keys:
            tags = [
                b"v=1;",
                b"a=" + key.key.algorithm + b";",
                b"c=relaxed/relaxed;",
                b"d=" + self.domain + b";",
                b"s=" + key.selector + b";",
            ]
            prefixes.append(b"DKIM-Signature:" + _fold(len(b"DKIM-Signature:"), [(b" ", t) for t in tags] + h))
        if len(self._plans) >= 64:  # an edition has one or two header sets: this only bounds the odd caller
            self._plans.clear()
        plan = self._plans[present] = _Plan(names, tuple(prefixes))
        return plan


class LoopSigner:
    """A run's signer that signs on the event loop (``[delivery] dkim_signer = "loop"``)."""

    def __init__(self, signer: DkimSigner) -> None:
        self.signer = signer
        self.failure: str | None = None  # nothing to give up

    def sign_parts(self, head: bytes, body: Sequence[bytes]) -> asyncio.Future[bytes]:
        future = asyncio.get_running_loop().create_future()
        future.set_result(self.signer.sign_parts(head, body))
        return future

    async def aclose(self) -> float:
        return 0.0


def _dns_name(name: str, source: str, config_key: str) -> bytes:
    """A domain or selector as its ASCII (IDNA) form, lower-cased; a ConfigError if it is not one."""
    try:
        ascii_name = name.strip().rstrip(".").encode("idna").lower()
    except UnicodeError as exc:
        raise ConfigError(source, config_key, f"{name!r} is not a domain name: {exc}") from exc
    if not _LABELS.fullmatch(ascii_name):
        raise ConfigError(source, config_key, f"{name!r} is not a domain name")
    return ascii_name
