"""DKIM signing in a signing process: the event loop sends while another core signs.

Why: an RSA-2048 signature costs ~0.3–0.5 ms of CPU, canonicalising and hashing a 33 KB digest
~0.1 ms more, against ~0.7–1.1 ms for the rest of a message. The loop hands over the message for
a few microseconds and gets its DKIM-Signature header(s) back; the signing process does the rest
with the very ``DkimSigner`` code the loop would run (``handover``: the same keys and names).

``ProcessSigner``, the ``RunSigner`` of ``ports`` for one sending run:

- The child starts with the ``START_AFTER``-th message to sign: a run of fewer (a ``worker``
  draining a few retries) signs them on the loop and pays no interpreter's start-up (~0.1 s of
  CPU, ~30 MB). It runs ``python -m feedservice.adapters.dkim_child`` with pipes on its stdin
  and stdout. The keys go down the pipe, never in its argv or environment (a short allow-list).
  Until the child says it is ready, messages are signed on the loop: its start holds up nothing.
- Every message asked for in one iteration of the loop goes in one write (a batch), with the
  ``t=`` of that moment (the loop's clock, so a message signed either way is the same bytes);
  the child answers each batch in one write, in order. A message is its head and its body's
  pieces; a template segment (a piece with whitespace: the readers' links have none) goes down
  the pipe once and is named by its number after that.
- Answers are read by a pipe protocol, without a reader task: a batch's answer costs the loop one
  callback. A watchdog timer, not a timeout per batch, notices a child that stopped answering.
- Each answer carries the fingerprint of the message the child read (``dkim_child``): one for
  another message, or read through a segment table that is not the loop's, is garbage. The child
  verifies each RSA signature with the public key (OpenSSL also checks its CRT result); the loop
  compares the child's first answer, and one in ``CHECK_EVERY`` after it, with its own signing,
  byte for byte (RSA PKCS#1 v1.5 and Ed25519 are deterministic). One that differs is garbage.
- When the child fails — its pipe ends (it died), no answer within ``timeout`` seconds while
  batches wait (stopped, hung), or an answer that is not what was asked (garbage) — it is killed,
  the messages waiting for it are signed on the loop, one warning is logged, and the rest of the
  run signs on the loop. Not a new child: what broke this one (the OOM killer, an operator, a
  broken install) may break the next, and each hang would hold every sender for another
  ``timeout``; the next run starts afresh.
- A message the child cannot sign (one the loop's signer would refuse, say without a From), or not
  as the bytes the loop holds (bare CR or LF, no final CRLF: signing makes them CRLF), comes back
  empty: the loop signs it, and meets the same refusal, as that message's outcome.
- ``aclose`` (end of run, cancellation, SIGTERM) closes the child's stdin; the child answers what
  it holds, reports its CPU time and exits; one that does not within ``timeout`` is killed. The
  child ignores SIGINT and SIGTERM (a terminal's Ctrl-C and systemd reach the whole group): it
  ends when its stdin ends, so it never outlives its parent, even one killed with SIGKILL.

The wire format, and the child's side (it runs under SCHED_BATCH): ``adapters/dkim_child.py``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, cast

from feedservice.adapters.dkim_child import (
    ANSWER,
    BATCH,
    CPU,
    LENGTH,
    MAX_HEADERS,
    READY,
    Garbage,
    encode,
    environment,
    frame,
    split_answers,
)

if TYPE_CHECKING:
    from feedservice.adapters.dkim import DkimSigner

__all__ = ["CHILD", "ProcessSigner"]

log = logging.getLogger(__name__)

CHILD = "feedservice.adapters.dkim_child"  # the module the child runs
ANSWER_TIMEOUT = 5.0  # seconds without an answer while batches wait: the child is stopped or hung
START_TIMEOUT = 30.0  # a fresh interpreter importing cryptography on a busy machine; the loop signs meanwhile
AGAIN = 0.05  # a silence past its limit is seen again after the loop read the pipe (a held-up loop had not)
START_AFTER = 16  # messages a run signs on the loop before it starts a child
CHECK_EVERY = 256  # after the first, one answer in this many is compared with the loop's own signing

Item = tuple[bytes, Sequence[bytes], "asyncio.Future[bytes]"]
State = Literal["idle", "starting", "ready", "closing", "failed", "closed"]


class _Pipes(asyncio.SubprocessProtocol):
    """The child's stdout and exit, handed to its ``ProcessSigner`` as they happen."""

    def __init__(self, owner: ProcessSigner) -> None:
        self.owner = owner

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        if fd == 1 and isinstance(data, bytes):
            self.owner._received(data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1:
            self.owner._ended()

    def process_exited(self) -> None:
        self.owner._exited_now()


class ProcessSigner:
    """Signs a run's messages in a child process (see the module docstring)."""

    def __init__(self, signer: DkimSigner, *, timeout: float | None = None, command: Sequence[str] = ()) -> None:
        self.signer = signer
        self.timeout = ANSWER_TIMEOUT if timeout is None else timeout
        self.command = list(command) or [sys.executable, "-m", CHILD]
        self.state: State = "idle"
        self.transport: asyncio.SubprocessTransport | None = None
        self.pid: int | None = None
        self.failure: str | None = None  # why the child was given up, if it was
        self.cpu = 0.0  # the child's CPU seconds, as it reported them at the end
        self.signed = 0  # messages the child signed that were used
        self.checked = 0  # of them, compared with the loop's own signing
        self._batch: list[Item] = []  # asked for in this iteration of the loop
        self._sent: collections.deque[tuple[int, list[Item], list[bytes]]] = collections.deque()  # t=, items, prints
        self._segments: dict[bytes, tuple[int, bytes]] = {}  # template segments the child has: number, hash
        self._buffer = bytearray()  # the child's output not yet a whole frame
        self._until_check = 0  # answers to take before the next comparison
        self._progress = 0.0  # loop time of the last answer, or of the write that left it waiting
        self._watchdog: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None  # starts the child
        self._done: asyncio.Future[None] | None = None  # its CPU time arrived, or it was given up
        self._exited: asyncio.Future[None] | None = None
        self._eof = False
        self._asked = 0  # messages asked for

    @property
    def returncode(self) -> int | None:
        return self.transport.get_returncode() if self.transport is not None else None

    def sign_parts(self, head: bytes, body: Sequence[bytes]) -> asyncio.Future[bytes]:
        """The future gets the signed message when the child's answer is back (or at once, signed
        here: before the run's ``START_AFTER``-th message, until the child is ready, after it ends)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        self._asked += 1
        if self.state == "idle" and self._asked >= START_AFTER:
            self.state = "starting"
            self._done, self._exited = loop.create_future(), loop.create_future()
            self._task = asyncio.create_task(self._start())
        if self.state != "ready":
            future.set_result(self.signer.sign_parts(head, body))
            return future
        if not self._batch:
            loop.call_soon(self._flush)  # runs in the next iteration: this one's requests go together
        self._batch.append((head, body, future))
        return future

    async def aclose(self) -> float:
        """Stop the child (cleanly if it answers within ``timeout``); its CPU seconds, else 0."""
        try:
            if self.state == "ready" and self.transport is not None:
                self.state = "closing"
                self._waiting()
                stdin = self._stdin()
                if stdin is not None:
                    stdin.close()  # the child's end of input: it answers, reports and exits
            elif self._task is not None:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
            if self.state == "closing" and self._done is not None:
                await asyncio.shield(self._done)
            if self.state == "closing" and self._exited is not None:  # it answered all: let it exit
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._exited), self.timeout)
        finally:
            if self._sent:  # closing was cancelled while the child held messages: signed here
                self._fail("its run's closing was cancelled")
            self.state = "closed"
            self._disarm()
            if self.transport is not None:
                self._kill()
                try:
                    if self._exited is not None:
                        await asyncio.shield(self._exited)
                finally:  # even when this wait is cancelled: no pipe stays open
                    self.transport.close()
        if self.transport is not None:
            log.debug("DKIM signing process: %d signatures, %.2f s of CPU", self.signed, self.cpu)
        return self.cpu

    def _stdin(self) -> asyncio.WriteTransport | None:
        """The child's stdin (uvloop's pipe transports are not asyncio's classes: no isinstance)."""
        pipe = self.transport.get_pipe_transport(0) if self.transport is not None else None
        return cast("asyncio.WriteTransport | None", pipe)

    # -- asking --------------------------------------------------------------------------------------
    def _flush(self) -> None:
        batch, self._batch = self._batch, []
        stdin = self._stdin()
        if self.state != "ready" or stdin is None:
            self._rescue([batch])  # the child failed (or the run closed) since these were asked for
            return
        t = self.signer.now()
        out, sent, prints = [b""], [], []
        for item in batch:
            head, body, future = item
            try:
                prints.append(encode(out, self._segments, head, body))
            except Exception:  # beyond the frame's fields (struct.error), or not bytes: that message's own outcome
                self._here(head, body, future)
                continue
            sent.append(item)
        if not sent:
            return
        out[0] = BATCH.pack(t, len(sent))
        if not self._sent:
            self._waiting()
        self._sent.append((t, sent, prints))
        payload = b"".join(out)
        try:
            stdin.write(LENGTH.pack(len(payload)) + payload)  # a dead child shows as its stdout's end
        except (OSError, RuntimeError) as exc:  # or as a pipe closed under the write (uvloop raises)
            self._fail(f"it could not be written to: {exc}")

    def _rescue(self, batches: Sequence[list[Item]]) -> int:
        """Sign on the loop what was waiting for the child; the number of messages."""
        count = 0
        for batch in batches:
            for head, body, future in batch:
                if not future.done():
                    self._here(head, body, future)
                    count += 1
        return count

    def _here(self, head: bytes, body: Sequence[bytes], future: asyncio.Future[bytes]) -> None:
        try:
            if not future.done():  # else dropped by its sender (``Outgoing.drop``): nothing to sign
                future.set_result(self.signer.sign_parts(head, body))
        except Exception as exc:  # the message's own fault (no From): its sender meets it
            future.set_exception(exc)

    # -- answers ---------------------------------------------------------------------------------------
    def _received(self, data: bytes) -> None:
        if self.state in ("failed", "closed", "idle"):
            return  # given up: whatever it still writes is read and dropped, so its pipe drains
        buffer = self._buffer
        buffer += data
        while len(buffer) >= LENGTH.size:
            (length,) = LENGTH.unpack_from(buffer)
            low, high, what = self._expected()
            if not low <= length <= high:
                self._fail(f"it answered garbage: a frame of {length} bytes for {what}")
                return
            if len(buffer) < LENGTH.size + length:
                return
            payload = bytes(buffer[LENGTH.size : LENGTH.size + length])
            del buffer[: LENGTH.size + length]
            try:
                self._take(payload)
            except Garbage as exc:
                self._fail(f"it answered garbage: {exc}")
                return
            except Exception as exc:  # ours, not the child's: still, no message may wait on it
                log.exception("DKIM signing process: its answer could not be taken")
                self._fail(f"its answer could not be taken: {exc!r}")
                return

    def _expected(self) -> tuple[int, int, str]:
        """The sizes the next frame may have, and what it is."""
        if self.state == "starting":
            return len(READY), len(READY), f"its hello ({len(READY)})"
        if self._sent:
            count = len(self._sent[0][1])
            return ANSWER.size * count, (ANSWER.size + MAX_HEADERS) * count, f"{count} answers"
        if self.state == "closing":
            return CPU.size, CPU.size, f"its CPU time ({CPU.size})"
        return 0, -1, "nothing asked for"

    def _take(self, payload: bytes) -> None:
        if self.state == "starting":
            if payload != READY:
                raise Garbage(f"{payload[:40]!r} to its keys")
            self.state = "ready"
            self._disarm()
            return
        if not self._sent:  # closing, all answered: its CPU time
            (self.cpu,) = CPU.unpack(payload)
            self._disarm()
            if self._done is not None and not self._done.done():
                self._done.set_result(None)
            return
        t, batch, prints = self._sent[0]
        answers = split_answers(payload, prints)  # each for its own message, or garbage
        for (head, body, future), headers in zip(batch, answers, strict=True):
            if future.done():  # its sender was cancelled
                continue
            if not headers:  # the child could not sign it: the loop meets why
                self._here(head, body, future)
                continue
            message = headers + head + b"".join(body)
            if self._until_check <= 0:
                if message != self._signed_here(head, body, t):
                    raise Garbage("signature headers that are not the loop's")
                self._until_check = CHECK_EVERY
                self.checked += 1
            self._until_check -= 1
            future.set_result(message)
            self.signed += 1
        self._sent.popleft()
        self._progress = asyncio.get_running_loop().time()

    def _signed_here(self, head: bytes, body: Sequence[bytes], t: int) -> bytes | None:
        """What the loop's own signing makes of the message (None: it would refuse it)."""
        try:
            return self.signer.sign_parts(head, body, timestamp=t)
        except Exception:
            return None

    # -- the child's life ------------------------------------------------------------------------------
    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self.transport, _ = await loop.subprocess_exec(
                lambda: _Pipes(self),
                *self.command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=None,
                env=environment(),
            )
        except OSError as exc:
            self._fail(f"it could not be started: {exc}")
            return
        self.pid = self.transport.get_pid()
        stdin = self._stdin()
        assert stdin is not None
        stdin.write(frame(self.signer.handover()))  # the keys: through the pipe only
        self._progress = loop.time()
        self._watchdog = loop.call_later(START_TIMEOUT, self._watch)

    def _waiting(self) -> None:
        """Answers are awaited from now: the watchdog runs."""
        loop = asyncio.get_running_loop()
        self._progress = loop.time()
        if self._watchdog is None:
            self._watchdog = loop.call_later(self.timeout, self._watch)

    def _watch(self, again: bool = False) -> None:
        self._watchdog, loop = None, asyncio.get_running_loop()
        if self.state not in ("starting", "ready", "closing") or not (self._sent or self.state != "ready"):
            return
        limit = START_TIMEOUT if self.state == "starting" else self.timeout
        quiet = loop.time() - self._progress
        if quiet < limit * 0.999 or not again:
            self._watchdog = loop.call_later(max(limit - quiet, AGAIN), self._watch, quiet >= limit * 0.999)
        elif self.state == "starting":
            self._fail(f"it did not start within {START_TIMEOUT:g} s")
        else:
            self._fail(f"no answer within {self.timeout:g} s (stopped or hung)")

    def _disarm(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _ended(self) -> None:
        """Its stdout ended: it died (or exits after its last answer, which is fine)."""
        self._eof = True
        if self.state in ("starting", "ready", "closing") and not (self._done is not None and self._done.done()):
            if self.returncode is not None:
                self._fail(f"it ended (exit status {self.returncode})")
            else:  # its exit status, for the warning, if it comes soon
                asyncio.get_running_loop().call_later(0.5, self._fail, "it ended")

    def _exited_now(self) -> None:
        if self._exited is not None and not self._exited.done():
            self._exited.set_result(None)
        if self._eof:
            self._fail(f"it ended (exit status {self.returncode})")

    def _fail(self, reason: str) -> None:
        if self.state in ("failed", "closed", "idle") or (self._done is not None and self._done.done()):
            return
        closing = self.state == "closing"
        self.state, self.failure = "failed", reason
        self._disarm()
        self._kill()
        waiting, self._batch = [*(batch for _, batch, _ in self._sent), self._batch], []
        self._sent.clear()
        rescued = self._rescue(waiting)
        if self._done is not None and not self._done.done():
            self._done.set_result(None)
        if closing and not rescued:  # at the end of the run, with nothing waiting: it only did not exit
            log.debug("DKIM signing process: %s; stopped", reason)
            return
        log.warning(
            "DKIM signing process: %s; %d waiting messages and the rest of this run are signed on the event loop",
            reason,
            rescued,
        )

    def _kill(self) -> None:
        if self.transport is not None and self.transport.get_returncode() is None:
            with contextlib.suppress(ProcessLookupError):
                self.transport.kill()  # SIGKILL: a stopped (SIGSTOP) process too
