"""Three-tier protection, latching and reset, the overcurrent time-current curve and SOF derating reasons.

Deterministic: every step has an explicit t (tests/test_core.py's Rig steps every DT = 0.25 s).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from test_core import DT, Rig, level_of, params, sample, settled

from bmsgw.config import ConfigError, load_settings
from bmsgw.core import Core, CoreOutput, CoreParams, _kernel
from bmsgw.model import AlarmCode, AlarmLevel, Chemistry, PackSample, Reason
from bmsgw.pipeline import Pipeline, core_params

W, A, F = AlarmLevel.WARNING, AlarmLevel.ALARM, AlarmLevel.FAULT

# quantity, alarm code, parameter overrides, then per tier (warning, alarm, fault): the sample keywords and
# the limits that tier zeroes (a warning zeroes nothing; a fault zeroes both and asks to open the contactor)
TIERS: list[tuple[str, AlarmCode, dict[str, Any], list[tuple[dict[str, Any], tuple[str, ...]]]]] = [
    ("cell_v_high", AlarmCode.CELL_OVERVOLTAGE, {}, [
        ({"v": [3.58, 3.45, 3.45, 3.45]}, ()),
        ({"v": [3.70, 3.45, 3.45, 3.45]}, ("ccl",)),
        ({"v": [3.85, 3.45, 3.45, 3.45]}, ("ccl", "dcl")),
    ]),
    ("cell_v_low", AlarmCode.CELL_UNDERVOLTAGE, {}, [
        ({"v": [2.88, 3.0, 3.0, 3.0]}, ()),
        ({"v": [2.45, 2.8, 2.8, 2.8]}, ("dcl",)),
        ({"v": [1.90, 2.8, 2.8, 2.8]}, ("ccl", "dcl")),
    ]),
    ("pack_v_high", AlarmCode.PACK_OVERVOLTAGE, {}, [
        ({"v": 3.52}, ()),
        ({"v": 3.58}, ("ccl",)),
        ({"v": 3.66}, ("ccl", "dcl")),
    ]),
    ("pack_v_low", AlarmCode.PACK_UNDERVOLTAGE, {}, [
        ({"v": 2.84}, ()),
        ({"v": 2.68}, ("dcl",)),
        ({"v": 2.48}, ("ccl", "dcl")),
    ]),
    ("temp_high_charge", AlarmCode.OVERTEMPERATURE, {"discharge_temp_max_c": 70.0}, [
        ({"temp": 41.0, "i": 10.0}, ()),
        ({"temp": 46.0, "i": 10.0}, ("ccl",)),
        ({"temp": 56.0, "i": 10.0}, ("ccl", "dcl")),
    ]),
    ("temp_high_discharge", AlarmCode.OVERTEMPERATURE, {}, [
        ({"temp": 51.0, "i": -10.0}, ()),  # above the charge limit too, but not charging: warnings only
        ({"temp": 56.0, "i": -10.0}, ("ccl", "dcl")),
        ({"temp": 66.0, "i": -10.0}, ("ccl", "dcl")),
    ]),
    ("temp_low_discharge", AlarmCode.UNDERTEMPERATURE, {"charge_temp_min_c": -45.0}, [
        ({"temp": -16.0, "i": -10.0}, ()),
        ({"temp": -21.0, "i": -10.0}, ("dcl",)),
        ({"temp": -31.0, "i": -10.0}, ("ccl", "dcl")),
    ]),
    ("cold_charge", AlarmCode.CHARGE_UNDERTEMPERATURE, {}, [
        ({"temp": 3.0, "i": 10.0}, ()),
        ({"temp": -1.0, "i": 10.0}, ("ccl",)),
        ({"temp": -11.0, "i": 10.0}, ("ccl", "dcl")),  # charging a frozen cell: plating, latched
    ]),
    ("imbalance", AlarmCode.CELL_IMBALANCE, {}, [
        ({"v": [3.41, 3.25, 3.25, 3.25]}, ()),
        ({"v": [3.45, 3.05, 3.05, 3.05]}, ("ccl",)),
        ({"v": [3.50, 2.40, 3.2, 3.2]}, ("ccl", "dcl")),
    ]),
]  # fmt: skip


def _tier_cases() -> list[Any]:
    out = []
    for name, code, overrides, tiers in TIERS:
        for level, (kw, zeroed) in zip((W, A, F), tiers, strict=True):
            out.append(pytest.param(code, overrides, kw, level, zeroed, id=f"{name}-{level.name.lower()}"))
    return out


@pytest.mark.parametrize(("code", "overrides", "kw", "level", "zeroed"), _tier_cases())
def test_each_tier_of_each_quantity(
    code: AlarmCode, overrides: dict[str, Any], kw: dict[str, Any], level: AlarmLevel, zeroed: tuple[str, ...]
) -> None:
    rig = settled(estimator="counting", **overrides)
    out = rig.run(1.0, **kw)  # steps at +0 … +0.75 s: nothing of this tier yet (debounce 1 s) …
    assert (level_of(out, code) or 0) < level
    out = rig.at(**kw)  # … +1.0 s
    assert level_of(out, code) is level
    assert out.packs[0].contactor_open_request is (level is F)
    for name in ("ccl", "dcl"):
        lim = getattr(out.limits, name)
        if name in zeroed:
            assert lim.value == 0.0, name
            assert not getattr(out.limits, "charge_enable" if name == "ccl" else "discharge_enable")
    if level is W:
        assert all(a.level is W for a in out.alarms if a.code is code)
        assert out.limits.ccl.value > 0.0 or out.limits.dcl.value > 0.0  # a warning derates at most one way
    if level is F:
        # latched: back to normal values, the fault and the contactor request stay …
        out = rig.run(10.0)
        assert level_of(out, code) is F
        assert out.packs[0].contactor_open_request
        assert out.limits.ccl.value == out.limits.dcl.value == 0.0
        # … until a reset; then the limits ramp back
        assert rig.core.reset_latched(0) >= 1
        out = rig.at()
        assert level_of(out, code) is None
        assert not out.packs[0].contactor_open_request
        assert out.limits.ccl.reason is Reason.RECOVERY
        out = rig.run(61.0)
        assert out.limits.ccl.value == pytest.approx(50.0)
        assert out.limits.dcl.value > 0.0  # (after a deep-discharge fault the empty anchor set SOC 0)


def test_fault_trips_after_its_debounce_and_reset_rearms_when_the_condition_holds() -> None:
    rig = settled(estimator="counting")
    out = rig.run(1.25, v=[3.70, 3.45, 3.45, 3.45])
    assert level_of(out, AlarmCode.CELL_OVERVOLTAGE) is A
    hot = {"v": [3.85, 3.45, 3.45, 3.45]}
    out = rig.run(1.0, **hot)
    assert level_of(out, AlarmCode.CELL_OVERVOLTAGE) is A  # the fault's own debounce
    assert not out.packs[0].contactor_open_request
    out = rig.at(**hot)
    assert level_of(out, AlarmCode.CELL_OVERVOLTAGE) is F
    fault = next(a for a in out.alarms if a.code is AlarmCode.CELL_OVERVOLTAGE and a.level is F)
    assert fault.since == rig.t
    assert "latched" in fault.detail
    assert rig.core.reset_latched() == 1
    out = rig.run(1.0, **hot)  # still 3.85 V: the fault's debounce starts again
    assert level_of(out, AlarmCode.CELL_OVERVOLTAGE) is A
    out = rig.at(**hot)
    assert level_of(out, AlarmCode.CELL_OVERVOLTAGE) is F
    assert rig.core.reset_latched() == 1
    assert rig.core.reset_latched() == 0  # nothing latched any more


def test_warning_hysteresis_and_recovery_debounce() -> None:
    rig = settled(estimator="counting")
    out = rig.run(1.25, v=3.52)  # pack mean over 3.50 V
    assert level_of(out, AlarmCode.PACK_OVERVOLTAGE) is W
    assert out.limits.ccl.reason is Reason.PACK_VOLTAGE
    assert out.limits.ccl.value == pytest.approx(50.0 * (3.55 - 3.52) / 0.05)
    out = rig.run(5.0, v=3.47)  # below the warning, not by the 50 mV hysteresis
    assert level_of(out, AlarmCode.PACK_OVERVOLTAGE) is W
    out = rig.run(1.0, v=3.44)
    assert level_of(out, AlarmCode.PACK_OVERVOLTAGE) is W  # clearing is debounced too
    out = rig.at(v=3.44)
    assert level_of(out, AlarmCode.PACK_OVERVOLTAGE) is None


def test_a_pack_fault_is_on_every_output_and_requests_that_pack_open() -> None:
    p = params(cells=(4, 4), sensors=(2, 2), capacity_ah=(100.0, 100.0), estimator="counting")
    core = Core(p, initial_soc=[0.5, 0.5])
    out: CoreOutput | None = None
    for k in range(8):
        t = k * DT
        out = core.step(t, [sample(t), sample(t, pack=1, v=[1.9, 2.8, 2.8, 2.8])])
    assert out is not None
    assert [po.contactor_open_request for po in out.packs] == [False, True]
    assert out.limits.ccl.value == out.limits.dcl.value == 0.0
    assert not out.limits.charge_enable
    assert not out.limits.discharge_enable
    assert any(a.level is F and a.pack == 1 for a in out.alarms)


# ------------------------------------------------------------------------------------------ overcurrent


def _trip_time(factor: float, *, i_sign: float = 1.0) -> float:
    """Seconds from the first overcurrent step to the ALARM at `factor` × the rated current."""
    rig = settled(estimator="counting")
    rated = 50.0 if i_sign > 0 else 100.0
    code = AlarmCode.CHARGE_OVERCURRENT if i_sign > 0 else AlarmCode.DISCHARGE_OVERCURRENT
    t0 = rig.t + DT
    for _ in range(200):
        out = rig.at(i=i_sign * factor * rated)
        if (level_of(out, code) or 0) >= A:
            return rig.t - t0
    return math.inf


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["charge", "discharge"])
def test_time_current_curve_higher_overcurrent_trips_faster(sign: float) -> None:
    k = (1.2**2 - 1.0) * 2.0  # overcurrent_factor 1.2 trips after overcurrent_time_s = 2 s
    times = {f: _trip_time(f, i_sign=sign) for f in (1.1, 1.2, 1.5, 1.9)}
    for f, t in times.items():
        # the interval's current is the one held since the previous step: exact on the DT grid
        assert t == pytest.approx(math.ceil(k / ((f * f - 1.0) * DT) - 1e-9) * DT), f
    assert times[1.2] == pytest.approx(2.0)
    assert times[1.1] > times[1.2] > times[1.5] > times[1.9]


def test_overcurrent_warning_first_then_the_curve_then_the_fault() -> None:
    rig = settled(estimator="counting")
    out = rig.run(1.25, i=52.5)  # 1.05 × rated: the warning after the debounce …
    assert level_of(out, AlarmCode.CHARGE_OVERCURRENT) is W
    assert out.limits.ccl.value > 0.0
    out = rig.run(7.0, i=52.5)  # … the alarm after K / (1.05² − 1) ≈ 8.6 s
    assert level_of(out, AlarmCode.CHARGE_OVERCURRENT) is W
    out = rig.run(1.0, i=52.5)
    assert level_of(out, AlarmCode.CHARGE_OVERCURRENT) is A
    assert out.limits.ccl.value == 0.0
    assert not out.packs[0].contactor_open_request
    rig2 = settled(estimator="counting")
    out = rig2.at(i=-250.0)  # 2.5 × rated discharge: the fault after overcurrent_fault_time_s (0.2 s)
    assert (level_of(out, AlarmCode.DISCHARGE_OVERCURRENT) or 0) < F
    out = rig2.at(i=-250.0)
    assert level_of(out, AlarmCode.DISCHARGE_OVERCURRENT) is F
    assert out.packs[0].contactor_open_request
    out = rig2.run(5.0)
    assert level_of(out, AlarmCode.DISCHARGE_OVERCURRENT) is F  # latched


def test_overcurrent_budget_cools_down_between_bursts() -> None:
    rig = settled(estimator="counting")
    for _ in range(5):
        out = rig.run(1.5, i=60.0)  # 1.5 s of a 2 s budget …
        assert (level_of(out, AlarmCode.CHARGE_OVERCURRENT) or 0) < A
        out = rig.run(3.0, i=0.0)  # … then enough rest to cool down
    rig2 = settled(estimator="counting")
    for _ in range(2):
        rig2.run(1.5, i=60.0)
        out = rig2.run(0.25, i=0.0)  # too short a pause: the second burst trips
    assert level_of(out, AlarmCode.CHARGE_OVERCURRENT) is A


# ------------------------------------------------------------------------------------------ derating


@pytest.mark.parametrize(
    ("initial", "kw", "name", "value", "reason"),
    [
        (0.95, {}, "ccl", 50.0 * (0.1 + 0.9 * 0.5), Reason.SOC_FULL),  # charge tapers near full …
        (0.05, {}, "dcl", 100.0 * (0.1 + 0.9 * 0.5), Reason.SOC_EMPTY),  # … discharge near empty
        (1.0, {}, "ccl", 50.0 * 0.1, Reason.SOC_FULL),  # the floor: absorption still gets a current
        (0.5, {"v": 3.52}, "ccl", 50.0 * 0.6, Reason.PACK_VOLTAGE),
        (0.5, {"v": 2.80}, "dcl", 100.0 * (2.80 - 2.70) / 0.15, Reason.PACK_VOLTAGE),
        (0.5, {"v": [3.40, 3.20, 3.20, 3.20]}, "ccl", 50.0 * (0.40 - 0.20) / 0.25, Reason.CELL_IMBALANCE),
        (0.5, {"v": [3.60, 3.45, 3.45, 3.45]}, "ccl", 25.0, Reason.CELL_VOLTAGE_HIGH),
        (0.5, {"temp": [2.5, 25.0]}, "ccl", 25.0, Reason.TEMPERATURE_LOW),
        (0.5, {"temp": [52.5, 25.0]}, "dcl", 50.0, Reason.TEMPERATURE_HIGH),
    ],
)
def test_derating_trapezoids_and_their_reasons(
    initial: float, kw: dict[str, Any], name: str, value: float, reason: Reason
) -> None:
    rig = Rig(Core(params(estimator="counting", recovery_ramp_s=0.0), initial_soc=[initial]))
    out = rig.run(2.0, **kw)
    lim = getattr(out.limits, name)
    assert lim.value == pytest.approx(value)
    assert lim.reason is reason


def test_soc_derating_can_be_switched_off() -> None:
    p = params(
        estimator="counting", recovery_ramp_s=0.0, soc_charge_derate_start=1.0, soc_discharge_derate_start=0.0
    )
    out = Rig(Core(p, initial_soc=[0.99])).run(1.0)
    assert (out.limits.ccl.value, out.limits.ccl.reason) == (50.0, Reason.CONFIG)
    out = Rig(Core(p, initial_soc=[0.01])).run(1.0)
    assert (out.limits.dcl.value, out.limits.dcl.reason) == (100.0, Reason.CONFIG)


# ------------------------------------------------------------------------------------------ sensor fault


def test_non_finite_reading_escalates_warning_alarm_fault() -> None:
    rig = settled(estimator="counting")
    bad = {"temp": [math.nan, 25.0]}
    out = rig.at(**bad)
    assert level_of(out, AlarmCode.SENSOR_FAULT) is W  # at once
    out = rig.run(1.0, **bad)
    assert level_of(out, AlarmCode.SENSOR_FAULT) is A  # after the debounce: both directions 0
    assert out.limits.ccl.value == out.limits.dcl.value == 0.0
    assert out.limits.dcl.reason is Reason.SENSOR_FAULT
    out = rig.run(9.0 - DT, **bad)
    assert level_of(out, AlarmCode.SENSOR_FAULT) is A
    out = rig.at(**bad)  # 10 s: latched fault
    assert level_of(out, AlarmCode.SENSOR_FAULT) is F
    out = rig.run(5.0)
    assert level_of(out, AlarmCode.SENSOR_FAULT) is F
    rig.core.reset_latched(0)
    out = rig.at()
    assert level_of(out, AlarmCode.SENSOR_FAULT) is None


# ------------------------------------------------------------------------------------------ latching


def test_latched_faults_survive_a_restart_through_getter_and_setter() -> None:
    rig = settled(estimator="counting")
    rig.run(2.0, v=[1.9, 2.8, 2.8, 2.8])
    rig.run(2.0)
    kept = rig.core.latched()
    assert [(p, key) for p, key, _ in kept] == [(0, "cell_uv_fault")]
    fresh = Core(params(estimator="counting"), initial_soc=[0.5])
    fresh.restore_latched([*kept, (0, "no_such_latch", 0.0), (7, "cell_uv_fault", 0.0)])  # stale: ignored
    out = fresh.step(100.0, [sample(100.0)])
    assert level_of(out, AlarmCode.CELL_UNDERVOLTAGE) is F
    assert out.packs[0].contactor_open_request
    assert fresh.latched() == kept
    with pytest.raises(ValueError, match="pack 3"):
        fresh.reset_latched(3)


def test_latch_tables_are_consistent() -> None:
    assert len(_kernel.LATCHES) == len(_kernel.LATCH_KEYS) == len(set(_kernel.LATCH_KEYS))
    for row in _kernel.LATCHES:
        code, level, zc, zd, _reason, _detail, _flag, keep = row
        if keep:  # latched rows are the tier-3 faults, which zero both directions
            assert (level, zc, zd) == (F, 1, 1)
        assert AlarmCode(_kernel.ALARM_CODES[code])
    assert {Reason(r) for r in _kernel.REASONS} <= set(Reason)


def test_reset_through_the_ems_control_path_reaches_the_core() -> None:
    settings, _ = load_settings(
        None,
        {
            "packs": [{"id": "a", "cells": 4, "sensors": 2, "capacity_ah": 100}],
            "web.token": "x" * 32,
            "limits.estimator": "counting",
        },
        env={},
    )
    pipe = Pipeline(settings)
    assert pipe.ems is not None
    k = 0

    def feed(v: list[float], n: int) -> Any:
        nonlocal k
        state = None
        for _ in range(n):
            k += 1
            t = k * DT
            pipe.submit(PackSample(0, t, np.array(v), np.full(2, 25.0), 0.0, sum(v), alive=k % 256))
            state = pipe.step(t)
        return state

    state = feed([1.9, 2.8, 2.8, 2.8], 12)
    assert state.alarm_level(AlarmCode.CELL_UNDERVOLTAGE) is F
    assert state.packs[0].contactor_open_request
    state = feed([3.3] * 4, 4)
    assert state.alarm_level(AlarmCode.CELL_UNDERVOLTAGE) is F  # latched
    pipe.ems.request_reset(None)
    state = feed([3.3] * 4, 1)
    assert state.alarm_level(AlarmCode.CELL_UNDERVOLTAGE) is None
    assert pipe.core.latched() == ()  # (whether the pack rejoins at once is bmsgw/multipack.py's call)
    assert pipe.ems.take_resets() == []  # consumed


def test_limits_config_keys_reach_the_core_and_are_validated() -> None:
    settings, _ = load_settings(
        None,
        {
            "packs": [{"id": "a", "cells": 4, "sensors": 2}],
            "limits.cell_v_max_fault": 3.9,
            "limits.pack_v_max_warn": 3.52,
            "limits.imbalance_alarm_v": 0.3,
            "limits.float_voltage_cell_v": 3.40,
            "limits.tr_confirm_s": 5.0,
            "limits.soc_derate_floor": 0.2,
        },
        env={},
    )
    p = core_params(settings)
    assert (p.cell_v_max_fault, p.pack_v_max_warn, p.imbalance_alarm_v) == (3.9, 3.52, 0.3)
    assert (p.float_voltage_cell_v, p.tr_confirm_s, p.soc_derate_floor) == (3.40, 5.0, 0.2)
    assert p.pack_v_max_alarm == 3.55  # unset: the chemistry's
    for key, value, words in (
        ("limits.overcurrent_fault_factor", 1.1, "overcurrent_fault_factor"),
        ("limits.tr_rate_warn_c_s", 2.0, "tr_rate_warn_c_s"),
        ("limits.soc_discharge_derate_start", 0.95, "soc_discharge_derate_start"),
        ("limits.soc_derate_floor", 1.5, "soc_derate_floor"),
        ("limits.cell_v_max_fault", 3.6, "cell_v_max_fault"),  # below the LFP alarm level (3.65)
        ("limits.float_voltage_cell_v", 3.6, "float_voltage_cell_v"),  # above the charge voltage
        ("limits.pack_v_min_warn", 3.6, "pack_v_min_warn < pack_v_max_warn"),  # tiers out of order
    ):
        with pytest.raises(ConfigError, match=words):
            load_settings(None, {"packs": [{"id": "a"}], key: value}, env={})


@pytest.mark.parametrize("chem", list(Chemistry))
def test_chemistry_tiers_nest(chem: Chemistry) -> None:
    p = CoreParams.defaults(chem, (16,), (4,), (100.0,))
    assert p.cell_v_min_fault < p.cell_v_min_alarm < p.cell_v_min_warn < p.cell_v_max_warn
    assert p.cell_v_max_warn < p.cell_v_max_alarm < p.cell_v_max_fault
    assert p.pack_v_min_fault < p.pack_v_min_alarm < p.pack_v_min_warn < p.discharge_voltage_cell_v
    assert p.charge_voltage_cell_v < p.pack_v_max_warn < p.pack_v_max_alarm < p.pack_v_max_fault
    assert p.discharge_voltage_cell_v < p.float_voltage_cell_v <= p.charge_voltage_cell_v
    assert 0.0 < p.rebulk_spread_v < p.imbalance_warn_v < p.imbalance_alarm_v < p.imbalance_fault_v
    with pytest.raises(ValueError, match="cell_v_max_fault"):
        CoreParams.defaults(chem, (16,), (4,), (100.0,), cell_v_max_fault=p.cell_v_max_alarm)
