"""KMA API Hub surface observations (``kma_sfctm2.php``): fixed-width text → Observations.

One call returns the latest hour for every station. The layout (46 whitespace-separated
columns, ``#`` comment lines, ``#START7777`` … ``#7777END``) is described in
shared/fixtures/weather/README.md §2a. Output is decoded as CP949 (a superset of EUC-KR),
as public clients do.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

import aiohttp
from pydantic import SecretStr

from feedservice.adapters.apiclient import FAILURES, describe, get
from feedservice.conditions import condition_word
from feedservice.errors import WeatherError
from feedservice.model import Observation
from feedservice.stations import STATIONS

DEFAULT_URL = "https://apihub.kma.go.kr/api/typ01/url/kma_sfctm2.php"
KST = ZoneInfo("Asia/Seoul")

COLUMNS = (
    "TM STN WD WS GST_WD GST_WS GST_TM PA PS PT PR TA TD HM PV RN RN_DAY RN_JUN RN_INT SD_HR3 SD_DAY SD_TOT "
    "WC WP WW CA_TOT CA_MID CH_MIN CT CT_TOP CT_MID CT_LOW VS SS SI ST_GD TS TE_005 TE_01 TE_02 TE_03 ST_SEA "
    "WH BF IR IX"
).split()


def _number(value: str) -> float | None:
    """A KMA number, or None for its missing markers (-9, -9.0, -99.0, '-')."""
    if value in ("-", ""):
        return None
    try:
        x = float(value)
    except ValueError:
        return None
    return None if x in (-9.0, -99.0, -999.0) else x


def _temperature(value: str) -> float | None:
    # KMA prints -99.0 for a missing temperature; AWS help says values ≤ -50 are missing or errors.
    # -9.0 stays a real reading here: it is a common winter temperature.
    try:
        x = float(value)
    except ValueError:
        return None
    return None if x <= -50 else x


def parse_sfctm2(text: str, *, provider: str = "kma") -> list[Observation]:
    """Parse a kma_sfctm2 response body; raise ``WeatherError`` when it is not one."""
    if "#START7777" not in text:
        snippet = " ".join(text.split())[:120]
        raise WeatherError(provider, f"not a kma_sfctm2 response: {snippet!r}")
    out: list[Observation] = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != len(COLUMNS):
            raise WeatherError(provider, f"row has {len(fields)} columns, expected {len(COLUMNS)}: {line[:60]!r}")
        row = dict(zip(COLUMNS, fields, strict=True))
        try:
            observed = datetime.strptime(row["TM"], "%Y%m%d%H%M").replace(tzinfo=KST)
            stn = int(row["STN"])
        except ValueError:
            raise WeatherError(provider, f"bad time or station in row {line[:40]!r}") from None
        cloud = _number(row["CA_TOT"])
        wc = _number(row["WC"])
        vs = _number(row["VS"])
        humidity = _number(row["HM"])
        station = STATIONS.get(stn)
        out.append(
            Observation(
                station_id=stn,
                station_name=station.name if station else str(stn),
                observed_at=observed,
                temperature=_temperature(row["TA"]),
                condition=condition_word(
                    cloud_tenths=int(cloud) if cloud is not None else None,
                    present_weather=int(wc) if wc is not None else None,
                    rain_mm=_number(row["RN"]),
                    visibility_km=vs / 100 if vs is not None else None,
                    humidity=humidity,
                ),
                humidity=humidity,
                cloud_tenths=int(cloud) if cloud is not None else None,
                provider=provider,
            )
        )
    return out


class KmaSurfaceProvider:
    """Current hourly observations for all stations in one call to API Hub."""

    name = "kma"

    def __init__(
        self,
        api_key: SecretStr | None,
        *,
        base_url: str | None = None,
        timeout: float = 10.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._key = api_key
        self._url = base_url or DEFAULT_URL
        self._session = session
        self._timeout = timeout

    async def observe(self, station_ids: Sequence[int], now: datetime) -> list[Observation]:
        if not self._key:
            raise WeatherError(self.name, "no API key: set the environment variable named by [weather] api_key_env")
        params = {
            "tm": now.astimezone(KST).strftime("%Y%m%d%H00"),
            "stn": "0",
            "help": "0",
            "authKey": self._key.get_secret_value(),
        }
        try:
            reply = await get(self._url, params, session=self._session, timeout=self._timeout)
        except FAILURES as exc:
            raise WeatherError(self.name, describe(exc)) from None
        body = reply.text("cp949")
        if reply.status != 200:
            raise WeatherError(self.name, f"HTTP {reply.status}: {' '.join(body.split())[:120]}")
        wanted = set(station_ids)
        found = [o for o in parse_sfctm2(body, provider=self.name) if o.station_id in wanted]
        if not found:
            raise WeatherError(self.name, "none of the configured stations is in the response")
        return found
