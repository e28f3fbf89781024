"""Pacing and batching for the sending loop: a shared rate limit, and outcomes committed in groups."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime

from feedservice.model import DeliveryStatus
from feedservice.ports import DeliveryStore


class RateLimiter:
    """A token bucket shared by every connection of this process (``rate`` messages/s; 0 = none)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._next = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        if self.rate <= 0:
            return
        async with self._lock:
            now = time.monotonic()
            wait = self._next - now
            self._next = max(self._next, now) + 1 / self.rate
        if wait > 0:
            await asyncio.sleep(wait)


class GroupCommit:
    """Outcomes from all connections, committed together: one transaction for whatever is waiting."""

    def __init__(self, store: DeliveryStore, clock: Callable[[], datetime]) -> None:
        self.store, self.clock = store, clock
        self.queue: asyncio.Queue[tuple[tuple[int, DeliveryStatus, str | None, datetime | None], asyncio.Future[None]]
                                  | None] = asyncio.Queue()  # fmt: skip

    async def record(self, outcome: tuple[int, DeliveryStatus, str | None, datetime | None]) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self.queue.put((outcome, done))
        await done

    async def close(self) -> None:
        await self.queue.put(None)

    async def run(self) -> None:
        closing = False
        while not closing:
            items = [await self.queue.get()]
            while not self.queue.empty():
                items.append(self.queue.get_nowait())
            closing = items[-1] is None or None in items
            batch = [x for x in items if x is not None]
            if not batch:
                continue
            try:
                await asyncio.to_thread(self.store.mark_deliveries, [o for o, _ in batch], self.clock())
            except Exception as exc:  # handed to every waiting sender
                for _, done in batch:
                    done.set_exception(exc)
                continue
            for _, done in batch:
                done.set_result(None)
