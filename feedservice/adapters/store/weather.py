"""Storage of weather observations (the last good ones are the fallback when providers fail)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa

from feedservice.adapters.store import schema as t
from feedservice.adapters.store._base import StoreBase
from feedservice.model import Observation


class WeatherStoreMixin(StoreBase):
    def save_observations(self, observations: Sequence[Observation], fetched_at: datetime) -> None:
        if not observations:
            return
        with self._tx("saving observations") as conn:
            for o in observations:
                values = {
                    "station_name": o.station_name,
                    "temperature": o.temperature,
                    "condition": o.condition,
                    "humidity": o.humidity,
                    "cloud_tenths": o.cloud_tenths,
                    "provider": o.provider,
                    "fetched_at": fetched_at,
                }
                stmt = self._insert(t.weather_observations).values(
                    station_id=o.station_id, observed_at=o.observed_at, **values
                )
                conn.execute(stmt.on_conflict_do_update(index_elements=["station_id", "observed_at"], set_=values))

    def latest_observations(self, station_ids: Sequence[int], before: datetime | None = None) -> dict[int, Observation]:
        """The newest stored observation per station, at or before ``before`` when given."""
        w = t.weather_observations
        q = sa.select(w.c.station_id, sa.func.max(w.c.observed_at).label("at")).where(
            w.c.station_id.in_(list(station_ids))
        )
        if before is not None:
            q = q.where(w.c.observed_at <= before)
        newest = q.group_by(w.c.station_id).subquery()
        q = sa.select(w).join(newest, sa.and_(w.c.station_id == newest.c.station_id, w.c.observed_at == newest.c.at))
        with self._tx("reading observations") as conn:
            return {
                r.station_id: Observation(
                    station_id=r.station_id,
                    station_name=r.station_name,
                    observed_at=r.observed_at,
                    temperature=r.temperature,
                    condition=r.condition,
                    humidity=r.humidity,
                    cloud_tenths=r.cloud_tenths,
                    provider=r.provider,
                )
                for r in conn.execute(q)
            }
