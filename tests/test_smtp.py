"""adapters/smtp.py at its library boundary: ``email.utils.parseaddr`` (behind aiosmtplib's ``mail``
and ``rcpt``, and many mail tools) takes ``a(b)@x`` for ``a@x`` and ``a:b@x`` for ``b@x``. Such an
address must never be delivered to the other mailbox it reads as: it fails, permanently, for that
reader alone, and the connection goes on to the next message."""

from __future__ import annotations

import asyncio
import email.utils

import pytest

from feedservice.adapters.smtp import SmtpMailer, _address
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


ATEXT = "abzAZ09!#$%&'*+/=?^_`{|}~-"


@pytest.mark.parametrize(
    "address",
    [f"a{c}{d}b@example.com" for c in ATEXT + "." for d in ATEXT]
    + [f"{c}@x.co" for c in ATEXT]
    + ["first.last@mail.example.co.kr", "reader+tag@naver.com", "a-b@x-y.kr", "user@localhost"],
)
def test_a_plain_address_goes_out_as_itself(address: str) -> None:
    """The fast path for plain addresses gives what the parser check gives: the address itself."""
    assert _address(address) == address
    assert email.utils.parseaddr(address)[1] == address


@pytest.mark.parametrize(
    "address", ["a..b@example.com", ".a@example.com", "a.@example.com", "a@b..c", "a@-", "a(b)@x", "a@x.kr."]
)
def test_an_address_outside_the_fast_path_still_meets_the_parser(address: str) -> None:
    try:
        wire = _address(address)
    except DeliveryError:
        return
    assert email.utils.parseaddr(wire)[1] == wire
