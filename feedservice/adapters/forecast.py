"""data.go.kr 기상청 단기예보 (``getVilageFcst``) → today's low, high and rain chance per station.

The API is addressed by KMA's 5 km Lambert conformal conic grid (nx, ny); ``to_grid``
converts a station's latitude/longitude with the projection KMA documents for it
(earth radius 6371.00877 km, standard parallels 30° and 60°, origin 38° N 126° E at
grid point 43, 136). TMN comes at 06:00 and TMX at 15:00; POP is hourly.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import aiohttp
from pydantic import SecretStr

from feedservice.adapters.apiclient import FAILURES, describe, open_session, request
from feedservice.adapters.asos import NO_KEY, check_envelope
from feedservice.errors import WeatherError
from feedservice.model import Forecast
from feedservice.stations import STATIONS

DEFAULT_URL = "https://apis.data.go.kr/1360000/VilageFcstInfoService_2.0/getVilageFcst"
KST = ZoneInfo("Asia/Seoul")


def to_grid(lat: float, lon: float) -> tuple[int, int]:
    """KMA's forecast grid point (nx, ny) of a latitude/longitude (Lambert conformal conic)."""
    re_, grid = 6371.00877, 5.0
    slat1, slat2, olon, olat = map(math.radians, (30.0, 60.0, 126.0, 38.0))
    xo, yo = 43, 136
    r = re_ / grid
    sn = math.log(math.cos(slat1) / math.cos(slat2)) / math.log(
        math.tan(math.pi / 4 + slat2 / 2) / math.tan(math.pi / 4 + slat1 / 2)
    )
    sf = math.tan(math.pi / 4 + slat1 / 2) ** sn * math.cos(slat1) / sn
    ro = r * sf / math.tan(math.pi / 4 + olat / 2) ** sn
    ra = r * sf / math.tan(math.pi / 4 + math.radians(lat) / 2) ** sn
    theta = math.radians(lon) - olon
    theta = (theta + math.pi) % (2 * math.pi) - math.pi
    theta *= sn
    return math.floor(ra * math.sin(theta) + xo + 0.5), math.floor(ro - ra * math.cos(theta) + yo + 0.5)


def base_for(now: datetime) -> tuple[str, str]:
    """The issue to ask for: today's 02:00 (it carries today's TMN and TMX), else yesterday's 23:00."""
    local = now.astimezone(KST)
    if local.hour > 2 or (local.hour == 2 and local.minute >= 15):
        return local.strftime("%Y%m%d"), "0200"
    return (local.date() - timedelta(days=1)).strftime("%Y%m%d"), "2300"


def summarize(items: list[dict[str, object]], day: date) -> tuple[float | None, float | None, int | None]:
    """(low, high, highest rain chance from 06 to 21 h) for ``day`` from forecast items."""
    target = day.strftime("%Y%m%d")
    low = high = None
    pops: list[int] = []
    for item in items:
        if item.get("fcstDate") != target:
            continue
        category, value, hour = item.get("category"), str(item.get("fcstValue", "")), str(item.get("fcstTime", ""))
        try:
            if category == "TMN":
                low = float(value)
            elif category == "TMX":
                high = float(value)
            elif category == "POP" and "0600" <= hour <= "2100":
                pops.append(int(float(value)))
        except ValueError:
            continue
    return low, high, max(pops) if pops else None


class VilageForecastProvider:
    name = "vilage-fcst"

    def __init__(self, api_key: SecretStr | None, *, base_url: str | None = None, timeout: float = 10.0) -> None:
        self._key = api_key
        self._url = base_url or DEFAULT_URL
        self._timeout = timeout

    async def forecast(self, station_ids: Sequence[int], now: datetime) -> list[Forecast]:
        if not self._key:
            raise WeatherError(self.name, NO_KEY)
        grids: dict[tuple[int, int], list[int]] = {}
        for sid in station_ids:
            if sid in STATIONS:
                grids.setdefault(to_grid(STATIONS[sid].lat, STATIONS[sid].lon), []).append(sid)
        base_date, base_time = base_for(now)
        today = now.astimezone(KST).date()
        async with open_session(self._timeout) as session:
            results = await asyncio.gather(
                *(self._one(session, grid, base_date, base_time) for grid in grids), return_exceptions=True
            )
        out: list[Forecast] = []
        errors = []
        for sids, result in zip(grids.values(), results, strict=True):
            if isinstance(result, BaseException):
                errors.append(result)
                continue
            low, high, pop = summarize(result, today)
            out.extend(Forecast(sid, today, low, high, pop) for sid in sids)
        if not out and errors:
            raise errors[0] if isinstance(errors[0], WeatherError) else WeatherError(self.name, str(errors[0]))
        return out

    async def _one(
        self, session: aiohttp.ClientSession, grid: tuple[int, int], base_date: str, base_time: str
    ) -> list[dict[str, object]]:
        assert self._key is not None
        params = {
            "serviceKey": self._key.get_secret_value(),
            "pageNo": "1",
            "numOfRows": "1000",
            "dataType": "JSON",
            "base_date": base_date,
            "base_time": base_time,
            "nx": str(grid[0]),
            "ny": str(grid[1]),
        }
        try:
            reply = await request(session, "GET", self._url, params=params)
        except FAILURES as exc:
            raise WeatherError(self.name, describe(exc)) from None
        doc = check_envelope(reply.text(), self.name)
        try:
            items = doc["response"]["body"]["items"]["item"]
        except (KeyError, TypeError):
            raise WeatherError(self.name, "response without items") from None
        return [i for i in items if isinstance(i, dict)]
