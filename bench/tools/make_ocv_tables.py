"""Derive the OCV(SOC) tables that `bmsgw/core/chemistry.py` carries as literals.

Runs offline, numpy only:

    python bench/tools/make_ocv_tables.py             # print the tables and the sanity report
    python bench/tools/make_ocv_tables.py --check     # exit 1 if chemistry.py disagrees (> 0.5 mV)
    python bench/tools/make_ocv_tables.py --data DIR  # A123 data elsewhere (default /work/shared/data/a123)

LFP: A123 LiFePO4 cell (≈2.07 Ah), slow C/27 OCV tests at 25 °C, files A123_OCV_P25_S{1..4}.csv.gz (Arbin
export, current > 0 = charge; MIT licence, from batterysim/esctoolbox-python, originally G. Plett's
ESCtoolbox). Script roles: S1 full → empty at 0.077 A; S2 tops off the discharge to 2.0 V (CV); S3 empty →
full at 0.077 A; S4 tops off the charge to 3.6 V (CV).

  1. Coulombic efficiency η = total discharged Ah / total charged Ah over S1..S4 (≈ 0.9962).
  2. Capacity Q = Ah out from full to empty = dis(S1) + dis(S2) − η·(chg(S1) + chg(S2)) (≈ 2.0726 Ah).
  3. Discharge branch (S1, step 2): z = 1 − (disAh − η·chgAh)/Q; charge branch (S3, step 2):
     z = (η·chgAh − disAh)/Q (S2 left the cell at 0 %).
  4. OCV(z) = ½ (V_charge(z) + V_discharge(z)) on the grid below: at equal |I| the average cancels the ohmic
     drop and (to first order) the hysteresis. Each branch is smoothed by averaging its samples within
     ±0.25 % SOC of the grid point.
  5. The branches do not reach both ends (discharge stops at 2.0 V at z ≈ 0.006, charge at 3.6 V at
     z ≈ 0.992), and the discharge branch is deep in its diffusion knee below 1 %. The end points z = 0 and
     z = 1 are therefore extrapolated linearly from the two neighbouring grid points (0.01/0.02 and
     0.98/0.99). The report compares them with the relaxed voltages the tests recorded after 2 h rest.
  6. R0 report: median of −ΔV/ΔI over 1 s current steps > 1 A in A123_DYN_50_P25_s1 (+ = discharge in that
     file), times Q. It includes 1 s of polarisation; the profile's `r0_ohm_ah` comes from the dynamic fit
     instead (bench/tools/fit_ecm.py), this is the cross-check.
  7. Temperature and hysteresis: the same steps at 5 °C and 45 °C (A123_OCV_P05/P45_S{1..4}). There scripts 2
     and 4 ran at 25 °C (Plett's procedure), so η(T) = (Σdis − η25·(chg(S2) + chg(S4))) / (chg(S1) + chg(S3))
     and Q(T) = dis(S1) + dis(S2) − η(T)·chg(S1) − η25·chg(S2). The hysteresis table M(z) is half the gap
     between the branches (at C/27 the ohmic part of the gap is < 1 mV); at 25 °C M(0) and M(1) repeat their
     neighbours. At 5 °C and 45 °C the grid points near the ends where a branch has no samples take the
     25 °C OCV plus the temperature offset of the nearest complete grid point, and that point's M.

NMC: no measured data here. The table is the LG INR21700-M50 full-cell OCV computed from the electrode
open-circuit-potential fits and stoichiometry window of Chen et al., "Development of Experimental
Techniques for Parameterization of Multi-scale Lithium-ion Battery Models", J. Electrochem. Soc. 167 (2020)
080534 (the PyBaMM "Chen2020" parameter set): OCV(z) = U_pos(y(z)) − U_neg(x(z)) with x = 0.0279 → 0.9014 and
y = 0.9084 → 0.2661 from 0 % to 100 % SOC. That spans 2.50 V (0 %) to 4.19 V (100 %): the cell's rated
window, not the narrower 3.0–4.2 V window some pack BMSs call 0–100 %.
"""

from __future__ import annotations

import argparse
import csv
import functools
import gzip
import math
import sys
from pathlib import Path

import numpy as np

from bmsgw.core import chemistry
from bmsgw.model import Chemistry

DEFAULT_DATA = Path("/work/shared/data/a123")

# SOC grid shared by both chemistries: dense where the curves are steep (both ends), 5 % in the middle.
GRID: tuple[float, ...] = (
    0.0, 0.01, 0.02, 0.03, 0.05, 0.075,
    *(round(0.1 + 0.05 * k, 3) for k in range(17)),
    0.925, 0.95, 0.97, 0.98, 0.99, 1.0,
)  # fmt: skip

HALF_WINDOW = 0.0025  # ± SOC window averaged around each grid point


@functools.cache
def _load_arbin(path: Path) -> dict[str, np.ndarray]:
    with gzip.open(path, "rt", newline="") as f:
        rows = list(csv.DictReader(f))
    cols = {
        "step": "Step_Index",
        "current": "Current(A)",
        "voltage": "Voltage(V)",
        "chg": "Charge_Capacity(Ah)",
        "dis": "Discharge_Capacity(Ah)",
    }
    return {k: np.array([float(r[c]) for r in rows]) for k, c in cols.items()}


def _branch_at(z_grid: np.ndarray, z: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Mean of the branch's voltage samples within ±HALF_WINDOW of each grid point (NaN where none)."""
    out = np.full(z_grid.shape, np.nan)
    for k, zg in enumerate(z_grid):
        m = np.abs(z - zg) <= HALF_WINDOW
        if m.any():
            out[k] = float(np.mean(v[m]))
    return out


def _totals(s: dict[int, dict[str, np.ndarray]]) -> tuple[float, float]:
    return sum(float(s[k]["dis"][-1]) for k in s), sum(float(s[k]["chg"][-1]) for k in s)


def _eta_q(data: Path, temp: str) -> tuple[float, float, dict[int, dict[str, np.ndarray]]]:
    """η and Q at `temp` (step 1–2 of the module docstring, Plett's split for the non-25 °C tests)."""
    s = {k: _load_arbin(data / f"A123_OCV_{temp}_S{k}.csv.gz") for k in (1, 2, 3, 4)}
    s25 = s if temp == "P25" else {k: _load_arbin(data / f"A123_OCV_P25_S{k}.csv.gz") for k in (1, 2, 3, 4)}
    dis25, chg25 = _totals(s25)
    eta25 = dis25 / chg25
    if temp == "P25":
        eta = eta25
        q = float(s[1]["dis"][-1] + s[2]["dis"][-1] - eta * (s[1]["chg"][-1] + s[2]["chg"][-1]))
    else:  # scripts 2 and 4 ran at 25 °C: their charge counts with η(25 °C)
        dis, _ = _totals(s)
        eta = (dis - eta25 * float(s[2]["chg"][-1] + s[4]["chg"][-1])) / float(
            s[1]["chg"][-1] + s[3]["chg"][-1]
        )
        q = float(s[1]["dis"][-1] + s[2]["dis"][-1] - eta * s[1]["chg"][-1] - eta25 * s[2]["chg"][-1])
    return eta, q, s


def _branches(
    data: Path, temp: str
) -> tuple[np.ndarray, np.ndarray, dict[str, float], dict[int, dict[str, np.ndarray]]]:
    """Discharge and charge branch on GRID (NaN where a branch has no samples), plus η/Q."""
    eta, q, s = _eta_q(data, temp)
    m1 = s[1]["step"] == 2
    z_dis = 1.0 - (s[1]["dis"][m1] - eta * s[1]["chg"][m1]) / q
    m3 = s[3]["step"] == 2
    z_chg = (eta * s[3]["chg"][m3] - s[3]["dis"][m3]) / q
    z = np.array(GRID)
    v_dis = _branch_at(z, z_dis, s[1]["voltage"][m1])
    v_chg = _branch_at(z, z_chg, s[3]["voltage"][m3])
    info = {"eta": eta, "q_ah": q, "z_dis_end": float(z_dis[-1]), "z_chg_end": float(z_chg[-1])}
    return v_dis, v_chg, info, s


def _extrapolate_ends(avg: np.ndarray) -> None:
    z = np.array(GRID)
    avg[0] = avg[1] - (avg[2] - avg[1]) * (z[1] - z[0]) / (z[2] - z[1])
    avg[-1] = avg[-2] + (avg[-2] - avg[-3]) * (z[-1] - z[-2]) / (z[-2] - z[-3])


def lfp_tables(data: Path, temp: str) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """OCV (mean of the branches) and hysteresis half-gap M on GRID at chamber temperature `temp`.

    25 °C: steps 4–5 (M at the ends repeats its neighbour). Other temperatures: where both branches exist,
    the same; at the other grid points (near the ends) OCV = OCV(25 °C) + the temperature offset and M = the
    half-gap of the nearest complete grid point (step 7).
    """
    v_dis, v_chg, info, _ = _branches(data, temp)
    avg = 0.5 * (v_chg + v_dis)
    hyst = 0.5 * (v_chg - v_dis)
    if temp == "P25":
        _extrapolate_ends(avg)  # step 5
        hyst[0] = hyst[1]
        hyst[-1] = hyst[-2]
    else:
        avg25, _, _ = lfp_tables(data, "P25")
        both = np.flatnonzero(~np.isnan(avg))
        for k in range(len(GRID)):
            if np.isnan(avg[k]):
                near = int(both[np.argmin(np.abs(both - k))])
                avg[k] = avg25[k] + (avg[near] - avg25[near])
                hyst[k] = hyst[near]
    if np.isnan(avg).any() or np.isnan(hyst).any():
        raise SystemExit(f"LFP {temp}: a grid point has no data")
    return avg, hyst, info


def lfp_table(data: Path) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """The 25 °C table plus R0 and the relaxed-voltage report (steps 1–6)."""
    avg, _, info = lfp_tables(data, "P25")
    _, _, _, s = _branches(data, "P25")
    z = np.array(GRID)

    with gzip.open(data / "A123_DYN_50_P25_s1.csv.gz", "rt") as f:
        dyn = np.genfromtxt(f, delimiter=",", names=True)
    d_i = np.diff(dyn["current"])
    d_v = np.diff(dyn["voltage"])
    steps = np.abs(d_i) > 1.0
    r0 = float(np.median(-d_v[steps] / d_i[steps]))
    q = info["q_ah"]
    rest = {
        # relaxed voltages after 2 h rest, with the SOC they were taken at
        "rest_full_z": 1.0,
        "rest_full_v": float(s[1]["voltage"][s[1]["step"] == 1][-1]),
        "rest_after_discharge_z": info["z_dis_end"],
        "rest_after_discharge_v": float(s[2]["voltage"][s[2]["step"] == 1][-1]),
        "rest_after_charge_z": info["z_chg_end"],
        "rest_after_charge_v": float(s[4]["voltage"][s[4]["step"] == 1][-1]),
    }
    return z, avg, {**info, "r0_ohm": r0, "r0_ohm_ah": r0 * q, **rest}


def _u_neg_chen2020(x: float) -> float:
    """Graphite(-SiOx) OCP vs Li, Chen et al. 2020, eq. for the LG M50 negative electrode."""
    return (
        1.9793 * math.exp(-39.3631 * x)
        + 0.2482
        - 0.0909 * math.tanh(29.8538 * (x - 0.1234))
        - 0.04478 * math.tanh(14.9159 * (x - 0.2769))
        - 0.0205 * math.tanh(30.4444 * (x - 0.6103))
    )


def _u_pos_chen2020(y: float) -> float:
    """NMC811 OCP vs Li, Chen et al. 2020, eq. for the LG M50 positive electrode."""
    return (
        -0.8090 * y
        + 4.4875
        - 0.0428 * math.tanh(18.5138 * (y - 0.5542))
        - 17.7326 * math.tanh(15.7890 * (y - 0.3117))
        + 17.5842 * math.tanh(15.9308 * (y - 0.3120))
    )


def nmc_table() -> tuple[np.ndarray, np.ndarray]:
    x0, x100, y0, y100 = 0.0279, 0.9014, 0.9084, 0.2661
    z = np.array(GRID)
    v = np.array(
        [_u_pos_chen2020(y0 + zz * (y100 - y0)) - _u_neg_chen2020(x0 + zz * (x100 - x0)) for zz in z]
    )
    return z, v


def _fmt(name: str, values: np.ndarray, digits: int) -> str:
    items = ", ".join(f"{x:.{digits}f}" for x in values)
    return f"{name} = ({items})"


TEMPS: tuple[tuple[str, float], ...] = (("P05", 5.0), ("P25", 25.0), ("P45", 45.0))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument(
        "--check", action="store_true", help="compare with bmsgw.core.chemistry and fail on drift"
    )
    args = ap.parse_args(argv)

    z, lfp, info = lfp_table(args.data)
    by_temp = {name: lfp_tables(args.data, name) for name, _ in TEMPS}
    _, nmc = nmc_table()
    for name, v in [("LFP", lfp), ("NMC", nmc)] + [(f"LFP {t}", by_temp[t][0]) for t, _ in TEMPS]:
        if not np.all(np.diff(v) > 0):
            raise SystemExit(f"{name}: table is not strictly increasing")

    print(_fmt("SOC_POINTS", z, 3))
    print(_fmt("LFP_OCV", lfp, 4))
    print(_fmt("NMC_OCV", nmc, 4))
    for name, temp in TEMPS:
        avg, hyst, tinfo = by_temp[name]
        print(f"# {temp:.0f} °C: eta = {tinfo['eta']:.4f}, Q = {tinfo['q_ah']:.4f} Ah")
        print(_fmt(f"LFP_OCV_{temp:.0f}C", avg, 4))
        print(_fmt(f"LFP_HYST_{temp:.0f}C", hyst, 4))
    print()
    print(f"A123 25 °C: eta = {info['eta']:.4f}, Q = {info['q_ah']:.4f} Ah")
    print(f"A123 R0 (1 s steps) = {info['r0_ohm'] * 1e3:.2f} mΩ → × Q = {info['r0_ohm_ah']:.4f} Ω·Ah")
    for key in ("rest_full", "rest_after_discharge", "rest_after_charge"):
        zz, vv = info[key + "_z"], info[key + "_v"]
        print(f"{key:22s} z = {zz:.4f}: relaxed {vv:.4f} V, table {float(np.interp(zz, z, lfp)):.4f} V")

    if args.check:
        worst = 0.0
        for chem, v in ((Chemistry.LFP, lfp), (Chemistry.NMC, nmc)):
            p = chemistry.profile(chem)
            if p.soc_points != tuple(round(float(x), 3) for x in z):
                print(f"{chem}: SOC grid differs")
                return 1
            worst = max(worst, float(np.max(np.abs(np.array(p.ocv_points) - v))))
        lfp_p = chemistry.profile(Chemistry.LFP)
        if lfp_p.ocv_temps_c != tuple(t for _, t in TEMPS):
            print(f"LFP: table temperatures {lfp_p.ocv_temps_c} differ")
            return 1
        for k, (name, _) in enumerate(TEMPS):
            avg, hyst, _ = by_temp[name]
            worst = max(worst, float(np.max(np.abs(np.array(lfp_p.ocv_by_temp[k]) - avg))))
            worst = max(worst, float(np.max(np.abs(np.array(lfp_p.hyst_by_temp[k]) - hyst))))
        print(f"max |chemistry.py − derived| = {worst * 1e3:.3f} mV")
        return 0 if worst <= 5e-4 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
