"""The signing process (``adapters/dkim_process.py``): the signatures it makes are the loop's, the
key reaches it through the pipe only, and whatever becomes of it — killed, stopped, answering
garbage, never starting — every message still goes out signed and valid, once, and no process is
left behind. The end-to-end runs send an edition through an aiosmtpd relay and verify every
message it received with dkimpy."""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from feedservice import aio
from feedservice.adapters import dkim_child, dkim_process
from feedservice.adapters.dkim import DkimSigner, LoopSigner
from feedservice.adapters.dkim_process import CHILD, ProcessSigner
from feedservice.bootstrap import App, make_app
from feedservice.config import load_settings
from feedservice.errors import DeliveryError
from feedservice.ports import RunSigner
from feedservice.services.deliver import SendReport
from tests.conftest import FeedServer, free_port
from tests.test_deliver import FRESH, KST_DAY, SEND_TIME, TODAY, FaultySink, _add, _app, _cli
from tests.test_dkim import DOMAIN, _verifies

LOG = "feedservice.adapters.dkim_process"


@pytest.fixture(autouse=True)
def start_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The child starts with a run's first signed message here (``START_AFTER``'s own test aside)."""
    monkeypatch.setattr(dkim_process, "START_AFTER", 1)


def _dkim(keys: dict[str, bytes], *, ed25519: bool = False) -> DkimSigner:
    return DkimSigner(
        selector="news",
        domain=DOMAIN,
        private_key_pem=keys["rsa"],
        ed25519_key_pem=keys["ed25519"] if ed25519 else None,
        clock=lambda: 1_751_400_000,
    )


SEGMENT = "<p>  오늘의  소식\r\n".encode() * 200  # a template's segment: the same object for every reader
TAIL = b"\r\n</p>\r\n"


def _parts(i: int) -> tuple[bytes, list[bytes]]:
    """A message as the sending loop hands it over: the head, and the body in template segments
    around the reader's link."""
    head = f"From: 뉴스스페이스 <newsletter@newsspace.kr>\r\nTo: r{i}@example.com\r\nSubject: 브리핑 {i}\r\n\r\n"
    return head.encode(), [SEGMENT, f"https://f.kr/u/{i}".encode(), TAIL]


async def _ready(signer: ProcessSigner) -> None:
    """Sign one message (which starts the child), then wait until the child answers."""
    await signer.sign_parts(*_parts(-1))
    deadline = time.monotonic() + 30
    while signer.state == "starting":
        assert time.monotonic() < deadline, "the signing process did not start"
        await asyncio.sleep(0.01)


async def _rounds(signer: RunSigner, rounds: int, per_round: int) -> list[bytes]:
    """``rounds`` loop iterations, each asking for ``per_round`` signatures at once."""
    out: list[bytes] = []
    for r in range(rounds):
        out += await asyncio.gather(*(signer.sign_parts(*_parts(r * per_round + i)) for i in range(per_round)))
    return out


def _expected(dkim: DkimSigner, count: int) -> list[bytes]:
    return [dkim.sign_parts(*_parts(i)) for i in range(count)]


def _gone(pid: int | None) -> bool:
    """Whether no process has ``pid`` any more (a zombie not yet reaped counts as there)."""
    return pid is not None and not Path(f"/proc/{pid}").exists()


def _signing_children(parent: int) -> list[int]:
    """The signing processes whose parent is ``parent``, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and CHILD.encode() in cmdline:
            found.append(int(entry.name))
    return found


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOG and r.levelno >= logging.WARNING]


# -- the signer on its own --------------------------------------------------------------------------
@pytest.mark.parametrize("ed25519", [False, True], ids=["rsa", "rsa+ed25519"])
def test_the_process_signs_what_the_loop_signs_a_batch_a_write(
    keys: dict[str, bytes], monkeypatch: pytest.MonkeyPatch, ed25519: bool
) -> None:
    """Byte for byte the loop's signing; each loop iteration's messages in one write, a template
    segment down the pipe once; one answer in CHECK_EVERY compared with the loop's own."""
    monkeypatch.setattr(dkim_process, "CHECK_EVERY", 16)
    dkim = _dkim(keys, ed25519=ed25519)
    writes: list[bytes] = []

    class Counted:
        def __init__(self, pipe: Any) -> None:
            self.pipe = pipe

        def write(self, data: bytes) -> None:
            writes.append(bytes(data))
            self.pipe.write(data)

        def close(self) -> None:
            self.pipe.close()

    async def go() -> tuple[list[bytes], ProcessSigner, float]:
        signer = ProcessSigner(dkim)
        await _ready(signer)
        stdin = signer._stdin()
        assert stdin is not None
        monkeypatch.setattr(signer, "_stdin", lambda: Counted(stdin))
        signed = await _rounds(signer, 5, 16)
        return signed, signer, await signer.aclose()

    signed, signer, cpu = aio.run(go())
    assert signed == _expected(dkim, 80)  # byte for byte what signing on the loop gives
    assert signer.signed == 80 and signer.checked == 5 and signer.state == "closed"
    assert len(writes) == 5  # one a loop iteration
    assert [w.count(SEGMENT) for w in writes] == [1, 0, 0, 0, 0]  # the segment once, then its number
    assert all(len(w) < len(SEGMENT) for w in writes[1:])
    assert all(f"https://f.kr/u/{i}".encode() in writes[i // 16] for i in range(80))
    assert all(_verifies(m, keys, 0) for m in signed[:3])
    if ed25519:
        assert all(_verifies(m, keys, 1) for m in signed[:3])
    assert signer.returncode == 0  # it stopped by itself
    assert 0 < cpu < 30  # it reported its CPU time


def test_odd_messages_come_out_as_the_loop_makes_them(keys: dict[str, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    """What the child or the pipe's format cannot take, among messages it can: one without a From
    is refused as the loop refuses it, a body of more pieces than a record counts is signed on the
    loop; readers' pieces with whitespace (a new segment each) and more segments than the child
    keeps come out right. The child goes on signing the rest."""
    monkeypatch.setattr(dkim_child, "SEGMENTS", 3)
    dkim = _dkim(keys)
    no_from = (b"To: a@example.com\r\nSubject: x\r\n\r\n", [SEGMENT, b"https://f.kr/u/0", TAIL])
    spaced = [(_parts(i)[0], [SEGMENT, f"r {i}\r\n".encode(), TAIL]) for i in range(8)]
    many = (_parts(0)[0], [SEGMENT, *([b"x"] * 70_000), TAIL])

    async def go() -> tuple[list[bytes | BaseException], ProcessSigner]:
        signer = ProcessSigner(dkim)
        await _ready(signer)
        asked = [signer.sign_parts(*m) for m in [no_from, *spaced, many, *(_parts(i) for i in range(4))]]
        results = await asyncio.gather(*asked, return_exceptions=True)
        await signer.aclose()
        return results, signer

    results, signer = aio.run(go())
    assert isinstance(results[0], DeliveryError) and "without a From" in str(results[0])
    assert results[1:9] == [dkim.sign_parts(*m) for m in spaced]
    assert results[9] == dkim.sign_parts(*many)
    assert results[10:] == _expected(dkim, 4)
    assert signer.signed == 12 and signer.failure is None and signer.returncode == 0


def test_the_key_reaches_the_child_through_the_pipe_only(
    keys: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FS_TEST_DKIM", keys["rsa"].decode())  # as a configured key sits in the parent's environment
    dkim = _dkim(keys)

    async def go() -> tuple[bytes, bytes]:
        signer = ProcessSigner(dkim)
        await _ready(signer)
        assert signer.pid is not None
        proc = Path(f"/proc/{signer.pid}")
        try:
            return (proc / "cmdline").read_bytes(), (proc / "environ").read_bytes()
        finally:
            await signer.aclose()

    cmdline, environ = aio.run(go())
    assert cmdline.split(b"\0")[:3] == [sys.executable.encode(), b"-m", CHILD.encode()]
    names = {entry.split(b"=", 1)[0].decode() for entry in environ.split(b"\0") if entry}
    assert names <= {"PATH", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "PYTHONPATH"}
    body = b"".join(keys["rsa"].splitlines()[1:-1])
    for secret in (body[:40], body[-40:], b"PRIVATE KEY"):
        assert secret not in cmdline and secret not in environ


FAKE_CHILD = r"""
import base64, os, struct, sys, time
from feedservice.adapters.dkim_child import ANSWER, read_batch
mode, inp, out = sys.argv[1], sys.stdin.buffer, sys.stdout.buffer
def read():
    head = inp.read(4)
    return inp.read(struct.unpack("!I", head)[0]) if len(head) == 4 else None
def write(payload):
    out.write(struct.pack("!I", len(payload)) + payload)
    out.flush()
def answers(headers, prints):  # each message's, as the child's are: its fingerprint first
    return b"".join(ANSWER.pack(fingerprint, len(headers)) + headers for fingerprint in prints)
read()
if mode == "silent":
    time.sleep(60)
write({"wrong hello": b"hello", "long hello": b"ready..."}.get(mode, b"ready"))
segments = []
while (batch := read()) is not None:
    prints = [fingerprint for fingerprint, _, _ in read_batch(segments, batch)[1]]
    forged = b"DKIM-Signature: v=1; a=rsa-sha256; b=" + base64.b64encode(os.urandom(256)) + b"\r\n"
    if mode == "random":
        write(answers(forged, prints))
    elif mode == "short":
        write(answers(forged, prints[:-1]))
    elif mode == "exits":
        sys.exit(3)
    elif mode == "chatters":
        out.write(b"a stray print\n")
        out.flush()
    elif mode == "floods":
        while True:
            out.write(b"\0" * 65536)
"""

FAULTS = {
    "forged signatures": (["random"], "garbage: signature headers that are not the loop's"),
    "a short answer": (["short"], "garbage: 8 answers that end early"),
    "exits": (["exits"], "it ended (exit status 3)"),
    "stray output": (["chatters"], f"garbage: a frame of {int.from_bytes(b'a st')} bytes for 8 answers"),
    "a wrong hello": (["wrong hello"], "garbage: b'hello' to its keys"),
    "a long hello": (["long hello"], "garbage: a frame of 8 bytes for its hello (5)"),
    "never answers": (["silent"], "it did not start within 1 s"),
}


@pytest.mark.parametrize(("args", "said"), FAULTS.values(), ids=FAULTS.keys())
def test_a_child_that_fails_costs_no_message(
    keys: dict[str, bytes],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    said: str,
) -> None:
    """Whatever the child does, every message comes back signed as the loop signs it; one warning."""
    monkeypatch.setattr(dkim_process, "START_TIMEOUT", 1.0)
    dkim = _dkim(keys, ed25519=True)

    async def go() -> tuple[list[bytes], ProcessSigner]:
        signer = ProcessSigner(dkim, timeout=1.0, command=[sys.executable, "-c", FAKE_CHILD, *args])
        await signer.sign_parts(*_parts(-1))
        if args != ["silent"]:
            await _ready(signer)
        signed = await _rounds(signer, 4, 8)
        deadline = time.monotonic() + 10
        while signer.state != "failed" and time.monotonic() < deadline:  # the silent one: at its start's deadline
            await asyncio.sleep(0.05)
        await signer.aclose()
        return signed, signer

    with caplog.at_level(logging.WARNING, logger=LOG):
        signed, signer = aio.run(go())
    assert signed == _expected(dkim, 32)
    assert signer.signed == 0 and signer.failure is not None and said in signer.failure
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and said in warnings[0] and "signed on the event loop" in warnings[0]
    assert signer.returncode is not None
    assert _gone(signer.pid)


def test_a_child_that_floods_its_output_leaves_no_open_pipe(keys: dict[str, bytes]) -> None:
    """A child that writes without end (its frames' lengths zero, as garbage): it is given up at
    the first frame, and its pipes are closed however much it wrote, run after run — a
    ``worker`` that met it every day kept one more open pipe each time."""
    dkim = _dkim(keys)

    async def go() -> tuple[list[ProcessSigner], int, int]:
        signers, before = [], 0
        for run in range(6):
            if run == 1:  # after the first, which opens what the loop keeps for its children
                before = len(os.listdir("/proc/self/fd"))
            signer = ProcessSigner(dkim, timeout=1.0, command=[sys.executable, "-c", FAKE_CHILD, "floods"])
            await _ready(signer)
            assert await _rounds(signer, 1, 8) == _expected(dkim, 8)
            await asyncio.sleep(0.2)  # it fills the pipe and our buffer meanwhile
            await signer.aclose()
            signers.append(signer)
        return signers, before, len(os.listdir("/proc/self/fd"))

    signers, before, after = aio.run(go())  # uvloop: it failed to close a loop with a pipe open
    assert after == before
    for signer in signers:
        assert signer.failure is not None and "garbage: a frame of 0 bytes" in signer.failure
        assert signer.pid is not None and _gone(signer.pid)


def test_a_child_that_cannot_start_costs_no_message(keys: dict[str, bytes], caplog: pytest.LogCaptureFixture) -> None:
    dkim = _dkim(keys)

    async def go() -> tuple[list[bytes], ProcessSigner]:
        signer = ProcessSigner(dkim, command=["/nonexistent/python"])
        signed = await _rounds(signer, 3, 4)
        await asyncio.sleep(0.1)
        signed += await _rounds(signer, 1, 4)
        await signer.aclose()
        return signed, signer

    with caplog.at_level(logging.WARNING, logger=LOG):
        signed, signer = aio.run(go())
    assert signed == _expected(dkim, 12) + _expected(dkim, 4)
    assert signer.state == "closed" and signer.transport is None
    assert len(_warnings(caplog)) == 1 and "could not be started" in _warnings(caplog)[0]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "stopped"])
def test_a_killed_or_stopped_child_costs_no_message(
    keys: dict[str, bytes], caplog: pytest.LogCaptureFixture, sig: int
) -> None:
    dkim = _dkim(keys)

    async def go() -> tuple[list[bytes], ProcessSigner, float]:
        signer = ProcessSigner(dkim, timeout=1.0)
        await _ready(signer)
        first = await _rounds(signer, 2, 8)
        assert signer.pid is not None
        os.kill(signer.pid, sig)
        started = time.monotonic()
        rest = await _rounds(signer, 2, 8)
        waited = time.monotonic() - started
        await signer.aclose()
        return first + rest, signer, waited

    with caplog.at_level(logging.WARNING, logger=LOG):
        signed, signer, waited = aio.run(go())
    assert signed == _expected(dkim, 16) + [dkim.sign_parts(*_parts(i)) for i in range(16)]
    assert signer.signed == 16  # the first two rounds, by the child
    said = "it ended (exit status -9)" if sig == signal.SIGKILL else "no answer within 1 s (stopped or hung)"
    assert _warnings(caplog) == [
        f"DKIM signing process: {said}; 8 waiting messages and the rest of this run are signed on the event loop"
    ]
    assert waited < (5 if sig == signal.SIGKILL else 1 + 5)  # a stopped child costs one timeout, once
    assert signer.returncode == -signal.SIGKILL
    assert _gone(signer.pid)


def test_a_small_run_starts_no_child(keys: dict[str, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    """A run of fewer than START_AFTER signed messages (a ``worker`` draining a few retries) signs
    them on the loop and starts no interpreter; the START_AFTER-th message starts the child."""
    monkeypatch.undo()  # START_AFTER as shipped
    assert dkim_process.START_AFTER > 1
    dkim = _dkim(keys)

    async def go() -> tuple[list[bytes], ProcessSigner, ProcessSigner]:
        small, large = ProcessSigner(dkim), ProcessSigner(dkim)
        signed = [await small.sign_parts(*_parts(i)) for i in range(dkim_process.START_AFTER - 1)]
        await small.aclose()
        for i in range(dkim_process.START_AFTER - 1):
            await large.sign_parts(*_parts(i))
        assert large.state == "idle" and large.transport is None
        await _ready(large)  # the START_AFTER-th message
        signed += await _rounds(large, 1, 8)
        await large.aclose()
        return signed, small, large

    signed, small, large = aio.run(go())
    assert signed == _expected(dkim, dkim_process.START_AFTER - 1) + _expected(dkim, 8)
    assert small.transport is None and small.state == "closed" and small.cpu == 0
    assert large.signed == 8 and large.returncode == 0


def test_a_run_closed_as_its_child_starts_leaves_no_process_or_pipe(keys: dict[str, bytes]) -> None:
    """Runs that end (or are cancelled) while their child is still being started, at every
    moment of its start, and one that signs nothing (which starts none): no process, no pipe."""
    dkim = _dkim(keys)

    async def go() -> tuple[int, int, list[ProcessSigner]]:
        await _ready(warm := ProcessSigner(dkim))  # what the loop keeps for its children, opened
        await warm.aclose()
        before, signers = len(os.listdir("/proc/self/fd")), []
        for delay in (None, 0, 0.001, 0.005, 0.02, 0.05, 0.1, 0.2):
            signer = ProcessSigner(dkim)
            signers.append(signer)
            if delay is not None:
                assert await signer.sign_parts(*_parts(0)) == _expected(dkim, 1)[0]  # on the loop, meanwhile
                await asyncio.sleep(delay)
            await signer.aclose()
        return before, len(os.listdir("/proc/self/fd")), signers

    before, after, signers = aio.run(go())
    assert after == before and _signing_children(os.getpid()) == []
    assert signers[0].transport is None and signers[0].state == "closed"  # nothing signed, nothing started
    assert all(s.pid is None or (s.returncode is not None and _gone(s.pid)) for s in signers)


def test_a_child_stopped_as_the_run_closes_costs_one_timeout_and_no_message(
    keys: dict[str, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    """SIGSTOP after a batch went down and as the run ends: closing waits ``timeout`` once for the
    answers, signs what waited on the loop, kills the child (SIGKILL reaches a stopped process)
    and leaves no process or pipe behind."""
    dkim = _dkim(keys)

    async def go() -> tuple[list[bytes], ProcessSigner, float, int, int]:
        signer = ProcessSigner(dkim, timeout=1.0)
        await _ready(signer)
        opened = len(os.listdir("/proc/self/fd"))
        waiting = [signer.sign_parts(*_parts(i)) for i in range(8)]
        await asyncio.sleep(0)  # the batch is written
        assert signer.pid is not None and signer._sent
        os.kill(signer.pid, signal.SIGSTOP)
        started = time.monotonic()
        await signer.aclose()
        took = time.monotonic() - started
        return await asyncio.gather(*waiting), signer, took, opened, len(os.listdir("/proc/self/fd"))

    with caplog.at_level(logging.WARNING, logger=LOG):
        signed, signer, took, opened, left = aio.run(go())
    assert signed == _expected(dkim, 8)
    assert 1.0 <= took < 1.0 + 5
    assert _warnings(caplog) == [
        "DKIM signing process: no answer within 1 s (stopped or hung); "
        "8 waiting messages and the rest of this run are signed on the event loop"
    ]
    assert signer.returncode == -signal.SIGKILL and _gone(signer.pid)
    assert left == opened - 2  # its stdin and stdout, closed


def test_a_cancelled_signer_leaves_no_process(keys: dict[str, bytes]) -> None:
    """Senders cancelled while their digests are with the child (a SIGTERM's wind-down): closing
    still reads the child's answers to the end, and it exits by itself."""
    dkim = _dkim(keys)

    async def go() -> ProcessSigner:
        signer = ProcessSigner(dkim)
        await _ready(signer)
        waiting = [signer.sign_parts(*_parts(i)) for i in range(16)]
        await asyncio.sleep(0)  # the batch is written
        assert signer._sent and not signer._batch
        for future in waiting:
            future.cancel()
        await signer.aclose()
        return signer

    signer = aio.run(go())
    assert signer.returncode == 0 and _gone(signer.pid)


# -- an edition through a relay ---------------------------------------------------------------------
class SabotagingRelay(FaultySink):
    """Accepts every message; once the signing process has signed a few, sends it ``sig`` (if any).
    Until then each message takes 50 ms, so the run does not end before the child is at work."""

    def __init__(self, made: list[RunSigner], sig: int | None) -> None:
        super().__init__()
        self.made, self.sig, self.done = made, sig, False

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        signer = self.made[0] if self.made else None
        if not self.done and isinstance(signer, ProcessSigner) and signer.signed >= 5 and signer.pid:
            if self.sig is not None:
                os.kill(signer.pid, self.sig)
            self.done = True
        elif not self.done:
            await asyncio.sleep(0.05)
        return await super().handle_DATA(server, session, envelope)


def _signed_app(
    tmp_path: Path,
    feed_server: FeedServer,
    port: int,
    keys: dict[str, bytes],
    monkeypatch: pytest.MonkeyPatch,
    *,
    real_clock: bool = False,
    delivery_extra: str = "",
) -> App:
    """An app sending through the relay on ``port`` with RSA and Ed25519 DKIM keys (in its environment)."""
    monkeypatch.setenv("FS_TEST_DKIM", keys["rsa"].decode())
    monkeypatch.setenv("FS_TEST_DKIM_ED", keys["ed25519"].decode())
    if real_clock:  # for runs in other processes: an article of the last hour, today's edition
        app = _app(tmp_path, feed_server, port, smtp_extra="pool_size = 4", clock=None, items=FRESH)
    else:
        app = _app(tmp_path, feed_server, port, smtp_extra="pool_size = 4", delivery_extra=delivery_extra)
    cfg = Path(app.settings.source_path)
    app.close()
    dkim = 'dkim_selector = "news"\ndkim_key_env = "FS_TEST_DKIM"\ndkim_ed25519_key_env = "FS_TEST_DKIM_ED"\n'
    cfg.write_text(cfg.read_text(encoding="utf-8").replace("[digest]\n", "[digest]\n" + dkim), encoding="utf-8")
    return make_app(load_settings(cfg), clock=None if real_clock else lambda: SEND_TIME)


def _capture(app: App, monkeypatch: pytest.MonkeyPatch, made: list[RunSigner]) -> None:
    """Each run's signer, as the app makes it, appended to ``made``."""
    real: Callable[[], RunSigner | None] = app.run_signer

    def run_signer() -> RunSigner | None:
        signer = real()
        if signer is not None:
            made.append(signer)
        return signer

    monkeypatch.setattr(app, "run_signer", run_signer)


def _send_edition(
    tmp_path: Path,
    feed_server: FeedServer,
    keys: dict[str, bytes],
    monkeypatch: pytest.MonkeyPatch,
    relay: FaultySink,
    readers: list[str],
    made: list[RunSigner],
    *,
    delivery_extra: str = "",
) -> SendReport:
    """The edition of KST_DAY sent to ``readers`` through ``relay`` by a ``_signed_app``; each run's
    signer appended to ``made``."""
    controller = Controller(relay, hostname="127.0.0.1", port=free_port())
    controller.start()
    app = _signed_app(tmp_path, feed_server, controller.port, keys, monkeypatch, delivery_extra=delivery_extra)
    try:
        _capture(app, monkeypatch, made)
        _add(app, *readers)
        return aio.run(app.send_digest(date.fromisoformat(KST_DAY)))
    finally:
        app.close()
        controller.stop()


@pytest.mark.parametrize("sig", [None, signal.SIGKILL, signal.SIGSTOP], ids=["undisturbed", "killed", "stopped"])
def test_a_signed_edition_arrives_once_and_verifies(
    tmp_path: Path,
    feed_server: FeedServer,
    keys: dict[str, bytes],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    sig: int | None,
) -> None:
    monkeypatch.setattr(dkim_process, "ANSWER_TIMEOUT", 1.0)
    made: list[RunSigner] = []
    relay = SabotagingRelay(made, sig)
    readers = [f"r{i:03d}@example.com" for i in range(160)]
    with caplog.at_level(logging.WARNING, logger=LOG):
        report = _send_edition(tmp_path, feed_server, keys, monkeypatch, relay, readers, made)
    assert relay.done, "the signing process never got to work"
    assert (report.sent, report.failed, report.deferred) == (160, 0, 0)
    assert collections.Counter(to for to, _ in relay.received) == dict.fromkeys(readers, 1)
    for to, data in relay.received:
        assert _verifies(data, keys, 0) and _verifies(data, keys, 1), to  # RSA, then Ed25519
    (signer,) = made
    assert isinstance(signer, ProcessSigner) and signer.signed >= 5
    assert signer.pid is not None and _gone(signer.pid)
    if sig is None:
        assert _warnings(caplog) == [] and signer.returncode == 0 and report.signing_cpu > 0
        assert report.signing_failure is None and "DKIM" not in report.summary()
    else:
        assert len(_warnings(caplog)) == 1 and signer.returncode == -signal.SIGKILL
        said = "it " if sig == signal.SIGKILL else "no answer within 1 s (stopped or hung)"  # ended, or not written to
        assert report.signing_failure is not None and report.signing_failure == signer.failure
        assert report.signing_failure.startswith(said)
        assert f"DKIM signing process given up ({signer.failure}): signed on the event loop" in report.summary()


def test_signed_on_the_loop_when_configured(
    tmp_path: Path, feed_server: FeedServer, keys: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``[delivery] dkim_signer = "loop"``: no signing process, the same valid signatures."""
    relay = FaultySink()
    made: list[RunSigner] = []
    readers = [f"r{i}@example.com" for i in range(12)]
    loop = 'dkim_signer = "loop"'
    report = _send_edition(tmp_path, feed_server, keys, monkeypatch, relay, readers, made, delivery_extra=loop)
    assert report.sent == 12 and len(relay.received) == 12 and report.signing_cpu == 0
    assert [type(s) for s in made] == [LoopSigner] and _signing_children(os.getpid()) == []
    assert all(_verifies(data, keys, 0) and _verifies(data, keys, 1) for _, data in relay.received)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_no_signing_process_outlives_its_run(
    tmp_path: Path, feed_server: FeedServer, keys: dict[str, bytes], monkeypatch: pytest.MonkeyPatch, sig: int
) -> None:
    """``feedservice digest send`` stopped by SIGTERM stops its signing process; killed with
    SIGKILL, its signing process sees its input end and exits too."""
    relay = FaultySink(delay=0.02)
    controller = Controller(relay, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        app = _signed_app(tmp_path, feed_server, controller.port, keys, monkeypatch, real_clock=True)
        cfg = Path(app.settings.source_path)
        _add(app, *(f"r{i:03d}@example.com" for i in range(400)))
        app.close()
        cfg.write_text(cfg.read_text(encoding="utf-8").replace("[web]", "[run]\nshutdown_timeout = 2\n[web]"))
        proc = _cli(cfg, "digest", "send", "--date", TODAY)
        deadline = time.monotonic() + 60
        while not (children := _signing_children(proc.pid)) or len(relay.received) < 20:
            assert time.monotonic() < deadline and proc.poll() is None, "the run did not get going"
            time.sleep(0.02)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
        deadline = time.monotonic() + 10
        while not _gone(children[0]):
            assert time.monotonic() < deadline, f"the signing process {children[0]} outlived its run"
            time.sleep(0.05)
    finally:
        controller.stop()
    if sig == signal.SIGTERM:
        assert proc.returncode == 0, err
        assert "DKIM signing process" not in err  # stopped cleanly, not given up
    assert len(relay.received) < 400
