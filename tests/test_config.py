"""config.toml: a working example, and every kind of mistake → exit 2 with one line naming the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from feedservice.bootstrap import make_app
from feedservice.cli.main import main
from feedservice.config import load_settings
from feedservice.errors import ConfigError
from tests.conftest import ROOT, write_config


def test_example_config_loads_with_the_widget_stations() -> None:
    s = load_settings(ROOT / "config.toml")
    assert s.site.name == "뉴스스페이스"
    assert [x.title for x in s.sections][:2] == ["빅테크", "공간사회학"]
    assert len(s.weather.stations) == 16 and s.weather.stations[2] == 108
    assert s.delivery.effective_mode == "maildir"
    assert s.database_url.startswith("sqlite:////") and s.database_url.endswith("/var/feedservice.db")
    assert s.digest.send_at == "07:00" and s.site.timezone == "Asia/Seoul"


def _edit(tmp_path: Path, old: str, new: str) -> Path:
    path = write_config(tmp_path)
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


BAD = [
    # (what is changed, into what, the key the message must name, a word of the message)
    ('name = "뉴스스페이스"', 'name = "뉴스스페이스"\ncolour = "red"', "site.colour", "unknown key"),
    ("[collect]", '[collect]\ninterval_minutes = "often"', "collect.interval_minutes", "integer"),
    ('from = "뉴스스페이스 <newsletter@newsspace.kr>"', "", "digest.from", "missing"),
    ('url = "https://www.newsspace.kr"', 'url = "ftp://www.newsspace.kr"', "site.url", "http"),
    ("[digest]", '[digest]\nsend_at = "25:00"', "digest.send_at", "HH:MM"),
    ('secret_env = "FS_TEST_SECRET"', 'secret_env = "not a name"', "web.secret_env", "environment"),
    ('title = "빅테크"', 'title = "빅테크"\nslug2 = 1', "sections[0].slug2", "unknown key"),
    (
        "[collect]",
        '[[sources]]\nurl = "http://127.0.0.1/x.xml"\nsection = "nope"\n[collect]',
        "sources[0].section",
        "no such section",
    ),
    ('provider = "none"', 'provider = "none"\nstations = [108, 99999]', "weather.stations[1]", "unknown KMA station"),
    ('provider = "none"', 'provider = "accuweather"', "weather.provider", "kma"),
    ("[site]", '[site]\ntimezone = "Mars/Olympus"', "site.timezone", "unknown time zone"),
    ("maildir = ", 'mode = "smtp"\nmaildir = ', "delivery.smtp", "needs a [delivery.smtp]"),
    (
        "maildir = ",
        "dkim_threads = 2\nmaildir = ",
        "delivery.dkim_threads",
        'replaced by [delivery] dkim_signer = "process"',
    ),
    ("maildir = ", 'dkim_signer = "threads"\nmaildir = ', "delivery.dkim_signer", "'process' or 'loop'"),
    ('[database]\nurl = "sqlite:///', '[database]\nurl = "mysql:///', "database.url", "sqlite"),
    ('slug = "space-sociology"', 'slug = "Space Sociology"', "sections[1].slug", "slug"),
    # [web] hosts are names as a Host header carries them, without scheme, port or path; no "*"
    *[
        ("[web]", f'[web]\nhosts = ["localhost", {bad!r}]', "web.hosts[1]", "not a host name")
        for bad in ("https://news.example", "news.example:443", "news.example/feeds", "*", ".news.example", "a b")
    ],
    ('public_url = "http://127.0.0.1:8080"', 'public_url = "http://exa$mple/"', "site.public_url", "host name"),
    # a colon would end the user name inside Postmark's webhook URL (https://user:password@host/…)
    (
        "[web]",
        '[bounces.webhooks.postmark]\nusername = "post:mark"\n[web]',
        "bounces.webhooks.postmark.username",
        "pattern",
    ),
]


@pytest.mark.parametrize(("old", "new", "key", "word"), BAD, ids=[f"{b[2]}-{i}" for i, b in enumerate(BAD)])
def test_bad_config_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, key: str, word: str
) -> None:
    path = _edit(tmp_path, old, new)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.key == key
    assert main(["--config", str(path), "sources"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert str(path) in err and key in err and word in err
    assert "Traceback" not in err


def test_not_toml_and_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[site\nname = 1\n", encoding="utf-8")
    assert main(["--config", str(broken), "sources"]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    assert main(["--config", str(tmp_path / "absent.toml"), "sources"]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_bad_config_from_the_real_command_line(tmp_path: Path) -> None:
    path = _edit(tmp_path, "[collect]", "[collect]\nconcurrency = 0")
    proc = subprocess.run(
        [sys.executable, "-m", "feedservice", "--config", str(path), "collect"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("feedservice: config error:")
    assert "collect.concurrency" in proc.stderr and "Traceback" not in proc.stderr


def test_secrets_come_from_the_environment_or_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings(write_config(tmp_path))
    monkeypatch.delenv("FS_TEST_SECRET")
    assert s.secret("FS_TEST_SECRET") is None
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-a-file\n")
    monkeypatch.setenv("FS_TEST_SECRET_FILE", str(secret_file))
    value = s.secret("FS_TEST_SECRET")
    assert isinstance(value, SecretStr) and value.get_secret_value() == "from-a-file"
    assert "from-a-file" not in repr(value)
    monkeypatch.setenv("FS_TEST_SECRET", "from-env")
    value = s.secret("FS_TEST_SECRET")
    assert value is not None and value.get_secret_value() == "from-env"


def test_a_secret_in_the_file_is_refused(tmp_path: Path) -> None:
    path = _edit(tmp_path, "[web]", '[web]\nsecret = "hunter2"')
    with pytest.raises(ConfigError, match=r"web\.secret: unknown key"):
        load_settings(path)


def test_every_config_key_is_in_the_readme() -> None:
    """The README's config reference names every key the validator accepts."""
    import inspect
    import re
    from pathlib import Path

    import pydantic

    from feedservice import config

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`([a-z0-9_]+)`", readme)) | set(re.findall(r"\{ ?([a-z0-9_]+) =", readme))
    missing = [
        f"{cls.__name__}.{info.alias or key}"
        for cls in vars(config).values()
        if inspect.isclass(cls)
        and issubclass(cls, pydantic.BaseModel)
        and cls.__module__ == config.__name__
        and cls is not config.Settings  # its keys are the [tables], each with a heading
        for key, info in cls.model_fields.items()
        if (info.alias or key) not in named
    ]
    assert missing == []


# Each of these reaches a mail header (From, Subject, List-Id, List-Unsubscribe, DKIM-Signature)
# or the SMTP dialogue; a CR/LF in any of them would start a header of the writer's choosing.
HEADER_KEYS = [
    ("[site]\n", 'name = "X{bad}Bcc: evil@example.com"', "site.name"),
    ("[site]\n", 'url = "https://www.newsspace.kr/{bad}Bcc: evil@example.com"', "site.url"),
    ("[site]\n", 'public_url = "http://127.0.0.1:8080/{bad}Bcc: evil@example.com"', "site.public_url"),
    ("[digest]\n", 'subject = "{{site}}{bad}Bcc: evil@example.com"', "digest.subject"),
    ("[digest]\n", 'list_id = "news{bad}Bcc: evil@example.com"', "digest.list_id"),
    ("[digest]\n", 'dkim_selector = "s1{bad}Bcc: evil@example.com"', "digest.dkim_selector"),
    ("[digest]\n", 'dkim_domain = "newsspace.kr{bad}Bcc: evil@example.com"', "digest.dkim_domain"),
    ("[site]\n", 'postal_address = "서울{bad}Bcc: evil@example.com"', "site.postal_address"),
]


@pytest.mark.parametrize("bad", [r"\r\n", r"\n", r"\r", r"\u2028", r"\u0085", r"\u0000"])
@pytest.mark.parametrize(("table", "line", "key"), HEADER_KEYS, ids=[k[2] for k in HEADER_KEYS])
def test_a_line_break_in_a_value_that_reaches_a_header_is_refused(
    tmp_path: Path, table: str, line: str, key: str, bad: str
) -> None:
    text = write_config(tmp_path).read_text(encoding="utf-8")
    if key.split(".")[1] + " = " in text:  # replace the key's value where the base config sets it
        text = "\n".join(x for x in text.splitlines() if not x.startswith(key.split(".")[1] + " = ")) + "\n"
    path = tmp_path / "config.toml"
    path.write_text(text.replace(table, table + line.format(bad=bad) + "\n", 1), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.key == key and "control character" in info.value.message


def test_a_bcc_in_the_site_name_never_reaches_a_message(tmp_path: Path) -> None:
    """The reported attack: `name = "X\\r\\nBcc: …"` put a Bcc header into every digest."""
    path = _edit(tmp_path, 'name = "뉴스스페이스"', r'name = "X\r\nBcc: evil@example.com"')
    out = tmp_path / "preview"
    proc = subprocess.run(
        [sys.executable, "-m", "feedservice", "--config", str(path), "digest", "preview", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"feedservice: config error: {path}: site.name: control character U+000D (carriage return) is not allowed "
        "(values must be one line)"
    ]
    assert not (out / "digest.eml").exists()  # no message was built, so none can carry the header


def test_every_config_table_has_the_one_line_rule() -> None:
    """The rule lives on the base of every table, so a key added later is covered too."""
    import inspect

    import pydantic

    from feedservice import config, config_bounces
    from feedservice.config_values import Table

    modules = (config.__name__, config_bounces.__name__)
    tables = [
        cls
        for mod in (config, config_bounces)
        for cls in vars(mod).values()
        if inspect.isclass(cls) and issubclass(cls, pydantic.BaseModel) and cls.__module__ in modules
    ]
    assert len(tables) > 15 and all(issubclass(cls, Table) for cls in tables)
    assert all("_one_line" in cls.__pydantic_decorators__.field_validators for cls in tables)


def test_the_signing_secret_is_generated_once_and_never_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings(write_config(tmp_path))
    monkeypatch.delenv("FS_TEST_SECRET")
    first = s.signing_secret()
    key = tmp_path / "var" / "secret.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert s.signing_secret().get_secret_value() == first.get_secret_value() == key.read_text()  # kept
    app = make_app(s)  # reads the same file, and shows it nowhere
    try:
        assert app.secret() == first.get_secret_value().encode()
        assert first.get_secret_value() not in repr(first) + repr(app)
    finally:
        app.close()
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-a-file\n")
    monkeypatch.setenv("FS_TEST_SECRET_FILE", str(secret_file))
    assert s.signing_secret().get_secret_value() == "from-a-file"  # the environment wins over var/


def test_forgotten_addresses_keep_their_key_across_a_rotation(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = _edit(tmp_path, "[web]", '[web]\naddress_key_env = "FS_TEST_ADDRESS_KEY"\nprevious_secret_envs = ["FS_OLD"]')
    s = load_settings(path)
    signing = s.signing_secret()
    with pytest.raises(ConfigError, match="FS_TEST_ADDRESS_KEY is not set"):  # never silently another key
        s.address_key(signing)
    monkeypatch.setenv("FS_TEST_ADDRESS_KEY", "pinned")
    monkeypatch.setenv("FS_OLD", "retired")
    assert s.address_key(signing).get_secret_value() == "pinned"
    assert [r.get_secret_value() for r in s.retired_secrets()] == ["retired"]


def test_the_web_hosts_are_the_public_urls_and_the_loopback_names_or_those_listed(tmp_path: Path) -> None:
    """Compared as a browser sends them: lower case, IDNA A-labels, no trailing dot, IPv6 in
    brackets; the public URL's host is always one of them (every link points there)."""
    default = load_settings(write_config(tmp_path))
    assert default.allowed_hosts() == {"127.0.0.1", "localhost", "[::1]"}
    path = _edit(
        tmp_path,
        'public_url = "http://127.0.0.1:8080"',
        'public_url = "https://피드.뉴스스페이스.kr"',
    )
    path.write_text(
        path.read_text(encoding="utf-8").replace("[web]\n", '[web]\nhosts = ["News.Example.", "::1", "뉴스.kr"]\n'),
        encoding="utf-8",
    )
    assert load_settings(path).allowed_hosts() == {
        "xn--hy1by72d.xn--vg1b002aaa372d1mu.kr",
        "news.example",
        "[::1]",
        "xn--vg1b002a.kr",
    }
