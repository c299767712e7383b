"""Runtime forecast: time to empty (to the reserve) and to full, from a learned hour-of-week load profile.

Pure: gateway time `t`, the local hour of week and the measured net battery current are passed in. The profile
holds the mean net current (A, > 0 charging) of each local hour of the week, learned online: when an hour
ends with at least half of it observed, its mean updates the hour's value by exponential averaging (weight
1/`weeks`; the first observation is taken as it is). An hour not learned yet borrows the mean of the same
hour on the days that are; until every hour of the day has been seen once, forecasts use the present current.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from bmsgw.model import Forecast

__all__ = [
    "HOURS_PER_WEEK",
    "MAX_GAP_S",
    "LoadProfile",
    "ProfileLearner",
    "forecast",
    "hour_of_week",
]

HOURS_PER_WEEK = 168
MAX_GAP_S = 60.0
"""A longer gap between two observations is not bridged (the gateway was stopped or had no data)."""
MIN_COVERAGE = 0.5
"""Fraction of an hour that must have been observed for it to update the profile."""
BASIS_PROFILE = "load_profile"
BASIS_PRESENT = "present_current"


def hour_of_week(local: datetime) -> int:
    """0 = Monday 00:00–01:00 local time, … 167 = Sunday 23:00–24:00."""
    return local.weekday() * 24 + local.hour


@dataclass(slots=True)
class LoadProfile:
    """Mean net current per local hour of week (NaN = not learned) and how many hours each has learned."""

    mean: list[float]
    count: list[int]

    @classmethod
    def empty(cls) -> LoadProfile:
        """A profile that has learned nothing."""
        return cls([math.nan] * HOURS_PER_WEEK, [0] * HOURS_PER_WEEK)

    @classmethod
    def restored(cls, mean: Sequence[float | None], count: Sequence[int]) -> LoadProfile:
        """From saved lists (None = not learned); ValueError when they are not 168 long or counts < 0."""
        if len(mean) != HOURS_PER_WEEK or len(count) != HOURS_PER_WEEK or min(count) < 0:
            raise ValueError(f"a load profile has {HOURS_PER_WEEK} hours with counts >= 0")
        values = [math.nan if m is None or not math.isfinite(m) else float(m) for m in mean]
        return cls(values, [c if math.isfinite(v) else 0 for c, v in zip(count, values, strict=True)])

    def learn(self, how: int, current: float, weight: float) -> None:
        """Fold one observed hour's mean current into hour `how` (weight of the new value: 0..1)."""
        old = self.mean[how]
        self.mean[how] = current if self.count[how] == 0 else old + weight * (current - old)
        self.count[how] += 1

    def predict(self, how: int) -> float | None:
        """Expected current in hour `how`: its own mean, else the mean of that hour on learned days."""
        if self.count[how]:
            return self.mean[how]
        same = [self.mean[h] for h in range(how % 24, HOURS_PER_WEEK, 24) if self.count[h]]
        return sum(same) / len(same) if same else None

    @property
    def ready(self) -> bool:
        """True once every hour of the day has been learned on at least one day."""
        return all(any(self.count[h] for h in range(d, HOURS_PER_WEEK, 24)) for d in range(24))


class ProfileLearner:
    """Integrates the net current over each local hour and folds complete hours into a LoadProfile."""

    def __init__(self, profile: LoadProfile, weeks: float) -> None:
        """`weeks`: memory of the exponential average (new hour weighs 1/weeks)."""
        self.profile = profile
        self._weight = 1.0 / weeks
        self._how: int | None = None
        self._charge = 0.0  # A·s observed in the current hour
        self._seen = 0.0  # s observed in the current hour
        self._last: tuple[float, float, float] | None = None  # (t, wall, current) of the previous call

    def observe(self, t: float, wall: float | None, how: int | None, current: float | None) -> None:
        """One observation at gateway time t: `how` = local hour of week (None: wall time unknown),
        `current` = net battery current (None: no usable data)."""
        last = self._last
        now = None if wall is None or current is None else (t, wall, current)
        self._last = now
        if how != self._how:
            self._close()
            self._how = how
        if last is None or now is None:
            return
        dt = now[0] - last[0]
        if abs((now[1] - last[1]) - dt) > MAX_GAP_S:  # the wall clock was stepped
            self._charge = self._seen = 0.0  # this hour's observations cannot be placed; start afresh
        elif 0.0 < dt <= MAX_GAP_S:
            self._charge += 0.5 * (now[2] + last[2]) * dt
            self._seen += dt

    def _close(self) -> None:
        if self._how is not None and self._seen >= MIN_COVERAGE * 3600.0:
            self.profile.learn(self._how, self._charge / self._seen, self._weight)
        self._charge = self._seen = 0.0


def forecast(
    soc: float,
    capacity_ah: float,
    reserve: float,
    current: float,
    *,
    profile: LoadProfile | None = None,
    local: datetime | None = None,
    horizon_s: float = 7 * 86400.0,
    idle_a: float = 0.5,
) -> Forecast | None:
    """Seconds to the reserve and to full (inf: not within the horizon / not moving that way).

    With a ready `profile` and the local time `local`, the learned hours are walked from now (the SOC stops at
    full and at the reserve); otherwise the present `current` is extrapolated (|current| <= idle_a: idle).
    None when SOC or capacity is unknown.
    """
    if not math.isfinite(soc) or not capacity_ah > 0 or not math.isfinite(current):
        return None
    down = max(0.0, soc - reserve) * capacity_ah * 3600.0  # A·s until the reserve
    up = max(0.0, 1.0 - soc) * capacity_ah * 3600.0  # A·s until full
    if profile is not None and local is not None and profile.ready:
        empty, full = _walk(profile, local, down, up, horizon_s)
        return Forecast(empty, full, BASIS_PROFILE)
    empty = 0.0 if down == 0.0 else (down / -current if current < -idle_a else math.inf)
    full = 0.0 if up == 0.0 else (up / current if current > idle_a else math.inf)
    return Forecast(empty, full, BASIS_PRESENT)


def _walk(
    profile: LoadProfile, local: datetime, down: float, up: float, horizon_s: float
) -> tuple[float, float]:
    """(time to empty, time to full) following the profile hour by hour; level x in A·s relative to now."""
    empty = 0.0 if down == 0.0 else math.inf
    full = 0.0 if up == 0.0 else math.inf
    how = hour_of_week(local)
    span = 3600.0 - (local.minute * 60 + local.second + local.microsecond / 1e6)  # rest of this hour
    elapsed = x = 0.0
    while elapsed < horizon_s and (math.isinf(empty) or math.isinf(full)):
        i = profile.predict(how)
        span = min(span, horizon_s - elapsed)
        if i is not None and i != 0.0:
            nxt = x + i * span
            if i < 0 and nxt <= -down:
                if math.isinf(empty):
                    empty = elapsed + (x + down) / -i
                nxt = -down  # the reserve holds
            elif i > 0 and nxt >= up:
                if math.isinf(full):
                    full = elapsed + (up - x) / i
                nxt = up  # full: the charger stops
            x = nxt
        elapsed += span
        how = (how + 1) % HOURS_PER_WEEK
        span = 3600.0
    return empty, full
