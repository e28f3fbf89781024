"""data.go.kr 기상청 지상(종관, ASOS) 시간자료 (``getWthrDataList``, JSON) → Observations.

The service only serves up to the previous day (D-1), so it suits back-fill and history,
not "now": observations from it are usually older than ``max_age`` and are shown with
their time. One station per call (``stnIds``); the calls run concurrently.

Errors come in two envelopes: the gateway's ``OpenAPI_ServiceResponse`` (XML even when
JSON was asked for, or JSON with HTTP 403), and the service's ``response.header`` with a
``resultCode`` other than "00" (e.g. "03" NO_DATA). Both are checked before the body, and
the HTTP status alone is not trusted.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
from pydantic import SecretStr

from feedservice.adapters.apiclient import FAILURES, describe, open_session, request
from feedservice.conditions import condition_word
from feedservice.errors import WeatherError
from feedservice.model import Observation
from feedservice.stations import STATIONS

DEFAULT_URL = "https://apis.data.go.kr/1360000/AsosHourlyInfoService/getWthrDataList"
KST = ZoneInfo("Asia/Seoul")
NO_KEY = "no API key: set the environment variable named by [weather] data_go_kr_key_env"
_XML_REASON = re.compile(r"<returnAuthMsg>([^<]*)</returnAuthMsg>.*?<returnReasonCode>([^<]*)<", re.S)


def _num(value: Any) -> float | None:
    if value in (None, "", "-"):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def check_envelope(body: str, provider: str = "asos") -> dict[str, Any]:
    """The parsed JSON body, or ``WeatherError`` naming the gateway's or the service's error."""
    text = body.strip()
    if text.startswith("<"):
        m = _XML_REASON.search(text)
        reason = f"{m.group(1)} (code {m.group(2)})" if m else " ".join(text.split())[:120]
        raise WeatherError(provider, f"gateway error: {reason}")
    try:
        doc = json.loads(text)
    except ValueError:
        raise WeatherError(provider, f"not JSON: {' '.join(text.split())[:120]!r}") from None
    if not isinstance(doc, dict):
        raise WeatherError(provider, "unexpected JSON")
    if "OpenAPI_ServiceResponse" in doc:
        head = doc["OpenAPI_ServiceResponse"].get("cmmMsgHeader", {})
        raise WeatherError(
            provider,
            f"gateway error: {head.get('errMsg') or head.get('returnAuthMsg')} (code {head.get('returnReasonCode')})",
        )
    header = (doc.get("response") or {}).get("header") or {}
    code = str(header.get("resultCode", ""))
    if code != "00":
        raise WeatherError(provider, f"service error {code or '?'}: {header.get('resultMsg') or 'no message'}")
    return doc


def parse_items(doc: dict[str, Any], provider: str = "asos") -> list[Observation]:
    try:
        items = doc["response"]["body"]["items"]["item"]
    except (KeyError, TypeError):
        raise WeatherError(provider, "response without items") from None
    out = []
    for item in items if isinstance(items, list) else [items]:
        try:
            stn = int(item["stnId"])
            observed = datetime.strptime(item["tm"], "%Y-%m-%d %H:%M").replace(tzinfo=KST)
        except (KeyError, TypeError, ValueError):
            raise WeatherError(provider, f"bad item: {str(item)[:80]}") from None
        cloud = _num(item.get("dc10Tca"))
        vs = _num(item.get("vs"))
        hm = _num(item.get("hm"))
        ta = _num(item.get("ta"))
        station = STATIONS.get(stn)
        out.append(
            Observation(
                station_id=stn,
                station_name=station.name if station else str(item.get("stnNm") or stn),
                observed_at=observed,
                temperature=ta if ta is not None and ta > -50 else None,
                condition=condition_word(
                    cloud_tenths=int(cloud) if cloud is not None else None,
                    rain_mm=_num(item.get("rn")),
                    visibility_km=vs / 100 if vs is not None else None,
                    humidity=hm,
                ),
                humidity=hm,
                cloud_tenths=int(cloud) if cloud is not None else None,
                provider=provider,
            )
        )
    return out


def latest_available_hour(now: datetime) -> datetime:
    """The newest hour the service has: the previous day at 23:00 KST (it serves up to D-1)."""
    local = now.astimezone(KST)
    return datetime.combine(local.date() - timedelta(days=1), datetime.min.time(), KST).replace(hour=23)


class AsosHourlyProvider:
    name = "asos"

    def __init__(self, api_key: SecretStr | None, *, base_url: str | None = None, timeout: float = 10.0) -> None:
        self._key = api_key
        self._url = base_url or DEFAULT_URL
        self._timeout = timeout

    async def observe(self, station_ids: Sequence[int], now: datetime) -> list[Observation]:
        if not self._key:
            raise WeatherError(self.name, NO_KEY)
        hour = latest_available_hour(now)
        async with open_session(self._timeout) as session:
            results = await asyncio.gather(*(self._one(session, s, hour) for s in station_ids), return_exceptions=True)
        obs = [o for r in results if isinstance(r, list) for o in r]
        errors = [r for r in results if isinstance(r, BaseException)]
        if not obs:
            if errors and isinstance(errors[0], WeatherError):
                raise errors[0]
            raise WeatherError(self.name, f"no observations: {errors[0] if errors else 'empty response'}")
        return obs

    async def _one(self, session: aiohttp.ClientSession, station: int, hour: datetime) -> list[Observation]:
        assert self._key is not None
        params = {
            "serviceKey": self._key.get_secret_value(),
            "pageNo": "1",
            "numOfRows": "1",
            "dataType": "JSON",
            "dataCd": "ASOS",
            "dateCd": "HR",
            "startDt": hour.strftime("%Y%m%d"),
            "startHh": hour.strftime("%H"),
            "endDt": hour.strftime("%Y%m%d"),
            "endHh": hour.strftime("%H"),
            "stnIds": str(station),
        }
        try:
            reply = await request(session, "GET", self._url, params=params)
        except FAILURES as exc:
            raise WeatherError(self.name, describe(exc)) from None
        return parse_items(check_envelope(reply.text(), self.name), self.name)
