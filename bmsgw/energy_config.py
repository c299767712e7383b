"""Energy-management configuration: `[energy]` (reserve, request bits, forecast), `[[schedule]]` windows.

Part of `Settings` (bmsgw/config.py); the logic lives in reserve.py, schedule.py, forecast.py and
energy_management.py. Percentages are of SOC (0..100); currents in A for the whole system.
"""

from __future__ import annotations

import re
import zoneinfo
from datetime import tzinfo
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["DAYS", "LOCAL", "EnergySection", "ScheduleWindow", "minutes", "time_zone"]

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: Final[tuple[Day, ...]] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""Weekday names in `days`, Monday first (datetime.weekday() order)."""
LOCAL: Final = "local"
"""`timezone` value meaning the system's own time zone (TZ, /etc/localtime)."""
_HHMM = re.compile(r"([01]\d|2[0-3]):([0-5]\d)|24:00")


def time_zone(name: str) -> tzinfo | None:
    """The tzinfo of an IANA name, None for "local"; ValueError naming what is allowed."""
    if name == LOCAL:
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r}; allowed: {LOCAL!r} (the system's) or an IANA name such as "
            "'Europe/Berlin', 'America/New_York', 'UTC'"
        ) from None


def minutes(hhmm: str) -> int:
    """Minutes after midnight of an "HH:MM" string (validated by ScheduleWindow)."""
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EnergySection(_Section):
    """[energy]: backup reserve, force/full-charge requests, runtime forecast (docs/configuration.md)."""

    timezone: str = LOCAL
    reserve_soc_pct: float | None = Field(None, ge=0, le=95)
    reserve_taper_pct: float = Field(5.0, gt=0, le=50)
    force_charge_1_soc_pct: float | None = Field(None, ge=0, le=95)
    force_charge_2_soc_pct: float | None = Field(None, ge=0, le=95)
    force_charge_hysteresis_pct: float = Field(3.0, ge=0, le=20)
    full_charge_days: float | None = Field(None, gt=0, le=365)
    full_charge_soc_pct: float = Field(97.0, ge=50, le=100)
    forecast: bool = True
    forecast_weeks: float = Field(4.0, ge=1, le=52)
    forecast_horizon_h: float = Field(168.0, ge=1, le=336)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        time_zone(v)
        return v


class ScheduleWindow(_Section):
    """[[schedule]]: a time-of-use window in local time; it can only tighten what the core allows."""

    name: str = Field("", max_length=64)
    days: list[Day] = Field(default_factory=lambda: list(DAYS), min_length=1, max_length=7)
    start: str
    end: str
    timezone: str | None = None  # None: [energy] timezone
    reserve_soc_pct: float | None = Field(None, ge=0, le=100)
    max_charge_a: float | None = Field(None, ge=0, le=50_000)
    max_discharge_a: float | None = Field(None, ge=0, le=50_000)
    grid_charge: bool = False
    grid_charge_soc_pct: float = Field(100.0, gt=0, le=100)

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        if not _HHMM.fullmatch(v):
            raise ValueError('expected local time "HH:MM" from "00:00" to "23:59" ("24:00" allowed as end)')
        return v

    @field_validator("days")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"each day at most once, got {v}")
        return v

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        if v is not None:
            time_zone(v)
        return v

    @model_validator(mode="after")
    def _meaningful(self) -> ScheduleWindow:
        if self.start == "24:00":
            raise ValueError('start = "24:00": a window starts at "00:00" to "23:59"')
        if self.start == self.end:
            raise ValueError(
                f"start = end = {self.start!r}: the window is empty; a whole day is "
                'start = "00:00", end = "24:00"'
            )
        if (
            self.reserve_soc_pct is None
            and self.max_charge_a is None
            and self.max_discharge_a is None
            and not self.grid_charge
        ):
            raise ValueError(
                "the window does nothing; set at least one of reserve_soc_pct, max_charge_a, "
                "max_discharge_a, grid_charge"
            )
        return self
