"""SMTP delivery with aiosmtplib: one connection reused for many messages.

Replies are classified per recipient: 4xx, timeouts and dropped connections are
transient (``DeliveryError(permanent=False)``); 5xx are permanent; an
authentication or TLS failure is ``DeliveryFatal`` and stops the run.
"""

from __future__ import annotations

import asyncio
import contextlib

import aiosmtplib

from feedservice.config import Secret
from feedservice.errors import DeliveryError, DeliveryFatal


class SmtpMailer:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: str = "starttls",
        username: str | None = None,
        password: Secret | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.host, self.port, self.tls = host, port, tls
        self.username, self._password, self.timeout = username, password, timeout
        self._client: aiosmtplib.SMTP | None = None
        self._lock = asyncio.Lock()

    async def _connect(self) -> aiosmtplib.SMTP:
        client = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            timeout=self.timeout,
            use_tls=self.tls == "implicit",
            start_tls=self.tls == "starttls",
        )
        try:
            await client.connect()
        except aiosmtplib.SMTPConnectError as exc:
            raise DeliveryError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            if "TLS" in str(exc) or "SSL" in str(exc):
                raise DeliveryFatal(f"TLS with {self.host}:{self.port} failed: {exc}") from exc
            raise DeliveryError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        if self.username:
            try:
                await client.login(self.username, self._password.reveal() if self._password else "")
            except aiosmtplib.SMTPAuthenticationError as exc:
                await _quietly_close(client)
                raise DeliveryFatal(
                    f"{self.host} refused the login of {self.username!r}: {exc.code} {exc.message}"
                ) from exc
            except aiosmtplib.SMTPException as exc:
                await _quietly_close(client)
                raise DeliveryFatal(f"login at {self.host} failed: {exc}") from exc
        return client

    async def send(self, sender: str, recipient: str, message: bytes) -> str:
        async with self._lock:
            if self._client is None or not self._client.is_connected:
                self._client = await self._connect()
            try:
                # The bodies are 8bit UTF-8: declare it where the server offers 8BITMIME (RFC 6152).
                options = ["BODY=8BITMIME"] if self._client.supports_extension("8bitmime") else []
                _, reply = await self._client.sendmail(sender, [recipient], message, mail_options=options)
            except aiosmtplib.SMTPRecipientsRefused as exc:
                r = exc.recipients[0]
                raise DeliveryError(f"{r.code} {r.message}", code=r.code, permanent=r.code >= 500) from exc
            except aiosmtplib.SMTPResponseException as exc:
                await self._reset()  # the transaction is in an unknown state: start clean next time
                raise DeliveryError(f"{exc.code} {exc.message}", code=exc.code, permanent=exc.code >= 500) from exc
            except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
                await self._reset()
                raise DeliveryError(f"connection failed: {exc.__class__.__name__}: {exc}") from exc
            return reply

    async def _reset(self) -> None:
        if self._client is not None:
            await _quietly_close(self._client)
        self._client = None

    async def aclose(self) -> None:
        if self._client is not None and self._client.is_connected:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await self._client.quit()
        await self._reset()


async def _quietly_close(client: aiosmtplib.SMTP) -> None:
    with contextlib.suppress(Exception):  # closing a broken connection must never raise
        client.close()
