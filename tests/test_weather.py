"""Weather: KMA kma_sfctm2 and Open-Meteo over a real local HTTP server, conditions, the block's form."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Required, TypedDict

import pytest
from pydantic import SecretStr

from feedservice.adapters.asos import AsosHourlyProvider
from feedservice.adapters.forecast import VilageForecastProvider, to_grid
from feedservice.adapters.kma import KmaSurfaceProvider, parse_sfctm2
from feedservice.adapters.openmeteo import OpenMeteoProvider
from feedservice.adapters.store import open_store
from feedservice.adapters.websub import WebSubPublisher
from feedservice.bootstrap import App
from feedservice.conditions import condition_word, sky_word
from feedservice.errors import WeatherError
from feedservice.model import Observation, WeatherBlock
from feedservice.ports import WeatherProvider
from feedservice.services.weather import (
    format_forecast,
    format_observation,
    is_stale,
    national_summary,
    refresh_weather,
    weather_block,
    weather_for_edition,
)
from feedservice.stations import DEFAULT_STATION_IDS
from tests.conftest import FeedServer, Served, SilentServer, shared_fixture
from tests.fakes import FakeClock, FakeWeatherProvider, FakeWeatherStore

WIDGET = (
    "구름많음 동두천 27.7℃ / 흐림 강릉 29.4℃ / 구름조금 서울 29.1℃ / 구름조금 대전 30.2℃ / "
    "맑음 대구 32.3℃ / 연무 울산 29.4℃ / 맑음 광주 31.6℃ / 구름조금 부산 26.6℃ / 구름조금 고창 32.1℃ / "
    "맑음 제주 29.6℃ / 흐림 강화 26.9℃ / 구름많음 보은 28.2℃ / 구름조금 금산 30.3℃ / "
    "구름많음 강진군 30.8℃ / 구름조금 경주시 32.9℃ / 구름조금 거제 28.1℃"
)


def test_sfctm2_sample_gives_the_widget_line() -> None:
    text = shared_fixture("weather", "apihub_kma_sfctm2_sample.txt").read_text(encoding="utf-8")
    obs = parse_sfctm2(text)
    assert [o.station_id for o in obs] == list(DEFAULT_STATION_IDS)
    assert " / ".join(format_observation(o) for o in obs) == WIDGET
    assert obs[0].observed_at == datetime(2025, 8, 1, 6, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("tenths", "word"),
    [
        (0, "맑음"),
        (2, "맑음"),
        (3, "구름조금"),
        (5, "구름조금"),
        (6, "구름많음"),
        (8, "구름많음"),
        (9, "흐림"),
        (10, "흐림"),
        (None, None),
        (11, None),
    ],
)
def test_sky_classes(tenths: int | None, word: str | None) -> None:
    assert sky_word(tenths) == word


class _Readings(TypedDict, total=False):
    """A station's readings, as ``condition_word`` takes them."""

    cloud_tenths: Required[int | None]
    present_weather: int | None
    rain_mm: float | None
    visibility_km: float | None
    humidity: float | None


@pytest.mark.parametrize(
    ("kw", "word"),
    [
        ({"cloud_tenths": 2, "present_weather": 61}, "비"),
        ({"cloud_tenths": 2, "present_weather": 81}, "소나기"),
        ({"cloud_tenths": 9, "present_weather": 71}, "눈"),
        ({"cloud_tenths": 4, "present_weather": 5}, "연무"),
        ({"cloud_tenths": 4, "present_weather": 10}, "박무"),
        ({"cloud_tenths": 4, "present_weather": 45}, "안개"),
        ({"cloud_tenths": 4, "present_weather": 7}, "황사"),
        ({"cloud_tenths": 4, "present_weather": 21}, "구름조금"),  # past-hour rain: keep the sky
        ({"cloud_tenths": 4, "rain_mm": 0.5}, "비"),  # unmanned station, no WC
        ({"cloud_tenths": 4, "visibility_km": 6.5, "humidity": 62}, "연무"),
        ({"cloud_tenths": 4, "visibility_km": 6.5, "humidity": 85}, "박무"),
        ({"cloud_tenths": 4, "visibility_km": 0.5, "humidity": 95}, "안개"),
        ({"cloud_tenths": 4, "visibility_km": 20, "humidity": 62}, "구름조금"),
    ],
)
def test_phenomena_take_precedence(kw: _Readings, word: str) -> None:
    assert condition_word(**kw) == word


def test_missing_values_are_not_zero() -> None:
    row = (
        "202608031500  90   2  2.1  -9 -9.0   -9 1010.1 1012.1  7  -0.2 -99.0  25.6  85.0  32.8   -9.0   -9.0"
        "   -9.0   -9.0   -9.0   -9.0   -9.0 -9 -9 -                        -9  -9    4 -         -9  -9  -9"
        "  3300  0.0  1.20 -9  36.6 -99.0 -99.0 -99.0 -99.0  -9 -9.0 -9  3 -9"
    )
    [o] = parse_sfctm2(f"#START7777\n{row}\n#7777END\n")
    assert o.temperature is None and o.condition is None
    assert format_observation(o).endswith("관측 없음")
    assert "0.0℃" not in format_observation(o)


def test_error_envelopes_and_garbage_are_weather_errors() -> None:
    with pytest.raises(WeatherError):
        parse_sfctm2('{"OpenAPI_ServiceResponse":{"cmmMsgHeader":{"errMsg":"SERVICE ERROR"}}}')
    with pytest.raises(WeatherError):
        parse_sfctm2("#START7777\n202608031500 90 2\n#7777END\n")


def test_kma_provider_over_http(feed_server: FeedServer) -> None:
    sample = shared_fixture("weather", "apihub_kma_sfctm2_sample.txt").read_bytes()
    feed_server.files["/api/typ01/url/kma_sfctm2.php"] = Served(sample.decode().encode("cp949"), "text/plain")
    provider = KmaSurfaceProvider(SecretStr("k"), base_url=feed_server.url("/api/typ01/url/kma_sfctm2.php"))
    obs = asyncio.run(provider.observe(DEFAULT_STATION_IDS, datetime(2025, 8, 1, 6, 10, tzinfo=UTC)))
    assert len(obs) == 16
    path, _ = feed_server.requests[-1]
    assert "tm=202508011500" in path and "authKey=k" in path and "stn=0" in path


def test_kma_http_errors_and_missing_key(feed_server: FeedServer) -> None:
    body = shared_fixture("weather", "asos_error_key_not_registered_http403_sample.json").read_bytes()
    feed_server.files["/kma"] = Served(body, "application/json", status=403)
    provider = KmaSurfaceProvider(SecretStr("k"), base_url=feed_server.url("/kma"))
    with pytest.raises(WeatherError, match="HTTP 403"):
        asyncio.run(provider.observe([108], datetime.now(UTC)))
    with pytest.raises(WeatherError, match="no API key"):
        asyncio.run(KmaSurfaceProvider(None, base_url=feed_server.url("/kma")).observe([108], datetime.now(UTC)))


def test_providers_and_the_hub_follow_no_redirect(feed_server: FeedServer) -> None:
    """The configured host is trusted, where it redirects to is not (aiohttp follows redirects
    unless told not to): a 3xx is the provider's failure and its target is never asked."""
    sample = shared_fixture("weather", "apihub_kma_sfctm2_sample.txt").read_bytes()
    feed_server.files["/elsewhere"] = Served(sample.decode().encode("cp949"), "text/plain")
    for path, status in (("/moved", 302), ("/hub-moved", 307)):
        feed_server.files[path] = Served(b"", "text/plain", status=status, headers={"Location": "/elsewhere"})
    now = datetime(2025, 8, 1, 6, 10, tzinfo=UTC)
    with pytest.raises(WeatherError, match="HTTP 302"):
        asyncio.run(KmaSurfaceProvider(SecretStr("k"), base_url=feed_server.url("/moved")).observe([108], now))
    with pytest.raises(WeatherError, match="HTTP 302"):
        asyncio.run(OpenMeteoProvider(base_url=feed_server.url("/moved")).observe([108], now))
    assert asyncio.run(WebSubPublisher(feed_server.url("/hub-moved")).publish(["https://f.kr/feeds/a.xml"])) is False
    assert [p for p, _ in feed_server.requests if p.startswith("/elsewhere")] == []


def test_a_hung_or_absent_weather_server_is_a_weather_error_in_time(silent_server: SilentServer) -> None:
    now = datetime(2025, 8, 1, 6, 10, tzinfo=UTC)
    hung = f"http://127.0.0.1:{silent_server.port}/kma"
    providers: list[WeatherProvider] = [
        KmaSurfaceProvider(SecretStr("k"), base_url=hung, timeout=0.5),
        OpenMeteoProvider(base_url=hung, timeout=0.5),
        AsosHourlyProvider(SecretStr("k"), base_url=hung, timeout=0.5),
        KmaSurfaceProvider(SecretStr("k"), base_url="http://127.0.0.1:9/kma", timeout=0.5),  # nothing listens
    ]
    for provider in providers:
        started = asyncio.run(_timed(provider.observe([108], now)))
        assert started < 5, provider
    assert asyncio.run(WebSubPublisher(hung, timeout=0.5).publish(["https://f.kr/feeds/a.xml"])) is False


async def _timed(call: Awaitable[object]) -> float:
    """Seconds until ``call`` failed with a WeatherError (anything else fails the test)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(WeatherError):
        await call
    return loop.time() - started


def test_open_meteo_by_coordinates(feed_server: FeedServer) -> None:
    one = json.loads(shared_fixture("weather", "openmeteo_current_sample.json").read_text(encoding="utf-8"))
    items = []
    for code, temp in [(0, 21.5), (3, 19.0), (61, 15.2)]:
        item = json.loads(json.dumps(one))
        item["current"]["weather_code"], item["current"]["temperature_2m"] = code, temp
        items.append(item)
    feed_server.files["/v1/forecast"] = Served(json.dumps(items).encode(), "application/json")
    provider = OpenMeteoProvider(base_url=feed_server.url("/v1/forecast"))
    obs = asyncio.run(provider.observe([98, 105, 108], datetime.now(UTC)))
    assert [format_observation(o) for o in obs] == ["맑음 동두천 21.5℃", "흐림 강릉 19.0℃", "비 서울 15.2℃"]


class _Failing:
    name = "broken"

    async def observe(self, station_ids: Sequence[int], now: datetime) -> list[Observation]:
        raise WeatherError(self.name, "HTTP 500")


def test_fallback_to_stored_then_notice(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'w.db'}")
    now = datetime(2025, 8, 1, 10, 0, tzinfo=UTC)  # 4 h after the sample's observation time
    # Nothing stored and every provider fails: the digest gets an empty block with a notice.
    report = asyncio.run(refresh_weather(store, [_Failing()], [108], now))
    assert report.provider is None and "HTTP 500" in report.errors[0]
    block = weather_block(store, [108], now, timedelta(hours=3))
    assert block.observations == () and block.notice
    # Once something is stored, it is used (and marked stale when old).
    text = shared_fixture("weather", "apihub_kma_sfctm2_sample.txt").read_text(encoding="utf-8")
    store.save_observations(parse_sfctm2(text), now)
    block = weather_block(store, list(DEFAULT_STATION_IDS), now, timedelta(hours=3))
    assert len(block.observations) == 16 and block.stale_before is not None
    assert national_summary(block) == "최고 경주시 32.9℃ · 최저 부산 26.6℃"
    store.close()


def _asos_by_station() -> dict[str, bytes]:
    lines = shared_fixture("weather", "asos_hourly_getWthrDataList_16stations.jsonl").read_text(encoding="utf-8")
    out = {}
    for line in lines.splitlines():
        doc = json.loads(line)
        out[doc["response"]["body"]["items"]["item"][0]["stnId"]] = line.encode()
    return out


def test_asos_provider_gives_the_widget_line(feed_server: FeedServer) -> None:
    by_station = _asos_by_station()
    feed_server.dynamic["/asos"] = lambda q: Served(by_station[q["stnIds"]], "application/json")
    provider = AsosHourlyProvider(SecretStr("k"), base_url=feed_server.url("/asos"))
    obs = asyncio.run(provider.observe(DEFAULT_STATION_IDS, datetime(2025, 8, 2, 0, 0, tzinfo=UTC)))
    by_id = {o.station_id: o for o in obs}
    assert " / ".join(format_observation(by_id[i]) for i in DEFAULT_STATION_IDS) == WIDGET
    paths = [p for p, _ in feed_server.requests]
    assert len(paths) == 16
    # It serves up to the previous day only: it is asked for 23:00 of the day before.
    assert all("startDt=20250801" in p and "startHh=23" in p and "dataType=JSON" in p for p in paths)


@pytest.mark.parametrize(
    ("fixture", "status", "message"),
    [
        ("asos_error_key_not_registered_http403_sample.json", 403, "SERVICE_KEY_IS_NOT_REGISTERED_ERROR"),
        ("asos_error_sample.xml", 200, "SERVICE_KEY_IS_NOT_REGISTERED_ERROR (code 30)"),
        ("asos_error_nodata_sample.json", 200, "service error 03: NO_DATA"),
    ],
)
def test_asos_error_envelopes(feed_server: FeedServer, fixture: str, status: int, message: str) -> None:
    body = shared_fixture("weather", fixture).read_bytes()
    feed_server.files["/asos"] = Served(body, "application/json", status=status)
    provider = AsosHourlyProvider(SecretStr("k"), base_url=feed_server.url("/asos"))
    with pytest.raises(WeatherError, match=re.escape(message)):
        asyncio.run(provider.observe([108], datetime(2025, 8, 2, tzinfo=UTC)))


def test_kma_grid_conversion() -> None:
    assert to_grid(37.57142, 126.9658) == (60, 127)  # 서울, as in KMA's examples
    assert to_grid(33.51411, 126.52969) == (53, 38)  # 제주


def test_forecast_low_high_and_rain_chance(feed_server: FeedServer) -> None:
    sample = shared_fixture("weather", "vilagefcst_getVilageFcst_sample.json").read_bytes()
    feed_server.files["/fcst"] = Served(sample, "application/json")
    provider = VilageForecastProvider(SecretStr("k"), base_url=feed_server.url("/fcst"))
    [f] = asyncio.run(provider.forecast([108], datetime(2025, 7, 31, 22, 0, tzinfo=UTC)))  # 07:00 KST
    assert (f.low, f.high, f.rain_chance) == (25.0, 32.0, 20)
    path, _ = feed_server.requests[-1]
    assert "nx=60" in path and "ny=127" in path and "base_date=20250801" in path and "base_time=0200" in path
    assert format_forecast(f) == "최저 25℃ · 최고 32℃ · 강수확률 20%"


def _app(tmp_path: Path, feed_server: FeedServer, extra: str, now: datetime, fallback: str = "none") -> App:
    from feedservice.bootstrap import make_app
    from feedservice.config import load_settings
    from tests.conftest import write_config

    cfg = write_config(tmp_path, weather_provider="kma", weather_extra=extra, fallback=fallback)
    return make_app(load_settings(cfg), clock=lambda: now)


def test_chain_kma_then_open_meteo_then_stored_then_notice(tmp_path: Path, feed_server: FeedServer) -> None:
    now = datetime(2025, 8, 1, 6, 10, tzinfo=UTC)
    one = json.loads(shared_fixture("weather", "openmeteo_current_sample.json").read_text(encoding="utf-8"))
    feed_server.files["/kma"] = Served(b"upstream error", "text/plain", status=500)
    feed_server.files["/om"] = Served(json.dumps([one] * 16).encode(), "application/json")
    extra = f'base_url = "{feed_server.url("/kma")}"\nfallback_base_url = "{feed_server.url("/om")}"\n'
    app = _app(tmp_path, feed_server, extra, now, fallback="open-meteo")
    try:
        report = asyncio.run(app.refresh_weather())
        assert report.provider == "open-meteo" and "HTTP 500" in report.errors[0]
        # Everything fails now: the stored observations are used (and marked when old) ...
        feed_server.files["/om"] = Served(b"{}", "application/json", status=503)
        later = now + timedelta(hours=5)
        app.clock = lambda: later
        block = asyncio.run(app.weather_for_digest())
        assert len(block.observations) == 16 and block.stale_before is not None
    finally:
        app.close()
    # ... and with nothing stored, the digest gets a one-line notice instead of the block.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    app = _app(fresh, feed_server, f'base_url = "{feed_server.url("/kma")}"', now)
    try:
        block = asyncio.run(app.weather_for_digest())
        assert block.observations == () and block.notice == "날씨 정보를 가져오지 못했습니다."
    finally:
        app.close()


def test_missing_station_is_named(tmp_path: Path, feed_server: FeedServer) -> None:
    text = shared_fixture("weather", "apihub_kma_sfctm2_sample.txt").read_text(encoding="utf-8")
    without_ulsan = "\n".join(line for line in text.splitlines() if " 152 " not in line[:20])
    feed_server.files["/kma"] = Served(without_ulsan.encode("cp949"), "text/plain")
    app = _app(
        tmp_path, feed_server, f'base_url = "{feed_server.url("/kma")}"', datetime(2025, 8, 1, 6, 10, tzinfo=UTC)
    )
    try:
        block = asyncio.run(app.weather_for_digest())
        assert len(block.observations) == 15 and block.notice == "일부 지점 관측 없음: 울산"
    finally:
        app.close()


def test_digest_block_carries_the_forecast(tmp_path: Path, feed_server: FeedServer) -> None:
    text = shared_fixture("weather", "apihub_kma_sfctm2_sample.txt").read_bytes()
    feed_server.files["/kma"] = Served(text, "text/plain")
    feed_server.files["/fcst"] = Served(
        shared_fixture("weather", "vilagefcst_getVilageFcst_sample.json").read_bytes(), "application/json"
    )
    extra = (
        f'base_url = "{feed_server.url("/kma")}"\nforecast = true\nforecast_base_url = "{feed_server.url("/fcst")}"\n'
    )
    app = _app(tmp_path, feed_server, extra, datetime(2025, 8, 1, 6, 10, tzinfo=UTC))
    try:
        from feedservice.services.digest import weather_context

        block = asyncio.run(app.weather_for_digest())
        ctx = weather_context(block, app.settings.site.tz)
        seoul = next(line for line in ctx["lines"] if "서울" in line["text"])
        assert seoul["text"] == "구름조금 서울 29.1℃" and seoul["forecast"] == "최저 25℃ · 최고 32℃ · 강수확률 20%"
    finally:
        app.close()


# -- the weather an edition shows (services/weather.py), on the in-memory fakes: no socket --------
SEOUL = 108
MORNING = datetime(2026, 11, 30, 6, 30, tzinfo=UTC)


def _seoul(at: datetime, temperature: float = 3.5, provider: str = "kma") -> Observation:
    return Observation(SEOUL, "서울", at, temperature, "맑음", provider=provider)


def _edition_weather(
    store: FakeWeatherStore,
    providers: list[FakeWeatherProvider],
    clock: FakeClock,
    *,
    timeout: float = 1.0,
    edition_end: datetime | None = None,
) -> WeatherBlock:
    max_age = timedelta(hours=3)
    edition = weather_for_edition(
        store, providers, [SEOUL], clock, max_age=max_age, timeout=timeout, edition_end=edition_end
    )
    return asyncio.run(edition)


def test_a_fresh_stored_observation_is_shown_without_asking_a_provider() -> None:
    store, clock = FakeWeatherStore(), FakeClock(MORNING)
    store.save_observations([_seoul(MORNING - timedelta(hours=1))], MORNING)
    kma = FakeWeatherProvider("kma", [_seoul(MORNING, 9.0)])
    block = _edition_weather(store, [kma], clock)
    assert kma.calls == 0 and [o.temperature for o in block.observations] == [3.5] and block.stale_before is None


def test_a_stale_observation_is_refreshed_from_the_first_provider_that_answers() -> None:
    store, clock = FakeWeatherStore(), FakeClock(MORNING)
    store.save_observations([_seoul(MORNING - timedelta(hours=5))], MORNING)
    kma = FakeWeatherProvider("kma", WeatherError("kma", "HTTP 500"))
    meteo = FakeWeatherProvider("open-meteo", [_seoul(MORNING, 9.0, "open-meteo")])
    block = _edition_weather(store, [kma, meteo], clock)
    assert (kma.calls, meteo.calls) == (1, 1)
    assert [(o.temperature, o.provider) for o in block.observations] == [(9.0, "open-meteo")]
    assert block.stale_before is None and len(store.saved[SEOUL]) == 2  # kept for the next edition


def test_when_every_provider_fails_the_stale_observation_is_shown_marked_stale() -> None:
    store, clock = FakeWeatherStore(), FakeClock(MORNING)
    old = _seoul(MORNING - timedelta(hours=5))
    store.save_observations([old], MORNING)
    block = _edition_weather(store, [FakeWeatherProvider("kma", WeatherError("kma", "HTTP 500"))], clock)
    assert block.observations == (old,) and is_stale(block, old)


def test_a_provider_that_hangs_holds_the_edition_up_for_twice_its_timeout_at_most() -> None:
    store, clock = FakeWeatherStore(), FakeClock(MORNING)
    hung = FakeWeatherProvider("kma", [_seoul(MORNING)], delay=30)
    started = time.monotonic()
    block = _edition_weather(store, [hung], clock, timeout=0.1)
    assert time.monotonic() - started < 1.5
    assert block.observations == () and block.notice == "날씨 정보를 가져오지 못했습니다."


def test_a_late_edition_shows_its_own_mornings_weather_and_asks_nobody() -> None:
    store, clock = FakeWeatherStore(), FakeClock(MORNING + timedelta(hours=6))
    before, after = _seoul(MORNING - timedelta(minutes=30), 1.0), _seoul(MORNING + timedelta(hours=5), 8.0)
    store.save_observations([before, after], after.observed_at)
    kma = FakeWeatherProvider("kma", [_seoul(clock.now, 9.0)])
    block = _edition_weather(store, [kma], clock, edition_end=MORNING)
    assert kma.calls == 0 and [o.temperature for o in block.observations] == [1.0]
