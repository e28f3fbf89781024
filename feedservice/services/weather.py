"""Weather: refresh observations through the providers in turn, and build the digest's block.

A weather problem never blocks the digest: ``weather_block`` falls back to the last
stored observation (shown with its time) and otherwise returns an empty block with a
one-line notice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from feedservice.errors import WeatherError
from feedservice.model import Forecast, Observation, WeatherBlock
from feedservice.ports import ForecastProvider, WeatherProvider, WeatherStore
from feedservice.stations import STATIONS

log = logging.getLogger(__name__)

CREDIT = "기상청 제공"

# An edition composed this long after its window ended shows the weather of its own morning.
LATE_EDITION = timedelta(minutes=30)


@dataclass
class RefreshReport:
    provider: str | None
    stations: int
    errors: list[str]

    def summary(self) -> str:
        if self.provider is None:
            return "no provider answered: " + "; ".join(self.errors)
        return f"{self.stations} stations from {self.provider}" + (
            f" ({'; '.join(self.errors)})" if self.errors else ""
        )


async def refresh_weather(
    store: WeatherStore,
    providers: Sequence[WeatherProvider],
    station_ids: Sequence[int],
    now: datetime,
    *,
    timeout: float = 20.0,
) -> RefreshReport:
    """Ask each provider in turn until one answers; store what it returned."""
    errors: list[str] = []
    for provider in providers:
        try:
            obs = await asyncio.wait_for(provider.observe(station_ids, now), timeout)
        except WeatherError as exc:
            errors.append(str(exc))
            log.warning("%s", exc, extra={"provider": provider.name})
            continue
        except TimeoutError:
            errors.append(f"weather provider {provider.name}: no answer within {timeout:g} s")
            log.warning("%s", errors[-1], extra={"provider": provider.name})
            continue
        await asyncio.to_thread(store.save_observations, obs, now)
        missing = set(station_ids) - {o.station_id for o in obs}
        if missing:
            errors.append(f"weather provider {provider.name}: no data for stations {sorted(missing)}")
        return RefreshReport(provider.name, len(obs), errors)
    return RefreshReport(None, 0, errors)


def weather_block(
    store: WeatherStore, station_ids: Sequence[int], now: datetime, max_age: timedelta, *, as_of: bool = False
) -> WeatherBlock:
    """The stored observations in configured order; stale ones keep their time for display.

    With ``as_of``, only observations made by ``now`` count (a late edition shows its own morning).
    """
    latest = store.latest_observations(station_ids, before=now if as_of else None)
    obs = tuple(latest[i] for i in station_ids if i in latest)
    if not obs:
        return WeatherBlock((), notice="날씨 정보를 가져오지 못했습니다.")
    stale = [o for o in obs if now - o.observed_at > max_age]
    notice = None
    if len(obs) < len(station_ids):
        names = ", ".join(STATIONS[i].name if i in STATIONS else str(i) for i in station_ids if i not in latest)
        notice = f"일부 지점 관측 없음: {names}"
    return WeatherBlock(obs, notice=notice, stale_before=now - max_age if stale else None)


async def with_forecast(
    block: WeatherBlock, provider: ForecastProvider, station_ids: Sequence[int], now: datetime, *, timeout: float
) -> WeatherBlock:
    """The block with today's forecasts added; on any failure the block as it was (logged)."""
    try:
        forecasts = await asyncio.wait_for(provider.forecast(station_ids, now), timeout)
    except (WeatherError, TimeoutError) as exc:
        log.warning("forecast skipped: %s", exc or f"no answer within {timeout:g} s")
        return block
    return replace(block, forecasts=tuple(forecasts))


async def weather_for_edition(
    store: WeatherStore,
    providers: Sequence[WeatherProvider],
    station_ids: Sequence[int],
    clock: Callable[[], datetime],
    *,
    max_age: timedelta,
    timeout: float,
    forecast: ForecastProvider | None = None,
    edition_end: datetime | None = None,
) -> WeatherBlock:
    """A fresh stored observation if there is one, else one refresh, else the stale or empty block.

    An edition sent late (past its send time by more than half an hour) shows the weather of
    its own morning: what was stored by then, without asking the providers. With no provider
    the block is empty. ``timeout`` is one provider's; the refresh as a whole gets twice that, so
    a weather problem never holds the digest up for long.
    """
    if not providers:
        return WeatherBlock(())
    if edition_end is not None and clock() - edition_end > LATE_EDITION:
        return weather_block(store, station_ids, edition_end, max_age, as_of=True)
    block = weather_block(store, station_ids, clock(), max_age)
    if not block.observations or block.stale_before is not None:
        try:
            await asyncio.wait_for(
                refresh_weather(store, providers, station_ids, clock(), timeout=timeout * 2), timeout * 2
            )
        except TimeoutError:
            log.warning("weather refresh gave no answer within %g s; using what is stored", timeout * 2)
        block = weather_block(store, station_ids, clock(), max_age)
    if forecast is not None:
        block = await with_forecast(block, forecast, station_ids, clock(), timeout=timeout * 2)
    return block


def format_forecast(f: Forecast) -> str:
    """ "최저 25℃ · 최고 32℃ · 강수확률 20%", leaving out what the forecast did not give."""
    parts = []
    if f.low is not None:
        parts.append(f"최저 {f.low:.0f}℃")
    if f.high is not None:
        parts.append(f"최고 {f.high:.0f}℃")
    if f.rain_chance is not None:
        parts.append(f"강수확률 {f.rain_chance}%")
    return " · ".join(parts)


def format_observation(o: Observation) -> str:
    """The widget's form: "구름조금 서울 29.1℃"; a missing value reads 관측 없음, never 0℃."""
    temp = f"{o.temperature:.1f}℃" if o.temperature is not None else "관측 없음"
    return " ".join(x for x in (o.condition, o.station_name, temp) if x)


def is_stale(block: WeatherBlock, o: Observation) -> bool:
    return block.stale_before is not None and o.observed_at < block.stale_before


def national_summary(block: WeatherBlock) -> str | None:
    """One line: the hottest and coldest stations, e.g. "최고 경주시 32.9℃ · 최저 강화 26.9℃"."""
    known = [o for o in block.observations if o.temperature is not None]
    if not known:
        return None
    hot = max(known, key=lambda o: o.temperature or 0.0)
    cold = min(known, key=lambda o: o.temperature or 0.0)
    return f"최고 {hot.station_name} {hot.temperature:.1f}℃ · 최저 {cold.station_name} {cold.temperature:.1f}℃"


def observed_label(block: WeatherBlock, tz: ZoneInfo) -> str | None:
    if not block.observations:
        return None
    newest = max(o.observed_at for o in block.observations).astimezone(tz)
    return newest.strftime("%m월 %d일 %H시 기준")
