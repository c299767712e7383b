"""Behaviour of the estimation & protection core (runs on whichever kernel is installed)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from bmsgw.core import IS_COMPILED, Core, CoreOutput, CoreParams, _kernel
from bmsgw.core.chemistry import ocv, profile, soc_from_ocv
from bmsgw.model import AlarmCode, AlarmLevel, BmsFlags, Chemistry, PackSample, Reason

DT = 0.25  # step period used by most tests (s)


def params(**overrides: Any) -> CoreParams:
    """One LFP pack of 4 cells and 2 sensors, 100 Ah, 50 A charge / 100 A discharge."""
    kw: dict[str, Any] = {"cells": (4,), "sensors": (2,), "capacity_ah": (100.0,)}
    kw.update(overrides)
    return CoreParams.defaults(Chemistry.LFP, kw.pop("cells"), kw.pop("sensors"), kw.pop("capacity_ah"), **kw)


def sample(
    t: float,
    *,
    v: float | Sequence[float] = 3.30,
    temp: float | Sequence[float] = 25.0,
    i: float = 0.0,
    flags: BmsFlags = BmsFlags.NONE,
    pack: int = 0,
    n: int = 4,
    ns: int = 2,
) -> PackSample:
    cell_v = np.full(n, v, dtype=np.float64) if isinstance(v, float | int) else np.asarray(v, np.float64)
    cell_t = np.full(ns, temp, dtype=np.float64) if isinstance(temp, float | int) else np.asarray(temp)
    return PackSample(pack, t, cell_v, cell_t.astype(np.float64), i, float(cell_v.sum()), flags)


@dataclass
class Rig:
    """A single-pack core stepped every DT with fresh samples."""

    core: Core
    t: float = 0.0
    out: CoreOutput | None = field(default=None)

    def run(self, seconds: float, **kw: Any) -> CoreOutput:
        end = self.t + seconds
        out = self.out
        while self.t < end - 1e-9:
            self.t = round(self.t + DT, 9)
            out = self.core.step(self.t, [sample(self.t, **kw)])
        assert out is not None
        self.out = out
        return out

    def at(self, **kw: Any) -> CoreOutput:
        """One step, DT after the last one."""
        return self.run(DT, **kw)


def level_of(out: CoreOutput, code: AlarmCode, pack: int | None = 0) -> AlarmLevel | None:
    levels = [a.level for a in out.alarms if a.code is code and a.pack == pack]
    return max(levels) if levels else None


def settled(**overrides: Any) -> Rig:
    """A rig that ran 70 s of normal data (ramps finished)."""
    rig = Rig(Core(params(**overrides), initial_soc=[0.5]))
    out = rig.run(70.0)
    assert out.limits.ccl.value == pytest.approx(50.0)
    assert out.limits.ccl.reason is Reason.CONFIG
    assert out.alarms == ()
    return rig


# ------------------------------------------------------------------------------------------ protection

# name, trip sample, hold sample (inside the limit but within hysteresis), clear sample, alarm code,
# level, zeroed limits, reason, trip delay, parameter overrides. One cell out of line (a whole pack there
# is a pack-voltage fault, tests/test_protection.py); overcurrent follows its time-current curve (ibid.).
PROTECTION = [
    ("cell_ov", {"v": [3.70, 3.45, 3.45, 3.45]}, {"v": [3.62, 3.45, 3.45, 3.45]}, {"v": 3.30},
     AlarmCode.CELL_OVERVOLTAGE, AlarmLevel.ALARM, ("ccl",), Reason.CELL_OVERVOLTAGE, 1.0, {}),
    ("cell_uv", {"v": [2.45, 2.8, 2.8, 2.8]}, {"v": [2.53, 2.8, 2.8, 2.8]}, {"v": 3.30},
     AlarmCode.CELL_UNDERVOLTAGE, AlarmLevel.ALARM, ("dcl",), Reason.CELL_UNDERVOLTAGE, 1.0, {}),
    ("overtemp_charge", {"temp": 47.0, "i": 10.0}, {"temp": 43.0, "i": 10.0}, {"temp": 25.0},
     AlarmCode.OVERTEMPERATURE, AlarmLevel.ALARM, ("ccl",), Reason.OVERTEMPERATURE, 1.0, {}),
    ("overtemp_discharge", {"temp": 56.0, "i": -10.0}, {"temp": 53.0, "i": -10.0}, {"temp": 25.0},
     AlarmCode.OVERTEMPERATURE, AlarmLevel.ALARM, ("ccl", "dcl"), Reason.OVERTEMPERATURE, 1.0, {}),
    ("undertemp_discharge", {"temp": -22.0, "i": -10.0}, {"temp": -18.0, "i": -10.0}, {"temp": 25.0},
     AlarmCode.UNDERTEMPERATURE, AlarmLevel.ALARM, ("dcl",), Reason.UNDERTEMPERATURE, 1.0,
     {"charge_temp_min_c": -30.0}),  # keep the cold-charge lockout out of the way
    ("cold_charge", {"temp": -2.0}, {"temp": 2.0}, {"temp": 25.0}, AlarmCode.CHARGE_UNDERTEMPERATURE,
     AlarmLevel.ALARM, ("ccl",), Reason.COLD_CHARGE, 1.0, {}),
    ("charge_oc", {"i": 60.0}, {"i": 55.0}, {"i": 0.0}, AlarmCode.CHARGE_OVERCURRENT, AlarmLevel.ALARM,
     ("ccl",), Reason.OVERCURRENT, 2.0, {}),  # 1.2 × rated: the curve's overcurrent_time_s point
    ("discharge_oc", {"i": -120.0}, {"i": -110.0}, {"i": 0.0}, AlarmCode.DISCHARGE_OVERCURRENT,
     AlarmLevel.ALARM, ("dcl",), Reason.OVERCURRENT, 2.0, {}),
    ("bms_fault", {"flags": BmsFlags.BMS_FAULT}, None, {}, AlarmCode.BMS_FAULT, AlarmLevel.FAULT,
     ("ccl", "dcl"), Reason.FAULT, 1.0, {}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("trip", "hold", "clear", "code", "level", "zeroed", "reason", "delay", "overrides"),
    [pytest.param(*case[1:], id=case[0]) for case in PROTECTION],
)
def test_protection_trip_debounce_hysteresis_and_recovery(
    *,
    trip: dict[str, Any],
    hold: dict[str, Any] | None,
    clear: dict[str, Any],
    code: AlarmCode,
    level: AlarmLevel,
    zeroed: tuple[str, ...],
    reason: Reason,
    delay: float,
    overrides: dict[str, Any],
) -> None:
    rig = settled(**overrides)
    t0 = rig.t + DT
    # the condition holds from t0; it must not trip before `delay` has passed …
    for _ in range(round(delay / DT)):
        out = rig.at(**trip)
        assert (level_of(out, code) or 0) < level, f"tripped early at t={rig.t}"
    # … and must trip exactly when it has
    out = rig.at(**trip)
    assert rig.t == pytest.approx(t0 + delay)
    assert level_of(out, code) is level
    alarm = next(a for a in out.alarms if a.code is code and a.level is level)
    assert alarm.since == pytest.approx(t0 + delay)
    assert alarm.pack == 0
    for name in ("ccl", "dcl"):
        lim = getattr(out.limits, name)
        if name in zeroed:
            assert lim.value == 0.0
            assert lim.reason is reason
        else:
            assert lim.value > 0.0
    assert out.limits.charge_enable is ("ccl" not in zeroed)
    assert out.limits.discharge_enable is ("dcl" not in zeroed)
    assert out.packs[0].contactor_open_request is (level is AlarmLevel.FAULT)
    assert out.limits.cvl.value > 0.0

    if hold is not None:  # back inside the limit but not by the hysteresis: stays tripped
        out = rig.run(10.0, **hold)
        assert level_of(out, code) is level

    # clear: inside limit ∓ hysteresis, for the debounce time
    tc = rig.t + DT
    for _ in range(round(1.0 / DT)):
        out = rig.at(**clear)
        assert level_of(out, code) is level, f"cleared early at t={rig.t}"
    out = rig.at(**clear)
    assert rig.t == pytest.approx(tc + 1.0)
    assert level_of(out, code) is None
    assert not out.packs[0].contactor_open_request
    # and the zeroed limits ramp back instead of stepping
    for name in zeroed:
        lim = getattr(out.limits, name)
        assert lim.reason is Reason.RECOVERY
        assert lim.value < 0.05 * (50.0 if name == "ccl" else 100.0)


def test_overtemperature_charge_side_needs_charging_current() -> None:
    rig = settled()
    out = rig.run(5.0, temp=46.0, i=0.0)  # idle above the charge limit: warning, CCL derated to 0
    assert level_of(out, AlarmCode.OVERTEMPERATURE) is AlarmLevel.WARNING
    assert out.limits.ccl.value == 0.0
    assert out.limits.ccl.reason is Reason.TEMPERATURE_HIGH
    assert out.limits.dcl.value == pytest.approx(100.0)
    out = rig.run(5.0, temp=46.0, i=5.0)  # charging there is an alarm
    assert level_of(out, AlarmCode.OVERTEMPERATURE) is AlarmLevel.ALARM
    assert out.limits.ccl.reason is Reason.OVERTEMPERATURE


def test_warning_levels_trip_and_clear_with_hysteresis() -> None:
    rig = settled()
    out = rig.run(1.0, v=[3.58, 3.45, 3.45, 3.45])  # steps at +0 … +0.75 s
    assert level_of(out, AlarmCode.CELL_OVERVOLTAGE) is None
    out = rig.at(v=[3.58, 3.45, 3.45, 3.45])  # +1.0 s
    assert level_of(out, AlarmCode.CELL_OVERVOLTAGE) is AlarmLevel.WARNING
    assert out.limits.ccl.reason is Reason.CELL_VOLTAGE_HIGH  # a warning derates
    assert out.limits.ccl.value == pytest.approx(50.0 * (3.65 - 3.58) / 0.10)
    out = rig.run(5.0, v=[3.52, 3.45, 3.45, 3.45])  # below warn, not by 50 mV
    assert level_of(out, AlarmCode.CELL_OVERVOLTAGE) is AlarmLevel.WARNING
    out = rig.run(1.25, v=[3.49, 3.45, 3.45, 3.45])
    assert level_of(out, AlarmCode.CELL_OVERVOLTAGE) is None


def test_alarm_steps_down_to_warning_when_it_clears_above_warn() -> None:
    rig = settled(soc_charge_derate_start=1.0)  # the high cell reads full: keep SOC derating out of the way
    rig.run(2.0, v=[3.70, 3.45, 3.45, 3.45])
    out = rig.run(2.0, v=[3.58, 3.45, 3.45, 3.45])  # below 3.65 − 0.05, still above the warn limit
    assert level_of(out, AlarmCode.CELL_OVERVOLTAGE) is AlarmLevel.WARNING
    assert out.limits.ccl.reason is Reason.RECOVERY  # rising from 0 towards the derated 35 A
    assert 0.0 < out.limits.ccl.value < 35.0
    out = rig.run(60.0, v=[3.58, 3.45, 3.45, 3.45])
    assert out.limits.ccl.reason is Reason.CELL_VOLTAGE_HIGH
    assert out.limits.ccl.value == pytest.approx(35.0)


@pytest.mark.parametrize(
    ("flag", "code", "zeroed"),
    [
        (BmsFlags.ALARM_CELL_OV, AlarmCode.CELL_OVERVOLTAGE, ("ccl",)),
        (BmsFlags.ALARM_CELL_UV, AlarmCode.CELL_UNDERVOLTAGE, ("dcl",)),
        (BmsFlags.ALARM_OVERTEMP, AlarmCode.OVERTEMPERATURE, ("ccl", "dcl")),
        (BmsFlags.ALARM_UNDERTEMP, AlarmCode.UNDERTEMPERATURE, ("ccl", "dcl")),
        (BmsFlags.ALARM_CHARGE_OC, AlarmCode.CHARGE_OVERCURRENT, ("ccl",)),
        (BmsFlags.ALARM_DISCHARGE_OC, AlarmCode.DISCHARGE_OVERCURRENT, ("dcl",)),
        (BmsFlags.ALARM_SHORT_CIRCUIT, AlarmCode.DISCHARGE_OVERCURRENT, ("ccl", "dcl")),
        (BmsFlags.ALARM_INTERNAL, AlarmCode.BMS_FAULT, ("ccl", "dcl")),
    ],
)
def test_bms_reported_alarm_flags(flag: BmsFlags, code: AlarmCode, zeroed: tuple[str, ...]) -> None:
    rig = settled()
    out = rig.run(1.0, flags=flag | BmsFlags.CHARGE_FET | BmsFlags.DISCHARGE_FET)
    assert level_of(out, code) is None
    out = rig.at(flags=flag | BmsFlags.CHARGE_FET)
    assert level_of(out, code) is AlarmLevel.ALARM
    assert "BMS" in next(a for a in out.alarms if a.code is code).detail
    for name in ("ccl", "dcl"):
        assert (getattr(out.limits, name).value == 0.0) is (name in zeroed)
    assert not out.packs[0].contactor_open_request
    out = rig.run(1.0)
    assert level_of(out, code) is AlarmLevel.ALARM
    out = rig.at()
    assert level_of(out, code) is None


def test_status_bits_alone_raise_nothing() -> None:
    rig = settled()
    out = rig.run(5.0, flags=BmsFlags.CHARGE_FET | BmsFlags.DISCHARGE_FET | BmsFlags.BALANCING)
    assert out.alarms == ()


def test_sensorless_pack_skips_temperature_checks() -> None:
    rig = Rig(Core(params(sensors=(0,)), initial_soc=[0.5]))
    out = rig.run(70.0, ns=0)
    assert out.alarms == ()
    assert out.limits.ccl.value == pytest.approx(50.0)


# ------------------------------------------------------------------------------------------ derating


@pytest.mark.parametrize(
    ("kw", "name", "value", "reason"),
    [
        ({"v": [3.60, 3.45, 3.45, 3.45]}, "ccl", 25.0, Reason.CELL_VOLTAGE_HIGH),
        ({"v": [2.70, 3.3, 3.3, 3.3]}, "dcl", 50.0, Reason.CELL_VOLTAGE_LOW),
        ({"temp": [42.5, 25.0]}, "ccl", 25.0, Reason.TEMPERATURE_HIGH),
        ({"temp": [2.5, 25.0]}, "ccl", 25.0, Reason.TEMPERATURE_LOW),
        ({"temp": [52.5, 25.0]}, "dcl", 50.0, Reason.TEMPERATURE_HIGH),
        ({"temp": [-17.5, 25.0]}, "dcl", 50.0, Reason.TEMPERATURE_LOW),
        ({"temp": [-17.5, 25.0]}, "ccl", 0.0, Reason.COLD_CHARGE),
    ],
)
def test_trapezoid_derating_is_immediate_and_names_its_reason(
    kw: dict[str, Any], name: str, value: float, reason: Reason
) -> None:
    rig = settled()
    out = rig.run(2.0, **kw)
    lim = getattr(out.limits, name)
    assert lim.value == pytest.approx(value)
    assert lim.reason is reason


def test_the_tightest_candidate_wins() -> None:
    rig = settled()
    out = rig.at(v=[3.62, 3.45, 3.45, 3.45], temp=[42.5, 25.0])  # voltage → 15 A, temperature → 25 A
    assert out.limits.ccl.value == pytest.approx(15.0)
    assert out.limits.ccl.reason is Reason.CELL_VOLTAGE_HIGH


def test_limit_increase_is_rate_limited_over_recovery_ramp() -> None:
    rig = settled()
    out = rig.at(temp=[45.0, 25.0])
    assert out.limits.ccl.value == 0.0  # the trapezoid's end, no alarm while idle
    out = rig.at()  # target back to 50 A: rises at 50 A / 60 s
    assert out.limits.ccl.value == pytest.approx(50.0 / 60.0 * DT)
    assert out.limits.ccl.reason is Reason.RECOVERY
    out = rig.run(30.0 - DT)
    assert out.limits.ccl.value == pytest.approx(25.0)
    assert out.limits.ccl.reason is Reason.RECOVERY
    out = rig.run(30.0)
    assert out.limits.ccl.value == pytest.approx(50.0)
    assert out.limits.ccl.reason is Reason.CONFIG
    assert out.limits.charge_enable


def test_small_rises_of_a_derated_limit_keep_their_reason_under_the_ramp() -> None:
    rig = settled()
    out = rig.at(v=[3.62, 3.45, 3.45, 3.45])
    assert out.limits.ccl.value == pytest.approx(15.0)
    out = rig.at(v=[3.619, 3.45, 3.45, 3.45])  # target 15.5 A: the ramp binds, 0.3 A (< 1 % of 50 A) short
    assert out.limits.ccl.value == pytest.approx(15.0 + 50.0 / 60.0 * DT)
    assert out.limits.ccl.reason is Reason.CELL_VOLTAGE_HIGH  # not a flip to RECOVERY and back
    out = rig.at()  # target 50 A, far above: a real recovery, reported until the ramp reaches it
    assert out.limits.ccl.reason is Reason.RECOVERY
    out = rig.run(41.0)
    assert 49.5 < out.limits.ccl.value < 50.0  # within 1 % of the target, still RECOVERY
    assert out.limits.ccl.reason is Reason.RECOVERY
    out = rig.run(1.0)
    assert out.limits.ccl.value == pytest.approx(50.0)
    assert out.limits.ccl.reason is Reason.CONFIG


def test_ramp_does_not_jump_across_sparse_steps() -> None:
    rig = settled()
    rig.at(v=[3.70, 3.45, 3.45, 3.45])
    rig.run(1.0, v=[3.70, 3.45, 3.45, 3.45])
    rig.run(1.25, v=3.30)  # alarm cleared, ramp starts
    t = rig.t + 3600.0  # an hour without steps
    out = rig.core.step(t, [sample(t)])
    assert out.limits.ccl.reason is Reason.RECOVERY
    assert out.limits.ccl.value <= 50.0 * 6.0 / 60.0 + 1e-9


# ------------------------------------------------------------------------------------------ CVL / DVL


def test_cvl_dvl_from_cell_count_and_pulled_down_by_high_cells() -> None:
    rig = Rig(Core(params(cells=(16,)), initial_soc=[0.5]))
    out = rig.run(5.0, n=16)
    assert out.limits.cvl.value == pytest.approx(16 * 3.45)
    assert out.limits.cvl.reason is Reason.CONFIG
    assert out.limits.dvl.value == pytest.approx(16 * 2.90)
    assert out.limits.dvl.reason is Reason.CONFIG
    v = [3.60, 3.58] + [3.40] * 14
    # excess 0.07 + 0.05 over the cell target 3.53 V (20 mV below the 3.55 V warning); the others far below
    # the charge voltage
    out = rig.at(v=v, n=16)
    assert out.limits.cvl.value == pytest.approx(2 * 3.53 + 14 * 3.40)  # the cells clipped to 3.53, summed
    assert out.limits.cvl.value < 16 * 3.45 - 0.12
    assert out.limits.cvl.reason is Reason.CELL_VOLTAGE_HIGH
    out = rig.at(v=[3.64] * 16, n=16)  # excess 16 × 0.11 V
    assert out.limits.cvl.value == pytest.approx(16 * 3.45 - 16 * 0.11)
    out = rig.at(v=[3.64] * 8 + [2.0] * 8, n=16)
    assert out.limits.cvl.value >= out.limits.dvl.value > 0.0
    out = rig.at(n=16)  # back to normal: CVL recovers under the ramp, never a step
    assert out.limits.cvl.reason is Reason.RECOVERY
    out = rig.run(60.0, n=16)
    assert out.limits.cvl.value == pytest.approx(16 * 3.45)


def test_cvl_never_below_dvl() -> None:
    rig = Rig(Core(params(cells=(4,)), initial_soc=[0.5]))
    out = rig.run(2.0, v=[3.64, 3.64, 3.64, 3.64])
    assert out.limits.cvl.value == pytest.approx(4 * 3.45 - 4 * 0.11)
    rig2 = Rig(Core(params(cells=(4,), charge_voltage_cell_v=2.95), initial_soc=[0.5]))
    out = rig2.run(2.0, v=[3.64, 3.64, 3.64, 3.64])
    assert out.limits.cvl.value == pytest.approx(out.limits.dvl.value)


# ------------------------------------------------------------------------------------------ fail-safe


def test_fail_safe_before_any_data_and_on_comm_loss_then_ramped_recovery() -> None:
    p = params(cells=(16,))
    core = Core(p, initial_soc=[0.5])
    out = core.step(0.0, [None])
    lim = out.limits
    assert (lim.ccl.value, lim.ccl.reason, lim.dcl.value, lim.dcl.reason) == (
        0.0,
        Reason.COMM_LOST,
        0.0,
        Reason.COMM_LOST,
    )
    assert not lim.charge_enable
    assert not lim.discharge_enable
    assert lim.cvl.value == pytest.approx(16 * profile(Chemistry.LFP).nominal_v)
    assert 0.0 < lim.dvl.value <= lim.cvl.value
    assert [(a.code, a.level, a.since, a.pack) for a in out.alarms] == [
        (AlarmCode.COMM_LOST, AlarmLevel.ALARM, 0.0, None)
    ]

    rig = Rig(core, t=0.0)
    out = rig.run(70.0, n=16)
    assert out.alarms == ()
    assert out.limits.ccl.value == pytest.approx(50.0)
    cvl, dvl = out.limits.cvl.value, out.limits.dvl.value

    t_lost = rig.t + DT
    for k in range(20):
        out = core.step(t_lost + k * DT, [None])
        assert out.limits.ccl.value == 0.0
        assert out.limits.dcl.value == 0.0
        assert out.limits.ccl.reason is Reason.COMM_LOST
        assert not out.limits.charge_enable
        assert not out.limits.discharge_enable
        assert out.limits.cvl.value == cvl
        assert out.limits.dvl.value == dvl
        assert [(a.code, a.since) for a in out.alarms] == [(AlarmCode.COMM_LOST, t_lost)]
    rig.t = t_lost + 19 * DT
    out = rig.at(n=16)
    assert out.alarms == ()
    assert out.limits.ccl.reason is Reason.RECOVERY
    assert out.limits.ccl.value == pytest.approx(50.0 / 60.0 * DT)
    out = rig.run(30.0 - DT, n=16)
    assert out.limits.ccl.value == pytest.approx(25.0)
    assert out.limits.dcl.value == pytest.approx(50.0)
    out = rig.run(30.0, n=16)
    assert out.limits.ccl.value == pytest.approx(50.0)
    assert out.limits.ccl.reason is Reason.CONFIG


def test_first_data_ramps_up_from_zero() -> None:
    core = Core(params(), initial_soc=[0.5])
    out = core.step(0.0, [sample(0.0)])
    assert out.limits.ccl.value == 0.0
    assert out.limits.ccl.reason is Reason.RECOVERY
    assert not out.limits.charge_enable
    assert out.limits.cvl.value == pytest.approx(4 * 3.45)  # CVL itself does not ramp on first data


# ------------------------------------------------------------------------------------------ SOC


def test_coulomb_counting_matches_the_exact_integral() -> None:
    """Counting mode (no voltage updates): SOC moves by ∫η·I dt / Q, η on charge only."""
    cap = 100.0
    eta = profile(Chemistry.LFP).coulomb_efficiency
    core = Core(params(capacity_ah=(cap,), estimator="counting"), initial_soc=[0.5])

    def current(t: float) -> float:
        return 20.0 * math.sin(2 * math.pi * t / 600.0) + 10.0

    rng = np.random.default_rng(7)
    t = 0.0
    s = sample(t, i=current(t))
    core.step(t, [s])
    while t < 3600.0:
        t += float(rng.uniform(0.1, 0.3))
        s = sample(t, i=current(t))
        out = core.step(t, [s])
        # the same sample object again (no new data) is not integrated twice
        out = core.step(t + 0.05, [s])
    grid = np.linspace(0.0, t, 400_001)
    i = 20.0 * np.sin(2 * np.pi * grid / 600.0) + 10.0
    charge_as = np.trapezoid(np.where(i > 0, eta * i, i), grid)
    expected = 0.5 + charge_as / 3600.0 / cap
    assert out.packs[0].cell_soc == pytest.approx(np.full(4, expected), abs=1e-5)
    assert out.packs[0].soc == pytest.approx(expected, abs=1e-5)
    assert out.soc == pytest.approx(expected, abs=1e-5)


def test_no_integration_across_gaps() -> None:
    eta = profile(Chemistry.LFP).coulomb_efficiency
    core = Core(params(estimator="counting"), initial_soc=[0.5])
    core.step(0.0, [sample(0.0, i=-50.0)])
    out = core.step(10.0, [sample(10.0, i=-50.0)])  # 10 s gap: skipped
    assert out.soc == 0.5
    out = core.step(11.0, [sample(11.0, i=-50.0)])
    assert out.soc == pytest.approx(0.5 - 50.0 / 3600.0 / 100.0)
    out = core.step(12.0, [sample(12.0, i=50.0)])  # charging counts with the coulombic efficiency
    assert out.soc == pytest.approx(0.5 - 50.0 / 3600.0 / 100.0, abs=1e-4)
    out = core.step(13.0, [sample(13.0, i=50.0)])
    assert out.soc == pytest.approx(0.5 - 50.0 / 3600e2 + eta * 50.0 / 3600e2, abs=1e-9)


def test_initial_soc_from_ocv_per_cell() -> None:
    p = profile(Chemistry.NMC)
    core = Core(CoreParams.defaults(Chemistry.NMC, (3,), (1,), (5.0,)))
    out = core.step(0.0, [sample(0.0, v=[ocv(p, 0.2), ocv(p, 0.5), ocv(p, 0.6)], n=3, ns=1)])
    assert out.packs[0].cell_soc == pytest.approx([0.2, 0.5, 0.6], abs=1e-9)
    assert out.packs[0].soc == pytest.approx(0.2 / (0.2 + 0.4))


def test_initial_soc_uses_the_ocv_at_the_pack_temperature() -> None:
    p = profile(Chemistry.LFP)
    core = Core(CoreParams.defaults(Chemistry.LFP, (1,), (2,), (5.0,)))
    v = ocv(p, 0.97, 5.0)
    assert soc_from_ocv(p, v) > 0.975  # read on the 25 °C curve the same voltage means another SOC
    out = core.step(0.0, [sample(0.0, v=[v], temp=[4.0, 6.0], n=1)])
    assert out.packs[0].cell_soc[0] == pytest.approx(0.97, abs=1e-6)


def test_initial_soc_compensates_ir_drop() -> None:
    p = profile(Chemistry.NMC)
    r0 = p.r0_ohm_ah / 5.0
    core = Core(CoreParams.defaults(Chemistry.NMC, (1,), (1,), (5.0,)))
    out = core.step(0.0, [sample(0.0, v=[ocv(p, 0.5) - 5.0 * r0], i=-5.0, n=1, ns=1)])
    assert out.packs[0].soc == pytest.approx(0.5, abs=1e-9)


@pytest.mark.parametrize(
    ("cells", "expected"),
    [
        ((0.0, 0.5, 0.7), 0.0),  # weakest cell empty → pack empty
        ((0.5, 0.8, 1.0), 1.0),  # strongest cell full → pack full
        ((0.2, 0.6, 0.6), 0.2 / (0.2 + 0.4)),
        ((0.4, 0.4, 0.4), 0.4),
        ((0.0, 0.5, 1.0), 0.5),  # 0/0 guard
    ],
)
def test_pack_soc_weakest_strongest_rule(cells: tuple[float, ...], expected: float) -> None:
    p = profile(Chemistry.NMC)
    core = Core(CoreParams.defaults(Chemistry.NMC, (3,), (1,), (5.0,)))
    out = core.step(0.0, [sample(0.0, v=[ocv(p, x) for x in cells], n=3, ns=1)])
    assert out.packs[0].soc == pytest.approx(expected, abs=1e-9)


def test_system_soc_is_capacity_weighted_over_online_packs() -> None:
    p = params(cells=(4, 4), sensors=(2, 2), capacity_ah=(100.0, 300.0), estimator="counting")
    core = Core(p, initial_soc=[0.2, 0.6])
    out = core.step(0.0, [sample(0.0), sample(0.0, pack=1)])
    assert out.soc == pytest.approx((0.2 * 100 + 0.6 * 300) / 400)
    out = core.step(0.25, [sample(0.25), None])
    assert out.soc == pytest.approx(0.2)
    assert out.packs[1].soc == pytest.approx(0.6)  # offline pack keeps its last value
    out = core.step(0.5, [None, None])
    assert out.soc == pytest.approx(0.2)  # nothing online: last value
    assert out.soh == 1.0
    assert out.packs[0].soh == 1.0


# ------------------------------------------------------------------------------------------ multi-pack


def test_multi_pack_limit_is_n_online_times_the_weakest() -> None:
    p = params(cells=(4, 4, 4), sensors=(2, 2, 2), capacity_ah=(100.0, 100.0, 100.0), recovery_ramp_s=0.0)
    core = Core(p, initial_soc=[0.5, 0.5, 0.5])
    hot = [42.5, 25.0]  # pack 1 derated to 25 A charge
    out = core.step(0.0, [sample(0.0), sample(0.0, pack=1, temp=hot), sample(0.0, pack=2)])
    assert out.limits.ccl.value == pytest.approx(3 * 25.0)
    assert out.limits.ccl.reason is Reason.TEMPERATURE_HIGH
    assert out.limits.dcl.value == pytest.approx(3 * 100.0)
    out = core.step(0.25, [sample(0.25), None, sample(0.25, pack=2)])
    assert out.limits.ccl.value == pytest.approx(2 * 50.0)
    assert out.limits.ccl.reason is Reason.CONFIG


def test_pack_alarm_zeroes_the_system_direction() -> None:
    p = params(cells=(4, 4), sensors=(2, 2), capacity_ah=(100.0, 100.0), recovery_ramp_s=0.0)
    core = Core(p, initial_soc=[0.5, 0.5])
    for k in range(6):
        t = k * DT
        out = core.step(t, [sample(t), sample(t, pack=1, v=[3.70, 3.40, 3.40, 3.40])])
    assert out.limits.ccl.value == 0.0
    assert out.limits.ccl.reason is Reason.CELL_OVERVOLTAGE
    assert out.limits.dcl.value == pytest.approx(200.0)
    assert [(a.code, a.level, a.pack) for a in out.alarms] == [
        (AlarmCode.CELL_OVERVOLTAGE, AlarmLevel.ALARM, 1),
        (AlarmCode.CELL_IMBALANCE, AlarmLevel.WARNING, 1),  # 0.30 V spread
    ]


def test_cvl_uses_first_online_pack_cell_count() -> None:
    p = params(cells=(16, 15), sensors=(2, 2), capacity_ah=(100.0, 100.0))
    core = Core(p, initial_soc=[0.5, 0.5])
    out = core.step(0.0, [sample(0.0, n=16), sample(0.0, pack=1, n=15)])
    assert out.limits.cvl.value == pytest.approx(16 * 3.45)
    out = core.step(0.25, [None, sample(0.25, pack=1, n=15)])
    assert out.limits.cvl.value == pytest.approx(15 * 3.45)
    assert out.limits.dvl.value == pytest.approx(15 * 2.90)


# ------------------------------------------------------------------------------------------ outputs


def test_pack_outputs_are_frozen_and_only_rebuilt_for_new_data() -> None:
    p3 = params(cells=(4, 4, 4), sensors=(2, 2, 2), capacity_ah=(100.0,) * 3, estimator="counting")
    core = Core(p3, [0.5, 0.6, 0.7])
    first = [sample(0.0, pack=p, i=-20.0) for p in range(3)]
    a = core.step(0.0, first)  # every pack new: their cell SOCs come from one copy
    kept = [po.cell_soc.copy() for po in a.packs]
    assert all(not po.cell_soc.flags.writeable and len(po.cell_soc) == 4 for po in a.packs)
    b = core.step(1.0, [first[0], sample(1.0, pack=1, i=-20.0), first[2]])  # only pack 1 new
    assert b.packs[0] is a.packs[0]
    assert b.packs[2] is a.packs[2]
    assert b.packs[1] is not a.packs[1]
    assert not b.packs[1].cell_soc.flags.writeable
    assert b.packs[1].cell_soc[0] < kept[1][0]  # pack 1 discharged for 1 s …
    for po, before in zip(a.packs, kept, strict=True):  # … and no earlier output changed with it
        assert np.array_equal(po.cell_soc, before)


def test_a_sample_seen_again_after_an_offline_step_counts_as_online_not_new() -> None:
    core = Core(params(), [0.5])
    s = sample(0.0, i=-50.0)
    core.step(0.0, [s])
    soc = core.step(1.0, [s]).packs[0].soc
    assert core.step(2.0, [None]).limits.dcl.reason is Reason.COMM_LOST
    out = core.step(3.0, [s])  # the same sample again: online, but not integrated a second time
    assert out.limits.dcl.reason is not Reason.COMM_LOST
    assert out.packs[0].soc == soc


# ------------------------------------------------------------------------------------------ determinism


def _random_run(seed: int) -> list[CoreOutput]:
    rng = np.random.default_rng(seed)
    p = params(cells=(8, 8), sensors=(3, 3), capacity_ah=(50.0, 80.0), rest_time_s=20.0)
    core = Core(p)
    outs = []
    last: list[PackSample | None] = [None, None]
    for k in range(400):
        t = k * 0.1
        samples: list[PackSample | None] = []
        for pk in range(2):
            r = rng.random()
            if r < 0.05:
                samples.append(None)
            elif r < 0.2 and last[pk] is not None:
                samples.append(last[pk])
            else:
                s = sample(
                    t,
                    v=list(3.3 + rng.normal(0, 0.15, 8)),
                    temp=list(25 + rng.normal(0, 15, 3)),
                    i=float(rng.normal(0, 40)),
                    flags=BmsFlags(int(rng.choice([0, 0, 0, 1 << 8, 1 << 4]))),
                    pack=pk,
                    n=8,
                    ns=3,
                )
                last[pk] = s
                samples.append(s)
        outs.append(core.step(t, samples))
    return outs


def _same(a: CoreOutput, b: CoreOutput) -> bool:
    return (
        a.soc == b.soc
        and a.limits == b.limits
        and a.alarms == b.alarms
        and all(
            x.soc == y.soc
            and x.contactor_open_request == y.contactor_open_request
            and np.array_equal(x.cell_soc, y.cell_soc)
            for x, y in zip(a.packs, b.packs, strict=True)
        )
    )


def test_determinism_same_inputs_same_outputs() -> None:
    a = _random_run(3)
    b = _random_run(3)
    assert all(_same(x, y) for x, y in zip(a, b, strict=True))
    assert any(o.alarms for o in a)  # the run exercised the protection paths


def test_repeated_sample_still_trips_on_time() -> None:
    core = Core(params(), initial_soc=[0.5])
    s = sample(0.0, flags=BmsFlags.BMS_FAULT)
    out = core.step(0.0, [s])
    first = out.packs[0]
    assert not first.contactor_open_request
    out = core.step(0.5, [s])
    assert out.packs[0] is first  # nothing new: the same pack output object
    out = core.step(1.0, [s])  # same sample object, but the fault has now held for 1 s
    assert out.packs[0].contactor_open_request
    assert out.packs[0].soc == first.soc


def test_repeated_sample_object_equals_a_fresh_copy() -> None:
    """Re-using the sample object (no new data) gives exactly what re-sending its values would."""
    a = Core(params(), initial_soc=[0.5])
    b = Core(params(), initial_soc=[0.5])
    script = [(3.30, 25.0, 0.0, 0), (3.70, 25.0, 5.0, 0), (3.58, 47.0, 5.0, 0), (3.30, -3.0, -130.0, 1 << 4)]
    t = 0.0
    for v, temp, i, flags in script:
        s = sample(t, v=v, temp=temp, i=i, flags=BmsFlags(flags))
        for _ in range(12):  # the same sample for 3 s while t advances
            t += DT
            copy = PackSample(0, s.t, s.cell_v.copy(), s.cell_t.copy(), s.current, s.voltage, s.flags)
            assert _same(a.step(t, [s]), b.step(t, [copy]))


def test_outputs_are_snapshots() -> None:
    core = Core(params(), initial_soc=[0.5])
    out1 = core.step(0.0, [sample(0.0)])
    cell_soc = out1.packs[0].cell_soc.copy()
    core.step(1.0, [sample(1.0, i=50.0)])
    assert np.array_equal(out1.packs[0].cell_soc, cell_soc)
    with pytest.raises(ValueError, match="read-only"):
        out1.packs[0].cell_soc[0] = 0.0


# ------------------------------------------------------------------------------------------ API / tables


def test_params_defaults_and_validation() -> None:
    p = CoreParams.defaults(Chemistry.NMC, [14], [4], [280.0])
    prof = profile(Chemistry.NMC)
    assert (p.cell_v_max_alarm, p.cell_v_max_warn, p.cell_v_min_warn, p.cell_v_min_alarm) == (
        4.25,
        4.15,
        3.20,
        2.80,
    )
    assert p.charge_voltage_cell_v == prof.charge_voltage_cell_v == 4.10
    assert p.discharge_voltage_cell_v == prof.discharge_voltage_cell_v == 3.20
    assert p.cells == (14,)
    assert p.max_charge_current_a == 140.0
    assert p.max_discharge_current_a == 280.0
    direct = CoreParams(Chemistry.LFP, (16,), (4,), (100.0,), 50.0, 100.0, 3.65, 3.55, 2.9, 2.5)
    assert direct.charge_voltage_cell_v == 3.45
    assert direct.discharge_voltage_cell_v == 2.90
    with pytest.raises(ValueError, match="sensors"):
        CoreParams.defaults(Chemistry.LFP, (16, 16), (4,), (100.0, 100.0))
    with pytest.raises(ValueError, match="cell_v_max_alarm"):
        CoreParams.defaults(Chemistry.LFP, (16,), (4,), (100.0,), cell_v_max_warn=3.7)
    with pytest.raises(ValueError, match="capacity_ah"):
        CoreParams.defaults(Chemistry.LFP, (16,), (4,), (0.0,))
    with pytest.raises(ValueError, match="initial_soc"):
        Core(params(), initial_soc=[1.5])


def test_step_rejects_mismatched_samples() -> None:
    core = Core(params())
    with pytest.raises(ValueError, match="expected 1 samples"):
        core.step(0.0, [])
    with pytest.raises(ValueError, match="configured 4 cells"):
        core.step(0.0, [sample(0.0, n=5)])


def test_kernel_tables_match_the_model() -> None:
    assert {Reason(r) for r in _kernel.REASONS} <= set(Reason)
    assert {AlarmCode(c) for c in _kernel.ALARM_CODES} <= set(AlarmCode)
    flag_bits = {row[6] for row in _kernel.LATCHES if row[6]}
    expected = {
        BmsFlags.BMS_FAULT,
        BmsFlags.ALARM_CELL_OV,
        BmsFlags.ALARM_CELL_UV,
        BmsFlags.ALARM_OVERTEMP,
        BmsFlags.ALARM_UNDERTEMP,
        BmsFlags.ALARM_CHARGE_OC,
        BmsFlags.ALARM_DISCHARGE_OC,
        BmsFlags.ALARM_SHORT_CIRCUIT,
        BmsFlags.ALARM_INTERNAL,
    }
    assert flag_bits == {int(f) for f in expected}
    assert all(AlarmLevel(row[1]) for row in _kernel.LATCHES)


def test_tuning_constants_are_visible_from_python() -> None:
    # module constants are C globals in the compiled kernel; TUNING is their importable copy
    assert _kernel.TUNING["max_gap_s"] == 5.0
    assert 0.0 < _kernel.TUNING["cal_sd"] < _kernel.TUNING["anchor_sd"] < _kernel.TUNING["converged_sd"]


def test_is_compiled_flag() -> None:
    assert isinstance(IS_COMPILED, bool)
    assert IS_COMPILED is (not _kernel.__file__.endswith(".py"))


@pytest.mark.parametrize("chem", list(Chemistry))
def test_chemistry_tables(chem: Chemistry) -> None:
    p = profile(chem)
    assert p.soc_points[0] == 0.0
    assert p.soc_points[-1] == 1.0
    assert 21 <= len(p.ocv_points) <= 41
    assert all(b > a for a, b in zip(p.ocv_points, p.ocv_points[1:], strict=False))
    for z in (0.0, 0.013, 0.37, 0.5, 0.999, 1.0):
        assert soc_from_ocv(p, ocv(p, z)) == pytest.approx(z, abs=1e-9)
    assert ocv(p, -1.0) == p.ocv_points[0]
    assert ocv(p, 2.0) == p.ocv_points[-1]
    assert soc_from_ocv(p, 0.0) == 0.0
    assert soc_from_ocv(p, 9.0) == 1.0
    assert p.v_min_physical < p.cell_v_min_alarm < p.cell_v_min_warn < p.discharge_voltage_cell_v + 1e-9
    assert p.charge_voltage_cell_v < p.cell_v_max_warn < p.cell_v_max_alarm < p.v_max_physical
    assert p.ocv_points[0] < p.nominal_v < p.ocv_points[-1]
