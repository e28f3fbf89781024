"""Running a coroutine to completion on the fastest event loop installed.

uvloop's transports cost a fraction of asyncio's per read and write; the feed server, the
collector's HTTP client and the SMTP pool all spend much of their time there. Granian picks
uvloop for the worker processes it starts itself, but the commands run their own loop (the
single-process server included), so they ask here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop when it is installed (it is not on every platform, e.g. Windows)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)
