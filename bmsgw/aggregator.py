"""Decides which packs feed the core: fresh, complete, plausible samples only. Pure; time passed in."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bmsgw.model import Alarm, AlarmCode, AlarmLevel, PackSample, PackStatus

__all__ = ["Aggregator", "Plausibility"]


@dataclass(frozen=True, slots=True)
class Plausibility:
    """Physical ranges outside which a reading is a sensor fault, not data."""

    cell_v_min: float
    cell_v_max: float
    temp_min_c: float = -40.0
    temp_max_c: float = 120.0
    current_max_a: float = 10_000.0


class Aggregator:
    """Keeps the newest good sample per pack and its status; excluded packs raise SENSOR_FAULT."""

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
        self.rejected = 0

    def submit(self, sample: PackSample) -> bool:
        """Record a sample; False (and the pack excluded) if it is implausible or its alive counter froze."""
        i = sample.pack
        problem = self._implausible(sample)
        if problem is not None:
            self.rejected += 1
            self._set_fault(i, PackStatus.IMPLAUSIBLE, sample.t, problem)
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
        return True

    def select(self, t: float) -> tuple[list[PackSample | None], list[PackStatus], list[Alarm]]:
        """Usable sample per pack (None if excluded), each pack's status, and sensor-fault alarms at t."""
        usable: list[PackSample | None] = []
        statuses: list[PackStatus] = []
        alarms: list[Alarm] = []
        for i, sample in enumerate(self._latest):
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

    def latest(self, pack: int) -> PackSample | None:
        """Newest accepted sample of a pack, however old."""
        return self._latest[pack]

    def _set_fault(self, i: int, status: PackStatus, t: float, detail: str) -> None:
        prev = self._fault[i]
        since = prev[1] if prev is not None and prev[0] is status else t
        self._fault[i] = (status, since, detail)

    def _implausible(self, s: PackSample) -> str | None:
        p = self._plaus
        if s.cell_v.shape != (self._cells[s.pack],):
            return f"expected {self._cells[s.pack]} cell voltages, got {s.cell_v.shape[0]}"
        if s.cell_t.shape != (self._sensors[s.pack],):
            return f"expected {self._sensors[s.pack]} temperatures, got {s.cell_t.shape[0]}"
        vmin = float(np.min(s.cell_v))
        vmax = float(np.max(s.cell_v))
        if not (p.cell_v_min <= vmin and vmax <= p.cell_v_max):  # also catches NaN
            bad = int(np.argmin(s.cell_v)) if not p.cell_v_min <= vmin else int(np.argmax(s.cell_v))
            return f"cell {bad + 1} voltage {s.cell_v[bad]:.3f} V outside {p.cell_v_min}..{p.cell_v_max} V"
        tmin = float(np.min(s.cell_t, initial=p.temp_min_c))  # a pack may have no sensors
        tmax = float(np.max(s.cell_t, initial=p.temp_max_c))
        if not (p.temp_min_c <= tmin and tmax <= p.temp_max_c):
            return f"temperature {tmin if not p.temp_min_c <= tmin else tmax:.1f} °C outside physical range"
        if not (math.isfinite(s.current) and abs(s.current) <= p.current_max_a):
            return f"current {s.current} A not plausible"
        return None
