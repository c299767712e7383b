"""Balancing in the simulator: 16S LFP, ±3 % capacity and ±2 % SOC spread, 20 cycles, off/passive/active.

    python bench/balancing.py [--cycles 20] [--bleed-a 0.2] [--transfer-a 2] [--json]

Each cycle: charge at 0.5 C until the pack reaches its charge voltage (16 × 3.45 V) or a cell reaches
3.55 V, absorption (constant voltage with cell-overshoot control) until the current tails below 0.02 C or
2 h, rest 30 min, discharge at 0.5 C until a cell reaches 2.9 V, rest 30 min. Usable capacity = Ah
discharged. The planner (bmsgw/core/balancing.py) is fed every 2 s with the gateway core's own per-cell
SOC estimates (`estimates = core`, what the gateway does) or with the simulator's truth (`truth`, the
planner's upper bound; passive only: active balancing is steered by the cell voltages on the knees).
Energy spent: passive = bleed resistor heat; active = converter loss (1 − η of what is moved).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass

import numpy as np

from bmsgw.core.balancing import BalanceMode, BalanceParams, BalancePlanner
from bmsgw.core.core import Core, CoreParams
from bmsgw.model import BmsFlags, Chemistry, PackSample
from bmsgw.sim.cells import SimPack, SimPackConfig

CELLS = 16
CAP_AH = 100.0
DT = 2.0  # the core counts charge across sample gaps up to 5 s only
I_CHARGE = 0.5 * CAP_AH
I_DISCHARGE = 0.5 * CAP_AH
V_CHARGE_CELL = 3.45
V_CELL_MAX = 3.55
V_CELL_MIN = 2.9
TAIL_A = 0.02 * CAP_AH
ABSORB_MAX_S = 2 * 3600.0
REST_S = 1800.0
ETA = 0.85
ESTIMATOR = "counting"
FLAGS = BmsFlags.CHARGE_FET | BmsFlags.DISCHARGE_FET | BmsFlags.CONTACTOR_CLOSED


@dataclass
class Run:
    """One mode's results."""

    mode: str
    estimates: str
    usable_ah: list[float]
    energy_wh: float  # spent on balancing over all cycles
    spread_start_ah: float  # Ah-to-full spread at the first top of charge
    spread_end_ah: float

    def summary(self) -> dict[str, object]:
        """JSON-ready figures."""
        u = self.usable_ah
        return {
            "mode": self.mode,
            "estimates": self.estimates,
            "usable_ah_first": round(u[0], 2),
            "usable_ah_last": round(u[-1], 2),
            "usable_ah_mean_last5": round(float(np.mean(u[-5:])), 2),
            "balancing_energy_wh": round(self.energy_wh, 1),
            "topspread_ah_start": round(self.spread_start_ah, 2),
            "topspread_ah_end": round(self.spread_end_ah, 2),
        }


class Bench:
    """One simulated pack, the core estimating it and the planner acting on it."""

    def __init__(
        self, mode: BalanceMode, estimates: str, bleed_a: float, transfer_a: float, seed: int
    ) -> None:
        self.pack = SimPack(SimPackConfig(CELLS, Chemistry.LFP, CAP_AH, sensors=4, initial_soc=0.5,
                                          capacity_spread=0.03, soc_spread=0.02, seed=seed))  # fmt: skip
        self.core = Core(CoreParams.defaults(Chemistry.LFP, [CELLS], [4], [CAP_AH], estimator=ESTIMATOR,
                                             max_charge_current_a=I_CHARGE * 1.2))  # fmt: skip
        params = BalanceParams(mode=mode, transfer_current_a=transfer_a, bleed_current_a=bleed_a,
                               transfer_efficiency=ETA)  # fmt: skip
        self.planner = BalancePlanner(CELLS, params)
        self.mode = mode
        self.estimates = estimates
        self.bleed_a = bleed_a
        self.t = 0.0
        self.alive = 0
        self.energy_j = 0.0
        self.capacity = np.full(CELLS, CAP_AH)
        self.cell_soc = np.full(CELLS, 0.5)

    def step(self, current: float) -> np.ndarray:
        """Advance DT at `current`, estimate, plan, apply; the cell voltages."""
        pack = self.pack
        pack.step(DT, current)
        self.t += DT
        r = pack.reading()
        self.alive = (self.alive + 1) & 0xF
        out = self.core.step(self.t, [PackSample(0, self.t, r.cell_v, r.cell_t, current, r.voltage, FLAGS,
                                                 self.alive)])  # fmt: skip
        po = out.packs[0]
        truth = self.estimates == "truth" or po.cell_soc is None
        soc = r.soc_true if truth else np.asarray(po.cell_soc)
        plan = self.planner.plan(r.cell_v, soc, self.capacity, current, self.t, 0 if truth else po.anchors)
        if truth:
            self.planner._shift[:] = 0.0  # the truth already contains what the balancer moved
        if self.mode is BalanceMode.PASSIVE:
            pack.set_balance(plan.mask, self.bleed_a)
            bleeding = [i for i in range(CELLS) if plan.mask >> i & 1]
            self.energy_j += self.bleed_a * float(r.cell_v[bleeding].sum()) * DT
        elif self.mode is BalanceMode.ACTIVE:
            extra = np.zeros(CELLS)
            for tr in plan.transfers:
                extra[tr.source] -= tr.current_a
                extra[tr.sink] += ETA * tr.current_a
                self.energy_j += (1.0 - ETA) * tr.current_a * float(r.cell_v[tr.source]) * DT
            pack.set_cell_currents(extra)
        return np.asarray(r.cell_v)

    def topspread(self) -> float:
        """Ah-to-full spread between cells (truth): what costs capacity at the top."""
        to_full = (1.0 - self.pack.soc_true) * self.pack.capacity_true
        return float(to_full.max() - to_full.min())

    def cycle(self) -> float:
        """One charge/absorb/rest/discharge/rest cycle; the Ah discharged."""
        v = self.step(0.0)
        while v.sum() < CELLS * V_CHARGE_CELL and v.max() < V_CELL_MAX:
            v = self.step(I_CHARGE)
        current, t0 = I_CHARGE, self.t
        while self.t - t0 < ABSORB_MAX_S:
            err = min(CELLS * V_CHARGE_CELL - float(v.sum()), CELLS * (V_CELL_MAX - float(v.max())))
            current = float(np.clip(current + 20.0 * err, 0.0, I_CHARGE))
            v = self.step(current)
            if current < TAIL_A and self.t - t0 > 600.0:
                break
        for _ in range(int(REST_S / DT)):
            self.step(0.0)
        ah = 0.0
        v = self.step(0.0)
        while v.min() > V_CELL_MIN:
            v = self.step(-I_DISCHARGE)
            ah += I_DISCHARGE * DT / 3600.0
        for _ in range(int(REST_S / DT)):
            self.step(0.0)
        return ah


def run(mode: BalanceMode, estimates: str, cycles: int, bleed_a: float, transfer_a: float, seed: int) -> Run:
    """`cycles` cycles of one mode."""
    b = Bench(mode, estimates, bleed_a, transfer_a, seed)
    usable: list[float] = []
    spread0 = spread1 = float("nan")
    for k in range(cycles):
        usable.append(b.cycle())
        if k == 0:
            spread0 = b.topspread()
    spread1 = b.topspread()
    return Run(mode.value, estimates, usable, b.energy_j / 3600.0, spread0, spread1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=20)
    ap.add_argument("--bleed-a", type=float, default=0.2, help="passive bleed current per cell")
    ap.add_argument("--transfer-a", type=float, default=2.0, help="active balancer current")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    runs = [run(BalanceMode.OFF, "core", args.cycles, args.bleed_a, args.transfer_a, args.seed)]
    for est in ("core", "truth"):
        runs.append(run(BalanceMode.PASSIVE, est, args.cycles, args.bleed_a, args.transfer_a, args.seed))
    # active balancing is steered by voltages on the knees, not by SOC estimates: one run
    runs.append(run(BalanceMode.ACTIVE, "core", args.cycles, args.bleed_a, args.transfer_a, args.seed))
    cap = SimPack(
        SimPackConfig(CELLS, Chemistry.LFP, CAP_AH, capacity_spread=0.03, seed=args.seed)
    ).capacity_true
    print(f"cell capacities: min {cap.min():.2f} Ah, mean {cap.mean():.2f} Ah, max {cap.max():.2f} Ah")
    for r in runs:
        s = r.summary()
        print(
            f"{r.mode:8s} ({r.estimates:5s}) usable first {s['usable_ah_first']:6.2f} Ah, last "
            f"{s['usable_ah_last']:6.2f} Ah, mean of last 5 {s['usable_ah_mean_last5']:6.2f} Ah; "
            f"balancing energy {s['balancing_energy_wh']:7.1f} Wh; top spread {s['topspread_ah_start']:.2f}"
            f" → {s['topspread_ah_end']:.2f} Ah"
        )
    if args.json:
        print(json.dumps({"cell_capacity_min_ah": round(float(cap.min()), 2),
                          "cell_capacity_mean_ah": round(float(cap.mean()), 2),
                          "runs": [r.summary() for r in runs]}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
