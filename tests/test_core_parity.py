"""Parity: the compiled kernel and the pure-Python ``_kernel.py`` produce the same outputs.

The pure variant is the ``.py`` loaded by path under another module name; the compiled one is built from
the same ``.py`` + ``.pxd`` into a scratch directory (cached per source hash), so the installed package is
never touched. Floats must agree to 1e-12 (exact on x86-64; the tolerance leaves room for FMA contraction
on other targets), everything else exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmsgw.core import IS_COMPILED, Core, CoreOutput, CoreParams, _kernel
from bmsgw.core._devbuild import BuildUnavailableError, build_compiled_kernel, load_pure_kernel
from bmsgw.core.chemistry import profile
from bmsgw.model import BmsFlags, Chemistry, PackSample
from bmsgw.sim.cells import SimPack, SimPackConfig

TOL = 1e-12


@pytest.fixture(scope="session")
def kernels() -> tuple[ModuleType, ModuleType]:
    pure = load_pure_kernel()
    if IS_COMPILED:  # the installed extension is the one users run: test that one
        return pure, _kernel
    try:
        compiled = build_compiled_kernel()
    except BuildUnavailableError as exc:  # a failed compile is an error, not a skip
        pytest.skip(f"cannot build the compiled kernel here: {exc}")
    return pure, compiled


def _close(a: float, b: float) -> bool:
    return a == b or math.isclose(a, b, rel_tol=TOL, abs_tol=TOL)


def _assert_same_output(a: CoreOutput, b: CoreOutput, where: str) -> None:
    assert _close(a.soc, b.soc), where
    assert a.soh == b.soh, where
    for name in ("cvl", "ccl", "dcl", "dvl"):
        la, lb = getattr(a.limits, name), getattr(b.limits, name)
        assert la.reason is lb.reason, f"{where}: {name} reason {la.reason} vs {lb.reason}"
        assert _close(la.value, lb.value), f"{where}: {name} {la.value!r} vs {lb.value!r}"
    assert a.limits.charge_enable == b.limits.charge_enable, where
    assert a.limits.charge_stage is b.limits.charge_stage, where
    assert a.limits.discharge_enable == b.limits.discharge_enable, where
    assert a.alarms == b.alarms, where
    for pa, pb in zip(a.packs, b.packs, strict=True):
        assert _close(pa.soc, pb.soc), where
        np.testing.assert_allclose(pa.cell_soc, pb.cell_soc, rtol=TOL, atol=TOL, err_msg=where)
        assert pa.contactor_open_request == pb.contactor_open_request, where
        for name in ("soc_std", "capacity_ah", "r0_ohm", "current_bias_a", "last_anchor_t", "first_anchor_t"):
            va, vb = getattr(pa, name), getattr(pb, name)
            assert (math.isnan(va) and math.isnan(vb)) or _close(va, vb), f"{where}: {name} {va!r} vs {vb!r}"
        assert (pa.anchors, pa.last_anchor) == (pb.anchors, pb.last_anchor), where


def _assert_same_state(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for key, va in a.items():
        vb = b[key]
        if isinstance(va, np.ndarray):
            assert va.dtype == vb.dtype, key
            if va.dtype.kind == "f":
                np.testing.assert_allclose(va, vb, rtol=TOL, atol=TOL, err_msg=key)
            else:
                assert np.array_equal(va, vb), key
        elif isinstance(va, float):
            assert _close(va, vb), key
        else:
            assert va == vb, key


def _scenario(seed: int, n_packs: int, cells: int, sensors: int) -> Iterator[tuple[float, list[Any]]]:
    """A long mixed run: excursions past every limit, BMS flags, missing/repeated samples, sample gaps,
    irregular steps, rests (with a short rest time) and overcurrent."""
    rng = np.random.default_rng(seed)
    last: list[PackSample | None] = [None] * n_packs
    t = 0.0
    base_v = 3.30 + rng.normal(0, 0.01, (n_packs, cells))
    for k in range(3000):
        t = round(t + float(rng.choice([0.1, 0.1, 0.1, 0.25, 0.05])), 6)
        phase = (k // 150) % 8
        samples: list[PackSample | None] = []
        for p in range(n_packs):
            r = rng.random()
            if (phase == 5 and p == 0) or r < 0.03:
                samples.append(None)
                continue
            if r < 0.15 and last[p] is not None:
                samples.append(last[p])  # no new data
                continue
            v = base_v[p] + rng.normal(0, 0.003, cells)
            temp = 25.0 + rng.normal(0, 1.0, sensors)
            i = float(rng.normal(0, 5))
            flags = BmsFlags.CHARGE_FET | BmsFlags.DISCHARGE_FET
            if phase == 1:
                v[0] += 0.35 + 0.03 * math.sin(k / 7)  # around the OV alarm and its hysteresis
                i = 20.0
            elif phase == 2:
                v[-1] -= 0.85 + 0.05 * math.sin(k / 5)  # UV
                i = -30.0
            elif phase == 3:
                if sensors:
                    temp[0] = 40.0 + 8.0 * math.sin(k / 40)  # OT charge side, derating
                    temp[-1] = -3.0 + 6.0 * math.sin(k / 30)  # cold charge
                i = 15.0 if k % 60 < 30 else -15.0
            elif phase == 4:
                i = float(rng.choice([70.0, -130.0, 0.0]))  # overcurrent both ways
                if k % 50 < 10:
                    flags |= BmsFlags(int(rng.choice([1 << 4, 1 << 8, 1 << 12, 1 << 14, 1 << 15])))
            elif phase == 6:
                i = float(rng.normal(0, 0.1))  # rest → OCV reset
                v = base_v[p] + 0.08 + rng.normal(0, 0.001, cells)
            elif phase == 7:
                i = float(rng.normal(1.0, 0.1))  # tail current at the CV level → full calibration
                v = base_v[p] + 0.15 + rng.normal(0, 0.001, cells)
            st_ = t - float(rng.choice([0.0, 0.02]))
            if rng.random() < 0.003:
                st_ += 7.0  # a jump in sample time (gap: no integration)
            s = PackSample(p, st_, v, temp, i, float(v.sum()), flags)
            last[p] = s
            samples.append(s)
        yield t, samples


@pytest.mark.parametrize(
    ("chem", "n_packs", "cells", "sensors", "initial", "estimator"),
    [
        (Chemistry.LFP, 3, 16, 4, None, "ekf"),
        (Chemistry.NMC, 2, 14, 3, [0.3, 0.9], "ekf"),
        (Chemistry.LFP, 1, 70, 0, None, "ekf"),  # a long string, no sensors
        (Chemistry.LFP, 2, 8, 2, [0.5, 0.6], "counting"),
    ],
)
def test_compiled_and_pure_agree_on_a_mixed_scenario(
    *,
    kernels: tuple[ModuleType, ModuleType],
    chem: Chemistry,
    n_packs: int,
    cells: int,
    sensors: int,
    initial: list[float] | None,
    estimator: str,
) -> None:
    pure, compiled = kernels
    p = CoreParams.defaults(
        chem,
        (cells,) * n_packs,
        (sensors,) * n_packs,
        (100.0,) * n_packs,
        rest_time_s=10.0,
        full_hold_s=5.0,
        full_voltage_margin_v=profile(chem).charge_voltage_cell_v - 3.40,  # the scenario's "CV" phase
        estimator=estimator,
    )
    a = Core(p, initial, kernel_module=pure)
    b = Core(p, initial, kernel_module=compiled)
    n_alarm_steps = 0
    anchors: set[str] = set()
    for k, (t, samples) in enumerate(_scenario(11, n_packs, cells, sensors)):
        oa = a.step(t, samples)
        ob = b.step(t, samples)
        _assert_same_output(oa, ob, f"step {k} t={t}")
        n_alarm_steps += bool(oa.alarms)
        anchors.update(po.last_anchor for po in oa.packs)
        if k % 250 == 0:
            _assert_same_state(a.debug_state(), b.debug_state())
    _assert_same_state(a.debug_state(), b.debug_state())
    assert n_alarm_steps > 100  # the scenario really went through the protection paths
    assert {"rest", "full", "empty"} <= anchors  # … and through every SOC anchor


def _protection_scenario(seed: int, n_packs: int) -> Iterator[tuple[float, list[PackSample | None]]]:
    """Every protection path: thermal ramps (derate, isolation, GB 38031 shutdown), the overcurrent curve and
    its fault, pack-voltage and spread tiers, non-finite readings, charge stages (absorption, float,
    re-bulk), with the same sample repeated and packs dropping out."""
    rng = np.random.default_rng(seed)
    last: list[PackSample | None] = [None] * n_packs
    t = 0.0
    temp_hot = 25.0
    for k in range(2400):
        dt = float(rng.choice([0.25, 0.25, 0.1, 0.5]))
        t = round(t + dt, 6)
        phase = (k // 200) % 12
        if phase in (3, 4):
            temp_hot += (1.6 if phase == 3 else 0.3) * dt
        else:
            temp_hot = 25.0
        samples: list[PackSample | None] = []
        for p in range(n_packs):
            r = rng.random()
            if r < 0.02:
                samples.append(None)
                continue
            if r < 0.1 and last[p] is not None:
                samples.append(last[p])
                continue
            v = 3.30 + rng.normal(0, 0.002, 8)
            temp = 25.0 + rng.normal(0, 0.2, 3)
            i = float(rng.normal(0, 2))
            if phase == 1:  # absorption then tail current → float
                v = 3.43 + rng.normal(0, 0.002, 8)
                i = 20.0 if k % 200 < 60 else 1.0
            elif phase == 2:  # imbalance in float → re-bulk
                v[0] += 0.09 * (k % 200 > 100)
            elif phase in (3, 4) and p == 0:  # a thermal runaway in pack 0, up to the confirmation
                temp[1] = temp_hot
            elif phase == 5:
                i = float(rng.choice([55.0, 62.0, 75.0, 110.0, 0.0, -130.0, -260.0]))  # time-current curve
            elif phase == 6:
                v = np.full(8, 3.56 + 0.1 * (k % 200 > 100)) + rng.normal(0, 0.002, 8)  # pack tiers
            elif phase == 7:
                v = np.full(8, 2.86 - 0.2 * (k % 200 > 100)) + rng.normal(0, 0.002, 8)
            elif phase == 8:
                v[3] -= 0.2 + 0.5 * (k % 200 > 100)  # spread tiers
            elif phase == 9 and (k % 7 == 0 or k % 200 > 80):
                temp[0] = math.nan  # sensor fault
            s = PackSample(p, t, v, temp, i, float(np.nansum(v)), BmsFlags.NONE)
            last[p] = s
            samples.append(s)
        yield t, samples


def test_compiled_and_pure_agree_on_the_protection_paths(kernels: tuple[ModuleType, ModuleType]) -> None:
    pure, compiled = kernels
    p = CoreParams.defaults(
        Chemistry.LFP, (8, 8), (3, 3), (100.0, 100.0), full_hold_s=5.0, absorption_time_max_s=20.0
    )
    a = Core(p, [0.5, 0.95], kernel_module=pure)
    b = Core(p, [0.5, 0.95], kernel_module=compiled)
    seen: set[tuple[str, int]] = set()
    for k, (t, samples) in enumerate(_protection_scenario(3, 2)):
        oa = a.step(t, samples)
        ob = b.step(t, samples)
        _assert_same_output(oa, ob, f"step {k} t={t}")
        seen.update((al.code.value, int(al.level)) for al in oa.alarms)
        seen.add((oa.limits.charge_stage.value, 0))
        if k % 300 == 299:  # resets, and latched faults carried over as after a restart
            assert a.latched() == b.latched()
            assert a.reset_latched() == b.reset_latched()
            a.restore_latched([(0, "cell_ov_fault", t)])
            b.restore_latched([(0, "cell_ov_fault", t)])
        if k % 400 == 0:
            _assert_same_state(a.debug_state(), b.debug_state())
    _assert_same_state(a.debug_state(), b.debug_state())
    for code in ("thermal_runaway", "charge_overcurrent", "discharge_overcurrent", "pack_overvoltage"):
        assert (code, 3) in seen, code  # each reached its fault tier
    assert {("cell_imbalance", 2), ("sensor_fault", 3), ("pack_undervoltage", 2)} <= seen
    assert {("bulk", 0), ("absorption", 0), ("float", 0)} <= seen


@settings(max_examples=30, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.floats(0.0, 3.0),  # dt
            st.sampled_from(["new", "new", "same", "none"]),
            st.floats(2.0, 4.0),  # cell voltage
            st.floats(-30.0, 70.0),  # temperature
            st.floats(-200.0, 100.0),  # current
            st.integers(0, 0xFFFF),  # flags
        ),
        min_size=1,
        max_size=60,
    )
)
def test_compiled_and_pure_agree_on_random_steps(
    kernels: tuple[ModuleType, ModuleType], steps: list[tuple[float, str, float, float, float, int]]
) -> None:
    pure, compiled = kernels
    p = CoreParams.defaults(Chemistry.LFP, (4,), (2,), (50.0,), rest_time_s=2.0, debounce_s=0.5)
    a = Core(p, kernel_module=pure)
    b = Core(p, kernel_module=compiled)
    t = 0.0
    last: PackSample | None = None
    for k, (dt, kind, v, temp, i, flags) in enumerate(steps):
        t += dt
        s: PackSample | None = None
        if kind == "new" or (kind == "same" and last is None):
            cell_v = np.array([v, v + 0.01, v - 0.02, v + 0.03])
            s = PackSample(
                0, t, cell_v, np.array([temp, temp - 1.0]), i, float(cell_v.sum()), BmsFlags(flags)
            )
            last = s
        elif kind == "same":
            s = last
        _assert_same_output(a.step(t, [s]), b.step(t, [s]), f"step {k}")
    _assert_same_state(a.debug_state(), b.debug_state())


def test_compiled_kernel_is_really_compiled(kernels: tuple[ModuleType, ModuleType]) -> None:
    pure, compiled = kernels
    assert str(pure.__file__).endswith(".py")
    assert not str(compiled.__file__).endswith(".py")
    # cdef methods from the .pxd are not visible on the extension type: the declarations were applied
    assert hasattr(pure.Kernel, "_pack")
    assert not hasattr(compiled.Kernel, "_pack")


def test_helper_functions_agree(kernels: tuple[ModuleType, ModuleType]) -> None:
    pure, compiled = kernels
    rng = np.random.default_rng(5)
    xs = np.cumsum(rng.uniform(0.01, 0.2, 29))
    ys = np.cumsum(rng.uniform(0.0, 0.1, 29))
    mx = memoryview(bytearray(xs.tobytes())).cast("d")
    my = memoryview(bytearray(ys.tobytes())).cast("d")
    for x in rng.uniform(xs[0] - 0.5, xs[-1] + 0.5, 500):
        assert pure.interp(float(x), mx, my, 29) == compiled.interp(float(x), mx, my, 29)
        for lo, hi in ((0.0, 1.0), (2.5, 2.9), (1.0, 1.0)):
            assert pure.derate_high(float(x), lo, hi) == compiled.derate_high(float(x), lo, hi)
            assert pure.derate_low(float(x), lo, hi) == compiled.derate_low(float(x), lo, hi)


@pytest.mark.parametrize("seed", [3, 17])
def test_compiled_and_pure_agree_with_shares_and_admission(
    kernels: tuple[ModuleType, ModuleType], seed: int
) -> None:
    """Multi-pack combination: unequal shares, packs held out (admit 0) and ramping in (0 < admit < 1)."""
    pure, compiled = kernels
    n_packs = 4
    p = CoreParams.defaults(Chemistry.LFP, (8,) * n_packs, (2,) * n_packs, (100.0, 50.0, 100.0, 200.0))
    a = Core(p, kernel_module=pure)
    b = Core(p, kernel_module=compiled)
    rng = np.random.default_rng(seed)
    ramping = 0
    for k, (t, samples) in enumerate(_scenario(seed, n_packs, 8, 2)):
        if k % 40 == 0:
            for i in range(n_packs):
                share = float(rng.uniform(0.05, 1.0))
                admit = float(rng.choice([0.0, 1.0, 1.0, rng.uniform(0.0, 1.0)]))
                ramping += 0.0 < admit < 1.0
                a.set_share(i, share, admit)
                b.set_share(i, share, admit)
        oa, ob = a.step(t, samples), b.step(t, samples)
        _assert_same_output(oa, ob, f"step {k} t={t}")
        assert (oa.ccl_pack, oa.dcl_pack) == (ob.ccl_pack, ob.dcl_pack), f"step {k}"
        if k == 1500:
            break
    _assert_same_state(a.debug_state(), b.debug_state())
    assert ramping > 5


def test_compiled_and_pure_agree_on_the_hysteresis_consider_path(
    kernels: tuple[ModuleType, ModuleType],
) -> None:
    """LFP cells with 1.5× the profile's hysteresis, charge/discharge reversals on the plateau (branch
    transitions), rests and a wide consider σ: the Schmidt cross-covariance (pxm) is exercised and agrees."""
    pure, compiled = kernels
    sim = SimPack(
        SimPackConfig(cells=6, chemistry=Chemistry.LFP, capacity_ah=20.0, sensors=1, hysteresis=1.5, seed=4)
    )
    p = CoreParams.defaults(Chemistry.LFP, (6,), (1,), (20.0,), rest_time_s=60.0, hysteresis_sigma=0.8)
    a = Core(p, kernel_module=pure)
    b = Core(p, kernel_module=compiled)
    for k in range(2400):
        t = float(k + 1)
        sim.step(1.0, (15.0, 0.0, -12.0, 0.0, 8.0, -20.0)[(k // 400) % 6])
        r = sim.reading()
        s = PackSample(0, t, r.cell_v, r.cell_t, r.current, float(r.cell_v.sum()))
        _assert_same_output(a.step(t, [s]), b.step(t, [s]), f"step {k}")
    state = a.debug_state()
    _assert_same_state(state, b.debug_state())
    assert np.abs(state["pxm"]).max() > 1e-4  # the consider path really ran


def test_compiled_and_pure_agree_beyond_the_ocv_table(kernels: tuple[ModuleType, ModuleType]) -> None:
    """LFP cells rested on their charge branch at 99.5 %: the first reading puts the SOC at the table's top
    and the state then sits above 100 %, where the mean-cell update extrapolates the OCV (the rest anchors'
    iterated update too); both kernels agree there."""
    sim = SimPack(
        SimPackConfig(
            cells=4, chemistry=Chemistry.LFP, capacity_ah=20.0, sensors=1, initial_soc=0.985, soc_spread=0.0,
            hysteresis=1.0, seed=2,
        )
    )  # fmt: skip
    for _ in range(72):
        sim.step(1.0, 10.0)
    sim.step(1800.0, 0.0)
    pure, compiled = kernels
    p = CoreParams.defaults(Chemistry.LFP, (4,), (1,), (20.0,), rest_time_s=300.0)
    a = Core(p, kernel_module=pure)
    b = Core(p, kernel_module=compiled)
    top = 0.0
    for k in range(1800):
        t = 2.0 * (k + 1)
        sim.step(2.0, 0.0)
        r = sim.reading()
        s = PackSample(0, t, r.cell_v, r.cell_t, r.current + 0.1, float(r.cell_v.sum()))
        _assert_same_output(a.step(t, [s]), b.step(t, [s]), f"step {k}")
        top = max(top, float(a.debug_state()["x"][0]))
    _assert_same_state(a.debug_state(), b.debug_state())
    assert top > 1.0  # the state really was beyond the table
