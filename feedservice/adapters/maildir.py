"""Delivery into a local Maildir (the default when no SMTP server is configured).

A standard Maildir (``tmp/``, ``new/``, ``cur/``) written with Python's ``mailbox``,
which writes into ``tmp/`` and renames into ``new/``: readable by mail clients,
``mutt -f``, and ``mailbox.Maildir``.
"""

from __future__ import annotations

import asyncio
import mailbox
from pathlib import Path

from feedservice.errors import DeliveryFatal


class MaildirMailer:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._box = mailbox.Maildir(str(path), create=True)
        except OSError as exc:
            raise DeliveryFatal(f"cannot open the Maildir {path}: {exc}") from exc

    def _add(self, message: bytes) -> str:
        try:
            key = self._box.add(message)
        except OSError as exc:
            raise DeliveryFatal(f"cannot write to the Maildir {self.path}: {exc}") from exc
        return f"250 stored in {self.path}/new/{key}"

    async def send(self, sender: str, recipient: str, message: bytes) -> str:
        return await asyncio.to_thread(self._add, message)

    async def aclose(self) -> None:
        return None
