"""Our DKIM signatures checked by OpenDKIM (libopendkim, in C: what relays running the OpenDKIM
milter verify with), beside dkimpy's checks in test_dkim.py and test_dkim_process.py.

An edition goes through the signing process and an aiosmtpd relay, and every message the relay
received passes OpenDKIM, both signatures: RSA and Ed25519 (OpenDKIM 2.11, Debian 12's, knows
ed25519-sha256, RFC 8463), with From, List-Unsubscribe and List-Unsubscribe-Post covered (OpenDKIM's
``MustBeSigned``); each one with a link changed or a second From added fails both. Messages of odd
shapes signed in pieces pass OpenDKIM and dkimpy alike. Where the two disagreed — a header in RFC
5322's obsolete syntax, ``Subject :`` — OpenDKIM follows RFC 6376 §3.4.2, and so does our signer now.
"""

from __future__ import annotations

import random
from pathlib import Path

import dkim
import pytest

from feedservice.adapters import dkim_process
from feedservice.adapters.dkim_process import ProcessSigner
from feedservice.ports import RunSigner
from tests.conftest import FeedServer
from tests.opendkim import OpenDkim, Verdict
from tests.test_dkim import DOMAIN, MESSAGES, _digest, _pieces, _random_message, _tags, _verifies
from tests.test_dkim_process import SabotagingRelay, _dkim, _send_edition

PASS = [Verdict("pass", "", "rsa-sha256", "news"), Verdict("pass", "", "ed25519-sha256", "news-ed25519")]
BROKEN = [("fail", "signature verification failed")] * 2  # both signatures


@pytest.fixture(scope="module")
def opendkim(keys: dict[str, bytes], tmp_path_factory: pytest.TempPathFactory) -> OpenDkim:
    records = {"news": keys["news"], "news-ed25519": keys["news-ed25519"]}
    return OpenDkim(tmp_path_factory.mktemp("opendkim"), DOMAIN, records)


def _outcomes(verdicts: list[Verdict]) -> list[tuple[str, str]]:
    return [(v.result, v.reason) for v in verdicts]


def _change_link(message: bytes) -> bytes:
    """The first link of the body pointed elsewhere."""
    body = message.index(b"\r\n\r\n")
    link = message.index(b"https://", body)
    return message[:link] + b"https://evil.example/" + message[link + len(b"https://") :]


def _second_from(message: bytes) -> bytes:
    """A From added right below the signatures, where a relay adding a header would put it."""
    top = message.index(b"\r\nFrom:") + 2
    return message[:top] + b"From: Bank <ceo@bank.example>\r\n" + message[top:]


def test_every_message_of_an_edition_passes_opendkim_and_fails_it_tampered(
    tmp_path: Path,
    feed_server: FeedServer,
    keys: dict[str, bytes],
    monkeypatch: pytest.MonkeyPatch,
    opendkim: OpenDkim,
) -> None:
    monkeypatch.setattr(dkim_process, "START_AFTER", 1)  # the signing process from the first message
    made: list[RunSigner] = []
    relay = SabotagingRelay(made, None)  # slow until the signing process has signed 5, so it gets to
    readers = [f"r{i:02d}@example.com" for i in range(40)]
    report = _send_edition(tmp_path, feed_server, keys, monkeypatch, relay, readers, made)
    (signer,) = made
    assert relay.done and isinstance(signer, ProcessSigner) and signer.signed >= 5
    assert report.sent == 40
    received = [data for _, data in relay.received]
    assert len(received) == 40
    verdicts = opendkim.verify(received + [_change_link(m) for m in received] + [_second_from(m) for m in received])
    for i, data in enumerate(received):
        assert verdicts[i] == PASS, opendkim.summary(i)
        assert {"from", "list-unsubscribe", "list-unsubscribe-post"} <= set(_tags(data)["h"].split(":"))
    for i in range(40, 120):
        assert _outcomes(verdicts[i]) == BROKEN, opendkim.summary(i)
    # dkimpy agrees on the first of each kind.
    assert _verifies(received[0], keys, 0) and _verifies(received[0], keys, 1)
    assert not _verifies(_change_link(received[0]), keys, 0) and not _verifies(_second_from(received[0]), keys, 1)


def test_opendkim_fails_a_signature_that_leaves_the_one_click_headers_out(
    keys: dict[str, bytes], opendkim: OpenDkim
) -> None:
    """The coverage check can fail: the same digest signed by dkimpy with and without them."""
    raw = _digest()

    def signed_by_dkimpy(*names: bytes) -> bytes:
        relaxed = (b"relaxed", b"relaxed")
        header: bytes = dkim.sign(
            raw, b"news", DOMAIN.encode(), keys["rsa"], canonicalize=relaxed, include_headers=list(names)
        )
        return header + raw

    covered = signed_by_dkimpy(b"from", b"subject", b"list-unsubscribe", b"list-unsubscribe-post")
    uncovered = signed_by_dkimpy(b"from", b"to", b"subject")
    assert _outcomes(opendkim.verify([covered])[0]) == [("pass", "")]
    assert _outcomes(opendkim.verify([uncovered])[0]) == [("fail", "unprotected header field")]


HEAD = (
    "From: 뉴스스페이스 <newsletter@newsspace.kr>\r\nTo: reader@example.com\r\n"
    "List-Unsubscribe: <https://feeds.newsspace.kr/unsubscribe/1.0.sig>\r\n"
    "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
)
SEGMENT = "<p>  오늘의  소식\t\r\n".encode() * 50
ODD: dict[str, tuple[bytes, list[bytes]]] = {
    "Korean headers, raw UTF-8": (
        (HEAD + "Subject: 뉴스스페이스  아침 브리핑\t(수)\r\nList-Id: 뉴스 <digest.newsspace.kr>\r\n\r\n").encode(),
        [SEGMENT, b"https://f.kr/u/1", b"\r\n"],
    ),
    "folded headers": (
        (
            HEAD + "Subject: =?utf-8?b?64m07Iqk?=\r\n =?utf-8?b?7Iqk7Y6Y?=\r\n\t  \t=?utf-8?b?7J207Iqk?=  \r\n\r\n"
        ).encode(),
        [SEGMENT, b"https://f.kr/u/2", b"\r\n"],
    ),
    "long lines": (
        (HEAD + "Subject: " + "브리핑" * 1500 + "\r\nX-Long: " + "y " * 3000 + "\r\n\r\n").encode(),
        ["가".encode() * 20_000, b"https://f.kr/u/3", b"x" * 50_000 + b"\r\n"],
    ),
    "trailing empty lines": ((HEAD + "\r\n").encode(), [SEGMENT, b"https://f.kr/u/4", b"\r\n\r\n \r\n\t\r\n\r\n"]),
    "body of blank lines": ((HEAD + "\r\n").encode(), [b" \r\n\t\r\n", b"\r\n"]),
    "empty body": ((HEAD + "\r\n").encode(), []),
}


def test_odd_messages_signed_in_pieces_pass_opendkim_as_dkimpy(keys: dict[str, bytes], opendkim: OpenDkim) -> None:
    signer = _dkim(keys, ed25519=True)
    rng = random.Random(6376)
    generated = [_pieces(raw, rng) for raw in [*MESSAGES.values(), *(_random_message(rng) for _ in range(60))]]
    signed = [signer.sign_parts(head, body) for head, body in [*ODD.values(), *generated]]
    verdicts = opendkim.verify(signed)
    for i, message in enumerate(signed):
        assert verdicts[i] == PASS, (i, opendkim.summary(i))
        assert _verifies(message, keys, 0) and _verifies(message, keys, 1), i


def test_a_header_in_obsolete_syntax_is_covered_as_opendkim_reads_it(
    keys: dict[str, bytes], opendkim: OpenDkim
) -> None:
    """``Subject :`` is a Subject to OpenDKIM, as to RFC 5322 §4.5.3 and RFC 6376 §3.4.2 (dkimpy
    refuses such a message). Our signer left it unsigned: OpenDKIM failed a List-Unsubscribe written
    so (not covered) and passed a Subject written so after it was changed."""
    signer = _dkim(keys, ed25519=True)
    unsubscribe = HEAD.replace("List-Unsubscribe:", "List-Unsubscribe :") + "\r\n"
    subject = "From: newsletter@newsspace.kr\r\nSubject : 오늘의 브리핑\r\n\r\n"
    signed = [signer.sign_parts(head.encode(), [b"body\r\n"]) for head in (unsubscribe, subject)]
    changed = signed[1].replace("오늘의 브리핑".encode(), "긴급 송금 요청".encode())
    verdicts = opendkim.verify([*signed, changed])
    assert verdicts[:2] == [PASS, PASS], (opendkim.summary(0), opendkim.summary(1))
    assert _outcomes(verdicts[2]) == BROKEN, opendkim.summary(2)
