"""A deterministic solar-day site profile: PV surplus charges around midday, loads discharge at night."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["SolarDayProfile"]

DAY_S = 86400.0


@dataclass(frozen=True)
class SolarDayProfile:
    """Battery current the site wants over a day (A, > 0 charging), with seeded clouds and noise.

    `demand(t)` is the total current at the battery terminals (all packs together); `t` is simulated
    seconds since the start of the run. One clock day (24 h) lasts `day_length_s` simulated seconds,
    so a short `day_length_s` compresses the day; `start_s` is the clock time of day at t = 0 (s after
    midnight) and `sunrise_h`/`sunset_h` are clock hours.
    """

    pv_peak_a: float
    base_load_a: float
    evening_load_a: float
    day_length_s: float = DAY_S
    seed: int = 0
    start_s: float = 8 * 3600.0
    sunrise_h: float = 6.0
    sunset_h: float = 20.0
    cloudiness: float = 0.5
    _days: dict[int, tuple[list[float], list[float]]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @classmethod
    def for_capacity(
        cls,
        capacity_ah: float,
        packs: int = 1,
        *,
        seed: int = 0,
        day_length_s: float = DAY_S,
        start_s: float = 8 * 3600.0,
    ) -> SolarDayProfile:
        """A profile that cycles roughly 70 % of `packs` × `capacity_ah` per day (tuned by the tests)."""
        if capacity_ah <= 0 or packs < 1:
            raise ValueError(f"capacity_ah must be > 0 and packs >= 1, got {capacity_ah}, {packs}")
        q = capacity_ah * packs
        # C-rates chosen so the night (~14 h of base + evening load) drains ~0.68 of capacity and the
        # day's PV covers that with ~0.1 to spare, so the pack usually reaches full in the afternoon.
        return cls(
            pv_peak_a=0.17 * q,
            base_load_a=0.029 * q,
            evening_load_a=0.095 * q,
            day_length_s=day_length_s,
            seed=seed,
            start_s=start_s,
        )

    def demand(self, t: float) -> float:
        """Battery current the site wants at simulated time t (A, > 0 charging)."""
        clock = self.start_s + t * (DAY_S / self.day_length_s)
        day = math.floor(clock / DAY_S)
        h = (clock - day * DAY_S) / 3600.0
        pv_f, load_f = self._day(day)
        m = h * 60.0
        i = min(int(m), 1439)
        frac = m - i
        pv_k = pv_f[i] + (pv_f[i + 1] - pv_f[i]) * frac
        load_k = load_f[i] + (load_f[i + 1] - load_f[i]) * frac
        return self.pv_peak_a * self._sun(h) * pv_k - self._load(h) * load_k

    def __post_init__(self) -> None:
        if self.day_length_s <= 0:
            raise ValueError(f"day_length_s must be > 0, got {self.day_length_s}")
        if not 0.0 <= self.sunrise_h < self.sunset_h <= 24.0:
            raise ValueError(f"need 0 <= sunrise_h < sunset_h <= 24, got {self.sunrise_h}, {self.sunset_h}")
        if not 0.0 <= self.cloudiness <= 1.0:
            raise ValueError(f"cloudiness must be within [0, 1], got {self.cloudiness}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")

    def _sun(self, h: float) -> float:
        if not self.sunrise_h < h < self.sunset_h:
            return 0.0
        return math.sin(math.pi * (h - self.sunrise_h) / (self.sunset_h - self.sunrise_h)) ** 2

    def _load(self, h: float) -> float:
        return self.base_load_a + self.evening_load_a * (_bump(h, 17.0, 23.0) + 0.3 * _bump(h, 6.0, 9.0))

    def _day(self, day: int) -> tuple[list[float], list[float]]:
        """Per-minute PV factor (clouds × noise) and load factor for one clock day; seeded by (seed, day)."""
        cached = self._days.get(day)
        if cached is not None:
            return cached
        rng = np.random.default_rng([self.seed, day % 2**32])
        minutes = np.arange(1441, dtype=np.float64)
        pv = np.ones(1441)
        for _ in range(int(rng.integers(0, 1 + round(6 * self.cloudiness)))):
            centre = rng.uniform(self.sunrise_h, self.sunset_h) * 60.0
            width = rng.uniform(5.0, 20.0)
            depth = rng.uniform(0.3, 0.8)
            pv *= 1.0 - depth * np.exp(-0.5 * ((minutes - centre) / width) ** 2)
        pv *= 1.0 + 0.05 * self.cloudiness * np.clip(rng.standard_normal(1441), -3.0, 3.0)
        load = 1.0 + 0.08 * np.clip(rng.standard_normal(1441), -3.0, 3.0)
        entry = (pv.tolist(), load.tolist())
        if len(self._days) >= 8:
            self._days.pop(next(iter(self._days)))
        self._days[day] = entry
        return entry


def _bump(h: float, start: float, end: float) -> float:
    """Raised-cosine bump, 0 outside [start, end], 1 at the middle; integral = (end - start) / 2."""
    if not start < h < end:
        return 0.0
    return 0.5 - 0.5 * math.cos(2.0 * math.pi * (h - start) / (end - start))
