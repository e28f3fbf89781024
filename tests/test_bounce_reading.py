"""Reading returned mail (``adapters/bounces/reading.py``): flufl.bounce's corpus of real bounces
from many MTAs (downloaded at test time, never vendored), our own samples (tests/data/bounces:
Postfix, Exim, Gmail and Korean providers' DSNs, an ARF complaint, 부재중 replies) and hostile mail."""

from __future__ import annotations

import ast
from datetime import date
from pathlib import Path

import pytest

from feedservice.adapters.bounces.reading import read_bounce
from feedservice.bounce_model import BounceKind, status_kind
from feedservice.verp import envelope_sender
from tests.conftest import sdist_tree

FLUFL_SDIST = "flufl.bounce==6.0.0"
DAY = date(2026, 11, 20)
SAMPLES = Path(__file__).parent / "data" / "bounces"
SECRET = b"test-secret-for-signing"  # FS_TEST_SECRET in tests/conftest.py


def sample(
    name: str,
    *,
    verp: str = "bounces@newsspace.kr",
    message_id: str = "<none@newsspace.kr>",
    rcpt: str = "nobody@example.com",
) -> bytes:
    data = (SAMPLES / name).read_bytes()
    return (
        data.replace(b"@@VERP@@", verp.encode())
        .replace(b"@@MESSAGE_ID@@", message_id.encode())
        .replace(b"@@RCPT@@", rcpt.encode())
    )


Corpus = tuple[Path, list[tuple[str, str, list[bytes], bool]]]


@pytest.fixture(scope="module")
def flufl_corpus() -> Corpus:
    """flufl.bounce's own test data (real bounces from many MTAs) and its table of what each says."""
    target = sdist_tree(FLUFL_SDIST, "flufl_bounce-6.0.0") / "tests"
    tree = ast.parse((target / "test_detectors.py").read_text(encoding="utf-8"))
    [table] = [
        n.value
        for n in tree.body
        if isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "DETECTORS" for t in n.targets)
    ]
    return target / "data", ast.literal_eval(table)


def test_real_bounces_from_many_mtas_are_read(flufl_corpus: Corpus) -> None:
    folder, table = flufl_corpus
    assert len(table) > 100
    wrong: list[str] = []
    # Each row is what one detector finds; a row with no address says only that this detector
    # finds none (another may), so the rows that name addresses are the ground truth.
    for _, name, expected, temporary in table:
        if not expected:
            continue
        reading = read_bounce((folder / name).read_bytes())
        # 4.x.x and 5.2.2 are soft whatever the MTA concluded; other failures hard.
        soft = temporary or (reading.status or "").startswith("4.") or reading.status == "5.2.2"
        if reading.kind is not (BounceKind.SOFT if soft else BounceKind.HARD) or not (
            {e.decode() for e in expected} <= set(reading.recipients)
        ):
            wrong.append(f"{name}: {reading.kind} {reading.status} {reading.recipients}")
    assert wrong == []
    # qmail_08 is a vacation reply that Mailman's detectors rightly skip: we call it that.
    assert read_bounce((folder / "qmail_08.txt").read_bytes()).kind is BounceKind.AUTO_REPLY


@pytest.mark.parametrize(
    ("name", "kind", "status"),
    [
        ("postfix-5.1.1.eml", BounceKind.HARD, "5.1.1"),
        ("exim-5.2.2.eml", BounceKind.SOFT, "5.2.2"),
        ("gmail-ko-5.1.1.eml", BounceKind.HARD, "5.1.1"),
        ("naver-ko-plain.eml", BounceKind.HARD, "5.1.1"),
        ("daum-ko-4.4.7.eml", BounceKind.SOFT, "4.4.7"),
        ("arf-complaint.eml", BounceKind.COMPLAINT, None),
        ("autoreply-ko.eml", BounceKind.AUTO_REPLY, None),
        ("outlook-autoreply.eml", BounceKind.AUTO_REPLY, None),  # "550 5.1.1" in a person's text
        ("spam.eml", BounceKind.UNKNOWN, None),
    ],
)
def test_our_samples_are_read(name: str, kind: BounceKind, status: str | None) -> None:
    verp = envelope_sender("bounces@newsspace.kr", SECRET, DAY, 7)
    reading = read_bounce(sample(name, verp=verp, message_id="<digest.x@newsspace.kr>"))
    assert (reading.kind, reading.status) == (kind, status)
    if kind not in (BounceKind.UNKNOWN, BounceKind.COMPLAINT):
        assert verp in reading.envelope
    if name.startswith(("gmail", "naver")):
        assert reading.subject in ("Delivery Status Notification (Failure)", "메일 발송 실패 안내")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xff\xfe" * 5000,
        b"Subject: x\r\n" + b"X-A: " + b"a" * 1_000_000 + b"\r\n\r\nbody",
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b\r\n"
        b"Content-Type: message/delivery-status\r\n\r\nStatus: 5.1.1\r\n--b--\r\n",  # no recipient block
        b"Content-Type: multipart/report; report-type=feedback-report; boundary=b\r\n\r\n--b\r\n"
        b"Content-Type: message/feedback-report\r\n\r\n\r\n--b--\r\n",  # an empty report
        b"Content-Type: multipart/mixed; boundary=a\r\n\r\n"
        + b"--a\r\nContent-Type: multipart/mixed; boundary=a\r\n\r\n" * 2000,
    ],
    ids=["empty", "binary", "huge-header", "dsn-without-recipient", "empty-arf", "deep-nesting"],
)
def test_hostile_mail_is_kept_never_a_crash(raw: bytes) -> None:
    reading = read_bounce(raw)
    assert reading.kind in (BounceKind.UNKNOWN, BounceKind.COMPLAINT, BounceKind.HARD)
    assert reading.kind is not BounceKind.HARD or reading.recipients == ()  # nobody to suppress by address


@pytest.mark.parametrize(
    ("status", "kind"),
    [(code, BounceKind.HARD) for code in ("5.1.1", "5.1.10", "5.2.1", "5.0.0", "5.3.0", "5.4.1")]
    + [(code, BounceKind.SOFT) for code in ("5.2.2", "4.2.2", "4.4.7", "4.7.1")]
    + [(code, BounceKind.POLICY) for code in ("5.7.1", "5.7.26", "5.6.0", "5.3.4", "5.2.3")]
    + [("2.0.0", None), ("9.1.1", None), ("", None)],
)
def test_status_kinds(status: str, kind: BounceKind | None) -> None:
    assert status_kind(status) is kind


def test_a_persons_auto_reply_quoting_a_bounce_code_is_not_a_bounce() -> None:
    """RFC 3834 asks auto-replies for a null return path too: that alone does not make a mail system."""
    raw = (
        b"Return-Path: <>\r\nFrom: Kim <kim@example.com>\r\nTo: bounces@newsspace.kr\r\n"
        b"Subject: Re: briefing\r\nAuto-Submitted: auto-replied\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        b"I am travelling. (My old address gave 550 5.1.1; write to the new one.)\r\n"
    )
    assert read_bounce(raw).kind is BounceKind.AUTO_REPLY
