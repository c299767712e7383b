"""Simulated battery: pack physics, solar-day profile, fault scenarios."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmsgw.core.chemistry import ocv, profile
from bmsgw.model import F64, Chemistry
from bmsgw.sim import (
    FaultKind,
    Scenario,
    ScenarioError,
    SimPack,
    SimPackConfig,
    SimReading,
    SolarDayProfile,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "scenarios"


def make_pack(**kw: Any) -> SimPack:
    """A 16-cell 100 Ah LFP pack, overridable."""
    args: dict[str, Any] = {"cells": 16, "chemistry": Chemistry.LFP, "capacity_ah": 100.0}
    args.update(kw)
    return SimPack(SimPackConfig(**args))


def run(pack: SimPack, seconds: float, current: float, dt: float = 1.0) -> None:
    """Step `pack` at constant current for `seconds`."""
    for _ in range(round(seconds / dt)):
        pack.step(dt, current)


def overpotential(pack: SimPack) -> F64:
    """Terminal voltage minus OCV(true SOC), per cell."""
    p = profile(pack.config.chemistry)
    r = pack.reading()
    rest: F64 = np.array([ocv(p, float(s)) for s in r.soc_true])
    return r.cell_v - rest


# --- cells -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("current", [20.0, -35.0])
def test_charge_is_conserved(current: float) -> None:
    pack = make_pack(self_discharge_per_day=0.0)
    soc0 = pack.soc_true
    run(pack, 1800.0, current, dt=0.1)
    expected = soc0 + current * 1800.0 / (pack.capacity_true * 3600.0)
    np.testing.assert_allclose(pack.soc_true, expected, rtol=0, atol=1e-9)


def test_soc_stays_within_0_1() -> None:
    pack = make_pack(initial_soc=0.95)
    run(pack, 3600.0, 100.0, dt=10.0)
    assert pack.soc_true.max() == 1.0
    run(pack, 4 * 3600.0, -100.0, dt=10.0)
    assert pack.soc_true.min() == 0.0


def test_charging_raises_voltage_by_ir_then_rc() -> None:
    pack = make_pack(self_discharge_per_day=0.0)
    rest = pack.reading().cell_v
    np.testing.assert_allclose(overpotential(pack), 0.0, atol=1e-12)
    current = 50.0
    pack.step(1e-6, current)
    np.testing.assert_allclose(pack.reading().cell_v - rest, current * pack.r0_true, rtol=1e-3)
    run(pack, 600.0, current)  # 10 τ: the RC branch has settled at I·R1
    r1 = pack.r0_true * pack.config.r1_fraction
    np.testing.assert_allclose(overpotential(pack), current * (pack.r0_true + r1), rtol=0.02)


def test_voltage_relaxes_with_tau() -> None:
    pack = make_pack(self_discharge_per_day=0.0, thermal_mass_j_per_k=1e15)  # isothermal: R1 constant
    run(pack, 600.0, 50.0)
    v1 = overpotential(pack) - 50.0 * pack.r0_true
    pack.step(1e-9, 0.0)  # the R0 drop goes at once
    np.testing.assert_allclose(overpotential(pack), v1, rtol=1e-6)
    tau = pack.config.rc_tau_s
    run(pack, tau, 0.0, dt=0.1)
    np.testing.assert_allclose(overpotential(pack), v1 * math.exp(-1.0), rtol=1e-6)
    run(pack, 9 * tau, 0.0)
    assert np.abs(overpotential(pack)).max() < 1e-4 * np.abs(v1).max() + 1e-9


def test_discharge_lowers_voltage() -> None:
    pack = make_pack()
    rest = pack.reading().cell_v
    run(pack, 10.0, -50.0)
    assert (pack.reading().cell_v < rest).all()


def test_i2r_heating_and_cooling_toward_ambient() -> None:
    pack = make_pack(ambient_c=20.0)
    np.testing.assert_allclose(pack.temperature_true, 20.0)
    run(pack, 1800.0, 100.0, dt=1.0)
    heated = pack.temperature_true
    assert (heated > 20.5).all()
    # Hotter cells are the ones with more resistance.
    assert np.corrcoef(heated, pack.r0_25c)[0, 1] > 0.9
    reading = pack.reading()
    assert reading.cell_t.shape == (4,)
    np.testing.assert_allclose(reading.cell_t, heated.reshape(4, 4).mean(axis=1))
    run(pack, 6 * 3600.0, 0.0, dt=10.0)
    assert np.abs(pack.temperature_true - 20.0).max() < 0.05 * (heated.max() - 20.0)


def test_heating_rate_matches_i2r_over_thermal_mass() -> None:
    pack = make_pack()
    current = 80.0
    pack.step(1.0, current)
    mass = pack.config.thermal_mass_j_per_k
    assert mass is not None
    rate = pack.temperature_true - pack.config.ambient_c
    expected = current**2 * pack.r0_25c / mass  # V1 ≈ 0 after 1 s, so R1 heats little
    np.testing.assert_allclose(rate, expected, rtol=0.05)


def test_resistance_higher_when_cold() -> None:
    pack = make_pack(ambient_c=0.0)
    ratio = pack.r0_true / pack.r0_25c
    assert 1.7 < ratio.min() <= ratio.max() < 2.5
    pack.set_ambient(25.0)
    run(pack, 8 * 3600.0, 0.0, dt=60.0)
    np.testing.assert_allclose(pack.r0_true, pack.r0_25c, rtol=0.01)


def test_same_seed_is_deterministic_and_seeds_differ() -> None:
    def trace(seed: int) -> list[SimReading]:
        pack = make_pack(seed=seed)
        out = []
        for k in range(200):
            pack.step(0.1, 30.0 * math.sin(k / 20.0))
            out.append(pack.reading())
        return out

    a, b, c = trace(7), trace(7), trace(8)
    for ra, rb in zip(a, b, strict=True):
        np.testing.assert_array_equal(ra.cell_v, rb.cell_v)
        np.testing.assert_array_equal(ra.cell_t, rb.cell_t)
        assert ra.voltage == rb.voltage
    assert not np.array_equal(a[-1].cell_v, c[-1].cell_v)


def test_spread_present_and_bounded() -> None:
    pack = make_pack(seed=3, initial_soc=0.5)
    cap, soc, r0 = pack.capacity_true, pack.soc_true, pack.r0_25c
    assert np.ptp(cap) > 0
    assert np.ptp(soc) > 0
    assert np.ptp(r0) > 0
    assert np.all(np.abs(cap / 100.0 - 1.0) <= 0.03)
    assert np.all(np.abs(soc - 0.5) <= 0.02)
    nominal = profile(Chemistry.LFP).r0_ohm_ah / cap
    assert np.all(np.abs(r0 / nominal - 1.0) <= 0.1 + 1e-12)
    flat = make_pack(capacity_spread=0.0, soc_spread=0.0, resistance_spread=0.0)
    for truth in (flat.capacity_true, flat.soc_true, flat.r0_25c):
        assert np.ptp(truth) == 0


@pytest.mark.parametrize("chemistry", list(Chemistry))
def test_overcharge_trips_overvoltage_but_stays_plausible(chemistry: Chemistry) -> None:
    p = profile(chemistry)
    pack = make_pack(chemistry=chemistry, initial_soc=0.97)
    assert pack.reading().cell_v.max() < p.cell_v_max_alarm
    run(pack, 600.0, 50.0)  # +8 % of capacity past the start: beyond full for every cell
    v = pack.reading().cell_v
    assert v.max() > p.cell_v_max_alarm
    assert v.max() < p.v_max_physical
    run(pack, 3 * 3600.0, 100.0, dt=10.0)  # far beyond: saturates, still plausible
    v = pack.reading().cell_v
    assert p.v_min_physical < v.min()
    assert v.max() < p.v_max_physical


@pytest.mark.parametrize("chemistry", list(Chemistry))
def test_overdischarge_trips_undervoltage(chemistry: Chemistry) -> None:
    p = profile(chemistry)
    pack = make_pack(chemistry=chemistry, initial_soc=0.03)
    run(pack, 600.0, -50.0)
    v = pack.reading().cell_v
    assert v.min() < p.cell_v_min_alarm
    assert v.min() > p.v_min_physical


def test_self_discharge_with_per_cell_spread() -> None:
    pack = make_pack(self_discharge_per_day=0.01, soc_spread=0.0)
    soc0 = pack.soc_true
    run(pack, 10 * 86400.0, 0.0, dt=600.0)
    drop = soc0 - pack.soc_true
    assert np.all((drop > 0.1 * 0.5 - 1e-9) & (drop < 0.1 * 1.5 + 1e-9))
    assert np.ptp(drop) > 0


def test_balancing_bleeds_only_masked_cells() -> None:
    pack = make_pack(self_discharge_per_day=0.0)
    soc0 = pack.soc_true
    pack.set_balance(0b101, bleed_current_a=0.1)
    assert pack.balance_mask == 0b101
    run(pack, 3600.0, 0.0, dt=10.0)
    drop = soc0 - pack.soc_true
    expected = np.zeros(16)
    expected[[0, 2]] = 0.1 * 3600.0 / (pack.capacity_true[[0, 2]] * 3600.0)
    np.testing.assert_allclose(drop, expected, atol=1e-12)
    pack.set_balance(0)
    soc1 = pack.soc_true
    run(pack, 3600.0, 0.0, dt=10.0)
    np.testing.assert_allclose(pack.soc_true, soc1, atol=1e-12)
    with pytest.raises(ValueError, match="mask"):
        pack.set_balance(1 << 16)


def test_reading_is_consistent_and_read_only() -> None:
    pack = make_pack(cells=15, sensors=4)
    pack.step(0.1, -12.5)
    r = pack.reading()
    assert r.current == -12.5
    assert r.voltage == pytest.approx(float(r.cell_v.sum()))
    assert r.cell_v.shape == (15,)
    assert r.cell_t.shape == (4,)
    for arr in (r.cell_v, r.cell_t, r.soc_true, r.capacity_true):
        with pytest.raises(ValueError, match="read-only"):
            arr[0] = 0.0
    pack.step(100.0, 50.0)
    assert r.cell_v is not pack.reading().cell_v


@pytest.mark.parametrize(
    ("kw", "name"),
    [
        ({"cells": 0}, "cells"),
        ({"sensors": 17}, "sensors"),
        ({"initial_soc": 1.5}, "initial_soc"),
        ({"capacity_ah": 0.0}, "capacity_ah"),
        ({"rc_tau_s": 0.0}, "rc_tau_s"),
    ],
)
def test_config_validation(kw: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        make_pack(**kw)


def test_thermal_defaults_scale_with_capacity() -> None:
    small = SimPackConfig(cells=4, chemistry=Chemistry.NMC, capacity_ah=50.0)
    big = SimPackConfig(cells=4, chemistry=Chemistry.NMC, capacity_ah=200.0)
    assert big.thermal_mass_j_per_k == pytest.approx(4 * (small.thermal_mass_j_per_k or 0))
    assert big.thermal_conductance_w_per_k == pytest.approx(4 * (small.thermal_conductance_w_per_k or 0))
    given_ = SimPackConfig(cells=4, chemistry=Chemistry.NMC, capacity_ah=50.0, thermal_mass_j_per_k=123.0)
    assert given_.thermal_mass_j_per_k == 123.0


# --- profile -----------------------------------------------------------------------------------------


def test_profile_charges_at_midday_and_discharges_at_night() -> None:
    p = SolarDayProfile.for_capacity(100.0, packs=2)  # starts at 08:00
    hour = 3600.0
    assert p.demand(4 * hour) > 0.1 * 200.0  # 12:00
    assert p.demand(5 * hour) > 0  # 13:00
    assert p.demand(12 * hour) < 0  # 20:00
    assert p.demand(19 * hour) < 0  # 03:00
    assert p.demand(14 * hour) < p.demand(19 * hour)  # evening peak above the night base


def test_profile_is_deterministic_and_seeded() -> None:
    ts = np.arange(0.0, 86400.0, 97.0)
    a = [SolarDayProfile.for_capacity(100.0, seed=4).demand(t) for t in ts]
    b = [SolarDayProfile.for_capacity(100.0, seed=4).demand(t) for t in ts]
    c = [SolarDayProfile.for_capacity(100.0, seed=5).demand(t) for t in ts]
    assert a == b
    assert a != c
    p = SolarDayProfile.for_capacity(100.0, seed=4)
    assert [p.demand(t) for t in reversed(ts)] == a[::-1]  # order of calls does not matter


def test_profile_day_length_compresses_the_day() -> None:
    full = SolarDayProfile.for_capacity(100.0, seed=2)
    fast = SolarDayProfile.for_capacity(100.0, seed=2, day_length_s=3600.0)
    for t in (0.0, 500.0, 1234.5, 3000.0, 5000.0):
        assert fast.demand(t) == pytest.approx(full.demand(t * 24.0))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_profile_cycles_60_to_80_percent_a_day(seed: int) -> None:
    cap = 280.0
    p = SolarDayProfile.for_capacity(cap, packs=1, seed=seed)
    dt = 60.0
    soc, socs = 0.5, []
    for k in range(int(4 * 86400 / dt)):
        soc = min(1.0, max(0.0, soc + p.demand(k * dt) * dt / (cap * 3600.0)))
        socs.append(soc)
    per_day = int(86400 / dt)
    for day in (2, 3):
        window = socs[day * per_day : (day + 1) * per_day]
        assert 0.6 <= max(window) - min(window) <= 0.8


def test_profile_validation() -> None:
    with pytest.raises(ValueError, match="sunrise"):
        SolarDayProfile(10.0, 1.0, 1.0, sunrise_h=21.0)
    with pytest.raises(ValueError, match="capacity"):
        SolarDayProfile.for_capacity(0.0)


# --- scenarios ----------------------------------------------------------------------------------------


def test_examples_load() -> None:
    paths = sorted(EXAMPLES.glob("*.toml"))
    assert {p.name for p in paths} >= {"cell-overvoltage.toml", "faults-tour.toml"}
    for path in paths:
        for chemistry in Chemistry:
            s = Scenario.load(path, chemistry=chemistry, capacity_ah=280.0)
            s.check(packs=1, cells=16, sensors=4)
    tour = Scenario.load(EXAMPLES / "faults-tour.toml")
    assert {f.kind for f in tour.faults} == set(FaultKind)
    ov = Scenario.load(EXAMPLES / "cell-overvoltage.toml")
    (f,) = ov.faults
    assert (f.kind, f.at, f.pack, f.cell, f.duration) == (FaultKind.CELL_OVERVOLTAGE, 2400.0, 0, 5, 120.0)


def test_default_values_per_kind() -> None:
    faults = [
        {"at": 0, "kind": "cell_overvoltage", "cell": 0},
        {"at": 0, "kind": "cell_undervoltage", "cell": 0},
        {"at": 0, "kind": "overtemperature", "sensor": 0},
        {"at": 0, "kind": "undertemperature", "sensor": 0},
        {"at": 0, "kind": "overcurrent"},
        {"at": 0, "kind": "link_loss"},
    ]
    p = profile(Chemistry.NMC)
    s = Scenario.from_dict({"faults": faults}, chemistry=Chemistry.NMC, capacity_ah=50.0)
    values = [f.value for f in s.faults]
    assert values[0] == pytest.approx(p.cell_v_max_alarm + 0.05)
    assert values[1] == pytest.approx(p.cell_v_min_alarm - 0.05)
    assert (values[2] or 0) > 55.0
    assert (values[3] or 0) < -10.0
    assert values[4] == pytest.approx(-100.0)
    assert values[5] is None
    assert all(f.duration == math.inf and f.pack == 0 for f in s.faults)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (
            {"faults": [{"at": 1, "kind": "overheat"}]},
            "faults[0].kind: 'overheat' is not one of cell_overvoltage",
        ),
        ({"faults": [{"kind": "link_loss"}]}, "faults[0].at: missing"),
        ({"faults": [{"at": 1}]}, "faults[0].kind: missing"),
        ({"faults": [{"at": -5, "kind": "link_loss"}]}, "faults[0].at: -5 is not allowed"),
        ({"faults": [{"at": True, "kind": "link_loss"}]}, "faults[0].at: True"),
        ({"faults": [{"at": "soon", "kind": "link_loss"}]}, "faults[0].at: 'soon'"),
        ({"faults": [{"at": 1, "kind": "link_loss", "duration": 0}]}, "faults[0].duration: 0"),
        ({"faults": [{"at": 1, "kind": "link_loss", "pack": -1}]}, "faults[0].pack: -1"),
        ({"faults": [{"at": 1, "kind": "link_loss", "pack": 1.5}]}, "faults[0].pack: 1.5"),
        ({"faults": [{"at": 1, "kind": "link_loss", "value": 3}]}, "faults[0].value: unknown or unused key"),
        ({"faults": [{"at": 1, "kind": "link_loss", "cell": 3}]}, "for kind 'link_loss'"),
        ({"faults": [{"at": 1, "kind": "overcurrent", "volts": 3}]}, "faults[0].volts: unknown"),
        ({"faults": [{"at": 1, "kind": "cell_overvoltage"}]}, "faults[0].cell: missing"),
        ({"faults": [{"at": 1, "kind": "overtemperature"}]}, "faults[0].sensor: missing"),
        ({"faults": [{"at": 1, "kind": "overtemperature", "cell": 2, "sensor": 0}]}, "faults[0].cell"),
        ({"faults": [{"at": 1, "kind": "cell_overvoltage", "cell": 0, "value": -1}]}, "faults[0].value: -1"),
        ({"faults": [{"at": 1, "kind": "overcurrent", "value": math.nan}]}, "faults[0].value: nan"),
        (
            {"faults": [{"at": 1, "kind": "link_loss"}, {"at": 2, "kind": "link_loss", "pack": "x"}]},
            "faults[1].pack: 'x'",
        ),
        ({"faults": {"at": 1}}, "faults: "),
        ({"faults": [3]}, "faults[0]: 3"),
        ({"fault": []}, "fault: unknown"),
        ({"load": {"initial_soc": 1.2}}, "load.initial_soc: 1.2 is not allowed"),
        ({"load": {"pv_peak": 1.0}}, "load.pv_peak: unknown"),
        ({"load": {"sunrise_h": 21.0}}, "load: "),
        ({"load": {"seed": 1.5}}, "load.seed: 1.5"),
        ({"load": 3}, "load: 3"),
        ({"description": 3}, "description: 3"),
    ],
)
def test_invalid_scenarios_name_the_key(data: dict[str, Any], needle: str) -> None:
    with pytest.raises(ScenarioError) as err:
        Scenario.from_dict(data)
    assert needle in str(err.value)


def test_error_lists_what_is_allowed() -> None:
    with pytest.raises(ScenarioError, match="allowed keys for kind 'link_loss': at, kind, pack, duration"):
        Scenario.from_dict({"faults": [{"at": 1, "kind": "link_loss", "sensor": 0}]})
    with pytest.raises(ScenarioError, match=r">= 0 \(simulated s\)"):
        Scenario.from_dict({"faults": [{"at": -1, "kind": "link_loss"}]})


def test_load_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[[faults]]\nat = 1\nkind = 'overheat'\n")
    with pytest.raises(ScenarioError, match=r"bad\.toml: faults\[0\]\.kind"):
        Scenario.load(bad)
    broken = tmp_path / "broken.toml"
    broken.write_text("[[faults]\n")
    with pytest.raises(ScenarioError, match=r"broken\.toml: not valid TOML"):
        Scenario.load(broken)
    with pytest.raises(ScenarioError, match="cannot read"):
        Scenario.load(tmp_path / "missing.toml")


def test_check_against_the_simulated_system() -> None:
    s = Scenario.from_dict(
        {
            "faults": [
                {"at": 1, "kind": "cell_overvoltage", "pack": 1, "cell": 15},
                {"at": 1, "kind": "overtemperature", "sensor": 3},
            ]
        }
    )
    s.check(packs=2, cells=16, sensors=4)
    with pytest.raises(ScenarioError, match=r"faults\[0\]\.pack: 1 is out of range; allowed 0\.\.0"):
        s.check(packs=1, cells=16, sensors=4)
    with pytest.raises(ScenarioError, match=r"faults\[0\]\.cell: 15 is out of range; allowed 0\.\.14"):
        s.check(packs=2, cells=15, sensors=4)
    with pytest.raises(ScenarioError, match=r"faults\[1\]\.sensor: 3"):
        s.check(packs=2, cells=16, sensors=3)


def _reading() -> SimReading:
    pack = make_pack()
    pack.step(1.0, 10.0)
    return pack.reading()


def test_apply_forces_values_only_inside_the_window() -> None:
    s = Scenario.from_dict(
        {
            "faults": [
                {"at": 100, "kind": "cell_overvoltage", "cell": 5, "duration": 20, "value": 3.9},
                {"at": 110, "kind": "overtemperature", "sensor": 2, "duration": 5},
                {"at": 100, "kind": "cell_undervoltage", "pack": 1, "cell": 0, "duration": 20},
            ]
        }
    )
    r = _reading()
    assert s.apply(0, 99.999, r) is r
    assert s.apply(0, 120.0, r) is r
    assert s.apply(2, 110.0, r) is r
    during = s.apply(0, 100.0, r)
    assert during.cell_v[5] == 3.9
    np.testing.assert_array_equal(np.delete(during.cell_v, 5), np.delete(r.cell_v, 5))
    np.testing.assert_array_equal(during.cell_t, r.cell_t)
    assert during.voltage == pytest.approx(float(during.cell_v.sum()))
    assert during.current == r.current
    np.testing.assert_array_equal(during.soc_true, r.soc_true)
    assert r.cell_v[5] != 3.9  # the original reading is untouched
    both = s.apply(0, 112.0, r)
    assert both.cell_v[5] == 3.9
    assert both.cell_t[2] == 70.0
    assert s.apply(0, 115.0, r).cell_t[2] == r.cell_t[2]
    other = s.apply(1, 119.9, r)
    assert other.cell_v[0] == pytest.approx(profile(Chemistry.LFP).cell_v_min_alarm - 0.05)
    with pytest.raises(ValueError, match="read-only"):
        during.cell_v[0] = 1.0


def test_later_fault_wins_and_open_ended_faults() -> None:
    s = Scenario.from_dict(
        {
            "faults": [
                {"at": 0, "kind": "overtemperature", "sensor": 0, "value": 60},
                {"at": 50, "kind": "undertemperature", "sensor": 0, "value": -30, "duration": 10},
            ]
        }
    )
    r = _reading()
    assert s.apply(0, 10.0, r).cell_t[0] == 60.0
    assert s.apply(0, 55.0, r).cell_t[0] == -30.0
    assert s.apply(0, 1e9, r).cell_t[0] == 60.0
    assert s.end_s == 60.0


def test_current_override_and_link_lost_windows() -> None:
    s = Scenario.from_dict(
        {
            "faults": [
                {"at": 10, "kind": "overcurrent", "duration": 5, "value": -300},
                {"at": 20, "kind": "link_loss", "pack": 1, "duration": 30},
                {"at": 100, "kind": "link_loss"},
            ]
        },
        capacity_ah=100.0,
    )
    assert s.current_override(0, 9.9) is None
    assert s.current_override(0, 10.0) == -300.0
    assert s.current_override(0, 14.99) == -300.0
    assert s.current_override(0, 15.0) is None
    assert s.current_override(1, 12.0) is None
    assert not s.link_lost(1, 19.9)
    assert s.link_lost(1, 20.0)
    assert s.link_lost(1, 49.9)
    assert not s.link_lost(1, 50.0)
    assert not s.link_lost(0, 20.0)
    assert s.link_lost(0, 100.0)
    assert s.link_lost(0, 1e12)
    r = _reading()
    assert s.apply(0, 12.0, r) is r  # overcurrent acts through the load, not the reading


def test_load_overrides_reach_the_profile() -> None:
    s = Scenario.from_dict({"load": {"initial_soc": 0.9, "pv_peak_a": 0.0, "seed": 3, "cloudiness": 0}})
    assert s.initial_soc == 0.9
    p = s.solar_profile(100.0, packs=2, seed=1)
    assert (p.pv_peak_a, p.seed, p.cloudiness) == (0.0, 3, 0.0)
    default = SolarDayProfile.for_capacity(100.0, 2)
    assert p.base_load_a == default.base_load_a
    assert all(p.demand(t) < 0 for t in np.arange(0.0, 86400.0, 1800.0))
    assert Scenario().initial_soc is None
    assert Scenario().solar_profile(100.0, 2) == default


_toml_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from([k.value for k in FaultKind]),
)
_toml_values = st.recursive(
    _toml_scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["at", "kind", "pack", "cell", "sensor", "duration", "value", "x"]),
            inner,
            max_size=6,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.dictionaries(
        st.sampled_from(["faults", "load", "description", "other"]),
        _toml_values | st.lists(st.dictionaries(st.sampled_from(["at", "kind", "value"]), _toml_values)),
        max_size=3,
    )
)
def test_from_dict_raises_only_scenario_error(data: dict[str, Any]) -> None:
    with contextlib.suppress(ScenarioError):
        Scenario.from_dict(data)
