"""SMTP delivery with aiosmtplib: a pool of connections, each reused for many messages.

Who a reply is about decides what it means. Replies at the RCPT stage (and the final DATA
reply: one recipient per transaction) are about the recipient: ``DeliveryError``, 4xx and
timeouts transient, 5xx permanent, with the RFC 3463 enhanced code (e.g. 5.1.1) carried on the
error. Replies to connect, EHLO, STARTTLS, AUTH and MAIL FROM are about us or the relay:
``SendingStopped`` (temporary: the run stops and a later run retries) or, for a 5xx,
``DeliveryFatal`` (the run stops until the setup is fixed). No reader is ever marked for a reply
that was not about them. A ``421`` in reply to RCPT or DATA is a temporary ``DeliveryError``:
it answers for one recipient's provider (Naver's ``421 4.3.1 too many messages``), which the
sending loop pauses (``replies.throttled``) while other domains go on.

Addresses go out with their domain in IDNA form (``addresses.wire_address``); a non-ASCII local
part is sent with SMTPUTF8 (RFC 6531) where the relay offers it, and refused permanently for
that recipient where it does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import re

import aiosmtplib

from feedservice.addresses import wire_address
from feedservice.config import Secret
from feedservice.errors import DeliveryError, DeliveryFatal, SendingStopped

_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")


def enhanced_code(text: str) -> str | None:
    """The RFC 3463 enhanced status code in a reply text ("5.1.1"), if there is one."""
    m = _ENHANCED.search(text)
    return m.group(0) if m else None


def _error(code: int, message: str) -> DeliveryError:
    """A reply about the recipient (RCPT, DATA): a 421 there is its provider throttling us."""
    text = f"{code} {message}".strip()
    return DeliveryError(text, code=code, permanent=code >= 500, enhanced=enhanced_code(message))


def _sender_error(code: int | None, message: str, what: str) -> SendingStopped:
    """A refusal that is about us: 5xx stops the run until fixed, anything else defers it."""
    text = f"{what}: {code} {message}".strip() if code else f"{what}: {message}"
    enhanced = enhanced_code(message)
    if code is not None and code >= 500:
        return DeliveryFatal(text, code=code, enhanced=enhanced)
    return SendingStopped(text, code=code, enhanced=enhanced)


class _Connection:
    def __init__(self, client: aiosmtplib.SMTP) -> None:
        self.client = client
        self.sent = 0


class SmtpMailer:
    """Up to ``pool_size`` connections; ``send`` may be called concurrently from many tasks."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: str = "starttls",
        username: str | None = None,
        password: Secret | None = None,
        timeout: float = 30.0,
        pool_size: int = 4,
        messages_per_connection: int = 100,
    ) -> None:
        self.host, self.port, self.tls = host, port, tls
        self.username, self._password, self.timeout = username, password, timeout
        self.pool_size, self.messages_per_connection = pool_size, messages_per_connection
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(pool_size)

    async def _connect(self) -> _Connection:
        where = f"{self.host}:{self.port}"
        client = aiosmtplib.SMTP(
            hostname=self.host, port=self.port, timeout=self.timeout,
            use_tls=self.tls == "implicit", start_tls=self.tls == "starttls",
        )  # fmt: skip
        try:
            await client.connect()
        except aiosmtplib.SMTPResponseException as exc:  # the greeting, EHLO or STARTTLS refused
            _close(client)
            raise _sender_error(exc.code, exc.message, f"{where} refused the connection") from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            _close(client)
            if "TLS" in str(exc) or "SSL" in str(exc) or "STARTTLS" in str(exc).upper():
                raise DeliveryFatal(f"TLS with {where} failed: {exc}") from exc
            raise SendingStopped(f"cannot connect to {where}: {exc.__class__.__name__}: {exc}") from exc
        if self.username:
            try:
                await client.login(self.username, self._password.reveal() if self._password else "")
            except aiosmtplib.SMTPResponseException as exc:
                _close(client)
                who = f"{self.host} refused the login of {self.username!r}"
                raise _sender_error(exc.code, exc.message, who) from exc
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                _close(client)
                raise DeliveryFatal(f"login at {self.host} failed: {exc}") from exc
        return _Connection(client)

    async def send(self, sender: str, recipient: str, message: bytes) -> str:
        try:
            from_ = _address(sender)
        except DeliveryError as exc:
            raise DeliveryFatal(f"the sender address is not usable: {exc}") from exc
        to = _address(recipient)
        async with self._slots:
            conn = self._idle.pop() if self._idle else None
            if conn is None or not conn.client.is_connected:
                conn = await self._connect()
            try:
                reply = await _transaction(conn.client, from_, to, message)
            except _Refused as exc:  # before DATA: the connection is fine, reset it for the next message
                await self._reset(conn)
                raise exc.error from exc.__cause__
            except DeliveryError:
                _close(conn.client)  # the transaction is in an unknown state: start clean next time
                raise
            except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
                _close(conn.client)
                raise DeliveryError(f"connection failed: {exc.__class__.__name__}: {exc}") from exc
            conn.sent += 1
            if conn.sent >= self.messages_per_connection:
                await _quit(conn.client)
            else:
                self._idle.append(conn)
            return reply

    async def _reset(self, conn: _Connection) -> None:
        try:
            await conn.client.rset()
            self._idle.append(conn)
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            _close(conn.client)

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        await asyncio.gather(*(_quit(c.client) for c in idle))


class _Refused(Exception):
    """A refusal before DATA, after which the connection can be reset and reused."""

    def __init__(self, error: DeliveryError) -> None:
        super().__init__(str(error))
        self.error = error


async def _transaction(client: aiosmtplib.SMTP, from_: bytes, to: bytes, message: bytes) -> str:
    """MAIL, RCPT and DATA for one recipient, with aiosmtplib's commands and reply handling.

    Not ``client.sendmail``: for every message that re-parses both addresses with the email
    package and rewrites the whole body with two regular expressions (line endings, dot
    stuffing) — a third of the sender's CPU on a 23 KB digest. Here the addresses come checked
    (``_address``) and the body is put in wire form with a few scans in C, copied only when it
    needs a change.
    """
    if client.is_ehlo_or_helo_needed:  # a new connection (or one just upgraded by STARTTLS)
        try:
            await client.ehlo()
        except aiosmtplib.SMTPHeloError:
            try:
                await client.helo()
            except aiosmtplib.SMTPHeloError as exc:
                raise _sender_error(exc.code, exc.message, "the relay refused our EHLO and HELO") from exc
    options = [b"BODY=8BITMIME"] if client.supports_extension("8bitmime") else []
    if not (from_ + to).isascii():
        if not client.supports_extension("smtputf8"):
            if not from_.isascii():
                raise DeliveryFatal("the sender address needs SMTPUTF8, which the relay does not offer")
            raise _Refused(DeliveryError(
                "553 5.6.7 not sent: the address needs SMTPUTF8 (RFC 6531), which the relay does not offer",
                code=553, permanent=True, enhanced="5.6.7",
            ))  # fmt: skip
        options.append(b"SMTPUTF8")
    r = await client.execute_command(b"MAIL", b"FROM:<" + from_ + b">", *options)
    if r.code != 250:
        raise _sender_error(r.code, r.message, f"the relay refused our sender {from_.decode('utf-8')}")
    r = await client.execute_command(b"RCPT", b"TO:<" + to + b">")
    if r.code not in (250, 251):
        raise _Refused(_error(r.code, r.message))
    r = await client.execute_command(b"DATA")
    if r.code != 354:
        raise _error(r.code, r.message)
    protocol = client.protocol
    if protocol is None:
        raise aiosmtplib.SMTPServerDisconnected("connection lost before the message was sent")
    protocol.write(wire_form(message))
    r = await protocol.read_response(timeout=client.timeout)
    if r.code != 250:
        raise _error(r.code, r.message)
    return f"{r.code} {r.message}"


def _address(address: str) -> bytes:
    """An address as it goes between < and >, its domain in IDNA form: validated when stored,
    so only checked here for what would break the command line or has no wire form."""
    if not address or any(c in address for c in "\r\n<> \t\0"):
        raise DeliveryError(f"not a deliverable address: {address!r}", permanent=True)
    try:
        return wire_address(address).encode("utf-8")
    except ValueError as exc:
        raise DeliveryError(f"not a deliverable address: {exc}", permanent=True) from exc


_BARE_EOL = re.compile(rb"\r\n|\r|\n")


def wire_form(message: bytes) -> bytes:
    """The DATA payload (RFC 5321 §4.5.2): CRLF line ends, leading dots doubled, ended by CRLF.CRLF."""
    crlf = message.count(b"\r\n")
    if message.count(b"\r") != crlf or message.count(b"\n") != crlf:
        message = _BARE_EOL.sub(b"\r\n", message)
    if message.startswith(b"."):
        message = b"." + message
    if b"\n." in message:
        message = message.replace(b"\n.", b"\n..")
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    return message + b".\r\n"


async def _quit(client: aiosmtplib.SMTP) -> None:
    with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
        await client.quit()
    _close(client)


def _close(client: aiosmtplib.SMTP) -> None:
    with contextlib.suppress(Exception):  # closing a broken connection must never raise
        client.close()
