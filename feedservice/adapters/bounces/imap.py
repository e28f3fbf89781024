"""An IMAP folder the bounce address's mail is read from (``[bounces.imap]``), as an intake.

Every message in ``folder`` is pending; a handled one is flagged (``\\Seen``; ``\\Seen \\Flagged``
for a person when it matched no delivery) and moved (RFC 6851 ``MOVE``) to ``processed_folder``,
which is created when missing. Nothing is ever deleted or expunged by us: a message is in one
folder or the other, so a second run finds nothing new.

The server's replies are strangers' input, so the connection is held on a short leash:

- every step (connect and greeting, login, listing, one message's fetch, one move) must finish
  within ``timeout`` seconds, or a watchdog shuts the socket down — a server that dribbles one byte
  at a time cannot hold a run for longer than a socket timeout would;
- a message is fetched as at most ``max_bytes`` (a partial ``BODY.PEEK[]``), and a literal the
  server announces bigger than that is refused before anything is read (``imaplib`` would
  otherwise try to read whatever size it is told); lines are bounded by ``imaplib`` itself;
- at most ``limit`` messages are listed per run (``FETCH 1:N (UID)``, never a reply naming every
  message of a huge folder); the rest waits for the next run.

Any failure of the library, the socket or TLS, and any reply that does not parse, becomes this
intake's ``IntakeError``: one line for ``bounces check``, and the other intakes are still read.
"""

from __future__ import annotations

import imaplib
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Literal

from feedservice.bounce_model import ReturnedMail
from feedservice.errors import IntakeError

__all__ = ["ImapAccount", "ImapIntake"]

log = logging.getLogger(__name__)

MAX_BYTES = 10 * 1024 * 1024
_UID = re.compile(rb"\bUID (\d{1,10})\b")


@dataclass(frozen=True)
class ImapAccount:
    """Where to log in and which folders to use (``[bounces.imap]``)."""

    host: str
    port: int
    tls: Literal["ssl", "starttls", "none"]
    username: str
    password: str | None = None
    password_env: str = ""  # named in the error when the password is missing
    folder: str = "INBOX"
    processed_folder: str = "Processed"
    ca_file: str | None = None  # trust this CA (a private server's certificate) instead of the system's
    timeout: float = 30.0
    limit: int = 1000
    max_bytes: int = MAX_BYTES

    def __repr__(self) -> str:  # the password never reaches a log or a traceback
        return f"ImapAccount({self.username}@{self.host}:{self.port}, tls={self.tls})"


class _Watchdog:
    """Shuts a socket down when a step runs past its deadline (one thread per connection)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.fired = False
        self._cond = threading.Condition()
        self._deadline = time.monotonic() + seconds
        self._sock: socket.socket | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="imap-watchdog", daemon=True)

    def attach(self, sock: socket.socket) -> None:
        with self._cond:
            self._sock = sock
            self._deadline = time.monotonic() + self.seconds
        self._thread.start()

    def rearm(self) -> None:
        with self._cond:
            self._deadline = time.monotonic() + self.seconds
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        with self._cond:
            while not self._stopped:
                left = self._deadline - time.monotonic()
                if left <= 0:
                    self.fired = True
                    if self._sock is not None:
                        with suppress(OSError):
                            self._sock.shutdown(socket.SHUT_RDWR)
                    return
                self._cond.wait(left)


class _Guarded(imaplib.IMAP4):
    """``imaplib.IMAP4`` with its documented ``open``/``read`` hooks bounding time and size."""

    def __init__(self, *args: Any, watchdog: _Watchdog, max_literal: int, **kwargs: Any) -> None:
        self._watchdog, self._max_literal = watchdog, max_literal
        super().__init__(*args, **kwargs)

    def open(self, host: str = "", port: int | None = None, timeout: float | None = None) -> None:
        super().open(host, port if port is not None else 143, timeout)  # the intake always names the port
        self._watchdog.attach(self.sock)  # the greeting is read under the watchdog too

    def read(self, size: int) -> bytes:
        if size > self._max_literal:
            raise self.error(f"the server announced a {size}-byte literal, more than the {self._max_literal} asked for")
        return super().read(size)


class _GuardedSSL(_Guarded, imaplib.IMAP4_SSL):
    pass


def _quote(mailbox: str) -> str:
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ImapIntake:
    def __init__(self, account: ImapAccount) -> None:
        self.account = account
        self.name = f"imap:{account.username}@{account.host}:{account.port}/{account.folder}"
        self._imap: _Guarded | None = None
        self._watchdog: _Watchdog | None = None

    # -- the port ------------------------------------------------------------------------------
    def pending(self) -> Iterator[ReturnedMail]:
        uids = self._list()
        a = self.account
        for uid in uids:
            with self._step(f"fetching message {uid}") as imap:
                typ, data = imap.uid("FETCH", uid, f"(BODY.PEEK[]<0.{a.max_bytes}>)")
                raw = self._body(typ, data, uid)
            if raw is None:  # gone meanwhile (another reader moved it): nothing to do
                continue
            yield ReturnedMail(source=f"{self.name}/{uid}", raw=raw, key=uid)

    def done(self, mail: ReturnedMail, *, matched: bool) -> None:
        flags = r"(\Seen)" if matched else r"(\Seen \Flagged)"
        with self._step(f"moving message {mail.key}") as imap:
            self._ok(imap.uid("STORE", mail.key, "+FLAGS.SILENT", flags), f"flagging message {mail.key}")
            self._ok(
                imap.uid("MOVE", mail.key, _quote(self.account.processed_folder)),
                f"moving message {mail.key} to {self.account.processed_folder}",
            )

    def close(self, *, polite: bool = True) -> None:
        """Log out (under the watchdog; not after a failure) and close the socket; stop the watchdog."""
        imap, watchdog = self._imap, self._watchdog
        self._imap = self._watchdog = None
        try:
            if imap is not None:
                if polite and watchdog is not None and not watchdog.fired:
                    watchdog.rearm()
                    try:
                        imap.logout()
                    except (imaplib.IMAP4.error, OSError, EOFError, ValueError) as exc:
                        log.debug("imap logout from %s: %s", self.name, exc)
                with suppress(OSError):
                    imap.shutdown()
        finally:
            if watchdog is not None:
                watchdog.stop()

    # -- steps ---------------------------------------------------------------------------------
    @contextmanager
    def _step(self, what: str) -> Iterator[_Guarded]:
        """One bounded step: library, socket and parse failures become this intake's IntakeError."""
        if self._imap is None or self._watchdog is None:
            raise IntakeError(self.name, f"{what}: not connected")
        self._watchdog.rearm()
        try:
            yield self._imap
        except IntakeError:
            raise
        except (imaplib.IMAP4.error, OSError, EOFError, ValueError, IndexError, TypeError) as exc:
            if self._watchdog.fired or isinstance(exc, TimeoutError):
                message = f"{what}: no complete answer within {self.account.timeout:g} s"
            else:
                message = f"{what}: {_describe(exc)}"
            self.close(polite=False)
            raise IntakeError(self.name, message) from exc

    def _connect(self) -> _Guarded:
        a = self.account
        if a.password is None:
            raise IntakeError(self.name, f"no password: the environment variable {a.password_env} is not set")
        watchdog = _Watchdog(a.timeout)
        try:
            context = ssl.create_default_context(cafile=a.ca_file) if a.tls != "none" else None
            imap: _Guarded
            if a.tls == "ssl":
                imap = _GuardedSSL(
                    a.host, a.port, watchdog=watchdog, max_literal=a.max_bytes, ssl_context=context, timeout=a.timeout
                )
            else:
                imap = _Guarded(a.host, a.port, watchdog=watchdog, max_literal=a.max_bytes, timeout=a.timeout)
            self._imap, self._watchdog = imap, watchdog
        except (imaplib.IMAP4.error, OSError, EOFError, ValueError) as exc:
            fired = watchdog.fired or isinstance(exc, TimeoutError)
            watchdog.stop()
            what = f"no greeting within {a.timeout:g} s" if fired else _describe(exc)
            raise IntakeError(self.name, f"connecting: {what}") from exc
        if a.tls == "starttls":
            with self._step("STARTTLS") as conn:
                self._ok(conn.starttls(context), "STARTTLS")
        with self._step("logging in") as conn:
            if (a.username + a.password).isascii():
                conn.login(a.username, a.password)
            else:  # imaplib's LOGIN is ASCII only; SASL PLAIN carries UTF-8 (RFC 4616)
                secret = f"\0{a.username}\0{a.password}".encode()
                conn.authenticate("PLAIN", lambda _challenge: secret)
        return imap

    def _list(self) -> list[str]:
        """Log in, make sure the processed folder exists, and list at most ``limit`` UIDs."""
        self.close()  # a connection left from an earlier pass
        self._connect()
        a = self.account
        with self._step(f"opening {a.folder}") as imap:
            typ, data = imap.capability()
            caps = b" ".join(d for d in data if isinstance(d, bytes)).upper().split() if typ == "OK" else []
            if b"MOVE" not in caps:
                raise IntakeError(self.name, "the server does not support MOVE (RFC 6851), which handled mail needs")
            typ, data = imap.create(_quote(a.processed_folder))  # NO when it exists already: fine
            if typ != "OK":
                self._ok(imap.select(_quote(a.processed_folder), readonly=True), f"opening {a.processed_folder}")
            typ, data = imap.select(_quote(a.folder))
            self._ok((typ, data), f"opening {a.folder}")
            exists = int(data[0]) if isinstance(data[0], bytes) else -1
            if exists < 0:
                raise ValueError(f"malformed EXISTS {data[0]!r}")
            if exists == 0:
                return []
            typ, data = imap.fetch(f"1:{min(exists, a.limit)}", "(UID)")
            self._ok((typ, data), f"listing {a.folder}")
        uids: list[str] = []
        for line in data:
            found = _UID.search(line) if isinstance(line, bytes) else None
            if found is None:
                raise IntakeError(self.name, f"listing {a.folder}: malformed FETCH reply {_clip(line)}")
            uids.append(found.group(1).decode())
        return sorted(set(uids), key=int)

    def _body(self, typ: str, data: list[Any], uid: str) -> bytes | None:
        self._ok((typ, data), f"fetching message {uid}")
        for part in data:
            if isinstance(part, tuple) and len(part) == 2 and isinstance(part[1], bytes):
                return part[1]
        if all(d is None for d in data):  # no FETCH response: the UID is gone
            return None
        raise IntakeError(self.name, f"fetching message {uid}: malformed FETCH reply {_clip(data)}")

    def _ok(self, reply: tuple[str, list[Any]], what: str) -> None:
        typ, data = reply
        if typ != "OK":
            raise IntakeError(self.name, f"{what}: the server said {typ} {_clip(data)}")


def _clip(value: object, size: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= size else text[: size - 1] + "…"


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if text[:2] in ("b'", 'b"'):  # imaplib puts the server's bytes in its message
        text = text[2:-1]
    return " ".join(text.split())[:300]
