"""adapters/smtp.py at its library boundary: aiosmtplib's public commands read each address with
``email.utils.parseaddr``, which takes ``a(b)@x`` for ``a@x`` and ``a:b@x`` for ``b@x``. Such an
address must never be delivered to the other mailbox it reads as: it fails, permanently, for that
reader alone, and the connection goes on to the next message."""

from __future__ import annotations

import asyncio

import pytest

from feedservice.adapters.smtp import SmtpMailer
from feedservice.errors import DeliveryError, SendingStopped
from tests.conftest import SmtpSink

MESSAGE = b"Subject: x\r\n\r\nbody\r\n"


@pytest.mark.parametrize(
    ("address", "reads_as"),
    [
        ("reader(comment)@example.com", "reader@example.com"),
        ("someone:victim@example.com", "victim@example.com"),
        ("a,victim@example.com", "a"),
        ("a;victim@example.com", "a"),
    ],
)
def test_an_address_the_library_would_rewrite_is_never_sent_elsewhere(
    smtp_server: tuple[SmtpSink, int], address: str, reads_as: str
) -> None:
    sink, port = smtp_server

    async def run() -> BaseException | None:
        mailer = SmtpMailer("127.0.0.1", port, tls="none", pool_size=1)
        try:
            try:
                await mailer.send("newsletter@newsspace.kr", address, MESSAGE)
            except DeliveryError as exc:
                error: BaseException | None = exc
            else:
                error = None
            await mailer.send("newsletter@newsspace.kr", "next@example.com", MESSAGE)  # the run goes on
            return error
        finally:
            await mailer.aclose()

    error = asyncio.run(run())
    delivered = [rcpt for _, rcpts, _ in sink.messages for rcpt in rcpts]
    assert reads_as not in delivered and delivered[-1] == "next@example.com"
    assert delivered in (["next@example.com"], [address, "next@example.com"])  # only ever the address itself
    if error is not None:  # refused: about this reader only, and for good
        assert isinstance(error, DeliveryError) and not isinstance(error, SendingStopped)
        assert error.permanent
