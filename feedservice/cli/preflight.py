"""Before a command runs: each folder it will write exists (or can be made) and takes a file.

A config that puts ``feeds.output_dir``, the SQLite database or the Maildir under a regular
file, inside /proc or on a read-only mount is a config problem. It stops here, as a
``ConfigError`` naming the key (exit status 2), instead of as an ``OSError`` from deep inside a
feed build or the database driver. Only what the command writes is checked, so that `status`
still works from an account that may only read.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterable
from pathlib import Path

from feedservice.config import Settings
from feedservice.errors import ConfigError

__all__ = ["FOLDER_KEYS", "check_folders"]

FOLDER_KEYS = ("database.url", "feeds.output_dir", "delivery.maildir")


def _folder(settings: Settings, key: str) -> Path | None:
    if key == "database.url":
        url = settings.database_url
        if not url.startswith("sqlite:///") or url == "sqlite:///:memory:":
            return None
        return Path(url.removeprefix("sqlite:///")).parent
    if key == "feeds.output_dir":
        return settings.path(settings.feeds.output_dir)
    if key == "delivery.maildir":
        return settings.path(settings.delivery.maildir) if settings.delivery.effective_mode == "maildir" else None
    raise ValueError(f"no folder is configured by {key!r}")


def check_folders(settings: Settings, keys: Iterable[str]) -> None:
    """Try each folder named by ``keys``: make what is missing, write (and drop) a temporary file in
    it, then remove the folders this made, so that nothing is left for the command to find (a
    Maildir, for one, sets up its tmp/new/cur only in a folder it creates itself)."""
    for key in keys:
        folder = _folder(settings, key)
        if folder is None:
            continue
        if folder.exists() and not folder.is_dir():
            raise ConfigError(settings.source_path, key, f"{folder} is a file, not a folder")
        missing = [p for p in (folder, *folder.parents) if not p.exists()]
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as exc:
            raise ConfigError(settings.source_path, key, f"cannot write in {folder}: {exc.strerror or exc}") from None
        finally:
            for made in missing:  # deepest first
                with contextlib.suppress(OSError):
                    made.rmdir()
