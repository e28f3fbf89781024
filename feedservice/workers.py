"""Helpers that run inside worker processes; kept free of heavy imports so workers start fast."""

from __future__ import annotations

import os
import threading
import time


def exit_with_parent(parent: int) -> None:
    """Exit when the process that started this one is gone (even after a SIGKILL, which leaves a
    pool worker's queue open), instead of lingering as an orphan."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()
