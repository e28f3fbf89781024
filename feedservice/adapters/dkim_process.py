"""DKIM's private-key step in a signing process: the event loop sends while another core signs.

Why: an RSA-2048 signature costs ~0.3 ms of CPU, half of what everything else a message costs.
Signing threads lost to signing on the loop in every quiet run (docs/benchmarks.md): the whole
``sign_parts`` (Python, under the GIL) ran in the thread, and a thread back from OpenSSL waited
for the GIL the busy loop held. Here the loop keeps the Python part (``DkimSigner.prepare_parts``,
~50 µs with the per-template cache) and hands over only the 32-byte SHA-256 of what the RSA key
signs; 256 bytes come back (``dkim_keys``).

``ProcessSigner``, the ``RunSigner`` of ``ports`` for one sending run:

- The child starts with the first message to sign (a run with nothing to sign starts none), as
  ``python -m feedservice.adapters.dkim_process`` with pipes on its stdin and stdout. The key goes
  down the pipe, never in its argv or environment (which is a short allow-list). Until the child
  says it is ready, messages are signed on the loop: its start never holds up sending.
- Every digest asked for in one iteration of the loop goes in one write (a batch); the child
  answers each batch in one write, in order.
- Every signature that comes back is verified with the public key (~20 µs) before it is used.
- When the child fails — its pipe ends (it died), no answer within ``timeout`` seconds while
  batches wait (stopped, hung), or an answer that is not what was asked (garbage) — it is killed,
  the messages waiting for it are signed on the loop, one warning is logged, and the rest of the
  run signs on the loop. Not a new child: what broke this one (the OOM killer, an operator, a
  broken install) may break the next, and each hang would hold every sender for another
  ``timeout``; the loop signs at about two thirds of the rate, and the next run starts afresh.
- ``aclose`` (end of run, cancellation, SIGTERM) closes the child's stdin; the child answers what
  it holds, reports its CPU time and exits; one that does not within ``timeout`` is killed. The
  child ignores SIGINT and SIGTERM (a terminal's Ctrl-C and systemd reach the whole group): it
  ends when its stdin ends, so it never outlives its parent, even one killed with SIGKILL.
- The child runs under SCHED_BATCH (Linux): woken by a batch, it waits for a free core or the
  next tick instead of preempting the sending loop (measured: the loop lost ~100 µs a batch).

A second, Ed25519 signature (RFC 8463) is made on the loop: ~33 µs, less than verifying one
that came back would cost (~100 µs).

Frames, both ways: a 4-byte big-endian length, then the payload. Parent to child: the RSA key
(PKCS#8 PEM), then batches of 32-byte digests. Child to parent: ``ready``, then per batch its
signatures, back to back; after its stdin ends, its CPU seconds (a big-endian double).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import struct
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal

from feedservice.adapters.dkim_keys import DIGEST_SIZE, RsaKey

if TYPE_CHECKING:
    from feedservice.adapters.dkim import DkimSigner, Unsigned

__all__ = ["CHILD", "ProcessSigner"]

log = logging.getLogger(__name__)

CHILD = "feedservice.adapters.dkim_process"  # this module, as the child runs it
ANSWER_TIMEOUT = 5.0  # seconds without an answer while batches wait: the child is stopped or hung
START_TIMEOUT = 30.0  # a fresh interpreter importing cryptography on a busy machine; the loop signs meanwhile
READY = b"ready"
_LENGTH = struct.Struct("!I")
_CPU = struct.Struct("!d")
_PASSED_ON = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR")  # the child's whole environment, with PYTHONPATH

Item = tuple["Unsigned", "asyncio.Future[bytes]"]
State = Literal["idle", "starting", "ready", "closing", "failed", "closed"]


class _Garbage(Exception):
    """The child answered something that is not what was asked for."""


def _frame(payload: bytes) -> bytes:
    return _LENGTH.pack(len(payload)) + payload


def _environment() -> dict[str, str]:
    """What the child inherits: a few harmless variables, and the path to this very package."""
    env = {name: os.environ[name] for name in _PASSED_ON if name in os.environ}
    root = str(Path(__file__).resolve().parents[2])  # the folder holding ``feedservice``: the parent's code
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


class ProcessSigner:
    """Signs a run's messages with the RSA key in a child process (see the module docstring)."""

    def __init__(self, signer: DkimSigner, *, timeout: float | None = None, command: Sequence[str] = ()) -> None:
        key = signer.keys[0]
        assert isinstance(key, RsaKey), "the first DKIM key is the RSA one"
        self.signer, self.key = signer, key
        self.timeout = ANSWER_TIMEOUT if timeout is None else timeout
        self.command = list(command) or [sys.executable, "-m", CHILD]
        self.state: State = "idle"
        self.process: asyncio.subprocess.Process | None = None
        self.failure: str | None = None  # why the child was given up, if it was
        self.cpu = 0.0  # the child's CPU seconds, as it reported them at the end
        self.signed = 0  # signatures the child made that were used
        self._batch: list[Item] = []  # asked for in this iteration of the loop
        self._sent: collections.deque[list[Item]] = collections.deque()  # written, not answered, in order
        self._more = asyncio.Event()  # a batch was written, or closing began
        self._task: asyncio.Task[None] | None = None  # starts the child, then reads its answers

    def sign_parts(self, head: bytes, body: Sequence[bytes]) -> asyncio.Future[bytes]:
        """The loop's part now; the future gets the signed message when the child's signature is back
        (or at once, signed here, while the child starts or after it failed)."""
        unsigned = self.signer.prepare_parts(head, body)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        if self.state == "idle":
            self.state = "starting"
            self._task = asyncio.create_task(self._run())
        if self.state != "ready":
            future.set_result(self._here(unsigned))
            return future
        if not self._batch:
            loop.call_soon(self._flush)  # runs in the next iteration: this one's requests go together
        self._batch.append((unsigned, future))
        return future

    async def aclose(self) -> float:
        """Stop the child (cleanly if it answers within ``timeout``); its CPU seconds, else 0."""
        task, process = self._task, self.process
        try:
            if self.state == "ready":
                self.state = "closing"
                self._more.set()
                if process is not None and process.stdin is not None:
                    process.stdin.close()  # the child's end of input: it answers, reports and exits
            elif task is not None:
                task.cancel()
            if task is not None:
                await asyncio.gather(task, return_exceptions=True)
            if self.state == "closing" and self.process is not None:  # it answered all: let it exit
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.process.wait(), self.timeout)
        finally:
            self.state = "closed"
            process = self.process
            if process is not None:
                if process.returncode is None:
                    self._kill()
                await process.wait()
                await self._drain(process)
        if process is not None:
            log.debug("DKIM signing process: %d signatures, %.2f s of CPU", self.signed, self.cpu)
        return self.cpu

    # -- the loop's side ---------------------------------------------------------------------------
    def _here(self, unsigned: Unsigned) -> bytes:
        return self.signer.finish(unsigned, self.signer.sign_digests(unsigned.digests))

    def _finish(self, unsigned: Unsigned, signature: bytes) -> bytes:
        others = zip(self.signer.keys[1:], unsigned.digests[1:], strict=True)
        return self.signer.finish(unsigned, [signature, *(key.sign(digest) for key, digest in others)])

    def _flush(self) -> None:
        batch, self._batch = self._batch, []
        process = self.process
        if self.state != "ready" or process is None or process.stdin is None:
            self._rescue([batch])  # the child failed (or the run closed) since these were asked for
            return
        self._sent.append(batch)
        self._more.set()
        payload = b"".join(unsigned.digests[0] for unsigned, _ in batch)
        try:
            process.stdin.write(_frame(payload))
        except (OSError, RuntimeError) as exc:  # its pipe is closed: it died
            self._fail(f"could not write to it: {exc}")

    def _rescue(self, batches: Sequence[list[Item]]) -> int:
        """Sign on the loop what was waiting for the child; the number of messages."""
        count = 0
        for batch in batches:
            for unsigned, future in batch:
                if not future.done():
                    future.set_result(self._here(unsigned))
                    count += 1
        return count

    def _fail(self, reason: str) -> None:
        if self.state in ("failed", "closed"):
            return
        closing = self.state == "closing"
        self.state, self.failure = "failed", reason
        self._kill()
        waiting, self._batch = [*self._sent, self._batch], []
        self._sent.clear()
        rescued = self._rescue(waiting)
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
        if closing and not rescued:  # at the end of the run, with nothing waiting: it only did not exit
            log.debug("DKIM signing process: %s; stopped", reason)
            return
        log.warning(
            "DKIM signing process: %s; %d waiting messages and the rest of this run are signed on the event loop",
            reason,
            rescued,
        )

    async def _drain(self, process: asyncio.subprocess.Process) -> None:
        """Close its pipes: its stdin, and its stdout read to the end. A child given up while it
        wrote (garbage, a flood) leaves its output in the pipe and our reader paused, full, and
        a paused pipe never sees its end: it stayed open, and uvloop then failed to close the run's loop."""
        if process.stdin is not None:
            process.stdin.close()
        if process.stdout is not None:
            with contextlib.suppress(TimeoutError, OSError):
                async with asyncio.timeout(self.timeout):  # a grandchild could hold it open
                    while await process.stdout.read(1 << 16):
                        pass

    def _kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()  # SIGKILL: a stopped (SIGSTOP) process too

    # -- the child's answers -------------------------------------------------------------------------
    async def _run(self) -> None:
        try:
            await self._start()
            await self._read()
        except asyncio.CancelledError:
            raise
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, _Garbage, OSError) as exc:
            if self.process is not None and isinstance(exc, asyncio.IncompleteReadError | ConnectionError):
                with contextlib.suppress(TimeoutError):  # its exit status, for the warning
                    await asyncio.wait_for(self.process.wait(), 0.5)
            self._fail(self._why(exc))

    def _why(self, exc: BaseException) -> str:
        code = self.process.returncode if self.process is not None else None
        if isinstance(exc, TimeoutError):
            return f"no answer within {self.timeout:g} s (stopped or hung)"
        if isinstance(exc, asyncio.IncompleteReadError | ConnectionError):
            return "it ended" + (f" (exit status {code})" if code is not None else "")
        if isinstance(exc, _Garbage):
            return f"it answered garbage: {exc}"
        return f"it could not be started: {exc}"

    async def _start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *self.command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=_environment()
        )
        assert self.process.stdin is not None
        self.process.stdin.write(_frame(self.key.pem()))  # the key: through the pipe only
        async with asyncio.timeout(START_TIMEOUT):
            answer = await self._receive(len(READY), "its hello")
        if answer != READY:
            raise _Garbage(f"{answer[:40]!r} to its key")
        if self.state == "starting":
            self.state = "ready"

    async def _receive(self, size: int, what: str) -> bytes:
        """The child's next frame, which must be ``size`` bytes long (else it is out of step)."""
        assert self.process is not None and self.process.stdout is not None
        (length,) = _LENGTH.unpack(await self.process.stdout.readexactly(_LENGTH.size))
        if length != size:
            raise _Garbage(f"a frame of {length} bytes for {what} ({size})")
        return await self.process.stdout.readexactly(length)

    async def _read(self) -> None:
        """Answers to the batches in the order they were written; after the last one, when closing,
        the child's CPU time."""
        while True:
            while not self._sent:
                if self.state == "closing":
                    async with asyncio.timeout(self.timeout):
                        (self.cpu,) = _CPU.unpack(await self._receive(_CPU.size, "its CPU time"))
                    return
                self._more.clear()
                await self._more.wait()
            batch, size = self._sent[0], self.key.signature_size
            async with asyncio.timeout(self.timeout):
                answer = await self._receive(size * len(batch), f"{len(batch)} signatures")
            self._answer(batch, answer)

    def _answer(self, batch: list[Item], answer: bytes) -> None:
        size = self.key.signature_size
        for i, (unsigned, future) in enumerate(batch):
            signature = answer[i * size : (i + 1) * size]
            if future.done():  # its sender was cancelled
                continue
            if not self.key.verifies(signature, unsigned.digests[0]):
                del batch[:i]  # what came before is sent; the rest waits for the rescue
                raise _Garbage("a signature that does not verify")
            future.set_result(self._finish(unsigned, signature))
            self.signed += 1
        self._sent.popleft()


# -- the child -------------------------------------------------------------------------------------
def _read_frame(stream: IO[bytes]) -> bytes | None:
    """The next frame, or None at the end of input."""
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack(head)
    payload = stream.read(length)
    return payload if len(payload) == length else None


def _write_frame(stream: IO[bytes], payload: bytes) -> None:
    stream.write(_frame(payload))
    stream.flush()


def main() -> None:
    """The signing process: the key, then a batch of signatures for each batch of digests."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # it ends with its input: the parent stops it
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(AttributeError, OSError):  # Linux: its wake-ups do not preempt the sending loop
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything else written to stdout (a stray print, a library) goes to stderr
    requests = sys.stdin.buffer
    pem = _read_frame(requests)
    if pem is None:
        return
    key = RsaKey.from_pem(pem)
    sign = key.sign
    _write_frame(answers, READY)
    try:
        while (batch := _read_frame(requests)) is not None:
            if len(batch) % DIGEST_SIZE:
                raise SystemExit(f"dkim_process: a batch of {len(batch)} bytes is not of digests")
            _write_frame(answers, b"".join(sign(batch[i : i + DIGEST_SIZE]) for i in range(0, len(batch), DIGEST_SIZE)))
        _write_frame(answers, _CPU.pack(time.process_time()))
    except BrokenPipeError:  # the parent is gone
        pass


if __name__ == "__main__":
    main()
