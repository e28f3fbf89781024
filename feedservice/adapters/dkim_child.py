"""DKIM's signing process (``python -m feedservice.adapters.dkim_child``), and the wire format
between it and its parent (``adapters/dkim_process.py``, which says why and how it is run).

Frames, both ways: a 4-byte big-endian length, then the payload.

- Parent to child: the signer's ``handover`` (its keys, selectors and domain), then batches: the
  ``t=`` (8 bytes) and the number of messages (4), then records, each a kind byte: ``S`` +
  length + bytes (the next template segment), ``C`` (forget the segments), ``M`` + the head's
  length and the number of pieces, one signed 4-byte code a piece (a segment's number, or
  ``~length`` of a piece given inline), the head, the inline pieces.
- Child to parent: ``ready``, then per batch each message's answer, in order: the fingerprint of
  the message the child read (16 bytes), the length of its signature headers, the headers (length
  0: the parent signs it itself, for it cannot be signed, or not as the bytes the parent puts the
  headers on: a bare CR or LF, no final CRLF); after its stdin ends, its CPU seconds (a double).

The fingerprint (``_fingerprint``: BLAKE2b of the message's record, its head, its inline pieces
and the BLAKE2b of each segment it names, as each side holds them) is what makes an answer the
answer to its message: the parent computes it as it writes the record, for a few microseconds,
and takes no answer whose fingerprint is another. A segment table that is not the parent's, an
answer out of order, an answer to another message: each is garbage, however valid its shape.

The child runs under SCHED_BATCH (Linux): woken by a batch, it waits for a free core or the next
tick instead of preempting the sending loop. It signs with the very ``DkimSigner`` code the
parent would run, so a message comes out the same bytes either way; it imports nothing of ours
but that (and what it imports).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import struct
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from feedservice.adapters.dkim import DkimSigner

__all__ = [
    "ANSWER",
    "BATCH",
    "CPU",
    "LENGTH",
    "MAX_HEADERS",
    "READY",
    "Garbage",
    "encode",
    "environment",
    "frame",
    "main",
    "read_batch",
    "split_answers",
]

SEGMENTS = 256  # template segments the child keeps, and one message's more (an edition has a few dozen)
MAX_HEADERS = 4096  # bytes of signature headers a message, at most (RSA-4096 and Ed25519: ~1.4 KB)
READY = b"ready"
LENGTH = struct.Struct("!I")
CPU = struct.Struct("!d")
BATCH = struct.Struct("!QI")  # t=, messages
MESSAGE = struct.Struct("!IH")  # the head's length, the pieces
ANSWER = struct.Struct("!16sI")  # the message's fingerprint, the length of its signature headers
_PASSED_ON = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR")  # the child's whole environment, with PYTHONPATH


class Garbage(Exception):
    """The child answered something that is not what was asked for."""


def frame(payload: bytes) -> bytes:
    return LENGTH.pack(len(payload)) + payload


def environment() -> dict[str, str]:
    """What the child inherits: a few harmless variables, and the path to this very package."""
    env = {name: os.environ[name] for name in _PASSED_ON if name in os.environ}
    root = str(Path(__file__).resolve().parents[2])  # the folder holding ``feedservice``: the parent's code
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def _hash(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def _fingerprint(record: bytes, head: bytes, inline: Sequence[bytes], hashes: Sequence[bytes]) -> bytes:
    """One message, as one side holds it: its record (the head's length, the pieces' codes), its
    head, its inline pieces, and the hash of each segment it names, in order."""
    return _hash(b"".join([record, head, *inline, *hashes]))


# -- the parent's side -----------------------------------------------------------------------------
def encode(out: list[bytes], segments: dict[bytes, tuple[int, bytes]], head: bytes, body: Sequence[bytes]) -> bytes:
    """One message's records, appended to ``out``: the segments the child lacks (``segments``: the
    ones it has, with their number and hash, kept up to date here), then the message; its
    fingerprint. A message the format cannot hold (``struct.error``, ``OverflowError``) changes
    neither: the table and the records the child reads change together."""
    reset = len(segments) >= SEGMENTS  # between messages: a message's codes name the segments of its time
    known = {} if reset else segments
    new: dict[bytes, tuple[int, bytes]] = {}
    records: list[bytes] = [b"C"] if reset else []
    codes, inline, hashes = [], [], []
    for piece in body:
        segment = known.get(piece) or new.get(piece)
        if segment is None:
            if not (b" " in piece or b"\n" in piece or b"\r" in piece or b"\t" in piece):
                codes.append(~len(piece))  # a reader's own piece (a link): sent as it is
                inline.append(piece)
                continue
            segment = new[piece] = (len(known) + len(new), _hash(piece))
            records += (b"S", LENGTH.pack(len(piece)), piece)
        codes.append(segment[0])
        hashes.append(segment[1])
    record = MESSAGE.pack(len(head), len(codes)) + struct.pack(f"!{len(codes)}i", *codes)
    if reset:
        segments.clear()
    segments.update(new)
    out += records
    out += (b"M", record, head, *inline)
    return _fingerprint(record, head, inline, hashes)


def split_answers(payload: bytes, prints: Sequence[bytes]) -> list[bytes]:
    """A batch's answer as each message's signature headers, checked for their shape and for
    being the answers to these messages (``prints``: their fingerprints, in order)."""
    answers: list[bytes] = []
    at, count = 0, len(prints)
    for fingerprint in prints:
        if at + ANSWER.size > len(payload):
            raise Garbage(f"{count} answers that end early")
        read, length = ANSWER.unpack_from(payload, at)
        headers = payload[at + ANSWER.size : at + ANSWER.size + length]
        at += ANSWER.size + length
        if read != fingerprint:
            raise Garbage(f"answer {len(answers) + 1} of {count} is for another message than it was asked")
        if length and not (headers.startswith(b"DKIM-Signature:") and headers.endswith(b"\r\n")):
            raise Garbage(f"{headers[:40]!r} for signature headers")
        answers.append(headers)
    if at != len(payload):
        raise Garbage(f"{count} answers that end early or late")
    return answers


# -- the child -------------------------------------------------------------------------------------
def _read_frame(stream: IO[bytes]) -> bytes | None:
    """The next frame, or None at the end of input."""
    head = stream.read(LENGTH.size)
    if len(head) < LENGTH.size:
        return None
    (length,) = LENGTH.unpack(head)
    payload = stream.read(length)
    return payload if len(payload) == length else None


def _write_frame(stream: IO[bytes], payload: bytes) -> None:
    stream.write(frame(payload))
    stream.flush()


def read_batch(segments: list[tuple[bytes, bytes]], batch: bytes) -> tuple[int, list[tuple[bytes, bytes, list[bytes]]]]:
    """A batch's ``t=`` and its messages, each its fingerprint, head and body; ``segments`` (each
    with its hash) kept up to date."""
    t, count = BATCH.unpack_from(batch)
    at, messages = BATCH.size, []
    while at < len(batch):
        kind, at = batch[at : at + 1], at + 1
        if kind == b"C":
            segments.clear()
        elif kind == b"S":
            (length,) = LENGTH.unpack_from(batch, at)
            segment = batch[at + LENGTH.size : at + LENGTH.size + length]
            segments.append((segment, _hash(segment)))
            at += LENGTH.size + length
        elif kind == b"M":
            head_length, pieces = MESSAGE.unpack_from(batch, at)
            record = batch[at : at + MESSAGE.size + 4 * pieces]
            codes = struct.unpack_from(f"!{pieces}i", batch, at + MESSAGE.size)
            at += len(record)
            head, at = batch[at : at + head_length], at + head_length
            body, inline, hashes = [], [], []
            for code in codes:
                if code >= 0:
                    body.append(segments[code][0])
                    hashes.append(segments[code][1])
                else:
                    inline.append(batch[at : at + ~code])
                    body.append(inline[-1])
                    at += ~code
            messages.append((_fingerprint(record, head, inline, hashes), head, body))
        else:
            raise SystemExit(f"dkim_child: a record of kind {kind!r}")
    if len(messages) != count:
        raise SystemExit(f"dkim_child: {len(messages)} messages in a batch of {count}")
    return t, messages


def _answer(signer: DkimSigner, segments: list[tuple[bytes, bytes]], batch: bytes) -> bytes:
    """Each message of ``batch`` signed: its fingerprint, then its signature headers, length first."""
    t, messages = read_batch(segments, batch)
    out: list[bytes] = []
    for fingerprint, head, body in messages:
        headers = _signed(signer, head, body, t)
        out += (ANSWER.pack(fingerprint, len(headers)), headers)
    return b"".join(out)


def _signed(signer: DkimSigner, head: bytes, body: list[bytes], t: int) -> bytes:
    """The message's signature headers; empty if the parent is to sign it itself."""
    try:
        unsigned = signer.prepare_parts(head, body, timestamp=t)
    except Exception:  # the parent signs it itself and meets the same
        return b""
    # Its line endings made CRLF (a bare CR or LF, no final CRLF): the parent signs it itself. Making
    # them CRLF only ever adds bytes, so the lengths tell, without a second copy of the message.
    if len(unsigned.message) != len(head) + sum(map(len, body)):
        return b""
    signatures = signer.sign_digests(unsigned.digests)
    if not signer.verifies(signatures[0], unsigned.digests[0]):  # the RSA one: a fault is never sent
        raise SystemExit("dkim_child: an RSA signature that does not verify")
    return signer.signature_headers(unsigned, signatures)


def main() -> None:
    """The signing process: the signer's keys, then every batch's signature headers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # it ends with its input: the parent stops it
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(AttributeError, OSError):  # Linux: its wake-ups do not preempt the sending loop
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything else written to stdout (a stray print, a library) goes to stderr
    requests = sys.stdin.buffer
    handover = _read_frame(requests)
    if handover is None:
        return
    from feedservice.adapters.dkim import DkimSigner

    signer = DkimSigner.from_handover(handover)
    segments: list[tuple[bytes, bytes]] = []
    _write_frame(answers, READY)
    try:
        while (batch := _read_frame(requests)) is not None:
            _write_frame(answers, _answer(signer, segments, batch))
        _write_frame(answers, CPU.pack(time.process_time()))
    except BrokenPipeError:  # the parent is gone
        pass


if __name__ == "__main__":
    main()
