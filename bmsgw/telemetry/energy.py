"""Charged and discharged energy counters: trapezoidal integration of power over time. Pure, no clock."""

from __future__ import annotations

import math

__all__ = ["EnergyMeter", "split_energy"]


def split_energy(p0_w: float, p1_w: float, dt_s: float) -> tuple[float, float]:
    """(charged Wh, discharged Wh) of power moving linearly from p0 to p1 W over dt s (> 0 = charging)."""
    if (p0_w >= 0) == (p1_w >= 0):
        wh = (p0_w + p1_w) / 2 * dt_s / 3600
        return (wh, 0.0) if p0_w >= 0 else (0.0, -wh)
    # The line crosses zero inside the interval: each side of the crossing is a triangle.
    f = p0_w / (p0_w - p1_w)
    a0 = p0_w * f * dt_s / 7200
    a1 = p1_w * (1 - f) * dt_s / 7200
    return (a0, -a1) if p0_w >= 0 else (a1, -a0)


class EnergyMeter:
    """Monotonic charged/discharged Wh totals; a missing point or a gap > max_gap_s is not bridged."""

    def __init__(self, max_gap_s: float) -> None:
        self.max_gap_s = max_gap_s
        self.charged_wh = 0.0
        self.discharged_wh = 0.0
        self._last: tuple[float, float] | None = None

    def add(self, t: float, power_w: float | None) -> None:
        """Account the interval since the previous point; None or non-finite power means "no data"."""
        if power_w is None or not math.isfinite(power_w) or not math.isfinite(t):
            self._last = None
            return
        last = self._last
        if last is not None and t < last[0]:
            return  # time never runs backwards; ignore the stray point
        if last is not None and 0 < t - last[0] <= self.max_gap_s:
            charged, discharged = split_energy(last[1], power_w, t - last[0])
            self.charged_wh += charged
            self.discharged_wh += discharged
        self._last = (t, power_w)
