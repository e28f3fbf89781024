"""Pacing and batching for the sending loop: a shared rate limit, per-provider lanes, and
outcomes committed in groups.

A *lane* is what one mailbox provider gets from us: a domain, or a ``[delivery.domains]`` group
(``daum.net``, ``hanmail.net`` and ``kakao.com`` are one provider). Each lane has its own
concurrency and per-minute limits and can be paused (``replies.next_pause``) by a throttling
reply, without slowing the others: a sender never waits for a busy lane — the message joins the
lane's backlog, and whichever sender holds one of the lane's slots takes it next.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from feedservice.model import Delivery, DeliveryStatus, DomainPause, Subscriber
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
        self.queue: asyncio.Queue[
            tuple[tuple[int, DeliveryStatus, str | None, datetime | None], asyncio.Future[None]] | None
        ] = asyncio.Queue()

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


@dataclass(frozen=True)
class LaneRule:
    """Limits for one lane: at most ``concurrency`` messages in flight, ``per_minute`` (0: any)."""

    name: str
    domains: tuple[str, ...]
    concurrency: int | None = None  # None: only the connection pool limits it
    per_minute: float = 0.0


@dataclass
class Lane:
    rule: LaneRule
    limiter: RateLimiter
    active: int = 0
    backlog: deque[tuple[Delivery, Subscriber | None]] = field(default_factory=deque)
    pause: DomainPause | None = None

    def full(self) -> bool:
        return self.rule.concurrency is not None and self.active >= self.rule.concurrency

    def paused_until(self, now: datetime) -> datetime | None:
        return self.pause.until if self.pause is not None and now < self.pause.until else None


def recipient_domain(address: str) -> str:
    return address.rpartition("@")[2].strip().lower().rstrip(".")


class DomainPacer:
    """The lanes of one run: configured ones by domain, any other domain a lane of its own."""

    def __init__(self, rules: Iterable[LaneRule], pauses: Iterable[DomainPause] = ()) -> None:
        self._by_domain: dict[str, Lane] = {}
        self.lanes: dict[str, Lane] = {}
        for rule in rules:
            lane = self._add(rule)
            for domain in rule.domains:
                self._by_domain[domain] = lane
        for pause in pauses:
            lane = self.lanes.get(pause.lane) or self._add(LaneRule(pause.lane, (pause.lane,)))
            lane.pause = pause

    def _add(self, rule: LaneRule) -> Lane:
        lane = self.lanes[rule.name] = Lane(rule, RateLimiter(rule.per_minute / 60))
        return lane

    def lane_for(self, address: str) -> Lane:
        domain = recipient_domain(address)
        lane = self._by_domain.get(domain)
        if lane is None:  # an unconfigured domain: no limits, but it can be paused
            lane = self._by_domain[domain] = self.lanes.get(domain) or self._add(LaneRule(domain, (domain,)))
        return lane
