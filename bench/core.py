"""Benchmark ``Core.step``: the compiled kernel against the pure-Python run of the same ``_kernel.py``.

    python bench/core.py            # table
    python bench/core.py --json     # table, then one JSON line (compiled_vs_pure, step_ms_10k_cells, …)
    python bench/core.py --quick    # shorter runs (CI smoke)

Sizes: 1 pack × 16 cells, 16 × 16, and 16 × 625 = 10,000 cells, every pack with a new sample on every
step (the worst case), plus the gateway's real pattern for 16 × 16: one pack with new data per step
(each pack samples at 10 Hz and the core steps on every complete pack sample).

If the installed kernel is pure Python (``SKIP_CYTHON=1``), the compiled one is built from the same
sources into a scratch directory (cached per source hash); nothing is written into the package.

Times are the thread's CPU time per step (best of 3 runs, the pure and compiled runs interleaved), so other
processes on a shared machine neither inflate one variant nor skew the ratio between them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from types import ModuleType

import numpy as np

from bmsgw.core import IS_COMPILED, Core, CoreParams, _health, _kernel
from bmsgw.core._devbuild import (
    BuildUnavailableError,
    build_compiled_health,
    build_compiled_kernel,
    load_pure_health,
    load_pure_kernel,
)
from bmsgw.model import BmsFlags, Chemistry, PackSample

# name, packs, cells per pack, new samples per step (None = all packs)
CONFIGS: tuple[tuple[str, int, int, int | None], ...] = (
    ("1x16", 1, 16, None),
    ("16x16", 16, 16, None),
    ("16x16, 1 new/step", 16, 16, 1),
    ("16x625 (10k cells)", 16, 625, None),
)
SENSORS = 4
RING = 64  # distinct cell-voltage arrays cycled through (keeps memory flat for 10k cells)


def _schedule(n_packs: int, cells: int, n_steps: int, new_per_step: int | None) -> list[list[PackSample]]:
    """Pre-built sample lists so the timed loop only runs Core.step."""
    rng = np.random.default_rng(1)
    volts = [3.30 + 0.01 * rng.standard_normal((n_packs, cells)) for _ in range(RING)]
    temps = 25.0 + rng.standard_normal((n_packs, SENSORS))
    flags = BmsFlags.CHARGE_FET | BmsFlags.DISCHARGE_FET
    current = [float(x) for x in 20.0 * rng.standard_normal(RING)]
    last = [
        PackSample(p, 0.0, volts[0][p].copy(), temps[p].copy(), current[0], 52.8, flags)
        for p in range(n_packs)
    ]
    out: list[list[PackSample]] = []
    for k in range(1, n_steps + 1):
        t = 0.1 * k
        fresh = range(n_packs) if new_per_step is None else [k % n_packs]
        for p in fresh:
            r = k % RING
            last[p] = PackSample(p, t, volts[r][p], temps[p], current[r], 52.8, flags)
        out.append(list(last))
    return out


def _time_per_step(
    kms: Sequence[ModuleType], n_packs: int, cells: int, new: int | None, budget_s: float
) -> list[float]:
    """Per kernel module in `kms`, the best CPU time per step of 3 runs (the modules' runs interleaved)."""
    params = CoreParams.defaults(Chemistry.LFP, (cells,) * n_packs, (SENSORS,) * n_packs, (280.0,) * n_packs)
    clock = time.thread_time
    scheds = []
    for km in kms:
        # calibrate the step count so one repeat takes about budget_s
        core = Core(params, kernel_module=km, health_module=_HEALTH.get(km))
        probe = _schedule(n_packs, cells, 20, new)
        t0 = clock()
        for k, s in enumerate(probe):
            core.step(0.1 * (k + 1), s)
        per = (clock() - t0) / len(probe)
        n_steps = max(50, min(20000, int(budget_s / max(per, 1e-7))))
        scheds.append(_schedule(n_packs, cells, n_steps, new))
    best = [float("inf")] * len(kms)
    for _ in range(3):
        for j, km in enumerate(kms):
            sched = scheds[j]
            core = Core(params, kernel_module=km, health_module=_HEALTH.get(km))
            core.step(0.0, sched[0])  # first step initialises SOC from OCV; not representative
            t0 = clock()
            for k in range(1, len(sched)):
                core.step(0.1 * k, sched[k])
            best[j] = min(best[j], (clock() - t0) / (len(sched) - 1))
    return best


_HEALTH: dict[ModuleType, ModuleType] = {}  # kernel variant → the health module of the same kind


def _variants() -> tuple[ModuleType, ModuleType | None, str]:
    pure = load_pure_kernel()
    _HEALTH[pure] = load_pure_health()
    if IS_COMPILED:
        _HEALTH[_kernel] = _health
        return pure, _kernel, f"installed ({_kernel.__file__})"
    try:
        compiled = build_compiled_kernel()
        _HEALTH[compiled] = build_compiled_health()
    except BuildUnavailableError as exc:
        return pure, None, f"unavailable: {exc}"
    return pure, compiled, f"built from the same sources ({compiled.__file__})"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Benchmark Core.step, compiled vs pure kernel.")
    ap.add_argument("--json", action="store_true", help="end with one JSON line of results")
    ap.add_argument("--quick", action="store_true", help="short runs")
    args = ap.parse_args(argv)
    budget = 0.1 if args.quick else 0.5

    pure, compiled, how = _variants()
    print(f"compiled kernel: {how}")
    print(f"{'config':22s} {'cells':>6s} {'pure µs/step':>13s} {'compiled µs/step':>17s} {'speedup':>8s}")
    results: dict[str, dict[str, float | None]] = {}
    for name, n_packs, cells, new in CONFIGS:
        times = _time_per_step([pure] if compiled is None else [pure, compiled], n_packs, cells, new, budget)
        t_pure = times[0]
        t_comp = times[1] if compiled is not None else None
        speedup = t_pure / t_comp if t_comp else None
        results[name] = {
            "cells": n_packs * cells,
            "pure_us": round(t_pure * 1e6, 2),
            "compiled_us": round(t_comp * 1e6, 2) if t_comp is not None else None,
            "speedup": round(speedup, 2) if speedup is not None else None,
        }
        comp_s = f"{t_comp * 1e6:17.1f}" if t_comp is not None else f"{'n/a':>17s}"
        sp_s = f"{speedup:7.1f}x" if speedup is not None else f"{'n/a':>8s}"
        print(f"{name:22s} {n_packs * cells:6d} {t_pure * 1e6:13.1f} {comp_s} {sp_s}")

    big = results["16x625 (10k cells)"]
    step_10k_us = big["compiled_us"] if big["compiled_us"] is not None else big["pure_us"]
    assert step_10k_us is not None
    if args.json:
        print(
            json.dumps(
                {
                    "compiled_vs_pure": big["speedup"],  # pure time / compiled time, 10k cells
                    "step_ms_10k_cells": round(step_10k_us / 1000.0, 4),
                    "step_us_1x16_compiled": results["1x16"]["compiled_us"],
                    "compiled_available": compiled is not None,
                    "installed_is_compiled": IS_COMPILED,
                    "configs": results,
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
