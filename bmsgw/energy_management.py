"""Energy management after the core: time-of-use schedule, backup reserve, request bits and runtime forecast.

`EnergyManager.step` runs in `Pipeline` after every core step (before EMS commands) and can only tighten the
core's limits: schedule caps (reason `schedule`), the DCL taper to the reserve (reason `reserve`, or
`schedule` when a window's reserve is the higher one), and the request bits force charge I/II and full
charge. Pure and deterministic: gateway time `t` and the wall-clock time (epoch seconds, from `Clock.wall`)
are passed in. A wall time before 2020 counts as unknown (a board without a real-time clock before NTP has
synchronised): schedules are then inactive, and the load profile neither learns nor is used. A step of the
wall clock re-evaluates the windows at once; the reserve, the request hysteresis and the full-charge timer
run on gateway time and are unaffected. The learned profile and the full-charge timer persist in
`<state_dir>/energy.json` (`EnergyStore`).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Final

from pydantic import BaseModel, ConfigDict, Field

from bmsgw.config import Settings
from bmsgw.ems import cap
from bmsgw.energy_config import time_zone
from bmsgw.forecast import LoadProfile, ProfileLearner, forecast, hour_of_week
from bmsgw.model import Forecast, Limits, Reason
from bmsgw.reserve import FullChargeTimer, Hysteresis, taper
from bmsgw.schedule import IDLE, Directive, Schedule, local_time
from bmsgw.state import atomic_write, load_versioned

__all__ = [
    "FILE_NAME",
    "FORECAST_PERIOD_S",
    "MIN_WALL",
    "EnergyFileError",
    "EnergyManager",
    "EnergySaved",
    "EnergyStore",
]

FILE_NAME: Final = "energy.json"
VERSION: Final = 1
MIN_WALL: Final = 1_577_836_800.0  # 2020-01-01T00:00Z: an earlier wall clock has not been set
FORECAST_PERIOD_S: Final = 10.0  # the forecast is recomputed at most this often (gateway seconds)
MAX_DOWNTIME_S: Final = 366 * 86400.0  # at most this much time off counts towards the full-charge timer


class EnergySaved(BaseModel):
    """What persists across restarts: the learned load profile and the time since the last full charge."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = VERSION
    saved_at: float | None  # epoch seconds; None when the wall clock was unknown
    timezone: str  # [energy] timezone the profile's hours are in
    since_full_s: float = Field(ge=0, allow_inf_nan=False)
    profile_mean: tuple[float | None, ...]
    profile_count: tuple[int, ...]


class EnergyManager:
    """Schedule, reserve, request bits and forecast for one pipeline (state: latches, timer, profile)."""

    def __init__(self, settings: Settings, saved: EnergySaved | None = None) -> None:
        """`saved`: a restored state (the time since it was saved counts towards the full-charge timer)."""
        e = settings.energy
        self._tz_name = e.timezone
        self._tz = time_zone(e.timezone)
        self.schedule = Schedule.of(settings.schedule, e.timezone)
        self.reserve = None if e.reserve_soc_pct is None else e.reserve_soc_pct / 100.0
        self._band = e.reserve_taper_pct / 100.0
        self._hyst = e.force_charge_hysteresis_pct / 100.0
        self._force = [
            None if pct is None else Hysteresis(pct / 100.0, pct / 100.0 + self._hyst)
            for pct in (e.force_charge_1_soc_pct, e.force_charge_2_soc_pct)
        ]
        self._full = (
            None
            if e.full_charge_days is None
            else FullChargeTimer(e.full_charge_days * 86400.0, e.full_charge_soc_pct / 100.0)
        )
        self._grid: Hysteresis | None = None
        self._forecast_on = e.forecast
        self._horizon_s = e.forecast_horizon_h * 3600.0
        self._idle_a = settings.limits.rest_current_a
        self.learner = ProfileLearner(LoadProfile.empty(), e.forecast_weeks)
        self.directive: Directive = IDLE
        self._forecast: Forecast | None = None
        self._forecast_t = -math.inf
        self._saved_at: float | None = None  # downtime since then is added at the first known wall time
        self.notes = self.restore(saved) if saved is not None else []

    def step(
        self,
        t: float,
        wall: float | None,
        limits: Limits,
        soc: float,
        current: float,
        capacity_ah: float,
        usable: bool,
    ) -> tuple[Limits, Forecast | None]:
        """The limits tightened at gateway time t / epoch `wall`, and the runtime forecast (None: unknown)."""
        wall = wall if wall is not None and wall >= MIN_WALL else None
        if wall is not None and self._saved_at is not None:
            if self._full is not None:
                self._full.since_full_s += min(max(0.0, wall - self._saved_at), MAX_DOWNTIME_S)
            self._saved_at = None
        d = self.directive = self.schedule.at(wall)
        lim = limits
        if d.max_charge_a is not None:
            lim = replace(lim, ccl=cap(lim.ccl, d.max_charge_a, Reason.SCHEDULE))
        if d.max_discharge_a is not None:
            lim = replace(lim, dcl=cap(lim.dcl, d.max_discharge_a, Reason.SCHEDULE))
        reserve, why = self.effective_reserve(d)
        if reserve is not None:
            lim = taper(lim, soc, reserve, self._band, why)
        lim = self._requests(lim, t, soc, d)
        if self._forecast_on:
            self._runtime(t, wall, soc, current, capacity_ah, usable, reserve or 0.0)
        return lim, self._forecast

    def _runtime(
        self,
        t: float,
        wall: float | None,
        soc: float,
        current: float,
        cap_ah: float,
        usable: bool,
        reserve: float,
    ) -> None:
        """Learn from this step; recompute the forecast every FORECAST_PERIOD_S and when usability changes."""
        local = local_time(wall, self._tz) if wall is not None else None
        how = hour_of_week(local) if local is not None else None
        self.learner.observe(t, wall, how, current if usable else None)
        if t - self._forecast_t < FORECAST_PERIOD_S and (self._forecast is not None) == usable:
            return
        self._forecast_t = t
        self._forecast = None
        if usable:
            self._forecast = forecast(
                soc, cap_ah, reserve, current, profile=self.learner.profile, local=local,
                horizon_s=self._horizon_s, idle_a=self._idle_a,
            )  # fmt: skip

    def effective_reserve(self, d: Directive) -> tuple[float | None, Reason]:
        """The reserve SOC in force under `d` (None: none) and the reason it binds with."""
        if d.reserve_soc is not None and (self.reserve is None or d.reserve_soc > self.reserve):
            return d.reserve_soc, Reason.SCHEDULE
        return self.reserve, Reason.RESERVE

    def capture(self, wall: float | None) -> EnergySaved:
        """The state to persist, stamped with epoch `wall`."""
        p = self.learner.profile
        return EnergySaved(
            saved_at=wall if wall is not None and wall >= MIN_WALL else None,
            timezone=self._tz_name,
            since_full_s=self._full.since_full_s if self._full is not None else 0.0,
            profile_mean=tuple(None if math.isnan(m) else m for m in p.mean),
            profile_count=tuple(p.count),
        )

    def restore(self, saved: EnergySaved) -> list[str]:
        """Take over a saved state; returns what could not be used (for the log)."""
        notes = []
        if saved.timezone != self._tz_name:
            notes.append(
                f"load profile learned in time zone {saved.timezone!r}, now {self._tz_name!r}: relearning"
            )
        else:
            try:
                self.learner.profile = LoadProfile.restored(saved.profile_mean, saved.profile_count)
            except ValueError as exc:
                notes.append(f"load profile not restored: {exc}")
        if self._full is not None:
            self._full.since_full_s = saved.since_full_s
        self._saved_at = saved.saved_at
        return notes

    def _requests(self, lim: Limits, t: float, soc: float, d: Directive) -> Limits:
        """Force charge I/II, the schedule's grid-charge request (as force charge I), full-charge request."""
        fc1, fc2 = (h.update(soc) if h is not None else False for h in self._force)
        full = self._full.update(t, soc) if self._full is not None else False
        if d.grid_charge_soc is None:
            self._grid = None
        else:
            if self._grid is None or self._grid.off_at != d.grid_charge_soc:
                self._grid = Hysteresis(max(0.0, d.grid_charge_soc - self._hyst), d.grid_charge_soc)
            fc1 = (self._grid.update(soc) and lim.ccl.value > 0) or fc1
        if not lim.charge_enable or not (fc1 or fc2 or full):
            return lim  # a request to charge while charging is not allowed would contradict the limits
        return replace(
            lim,
            force_charge_1=lim.force_charge_1 or fc1,
            force_charge_2=lim.force_charge_2 or fc2,
            full_charge_request=lim.full_charge_request or full,
        )


class EnergyFileError(Exception):
    """The energy state file exists but cannot be read or is not valid."""


class EnergyStore:
    """`energy.json` in the state directory; written atomically."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / FILE_NAME

    def save(self, saved: EnergySaved) -> None:
        """Write `saved` atomically (OSError when the directory is not writable)."""
        atomic_write(self.path, saved.model_dump_json().encode())

    def load(self) -> EnergySaved | None:
        """The saved state, None without a file; EnergyFileError when it is unreadable or invalid."""
        return load_versioned(self.path, EnergySaved, "energy state", EnergyFileError)
