"""DKIM signing, checked by an independent verifier (dkimpy) on the digest's real messages and on
generated ones: Korean bodies in every transfer encoding, folded and ragged headers, line endings."""

from __future__ import annotations

import base64
import email
import random
import re
import shutil
import subprocess
from collections.abc import Callable
from email import policy
from email.message import EmailMessage
from pathlib import Path

import dkim
import pytest

from feedservice.adapters.dkim import DkimSigner
from feedservice.bootstrap import make_app
from feedservice.cli import main as cli
from feedservice.config import load_settings
from feedservice.errors import ConfigError, DeliveryError
from feedservice.services.digest import compose, personal_parts, prepare
from tests.conftest import skip_unless_ci, write_config
from tests.test_digest import NOW, SITE, _render

DOMAIN = "newsspace.kr"


def _openssl(*args: str) -> bytes:
    if not shutil.which("openssl"):
        skip_unless_ci("the openssl command is needed to make a throw-away key")
    return subprocess.run(["openssl", *args], check=True, capture_output=True).stdout


def make_keys(folder: Path) -> dict[str, bytes]:
    """Throw-away keys made with openssl, and the TXT records that publish them."""
    rsa, ed = folder / "rsa.pem", folder / "ed25519.pem"
    _openssl("genrsa", "-out", str(rsa), "2048")
    _openssl("genpkey", "-algorithm", "ed25519", "-out", str(ed))
    rsa_pub = _openssl("rsa", "-in", str(rsa), "-pubout", "-outform", "DER")
    ed_pub = _openssl("pkey", "-in", str(ed), "-pubout", "-outform", "DER")[-32:]  # the raw key ends the DER
    return {
        "rsa": rsa.read_bytes(),
        "ed25519": ed.read_bytes(),
        "news": b"v=DKIM1; k=rsa; p=" + base64.b64encode(rsa_pub),
        "news-ed25519": b"v=DKIM1; k=ed25519; p=" + base64.b64encode(ed_pub),
    }


def _dns(keys: dict[str, bytes]) -> Callable[..., bytes]:
    def txt(name: bytes, timeout: int = 5) -> bytes:
        selector, _, domain = name.decode().partition("._domainkey.")
        assert domain == DOMAIN + "."
        return keys[selector]

    return txt


def _verifies(signed: bytes, keys: dict[str, bytes], idx: int = 0) -> bool:
    try:
        return bool(dkim.DKIM(signed).verify(idx=idx, dnsfunc=_dns(keys)))
    except dkim.ValidationError:  # what dkim.verify() reads as False
        return False


def _tags(signed: bytes, idx: int = 0) -> dict[str, str]:
    header = email.message_from_bytes(signed, policy=policy.compat32).get_all("DKIM-Signature", [])[idx]
    value = re.sub(r"\s+", "", header)
    return dict(tag.split("=", 1) for tag in value.split(";") if tag)


def _dkimpy_body_hash(message: bytes, keys: dict[str, bytes]) -> str:
    ref = dkim.sign(message, b"news", DOMAIN.encode(), keys["rsa"], canonicalize=(b"relaxed", b"relaxed"))
    return _tags(ref + message)["bh"]


def _digest(unsubscribe: str = "https://feeds.newsspace.kr/unsubscribe/1.0.sig") -> bytes:
    ed, rendered = _render()
    return compose(
        SITE,
        rendered,
        day=ed.day,
        to="reader@example.com",
        msg_id="<m@newsspace.kr>",
        unsubscribe_url=unsubscribe,
        preferences_url="https://feeds.newsspace.kr/preferences/1.0.sig",
        now=NOW,
    )


@pytest.fixture
def signer(keys: dict[str, bytes]) -> DkimSigner:
    return DkimSigner(selector="news", domain=DOMAIN, private_key_pem=keys["rsa"])


def test_digest_verifies_and_signs_the_one_click_headers(signer: DkimSigner, keys: dict[str, bytes]) -> None:
    signed = signer.sign(_digest())
    assert _verifies(signed, keys)
    tags = _tags(signed)
    assert (tags["a"], tags["c"], tags["d"], tags["s"]) == ("rsa-sha256", "relaxed/relaxed", DOMAIN, "news")
    assert {
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "list-id",
        "list-unsubscribe",
        "list-unsubscribe-post",
        "mime-version",
        "content-type",
    } <= set(tags["h"].split(":"))
    ours = signed[: signed.index(b"\r\nFrom:")]  # the signature header, folded by us
    assert max(len(line) for line in ours.split(b"\r\n")) <= 78
    # A relay that rewrites the one-click target, or turns it into a two-step one, breaks the signature.
    link = b"List-Unsubscribe: <https://feeds.newsspace.kr/unsubscribe/"
    for old, new in [(link + b"1.0.sig", link + b"2.0.sig"), (b"=One-Click", b"=Two-Clicks")]:
        assert signed.count(old) == 1
        assert not _verifies(signed.replace(old, new), keys)
    # Refolding and respacing on the way (what relaxed canonicalisation is for) keeps it valid.
    assert _verifies(signed.replace(b"List-Unsubscribe-Post: ", b"List-Unsubscribe-Post:\r\n\t "), keys)


def test_a_header_added_on_the_way_breaks_the_signature(signer: DkimSigner, keys: dict[str, bytes]) -> None:
    """Over-signing (§5.4.2): a second From or List-Unsubscribe put on top does not ride on our signature."""
    signed = signer.sign(_digest())
    top = signed.index(b"\r\nFrom:") + 2  # below our signature, where a relay adding a header would put it
    for extra in [
        b"List-Unsubscribe: <https://evil.example/u>\r\n",
        b"From: Bank <ceo@bank.example>\r\n",
        b"Subject: urgent\r\n",
    ]:
        assert not _verifies(signed[:top] + extra + signed[top:], keys), extra
    assert _verifies(signed[:top] + b"Received: from relay by mx\r\n" + signed[top:], keys)


def _mime(cte: str) -> bytes:
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = "뉴스스페이스 <newsletter@newsspace.kr>"
    msg["To"] = "reader@example.com"
    msg["Subject"] = "뉴스스페이스 아침 브리핑 2025.07.02 (수) " * 4  # long: the policy folds it into encoded words
    msg["List-Unsubscribe"] = "<https://feeds.newsspace.kr/unsubscribe/" + "x" * 90 + ">"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    text = "오늘의 주요 소식을 전합니다.  \t두 칸 띄움과 탭\t \n\n날씨: 서울 29.1℃ 구름조금\n" * 30
    msg.set_content(text, cte=cte)
    if cte == "8bit":  # one multipart with all three encodings
        msg.add_alternative(f"<p>{text}</p>", subtype="html", cte="quoted-printable")
        msg.add_attachment(
            "첨부 파일 내용\n".encode() * 20, maintype="application", subtype="octet-stream", filename="안내.txt"
        )
    return msg.as_bytes()


MESSAGES = {
    "8bit + quoted-printable + base64 parts": _mime("8bit"),
    "quoted-printable": _mime("quoted-printable"),
    "base64": _mime("base64"),
    "ragged headers": b"From: \t A  <a@newsspace.kr> \t \r\nTo:b@example.com\t\r\n"
    b"Subject: \xea\xb0\x80\xeb\x82\x98   \t and\r\n\t   more \t\r\n   still more  \r\n"
    b"List-Unsubscribe:   <https://x/u>\t\r\n\r\nbody\r\n",
    "trailing empty and blank lines": b"From: a@newsspace.kr\r\n\r\n\xea\xb0\x80  \r\n\r\n \t \r\n\r\n\r\n",
    "body of blank lines": b"From: a@newsspace.kr\r\n\r\n \r\n\t\r\n\r\n",
    "empty body": b"From: a@newsspace.kr\r\nSubject: x\r\n\r\n",
    "no body at all": b"From: a@newsspace.kr\r\nSubject: x\r\n",
    "no final line break": b"From: a@newsspace.kr\r\n\r\nlast line  \t",
}


@pytest.mark.parametrize("raw", MESSAGES.values(), ids=MESSAGES.keys())
def test_messages_verify_and_body_hash_matches_dkimpy(raw: bytes, signer: DkimSigner, keys: dict[str, bytes]) -> None:
    signed = signer.sign(raw)
    assert _verifies(signed, keys)
    assert _tags(signed)["bh"] == _dkimpy_body_hash(signed, keys)
    assert not re.search(rb"(?<!\r)\n|\r(?!\n)", signed) and signed.endswith(b"\r\n")


def test_bare_lf_input_is_signed_as_crlf(keys: dict[str, bytes]) -> None:
    """EmailMessage.as_bytes() (the confirmation mail) writes bare LF: we sign and return CRLF, what SMTP sends."""
    signer = DkimSigner(selector="news", domain=DOMAIN, private_key_pem=keys["rsa"], clock=lambda: 1_751_400_000)
    lf = _mime("8bit").replace(b"\r\n", b"\n")
    assert b"\r" not in lf
    signed = signer.sign(lf)
    assert _verifies(signed, keys)
    assert b"\r" not in signed.replace(b"\r\n", b"") and b"\n" not in signed.replace(b"\r\n", b"")
    assert signed == signer.sign(lf.replace(b"\n", b"\r\n"))
    assert _tags(signed)["t"] == "1751400000"


def test_readers_of_interleaved_templates_all_verify(signer: DkimSigner, keys: dict[str, bytes]) -> None:
    """An edition's messages as they go out: several section choices, each reader's own links."""
    templates = [_render(chosen) for chosen in [(), ("bigtech",), ("space-sociology",), ("bigtech", "economy")]]
    for i in range(24):
        ed, rendered = templates[i % len(templates)]
        raw = compose(
            SITE,
            rendered,
            day=ed.day,
            to=f"r{i}@example.com",
            msg_id=f"<{i}@newsspace.kr>",
            unsubscribe_url=f"https://feeds.newsspace.kr/unsubscribe/{'x' * (i % 5)}{i}.sig",
            preferences_url=f"https://feeds.newsspace.kr/preferences/{i}.sig",
            now=NOW,
        )
        signed = signer.sign(raw)
        assert _verifies(signed, keys), i
        assert _tags(signed)["bh"] == _dkimpy_body_hash(signed, keys), i


def _random_message(rng: random.Random) -> bytes:
    def ws() -> str:
        return rng.choice(["", " ", "  ", "\t", " \t "])

    def folded(value: str) -> str:
        return "".join(
            w + (rng.choice(["\r\n ", "\r\n\t", "\r\n   "]) if rng.random() < 0.3 else " ") for w in value.split(" ")
        ).rstrip()

    words = "뉴스스페이스 아침 브리핑 날씨 서울 29.1℃ AI 데이터센터 경쟁 ok =?utf-8?b?6rCA?=".split()
    headers = [
        f"From:{ws()}{rng.choice(words)} <newsletter@newsspace.kr>{ws()}",
        f"To:{ws()}reader{rng.randrange(10**6)}@example.com",
        f"Subject:{ws()}{folded(' '.join(rng.choices(words, k=rng.randrange(1, 25))))}{ws()}",
        f"List-Unsubscribe:{ws()}<https://feeds.newsspace.kr/unsubscribe/{rng.randrange(10**9)}.sig>{ws()}",
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
        f"X-Mailer:{ws()}feedservice{ws()}",
    ]
    rng.shuffle(headers)
    lines = [ws().join(rng.choices(words, k=rng.randrange(0, 12))) + ws() for _ in range(rng.randrange(0, 40))]
    body = "\r\n".join(lines) + "\r\n" * rng.randrange(0, 4)
    message = ("\r\n".join(headers) + "\r\n\r\n" + body).encode()
    return message.replace(b"\r\n", b"\n") if rng.random() < 0.3 else message


def test_generated_messages_all_verify_with_dkimpy(signer: DkimSigner, keys: dict[str, bytes]) -> None:
    rng = random.Random(16)
    for n in range(120):
        raw = _random_message(rng)
        signed = signer.sign(raw)
        assert _verifies(signed, keys), (n, raw)
        assert _tags(signed)["bh"] == _dkimpy_body_hash(signed, keys), (n, raw)


def _pieces(message: bytes, rng: random.Random) -> tuple[bytes, list[bytes]]:
    """A message as ``sign_parts`` takes it: the header section, the body cut at random places
    (beside whitespace and inside line breaks too) and at times with an empty piece."""
    blank = b"\r\n\r\n" if b"\r\n\r\n" in message else b"\n\n"
    head, found, body = message.partition(blank)
    if not found:
        return message, []
    head += blank
    cuts = sorted(rng.sample(range(len(body) + 1), min(len(body) + 1, rng.randrange(0, 8))))
    return head, [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]


def test_signing_in_pieces_gives_the_same_bytes(keys: dict[str, bytes]) -> None:
    """However a body is cut, ``sign_parts`` signs exactly what ``sign`` signs: canonicalising the
    pieces apart is only done where it gives the canonical whole, else the whole is signed."""
    signer = DkimSigner(selector="news", domain=DOMAIN, private_key_pem=keys["rsa"], clock=lambda: 1_751_400_000)
    rng = random.Random(8)
    raws = [*MESSAGES.values(), *(_random_message(rng) for _ in range(150))]
    for n, raw in enumerate(raws):
        for _ in range(4):
            head, body = _pieces(raw, rng)
            assert signer.sign_parts(head, body) == signer.sign(raw), (n, head, body)


def test_a_digest_is_signed_per_template(signer: DkimSigner, keys: dict[str, bytes], monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """An edition's readers, signed from their pieces: each template's segments are made canonical
    once (the whole-body path is never taken), every message verifies with dkimpy, and the bytes
    are those ``sign`` gives."""
    import feedservice.adapters.dkim as module

    templates = [_render(chosen) for chosen in [(), ("bigtech",), ("space-sociology",)]]
    fixed = DkimSigner(selector="news", domain=DOMAIN, private_key_pem=keys["rsa"], clock=lambda: 1_751_400_000)
    messages = []
    for i in range(12):
        ed, rendered = templates[i % len(templates)]
        head, body = personal_parts(
            SITE,
            prepare(SITE, rendered, ed.day),
            to=f"r{i}@example.com",
            msg_id=f"<{i}@newsspace.kr>",
            unsubscribe_url=f"https://f.kr/unsubscribe/{i}.s",
            preferences_url=f"https://f.kr/preferences/{i}.s",
            now=NOW,
        )
        messages.append((head, body, fixed.sign(head + b"".join(body))))
    monkeypatch.setattr(module, "canonical_body", lambda body: pytest.fail("the whole body was canonicalised"))
    for i, (head, body, whole) in enumerate(messages):
        signed = fixed.sign_parts(head, body)
        assert signed == whole, i
        assert _verifies(signed, keys), i
        assert _tags(signed)["bh"] == _dkimpy_body_hash(signed, keys), i


def test_a_message_without_from_is_refused(signer: DkimSigner) -> None:
    with pytest.raises(DeliveryError, match="From"):
        signer.sign(b"To: b@example.com\r\nSubject: x\r\n\r\nbody\r\n")


def test_a_header_in_obsolete_syntax_is_signed_as_that_header(signer: DkimSigner) -> None:
    """``Subject :`` is a Subject (RFC 5322 §4.5.3; RFC 6376 §3.4.2 drops the WSP): signed and
    over-signed like one (OpenDKIM's reading: tests/test_dkim_opendkim.py). A second From, in either
    syntax, is refused: dkimpy skips a ``From :`` line, OpenDKIM reads it, mail readers differ."""
    signed = signer.sign(b"From: a@newsspace.kr\r\nSubject \t: x\r\nList-Unsubscribe : <https://x/u>\r\n\r\nb\r\n")
    assert _tags(signed)["h"] == "from:from:subject:subject:list-unsubscribe:list-unsubscribe"
    for second in [b"From: b@newsspace.kr", b"From : Bank <ceo@bank.example>"]:
        with pytest.raises(DeliveryError, match="more than one From"):
            signer.sign(b"From: a@newsspace.kr\r\n" + second + b"\r\n\r\nbody\r\n")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (("genrsa", "1024"), "1024 bits; at least 2048"),
        (("genpkey", "-algorithm", "ed25519"), "not an RSA private key"),
        ((), "not an unencrypted PEM private key"),
    ],
)
def test_a_weak_or_wrong_key_stops_start_up(tmp_path: Path, make: tuple[str, ...], message: str) -> None:
    key = tmp_path / "key.pem"
    if make:
        _openssl(*make[:1], "-out", str(key), *make[1:])
    else:
        key.write_bytes(b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ConfigError, match=message) as caught:
        DkimSigner(selector="news", domain=DOMAIN, private_key_pem=key.read_bytes(), source="site.toml")
    assert (caught.value.path, caught.value.key) == ("site.toml", "digest.dkim_key_env")


def _dkim_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rsa_pem: bytes, extra: str = "") -> Path:
    """A config with ``[digest] dkim_selector`` and ``extra``, the key(s) in the environment."""
    monkeypatch.setenv("FS_TEST_DKIM", rsa_pem.decode())
    cfg = write_config(tmp_path)
    dkim_keys = f'dkim_selector = "news"\ndkim_key_env = "FS_TEST_DKIM"\n{extra}'
    cfg.write_text(cfg.read_text(encoding="utf-8").replace("[digest]\n", "[digest]\n" + dkim_keys), encoding="utf-8")
    return cfg


def _app_signer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keys: dict[str, bytes], extra: str
) -> Callable[[bytes], bytes]:
    """The signing function the application builds from a config with ``[digest] dkim_selector`` and ``extra``."""
    monkeypatch.setenv("FS_TEST_DKIM_ED", keys["ed25519"].decode())
    app = make_app(load_settings(_dkim_config(tmp_path, monkeypatch, keys["rsa"], extra)))
    try:
        signer = app.signer()
    finally:
        app.close()
    assert signer is not None
    return signer.sign


def test_digest_send_with_a_short_key_stops_before_sending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    weak = tmp_path / "weak.pem"
    _openssl("genrsa", "-out", str(weak), "1024")
    cfg = _dkim_config(tmp_path, monkeypatch, weak.read_bytes())
    assert cli.main(["--config", str(cfg), "digest", "send"]) == 2  # a config error, before any message
    err = capsys.readouterr().err
    assert "digest.dkim_key_env" in err and "1024 bits; at least 2048" in err


def test_configured_signature_aligns_with_the_from_domain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keys: dict[str, bytes]
) -> None:
    signed = _app_signer(tmp_path, monkeypatch, keys, "")(_digest())
    assert _tags(signed)["d"] == DOMAIN == email.message_from_bytes(signed)["From"].rsplit("@", 1)[1].rstrip(">")
    assert _verifies(signed, keys)
    assert len(email.message_from_bytes(signed).get_all("DKIM-Signature", [])) == 1


def test_ed25519_second_signature_from_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keys: dict[str, bytes]
) -> None:
    sign = _app_signer(tmp_path, monkeypatch, keys, 'dkim_ed25519_key_env = "FS_TEST_DKIM_ED"\n')
    signed = sign(_digest())
    assert [_tags(signed, i)["a"] for i in (0, 1)] == ["rsa-sha256", "ed25519-sha256"]
    assert _tags(signed, 1)["s"] == "news-ed25519"
    assert _verifies(signed, keys, 0) and _verifies(signed, keys, 1)
    tampered = signed.replace(b"=One-Click", b"=Two-Clicks")
    assert not _verifies(tampered, keys, 0) and not _verifies(tampered, keys, 1)


def test_ed25519_key_that_is_not_ed25519_is_a_config_error(keys: dict[str, bytes]) -> None:
    with pytest.raises(ConfigError, match="not an Ed25519 private key") as caught:
        DkimSigner(selector="news", domain=DOMAIN, private_key_pem=keys["rsa"], ed25519_key_pem=keys["rsa"])
    assert caught.value.key == "digest.dkim_ed25519_key_env"
