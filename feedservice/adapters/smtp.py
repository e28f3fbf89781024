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
        async with self._slots:
            conn = self._idle.pop() if self._idle else None
            if conn is None or not conn.client.is_connected:
                conn = await self._connect()
            try:
                # The bodies are 8bit UTF-8: declare it where the server offers 8BITMIME (RFC 6152).
                options = ["BODY=8BITMIME"] if conn.client.supports_extension("8bitmime") else []
                _, reply = await conn.client.sendmail(sender, [recipient], message, mail_options=options)
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


async def _quit(client: aiosmtplib.SMTP) -> None:
    with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
        await client.quit()
    _close(client)


def _close(client: aiosmtplib.SMTP) -> None:
    with contextlib.suppress(Exception):  # closing a broken connection must never raise
        client.close()
