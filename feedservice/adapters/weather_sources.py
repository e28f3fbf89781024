"""The configured weather providers (``[weather]``), built from config: the observing ones in the
order they are tried, and the forecast when ``forecast = true``."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import SecretStr

from feedservice.adapters.asos import AsosHourlyProvider
from feedservice.adapters.forecast import VilageForecastProvider
from feedservice.adapters.kma import KmaSurfaceProvider
from feedservice.adapters.openmeteo import OpenMeteoProvider
from feedservice.config import WeatherConfig
from feedservice.ports import ForecastProvider, WeatherProvider

__all__ = ["configured_forecast", "configured_providers"]

Secrets = Callable[[str], SecretStr | None]


def configured_providers(w: WeatherConfig, secret: Secrets) -> list[WeatherProvider]:
    """The provider, then the fallback (none with ``provider = "none"``); ``secret`` reads an
    environment variable (or its file)."""
    if w.provider == "none":
        return []
    if w.provider == "open-meteo":
        return [OpenMeteoProvider(base_url=w.base_url, timeout=w.timeout)]
    providers: list[WeatherProvider]
    if w.provider == "asos":
        providers = [AsosHourlyProvider(secret(w.data_go_kr_key_env), base_url=w.base_url, timeout=w.timeout)]
    else:
        providers = [KmaSurfaceProvider(secret(w.api_key_env), base_url=w.base_url, timeout=w.timeout)]
    if w.fallback == "open-meteo":
        providers.append(OpenMeteoProvider(base_url=w.fallback_base_url, timeout=w.timeout))
    return providers


def configured_forecast(w: WeatherConfig, secret: Secrets) -> ForecastProvider | None:
    """The KMA village forecast when ``[weather] forecast = true``, else None."""
    if not w.forecast:
        return None
    return VilageForecastProvider(secret(w.data_go_kr_key_env), base_url=w.forecast_base_url, timeout=w.timeout)
