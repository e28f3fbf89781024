"""A Maildir the MTA delivers bounce mail into (``[bounces] maildir``), as an intake.

Each message in ``new/`` is read once and then moved to ``cur/`` with Maildir info flags
(``:2,S`` seen; ``:2,FS`` flagged for a person when it matched no delivery), the way a mail
client marks mail read: nothing is ever deleted, and the unmatched are easy to find with any
mail client. The move is one rename in the same folder tree, so a message is in ``new/`` or in
``cur/``, never lost. Files bigger than ``MAX_BYTES`` are read up to that size (the file stays).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

from feedservice.bounce_model import ReturnedMail
from feedservice.errors import IntakeError

__all__ = ["MaildirIntake"]

log = logging.getLogger(__name__)

MAX_BYTES = 10 * 1024 * 1024


class MaildirIntake:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.name = f"maildir:{folder}"

    def pending(self) -> Iterator[ReturnedMail]:
        new = self.folder / "new"
        if not new.is_dir():
            raise IntakeError(self.name, "not a Maildir (it has no new/ folder)")
        try:
            (self.folder / "cur").mkdir(exist_ok=True)
        except OSError as exc:
            raise IntakeError(self.name, f"cannot make cur/: {exc.strerror or exc}") from exc
        for entry in sorted(os.scandir(new), key=lambda e: e.name):
            if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                continue
            try:
                with open(entry.path, "rb") as f:
                    raw = f.read(MAX_BYTES)
            except OSError as exc:  # gone (another reader took it) or unreadable: the next run tries again
                log.warning("bounce mail %s not readable: %s", entry.path, exc)
                continue
            yield ReturnedMail(source=f"{self.name}/new/{entry.name}", raw=raw, key=entry.name)

    def done(self, mail: ReturnedMail, *, matched: bool) -> None:
        name = mail.key.split(":2,", 1)[0]
        try:
            os.rename(self.folder / "new" / mail.key, self.folder / "cur" / f"{name}:2,{'S' if matched else 'FS'}")
        except FileNotFoundError:  # moved already (by another run): nothing to do
            pass
        except OSError as exc:  # recorded already: a later run sees it is known and moves it then
            raise IntakeError(self.name, f"cannot move {mail.key} to cur/: {exc.strerror or exc}") from exc

    def close(self) -> None:
        """Nothing is held open between messages."""
