"""Previews (``digest preview`` and the demo): inert sample links, never a reader's own."""

from __future__ import annotations

import email
from email import policy
from pathlib import Path

import lxml.html
import pytest

from feedservice.bootstrap import make_app
from feedservice.cli.main import main
from feedservice.config import load_settings
from tests.conftest import write_config


def test_preview_holds_no_readers_link_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path)
    c = ["--config", str(cfg)]
    assert main([*c, "subscribers", "add", "reader@example.com"]) == 0
    app = make_app(load_settings(cfg))
    reader = app.store.get_subscriber("reader@example.com")
    assert reader is not None
    real = app.links_for(reader)
    app.close()
    capsys.readouterr()
    out_dir = tmp_path / "preview"
    assert main([*c, "digest", "preview", "--out", str(out_dir)]) == 0
    printed = capsys.readouterr().out
    assert "inert samples" in printed
    raw = (out_dir / "digest.eml").read_bytes()
    msg = email.message_from_bytes(raw, policy=policy.default)
    html = (out_dir / "index.html").read_text(encoding="utf-8")
    text = (out_dir / "digest.txt").read_text(encoding="utf-8")
    tokens = [link.rsplit("/", 1)[1] for link in real]
    for part in (html, text, raw.decode("utf-8")):
        assert not any(token in part for token in tokens)
        assert "reader@example.com" not in part
    assert msg["To"] == "preview@example.invalid"
    footer = {a.text_content(): a.get("href") for a in lxml.html.fromstring(html).xpath("//a")}
    assert footer["수신 거부"] == "http://127.0.0.1:8080/unsubscribe/preview-sample-not-a-reader"
    assert footer["구독 설정"] == "http://127.0.0.1:8080/preferences/preview-sample-not-a-reader"
    assert "<http://127.0.0.1:8080/unsubscribe/preview-sample-not-a-reader>" in msg["List-Unsubscribe"]
