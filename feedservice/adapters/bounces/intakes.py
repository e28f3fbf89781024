"""The configured bounce intakes (``[bounces] maildir``, ``[bounces.imap]``), built from config."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydantic import SecretStr

from feedservice.adapters.bounces.imap import ImapAccount, ImapIntake
from feedservice.adapters.bounces.maildir import MaildirIntake
from feedservice.config_bounces import BouncesConfig
from feedservice.ports import BounceIntake

__all__ = ["configured_intakes"]


def configured_intakes(
    b: BouncesConfig | None, path: Callable[[str], Path], secret: Callable[[str], SecretStr | None]
) -> list[BounceIntake]:
    """Every configured intake (none: bounce mail is not read); ``path`` resolves a configured
    path against the config file's folder, ``secret`` reads an environment variable (or its file)."""
    intakes: list[BounceIntake] = []
    if b is not None and b.maildir:
        intakes.append(MaildirIntake(path(b.maildir)))
    if b is not None and (i := b.imap) is not None:
        password = secret(i.password_env)
        account = ImapAccount(
            host=i.host,
            port=i.server_port,
            tls=i.tls,
            username=i.username,
            password=password.get_secret_value() if password else None,
            password_env=i.password_env,
            folder=i.folder,
            processed_folder=i.processed_folder,
            ca_file=str(path(i.ca_file)) if i.ca_file else None,
            timeout=i.timeout,
            limit=i.limit,
        )
        intakes.append(ImapIntake(account))
    return intakes
