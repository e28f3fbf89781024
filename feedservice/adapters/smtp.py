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

Only aiosmtplib's public API is used (``connect``, ``ehlo``/``helo``, ``login``,
``execute_command`` for MAIL and RCPT, ``data``, ``rset``, ``quit``), so pyproject.toml pins it
by major version only.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import re

import aiosmtplib
from pydantic import SecretStr

from feedservice.addresses import wire_address
from feedservice.errors import DeliveryError, DeliveryFatal, SendingStopped

_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
# A plain ASCII address: dot-atom local part (RFC 5322 atext), LDH domain labels. parseaddr reads
# such an address as itself and its domain needs no IDNA, so ``_address`` takes it as it is.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


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
        password: SecretStr | None = None,
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
            hostname=self.host,
            port=self.port,
            timeout=self.timeout,
            use_tls=self.tls == "implicit",
            start_tls=self.tls == "starttls",
        )
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
                await client.login(self.username, self._password.get_secret_value() if self._password else "")
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


async def _transaction(client: aiosmtplib.SMTP, from_: str, to: str, message: bytes) -> str:
    """MAIL, RCPT and DATA for one recipient through aiosmtplib's public commands.

    Not ``client.sendmail``: it sends to every recipient it can and reports refusals after
    DATA, where one recipient per transaction needs each refusal as it comes (RCPT refused:
    reset and reuse the connection; MAIL refused: about us, stop). aiosmtplib's ``data`` puts
    the body in wire form (CRLF line ends, dots doubled).
    """
    if client.is_ehlo_or_helo_needed:  # a new connection (or one just upgraded by STARTTLS)
        try:
            await client.ehlo()
        except aiosmtplib.SMTPHeloError:
            try:
                await client.helo()
            except aiosmtplib.SMTPHeloError as exc:
                raise _sender_error(exc.code, exc.message, "the relay refused our EHLO and HELO") from exc
    options = ["BODY=8BITMIME"] if client.supports_extension("8bitmime") else []
    encoding = "ascii"
    if not (from_ + to).isascii():
        if not client.supports_extension("smtputf8"):
            if not from_.isascii():
                raise DeliveryFatal("the sender address needs SMTPUTF8, which the relay does not offer")
            raise _Refused(
                DeliveryError(
                    "553 5.6.7 not sent: the address needs SMTPUTF8 (RFC 6531), which the relay does not offer",
                    code=553,
                    permanent=True,
                    enhanced="5.6.7",
                )
            )
        options.append("SMTPUTF8")
        encoding = "utf-8"
    # MAIL and RCPT through ``execute_command``, the public command that ``mail`` and ``rcpt`` wrap:
    # they would read each address with parseaddr once more (~20 µs each, docs/benchmarks.md),
    # where ``_address`` has already made it what goes between < and >.
    r = await client.execute_command(
        b"MAIL", b"FROM:<" + from_.encode(encoding) + b">", *(o.encode("ascii") for o in options)
    )
    if r.code != aiosmtplib.SMTPStatus.completed:
        raise _sender_error(r.code, r.message, f"the relay refused our sender {from_}")
    r = await client.execute_command(b"RCPT", b"TO:<" + to.encode(encoding) + b">")
    if r.code not in (aiosmtplib.SMTPStatus.completed, aiosmtplib.SMTPStatus.will_forward):
        raise _Refused(_error(r.code, r.message))
    try:
        r = await client.data(message)
    except aiosmtplib.SMTPDataError as exc:  # the reply to DATA or to the message
        raise _error(exc.code, exc.message) from exc
    return f"{r.code} {r.message}"


def _address(address: str) -> str:
    """An address as it goes between < and >, its domain in IDNA form: validated when stored,
    so only checked here for what would break the command line or has no wire form.

    An address that ``email.utils.parseaddr`` would read differently (a comment in parentheses,
    a quoted part) is refused here: aiosmtplib's ``mail``/``rcpt``, relays and mail tools read
    addresses that way, and it must never mean a mailbox other than the reader's. Plain addresses
    (nearly all) skip the parser: it cost ~20 µs an address (docs/benchmarks.md)."""
    if _PLAIN.fullmatch(address):
        return address
    if not address or any(c in address for c in "\r\n<> \t\0"):
        raise DeliveryError(f"not a deliverable address: {address!r}", permanent=True)
    try:
        wire = wire_address(address)
    except ValueError as exc:
        raise DeliveryError(f"not a deliverable address: {exc}", permanent=True) from exc
    if email.utils.parseaddr(wire)[1] != wire:
        raise DeliveryError(f"not a deliverable address: {address!r} does not read as itself", permanent=True)
    return wire


async def _quit(client: aiosmtplib.SMTP) -> None:
    with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
        await client.quit()
    _close(client)


def _close(client: aiosmtplib.SMTP) -> None:
    with contextlib.suppress(Exception):  # closing a broken connection must never raise
        client.close()
