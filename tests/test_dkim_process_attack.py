"""The signing process (``adapters/dkim_process.py``, ``adapters/dkim_child.py``) attacked as a
stranger would: messages the pipe's format cannot carry, senders dropped at the wrong moment, bare
line endings, a child that answers well-formed signatures for the wrong messages. The promise:
every message goes out once, under signatures dkimpy verifies. Each test failed before its fix
(see CHANGELOG.md)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time

import pytest

from feedservice import aio
from feedservice.adapters import dkim_child, dkim_process
from feedservice.adapters.dkim import DkimSigner
from feedservice.adapters.dkim_process import ProcessSigner
from tests.test_dkim import DOMAIN, _tags, _verifies
from tests.test_dkim_process import SEGMENT, TAIL, _dkim, _expected, _gone, _parts, _ready, _rounds

MANY = [b"x"] * 70_000  # more pieces than a record counts: that message is signed on the loop


@pytest.fixture(autouse=True)
def start_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The child starts with a run's first signed message here (``START_AFTER``'s own test aside)."""
    monkeypatch.setattr(dkim_process, "START_AFTER", 1)


def _with(i: int, segment: bytes) -> tuple[bytes, list[bytes]]:
    """Reader ``i``'s message with ``segment`` in place of the template's."""
    head, body = _parts(i)
    return head, [segment, body[1], TAIL]


def test_a_message_the_pipe_cannot_carry_leaves_the_segment_tables_agreeing(
    keys: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message of too many pieces, alone in its loop iteration, once the table is full: its
    records (the table's reset, its new segments) were never written but the loop's table had
    changed, so the child signed the next reader's body with another segment — a signature no
    receiver verifies, and no comparison noticed. The child must sign what the reader gets."""
    monkeypatch.setattr(dkim_child, "SEGMENTS", 3)
    dkim = _dkim(keys)
    other = b"<div>  another  segment\r\n" * 40
    new = b"<b>  a new segment\r\n" * 30

    async def go() -> tuple[list[bytes], ProcessSigner]:
        signer = ProcessSigner(dkim)
        await _ready(signer)
        out = [await signer.sign_parts(*_parts(0)), await signer.sign_parts(*_with(1, other))]  # the table: full
        out.append(await signer.sign_parts(_parts(2)[0], [new, *MANY, TAIL]))  # a reset and a segment, unsent
        for i in range(3, 9):
            out.append(await signer.sign_parts(*_with(i, new if i % 2 else SEGMENT)))
        await signer.aclose()
        return out, signer

    signed, signer = aio.run(go())
    assert signer.failure is None and signer.signed == 8
    asked = [_parts(0), _with(1, other), (_parts(2)[0], [new, *MANY, TAIL])]
    asked += [_with(i, new if i % 2 else SEGMENT) for i in range(3, 9)]
    for i, (message, parts) in enumerate(zip(signed, asked, strict=True)):
        assert message == dkim.sign_parts(*parts), i
        assert _verifies(message, keys), i


def test_a_new_segment_after_one_the_pipe_never_carried_does_not_crash_the_child(
    keys: dict[str, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    """The same without a reset: the child met a segment number it was never sent, died with a
    traceback on the service's stderr, and the rest of the run was signed on the loop."""
    dkim = _dkim(keys)
    new = b"<b>  a new segment\r\n" * 30

    async def go() -> tuple[list[bytes], ProcessSigner]:
        signer = ProcessSigner(dkim)
        await _ready(signer)
        out = [await signer.sign_parts(_parts(0)[0], [new, *MANY, TAIL])]
        out += [await signer.sign_parts(*_with(i, new)) for i in range(1, 4)]
        await signer.aclose()
        return out, signer

    with caplog.at_level(logging.WARNING):
        signed, signer = aio.run(go())
    assert signed == [dkim.sign_parts(_parts(0)[0], [new, *MANY, TAIL])] + [
        dkim.sign_parts(*_with(i, new)) for i in range(1, 4)
    ]
    assert signer.failure is None and signer.signed == 3 and signer.returncode == 0
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_dropped_message_the_pipe_cannot_carry_holds_up_no_other(
    keys: dict[str, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    """A message dropped (deferred, the run stopping: ``Outgoing.drop`` cancels it) before its
    batch went down, that the pipe cannot carry: the loop set a result on the cancelled future, the
    error escaped the batch's callback with a traceback, and every later message of that loop
    iteration waited for ever."""
    dkim = _dkim(keys)

    async def go() -> tuple[list[bytes], ProcessSigner]:
        signer = ProcessSigner(dkim)
        await _ready(signer)
        dropped = signer.sign_parts(_parts(0)[0], [SEGMENT, *MANY, TAIL])
        rest = [signer.sign_parts(*_parts(i)) for i in range(1, 5)]
        dropped.cancel()
        try:
            return await asyncio.wait_for(asyncio.gather(*rest), 10), signer
        finally:
            await signer.aclose()

    with caplog.at_level(logging.WARNING):
        signed, signer = aio.run(go())
    assert signed == [dkim.sign_parts(*_parts(i)) for i in range(1, 5)]
    assert signer.failure is None
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


BARE = [
    (b"From: n@newsspace.kr\nTo: r@example.com\nSubject: x\n\n", [b"<p>  hello\n", b"https://f.kr/u/1", b"\n</p>\n"]),
    (b"From: n@newsspace.kr\r\nTo: r@example.com\r\n\r\n", [b"<p>  hello\r\n", b"https://f.kr/u/1"]),  # no final CRLF
    (b"From: n@newsspace.kr\rTo: r@example.com\r\r", [b"<p>  hello\r", b"</p>\r\n"]),
]


@pytest.mark.parametrize(("head", "body"), BARE, ids=["bare LF", "no final CRLF", "bare CR"])
def test_bare_line_endings_come_out_as_the_loop_makes_them(
    keys: dict[str, bytes], head: bytes, body: list[bytes]
) -> None:
    """``sign_parts`` gives CRLF line endings throughout and a final CRLF (what SMTP needs: a
    bare LF is refused by many relays since SMTP smuggling); the child's answers went on top of the
    bytes as given, and the comparison with the loop's signing gave the child up as garbage. Such a
    message is signed on the loop; the child goes on with the rest."""
    dkim = _dkim(keys)

    async def go() -> tuple[list[bytes], ProcessSigner]:
        signer = ProcessSigner(dkim)
        await _ready(signer)
        first = await signer.sign_parts(head, body)  # the first answer: compared with the loop's
        second = await signer.sign_parts(head, body)  # the next: not compared
        after = await signer.sign_parts(*_parts(1))
        await signer.aclose()
        return [first, second, after], signer

    signed, signer = aio.run(go())
    expected = dkim.sign_parts(head, body)
    assert expected.count(b"\n") == expected.count(b"\r\n") == expected.count(b"\r") and expected.endswith(b"\r\n")
    assert signed == [expected, expected, dkim.sign_parts(*_parts(1))]
    assert signer.failure is None and signer.signed == 1
    assert _verifies(signed[1], keys)


ROTATING = r"""
import sys
from feedservice.adapters import dkim_child, dkim_process
from feedservice.adapters.dkim import DkimSigner
inp, out = sys.stdin.buffer, sys.stdout.buffer
signer = DkimSigner.from_handover(dkim_child._read_frame(inp))
dkim_child._write_frame(out, dkim_child.READY)
segments, batches = [], 0
while (batch := dkim_child._read_frame(inp)) is not None:
    payload, answers, at = dkim_child._answer(signer, segments, batch), [], 0
    while at < len(payload):
        length = dkim_child.ANSWER.unpack_from(payload, at)[1]
        answers.append(payload[at : at + dkim_child.ANSWER.size + length])
        at += dkim_child.ANSWER.size + length
    batches += 1
    if batches > 1:  # right at first, for the comparison; then each message gets the next one's
        answers = answers[1:] + answers[:1]
    dkim_child._write_frame(out, b"".join(answers))
dkim_child._write_frame(out, dkim_child.CPU.pack(0.0))
"""


def test_a_child_answering_for_the_wrong_messages_costs_no_reader_a_valid_signature(
    keys: dict[str, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    """A child whose answers are real signatures, well formed, but each for the next message of
    its batch (an ordering fault, from its second batch on): the comparison sees one answer in 256,
    so every other reader got a signature over someone else's To and link, which no receiver
    verifies (DMARC ``p=reject``: the edition refused, ``5.7.x``). Each answer must be known to be
    for its own message before it goes out."""
    dkim = _dkim(keys, ed25519=True)

    async def go() -> tuple[list[bytes], ProcessSigner]:
        signer = ProcessSigner(dkim, timeout=2.0, command=[sys.executable, "-c", ROTATING])
        await _ready(signer)
        signed = await _rounds(signer, 5, 8)
        await signer.aclose()
        return signed, signer

    with caplog.at_level(logging.WARNING):
        signed, signer = aio.run(go())
    assert signed == _expected(dkim, 40)
    for i, message in enumerate(signed):
        assert _verifies(message, keys, 0) and _verifies(message, keys, 1), i
    assert signer.signed == 8 and signer.failure is not None and "garbage" in signer.failure
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1


@pytest.mark.parametrize("when", ["answering", "starting"])
def test_a_loop_busy_past_the_timeout_keeps_its_child(
    keys: dict[str, bytes], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """The loop held up past the child's timeout (a slow commit, the service paused with SIGSTOP
    and resumed), its child's answer (or hello) long in the pipe: the watchdog ran before the
    loop read it, gave a working child up as hung, and the rest of the run was signed on the loop."""
    monkeypatch.setattr(dkim_process, "START_TIMEOUT", 1.0)
    dkim = _dkim(keys)

    async def go() -> tuple[list[bytes], ProcessSigner]:
        signer = ProcessSigner(dkim, timeout=1.0)
        if when == "starting":
            await signer.sign_parts(*_parts(-1))
            while signer.pid is None:
                await asyncio.sleep(0.01)
            time.sleep(3)  # its hello arrives meanwhile
        await _ready(signer)
        waiting = [signer.sign_parts(*_parts(i)) for i in range(8)]
        await asyncio.sleep(0)  # the batch goes down
        if when == "answering":
            time.sleep(1.5)  # its answer arrives meanwhile
        signed = await asyncio.gather(*waiting)
        signed += await _rounds(signer, 1, 8)
        await signer.aclose()
        return signed, signer

    with caplog.at_level(logging.WARNING):
        signed, signer = aio.run(go())
    assert signed == _expected(dkim, 8) * 2
    assert signer.failure is None and signer.signed == 16 and signer.returncode == 0
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


WRITER = r"""
import sys, time
from feedservice.adapters import dkim_child
mode, held = sys.argv[1], []
def write(stream, payload):
    data = dkim_child.frame(payload)
    if mode == "a byte a write":
        for i in range(len(data)):
            stream.write(data[i : i + 1])
            stream.flush()
        return
    if mode == "two answers a write" and len(payload) > dkim_child.CPU.size and not held:
        held.append(data)  # the next batch's answer goes with it
        return
    if mode == "just under the timeout" and len(payload) > dkim_child.CPU.size:
        time.sleep(0.7)
    if mode == "noise on stdout and stderr":  # a library's stray print, a warning
        print("a stray print", flush=True)
        print("a warning", file=sys.stderr, flush=True)
    stream.write(b"".join(held) + data)
    stream.flush()
    held.clear()
dkim_child._write_frame = write
dkim_child.main()
"""


@pytest.mark.parametrize(
    "mode", ["a byte a write", "two answers a write", "just under the timeout", "noise on stdout and stderr"]
)
def test_answers_however_they_arrive_are_taken(
    keys: dict[str, bytes], caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    """Guard: the real child, its answers written a byte at a time, two batches' answers in one
    write, each 0.7 s after its batch (the timeout is 1 s, with a second batch queued behind), or
    with prints to its stdout (which goes to its stderr: the pipe is not its stdout) around them:
    every answer taken, in order, none given up; the ``t=`` of each batch that of the clock then."""
    ticks = iter(range(1_751_400_000, 1_751_500_000, 7))
    dkim = DkimSigner(selector="news", domain=DOMAIN, private_key_pem=keys["rsa"], clock=lambda: next(ticks))

    async def go() -> tuple[list[bytes], ProcessSigner]:
        signer = ProcessSigner(dkim, timeout=1.0, command=[sys.executable, "-c", WRITER, mode])
        await _ready(signer)
        out: list[bytes] = []
        for r in range(3):
            first = [signer.sign_parts(*_parts(16 * r + i)) for i in range(8)]
            await asyncio.sleep(0)  # the first batch goes down; the second in the next iteration
            second = [signer.sign_parts(*_parts(16 * r + 8 + i)) for i in range(8)]
            out += await asyncio.gather(*first, *second)
        await signer.aclose()
        return out, signer

    with caplog.at_level(logging.WARNING):
        signed, signer = aio.run(go())
    assert signer.failure is None and signer.signed == 48 and signer.returncode == 0
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    stamps = {_tags(message)["t"] for message in signed}
    assert len(stamps) == 6  # a t= a batch
    for i, message in enumerate(signed):
        assert f"To: r{i}@example.com".encode() in message and _verifies(message, keys), i


def test_odd_shapes_come_out_as_the_loop_makes_them_and_verify(keys: dict[str, bytes]) -> None:
    """Guard: empty pieces, an empty body, a head without its empty line, raw UTF-8 headers, a 5 MB
    body, a piece that looks like a header, trailing empty lines, whitespace and a CRLF split across
    pieces, a folded header, 600 segments in one message: the loop's bytes, verified by dkimpy, all
    signed by the child, which goes on."""
    dkim = _dkim(keys, ed25519=True)
    head = _parts(0)[0]
    shapes = [
        (head, [b"", SEGMENT, b"", b"https://f.kr/u/0", b"", TAIL, b""]),
        (head, []),
        (b"From: n@newsspace.kr\r\nTo: r@example.com\r\n", []),
        ("From: 뉴스 <n@newsspace.kr>\r\nTo: 독자 <r@example.com>\r\nSubject: 오늘  의\r\n\r\n".encode(), [SEGMENT]),
        (head, [SEGMENT * 2000, b"https://f.kr/u/0", TAIL]),
        (head, [b"From: someone@example.com\r\n", b"https://f.kr/u/0", TAIL]),
        (head, [SEGMENT, b"https://f.kr/u/0", b"\r\n\r\n\r\n"]),
        (head, [b"<p>  a  ", b"  b\r\n", TAIL]),
        (head, [b"<p> a\r", b"\n</p>\r\n"]),
        (b"From: n@newsspace.kr\r\nSubject: a\r\n\tfolded\r\n\r\n", [SEGMENT]),
        (head, [f"<p> {i}\r\n".encode() for i in range(600)]),
    ]

    async def go() -> tuple[list[bytes], ProcessSigner]:
        signer = ProcessSigner(dkim)
        await _ready(signer)
        signed = [await signer.sign_parts(*_parts(1))]  # the first answer, compared
        signed += await asyncio.gather(*(signer.sign_parts(*shape) for shape in shapes))
        await signer.aclose()
        return signed, signer

    signed, signer = aio.run(go())
    assert signed == [dkim.sign_parts(*_parts(1))] + [dkim.sign_parts(*shape) for shape in shapes]
    assert signer.failure is None and signer.signed == 1 + len(shapes)
    for i, message in enumerate(signed):
        assert _verifies(message, keys, 0) and _verifies(message, keys, 1), i


async def _holding(dkim: DkimSigner, count: int) -> tuple[ProcessSigner, list[asyncio.Future[bytes]]]:
    """A started child that holds ``count`` messages (their batch written), and their futures."""
    signer = ProcessSigner(dkim, timeout=1.0)
    await _ready(signer)
    waiting = [signer.sign_parts(*_parts(i)) for i in range(count)]
    await asyncio.sleep(0)  # the batch goes down
    return signer, waiting


def test_a_close_cancelled_leaves_no_message_waiting(keys: dict[str, bytes]) -> None:
    """The run's closing cancelled (a second SIGTERM, a shutdown timeout) while a stopped child holds
    a batch: the child was killed but what it held never got a result, though ``RunSigner``
    promises each future its signed message."""
    dkim = _dkim(keys)

    async def go() -> tuple[list[bytes], ProcessSigner]:
        signer, waiting = await _holding(dkim, 8)
        assert signer.pid is not None
        os.kill(signer.pid, signal.SIGSTOP)
        closing = asyncio.create_task(signer.aclose())
        await asyncio.sleep(0.2)
        closing.cancel()
        await asyncio.gather(closing, return_exceptions=True)
        return await asyncio.wait_for(asyncio.gather(*waiting), 5), signer

    signed, signer = aio.run(go())
    assert signed == _expected(dkim, 8)
    assert signer.state == "closed" and signer.returncode == -signal.SIGKILL and _gone(signer.pid)


def test_a_child_killed_as_the_run_closes_costs_no_message(
    keys: dict[str, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    """Guard: the OOM killer takes the child right after the run began closing, 64 messages with it:
    each comes back signed on the loop, one warning, no process left."""
    dkim = _dkim(keys)

    async def go() -> tuple[list[bytes], ProcessSigner]:
        signer, waiting = await _holding(dkim, 64)
        closing = asyncio.create_task(signer.aclose())
        await asyncio.sleep(0)  # its stdin closed
        assert signer.pid is not None and signer.state == "closing"
        os.kill(signer.pid, signal.SIGKILL)
        await closing
        return await asyncio.wait_for(asyncio.gather(*waiting), 5), signer

    with caplog.at_level(logging.WARNING):
        signed, signer = aio.run(go())
    assert signed == _expected(dkim, 64)
    assert signer.returncode == -signal.SIGKILL and _gone(signer.pid)
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
