"""DKIM's signing process (``python -m feedservice.adapters.dkim_child``), and the wire format
between it and its parent (``adapters/dkim_process.py``, which says why and how it is run).

Frames, both ways: a 4-byte big-endian length, then the payload.

- Parent to child: the signer's ``handover`` (its keys, selectors and domain), then batches: the
  ``t=`` (8 bytes) and the number of messages (4), then records, each a kind byte: ``S`` +
  length + bytes (the next template segment), ``C`` (forget the segments), ``M`` + the head's
  length and the number of pieces, one signed 4-byte code a piece (a segment's number, or
  ``~length`` of a piece given inline), the head, the inline pieces.
- Child to parent: ``ready``, then per batch each message's signature headers, in order (length
  + bytes; length 0: the parent signs it itself, for it cannot be signed, or not as the bytes the
  parent puts the headers on: a bare CR or LF, no final CRLF); after its stdin ends, its CPU
  seconds (a double).

The child signs with the very ``DkimSigner`` code the parent would run, so a message comes out
the same bytes either way; it imports nothing of ours but that (and what it imports).
"""

from __future__ import annotations

import contextlib
import os
import signal
import struct
import sys
import time
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from feedservice.adapters.dkim import DkimSigner

__all__ = ["BATCH", "CPU", "LENGTH", "MAX_HEADERS", "READY", "Garbage", "encode", "frame", "main", "split_answers"]

SEGMENTS = 256  # template segments the child keeps, and one message's more (an edition has a few dozen)
MAX_HEADERS = 4096  # bytes of signature headers a message, at most (RSA-4096 and Ed25519: ~1.4 KB)
READY = b"ready"
LENGTH = struct.Struct("!I")
CPU = struct.Struct("!d")
BATCH = struct.Struct("!QI")  # t=, messages
MESSAGE = struct.Struct("!IH")  # the head's length, the pieces


class Garbage(Exception):
    """The child answered something that is not what was asked for."""


def frame(payload: bytes) -> bytes:
    return LENGTH.pack(len(payload)) + payload


# -- the parent's side -----------------------------------------------------------------------------
def encode(out: list[bytes], segments: dict[bytes, int], head: bytes, body: Sequence[bytes]) -> None:
    """One message's records, appended to ``out``: the segments the child lacks (``segments``: the
    ones it has, by their number, kept up to date here), then the message. A message the format
    cannot hold (``struct.error``, ``OverflowError``) changes neither: the table and the records
    the child reads change together, or the child would sign another segment under that number."""
    reset = len(segments) >= SEGMENTS  # between messages: a message's codes name the segments of its time
    known = {} if reset else segments
    new: dict[bytes, int] = {}
    records: list[bytes] = [b"C"] if reset else []
    codes, inline = [], []
    for piece in body:
        number = known.get(piece)
        if number is None:
            number = new.get(piece)
        if number is None:
            if not (b" " in piece or b"\n" in piece or b"\r" in piece or b"\t" in piece):
                codes.append(~len(piece))  # a reader's own piece (a link): sent as it is
                inline.append(piece)
                continue
            number = new[piece] = len(known) + len(new)
            records += (b"S", LENGTH.pack(len(piece)), piece)
        codes.append(number)
    record = MESSAGE.pack(len(head), len(codes)) + struct.pack(f"!{len(codes)}i", *codes)
    if reset:
        segments.clear()
    segments.update(new)
    out += records
    out += (b"M", record, head, *inline)


def split_answers(payload: bytes, count: int) -> list[bytes]:
    """A batch's answer as each message's signature headers, checked for their shape."""
    answers, at = [], 0
    for _ in range(count):
        if at + LENGTH.size > len(payload):
            raise Garbage(f"{count} answers that end early")
        (length,) = LENGTH.unpack_from(payload, at)
        headers = payload[at + LENGTH.size : at + LENGTH.size + length]
        at += LENGTH.size + length
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


def _answer(signer: DkimSigner, segments: list[bytes], batch: bytes) -> bytes:
    """Each message of ``batch`` signed: its signature headers, length first (0: it cannot be)."""
    t, count = BATCH.unpack_from(batch)
    at, out = BATCH.size, []
    while at < len(batch):
        kind, at = batch[at : at + 1], at + 1
        if kind == b"C":
            segments.clear()
        elif kind == b"S":
            (length,) = LENGTH.unpack_from(batch, at)
            segments.append(batch[at + LENGTH.size : at + LENGTH.size + length])
            at += LENGTH.size + length
        elif kind == b"M":
            head_length, pieces = MESSAGE.unpack_from(batch, at)
            at += MESSAGE.size
            codes = struct.unpack_from(f"!{pieces}i", batch, at)
            at += 4 * pieces
            head, at = batch[at : at + head_length], at + head_length
            body = []
            for code in codes:
                if code >= 0:
                    body.append(segments[code])
                else:
                    body.append(batch[at : at + ~code])
                    at += ~code
            out.append(_signed(signer, head, body, t))
        else:
            raise SystemExit(f"dkim_child: a record of kind {kind!r}")
    if len(out) != count:
        raise SystemExit(f"dkim_child: {len(out)} messages in a batch of {count}")
    return b"".join(out)


def _signed(signer: DkimSigner, head: bytes, body: list[bytes], t: int) -> bytes:
    try:
        unsigned = signer.prepare_parts(head, body, timestamp=t)
    except Exception:  # the parent signs it itself and meets the same
        return LENGTH.pack(0)
    if unsigned.message != head + b"".join(body):  # its line endings made CRLF: the parent signs it itself
        return LENGTH.pack(0)
    signatures = signer.sign_digests(unsigned.digests)
    if not signer.verifies(signatures[0], unsigned.digests[0]):  # the RSA one: a fault is never sent
        raise SystemExit("dkim_child: an RSA signature that does not verify")
    headers = signer.signature_headers(unsigned, signatures)
    return LENGTH.pack(len(headers)) + headers


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
    segments: list[bytes] = []
    _write_frame(answers, READY)
    try:
        while (batch := _read_frame(requests)) is not None:
            _write_frame(answers, _answer(signer, segments, batch))
        _write_frame(answers, CPU.pack(time.process_time()))
    except BrokenPipeError:  # the parent is gone
        pass


if __name__ == "__main__":
    main()
