"""Time-of-use schedule: `[[schedule]]` windows in local time → what they ask of the limits right now.

Pure: the wall-clock time (epoch seconds) is passed in. A window is active while the local clock time in its
time zone is within [start, end) on one of its days; a window whose end is not after its start crosses
midnight and belongs to the day it starts on. Local clock time means DST is followed as the wall clock does:
on the spring-forward day an hour that does not exist is never inside a window (a window inside it does not
happen), and in the repeated autumn hour a window covering it is active both times. Overlapping windows
combine to the most restrictive (highest reserve, lowest caps, highest grid-charge target).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo

from bmsgw.energy_config import DAYS, ScheduleWindow, minutes, time_zone

__all__ = ["IDLE", "Directive", "Schedule", "Window", "local_time"]


@dataclass(frozen=True, slots=True)
class Directive:
    """What the active windows ask for; None = nothing asked (SOC as fractions, currents in A)."""

    windows: tuple[str, ...] = ()
    reserve_soc: float | None = None
    max_charge_a: float | None = None
    max_discharge_a: float | None = None
    grid_charge_soc: float | None = None  # request charging (from the grid) while SOC is below this


IDLE = Directive()
"""No window active."""


@dataclass(frozen=True, slots=True)
class Window:
    """One schedule window, resolved: weekdays 0 = Monday, times in seconds after local midnight."""

    name: str
    days: frozenset[int]
    start_s: int
    end_s: int
    tz: tzinfo | None  # None: the system's local time zone
    reserve_soc: float | None = None
    max_charge_a: float | None = None
    max_discharge_a: float | None = None
    grid_charge_soc: float | None = None

    @classmethod
    def of(cls, cfg: ScheduleWindow, default_tz: str, index: int) -> Window:
        """A window from its validated configuration (`default_tz`: [energy] timezone)."""
        return cls(
            name=cfg.name or f"schedule[{index}]",
            days=frozenset(DAYS.index(d) for d in cfg.days),
            start_s=minutes(cfg.start) * 60,
            end_s=minutes(cfg.end) * 60,
            tz=time_zone(cfg.timezone if cfg.timezone is not None else default_tz),
            reserve_soc=None if cfg.reserve_soc_pct is None else cfg.reserve_soc_pct / 100.0,
            max_charge_a=cfg.max_charge_a,
            max_discharge_a=cfg.max_discharge_a,
            grid_charge_soc=cfg.grid_charge_soc_pct / 100.0 if cfg.grid_charge else None,
        )

    def active(self, local: datetime) -> bool:
        """True when local time `local` (in this window's zone) is inside the window."""
        s = local.hour * 3600 + local.minute * 60 + local.second
        day = local.weekday()
        if self.start_s < self.end_s:
            return day in self.days and self.start_s <= s < self.end_s
        return (day in self.days and s >= self.start_s) or ((day - 1) % 7 in self.days and s < self.end_s)


def local_time(wall: float, tz: tzinfo | None) -> datetime:
    """Epoch seconds as local time in `tz` (None: the system's time zone)."""
    return datetime.fromtimestamp(wall, tz) if tz is not None else datetime.fromtimestamp(wall).astimezone()


class Schedule:
    """The configured windows; `at(wall)` combines the active ones."""

    def __init__(self, windows: Sequence[Window]) -> None:
        self.windows = tuple(windows)

    @classmethod
    def of(cls, windows: Sequence[ScheduleWindow], default_tz: str) -> Schedule:
        """The schedule of `[[schedule]]` (`default_tz`: [energy] timezone)."""
        return cls([Window.of(w, default_tz, i) for i, w in enumerate(windows)])

    def at(self, wall: float | None) -> Directive:
        """The combined directive at epoch seconds `wall`; IDLE when none is active or wall is unknown."""
        if wall is None or not self.windows:
            return IDLE
        local: dict[tzinfo | None, datetime] = {}
        active = []
        for w in self.windows:
            if w.tz not in local:
                local[w.tz] = local_time(wall, w.tz)
            if w.active(local[w.tz]):
                active.append(w)
        if not active:
            return IDLE
        return Directive(
            windows=tuple(w.name for w in active),
            reserve_soc=_most(max, (w.reserve_soc for w in active)),
            max_charge_a=_most(min, (w.max_charge_a for w in active)),
            max_discharge_a=_most(min, (w.max_discharge_a for w in active)),
            grid_charge_soc=_most(max, (w.grid_charge_soc for w in active)),
        )


def _most(pick: Callable[[list[float]], float], values: Iterable[float | None]) -> float | None:
    given = [v for v in values if v is not None]
    return pick(given) if given else None
