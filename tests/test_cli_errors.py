"""Every failure of the `feedservice` command is one line on stderr and the right exit status.

The cases are issue 13's list (bad files and flags, bad config values, folders that cannot be
written), each run through the real console script: usage and config errors exit 2, failures
at run time exit 1, and nothing prints a traceback unless `--debug` asks for it.
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest

from feedservice.adapters.store._base import make_engine
from feedservice.cli import commands
from feedservice.cli.main import main
from tests.conftest import write_config

FEEDSERVICE = str(Path(sys.executable).with_name("feedservice"))
FILE = "{tmp}/a-file"  # a regular file: nothing can be created under it, even by root


# (id, arguments after --config, config edit (old, new) or None, exit status, words of the line)
CASES: list[tuple[str, list[str], tuple[str, str] | None, int, list[str]]] = [
    ("import-missing", ["subscribers", "import", "{tmp}/absent.csv"], None, 1, ["absent.csv", "No such file"]),
    ("import-binary", ["subscribers", "import", "{tmp}/binary.csv"], None, 1, ["binary.csv", "not UTF-8"]),
    ("import-directory", ["subscribers", "import", "{tmp}"], None, 1, ["Is a directory"]),
    ("export-under-a-file", ["subscribers", "export", "--out", FILE + "/s.csv"], None, 1, ["Not a directory"]),
    ("export-into-proc", ["subscribers", "export", "--out", "/proc/no-such/s.csv"], None, 1, ["/proc/no-such"]),
    ("preview-under-a-file", ["digest", "preview", "--out", FILE + "/p"], None, 1, ["Not a directory"]),
    ("preview-date-0001", ["digest", "preview", "--date", "0001-01-01"], None, 2, ["--date", "0001-01-01"]),
    ("send-date-0001", ["digest", "send", "--date", "0001-01-01"], None, 2, ["--date"]),
    ("worker-date-9999", ["worker", "--once", "--date", "9999-12-31"], None, 2, ["--date"]),
    ("worker-interval-nan", ["worker", "--interval", "nan"], None, 2, ["--interval", "nan"]),
    ("worker-interval-inf", ["worker", "--interval", "inf"], None, 2, ["--interval"]),
    ("unknown-option", ["digest", "preview", "--bogus"], None, 2, ["--bogus"]),
    (
        "feeds-dir-under-a-file",
        ["build-feeds"],
        ('output_dir = "{tmp}/feeds"', 'output_dir = "' + FILE + '/feeds"'),
        2,
        ["feeds.output_dir", "Not a directory"],
    ),
    (
        "feeds-dir-in-proc",
        ["collect"],
        ('output_dir = "{tmp}/feeds"', 'output_dir = "/proc/feeds"'),
        2,
        ["feeds.output_dir", "/proc/feeds"],
    ),
    (
        "sqlite-folder-under-a-file",
        ["sources"],
        ('url = "sqlite:///{tmp}/', 'url = "sqlite:///' + FILE + "/"),
        2,
        ["database.url", "a-file"],
    ),
    (
        "maildir-in-proc",
        ["digest", "send"],
        ('maildir = "{tmp}/mail"', 'maildir = "/proc/mail"'),
        2,
        ["delivery.maildir"],
    ),
    ("web-host", ["serve"], ("[web]\n", '[web]\nhost = "not a host!"\n'), 2, ["web.host"]),
    (
        "weather-max-age",
        ["weather"],
        ("[weather]\n", "[weather]\nmax_age_minutes = 99999999999999999\n"),
        2,
        ["weather.max_age_minutes"],
    ),
    (
        "ready-collect-age",
        ["status"],
        ("[web]\n", "[run]\nready_collect_age_minutes = 99999999999999999\n[web]\n"),
        2,
        ["run.ready_collect_age_minutes"],
    ),
    ("site-language", ["build-feeds"], ("[site]\n", '[site]\nlanguage = "xx-bogus"\n'), 2, ["site.language"]),
    (
        "digest-subject",
        ["digest", "preview"],
        ("[digest]\n", '[digest]\nsubject = "{{foo}}"\n'),
        2,
        ["digest.subject", "{foo}"],
    ),
    (
        "collect-timeout-nan",
        ["collect"],
        ("[collect]\n", "[collect]\nconnect_timeout = nan\n"),
        2,
        ["collect.connect_timeout", "finite"],
    ),
    # 1,000 nested arrays or tables: tomllib's RecursionError was an "unexpected error", exit 1
    (
        "config-nested-arrays",
        ["sources"],
        ("[site]\n", "[site]\nx = " + "[" * 1000 + "]" * 1000 + "\n"),
        2,
        ["config.toml", "nested too deeply"],
    ),
    (
        "config-nested-tables",
        ["sources"],
        ("[site]\n", "[site]\nx = " + "{{a=" * 1000 + "1" + "}}" * 1000 + "\n"),
        2,
        ["config.toml", "nested too deeply"],
    ),
]


@pytest.mark.parametrize(("args", "edit", "status", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_failure_is_one_line_with_its_exit_status(
    tmp_path: Path, args: list[str], edit: tuple[str, str] | None, status: int, words: list[str]
) -> None:
    (tmp_path / "a-file").write_text("not a folder\n", encoding="utf-8")
    (tmp_path / "binary.csv").write_bytes(b"email\n\x00\xff\xfe\x81" * 50)
    cfg = write_config(tmp_path)
    if edit is not None:
        old, new = (part.format(tmp=tmp_path) for part in edit)
        text = cfg.read_text(encoding="utf-8")
        assert old in text, old
        cfg.write_text(text.replace(old, new, 1), encoding="utf-8")
    argv = [a.format(tmp=tmp_path) for a in args]
    proc = subprocess.run(
        [FEEDSERVICE, "--config", str(cfg), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert lines[0].startswith("feedservice"), lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    assert proc.returncode == status, proc.stderr


def test_a_config_of_endless_bytes_is_refused_without_reading_it_all() -> None:
    proc = subprocess.run([FEEDSERVICE, "--config", "/dev/zero", "sources"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == ["feedservice: config error: /dev/zero: larger than 1 MB: not a config file"]


def _boom(app: object, args: object) -> int:
    raise RuntimeError("the first line\nand a second one")


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(commands, "cmd_sources", _boom)
    cfg = str(write_config(tmp_path))
    assert main(["--config", cfg, "sources"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "feedservice: unexpected error: RuntimeError: the first line and a second one "
        "(run again with --debug to see the traceback)"
    ]
    assert main(["--debug", "--config", cfg, "sources"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):") and "in _boom" in err
    assert err.splitlines()[-1] == "feedservice: unexpected error: RuntimeError: the first line and a second one"


def test_the_folder_check_leaves_nothing_behind(tmp_path: Path) -> None:
    """The check makes the missing folders to try them, then removes them: a Maildir sets up its
    tmp/new/cur only in a folder it makes itself, so an empty one left here broke every send."""
    from feedservice.cli.preflight import check_folders
    from feedservice.config import load_settings
    from feedservice.errors import ConfigError

    settings = load_settings(write_config(tmp_path))
    check_folders(settings, ("database.url", "feeds.output_dir", "delivery.maildir"))
    assert not (tmp_path / "feeds").exists() and not (tmp_path / "mail").exists()
    (tmp_path / "mail").write_text("a file where the Maildir should be\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"delivery\.maildir: .*is a file, not a folder"):
        check_folders(settings, ("delivery.maildir",))


def _console(
    cfg: Path, *args: str, stdin: int | IO[bytes], preexec_fn: Callable[[], object] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FEEDSERVICE, "--config", str(cfg), *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=stdin,
        preexec_fn=preexec_fn,
    )


@pytest.mark.parametrize("command", ["serve", "run"])
def test_a_host_that_does_not_resolve_or_a_taken_port_is_one_line(tmp_path: Path, command: str) -> None:
    """The server would answer these with its own log lines; they are ours, exit 2 or 1."""
    cfg = write_config(tmp_path)
    text = cfg.read_text(encoding="utf-8")
    cfg.write_text(text.replace("[web]\n", '[web]\nhost = "no-such-host.invalid"\n', 1), encoding="utf-8")
    proc = _console(cfg, command, stdin=subprocess.DEVNULL)
    assert (proc.returncode, proc.stderr.splitlines()) == (
        2,
        [
            f"feedservice: config error: {cfg}: web.host: cannot resolve 'no-such-host.invalid': "
            "Name or service not known"
        ],
    ), proc.stderr

    cfg.write_text(text.replace("[web]\n", '[web]\nhost = "192.0.2.1"\n', 1), encoding="utf-8")  # TEST-NET-1
    proc = _console(cfg, command, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        f"feedservice: config error: {cfg}: web.host: cannot listen on 192.0.2.1:8080: Cannot assign requested address"
    ]

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for workers in (1, 2):  # one process, and Granian's supervisor
            edit = f"[web]\nport = {port}\nworkers = {workers}\n"
            cfg.write_text(text.replace("[web]\n", edit, 1), encoding="utf-8")
            proc = _console(cfg, command, stdin=subprocess.DEVNULL)
            assert (proc.returncode, proc.stderr.splitlines()) == (
                1,
                [f"feedservice: web.port: cannot listen on 127.0.0.1:{port}: Address already in use"],
            ), proc.stderr


def _limit_memory() -> None:
    """2 GB of address space: the old unbounded read fails with MemoryError instead of eating the host."""
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


def test_an_endless_or_huge_import_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    big = tmp_path / "big.csv"
    with big.open("wb") as f:  # sparse: costs no disk
        f.truncate(commands.MAX_IMPORT_BYTES + 1)
    for name, source, stdin in [
        ("/dev/zero", "/dev/zero", "/dev/null"),
        ("standard input", "-", "/dev/zero"),
        (str(big), str(big), "/dev/null"),
    ]:
        with open(stdin, "rb") as input_:
            proc = _console(cfg, "subscribers", "import", source, stdin=input_, preexec_fn=_limit_memory)
        assert (proc.returncode, proc.stderr.splitlines()) == (
            1,
            [f"feedservice: {name}: larger than 64 MB: not a subscriber CSV (split it)"],
        ), proc.stderr


def test_text_the_csv_reader_refuses_is_a_bad_row_and_the_rows_before_it_are_kept(tmp_path: Path) -> None:
    """A field over the csv module's 128 KB limit (or a file of NULs) was a csv.Error traceback-line."""
    cfg = write_config(tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text('email\nfirst@example.com\n"' + "x" * 200_000 + '"\nlast@example.com\n', encoding="utf-8")
    zeros = tmp_path / "zeros.csv"
    zeros.write_bytes(b"\0" * 200_000)
    proc = _console(cfg, "subscribers", "import", str(bad), stdin=subprocess.DEVNULL)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and proc.stderr == "", proc.stderr
    assert proc.stdout.splitlines() == [
        "import: 1 added, 0 updated, 0 unchanged, 1 bad rows",
        "  line 3: not CSV: field larger than field limit (131072); the rest of the file was not read",
    ]
    proc = _console(cfg, "subscribers", "import", str(zeros), stdin=subprocess.DEVNULL)
    assert proc.returncode == 1 and proc.stderr == "", proc.stderr
    assert proc.stdout.splitlines()[1:] == ["  line 1: not CSV: field larger than field limit (131072)"]
    listed = _console(cfg, "subscribers", "list", stdin=subprocess.DEVNULL).stdout
    assert "first@example.com" in listed and "last@example.com" not in listed


# -- a changed address key is refused, not a silently forgotten list -----------------------------------
def _subscriber_rows(db_url: str) -> list[tuple[str | None, str]]:
    import sqlalchemy as sa

    from feedservice.adapters.store import schema as t

    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return sorted(
                conn.execute(sa.select(t.subscribers.c.email, t.subscribers.c.status)).tuples(),
                key=lambda r: (r[0] or "", r[1]),
            )
    finally:
        engine.dispose()


def _as(cfg: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The console script with ``env`` instead of the test's secrets."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FS_TEST_SECRET", "FS_TEST_ADDRESS"))}
    return subprocess.run(
        [FEEDSERVICE, "--config", str(cfg), *args], capture_output=True, text=True, timeout=60, env=base | env
    )


def test_another_address_key_is_refused_and_changes_nothing(tmp_path: Path, db_url: str) -> None:
    """Before: one command without the secret's variable generated var/secret.key; then `remove`
    said "no subscriber" for a listed reader, and a re-add made a second row (two digests)."""
    cfg = write_config(tmp_path, db_url=db_url)
    right = {"FS_TEST_SECRET": "the-original-secret"}
    assert _as(cfg, right, "subscribers", "add", "reader@example.com").returncode == 0
    assert _as(cfg, right, "subscribers", "add", "gone@example.com").returncode == 0
    assert _as(cfg, right, "subscribers", "remove", "gone@example.com").returncode == 0  # forgotten: a hash
    before = _subscriber_rows(db_url)
    for env, args in [
        ({}, ["subscribers", "remove", "reader@example.com"]),  # unset: a generated var/secret.key
        ({"FS_TEST_SECRET": "another-secret"}, ["subscribers", "add", "reader@example.com"]),
        ({"FS_TEST_SECRET": "another-secret"}, ["subscribers", "add", "gone@example.com"]),
    ]:
        proc = _as(cfg, env, *args)
        assert proc.returncode == 2, proc.stderr
        # One line (after, when the variable is unset, the log line that a secret was generated).
        [line] = [x for x in proc.stderr.splitlines() if x.startswith("feedservice: ")]
        assert line.startswith("feedservice: config error:") and "web.secret_env" in line
        assert "FS_TEST_SECRET" in line and "nothing was changed" in line
        assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert _subscriber_rows(db_url) == before  # one row each, nothing forgotten, nothing added
    # The right secret works as before: the reader is found, the forgotten address is known.
    assert _as(cfg, right, "subscribers", "remove", "reader@example.com").returncode == 0
    assert _as(cfg, right, "subscribers", "add", "gone@example.com").returncode == 0
    rows = _subscriber_rows(db_url)
    assert len(rows) == 2 and ("gone@example.com", "subscribed") in rows and (None, "unsubscribed") in rows


def test_a_pinned_address_key_is_checked_and_an_old_database_learns_it(tmp_path: Path, db_url: str) -> None:
    """With `[web] address_key_env` the line names that key; a database from before the check (no
    fingerprint yet) records the key in use on first open, and then refuses another."""
    from feedservice.adapters.store import schema as t

    cfg = write_config(tmp_path, db_url=db_url)
    cfg.write_text(cfg.read_text().replace("[web]\n", '[web]\naddress_key_env = "FS_TEST_ADDRESS_KEY"\n', 1))
    pinned = {"FS_TEST_SECRET": "s1", "FS_TEST_ADDRESS_KEY": "the-address-key"}
    assert _as(cfg, pinned, "subscribers", "add", "reader@example.com").returncode == 0
    engine = make_engine(db_url)
    with engine.begin() as conn:  # as an install from before migration 11 left it
        conn.execute(t.key_fingerprints.delete())
    engine.dispose()
    rotated = {"FS_TEST_SECRET": "s2", "FS_TEST_ADDRESS_KEY": "the-address-key"}
    assert _as(cfg, rotated, "subscribers", "remove", "reader@example.com").returncode == 0  # recorded now
    proc = _as(cfg, {"FS_TEST_SECRET": "s2", "FS_TEST_ADDRESS_KEY": "a-new-key"}, "subscribers", "add", "x@example.com")
    assert proc.returncode == 2
    [line] = proc.stderr.splitlines()
    assert "web.address_key_env" in line and "FS_TEST_ADDRESS_KEY" in line
    assert _subscriber_rows(db_url) == [(None, "unsubscribed")]
