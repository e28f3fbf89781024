"""`feedservice doctor` (issue 16, "Setting it up right"), run as the operator runs it: a config,
keys made with openssl (not with the code under test), the real command in its own process."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest

from feedservice.cli.doctor import aligned, txt_strings
from tests.conftest import write_config
from tests.test_dkim import _openssl


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("keys")
    for name, bits in (("rsa", "2048"), ("short", "1024")):
        _openssl("genrsa", "-out", str(folder / f"{name}.pem"), bits)
    _openssl("genpkey", "-algorithm", "ed25519", "-out", str(folder / "ed.pem"))
    rsa_pub = _openssl("rsa", "-in", str(folder / "rsa.pem"), "-pubout", "-outform", "DER")
    ed_pub = _openssl("pkey", "-in", str(folder / "ed.pem"), "-pubout", "-outform", "DER")[-32:]
    return {
        "rsa": (folder / "rsa.pem").read_bytes(),
        "short": (folder / "short.pem").read_bytes(),
        "ed25519": (folder / "ed.pem").read_bytes(),
        "rsa_txt": b"v=DKIM1; k=rsa; p=" + base64.b64encode(rsa_pub),
        "ed_txt": b"v=DKIM1; k=ed25519; p=" + base64.b64encode(ed_pub),
    }


def _doctor(tmp_path: Path, digest: str = "", site: str = "") -> subprocess.CompletedProcess[str]:
    cfg = write_config(tmp_path)
    text = cfg.read_text(encoding="utf-8").replace("[digest]\n", "[digest]\n" + digest)
    if site:
        text = text.replace('postal_address = "서울특별시 중구 (테스트)"\n', site)
    cfg.write_text(text, encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "feedservice", "--config", str(cfg), "doctor"],
        capture_output=True,
        text=True,
        timeout=120,
    )


SIGNED = 'dkim_selector = "news2026"\ndkim_key_env = "FS_TEST_DKIM"\n'


def _lines(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """check name → "ok" or "FAIL" and the rest of its line."""
    checks = {}
    for line in result.stdout.splitlines():
        if line.startswith(("ok  ", "FAIL")):
            status, _, rest = line.partition("  ")
            name, _, detail = rest.strip().partition(": ")
            checks[name] = f"{status.strip()} {detail}"
    return checks


def test_all_checks_pass_and_the_records_to_publish(
    tmp_path: Path, keys: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FS_TEST_DKIM", keys["rsa"].decode())
    monkeypatch.setenv("FS_TEST_DKIM_ED", keys["ed25519"].decode())
    result = _doctor(tmp_path, SIGNED + 'dkim_ed25519_key_env = "FS_TEST_DKIM_ED"\n')
    assert result.returncode == 0, result.stdout + result.stderr
    checks = _lines(result)
    assert set(checks) == {
        "dkim key",
        "dkim d= aligned with From",
        "return-path aligned with From",
        "one-click unsubscribe signed",
        "postal address in the footer",
    }
    assert all(v.startswith("ok ") for v in checks.values()), checks
    assert "RSA 2048 bits" in checks["dkim key"]
    out = result.stdout
    # The DKIM records are the ones openssl derives from the same private keys.
    rsa_record = f"news2026._domainkey.newsspace.kr. TXT {txt_strings(keys['rsa_txt'].decode())}"
    assert rsa_record in out
    assert f'news2026-ed25519._domainkey.newsspace.kr. TXT "{keys["ed_txt"].decode()}"' in out
    assert 'newsspace.kr. TXT "v=spf1 ' in out
    assert '_dmarc.newsspace.kr. TXT "v=DMARC1; p=none; rua=mailto:dmarc@newsspace.kr"' in out
    # A zone file takes it: no string over 255 characters.
    assert all(len(s) <= 255 for s in rsa_record.split('"')[1::2])


def test_each_problem_is_one_failing_line_and_exit_1(
    tmp_path: Path, keys: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FS_TEST_DKIM", keys["short"].decode())
    result = _doctor(tmp_path, SIGNED + 'dkim_domain = "mailer.example.com"\n', site='postal_address = ""\n')
    assert result.returncode == 1
    checks = _lines(result)
    assert checks["dkim key"].startswith("FAIL RSA 1024 bits")
    assert checks["dkim d= aligned with From"].startswith("FAIL d=mailer.example.com")
    assert checks["return-path aligned with From"].startswith("ok ")
    assert checks["postal address in the footer"] == "FAIL [site] postal_address is empty"
    assert checks["one-click unsubscribe signed"].startswith("FAIL cannot sign")  # a 1024-bit key signs nothing
    assert result.stderr == ""


def test_unsigned_mail_fails_dkim_and_one_click(tmp_path: Path) -> None:
    result = _doctor(tmp_path)
    assert result.returncode == 1
    checks = _lines(result)
    assert checks["dkim key"].startswith("FAIL signing is off")
    assert checks["one-click unsubscribe signed"] == "FAIL the digest is not DKIM-signed"
    assert checks["postal address in the footer"].startswith("ok ")
    assert "_domainkey" not in result.stdout and "_dmarc.newsspace.kr." in result.stdout


@pytest.mark.parametrize(
    ("domain", "from_domain", "expected"),
    [
        ("newsspace.kr", "newsspace.kr", True),
        ("bounces.newsspace.kr", "newsspace.kr", True),
        ("newsspace.kr", "mail.newsspace.kr", True),
        ("NewsSpace.KR.", "newsspace.kr", True),
        ("notnewsspace.kr", "newsspace.kr", False),
        ("mailer.example.com", "newsspace.kr", False),
    ],
)
def test_alignment(domain: str, from_domain: str, expected: bool) -> None:
    assert aligned(domain, from_domain) is expected


@pytest.mark.parametrize(
    ("return_path", "verdict"), [("bounces@newsspace.kr", "ok"), ("bounces@other.example", "FAIL")]
)
def test_the_bounce_return_path_is_the_envelope_checked(
    tmp_path: Path, keys: dict[str, bytes], monkeypatch: pytest.MonkeyPatch, return_path: str, verdict: str
) -> None:
    """With [bounces] return_path every message's MAIL FROM is at its domain (VERP): that is the
    domain SPF checks, so it is the one that must align with From."""
    monkeypatch.setenv("FS_TEST_DKIM", keys["rsa"].decode())
    cfg = write_config(tmp_path)
    text = cfg.read_text(encoding="utf-8").replace("[digest]\n", "[digest]\n" + SIGNED)
    cfg.write_text(text + f'\n[bounces]\nreturn_path = "{return_path}"\n', encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "feedservice", "--config", str(cfg), "doctor"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    check = _lines(result)["return-path aligned with From"]
    assert check.startswith(verdict) and return_path.split("@")[1] in check, result.stdout + result.stderr
    assert result.returncode == (0 if verdict == "ok" else 1)
