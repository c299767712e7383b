"""Health estimation: capacity and R0 against the simulator's truth, self-discharge of a leaking cell, and
the cost of the health step, compiled against pure Python.

    python bench/health.py            # table
    python bench/health.py --json     # table, then one JSON line with every figure

**Accuracy**: a 16S 100 Ah pack (±3 % capacity, ±2 % SOC, ±10 % R0 spread, seed 3), 2 s samples without
noise, a 35-minute rest, then three partial cycles (0.5 C charge to 97 % of the fullest cell, 35-minute rest,
0.5 C discharge to 10 % of the emptiest, 35-minute rest), estimator "counting". The simulator's RC branch is
the chemistry profile's (R1, τ1) and, for LFP, its OCV hysteresis is on (the profile's M(z, T)): the cell
the profile describes. "lfp_sim_defaults" is the same with ``SimPackConfig``'s defaults (the fitted RC
branch too since the simulator takes it from the profile) and no hysteresis; "lfp_mismatched_rc" the
simulator's old RC (R1 = 0.5 R0, τ 60 s) and no hysteresis: what a cell that does not match the model costs.
Errors are per cell against ``SimPack.capacity_true`` / ``r0_25c``; "pack" = the weakest cell's capacity.
**Self-discharge**: the LFP pack resting two days at 20 % SOC, 5 s samples, one cell leaking 2 %/day.
**Timing**: ``Health.step`` alone (the kernel's inputs advanced by hand), one pack of 16 and of 10,000
cells, a constant current with a step every 100 samples.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_health import N, Q, Rig, core_for, partial_cycles, sim_pack

from bmsgw.core import Core, CoreParams
from bmsgw.core._devbuild import BuildUnavailableError, build_compiled_health, load_pure_health
from bmsgw.model import Chemistry
from bmsgw.sim.cells import SimPack, SimPackConfig


def accuracy(chem: Chemistry, defaults: dict[str, float] | None = None) -> dict[str, float]:
    """Capacity and R0 errors (%) after three partial cycles; `defaults`: SimPackConfig's defaults + these."""
    sim = (
        SimPack(
            SimPackConfig(
                cells=N, chemistry=chem, capacity_ah=Q, sensors=4, initial_soc=0.5, seed=3, **defaults
            )
        )
        if defaults is not None
        else sim_pack(chem)
    )
    rig = Rig(sim, core_for(chem))
    out = partial_cycles(rig)
    h = out.packs[0].health
    assert h is not None
    cap = (h.cell_capacity_ah - sim.capacity_true) / sim.capacity_true * 100.0
    r0 = (h.cell_r0_ohm - sim.r0_25c) / sim.r0_25c * 100.0
    return {
        "capacity_err_max_pct": float(np.abs(cap).max()),
        "capacity_err_mean_pct": float(cap.mean()),
        "pack_capacity_err_pct": float((h.capacity_ah / sim.capacity_true.min() - 1.0) * 100.0),
        "r0_err_max_pct": float(np.abs(r0).max()),
        "r0_err_mean_pct": float(r0.mean()),
        "soh": h.soh,
        "efc": h.equivalent_full_cycles,
    }


def self_discharge() -> dict[str, float]:
    """The leaking cell's estimated drift and the largest of the others (%/day, relative to the mean)."""
    leak = [0.0] * N
    leak[5] = 2.0 * Q / 100.0 / 24.0
    sim = sim_pack(Chemistry.LFP, initial_soc=0.2, cell_leak_a=tuple(leak), self_discharge_per_day=0.0)
    out = Rig(sim, core_for(Chemistry.LFP), dt=5.0).run(0.0, 2 * 86400.0)
    h = out.packs[0].health
    assert h is not None
    sd = h.cell_self_discharge_pct_day
    return {
        "leak_true_pct_day": 2.0 * (1.0 - 1.0 / N),  # relative to the pack mean, which the leak pulls down
        "leak_est_pct_day": float(sd[5]),
        "others_max_abs_pct_day": float(np.abs(np.delete(sd, 5)).max()),
    }


def step_us(module: ModuleType, cells: int, steps: int) -> float:
    """Mean time of one Health.step for one pack of `cells` cells (µs)."""
    core = Core(
        CoreParams.defaults(Chemistry.LFP, (cells,), (1,), (Q,), estimator="counting"), health_module=module
    )
    k = core._k  # the bench drives the health module alone
    h = core._h
    np.asarray(k.cell_v)[:] = 3.3
    t = 0.0
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for i in range(steps):
            t += 1.0
            k.set_pack(0, 1, t, 20.0 if (i // 100) % 2 else -20.0, 0, 1)
            h.step()
        best = min(best, (time.perf_counter() - t0) / steps * 1e6)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="end with one JSON line of every figure")
    args = ap.parse_args()
    res: dict[str, Any] = {
        "lfp": accuracy(Chemistry.LFP),
        "nmc": accuracy(Chemistry.NMC),
        "lfp_sim_defaults": accuracy(Chemistry.LFP, defaults={}),
        "lfp_mismatched_rc": accuracy(Chemistry.LFP, defaults={"r1_fraction": 0.5, "rc_tau_s": 60.0}),
        "self_discharge": self_discharge(),
    }
    print(f"{'case':<24}{'cap max %':>10}{'cap mean %':>11}{'pack %':>8}{'R0 max %':>10}{'R0 mean %':>10}")
    for name in ("lfp", "nmc", "lfp_sim_defaults", "lfp_mismatched_rc"):
        r = res[name]
        print(
            f"{name:<24}{r['capacity_err_max_pct']:>10.2f}{r['capacity_err_mean_pct']:>+11.2f}"
            f"{r['pack_capacity_err_pct']:>+8.2f}{r['r0_err_max_pct']:>10.2f}{r['r0_err_mean_pct']:>+10.2f}"
        )
    sd = res["self_discharge"]
    print(
        f"self-discharge: leaking cell {sd['leak_est_pct_day']:.2f} %/day "
        f"(true {sd['leak_true_pct_day']:.2f}), others ≤ {sd['others_max_abs_pct_day']:.2f} %/day"
    )
    timing: dict[str, float] = {}
    variants = {"pure": load_pure_health()}
    try:
        variants["compiled"] = build_compiled_health()
    except BuildUnavailableError as exc:
        print(f"compiled health module unavailable: {exc}")
    for name, module in variants.items():
        for cells, steps in (
            (16, 20000 if name == "compiled" else 5000),
            (10000, 2000 if name == "compiled" else 50),
        ):
            us = step_us(module, cells, steps)
            timing[f"{name}_us_{cells}_cells"] = us
            print(f"health step, {name}, {cells} cells: {us:.2f} µs")
    if "compiled" in variants:
        timing["compiled_vs_pure_10k"] = timing["pure_us_10000_cells"] / timing["compiled_us_10000_cells"]
        print(f"compiled vs pure (10,000 cells): {timing['compiled_vs_pure_10k']:.0f}×")
    res["timing"] = timing
    if args.json:
        print(json.dumps(res))


if __name__ == "__main__":
    main()
