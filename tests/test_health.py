"""Health estimation (bmsgw.core._health through Core): capacity and R0 against the simulator's truth, EFC,
the depth-of-discharge histogram, self-discharge of a leaking cell, persistence, compiled/pure parity."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from bmsgw.config import Settings, load_settings
from bmsgw.core import IS_COMPILED, Core, CoreOutput, CoreParams, _health
from bmsgw.core._devbuild import BuildUnavailableError, build_compiled_health, load_pure_health
from bmsgw.core.chemistry import profile
from bmsgw.daemon import Daemon
from bmsgw.model import Chemistry, PackHealth, PackSample
from bmsgw.sim.cells import SimPack, SimPackConfig, SimReading
from bmsgw.state import FILE_NAME, EstimatorState, PackHealthState, PackSoc, StateStore, restore_health

Q = 100.0
N = 16

Stop = Callable[[SimReading], bool]


def sim_pack(chem: Chemistry, **kw: Any) -> SimPack:
    """A 16S 100 Ah pack whose RC branch is the chemistry profile's and (LFP) with its hysteresis."""
    prof = profile(chem)
    cfg: dict[str, Any] = {
        "cells": N, "chemistry": chem, "capacity_ah": Q, "sensors": 4, "initial_soc": 0.5, "seed": 3,
        "rc_tau_s": prof.tau1_s, "r1_fraction": prof.r1_ohm_ah / prof.r0_ohm_ah,
        "hysteresis": 1.0 if chem is Chemistry.LFP else 0.0,
    }  # fmt: skip
    cfg.update(kw)
    return SimPack(SimPackConfig(**cfg))


class Rig:
    """A SimPack driving a Core directly, one sample per `dt`."""

    def __init__(self, sim: SimPack, core: Core, dt: float = 2.0) -> None:
        self.sim = sim
        self.core = core
        self.dt = dt
        self.t = 0.0
        self.out: CoreOutput | None = None
        self.throughput_as = 0.0

    def run(self, current: float, seconds: float, stop: Stop | None = None) -> CoreOutput:
        end = self.t + seconds
        while self.t < end - 1e-9:
            self.sim.step(self.dt, current)
            self.t += self.dt
            self.throughput_as += abs(current) * self.dt
            r = self.sim.reading()
            self.out = self.core.step(
                self.t, [PackSample(0, self.t, r.cell_v, r.cell_t, r.current, r.voltage)]
            )
            if stop is not None and stop(r):
                break
        assert self.out is not None
        return self.out


def core_for(chem: Chemistry, **kw: Any) -> Core:
    return Core(CoreParams.defaults(chem, (N,), (4,), (Q,), estimator="counting"), **kw)


def partial_cycles(rig: Rig, cycles: int = 3) -> CoreOutput:
    """A rest, then `cycles` × (0.5 C charge to 97 %, 35 min rest, 0.5 C discharge to 10 %, 35 min rest)."""
    out = rig.run(0.0, 2100.0)
    for _ in range(cycles):
        rig.run(0.5 * Q, 4 * 3600.0, lambda r: bool(r.soc_true.max() >= 0.97))
        rig.run(0.0, 2100.0)
        rig.run(-0.5 * Q, 4 * 3600.0, lambda r: bool(r.soc_true.min() <= 0.10))
        out = rig.run(0.0, 2100.0)
    return out


@pytest.fixture(scope="module", params=[Chemistry.LFP, Chemistry.NMC], ids=["lfp", "nmc"])
def cycled(request: pytest.FixtureRequest) -> Rig:
    chem = request.param
    rig = Rig(sim_pack(chem), core_for(chem))
    partial_cycles(rig)
    return rig


def health_of(rig: Rig) -> PackHealth:
    assert rig.out is not None
    h = rig.out.packs[0].health
    assert h is not None
    return h


def test_capacity_within_2_percent_after_three_partial_cycles(cycled: Rig) -> None:
    h = health_of(cycled)
    truth = cycled.sim.capacity_true
    err = (h.cell_capacity_ah - truth) / truth
    assert np.abs(err).max() <= 0.02, err
    assert abs(h.capacity_ah / truth.min() - 1.0) <= 0.02
    assert h.soh_capacity == pytest.approx(min(truth.min() / Q, 1.0), abs=0.02)
    # the spread is real (±3 %): the estimate tells the weak cells from the strong ones
    assert np.corrcoef(h.cell_capacity_ah, truth)[0, 1] > 0.9


def test_r0_within_10_percent(cycled: Rig) -> None:
    h = health_of(cycled)
    truth = cycled.sim.r0_25c
    err = (h.cell_r0_ohm - truth) / truth
    assert np.isfinite(err).all()
    assert np.abs(err).max() <= 0.10, err
    assert h.r0_ohm == pytest.approx(float(np.mean(h.cell_r0_ohm)))


def test_soh_is_the_worse_criterion_and_reaches_the_outputs(cycled: Rig) -> None:
    out = cycled.out
    assert out is not None
    po = out.packs[0]
    h = po.health
    assert h is not None
    assert h.soh == min(h.soh_capacity, h.soh_resistance)
    assert po.soh == h.soh
    assert out.soh == pytest.approx(h.soh)
    assert 0.9 < h.soh <= 1.0
    assert h.soh_resistance == 1.0  # nothing aged within the run


def test_equivalent_full_cycles_count_throughput(cycled: Rig) -> None:
    h = health_of(cycled)
    expected = cycled.throughput_as / 3600.0 / 2.0 / Q
    assert h.equivalent_full_cycles == pytest.approx(expected, rel=0.01)
    assert h.calendar_days == pytest.approx(cycled.t / 86400.0, rel=1e-3)


def soc_walk(core: Core, points: list[float]) -> Core:
    """Move a pack of identical cells through the SOC turning `points` at 1 C, then 5 % further back."""
    sim = SimPack(
        SimPackConfig(
            cells=4, chemistry=Chemistry.LFP, capacity_ah=Q, sensors=1, initial_soc=points[0],
            capacity_spread=0.0, soc_spread=0.0, self_discharge_per_day=0.0,
        )
    )  # fmt: skip
    rig = Rig(sim, core, dt=1.0)
    for a, b in itertools.pairwise(points):
        rig.run(Q if b > a else -Q, abs(b - a) * 3600.0)
    rig.run(Q if points[-1] < points[-2] else -Q, 0.05 * 3600.0)
    return core


def lfp4() -> Core:
    return Core(CoreParams.defaults(Chemistry.LFP, (4,), (1,), (Q,), estimator="counting"))


def test_dod_histogram_counts_half_cycles_by_depth() -> None:
    core = soc_walk(lfp4(), [0.5, 0.85, 0.10, 0.85, 0.10])
    h = core.step(1e6, [None]).packs[0].health
    assert h is not None
    # 0.5→0.85 closes as a half-cycle of 35 %, then each 75 % swing as a half-cycle; the last stays residue
    assert h.dod_histogram == (0, 0, 0, 1, 0, 0, 0, 2, 0, 0)


def test_dod_histogram_counts_an_inner_cycle_as_two_halves() -> None:
    core = soc_walk(lfp4(), [0.15, 0.85, 0.55, 0.80, 0.10])
    h = core.step(1e6, [None]).packs[0].health
    assert h is not None
    # the 25 % inner cycle (0.85→0.55→0.80) closes as a full cycle; then 0.15→0.85 as a 70 % half-cycle
    assert h.dod_histogram == (0, 0, 2, 0, 0, 0, 1, 0, 0, 0)


def test_a_leaking_cell_shows_as_self_discharge() -> None:
    leak = [0.0] * N
    leak[5] = 2.0 * Q / 100.0 / 24.0  # 2 % of capacity per day
    sim = sim_pack(Chemistry.LFP, initial_soc=0.2, cell_leak_a=tuple(leak), self_discharge_per_day=0.0)
    rig = Rig(sim, core_for(Chemistry.LFP), dt=5.0)
    out = rig.run(0.0, 2 * 86400.0)
    h = out.packs[0].health
    assert h is not None
    sd = h.cell_self_discharge_pct_day
    assert int(np.argmax(sd)) == 5
    assert 1.2 < sd[5] < 2.5, sd  # relative to the pack mean, which the leak pulls down by 1/16
    others = np.delete(sd, 5)
    assert np.abs(others).max() < 0.4, sd


def test_no_drift_without_a_leak() -> None:
    sim = sim_pack(Chemistry.LFP, initial_soc=0.2, self_discharge_per_day=0.0)
    out = Rig(sim, core_for(Chemistry.LFP), dt=5.0).run(0.0, 86400.0)
    h = out.packs[0].health
    assert h is not None
    assert np.abs(h.cell_self_discharge_pct_day).max() < 0.2


def test_new_pack_reports_rated_values() -> None:
    core = core_for(Chemistry.LFP)
    h = core.step(0.0, [None]).packs[0].health
    assert h is not None
    assert h.soh == 1.0
    assert h.capacity_ah == Q
    assert np.isnan(h.cell_r0_ohm).all()
    assert math.isnan(h.r0_ohm)
    assert h.equivalent_full_cycles == 0.0
    assert h.dod_histogram == (0,) * 10


# ---------------------------------------------------------------- persistence


def test_export_restore_round_trip(cycled: Rig) -> None:
    saved = cycled.core.export_health()
    json.dumps(saved, allow_nan=False)  # JSON-able as it stands
    fresh = Core(cycled.core.params)
    fresh.restore_health(saved)
    assert fresh.export_health() == saved
    a = cycled.core.step(cycled.t, [None]).packs[0].health
    b = fresh.step(0.0, [None]).packs[0].health
    assert a is not None
    assert b is not None
    np.testing.assert_array_equal(a.cell_capacity_ah, b.cell_capacity_ah)
    np.testing.assert_array_equal(a.cell_r0_ohm, b.cell_r0_ohm)
    assert (a.dod_histogram, a.soh, a.equivalent_full_cycles) == (
        b.dod_histogram,
        b.soh,
        b.equivalent_full_cycles,
    )


def test_restore_of_a_misfit_entry_resets_that_pack_only() -> None:
    core = Core(CoreParams.defaults(Chemistry.LFP, (4, 4), (1, 1), (Q, Q)))
    good = core.export_health()[0]
    good["cap"] = [90.0] * 4
    bad = dict(good, cap=[90.0] * 3)
    with pytest.raises(ValueError, match="pack 1"):
        core.restore_health([good, bad])
    packs = core.step(0.0, [None, None]).packs
    assert packs[0].health is not None
    assert packs[1].health is not None
    assert packs[0].health.capacity_ah == 90.0
    assert packs[1].health.capacity_ah == Q


def daemon_settings(state_dir: Path) -> Settings:
    cfg: dict[str, Any] = {
        "packs": [{"id": "a", "cells": N, "sensors": 4, "address": 0, "capacity_ah": Q}],
        "can": {"interface": "virtual", "channel": "health-tests"},
        "gateway.state_dir": str(state_dir),
    }
    settings, _ = load_settings(None, cfg, env={})
    return settings


def test_daemon_saves_and_restores_health(tmp_path: Path, cycled: Rig) -> None:
    if cycled.core.params.chemistry is not Chemistry.LFP:
        pytest.skip("the configured pack is LFP")
    daemon = Daemon(daemon_settings(tmp_path), env={})
    health = cycled.core.export_health()
    daemon.gateway.pipeline.core.restore_health(health)
    daemon.save()
    text = (tmp_path / FILE_NAME).read_text()
    assert '"health"' in text
    again = Daemon(daemon_settings(tmp_path), env={})
    assert again.gateway.pipeline.core.export_health()[0]["cap"] == health[0]["cap"]
    state = again.gateway.pipeline.step(1.0)
    h = state.packs[0].health
    assert h is not None
    np.testing.assert_array_equal(h.cell_capacity_ah, health[0]["cap"])
    assert h.calendar_days >= health[0]["calendar_days"]
    assert state.packs[0].soh == h.soh
    assert state.soh == pytest.approx(h.soh)


def test_restore_health_advances_calendar_time(cycled: Rig) -> None:
    settings = daemon_settings(Path("/nonexistent"))
    health = cycled.core.export_health()
    state = EstimatorState(
        saved_at=1000.0, chemistry=settings.chemistry.value,
        packs=(PackSoc(id="a", cells=N, soc=None, cell_soc=None, health=PackHealthState(**health[0])),),
    )  # fmt: skip
    loaded = EstimatorState.model_validate_json(state.model_dump_json())
    restored = restore_health(settings, loaded, 1000.0 + 86400.0)
    assert restored[0] is not None
    assert restored[0]["calendar_days"] == pytest.approx(health[0]["calendar_days"] + 1.0)
    assert list(restored[0]["cap"]) == health[0]["cap"]


def test_old_state_file_without_health_restores_health_as_new(tmp_path: Path) -> None:
    settings = daemon_settings(tmp_path)
    old = {
        "version": 1, "saved_at": 5.0, "chemistry": settings.chemistry.value,
        "packs": [{"id": "a", "cells": N, "soc": 0.5, "cell_soc": [0.5] * N}],
    }  # fmt: skip
    (tmp_path / FILE_NAME).write_text(json.dumps(old))
    daemon = Daemon(settings, env={})
    state = daemon.gateway.pipeline.step(1.0)
    assert state.packs[0].cell_soc is not None
    assert state.packs[0].cell_soc.tolist() == pytest.approx([0.5] * N)  # the SOC is restored …
    h = state.packs[0].health
    assert h is not None
    assert (h.soh, h.equivalent_full_cycles, h.capacity_ah) == (1.0, 0.0, Q)  # … health starts as new


def test_daemon_ignores_a_misfit_health_entry(tmp_path: Path) -> None:
    settings = daemon_settings(tmp_path)
    bad = Core(CoreParams.defaults(Chemistry.LFP, (N,), (4,), (Q,))).export_health()[0]
    bad["cap"] = [90.0] * (N - 1)
    state = EstimatorState(
        saved_at=1.0, chemistry=settings.chemistry.value,
        packs=(PackSoc(id="a", cells=N, soc=0.5, cell_soc=(0.5,) * N, health=PackHealthState(**bad)),),
    )  # fmt: skip
    StateStore(tmp_path).save(state)
    daemon = Daemon(settings, env={})  # no crash: health starts as new, SOC is restored
    h = daemon.gateway.pipeline.step(1.0).packs[0].health
    assert h is not None
    assert h.capacity_ah == Q


# ---------------------------------------------------------------- compiled vs pure


@pytest.fixture(scope="module")
def health_modules() -> Iterator[tuple[ModuleType, ModuleType]]:
    pure = load_pure_health()
    if IS_COMPILED:
        yield pure, _health
        return
    try:
        compiled = build_compiled_health()
    except BuildUnavailableError as exc:
        pytest.skip(f"cannot build the compiled health module here: {exc}")
    yield pure, compiled


def test_compiled_and_pure_health_agree(health_modules: tuple[ModuleType, ModuleType]) -> None:
    pure, compiled = health_modules
    assert not compiled.__file__.endswith(".py")
    rigs = [Rig(sim_pack(Chemistry.LFP), core_for(Chemistry.LFP, health_module=m)) for m in (pure, compiled)]
    for rig in rigs:
        partial_cycles(rig, cycles=1)
        rig.run(30.0, 600.0)  # steps for R0 in both directions
        rig.run(-40.0, 600.0)
    a, b = (rig.core.export_health()[0] for rig in rigs)
    assert a.keys() == b.keys()
    for key, va in a.items():
        np.testing.assert_allclose(
            np.asarray(va, dtype=float), np.asarray(b[key], dtype=float), rtol=1e-12, atol=1e-15, err_msg=key
        )
    ha, hb = (rig.out.packs[0].health for rig in rigs if rig.out is not None)
    assert ha is not None
    assert hb is not None
    assert ha.dod_histogram == hb.dod_histogram
    assert ha.soh == pytest.approx(hb.soh, rel=1e-12)
