"""Decides which packs feed the core: fresh, complete, plausible samples only. Pure; time passed in."""

from __future__ import annotations

import math
from dataclasses import dataclass
from operator import attrgetter
from typing import NamedTuple

from bmsgw.model import Alarm, AlarmCode, AlarmLevel, CellRef, PackSample, PackStatus

__all__ = ["NO_TEMPS", "Aggregator", "Extremes", "Plausibility"]


@dataclass(frozen=True, slots=True)
class Plausibility:
    """Physical ranges outside which a reading is a sensor fault, not data."""

    cell_v_min: float
    cell_v_max: float
    temp_min_c: float = -40.0
    temp_max_c: float = 120.0
    current_max_a: float = 10_000.0


class Extremes(NamedTuple):
    """A sample's lowest/highest cell voltage and temperature with their cells; temperature sum and count."""

    vmin: float
    vmin_at: CellRef
    vmax: float
    vmax_at: CellRef
    tmin: float
    tmin_at: CellRef
    tmax: float
    tmax_at: CellRef
    tsum: float
    tcount: int


_AT = CellRef(0, 0)
_T = attrgetter("t")
NO_TEMPS = Extremes(math.nan, _AT, math.nan, _AT, math.nan, _AT, math.nan, _AT, math.nan, 0)
"""The temperature part of a pack without sensors (NaN sum: the mean over no sensor at all is NaN)."""


class Aggregator:
    """Keeps the newest good sample per pack, its extremes and status; excluded packs raise SENSOR_FAULT."""

    def __init__(
        self,
        cells: tuple[int, ...],
        sensors: tuple[int, ...],
        plausibility: Plausibility,
        stale_after_s: float,
        frozen_after: int = 5,
    ) -> None:
        n = len(cells)
        self._cells = cells
        self._sensors = sensors
        self._plaus = plausibility
        self._stale_after = stale_after_s
        self._frozen_after = frozen_after
        self._latest: list[PackSample | None] = [None] * n
        self._last_alive: list[int | None] = [None] * n
        self._same_alive: list[int] = [0] * n
        self._fault: list[tuple[PackStatus, float, str] | None] = [None] * n
        # per pack, one CellRef per cell/sensor position (shared by every sample's extremes)
        self._refs = [tuple(CellRef(i, j) for j in range(max(cells[i], sensors[i]))) for i in range(n)]
        self.extremes: list[Extremes | None] = [None] * n
        """Per pack, the extremes of its newest accepted sample."""
        self.rejected = 0

    def submit(self, sample: PackSample) -> bool:
        """Record a sample; False (and the pack excluded) if it is implausible or its alive counter froze."""
        i = sample.pack
        found = self._examine(sample)
        if isinstance(found, str):
            self.rejected += 1
            self._set_fault(i, PackStatus.IMPLAUSIBLE, sample.t, found)
            return False
        if self._last_alive[i] == sample.alive:
            self._same_alive[i] += 1
        else:
            self._same_alive[i] = 0
        self._last_alive[i] = sample.alive
        if self._same_alive[i] >= self._frozen_after - 1:
            self.rejected += 1
            self._set_fault(i, PackStatus.FROZEN, sample.t, f"alive counter stuck at {sample.alive}")
            return False
        self._fault[i] = None
        self._latest[i] = sample
        self.extremes[i] = found
        return True

    def select(self, t: float) -> tuple[list[PackSample | None], list[PackStatus], list[Alarm]]:
        """Usable sample per pack (None if excluded), each pack's status, and sensor-fault alarms at t."""
        latest = self._latest
        n = len(latest)
        if None not in latest and self._fault.count(None) == n:
            # Every pack seen, none excluded: all are online unless the oldest sample is stale (t - x only
            # grows as x falls). A NaN oldest (min is then unreliable) takes the loop below.
            oldest = min(map(_T, latest))
            if not (t - oldest > self._stale_after or math.isnan(oldest)):
                return latest.copy(), [PackStatus.ONLINE] * n, []
        usable: list[PackSample | None] = []
        statuses: list[PackStatus] = []
        alarms: list[Alarm] = []
        for i, sample in enumerate(latest):
            fault = self._fault[i]
            if fault is not None:
                status, since, detail = fault
                alarms.append(Alarm(AlarmCode.SENSOR_FAULT, AlarmLevel.ALARM, since, i, detail))
            elif sample is None:
                status = PackStatus.NEVER_SEEN
            elif t - sample.t > self._stale_after:
                status = PackStatus.STALE
            else:
                status = PackStatus.ONLINE
            statuses.append(status)
            usable.append(sample if status is PackStatus.ONLINE else None)
        return usable, statuses, alarms

    def newest(self) -> list[PackSample | None]:
        """Newest accepted sample of every pack, however old (a copy)."""
        return self._latest.copy()

    def _set_fault(self, i: int, status: PackStatus, t: float, detail: str) -> None:
        prev = self._fault[i]
        since = prev[1] if prev is not None and prev[0] is status else t
        self._fault[i] = (status, since, detail)

    def _examine(self, s: PackSample) -> Extremes | str:
        """The sample's extremes, or why it is implausible."""
        p = self._plaus
        if s.cell_v.shape != (self._cells[s.pack],):
            return f"expected {self._cells[s.pack]} cell voltages, got {s.cell_v.shape[0]}"
        if s.cell_t.shape != (self._sensors[s.pack],):
            return f"expected {self._sensors[s.pack]} temperatures, got {s.cell_t.shape[0]}"
        # argmin/argmax give the first NaN if there is one, so a NaN fails the range checks below
        v = s.cell_v
        iv, jv = int(v.argmin()), int(v.argmax())
        vmin, vmax = float(v[iv]), float(v[jv])
        if not (p.cell_v_min <= vmin and vmax <= p.cell_v_max):
            bad = iv if not p.cell_v_min <= vmin else jv
            return f"cell {bad + 1} voltage {v[bad]:.3f} V outside {p.cell_v_min}..{p.cell_v_max} V"
        temps = s.cell_t
        sensors = temps.shape[0]
        if sensors:
            it, jt = int(temps.argmin()), int(temps.argmax())
            tmin, tmax = float(temps[it]), float(temps[jt])
            if not (p.temp_min_c <= tmin and tmax <= p.temp_max_c):
                return (
                    f"temperature {tmin if not p.temp_min_c <= tmin else tmax:.1f} °C outside physical range"
                )
        if not (math.isfinite(s.current) and abs(s.current) <= p.current_max_a):
            return f"current {s.current} A not plausible"
        at = self._refs[s.pack]
        if not sensors:
            return Extremes(vmin, at[iv], vmax, at[jv], math.nan, _AT, math.nan, _AT, math.nan, 0)
        return Extremes(vmin, at[iv], vmax, at[jv], tmin, at[it], tmax, at[jt], float(temps.sum()), sensors)
