"""In-memory fakes of the ports (``feedservice/ports.py``), for service tests that need no socket.

Each fake keeps what it was asked in a list a test can read, and does only what the port
promises: a ``FakeMailer`` is a relay that accepts (or refuses) mail, a ``FakeFetcher`` answers
from a dict of URLs, a ``FakeWeatherStore`` keeps observations in a dict. The end-to-end tests
still talk to real servers; these are for the rules in between.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from feedservice.errors import DeliveryError, FetchError, WeatherError
from feedservice.model import FetchResult, Forecast, Observation
from feedservice.ports import Fetcher, Mailer, WeatherProvider, WeatherStore

__all__ = ["FakeClock", "FakeFetcher", "FakeMailer", "FakeWeatherProvider", "FakeWeatherStore"]


@dataclass
class FakeClock:
    """The time a test sets: ``clock()`` reads it, ``advance`` moves it."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@dataclass
class FakeMailer:
    """A relay in memory: every message handed over is kept in ``sent``; ``refuse`` maps a
    recipient to the ``DeliveryError`` it gets instead."""

    sent: list[tuple[str, str, bytes]] = field(default_factory=list)
    refuse: dict[str, DeliveryError] = field(default_factory=dict)
    closed: bool = False

    async def send(self, sender: str, recipient: str, message: bytes) -> str:
        if recipient in self.refuse:
            raise self.refuse[recipient]
        self.sent.append((sender, recipient, message))
        return "250 2.0.0 queued"

    async def aclose(self) -> None:
        self.closed = True


@dataclass
class FakeFetcher:
    """Answers each URL from ``answers``: a feed's bytes (200, with an ETag), a ``FetchResult``,
    or a ``FetchError`` to raise; any other URL is a 404. ``asked`` keeps (url, etag) per call."""

    answers: dict[str, bytes | FetchResult | FetchError] = field(default_factory=dict)
    asked: list[tuple[str, str | None]] = field(default_factory=list)

    async def fetch(self, url: str, *, etag: str | None = None, last_modified: str | None = None) -> FetchResult:
        self.asked.append((url, etag))
        answer = self.answers.get(url, FetchError(url, "HTTP 404 Not Found"))
        if isinstance(answer, FetchError):
            raise answer
        if isinstance(answer, FetchResult):
            return answer
        tag = '"' + hashlib.sha256(answer).hexdigest()[:16] + '"'
        if etag == tag:
            return FetchResult(url, 304, headers={"etag": tag})
        return FetchResult(url, 200, answer, {"etag": tag, "content-type": "application/rss+xml"})

    async def aclose(self) -> None:
        return None


@dataclass
class FakeWeatherProvider:
    """Observes what ``observations`` holds (a ``WeatherError`` to raise instead), after ``delay``
    seconds; ``calls`` counts the times it was asked."""

    name: str
    observations: list[Observation] | WeatherError = field(default_factory=list)
    delay: float = 0.0
    calls: int = 0

    async def observe(self, station_ids: Sequence[int], now: datetime) -> list[Observation]:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if isinstance(self.observations, WeatherError):
            raise self.observations
        return [o for o in self.observations if o.station_id in station_ids]

    async def forecast(self, station_ids: Sequence[int], now: datetime) -> list[Forecast]:
        return []


@dataclass
class FakeWeatherStore:
    """Observations by station, every one kept (the newest answers, as the database's does)."""

    saved: dict[int, list[Observation]] = field(default_factory=dict)

    def save_observations(self, observations: Sequence[Observation], fetched_at: datetime) -> None:
        for o in observations:
            self.saved.setdefault(o.station_id, []).append(o)

    def latest_observations(self, station_ids: Sequence[int], before: datetime | None = None) -> dict[int, Observation]:
        out: dict[int, Observation] = {}
        for i in station_ids:
            kept = [o for o in self.saved.get(i, []) if before is None or o.observed_at <= before]
            if kept:
                out[i] = max(kept, key=lambda o: o.observed_at)
        return out


def _conforms(
    mailer: FakeMailer, fetcher: FakeFetcher, provider: FakeWeatherProvider, store: FakeWeatherStore
) -> tuple[Mailer, Fetcher, WeatherProvider, WeatherStore]:
    """Never called: mypy checks here that each fake is the port it stands in for."""
    return mailer, fetcher, provider, store
