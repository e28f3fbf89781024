"""Weather condition words, by KMA's rules. Pure functions over one table each.

Sources (see shared/fixtures/weather/README.md §3):
- Cloud amount in tenths → 4 classes 맑음 0–2 / 구름조금 3–5 / 구름많음 6–8 / 흐림 9–10
  (KMA's observation terms as reported by 서울신문; the newsroom's widget uses these four).
- WMO code table 4677 (present weather, the WC column of kma_sfctm2); Korean words from
  KMA's WP help text where it gives them (황사, 안개, 가랑비, 비, 눈, 소나기, 뇌전).
- Visibility rule (KMA, quoted by 한국경제 2010-12-01): < 1 km 안개; 1–10 km with RH ≥ 70 % 박무,
  with RH < 70 % 연무.
- WMO weather_code as used by Open-Meteo (WMO 4677 subset) for the keyless provider.
A phenomenon takes precedence over the sky word, as the widget shows "연무 울산".
"""

from __future__ import annotations

# (first code, last code, word) — WMO 4677 present weather ww, as reported in KMA's WC column.
WMO_4677: tuple[tuple[int, int, str | None], ...] = (
    (0, 3, None),  # cloud development only: use the sky word
    (4, 4, "연기"),
    (5, 5, "연무"),
    (6, 9, "황사"),
    (10, 10, "박무"),
    (11, 12, "안개"),
    (13, 13, "뇌전"),
    (14, 16, None),  # precipitation in sight, not at the station
    (17, 17, "뇌전"),
    (18, 19, None),  # squalls, funnel clouds: no word of their own in the widget
    (20, 29, None),  # a phenomenon in the past hour but not now: keep the sky word
    (30, 35, "황사"),
    (36, 39, "눈날림"),
    (40, 49, "안개"),
    (50, 59, "가랑비"),
    (60, 67, "비"),
    (68, 69, "비/눈"),
    (70, 79, "눈"),
    (80, 82, "소나기"),
    (83, 84, "비/눈"),
    (85, 86, "눈"),
    (87, 90, "우박"),
    (91, 99, "뇌전"),
)

# WMO weather_code as served by Open-Meteo (a subset of 4677 redefined for models).
OPEN_METEO: dict[int, str] = {
    0: "맑음",
    1: "구름조금",
    2: "구름많음",
    3: "흐림",
    45: "안개",
    48: "안개",
    51: "가랑비",
    53: "가랑비",
    55: "가랑비",
    56: "가랑비",
    57: "가랑비",
    61: "비",
    63: "비",
    65: "비",
    66: "비",
    67: "비",
    71: "눈",
    73: "눈",
    75: "눈",
    77: "눈",
    80: "소나기",
    81: "소나기",
    82: "소나기",
    85: "눈",
    86: "눈",
    95: "뇌전",
    96: "뇌전",
    99: "뇌전",
}

# Upper bound (inclusive) of each sky class in tenths of total cloud.
SKY_CLASSES: tuple[tuple[int, str], ...] = ((2, "맑음"), (5, "구름조금"), (8, "구름많음"), (10, "흐림"))


def sky_word(cloud_tenths: int | None) -> str | None:
    if cloud_tenths is None or not 0 <= cloud_tenths <= 10:
        return None
    return next(word for upper, word in SKY_CLASSES if cloud_tenths <= upper)


def present_weather_word(ww: int | None) -> str | None:
    if ww is None:
        return None
    for first, last, word in WMO_4677:
        if first <= ww <= last:
            return word
    return None


def visibility_word(visibility_km: float | None, humidity: float | None) -> str | None:
    if visibility_km is None:
        return None
    if visibility_km < 1:
        return "안개"
    if visibility_km < 10 and humidity is not None:
        return "박무" if humidity >= 70 else "연무"
    return None


def condition_word(
    *,
    cloud_tenths: int | None,
    present_weather: int | None = None,
    rain_mm: float | None = None,
    visibility_km: float | None = None,
    humidity: float | None = None,
) -> str | None:
    """The widget's word: a phenomenon first, then rain, then haze/mist/fog by visibility, then sky."""
    if word := present_weather_word(present_weather):
        return word
    if present_weather is None and rain_mm is not None and rain_mm > 0:
        return "비"
    if word := visibility_word(visibility_km, humidity):
        return word
    return sky_word(cloud_tenths)
