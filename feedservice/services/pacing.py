"""Pacing and batching for the sending loop: a shared rate limit, per-provider lanes, and
outcomes committed in groups.

A *lane* is what one mailbox provider gets from us: a domain, or a ``[delivery.domains]`` group
(``daum.net``, ``hanmail.net`` and ``kakao.com`` are one provider). Each lane has its own
concurrency and per-minute limits and can be paused (``replies.next_pause``) by a throttling
reply, without slowing the others: a sender never waits for a busy lane — the message joins the
lane's backlog, and whichever sender holds one of the lane's slots takes it next. A paused lane's
messages are deferred, unsent (``paused_outcome``); a pause is recorded, so it survives a restart
(``pause_lane``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from feedservice.model import Delivery, DeliveryStatus, DomainPause, Subscriber
from feedservice.ports import DeliveryStore
from feedservice.services.replies import Outcome, next_pause

log = logging.getLogger(__name__)


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


def paused_outcome(lane: Lane, now: datetime, deadline: datetime) -> Outcome | None:
    """The outcome of a message whose lane is paused: deferred, unsent, to the pause's end (failed
    once the edition's ``deadline`` has passed); None when the lane is not paused."""
    until = lane.paused_until(now)
    if until is None:
        return None
    if now >= deadline:
        return Outcome(DeliveryStatus.FAILED, f"expired: {lane.rule.name} paused us until {until:%H:%M:%S} UTC")
    after = lane.pause.reason if lane.pause else ""
    reply = f"not tried: {lane.rule.name} paused until {until:%H:%M:%S} UTC after: {after}"
    return Outcome(DeliveryStatus.DEFERRED, reply, until)


async def pause_lane(
    store: DeliveryStore,
    lane: Lane,
    reason: str,
    *,
    now: datetime,
    base: timedelta,
    edition: date,
    paused: dict[str, datetime],
) -> DomainPause:
    """Pause ``lane`` after a throttling ``reason`` (``replies.next_pause``) and record it; a new
    episode is noted in ``paused`` (the run's report). Another message of the same episode, already
    in flight, gets the pause as it is."""
    pause = next_pause(lane.pause, lane.rule.name, reason, now=now, base=base)
    if pause is lane.pause:  # the same episode: another message that was already in flight
        return pause
    lane.pause = pause
    paused[pause.lane] = pause.until
    log.warning(
        "digest %s: %s throttled us (%s): paused until %s, strike %d",
        edition,
        pause.lane,
        reason,
        pause.until.isoformat(timespec="seconds"),
        pause.strikes,
        extra={"edition": str(edition), "lane": pause.lane},
    )
    try:
        await asyncio.to_thread(store.save_domain_pause, pause)
    except Exception as exc:  # this run honours it anyway; only a restart would not know
        log.error("could not record the pause of %s: %s", pause.lane, exc)
    return pause
