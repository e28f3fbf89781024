"""What the services need from the outside world, as Protocols.

Adapters in ``feedservice.adapters`` provide these; ``entry.bootstrap`` wires
them together. Services import only this module, ``model`` and ``errors``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from feedservice.model import FetchResult, Observation


class Fetcher(Protocol):
    async def fetch(self, url: str, *, etag: str | None = None, last_modified: str | None = None) -> FetchResult:
        """GET ``url`` conditionally; raise ``FetchError`` on any failure."""
        ...

    async def aclose(self) -> None: ...


class WeatherProvider(Protocol):
    name: str

    async def observe(self, station_ids: Sequence[int], now: datetime) -> list[Observation]:
        """The latest observation per station; raise ``WeatherError`` when the provider fails."""
        ...


class Mailer(Protocol):
    async def send(self, sender: str, recipient: str, message: bytes) -> str:
        """Hand one message over; return the server's reply. Raise ``DeliveryError``."""
        ...

    async def aclose(self) -> None: ...


class Clock(Protocol):
    def __call__(self) -> datetime:
        """The current time, timezone-aware."""
        ...
