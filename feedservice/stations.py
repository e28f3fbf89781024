"""KMA ASOS stations known to feedservice: id → (Korean name, latitude, longitude).

The 16 stations of the newsroom's weather widget, in the widget's order, with the
names KMA uses (강진군 and 경주시 include their suffix). Coordinates are from
public KMA station lists; those of 259 and 283 are not verified against
stn_inf.php and only matter to the keyless coordinate-based provider.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Station:
    id: int
    name: str
    lat: float
    lon: float


WIDGET_STATIONS: tuple[Station, ...] = (
    Station(98, "동두천", 37.90188, 127.0607),
    Station(105, "강릉", 37.75147, 128.89099),
    Station(108, "서울", 37.57142, 126.9658),
    Station(133, "대전", 36.37198, 127.37211),
    Station(143, "대구", 35.87797, 128.65296),
    Station(152, "울산", 35.58237, 129.33469),
    Station(156, "광주", 35.17294, 126.89156),
    Station(159, "부산", 35.10468, 129.03203),
    Station(172, "고창", 35.34824, 126.599),
    Station(184, "제주", 33.51411, 126.52969),
    Station(201, "강화", 37.70739, 126.44634),
    Station(226, "보은", 36.48761, 127.73415),
    Station(238, "금산", 36.10563, 127.48175),
    Station(259, "강진군", 34.6289, 126.76715),
    Station(283, "경주시", 35.8174, 129.2009),
    Station(294, "거제", 34.88818, 128.60459),
)

STATIONS: dict[int, Station] = {s.id: s for s in WIDGET_STATIONS}
DEFAULT_STATION_IDS: tuple[int, ...] = tuple(s.id for s in WIDGET_STATIONS)
