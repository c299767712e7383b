"""SOC estimator behaviour: EKF bias/convergence on the simulator, anchors, capacity, OCV tables and CSV."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bmsgw.core import Core, CoreOutput, CoreParams
from bmsgw.core.chemistry import (
    OcvTableError,
    hysteresis_v,
    ocv,
    profile,
    profile_from_csv,
    resistance_scale,
    soc_from_ocv,
)
from bmsgw.model import F64, Chemistry, PackSample
from bmsgw.sim.cells import SimPack, SimPackConfig


def _sample(t: float, v: float | list[float], i: float = 0.0, temp: float = 25.0) -> PackSample:
    cell_v = np.atleast_1d(np.asarray(v, dtype=np.float64))
    return PackSample(0, t, cell_v, np.array([temp]), i, float(cell_v.sum()))


def _drive(t: float, cap: float) -> float:
    """A dynamic load (A, > 0 charging): discharge with pulses and regen, a 10-minute rest every 40 min."""
    if (t // 600) % 4 == 3:
        return 0.0
    return cap * (-0.5 + 0.4 * math.sin(2 * math.pi * t / 97.0) + (0.3 if t % 60 < 10 else 0.0))


def _simulate(
    seconds: float, *, bias: float = 0.0, initial: list[float] | None = None, true_soc: float = 0.9, **kw: Any
) -> tuple[F64, CoreOutput]:
    """4 NMC cells in the simulator (its RC set to the profile's), the core reading them with `bias` added to
    the measured current. Returns the per-step SOC errors (steps × cells) and the last output."""
    prof = profile(Chemistry.NMC)
    cap = 5.0
    sim = SimPack(
        SimPackConfig(
            cells=4, chemistry=Chemistry.NMC, capacity_ah=cap, sensors=1, initial_soc=true_soc,
            capacity_spread=0.0, soc_spread=0.0, resistance_spread=0.0, rc_tau_s=prof.tau1_s,
            r1_fraction=prof.r1_ohm_ah / prof.r0_ohm_ah, seed=1,
        )
    )  # fmt: skip
    params = CoreParams.defaults(Chemistry.NMC, (4,), (1,), (cap,), max_discharge_current_a=25.0, **kw)
    core = Core(params, initial_soc=initial)
    errs = []
    t = 0.0
    out = None
    while t < seconds:
        sim.step(1.0, _drive(t, cap))
        t += 1.0
        r = sim.reading()
        s = PackSample(0, t, np.array(r.cell_v), np.array(r.cell_t), r.current + bias, r.voltage)
        out = core.step(t, [s])
        errs.append(out.packs[0].cell_soc - r.soc_true)
    assert out is not None
    return np.array(errs), out


# ------------------------------------------------------------------------------------------ EKF


@pytest.mark.parametrize("offset", [0.1, -0.1])
def test_current_bias_is_estimated(offset: float) -> None:
    """A ±0.1 A (2 % C) offset on the measured current is learnt within 2 h and SOC stays within 1.5 %."""
    err, out = _simulate(7200.0, bias=offset)
    assert out.packs[0].current_bias_a == pytest.approx(offset, abs=0.03)  # measured: 0.089 / −0.103
    assert np.abs(err).max() < 0.015  # measured 0.8 % / 1.2 %


def test_no_offset_gives_a_small_bias_estimate() -> None:
    err, out = _simulate(7200.0)
    assert abs(out.packs[0].current_bias_a) < 0.02  # measured −7 mA
    assert np.abs(err).max() < 0.005


@pytest.mark.parametrize(("initial", "truth"), [(0.7, 0.9), (0.9, 0.7)])
def test_converges_from_a_20_percent_initial_error(initial: float, truth: float) -> None:
    err, out = _simulate(600.0, initial=[initial], true_soc=truth)
    assert np.abs(err[0]).max() > 0.19
    assert np.abs(err[120:]).max() < 0.02  # within 2 minutes (measured: 5 s) and staying there
    assert out.packs[0].soc_std < 0.02
    assert out.packs[0].first_anchor_t <= 120.0  # the convergence event


def test_r0_estimate_tracks_the_cell() -> None:
    _, out = _simulate(3600.0)
    r0 = out.packs[0].r0_ohm
    nominal = profile(Chemistry.NMC).r0_ohm_ah / 5.0
    assert 0.7 * nominal < r0 < 1.1 * nominal  # the simulated cell warms up a little: R0 falls


def test_counting_mode_ignores_the_voltage() -> None:
    err, _ = _simulate(600.0, initial=[0.7], estimator="counting")
    assert np.abs(err[-1]).min() > 0.19  # nothing pulls it towards the voltage between anchors


# ------------------------------------------------------------------------------------------ anchors


@pytest.mark.parametrize(
    ("chem", "truth", "tol", "sd_max"),
    [(Chemistry.NMC, 0.8, 0.005, 0.02), (Chemistry.NMC, 0.3, 0.005, 0.02), (Chemistry.LFP, 0.3, 0.1, 0.06)],
)
def test_ocv_reset_after_rest(chem: Chemistry, truth: float, tol: float, sd_max: float) -> None:
    """Counting mode isolates the anchor: nothing happens before rest_time_s, then the rested OCV resets the
    SOC. On the LFP plateau the unknown hysteresis branch (±M) leaves it honestly uncertain."""
    v = ocv(profile(chem), truth)
    core = Core(CoreParams.defaults(chem, (2,), (1,), (50.0,), estimator="counting"), initial_soc=[0.55])
    t = 0.0
    out = core.step(t, [_sample(t, [v, v], i=0.1)])
    while t < 1795.0:
        t += 5.0
        out = core.step(t, [_sample(t, [v, v], i=0.1)])
    assert out.packs[0].anchors == 0
    assert out.packs[0].soc == pytest.approx(0.55, abs=0.01)
    t += 5.0
    out = core.step(t, [_sample(t, [v, v], i=0.1)])
    po = out.packs[0]
    assert (po.anchors, po.last_anchor, po.last_anchor_t) == (1, "rest", 1800.0)
    assert po.cell_soc == pytest.approx([truth, truth], abs=tol)
    assert po.soc_std < sd_max
    assert abs(po.soc - truth) < abs(0.55 - truth)


def test_rest_is_interrupted_by_current() -> None:
    v = ocv(profile(Chemistry.NMC), 0.8)
    core = Core(
        CoreParams.defaults(Chemistry.NMC, (1,), (1,), (50.0,), estimator="counting"), initial_soc=[0.5]
    )
    for k in range(600):  # 2995 s in all, but never 1800 s in a row
        t = k * 5.0
        out = core.step(t, [_sample(t, v, i=2.0 if k == 300 else 0.0)])
    assert out.packs[0].anchors == 0
    assert out.packs[0].soc == pytest.approx(0.5 + 10.0 / 3600.0 / 50.0 * 0.999, abs=1e-6)


@pytest.mark.parametrize("estimator", ["counting", "ekf"])
def test_long_rest_after_a_discharge_reads_the_discharge_branch(estimator: str) -> None:
    """A discharge into the LFP plateau, then hours at 0 A with the cells relaxed onto their discharge
    branch (the simulator's hysteresis, the profile's RC): the OCV resets read that branch, so the SOC
    stays at the truth, and their repeats are not taken for a current bias that would drain it."""
    prof = profile(Chemistry.LFP)
    sim = SimPack(
        SimPackConfig(
            cells=2, chemistry=Chemistry.LFP, capacity_ah=50.0, sensors=1, initial_soc=0.4, soc_spread=0.0,
            capacity_spread=0.0, resistance_spread=0.0, rc_tau_s=prof.tau1_s,
            r1_fraction=prof.r1_ohm_ah / prof.r0_ohm_ah, hysteresis=1.0, seed=1,
        )
    )  # fmt: skip
    params = CoreParams.defaults(Chemistry.LFP, (2,), (1,), (50.0,), estimator=estimator)
    core = Core(params, initial_soc=[float(sim.soc_true.mean())])
    t = 0.0
    for k in range(1800 + 4 * 3600):  # 10 A for 30 min (10 % out, to ≈ 30 %), then 4 h at rest
        sim.step(1.0, -10.0 if k < 1800 else 0.0)
        t += 1.0
        r = sim.reading()
        out = core.step(t, [PackSample(0, t, r.cell_v, r.cell_t, r.current, float(r.cell_v.sum()))])
    po = out.packs[0]
    # 30 min after the 10 s current average fell below 0.5 A (≈ 30 s into the rest), then every 30 min
    assert (po.anchors, po.last_anchor) == (7, "rest")
    assert po.last_anchor_t == pytest.approx(1830.0 + 7 * 1800.0, abs=30.0)
    assert po.cell_soc == pytest.approx(r.soc_true, abs=0.01)
    assert abs(po.current_bias_a) < 0.02


def _cv_charge(core: Core, t0: float, seconds: float, current: float, v: list[float]) -> CoreOutput:
    t = t0
    out = core.step(t, [_sample(t, v, i=current)])
    while t < t0 + seconds:
        t += 1.0
        out = core.step(t, [_sample(t, v, i=current)])
    return out


def test_full_charge_calibration_at_the_end_of_cv() -> None:
    """The highest cell goes to 1 once |I| < tail for full_hold_s at CV; the common offset moves all cells."""
    p = CoreParams.defaults(Chemistry.LFP, (3,), (1,), (100.0,), estimator="counting")
    assert p.per_pack("full_tail_current_a") == (5.0,)
    core = Core(p, initial_soc=[0.8])
    cv = [3.46, 3.44, 3.43]
    out = _cv_charge(core, 0.0, 120.0, 8.0, cv)  # still above the tail current: not yet full
    assert out.packs[0].anchors == 0
    before = out.packs[0].cell_soc.copy()
    out = _cv_charge(core, 121.0, 58.0, 3.0, cv)
    assert out.packs[0].anchors == 0  # 58 s below the tail
    out = _cv_charge(core, 180.0, 5.0, 3.0, cv)
    po = out.packs[0]
    assert (po.anchors, po.last_anchor) == (1, "full")
    assert po.cell_soc[0] == 1.0
    assert po.soc == 1.0  # the strongest cell is full → the pack is full
    shift = po.cell_soc[1] - before[1]
    assert shift > 0.15
    assert po.cell_soc[2] - before[2] == pytest.approx(shift, abs=0.005)
    out = _cv_charge(core, 186.0, 300.0, 3.0, cv)
    assert out.packs[0].anchors == 1  # once per episode


def test_resting_high_after_a_charge_is_not_full() -> None:
    """Cells still relaxing above the CV margin at rest (0 A) are not a completed CV charge."""
    p = CoreParams.defaults(Chemistry.LFP, (3,), (1,), (100.0,), estimator="counting")
    core = Core(p, initial_soc=[0.9])
    out = _cv_charge(core, 0.0, 600.0, 0.0, [3.46, 3.44, 3.43])
    assert out.packs[0].anchors == 0
    out = _cv_charge(core, 601.0, 61.0, 3.0, [3.46, 3.44, 3.43])  # tail current at the CV level: full
    assert out.packs[0].last_anchor == "full"


def test_empty_calibration_at_cut_off() -> None:
    p = CoreParams.defaults(Chemistry.LFP, (2,), (1,), (100.0,), estimator="counting")
    assert p.empty_voltage_cell_v == p.cell_v_min_alarm == 2.5
    core = Core(p, initial_soc=[0.2])
    t = 0.0
    for _ in range(2):
        out = core.step(t, [_sample(t, [2.6, 2.45], i=-20.0)])
        t += 0.5
    assert out.packs[0].anchors == 0
    out = core.step(t, [_sample(t, [2.6, 2.45], i=-20.0)])  # held debounce_s (1 s)
    po = out.packs[0]
    assert (po.anchors, po.last_anchor) == (1, "empty")
    assert po.cell_soc[1] == 0.0
    assert po.soc == 0.0
    assert po.cell_soc[0] < 0.05


def test_capacity_is_learnt_between_full_and_empty() -> None:
    """A 90 Ah cell configured as 100 Ah: full → 90 Ah out → empty teaches the capacity."""
    p = CoreParams.defaults(Chemistry.LFP, (1,), (1,), (100.0,), estimator="counting")
    core = Core(p, initial_soc=[0.95])
    out = _cv_charge(core, 0.0, 61.0, 3.0, [3.46])
    assert out.packs[0].last_anchor == "full"
    assert out.packs[0].capacity_ah == 100.0
    out = core.step(62.0, [_sample(62.0, 3.2, i=-90.0)])
    for k in range(1, 3601):  # 90 A for 1 h = 90 Ah out; the cell reaches cut-off in the last seconds
        t = 62.0 + k
        out = core.step(t, [_sample(t, 2.45 if k > 3597 else 3.2, i=-90.0)])
    po = out.packs[0]
    assert po.last_anchor == "empty"
    assert 90.0 < po.capacity_ah < 100.0
    assert po.capacity_ah == pytest.approx(100.0 + 0.3 * (90.0 - 100.0), abs=0.6)  # CAP_GAIN 0.3


def test_restored_cell_soc_is_kept() -> None:
    p = CoreParams.defaults(Chemistry.LFP, (3,), (1,), (100.0,), estimator="counting")
    core = Core(p, initial_soc=[0.4], initial_cell_soc=[[0.4, 0.5, 0.6]])
    out = core.step(0.0, [_sample(0.0, [3.3, 3.3, 3.3])])
    assert out.packs[0].cell_soc == pytest.approx([0.4, 0.5, 0.6])


# ------------------------------------------------------------------------------------------ tables


def test_ocv_temperature_tables() -> None:
    p = profile(Chemistry.LFP)
    assert p.ocv_temps_c == (5.0, 25.0, 45.0)
    for z in (0.0, 0.2, 0.5, 0.97, 1.0):
        assert ocv(p, z) == ocv(p, z, 25.0)  # the 2-argument form is the 25 °C curve
        lo, hi = ocv(p, z, 5.0), ocv(p, z, 25.0)
        assert ocv(p, z, 15.0) == pytest.approx(0.5 * (lo + hi))
        assert ocv(p, z, -20.0) == lo  # clamped outside the tables
        assert soc_from_ocv(p, ocv(p, z, 15.0), 15.0) == pytest.approx(z, abs=1e-9)
    assert 0.010 < hysteresis_v(p, 0.5) < 0.030  # the A123 charge/discharge gap on the plateau
    assert hysteresis_v(p, 0.5, 5.0) > hysteresis_v(p, 0.5, 45.0)
    assert hysteresis_v(profile(Chemistry.NMC), 0.5) == 0.0
    assert resistance_scale(p, 25.0) == pytest.approx(1.0)
    assert resistance_scale(p, 5.0) == pytest.approx(1.77)
    assert resistance_scale(p, -10.0) > resistance_scale(p, 5.0)  # keeps rising beyond the table
    assert resistance_scale(p, 60.0) < resistance_scale(p, 45.0)


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ocv.csv"
    path.write_text(text)
    return path


def test_profile_from_csv_replaces_the_curve(tmp_path: Path) -> None:
    base = profile(Chemistry.LFP)
    prof = profile_from_csv(_csv(tmp_path, "soc,ocv_v\n0,2.9\n0.1,3.2\n0.5,3.30\n0.9,3.35\n1,3.5\n"), base)
    assert prof.soc_points == (0.0, 0.1, 0.5, 0.9, 1.0)
    assert ocv(prof, 0.7) == pytest.approx(3.325)
    assert ocv(prof, 0.7, 5.0) == pytest.approx(3.325)  # one table for every temperature
    assert (prof.cell_v_max_alarm, prof.r0_ohm_ah) == (base.cell_v_max_alarm, base.r0_ohm_ah)
    assert hysteresis_v(prof, 0.5) == pytest.approx(hysteresis_v(base, 0.5))
    params = CoreParams.defaults(Chemistry.LFP, (1,), (1,), (10.0,), ocv_profile=prof)
    out = Core(params).step(0.0, [_sample(0.0, 3.325)])
    assert out.packs[0].soc == pytest.approx(0.7)
    with pytest.raises(ValueError, match="ocv_profile"):
        CoreParams.defaults(Chemistry.NMC, (1,), (1,), (10.0,), ocv_profile=prof)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty file"),
        ("soc,voltage\n0,3\n1,3.4\n", "missing column ocv_v"),
        ("soc,ocv_v\n0,3.0\n0.5,3.3\n0.4,3.4\n1,3.5\n", r"line 4: soc 0\.4 is not above 0\.5"),
        ("soc,ocv_v\n0,3.0\n0.5,3.3\n0.6,3.29\n1,3.5\n", "OCV must rise"),
        ("soc,ocv_v\n0,3.0\n50,3.3\n100,3.5\n", "outside 0..1 .*percent"),
        ("soc,ocv_v\n0,3.0\n0.5,3.3\n1,9.5\n", "outside the plausible lfp range"),
        ("soc,ocv_v\n0.1,3.0\n1,3.5\n", "start at soc 0 and end at soc 1"),
        ("soc,ocv_v\n0,3.0\n0.5,abc\n1,3.5\n", "line 3: need two numbers"),
        ("soc,ocv_v\n0,3.0\n0.5,nan\n1,3.5\n", "finite"),
    ],
)
def test_profile_from_csv_rejects_bad_tables(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(OcvTableError, match=match):
        profile_from_csv(_csv(tmp_path, text), profile(Chemistry.LFP))


def test_profile_from_csv_missing_file(tmp_path: Path) -> None:
    with pytest.raises(OcvTableError, match="cannot read"):
        profile_from_csv(tmp_path / "nope.csv", profile(Chemistry.LFP))


def test_estimator_params_are_validated() -> None:
    for kw, name in (
        ({"estimator": "ukf"}, "estimator"),
        ({"voltage_sigma_v": 0.0}, "voltage_sigma_v"),
        ({"full_tail_current_a": -1.0}, "full_tail_current_a"),
        ({"full_hold_s": -1.0}, "full_hold_s"),
        ({"empty_voltage_cell_v": 3.6}, "empty_voltage_cell_v"),
    ):
        with pytest.raises(ValueError, match=name):
            CoreParams.defaults(Chemistry.LFP, (4,), (1,), (100.0,), **kw)
    p = CoreParams.defaults(Chemistry.LFP, (4, 4), (1, 1), (100.0, 50.0), current_sigma_a=0.3)
    assert p.per_pack("current_sigma_a") == (0.3, 0.3)
    assert p.per_pack("current_bias_sigma_a") == (0.5, 0.25)
