"""Open-Meteo current weather by coordinates: the keyless fallback provider.

Note the licence: free for non-commercial use only (CC BY 4.0 data); a newsroom
needs a paid plan or a KMA key. Open-Meteo has no haze or yellow-dust codes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp

from feedservice.adapters.apiclient import FAILURES, describe, get
from feedservice.conditions import OPEN_METEO
from feedservice.errors import WeatherError
from feedservice.model import Observation
from feedservice.stations import STATIONS

DEFAULT_URL = "https://api.open-meteo.com/v1/forecast"


class OpenMeteoProvider:
    name = "open-meteo"

    def __init__(
        self, *, base_url: str | None = None, timeout: float = 10.0, session: aiohttp.ClientSession | None = None
    ) -> None:
        self._url = base_url or DEFAULT_URL
        self._timeout = timeout
        self._session = session

    async def observe(self, station_ids: Sequence[int], now: datetime) -> list[Observation]:
        stations = [STATIONS[i] for i in station_ids if i in STATIONS]
        params = {
            "latitude": ",".join(f"{s.lat}" for s in stations),
            "longitude": ",".join(f"{s.lon}" for s in stations),
            "current": "temperature_2m,weather_code",
            "timezone": "Asia/Seoul",
        }
        try:
            reply = await get(self._url, params, session=self._session, timeout=self._timeout)
        except FAILURES as exc:
            raise WeatherError(self.name, describe(exc)) from None
        if reply.status != 200:
            raise WeatherError(self.name, f"HTTP {reply.status}: {reply.text()[:120]!r}")
        try:
            data: Any = json.loads(reply.body)
        except ValueError:
            raise WeatherError(self.name, "response is not JSON") from None
        items = data if isinstance(data, list) else [data]
        if len(items) != len(stations):
            raise WeatherError(self.name, f"expected {len(stations)} locations, got {len(items)}")
        out = []
        for station, item in zip(stations, items, strict=True):
            try:
                cur = item["current"]
                tz = ZoneInfo(item.get("timezone") or "Asia/Seoul")
                observed = datetime.fromisoformat(cur["time"]).replace(tzinfo=tz)
                temp = cur.get("temperature_2m")
                code = cur.get("weather_code")
            except (KeyError, TypeError, ValueError) as exc:
                raise WeatherError(self.name, f"malformed response: {exc!r}") from None
            out.append(
                Observation(
                    station_id=station.id,
                    station_name=station.name,
                    observed_at=observed,
                    temperature=float(temp) if isinstance(temp, int | float) else None,
                    condition=OPEN_METEO.get(int(code)) if isinstance(code, int | float) else None,
                    provider=self.name,
                )
            )
        return out
