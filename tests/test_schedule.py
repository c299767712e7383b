"""Time-of-use schedule: windows by weekday and local time (across midnight, DST), combined, tighten only."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from fakes import lim
from hypothesis import given, settings
from hypothesis import strategies as st

from bmsgw.clock import MonotonicClock, ScaledClock, SteppedClock
from bmsgw.config import ConfigError, Settings, load_settings
from bmsgw.ems import Command
from bmsgw.energy_config import ScheduleWindow
from bmsgw.energy_management import MIN_WALL, EnergyManager
from bmsgw.model import Limit, Limits, PackSample, Reason
from bmsgw.pipeline import Pipeline
from bmsgw.schedule import IDLE, Schedule

BERLIN = ZoneInfo("Europe/Berlin")


def at(y: int, mo: int, d: int, h: int, mi: int = 0, tz: ZoneInfo = BERLIN, fold: int = 0) -> float:
    """Epoch seconds of a local time."""
    return datetime(y, mo, d, h, mi, tzinfo=tz, fold=fold).timestamp()


def schedule(*windows: dict[str, Any], tz: str = "Europe/Berlin") -> Schedule:
    return Schedule.of([ScheduleWindow.model_validate(w) for w in windows], tz)


def active_minutes(s: Schedule, start: float, hours: float) -> int:
    """Real (elapsed) minutes during which some window is active, from epoch `start` for `hours`."""
    return sum(s.at(start + 60.0 * k) is not IDLE for k in range(int(hours * 60)))


def test_weekday_window() -> None:
    s = schedule({"days": ["mon", "tue", "wed", "thu", "fri"], "start": "17:00", "end": "21:00",
                  "max_discharge_a": 20})  # fmt: skip
    # 2026-11-23 is a Monday.
    assert s.at(at(2026, 11, 23, 16, 59)) is IDLE
    d = s.at(at(2026, 11, 23, 17, 0))
    assert d.max_discharge_a == 20.0
    assert d.windows == ("schedule[0]",)
    assert s.at(at(2026, 11, 23, 20, 59)) is not IDLE
    assert s.at(at(2026, 11, 23, 21, 0)) is IDLE  # end is exclusive
    assert s.at(at(2026, 11, 27, 18, 0)) is not IDLE  # Friday
    assert s.at(at(2026, 11, 28, 18, 0)) is IDLE  # Saturday
    assert s.at(at(2026, 11, 29, 18, 0)) is IDLE  # Sunday


def test_window_across_midnight_belongs_to_the_day_it_starts() -> None:
    s = schedule({"name": "night", "days": ["fri"], "start": "22:00", "end": "06:00", "grid_charge": True})
    assert s.at(at(2026, 11, 27, 21, 59)) is IDLE  # Friday
    assert s.at(at(2026, 11, 27, 22, 0)).windows == ("night",)
    assert s.at(at(2026, 11, 28, 0, 30)) is not IDLE  # Saturday morning: still Friday's window
    assert s.at(at(2026, 11, 28, 5, 59)) is not IDLE
    assert s.at(at(2026, 11, 28, 6, 0)) is IDLE
    assert s.at(at(2026, 11, 28, 23, 0)) is IDLE  # Saturday night: not in days
    assert s.at(at(2026, 11, 27, 3, 0)) is IDLE  # Friday early: Thursday's night is not scheduled
    assert active_minutes(s, at(2026, 11, 23, 0, 0), 24 * 7) == 8 * 60


def test_whole_day_and_time_zone_of_the_window() -> None:
    s = schedule({"start": "00:00", "end": "24:00", "days": ["sun"], "reserve_soc_pct": 40,
                  "timezone": "America/New_York"})  # fmt: skip
    ny = ZoneInfo("America/New_York")
    assert s.at(at(2026, 11, 29, 0, 0, tz=ny)).reserve_soc == pytest.approx(0.40)
    assert s.at(at(2026, 11, 29, 23, 59, tz=ny)) is not IDLE
    assert s.at(at(2026, 11, 30, 0, 0, tz=ny)) is IDLE
    # Sunday 03:00 in Berlin is still Saturday in New York.
    assert s.at(at(2026, 11, 29, 3, 0)) is IDLE


def test_dst_spring_forward_shortens_a_window_across_the_missing_hour() -> None:
    s = schedule({"start": "01:30", "end": "03:30", "max_charge_a": 5})
    # Europe/Berlin 2026-03-29: 02:00 CET → 03:00 CEST; the window lasts 1 h of real time that night.
    assert active_minutes(s, at(2026, 3, 27, 12, 0), 24) == 120  # the night before
    assert active_minutes(s, at(2026, 3, 29, 0, 0), 6) == 60
    inside_missing = schedule({"start": "02:10", "end": "02:50", "max_charge_a": 5})
    assert active_minutes(inside_missing, at(2026, 3, 29, 0, 0), 6) == 0  # that local time never happens


def test_dst_fall_back_repeats_the_hour_inside_a_window() -> None:
    s = schedule({"start": "01:00", "end": "04:00", "max_charge_a": 5})
    # Europe/Berlin 2026-10-25: 03:00 CEST → 02:00 CET; 02:00–03:00 happens twice.
    assert active_minutes(s, at(2026, 10, 25, 0, 0), 8) == 4 * 60
    assert s.at(at(2026, 10, 25, 2, 30, fold=0)) is not IDLE
    assert s.at(at(2026, 10, 25, 2, 30, fold=1)) is not IDLE
    assert at(2026, 10, 25, 2, 30, fold=1) - at(2026, 10, 25, 2, 30, fold=0) == 3600.0


def test_overlapping_windows_combine_to_the_most_restrictive() -> None:
    s = schedule(
        {"name": "a", "start": "10:00", "end": "14:00", "reserve_soc_pct": 30, "max_charge_a": 50},
        {"name": "b", "start": "12:00", "end": "16:00", "reserve_soc_pct": 50, "max_charge_a": 80,
         "max_discharge_a": 10, "grid_charge": True, "grid_charge_soc_pct": 60},
    )  # fmt: skip
    d = s.at(at(2026, 11, 23, 13, 0))
    assert d.windows == ("a", "b")
    assert (d.reserve_soc, d.max_charge_a, d.max_discharge_a) == (pytest.approx(0.5), 50.0, 10.0)
    assert d.grid_charge_soc == pytest.approx(0.6)
    assert s.at(at(2026, 11, 23, 11, 0)).grid_charge_soc is None


def manager(windows: list[dict[str, Any]], **energy: Any) -> EnergyManager:
    energy.setdefault("forecast", False)
    energy.setdefault("timezone", "Europe/Berlin")
    return EnergyManager(Settings.model_validate({"energy": energy, "schedule": windows}))


MONDAY_18 = at(2026, 11, 23, 18, 0)


def apply(m: EnergyManager, wall: float | None, soc: float = 0.5, limits: Limits | None = None) -> Limits:
    return m.step(0.0, wall, limits or lim(), soc, 0.0, 100.0, True)[0]


def test_schedule_caps_and_reserve_apply_with_reason_schedule() -> None:
    m = manager([{"start": "17:00", "end": "21:00", "max_charge_a": 20, "max_discharge_a": 40,
                  "reserve_soc_pct": 60}], reserve_soc_pct=20)  # fmt: skip
    out = apply(m, MONDAY_18, soc=0.80)
    assert out.ccl == Limit(20.0, Reason.SCHEDULE)
    assert out.dcl == Limit(40.0, Reason.SCHEDULE)
    assert apply(m, MONDAY_18, soc=0.60).dcl == Limit(0.0, Reason.SCHEDULE)  # the window's reserve
    assert apply(m, MONDAY_18 + 4 * 3600, soc=0.60).dcl == Limit(150.0, Reason.CONFIG)  # after 21:00
    assert apply(m, MONDAY_18 + 4 * 3600, soc=0.20).dcl == Limit(0.0, Reason.RESERVE)  # the base reserve


def test_no_wall_clock_or_an_unset_one_leaves_windows_inactive() -> None:
    m = manager([{"start": "00:00", "end": "24:00", "max_charge_a": 1}])
    core = lim()
    assert apply(m, None, limits=core) is core
    assert apply(m, MIN_WALL - 1.0, limits=core) is core  # 2019: a board that has not synchronised yet
    assert apply(m, MONDAY_18, limits=core).ccl == Limit(1.0, Reason.SCHEDULE)


def test_grid_charge_requests_force_charge_until_the_target_with_hysteresis() -> None:
    m = manager([{"start": "01:00", "end": "05:00", "grid_charge": True, "grid_charge_soc_pct": 80}],
                force_charge_hysteresis_pct=3)  # fmt: skip
    night = at(2026, 11, 24, 2, 0)
    seen = [apply(m, night, soc).force_charge_1 for soc in (0.5, 0.79, 0.80, 0.78, 0.769, 0.80)]
    assert seen == [True, True, False, False, True, False]
    assert not apply(m, at(2026, 11, 24, 6, 0), 0.5).force_charge_1  # outside the window
    assert not apply(m, night, 0.5, lim(ccl=0.0)).force_charge_1  # the core allows no charge current


def test_clock_step_reevaluates_the_windows_at_once() -> None:
    m = manager([{"start": "17:00", "end": "21:00", "max_charge_a": 5}])
    t = 1000.0
    out_of_window = m.step(t, at(2026, 11, 23, 12, 0), lim(), 0.5, 0.0, 100.0, True)[0]
    stepped = m.step(t + 1, at(2026, 11, 23, 18, 0), lim(), 0.5, 0.0, 100.0, True)[0]  # NTP step +6 h
    assert out_of_window.ccl.reason is Reason.CONFIG
    assert stepped.ccl == Limit(5.0, Reason.SCHEDULE)


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"start": "7:00", "end": "09:00", "max_charge_a": 1}, "schedule[0].start = '7:00': expected"),
        ({"start": "07:00", "end": "24:01", "max_charge_a": 1}, "schedule[0].end = '24:01': expected"),
        ({"start": "24:00", "end": "01:00", "max_charge_a": 1}, 'start = "24:00"'),
        ({"start": "07:00", "end": "07:00", "max_charge_a": 1}, "the window is empty"),
        ({"start": "00:00", "end": "24:00", "max_charge_a": -1}, "schedule[0].max_charge_a = -1:"),
        ({"start": "07:00", "end": "08:00"}, "the window does nothing"),
        ({"start": "07:00", "end": "08:00", "grid_charge": True, "days": ["mo"]},
         "schedule[0].days[0] = 'mo': Input should be 'mon', 'tue'"),
        ({"start": "07:00", "end": "08:00", "grid_charge": True, "days": ["mon", "mon"]},
         "each day at most once"),
        ({"start": "07:00", "end": "08:00", "grid_charge": True, "timezone": "CET/Nowhere"},
         "schedule[0].timezone = 'CET/Nowhere': unknown time zone"),
        ({"start": "07:00", "end": "08:00", "grid_charge": True, "price": 3},
         "schedule[0].price: unknown key"),
    ],
)  # fmt: skip
def test_schedule_config_errors_name_key_value_and_allowed(entry: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(cli={"schedule": [entry]})
    assert any(problem in line for line in exc.value.problems), exc.value.problems


times = st.integers(0, 1439).map(lambda m: f"{m // 60:02d}:{m % 60:02d}")
windows = st.fixed_dictionaries(
    {"start": times, "end": times, "grid_charge": st.booleans()},
    optional={
        "days": st.lists(
            st.sampled_from(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]),
            min_size=1,
            max_size=7,
            unique=True,
        ),
        "reserve_soc_pct": st.floats(0, 100),
        "max_charge_a": st.floats(0, 500),
        "max_discharge_a": st.floats(0, 500),
    },
).filter(lambda w: w["start"] != w["end"] and (w["grid_charge"] or len(w.keys() - {"days"}) > 3))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(windows, min_size=1, max_size=4),
    st.floats(MIN_WALL, MIN_WALL + 20 * 365 * 86400.0),
    st.floats(0.0, 1000.0), st.floats(0.0, 1000.0), st.booleans(), st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
)  # fmt: skip
def test_schedule_never_loosens_the_core_limits(
    ws: list[dict[str, Any]], wall: float, ccl: float, dcl: float, charge: bool, discharge: bool, soc: float
) -> None:
    m = manager(ws)
    core = lim(ccl=ccl, dcl=dcl, charge=charge, discharge=discharge)
    out = apply(m, wall, soc, core)
    assert 0.0 <= out.ccl.value <= core.ccl.value
    assert 0.0 <= out.dcl.value <= core.dcl.value
    assert out.ccl == core.ccl or out.ccl.reason is Reason.SCHEDULE
    assert out.dcl == core.dcl or out.dcl.reason is Reason.SCHEDULE
    assert (out.cvl, out.dvl, out.charge_enable, out.discharge_enable) == (
        core.cvl,
        core.dvl,
        core.charge_enable,
        core.discharge_enable,
    )
    assert not out.force_charge_1 or charge


def test_whole_week_coverage_is_what_the_days_say() -> None:
    s = schedule({"days": ["sat", "sun"], "start": "00:00", "end": "24:00", "max_discharge_a": 0})
    monday = at(2026, 11, 23, 0, 0)
    assert active_minutes(s, monday, 24 * 7) == 2 * 24 * 60
    assert s.at(monday + timedelta(days=5).total_seconds()) is not IDLE


def test_clocks_map_gateway_time_to_wall_time() -> None:
    stepped = SteppedClock(start=100.0, epoch=MONDAY_18)
    assert stepped.wall(100.0) == MONDAY_18
    stepped.advance(160.0)
    assert stepped.wall(stepped.now()) == MONDAY_18 + 60.0
    assert ScaledClock(10.0, epoch=MONDAY_18).wall(5.0) == MONDAY_18 + 5.0
    live = MonotonicClock()
    assert abs(live.wall(live.now()) - time.time()) < 5.0  # generous: only the mapping is checked


def test_the_time_of_use_example_does_what_its_comments_say() -> None:
    example = Path(__file__).parent.parent / "examples" / "time-of-use.toml"
    settings, _ = load_settings(example, env={})
    m = EnergyManager(settings)
    night = m.step(0.0, at(2026, 11, 24, 2, 0), lim(), 0.50, 0.0, 280.0, True)[0]  # Tuesday 02:00
    assert night.force_charge_1  # grid charging to 80 %
    assert night.dcl == Limit(0.0, Reason.SCHEDULE)
    morning = m.step(1.0, at(2026, 11, 24, 8, 0), lim(), 0.62, 0.0, 280.0, True)[0]
    assert morning.dcl.reason is Reason.SCHEDULE  # held for the evening peak: reserve 60 %
    assert 0.0 < morning.dcl.value < 150.0
    evening = m.step(2.0, at(2026, 11, 24, 19, 0), lim(), 0.62, 0.0, 280.0, True)[0]
    assert evening.dcl == Limit(150.0, Reason.CONFIG)  # the peak is covered from the battery
    weekend = m.step(3.0, at(2026, 11, 28, 12, 0), lim(), 0.62, 0.0, 280.0, True)[0]
    assert weekend.ccl == Limit(40.0, Reason.SCHEDULE)


def test_pipeline_applies_energy_management_before_ems_commands() -> None:
    settings = Settings.model_validate(
        {"energy": {"timezone": "UTC", "reserve_soc_pct": 40}, "web": {"token": "x" * 16}}
    )
    pipe = Pipeline(settings, [0.30], wall=lambda t: MONDAY_18 + t)
    assert pipe.ems is not None
    pipe.ems.write(Command(max_discharge_a=500.0, max_charge_a=10.0), 0.0, 600.0)
    for k in range(1, 62):  # past the core's 60 s recovery ramp from start-up
        assert pipe.submit(
            PackSample(0, float(k), np.full(16, 3.3), np.full(4, 25.0), 0.0, 52.8, alive=k & 15)
        )
        state = pipe.step(float(k))
    assert state.limits.dcl == Limit(0.0, Reason.RESERVE)  # an EMS cap above it cannot raise it
    assert state.limits.ccl == Limit(10.0, Reason.EMS)
