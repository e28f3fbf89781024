"""SMTP delivery with aiosmtplib: a pool of connections, each reused for many messages.

Replies are classified per recipient: 4xx, timeouts and dropped connections are transient
(``DeliveryError(permanent=False)``); 5xx are permanent; the enhanced status code
(RFC 3463, e.g. 5.1.1) is carried on the error. An authentication or TLS failure is
``DeliveryFatal``: it is about us, not the recipient, and stops the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import re

import aiosmtplib

from feedservice.config import Secret
from feedservice.errors import DeliveryError, DeliveryFatal

_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")


def enhanced_code(text: str) -> str | None:
    """The RFC 3463 enhanced status code in a reply text ("5.1.1"), if there is one."""
    m = _ENHANCED.search(text)
    return m.group(0) if m else None


def _error(code: int, message: str) -> DeliveryError:
    text = f"{code} {message}".strip()
    return DeliveryError(text, code=code, permanent=code >= 500, enhanced=enhanced_code(message))


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
        client = aiosmtplib.SMTP(
            hostname=self.host, port=self.port, timeout=self.timeout,
            use_tls=self.tls == "implicit", start_tls=self.tls == "starttls",
        )  # fmt: skip
        try:
            await client.connect()
        except aiosmtplib.SMTPConnectError as exc:
            raise DeliveryError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            if "TLS" in str(exc) or "SSL" in str(exc) or "STARTTLS" in str(exc).upper():
                raise DeliveryFatal(f"TLS with {self.host}:{self.port} failed: {exc}") from exc
            raise DeliveryError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        if self.username:
            try:
                await client.login(self.username, self._password.reveal() if self._password else "")
            except aiosmtplib.SMTPAuthenticationError as exc:
                _close(client)
                raise DeliveryFatal(
                    f"{self.host} refused the login of {self.username!r}: {exc.code} {exc.message}"
                ) from exc
            except aiosmtplib.SMTPException as exc:
                _close(client)
                raise DeliveryFatal(f"login at {self.host} failed: {exc}") from exc
        return _Connection(client)

    async def send(self, sender: str, recipient: str, message: bytes) -> str:
        from_, to = _address(sender), _address(recipient)
        async with self._slots:
            conn = self._idle.pop() if self._idle else None
            if conn is None or not conn.client.is_connected:
                conn = await self._connect()
            try:
                reply = await _transaction(conn.client, from_, to, message)
            except aiosmtplib.SMTPRecipientsRefused as exc:
                r = exc.recipients[0]
                await self._reset(conn)  # a clean transaction for the next message
                raise _error(r.code, r.message) from exc
            except aiosmtplib.SMTPResponseException as exc:
                _close(conn.client)  # the transaction is in an unknown state: start clean next time
                raise _error(exc.code, exc.message) from exc
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
            await client.helo()
    options = [b"BODY=8BITMIME"] if client.supports_extension("8bitmime") else []
    recipient = to.decode("utf-8")
    if not (from_ + to).isascii():
        if not client.supports_extension("smtputf8"):
            raise aiosmtplib.SMTPRecipientsRefused([
                aiosmtplib.SMTPRecipientRefused(553, "5.6.7 the server does not offer SMTPUTF8", recipient)
            ])  # fmt: skip
        options.append(b"SMTPUTF8")
    r = await client.execute_command(b"MAIL", b"FROM:<" + from_ + b">", *options)
    if r.code != 250:
        raise aiosmtplib.SMTPSenderRefused(r.code, r.message, from_.decode("utf-8"))
    r = await client.execute_command(b"RCPT", b"TO:<" + to + b">")
    if r.code not in (250, 251):
        raise aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(r.code, r.message, recipient)])
    r = await client.execute_command(b"DATA")
    if r.code != 354:
        raise aiosmtplib.SMTPDataError(r.code, r.message)
    protocol = client.protocol
    if protocol is None:
        raise aiosmtplib.SMTPServerDisconnected("connection lost before the message was sent")
    protocol.write(wire_form(message))
    r = await protocol.read_response(timeout=client.timeout)
    if r.code != 250:
        raise aiosmtplib.SMTPDataError(r.code, r.message)
    return f"{r.code} {r.message}"


def _address(address: str) -> bytes:
    """An address as it goes between < and >: validated when stored, so only checked here for
    what would break the command line."""
    if not address or any(c in address for c in "\r\n<> \t\0"):
        raise DeliveryError(f"not a deliverable address: {address!r}", permanent=True)
    return address.encode("utf-8")


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
