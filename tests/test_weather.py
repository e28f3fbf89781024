"""Weather: KMA kma_sfctm2 and Open-Meteo over a real local HTTP server, conditions, the block's form."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from feedservice.adapters.kma import KmaSurfaceProvider, parse_sfctm2
from feedservice.adapters.openmeteo import OpenMeteoProvider
from feedservice.adapters.store import open_store
from feedservice.conditions import condition_word, sky_word
from feedservice.config import Secret
from feedservice.errors import WeatherError
from feedservice.services.weather import format_observation, national_summary, refresh_weather, weather_block
from feedservice.stations import DEFAULT_STATION_IDS
from tests.conftest import FeedServer, Served, shared_fixture

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
def test_phenomena_take_precedence(kw: dict, word: str) -> None:  # type: ignore[type-arg]
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
    provider = KmaSurfaceProvider(Secret("k"), base_url=feed_server.url("/api/typ01/url/kma_sfctm2.php"))
    obs = asyncio.run(provider.observe(DEFAULT_STATION_IDS, datetime(2025, 8, 1, 6, 10, tzinfo=UTC)))
    assert len(obs) == 16
    path, _ = feed_server.requests[-1]
    assert "tm=202508011500" in path and "authKey=k" in path and "stn=0" in path


def test_kma_http_errors_and_missing_key(feed_server: FeedServer) -> None:
    body = shared_fixture("weather", "asos_error_key_not_registered_http403_sample.json").read_bytes()
    feed_server.files["/kma"] = Served(body, "application/json", status=403)
    provider = KmaSurfaceProvider(Secret("k"), base_url=feed_server.url("/kma"))
    with pytest.raises(WeatherError, match="HTTP 403"):
        asyncio.run(provider.observe([108], datetime.now(UTC)))
    with pytest.raises(WeatherError, match="no API key"):
        asyncio.run(KmaSurfaceProvider(None, base_url=feed_server.url("/kma")).observe([108], datetime.now(UTC)))


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

    async def observe(self, station_ids, now):  # type: ignore[no-untyped-def]
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
