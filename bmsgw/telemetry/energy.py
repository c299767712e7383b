"""Charged and discharged energy counters: trapezoidal integration of power over time. Pure, no clock.

`EnergyCounters` is the gateway's one set of totals (system and per pack, Wh and Ah) that MQTT, /metrics
and the history database read; the history service restores it from the database at start, so the
totals keep increasing across restarts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bmsgw.model import GatewayState, PackSample, PackStatus

__all__ = ["EnergyCounters", "EnergyMeter", "EnergyTotals", "split_energy"]


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
    """Monotonic charged/discharged Wh totals; a missing point or a gap > max_gap_s is not bridged.

    Fed with a current instead of a power, the same integral gives charged/discharged Ah.
    """

    def __init__(self, max_gap_s: float, charged_wh: float = 0.0, discharged_wh: float = 0.0) -> None:
        self.max_gap_s = max_gap_s
        self.charged_wh = charged_wh
        self.discharged_wh = discharged_wh
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


@dataclass(frozen=True, slots=True)
class EnergyTotals:
    """Counter values of one scope (the system or one pack): Wh and Ah in each direction."""

    charged_wh: float = 0.0
    discharged_wh: float = 0.0
    charged_ah: float = 0.0
    discharged_ah: float = 0.0


class EnergyCounters:
    """System and per-pack totals; `see` is a gateway state listener (cheap, never raises on bad data).

    The system integrates the published pack-mean voltage × total current of every state while usable;
    each pack integrates its own samples (each new online sample once), so the per-pack sums and the
    system total agree to within the integration error.
    """

    def __init__(self, packs: int, max_gap_s: float) -> None:
        self.system = EnergyMeter(max_gap_s)
        self.system_ah = EnergyMeter(max_gap_s)
        self.meters = [EnergyMeter(max_gap_s) for _ in range(packs)]
        self.meters_ah = [EnergyMeter(max_gap_s) for _ in range(packs)]
        self._last: list[PackSample | None] = [None] * packs

    def see(self, state: GatewayState) -> None:
        """Account the state: the system power, and the pack samples new since the previous state."""
        usable = state.usable
        self.system.add(state.t, state.voltage * state.current if usable else None)
        self.system_ah.add(state.t, state.current if usable else None)
        for i, view in enumerate(state.packs):
            s = view.sample
            if view.status is not PackStatus.ONLINE or s is None:
                if self._last[i] is not None:
                    self.meters[i].add(math.nan, None)  # a pack that drops out is not bridged
                    self.meters_ah[i].add(math.nan, None)
                    self._last[i] = None
            elif s is not self._last[i]:
                self._last[i] = s
                self.meters[i].add(s.t, s.voltage * s.current)
                self.meters_ah[i].add(s.t, s.current)

    def totals(self) -> tuple[EnergyTotals, tuple[EnergyTotals, ...]]:
        """(system, per pack) totals now."""
        return _totals(self.system, self.system_ah), tuple(
            _totals(w, a) for w, a in zip(self.meters, self.meters_ah, strict=True)
        )

    def restore(self, system: EnergyTotals | None, packs: dict[int, EnergyTotals]) -> None:
        """Continue from saved totals (before the first state); unknown pack indices are ignored."""
        if system is not None:
            _set(self.system, self.system_ah, system)
        for i, saved in packs.items():
            if 0 <= i < len(self.meters):
                _set(self.meters[i], self.meters_ah[i], saved)


def _totals(wh: EnergyMeter, ah: EnergyMeter) -> EnergyTotals:
    return EnergyTotals(wh.charged_wh, wh.discharged_wh, ah.charged_wh, ah.discharged_wh)


def _set(wh: EnergyMeter, ah: EnergyMeter, saved: EnergyTotals) -> None:
    wh.charged_wh, wh.discharged_wh = saved.charged_wh, saved.discharged_wh
    ah.charged_wh, ah.discharged_wh = saved.charged_ah, saved.discharged_ah
