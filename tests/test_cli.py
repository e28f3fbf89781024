"""The command line: help for every command, the offline demo, and `run` surviving dead sources."""

from __future__ import annotations

import argparse
import email
import mailbox
import os
import signal
import subprocess
import sys
import time
from email import policy
from pathlib import Path

import feedparser
import httpx
import pytest

from feedservice.cli import commands as handlers
from feedservice.cli.main import Command, build_parser
from tests.conftest import ROOT, body_text, free_port, write_config


def _subcommands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                full = f"{prefix} {name}".strip()
                found[full] = sub
                found.update(_subcommands(sub, full))
    return found


def test_every_command_has_help_and_is_documented() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = _subcommands(build_parser())
    leaves = {
        name for name, p in commands.items() if not any(isinstance(a, argparse._SubParsersAction) for a in p._actions)
    }
    # Each leaf dispatches through set_defaults(func=…), and every cmd_* handler is reached by one.
    funcs = {name: commands[name].get_default("func") for name in leaves - {"demo"}}
    assert all(isinstance(f, Command) for f in funcs.values()), funcs
    assert {f.name for f in funcs.values()} == {n for n in vars(handlers) if n.startswith("cmd_")}
    assert commands["demo"].get_default("standalone") is not None
    for name, sub in commands.items():
        assert sub.format_help().strip()
        assert f"feedservice {name}" in readme or f"`{name}`" in readme, f"README does not document {name!r}"


def test_help_runs_from_the_console_script() -> None:
    exe = Path(sys.executable).with_name("feedservice")
    proc = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "digest" in proc.stdout and "Exit status" in proc.stdout
    proc = subprocess.run(
        [sys.executable, "-m", "feedservice", "digest", "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and "preview" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "feedservice", "nonsense"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2


def test_demo_runs_offline_and_its_outputs_open(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDSERVICE_")}
    proc = subprocess.run(
        [sys.executable, "-m", "feedservice", "demo", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "16 stations from kma" in proc.stdout and "2 sent" in proc.stdout
    feed = feedparser.parse((tmp_path / "feeds" / "bigtech.xml").read_bytes())
    assert not feed.bozo and len(feed.entries) == 4
    html = (tmp_path / "preview" / "index.html").read_text(encoding="utf-8")
    assert "연무 울산 29.4℃" in html
    eml = email.message_from_bytes((tmp_path / "preview" / "digest.eml").read_bytes(), policy=policy.default)
    assert "빅테크" in body_text(eml, "plain")
    delivered = list(mailbox.Maildir(str(tmp_path / "mail"), create=False))
    assert len(delivered) == 2


@pytest.mark.parametrize(("command", "workers"), [("run", 1), ("serve", 1), ("run", 2), ("serve", 2)])
def test_service_starts_serves_and_survives_unreachable_sources(tmp_path: Path, command: str, workers: int) -> None:
    dead = free_port()  # nothing listens here
    cfg = write_config(
        tmp_path,
        sources=[
            (f"http://127.0.0.1:{dead}/rss.xml", "bigtech"),
            (f"http://127.0.0.1:{dead}/other.xml", "space-sociology"),
        ],
    )
    port = free_port()
    text = cfg.read_text(encoding="utf-8").replace("[web]\n", f"[web]\nport = {port}\nworkers = {workers}\n")
    cfg.write_text(text, encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, "-m", "feedservice", "--config", str(cfg), command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    http = httpx.Client(base_url=base, timeout=5)  # one client: each httpx.get() builds an SSL context
    try:
        deadline = time.monotonic() + 90  # upper bounds only: a busy machine may take long to start it
        while True:
            try:
                if http.get("/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the service did not start"
            time.sleep(0.2)
        assert http.get("/").status_code == 200
        if command == "run":
            deadline = time.monotonic() + 60
            while http.get("/feeds/all.xml").status_code != 200:
                assert time.monotonic() < deadline, "the first cycle did not build the feeds"
                time.sleep(0.2)
            feed = http.get("/feeds/bigtech.xml")
            assert feed.status_code == 200 and feed.headers["etag"]
        assert proc.poll() is None  # still running after the sources failed
    finally:
        http.close()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    if command == "run":
        assert err.count("source failed") == 2, err  # once per source per attempt
        assert "Connection refused" in err or "ConnectError" in err
