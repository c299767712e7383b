"""SOC estimation accuracy: real A123 LFP lab data and simulated NMC/LFP packs, EKF against coulomb counting.

    python bench/estimation.py            # tables
    python bench/estimation.py --json     # tables, then one JSON line with every figure
    python bench/estimation.py --only a123|sim [--data DIR]

**A123** (``/work/shared/data/a123``, MIT; converted with ``examples/a123_to_csv.py``): DYN_50_P25 script 1
(25 °C, 10.2 h of UDDS-type driving with 5-minute rests, 100 % → 3 %), as is, with ±20 mA injected into the
measured current (bmsgw sign: + = charge), and with the capacity configured 5 % low; DYN_45_P05 and DYN_50_P45
script 1 for 5 °C and 45 °C. Every run goes through ``bmsgw.estimate.estimate`` (one cell, default settings;
initial SOC from the first reading). "after anchor" = from the first anchor on (OCV reset, full/empty
calibration, or the filter's σ below 2 %); "max pre-cut" = max |error| before the empty calibration at the
2.5 V cut-off, which sets SOC to 0 where the lab reference still counts ≈3 % (a definition, not drift).
The cell model was fitted on the 25 °C tests (bench/tools/fit_ecm.py): those figures are in-sample for it.

**Simulator** (``bmsgw.sim``, a 4-cell 100 Ah pack with ±3 % capacity, ±2 % SOC and ±10 % R0 spread, R0(T)
Arrhenius and self-heating; its RC branch set to the chemistry profile's nominal R1/τ1, plus one run per
chemistry with the simulator's default RC to show what a wrong RC model costs): 4 h of a dynamic profile
(pulses, regen, a 35-minute rest), 1 Hz samples with 2 mV voltage noise quantised to 1 mV and 0.2 A
current noise quantised to 0.1 A. The simulator has no hysteresis, so for LFP the bench adds one (the
A123 half-gap M(z), driven by the instantaneous current with a rate of its own, unlike the filter's).
Cases: initial SOC from OCV, and given 20 % too low / too high.
Convergence time = when every cell's |error| drops below 2 % for the rest of the run.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from bmsgw.core import IS_COMPILED, Core, CoreParams, _kernel
from bmsgw.core._devbuild import BuildUnavailableError, build_compiled_kernel
from bmsgw.core.chemistry import hysteresis_v, profile
from bmsgw.estimate import CellLog, accuracy, estimate, read_log
from bmsgw.model import Chemistry, PackSample
from bmsgw.sim.cells import SimPack, SimPackConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from a123_to_csv import ETA_Q, convert

DEFAULT_DATA = Path("/work/shared/data/a123")
A123_FILES = {"25 °C": "A123_DYN_50_P25_s1", "5 °C": "A123_DYN_45_P05_s1", "45 °C": "A123_DYN_50_P45_s1"}
# name, file key, injected current offset (A), capacity factor
A123_CASES: tuple[tuple[str, str, float, float], ...] = (
    ("25 °C", "25 °C", 0.0, 1.0),
    ("25 °C, +20 mA offset", "25 °C", 0.020, 1.0),
    ("25 °C, −20 mA offset", "25 °C", -0.020, 1.0),
    ("25 °C, capacity −5 %", "25 °C", 0.0, 0.95),
    ("5 °C", "5 °C", 0.0, 1.0),
    ("45 °C", "45 °C", 0.0, 1.0),
)
SIM_HOURS = 4.0
SIM_CAP = 100.0
V_NOISE, V_LSB, I_NOISE, I_LSB = 0.002, 0.001, 0.2, 0.1


def kernel_module() -> tuple[ModuleType, str]:
    """The compiled kernel (installed, or built from the same sources) and how it was obtained."""
    if IS_COMPILED:
        return _kernel, "installed compiled kernel"
    try:
        return build_compiled_kernel(), "compiled from the same sources"
    except BuildUnavailableError as exc:
        return _kernel, f"pure Python ({exc})"


# ------------------------------------------------------------------------------------------ A123


def a123(data: Path, km: ModuleType) -> list[dict[str, Any]]:
    logs: dict[str, tuple[CellLog, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key, stem in A123_FILES.items():
            dest = Path(tmp) / f"{stem}.csv"
            temp = convert(data / f"{stem}.csv.gz", dest)
            logs[key] = (read_log(dest), temp)
    rows = []
    for name, key, offset, capf in A123_CASES:
        log, temp = logs[key]
        q = ETA_Q[int(temp)][1]
        assert log.soc_ref is not None
        shifted = CellLog(log.t, log.current + offset, log.voltage, log.temp, log.soc_ref)
        row: dict[str, Any] = {"case": name}
        for mode in ("ekf", "counting"):
            est = estimate(shifted, Chemistry.LFP, q * capf, kernel_module=km, estimator=mode)
            acc = accuracy(est, log.soc_ref)
            empty = [t for t, kind in est.anchors if kind == "empty"]
            pre = est.t < empty[0] if empty else np.ones(est.t.size, dtype=bool)
            err = est.soc - log.soc_ref
            row[mode] = {
                **{k: round(v, 5) if isinstance(v, float) else v for k, v in acc.as_dict().items()},
                "max_pre_cutoff": round(float(np.max(np.abs(err[pre]))), 5),
                "final_capacity_ah": round(float(est.capacity_ah[-1]), 4),
                "final_r0_mohm": round(float(est.r0_ohm[-1]) * 1e3, 3),
                "final_bias_ma": round(float(est.current_bias_a[-1]) * 1e3, 2),
                "anchors": [f"{kind}@{t:.0f}s" for t, kind in est.anchors],
            }
        rows.append(row)
    return rows


def print_a123(rows: Sequence[dict[str, Any]]) -> None:
    print("A123 LFP (real cell), SOC error in % — EKF | coulomb counting (same anchors)")
    head = f"{'case':24s} {'RMSE':>6s} {'max':>6s} {'after anchor RMSE/max':>22s} {'max pre-cut':>11s}"
    print(f"{head}   {'CC RMSE':>7s} {'CC max':>7s}   bias mA  capacity")
    for r in rows:
        e, c = r["ekf"], r["counting"]
        print(
            f"{r['case']:24s} {e['rmse'] * 100:6.2f} {e['max_abs'] * 100:6.2f} "
            f"{e['rmse_after'] * 100:13.2f} / {e['max_after'] * 100:5.2f} {e['max_pre_cutoff'] * 100:11.2f}"
            f"   {c['rmse'] * 100:7.2f} {c['max_abs'] * 100:7.2f}   {e['final_bias_ma']:7.1f}  "
            f"{e['final_capacity_ah']:.3f}"
        )


# ------------------------------------------------------------------------------------------ simulator


def _drive(t: float) -> float:
    """Pack current (A, > 0 charging) for a 100 Ah pack: discharge pulses and regen for 100 min, a 35-minute
    rest, then charge-heavy (PV-like) for 100 min with pulses, repeating."""
    period = 14100.0
    x = t % period
    wiggle = 25.0 * math.sin(2 * math.pi * t / 97.0) + (40.0 if t % 60 < 8 else 0.0)
    if x < 6000.0:
        return -35.0 + wiggle
    if x < 8100.0:
        return 0.0
    return 30.0 + 0.6 * wiggle


def simulate(
    chem: Chemistry, initial: float | None, km: ModuleType, *, own_rc: bool = True, seed: int = 3
) -> dict[str, Any]:
    prof = profile(chem)
    true0 = 0.8
    fitted = {"rc_tau_s": prof.tau1_s, "r1_fraction": prof.r1_ohm_ah / prof.r0_ohm_ah}
    rc = fitted if own_rc else {"rc_tau_s": 60.0, "r1_fraction": 0.5}  # a cell unlike the model
    cfg = SimPackConfig(
        cells=4, chemistry=chem, capacity_ah=SIM_CAP, sensors=1, initial_soc=true0, seed=seed, **rc
    )
    sim = SimPack(cfg)
    rng = np.random.default_rng(seed)
    params = CoreParams.defaults(chem, (4,), (1,), (SIM_CAP,), max_discharge_current_a=2 * SIM_CAP)
    core = Core(params, initial_soc=None if initial is None else [initial], kernel_module=km)
    hyst = chem is Chemistry.LFP
    h = np.full(4, -1.0)
    gamma = 100.0  # the bench's own hysteresis rate (the filter's drive is a filtered current)
    n = int(SIM_HOURS * 3600)
    errs = np.empty((n, 4))
    ts = np.arange(1, n + 1, dtype=np.float64)
    for k in range(n):
        i = _drive(k)
        sim.step(1.0, i)
        r = sim.reading()
        v = np.array(r.cell_v)
        if hyst:
            a = math.exp(-abs(i) * gamma / (3600.0 * SIM_CAP))
            if i != 0.0:
                h = a * h + (1.0 - a) * math.copysign(1.0, i)
            v += np.array([hysteresis_v(prof, float(z)) for z in r.soc_true]) * h
        v = np.round((v + rng.normal(0.0, V_NOISE, 4)) / V_LSB) * V_LSB
        cur = round((r.current + rng.normal(0.0, I_NOISE)) / I_LSB) * I_LSB
        out = core.step(ts[k], [PackSample(0, ts[k], v, np.array(r.cell_t), cur, float(v.sum()))])
        errs[k] = out.packs[0].cell_soc - r.soc_true
    worst = np.max(np.abs(errs), axis=1)
    bad = np.flatnonzero(worst >= 0.02)
    conv = float(ts[bad[-1]]) if bad.size else 0.0  # last time any cell was 2 % off
    after = errs[ts > conv] if bad.size < n else errs[:0]
    po = out.packs[0]
    return {
        "initial_error": None if initial is None else round(initial - true0, 3),
        "sim_rc": "profile" if own_rc else f"R1 = {cfg.r1_fraction:g}·R0, τ = {cfg.rc_tau_s:g} s",
        "convergence_s": conv if bad.size < n else math.inf,
        "rmse_after": round(float(np.sqrt(np.mean(after**2))), 5) if after.size else math.nan,
        "max_after": round(float(np.max(np.abs(after))), 5) if after.size else math.nan,
        "rmse": round(float(np.sqrt(np.mean(errs**2))), 5),
        "max_abs": round(float(np.max(np.abs(errs))), 5),
        "final_bias_a": round(po.current_bias_a, 4),
        "anchors": po.anchors,
    }


def sims(km: ModuleType) -> list[dict[str, Any]]:
    rows = []
    for chem in (Chemistry.NMC, Chemistry.LFP):
        for initial in (None, 0.6, 1.0):
            rows.append({"chemistry": str(chem), **simulate(chem, initial, km)})
    for chem in (Chemistry.NMC, Chemistry.LFP):  # the filter's RC model no longer matches the cell's
        rows.append({"chemistry": str(chem), **simulate(chem, None, km, own_rc=False)})
    return rows


def print_sims(rows: Sequence[dict[str, Any]]) -> None:
    print("Simulated 4-cell pack, 4 h, noisy sensors; SOC error of every cell in %")
    print(f"{'case':18s} {'converged after':>16s} {'RMSE/max after':>15s} {'RMSE/max overall':>17s}  cell RC")
    for r in rows:
        init = "from OCV" if r["initial_error"] is None else f"{r['initial_error'] * 100:+.0f} %"
        conv = "never" if math.isinf(r["convergence_s"]) else f"{r['convergence_s']:.0f} s"
        print(
            f"{r['chemistry'] + ' ' + init:18s} {conv:>16s} "
            f"{r['rmse_after'] * 100:7.2f} / {r['max_after'] * 100:5.2f} "
            f"{r['rmse'] * 100:8.2f} / {r['max_abs'] * 100:5.2f}  {r['sim_rc']}"
        )


def _finite(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="end with one JSON line of results")
    ap.add_argument("--only", choices=("a123", "sim"))
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="A123 data directory")
    args = ap.parse_args(argv)
    km, how = kernel_module()
    print(f"kernel: {how}")
    result: dict[str, Any] = {}
    jobs: list[
        tuple[str, Callable[[], list[dict[str, Any]]], Callable[[Sequence[dict[str, Any]]], None]]
    ] = []
    if args.only in (None, "a123"):
        if (args.data / f"{A123_FILES['25 °C']}.csv.gz").exists():
            jobs.append(("a123", lambda: a123(args.data, km), print_a123))
        else:
            print(f"A123 data not found in {args.data}: skipped")
    if args.only in (None, "sim"):
        jobs.append(("sim", lambda: sims(km), print_sims))
    for name, job, show in jobs:
        rows = job()
        show(rows)
        print()
        result[name] = rows
    if args.json:
        print(json.dumps(_finite(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
