"""Thermal-runaway staging: filtered dT/dt per sensor and neighbour ΔT; warning → derate → pack isolation →
system shutdown on the GB 38031 confirmation (≥ 1 °C/s for > 3 s with a voltage drop or the maximum
temperature). Deterministic: every step has an explicit t."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
from test_core import DT, params, sample

from bmsgw.core import Core, CoreOutput
from bmsgw.model import AlarmCode, AlarmLevel, Reason

TR = AlarmCode.THERMAL_RUNAWAY


def _core(**overrides: float) -> Core:
    p = params(
        cells=(4, 4), sensors=(2, 2), capacity_ah=(100.0, 100.0), estimator="counting", recovery_ramp_s=0.0,
        **overrides,
    )  # fmt: skip
    return Core(p, initial_soc=[0.5, 0.5])


def _run(
    core: Core,
    seconds: float,
    temp0: Callable[[float], float],
    *,
    t0: float = 0.0,
    v0: Sequence[float] = (3.3, 3.3, 3.3, 3.3),
) -> list[tuple[float, CoreOutput]]:
    """Step both packs every DT from t0; pack 0's first sensor follows temp0(t), everything else is calm."""
    outs = []
    for k in range(1, round(seconds / DT) + 1):
        t = t0 + k * DT
        s0 = sample(t, temp=[temp0(t), 25.0], v=list(v0))
        outs.append((t, core.step(t, [s0, sample(t, pack=1)])))
    return outs


def _tr(out: CoreOutput, pack: int | None = 0) -> AlarmLevel | None:
    levels = [a.level for a in out.alarms if a.code is TR and a.pack == pack]
    return max(levels) if levels else None


def _first(outs: list[tuple[float, CoreOutput]], level: AlarmLevel, pack: int | None = 0) -> float | None:
    return next((t for t, o in outs if (_tr(o, pack) or 0) >= level), None)


def ramp(rate: float, start: float = 10.0, stop: float = 1e9) -> Callable[[float], float]:
    """25 °C, rising at `rate` °C/s between `start` and `stop`."""
    return lambda t: 25.0 + rate * (min(max(t, start), stop) - start)


def test_slow_rise_is_a_warning_only() -> None:
    outs = _run(_core(), 40.0, ramp(0.45))  # filtered dT/dt settles at 0.45 °C/s: above 0.3, below 0.6
    assert _first(outs, AlarmLevel.WARNING) is not None
    assert _first(outs, AlarmLevel.ALARM) is None
    last = outs[-1][1]
    assert last.limits.ccl.value == pytest.approx(50.0 * 2)  # a warning does not derate
    assert last.limits.dcl.value == pytest.approx(100.0 * 2)


def test_faster_rise_derates_then_sustained_rise_isolates_the_pack() -> None:
    outs = _run(_core(), 30.0, ramp(0.8))
    t_alarm = _first(outs, AlarmLevel.ALARM)
    assert t_alarm is not None
    out = dict(outs)[t_alarm]
    assert out.limits.ccl.value == 0.0  # stage 2: no charging …
    assert out.limits.ccl.reason is Reason.THERMAL_RUNAWAY
    assert out.limits.dcl.value == pytest.approx(2 * 100.0 * 0.5)  # … discharge halved
    assert out.limits.dcl.reason is Reason.THERMAL_RUNAWAY
    assert not any(po.contactor_open_request for po in out.packs)
    assert _first(outs, AlarmLevel.FAULT) is None  # 0.8 °C/s never reaches the 1 °C/s confirmation rate

    outs = _run(_core(), 20.0, ramp(1.5))
    t_iso = _first(outs, AlarmLevel.FAULT)
    assert t_iso is not None
    out = dict(outs)[t_iso]
    assert [po.contactor_open_request for po in out.packs] == [True, False]  # that pack only
    assert _tr(out, None) is None  # no shutdown: 33 °C and no voltage drop
    assert "isolation" in next(a.detail for a in out.alarms if a.code is TR)


def test_rate_must_hold_more_than_three_seconds() -> None:
    core = _core()
    f = ramp(1.5)
    rate_ok: list[float] = []
    t_iso = None
    for k in range(1, 161):
        t = k * DT
        out = core.step(t, [sample(t, temp=[f(t), 25.0]), sample(t, pack=1)])
        if core.debug_state()["th_rate"][0] >= 1.0:
            rate_ok.append(t)
        if t_iso is None and _tr(out) is AlarmLevel.FAULT:
            t_iso = t
    assert rate_ok
    assert t_iso is not None
    assert t_iso - rate_ok[0] > 3.0  # strictly more than 3 s after the filtered rate reached 1 °C/s …
    assert t_iso - rate_ok[0] <= 3.0 + DT + 1e-9  # … at the first step after that

    # a rise that stops after 4 s holds 1 °C/s for less than 3 s: derate, never isolation
    outs = _run(_core(), 30.0, ramp(1.5, start=10.0, stop=14.0))
    assert _first(outs, AlarmLevel.ALARM) is not None
    assert _first(outs, AlarmLevel.FAULT) is None
    assert _tr(outs[-1][1]) is None  # and it clears once the temperature is steady


def test_gb38031_confirmation_by_maximum_temperature_shuts_the_system_down() -> None:
    core = _core()
    outs = _run(core, 40.0, ramp(1.5))
    t_shut = _first(outs, AlarmLevel.FAULT, pack=None)
    assert t_shut is not None
    assert ramp(1.5)(t_shut) >= 55.0 > ramp(1.5)(t_shut - DT)  # the step the sensor reached the maximum
    out = dict(outs)[t_shut]
    assert [po.contactor_open_request for po in out.packs] == [True, True]  # every pack
    assert out.limits.ccl.value == out.limits.dcl.value == 0.0
    assert out.limits.ccl.reason is Reason.THERMAL_RUNAWAY
    system = next(a for a in out.alarms if a.code is TR and a.pack is None)
    assert "GB 38031" in system.detail
    assert "confirmed" in next(a.detail for a in out.alarms if a.code is TR and a.pack == 0)
    # latched: cooling down changes nothing …
    outs = _run(core, 20.0, lambda t: 25.0, t0=outs[-1][0])
    assert _tr(outs[-1][1], None) is AlarmLevel.FAULT
    assert all(po.contactor_open_request for po in outs[-1][1].packs)
    # … until the reset
    assert core.reset_latched() == 3  # isolation, confirmation and the overtemperature fault (70 °C ≥ 65 °C)
    outs = _run(core, 2.0, lambda t: 25.0, t0=outs[-1][0])
    last = outs[-1][1]
    assert _tr(last) is None
    assert _tr(last, None) is None
    assert not any(po.contactor_open_request for po in last.packs)
    assert last.limits.ccl.value == pytest.approx(100.0)


def test_gb38031_confirmation_by_voltage_drop() -> None:
    v = (2.2, 3.3, 3.3, 3.3)  # one cell collapsed: below 75 % of the pack's mean cell
    outs = _run(
        _core(cell_v_min_fault=1.0, cell_v_min_alarm=1.5, empty_voltage_cell_v=1.5), 30.0, ramp(1.5), v0=v
    )
    t_iso = _first(outs, AlarmLevel.FAULT)
    t_shut = _first(outs, AlarmLevel.FAULT, pack=None)
    assert t_iso is not None
    assert t_shut == t_iso  # the voltage condition is already there when the rate condition completes
    assert ramp(1.5)(t_shut) < 55.0


def test_a_single_glitch_or_a_static_hot_spot_is_at_most_a_warning() -> None:
    outs = _run(_core(), 20.0, lambda t: 85.0 if abs(t - 5.0) < 1e-9 else 25.0)  # one 60 °C spike
    assert _first(outs, AlarmLevel.ALARM) is None
    outs = _run(_core(), 10.0, lambda t: 45.0)  # 20 K above its neighbour, not rising
    assert _first(outs, AlarmLevel.WARNING) is not None
    assert _first(outs, AlarmLevel.ALARM) is None
    assert "hot spot" in next(a.detail for a in outs[-1][1].alarms if a.code is TR)


def test_sensorless_packs_have_no_thermal_staging() -> None:
    core = Core(params(sensors=(0,), estimator="counting"), initial_soc=[0.5])
    for k in range(1, 40):
        out = core.step(k * DT, [sample(k * DT, ns=0)])
    assert not [a for a in out.alarms if a.code is TR]
