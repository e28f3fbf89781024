"""The IMAP bounce intake (``feedservice.adapters.bounces.imap``, issue 16) against a real Dovecot
started here (Debian's ``dovecot-imapd``), and against hostile servers of our own on 127.0.0.1.

The Dovecot runs as its own process from a generated configuration (a passwd-file with one user
per test, Maildirs in a temporary folder, a throw-away certificate made with ``openssl``); it is
stopped, with its children, when the module's tests end."""

from __future__ import annotations

import imaplib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from feedservice import bootstrap
from feedservice.adapters.bounces.imap import ImapAccount, ImapIntake
from feedservice.cli.main import main
from feedservice.config import load_settings
from feedservice.errors import ConfigError, IntakeError
from feedservice.model import SubscriberStatus
from tests.conftest import FeedServer, SmtpSink, skip_unless_ci, write_config
from tests.test_bounce_reading import sample
from tests.test_bounces import CHECK_TIME, VERP_ON, _app, _send, _setup, _status

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
PASSWORD = "s3cret-bounce"
USERS = [f"bounces{i}" for i in range(24)]
KOREAN = ("bounces-ko", "비밀-번호")  # a user whose password is not ASCII (SASL PLAIN, not LOGIN)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Dovecot:
    plain_port: int  # plain IMAP, STARTTLS offered
    ssl_port: int  # IMAP over TLS from the first byte
    ca_file: Path
    users: list[str]

    def client(self, user: str) -> imaplib.IMAP4:
        imap = imaplib.IMAP4("127.0.0.1", self.plain_port, timeout=10)
        imap.login(user, PASSWORD)
        return imap

    def take_user(self) -> str:
        return self.users.pop()


_CONF = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
default_login_user = dovenull
default_internal_user = dovecot
ssl = yes
ssl_cert = <{root}/cert.pem
ssl_key = <{root}/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain
mail_location = maildir:{root}/home/%u/Maildir
first_valid_uid = 1
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={root}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {plain_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {ssl_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
"""


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    if not os.path.exists(DOVECOT):
        skip_unless_ci("dovecot is not installed (apt-get install dovecot-imapd)")
    if os.geteuid() != 0:
        skip_unless_ci("dovecot is started as root (it drops to its own users)")
    if shutil.which("openssl") is None:
        skip_unless_ci("openssl is not installed")
    root = Path(tempfile.mkdtemp(prefix="feedservice-dovecot-"))
    root.chmod(0o755)  # the mail processes run as nobody
    proc = None
    try:
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-keyout",
                str(root / "key.pem"),
                "-out",
                str(root / "cert.pem"),
            ],
            check=True,
            capture_output=True,
        )
        users = [*((u, PASSWORD) for u in USERS), KOREAN]
        (root / "passwd").write_text("".join(f"{u}:{{PLAIN}}{p}::::::\n" for u, p in users), encoding="utf-8")
        (root / "home").mkdir()
        shutil.chown(root / "home", "nobody", "nogroup")
        plain_port, ssl_port = _free_port(), _free_port()
        conf = root / "dovecot.conf"
        conf.write_text(_CONF.format(root=root, plain_port=plain_port, ssl_port=ssl_port), encoding="utf-8")
        proc = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                with (
                    socket.create_connection(("127.0.0.1", plain_port), timeout=1),
                    socket.create_connection(("127.0.0.1", ssl_port), timeout=1),
                ):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                    log = (root / "dovecot.log").read_text(errors="replace") if (root / "dovecot.log").exists() else ""
                    pytest.fail(f"dovecot did not start: {out}\n{log}")
                time.sleep(0.1)
        yield Dovecot(plain_port, ssl_port, root / "cert.pem", list(USERS))
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(root, ignore_errors=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the master (it stops its children) and make sure nothing of its session is left."""
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()
    deadline = time.monotonic() + 10
    while _session_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _session_alive(proc.pid):
        os.killpg(proc.pid, 9)
    if proc.stdout:
        proc.stdout.close()


def _session_alive(sid: int) -> bool:
    """Whether any process of the session the dovecot master started (it leads it) is still running."""
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[3]) == sid and fields[0] != "Z":  # field 6 of stat: the session id
                return True
    return False


def _append(dovecot: Dovecot, user: str, mails: dict[str, bytes]) -> None:
    """Deliver as the MTA's LDA would: each message APPENDed to the user's INBOX."""
    imap = dovecot.client(user)
    try:
        for data in mails.values():
            typ, _ = imap.append("INBOX", "", imaplib.Time2Internaldate(time.time()), data)
            assert typ == "OK"
    finally:
        imap.logout()


def _folders(dovecot: Dovecot, user: str) -> dict[str, list[tuple[bytes, set[str]]]]:
    """Every message of INBOX and Processed on the server: (its bytes, its flags)."""
    imap = dovecot.client(user)
    seen: dict[str, list[tuple[bytes, set[str]]]] = {}
    try:
        for folder in ("INBOX", "Processed"):
            typ, count = imap.select(folder, readonly=True)
            seen[folder] = []
            if typ != "OK" or count[0] == b"0":
                continue
            typ, fetched = imap.fetch("1:*", "(FLAGS BODY.PEEK[])")
            for part in fetched:
                if isinstance(part, tuple):
                    flags = part[0].split(b"FLAGS (", 1)[1].split(b")", 1)[0].decode().split()
                    seen[folder].append((part[1], set(flags) - {"\\Recent"}))  # \Recent: per session
    finally:
        imap.logout()
    return seen


def _imap_config(dovecot: Dovecot, user: str, tls: str, env: str = "BOUNCE_IMAP_PASSWORD") -> str:
    port = dovecot.ssl_port if tls == "ssl" else dovecot.plain_port
    return (
        f'[bounces.imap]\nhost = "127.0.0.1"\nport = {port}\ntls = "{tls}"\nusername = "{user}"\n'
        f'password_env = "{env}"\nca_file = "{dovecot.ca_file}"\ntimeout = 10\n'
    )


def _config_without_maildir(cfg: Path) -> None:
    """The [bounces] of ``_setup`` without its Maildir: IMAP is the only intake."""
    text = cfg.read_text(encoding="utf-8")
    cfg.write_text(
        "\n".join(line for line in text.splitlines() if not line.startswith("maildir = ")) + "\n", encoding="utf-8"
    )


@pytest.mark.parametrize("tls", ["ssl", "starttls", "none"])
def test_check_reads_the_imap_folder_flags_and_moves_each_message_once(
    tls: str,
    dovecot: Dovecot,
    tmp_path: Path,
    feed_server: FeedServer,
    smtp_server: tuple[SmtpSink, int],
    db_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sink, port = smtp_server
    user = dovecot.take_user()
    cfg, _ = _setup(tmp_path, feed_server, port, VERP_ON + _imap_config(dovecot, user, tls), db_url)
    _config_without_maildir(cfg)
    readers = ["hard@example.com", "full@example.org", "complains@example.net", "away@example.net"]
    sent = _send(cfg, sink, *readers)
    mail = {
        "postfix": sample(
            "postfix-5.1.1.eml",
            verp=sent["hard@example.com"][1],
            rcpt="hard@example.com",
            message_id=sent["hard@example.com"][2],
        ),
        "exim": sample("exim-5.2.2.eml", verp=sent["full@example.org"][1], rcpt="full@example.org"),
        "arf": sample("arf-complaint.eml", message_id=sent["complains@example.net"][2]),
        "vacation": sample("autoreply-ko.eml", verp=sent["away@example.net"][1], rcpt="away@example.net"),
        "spam": sample("spam.eml"),
    }
    _append(dovecot, user, mail)
    monkeypatch.setattr(bootstrap, "utcnow", lambda: CHECK_TIME)
    monkeypatch.setenv("BOUNCE_IMAP_PASSWORD", PASSWORD)

    assert main(["--config", str(cfg), "bounces", "check"]) == 0
    assert "1 hard, 1 soft, 1 complaints, 1 auto-replies, 1 unmatched; 2 suppressed" in capsys.readouterr().out
    app = _app(cfg, CHECK_TIME)
    try:
        assert _status(app, "hard@example.com") is SubscriberStatus.SUPPRESSED
        assert _status(app, "complains@example.net") is SubscriberStatus.SUPPRESSED
        assert _status(app, "full@example.org") is SubscriberStatus.SUBSCRIBED
        [unmatched] = app.store.list_bounces(unmatched=True)
        assert app.store.bounce_raw(unmatched.id) == mail["spam"].replace(b"\n", b"\r\n")  # as IMAP sends it
    finally:
        app.close()
    # On the server: INBOX empty, everything moved (nothing deleted), the unmatched flagged for a person.
    server = _folders(dovecot, user)
    assert server["INBOX"] == []
    by_body = {body.replace(b"\r\n", b"\n"): flags for body, flags in server["Processed"]}
    assert len(by_body) == len(mail)
    for name, data in mail.items():
        flags = by_body[data.replace(b"\r\n", b"\n")]
        assert flags == ({"\\Seen", "\\Flagged"} if name == "spam" else {"\\Seen"}), name

    # A second run changes nothing, here or on the server.
    assert main(["--config", str(cfg), "bounces", "check"]) == 0
    assert "0 hard, 0 soft, 0 complaints, 0 auto-replies, 0 unmatched; 0 suppressed\n" in capsys.readouterr().out
    assert _folders(dovecot, user) == server

    # A message recorded before but back in the folder (a lost move, a copy) is only moved.
    _append(dovecot, user, {"again": mail["postfix"]})
    assert main(["--config", str(cfg), "bounces", "check"]) == 0
    assert "0 suppressed; 1 read before" in capsys.readouterr().out
    after = _folders(dovecot, user)
    assert after["INBOX"] == [] and len(after["Processed"]) == len(mail) + 1


def test_a_wrong_password_is_one_line_and_changes_nothing(
    dovecot: Dovecot,
    tmp_path: Path,
    feed_server: FeedServer,
    smtp_server: tuple[SmtpSink, int],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    user = dovecot.take_user()
    cfg, _ = _setup(tmp_path, feed_server, smtp_server[1], VERP_ON + _imap_config(dovecot, user, "ssl"))
    _config_without_maildir(cfg)
    _append(dovecot, user, {"spam": sample("spam.eml")})
    before = _folders(dovecot, user)
    monkeypatch.setenv("BOUNCE_IMAP_PASSWORD", "wrong")

    assert main(["--config", str(cfg), "bounces", "check"]) == 1
    captured = capsys.readouterr()
    [error] = [line for line in captured.out.splitlines() if "imap:" in line]
    assert error.startswith(f"imap:{user}@127.0.0.1:{dovecot.ssl_port}/INBOX: logging in: ")
    assert "Authentication failed" in error
    assert "Traceback" not in captured.out + captured.err
    assert _folders(dovecot, user) == before

    monkeypatch.delenv("BOUNCE_IMAP_PASSWORD")  # unset: said so, nothing tried
    assert main(["--config", str(cfg), "bounces", "check"]) == 1
    assert "the environment variable BOUNCE_IMAP_PASSWORD is not set" in capsys.readouterr().out


def test_a_password_beyond_ascii_logs_in(dovecot: Dovecot) -> None:
    user, password = KOREAN
    intake = ImapIntake(
        ImapAccount("127.0.0.1", dovecot.ssl_port, "ssl", user, password, ca_file=str(dovecot.ca_file), timeout=10)
    )
    try:
        assert list(intake.pending()) == []
    finally:
        intake.close()


@pytest.mark.parametrize(
    ("table", "error"),
    [
        ('host = "imap.example.com"\nusername = "b"\n', "password_env"),
        ('host = "imap.example.com"\nusername = "b"\npassword_env = "P"\ntls = "maybe"\n', "tls"),
        ('host = "imap.example.com"\nusername = "b"\npassword_env = "P"\nfolder = "받은편지함"\n', "folder"),
        ('host = "imap.example.com"\nusername = "b"\npassword = "in the file"\npassword_env = "P"\n', "password"),
    ],
)
def test_the_imap_table_is_checked(tmp_path: Path, table: str, error: str) -> None:
    cfg = write_config(tmp_path, delivery_extra=f"[bounces]\n[bounces.imap]\n{table}")
    with pytest.raises(ConfigError, match=error):
        load_settings(cfg)


def test_the_imap_port_follows_tls(tmp_path: Path) -> None:
    base = '[bounces]\n[bounces.imap]\nhost = "imap.example.com"\nusername = "b"\npassword_env = "P"\n'
    for tls, port in (("ssl", 993), ("starttls", 143), ("none", 143)):
        settings = load_settings(write_config(tmp_path, delivery_extra=base + f'tls = "{tls}"\n'))
        assert settings.bounces is not None and settings.bounces.imap is not None
        assert settings.bounces.imap.server_port == port


def test_an_untrusted_certificate_is_refused(dovecot: Dovecot) -> None:
    user = dovecot.take_user()
    intake = ImapIntake(ImapAccount("127.0.0.1", dovecot.ssl_port, "ssl", user, PASSWORD, timeout=5))
    with pytest.raises(IntakeError, match="CERTIFICATE_VERIFY_FAILED"):
        list(intake.pending())
    intake.close()


def test_each_run_reads_at_most_limit_messages(dovecot: Dovecot) -> None:
    user = dovecot.take_user()
    _append(
        dovecot,
        user,
        {str(i): sample("spam.eml").replace(b"Subject:", f"X-N: {i}\nSubject:".encode()) for i in range(5)},
    )
    account = ImapAccount("127.0.0.1", dovecot.plain_port, "none", user, PASSWORD, limit=3, timeout=5)
    for expected in (3, 2, 0):
        intake = ImapIntake(account)
        try:
            mails = list(intake.pending())
            assert len(mails) == expected
            for m in mails:
                intake.done(m, matched=False)
        finally:
            intake.close()
    assert len(_folders(dovecot, user)["Processed"]) == 5


# -- hostile servers -------------------------------------------------------------------------------
class _FakeServer:
    """An IMAP 'server' on 127.0.0.1 that answers a script of our choosing, then misbehaves."""

    def __init__(self, misbehave: str) -> None:
        self.misbehave = misbehave
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            f = conn.makefile("rb")
            if self.misbehave == "dribble":  # a greeting one byte every half second: never a full line
                for byte in b"* OK I am very slow" * 100:
                    if self.stop.wait(0.5):
                        return
                    conn.sendall(bytes([byte]))
                return
            conn.sendall(b"* OK [CAPABILITY IMAP4rev1 MOVE AUTH=PLAIN] fake\r\n")
            while not self.stop.is_set():
                line = f.readline()
                if not line:
                    return
                tag, command = line.split(b" ", 2)[:2]
                command = command.upper().strip()
                if command == b"LOGIN":
                    conn.sendall(tag + b" OK logged in\r\n")
                elif command == b"CAPABILITY":
                    conn.sendall(b"* CAPABILITY IMAP4rev1 MOVE\r\n" + tag + b" OK done\r\n")
                elif command == b"CREATE":
                    conn.sendall(tag + b" NO [ALREADYEXISTS] exists\r\n")
                elif command in (b"SELECT", b"EXAMINE"):
                    conn.sendall(b"* 1 EXISTS\r\n" + tag + b" OK [READ-WRITE] selected\r\n")
                elif command == b"FETCH":
                    conn.sendall(b"* 1 FETCH (UID 7)\r\n" + tag + b" OK done\r\n")
                elif command == b"UID" and self.misbehave == "huge":
                    conn.sendall(b"* 1 FETCH (UID 7 BODY[]<0> {99999999999}\r\n")  # and then nothing
                    self.stop.wait(30)
                elif command == b"UID" and self.misbehave == "hang":
                    self.stop.wait(30)
                elif command == b"UID" and self.misbehave == "garbage":
                    conn.sendall(b"* 1 FETCH (UID 7 \x00\xff nonsense\r\n" + tag + b" OK done\r\n")
                elif command == b"LOGOUT":
                    conn.sendall(b"* BYE\r\n" + tag + b" OK bye\r\n")
                    return
                else:
                    conn.sendall(tag + b" BAD what\r\n")

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        self.thread.join(timeout=5)


@pytest.mark.parametrize(
    ("misbehave", "said"),
    [
        ("huge", "announced a 99999999999-byte literal"),
        ("hang", "no complete answer within 1 s"),
        ("garbage", "malformed FETCH reply"),
        ("dribble", "no greeting within 1 s"),
    ],
)
def test_a_hostile_server_is_a_clean_failure_within_the_timeout(misbehave: str, said: str) -> None:
    server = _FakeServer(misbehave)
    intake = ImapIntake(ImapAccount("127.0.0.1", server.port, "none", "u", "p", timeout=1))
    started = time.monotonic()
    try:
        with pytest.raises(IntakeError, match=said):
            list(intake.pending())
        assert time.monotonic() - started < 5
    finally:
        intake.close()
        server.close()


def test_the_password_is_not_in_the_account_repr() -> None:
    account = ImapAccount("imap.example.com", 993, "ssl", "bounces", "hunter2-비밀")
    assert "hunter2" not in repr(account) and "bounces@imap.example.com:993" in repr(account)
