"""EKF against coulomb counting on a simulated 16S LFP pack with and without OCV hysteresis in the simulator.

    python bench/soc_hysteresis.py [--hours 1 24] [--json]

What the gateway's simulation does, without the CAN round trip: a 16S 100 Ah LFP ``SimPack`` (seed 1, the
simulator's default RC branch, ±3 % capacity / ±2 % SOC spread) from 50 % SOC at 11:00 on the solar-day site
profile, the current clamped to the core's CCL/DCL; 1 s samples, cell voltages quantised to 1 mV and current
to 1 mA as pack.dbc carries them. The core starts from OCV (no state file) with ``estimator`` = "counting"
(the default) or "ekf"; ``hysteresis`` = 0 is the simulator as it was, 1 adds the chemistry profile's LFP
hysteresis M(z, T) (``SimPackConfig.hysteresis``). A "noisy" variant adds 2 mV (cell) and 0.2 A (current)
Gaussian noise before quantising. Error = estimated − true SOC of every cell, in % SOC.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from bmsgw.core import Core, CoreParams
from bmsgw.model import Chemistry, PackSample
from bmsgw.sim.cells import SimPack, SimPackConfig
from bmsgw.sim.profile import SolarDayProfile

Q = 100.0
N = 16


def run(estimator: str, hysteresis: float, hours: float, noisy: bool = False) -> dict[str, float]:
    """RMSE / max |error| (% SOC, all cells) over the run and over its last hour, and the final error."""
    sim = SimPack(
        SimPackConfig(
            cells=N, chemistry=Chemistry.LFP, capacity_ah=Q, sensors=4, initial_soc=0.5, seed=1,
            hysteresis=hysteresis,
        )
    )  # fmt: skip
    prof = SolarDayProfile.for_capacity(Q, 1, seed=1, start_s=11 * 3600.0)
    core = Core(CoreParams.defaults(Chemistry.LFP, (N,), (4,), (Q,), estimator=estimator))
    rng = np.random.default_rng(7)
    ccl = dcl = 0.0
    steps = int(hours * 3600)
    err = np.empty((steps, N))
    for k in range(steps):
        t = float(k + 1)
        sim.step(1.0, float(min(max(prof.demand(t), -dcl), ccl)))
        r = sim.reading()
        v = r.cell_v + (rng.normal(0.0, 0.002, N) if noisy else 0.0)
        i = r.current + (rng.normal(0.0, 0.2) if noisy else 0.0)
        v = np.round(v, 3)
        out = core.step(t, [PackSample(0, t, v, r.cell_t, round(i, 3), float(v.sum()))])
        ccl, dcl = out.limits.ccl.value, out.limits.dcl.value
        err[k] = (out.packs[0].cell_soc - r.soc_true) * 100.0
    last = err[-3600:]
    return {
        "rmse_pct": float(np.sqrt(np.mean(err**2))),
        "max_pct": float(np.abs(err).max()),
        "last_hour_rmse_pct": float(np.sqrt(np.mean(last**2))),
        "last_hour_max_pct": float(np.abs(last).max()),
        "final_mean_pct": float(err[-1].mean()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hours", type=float, nargs="+", default=[1.0, 24.0])
    ap.add_argument("--json", action="store_true", help="end with one JSON line of every figure")
    args = ap.parse_args()
    res: dict[str, Any] = {}
    print(f"{'case':<36}{'RMSE %':>8}{'max %':>8}{'last h RMSE':>12}{'last h max':>11}{'final':>8}")
    for hours in args.hours:
        for hyst in (0.0, 1.0):
            for noisy in (False, True):
                for est in ("counting", "ekf"):
                    name = f"{hours:g} h, hysteresis {hyst:g}{', noisy' if noisy else ''}, {est}"
                    r = run(est, hyst, hours, noisy)
                    res[name] = r
                    print(
                        f"{name:<36}{r['rmse_pct']:>8.2f}{r['max_pct']:>8.2f}{r['last_hour_rmse_pct']:>12.2f}"
                        f"{r['last_hour_max_pct']:>11.2f}{r['final_mean_pct']:>+8.2f}"
                    )
    if args.json:
        print(json.dumps(res))


if __name__ == "__main__":
    main()
