"""Cell chemistry profiles: OCV(SOC, T), the estimator's cell model, plausibility range, default thresholds.

Pure Python, no numpy: the simulator and the configuration layer import it as well as the core.

Where the numbers come from (regenerate / check with ``python bench/tools/make_ocv_tables.py [--check]`` and
``python bench/tools/fit_ecm.py lfp|nmc``):

* **LFP OCV**: A123 LiFePO4 cell (≈2.07 Ah), slow C/27 OCV tests at 5, 25 and 45 °C
  (``/work/shared/data/a123``, MIT licence, originally G. Plett's ESCtoolbox): mean of the slow-charge and
  slow-discharge branches on the SOC grid below (cancels the ohmic drop and the hysteresis); 0 % and
  100 % are extrapolated at 25 °C, and the few end points where one branch has no data at 5/45 °C take
  the 25 °C value plus the nearby offset.
  **Hysteresis** M(z, T) = half the gap between the two branches (10–30 mV on the plateau, more at the ends).
* **LFP cell model** (R0, R1, τ1, hysteresis rate γ and drive filter τH): least-squares fit to the A123
  dynamic tests DYN_50_P25 scripts 1–3 (``bench/tools/fit_ecm.py``); R(T)/R(25 °C) from the 5 °C and 45 °C
  dynamic tests. ``model_sigma_v`` is the fit's voltage RMSE (10–95 % SOC) and ``model_corr_s`` the
  correlation time of its residual.
* **NMC OCV**: not measured here. LG INR21700-M50 full-cell OCV computed from the electrode OCP fits and
  stoichiometry window of Chen et al., J. Electrochem. Soc. 167 (2020) 080534 (PyBaMM's "Chen2020" set):
  2.50 V at 0 % to 4.19 V at 100 % (the cell's rated window). No temperature or hysteresis data: one table,
  M = 0 (NMC hysteresis is a few mV).
* **NMC cell model**: fitted to PyBaMM SPMe simulations with the same Chen2020 parameter set (DST-shaped
  2C-peak profile at 5/25/45 °C, ``bench/tools/fit_ecm.py nmc``): R0 ≈ 25 mΩ, R1 ≈ 23 mΩ, τ1 ≈ 86 s for the
  5 Ah cell at 25 °C; a physics model, not a measured cell.
* **Thresholds**: LFP 3.65/2.50 V alarm and 3.55/2.90 V warning bracket the common LFP datasheet window
  (2.5–3.65 V); CVL 3.45 V/cell charges to ≈98 % without living on the steep top knee; DVL 2.90 V/cell sits
  at ≈3 % SOC on the curve below. NMC 4.25/2.80 V alarm, 4.15/3.20 V warning, CVL 4.10 V/cell (≈92 %, a
  longevity-friendly top), DVL 3.20 V/cell (≈8 %).
  Tier 3 (latched fault, contactor open): LFP 3.80/2.00 V (past the datasheet's abuse limits; below 2.0 V
  copper dissolution makes a deep-discharged cell unsafe to recharge, which is why foxBMS latches deep
  discharge), NMC 4.35/2.50 V. Pack voltage as its mean cell: LFP 3.50/3.55/3.65 V high, 2.85/2.70/2.50 V
  low (a whole-pack over/under-charge even when no single cell stands out); NMC 4.15/4.20/4.25 and
  3.15/3.00/2.80 V. Float 3.375 V/cell for LFP (the common float level of LFP chargers, ≈ 95 % rest SOC
  without holding the cells on the top knee), 4.00 V for NMC. Cell spread: LFP 0.15/0.40/1.00 V (the top and
  bottom knees spread an unbalanced LFP pack by 0.1–0.2 V in normal use), NMC 0.10/0.25/0.60 V.

A user-measured OCV curve replaces the built-in one with :func:`profile_from_csv` (CSV ``soc,ocv_v``).
"""

from __future__ import annotations

import csv
import dataclasses
import math
from bisect import bisect_right
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from bmsgw.model import Chemistry

__all__ = [
    "ChemistryProfile",
    "OcvTableError",
    "hysteresis_v",
    "ocv",
    "profile",
    "profile_from_csv",
    "resistance_scale",
    "soc_from_ocv",
]


class OcvTableError(ValueError):
    """A user OCV table is unusable; the message names the file, line and rule."""


@dataclass(frozen=True, slots=True)
class ChemistryProfile:
    """Everything chemistry-specific the core and the simulator need (V per cell).

    ``ocv_points`` is the 25 °C curve (what 2-argument :func:`ocv` returns); ``ocv_by_temp`` holds one curve
    per ``ocv_temps_c`` on the same SOC grid and ``hyst_by_temp`` the hysteresis half-gap M(z) per
    temperature. Empty tuples mean "one temperature": the 25 °C curve, no hysteresis, no R(T) scaling.
    """

    chemistry: Chemistry
    soc_points: tuple[float, ...]  # ascending, 0..1
    ocv_points: tuple[float, ...]  # V at 25 °C, same length, strictly ascending
    nominal_v: float
    v_min_physical: float  # below/above these a reading is a sensor fault, not data
    v_max_physical: float
    r0_ohm_ah: float  # R0 × capacity (Ω·Ah) at 25 °C
    cell_v_max_alarm: float
    cell_v_max_warn: float
    cell_v_min_warn: float
    cell_v_min_alarm: float
    charge_voltage_cell_v: float
    discharge_voltage_cell_v: float
    # protection tier 3 (latched fault) and the charge stages; NaN only in hand-made profiles (see below)
    cell_v_max_fault: float = math.nan  # NaN: cell_v_max_alarm + 0.1 V
    cell_v_min_fault: float = math.nan  # NaN: cell_v_min_alarm − 0.3 V
    float_voltage_cell_v: float = math.nan  # NaN: charge_voltage_cell_v
    # pack voltage as its mean cell (V): warning, alarm, fault on the high and the low side
    pack_v_max: tuple[float, float, float] = (math.nan, math.nan, math.nan)  # NaN: from the cell thresholds
    pack_v_min: tuple[float, float, float] = (math.nan, math.nan, math.nan)
    imbalance_v: tuple[float, float, float] = (0.15, 0.40, 1.00)  # cell spread: warning, alarm, fault
    # estimator cell model (bench/tools/fit_ecm.py)
    r1_ohm_ah: float = 0.0  # RC branch resistance × capacity (Ω·Ah) at 25 °C
    tau1_s: float = 60.0  # RC time constant
    hyst_gamma: float = 0.0  # hysteresis rate per unit of SOC moved by the filtered current
    hyst_tau_s: float = 600.0  # time constant of the current filter that drives the hysteresis
    coulomb_efficiency: float = 1.0  # charge counted in = η × charge through the terminals
    model_sigma_v: float = 0.010  # typical cell-model voltage error (1σ)
    model_corr_s: float = 60.0  # correlation time of that error (the fit residual's 1/e lag)
    ocv_temps_c: tuple[float, ...] = ()
    ocv_by_temp: tuple[tuple[float, ...], ...] = ()
    hyst_by_temp: tuple[tuple[float, ...], ...] = ()
    r_scale_temps_c: tuple[float, ...] = ()  # R0 and R1 relative to 25 °C at these temperatures
    r_scale: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.soc_points)
        if len(self.ocv_points) != n or n < 2:
            raise ValueError("soc_points and ocv_points need the same length (>= 2)")
        for seq, name in ((self.soc_points, "soc_points"), (self.ocv_points, "ocv_points")):
            if any(b <= a for a, b in pairwise(seq)):
                raise ValueError(f"{name} must be strictly ascending")
        if not (
            self.v_min_physical
            < self.cell_v_min_alarm
            < self.cell_v_min_warn
            < self.cell_v_max_warn
            < self.cell_v_max_alarm
            < self.v_max_physical
        ):
            raise ValueError("thresholds must nest: physical < alarm < warn < warn < alarm < physical")
        _fill(self, "cell_v_max_fault", self.cell_v_max_alarm + 0.1)
        _fill(self, "cell_v_min_fault", self.cell_v_min_alarm - 0.3)
        _fill(self, "float_voltage_cell_v", self.charge_voltage_cell_v)
        if any(math.isnan(x) for x in self.pack_v_max):
            hi = (self.cell_v_max_warn - 0.05, self.cell_v_max_warn, self.cell_v_max_alarm)
            object.__setattr__(self, "pack_v_max", hi)
        if any(math.isnan(x) for x in self.pack_v_min):
            lo = (
                self.cell_v_min_warn - 0.05,
                (self.cell_v_min_warn + self.cell_v_min_alarm) / 2,
                self.cell_v_min_alarm,
            )
            object.__setattr__(self, "pack_v_min", lo)
        ladder = (
            self.v_min_physical,
            self.cell_v_min_fault,
            self.cell_v_min_alarm,
            self.cell_v_max_alarm,
            self.cell_v_max_fault,
            self.v_max_physical,
        )
        if any(b <= a for a, b in pairwise(ladder)):
            raise ValueError(
                "fault thresholds must nest: physical < min fault < min alarm, max alarm < max fault"
                " < physical"
            )
        if any(b <= a for a, b in pairwise((*self.pack_v_min[::-1], *self.pack_v_max))):
            raise ValueError(
                "pack_v_min (warn > alarm > fault) must sit below pack_v_max (warn < alarm < fault)"
            )
        if any(b <= a for a, b in pairwise(self.imbalance_v)) or not self.imbalance_v[0] > 0.0:
            raise ValueError("imbalance_v must be 0 < warning < alarm < fault")
        if not self.ocv_temps_c:
            object.__setattr__(self, "ocv_temps_c", (25.0,))
            object.__setattr__(self, "ocv_by_temp", (self.ocv_points,))
        if not self.hyst_by_temp:
            object.__setattr__(self, "hyst_by_temp", tuple((0.0,) * n for _ in self.ocv_temps_c))
        if not self.r_scale_temps_c:
            object.__setattr__(self, "r_scale_temps_c", (25.0,))
            object.__setattr__(self, "r_scale", (1.0,))
        temps = self.ocv_temps_c
        if any(b <= a for a, b in pairwise(temps)):
            raise ValueError("ocv_temps_c must be strictly ascending")
        if len(self.ocv_by_temp) != len(temps) or len(self.hyst_by_temp) != len(temps):
            raise ValueError("ocv_by_temp and hyst_by_temp need one row per ocv_temps_c")
        for row in self.ocv_by_temp:
            if len(row) != n or any(b <= a for a, b in pairwise(row)):
                raise ValueError("every ocv_by_temp row must be strictly ascending on soc_points")
        for row in self.hyst_by_temp:
            if len(row) != n or any(not 0.0 <= m < 1.0 for m in row):
                raise ValueError("every hyst_by_temp row needs len(soc_points) values in 0..1 V")
        if 25.0 in temps and self.ocv_by_temp[temps.index(25.0)] != self.ocv_points:
            raise ValueError("ocv_points must be the 25 °C row of ocv_by_temp")
        if len(self.r_scale) != len(self.r_scale_temps_c) or any(not s > 0.0 for s in self.r_scale):
            raise ValueError("r_scale needs one positive value per r_scale_temps_c")
        if any(b <= a for a, b in pairwise(self.r_scale_temps_c)):
            raise ValueError("r_scale_temps_c must be strictly ascending")
        for name in ("r0_ohm_ah", "r1_ohm_ah", "hyst_gamma"):
            if not getattr(self, name) >= 0.0:
                raise ValueError(f"{name} must be >= 0")
        for name in ("tau1_s", "hyst_tau_s", "model_sigma_v", "model_corr_s"):
            if not getattr(self, name) > 0.0:
                raise ValueError(f"{name} must be > 0")
        if not 0.5 < self.coulomb_efficiency <= 1.0:
            raise ValueError("coulomb_efficiency must be within (0.5, 1]")


def _fill(p: ChemistryProfile, name: str, value: float) -> None:
    if math.isnan(getattr(p, name)):
        object.__setattr__(p, name, value)


# SOC grid shared by both tables: dense at the steep ends, 5 % steps on the plateau.
_SOC_POINTS: tuple[float, ...] = (
    0.000, 0.010, 0.020, 0.030, 0.050, 0.075, 0.100, 0.150, 0.200, 0.250, 0.300, 0.350, 0.400, 0.450,
    0.500, 0.550, 0.600, 0.650, 0.700, 0.750, 0.800, 0.850, 0.900, 0.925, 0.950, 0.970, 0.980, 0.990,
    1.000,
)  # fmt: skip

# A123 LFP, mean of the C/27 charge and discharge branches (bench/tools/make_ocv_tables.py).
_LFP_OCV_5C: tuple[float, ...] = (
    2.3771, 2.5682, 2.7593, 2.8865, 3.0167, 3.1133, 3.1790, 3.2183, 3.2462, 3.2659, 3.2817, 3.2915,
    3.2981, 3.3015, 3.3046, 3.3090, 3.3151, 3.3214, 3.3289, 3.3384, 3.3442, 3.3484, 3.3553, 3.3640,
    3.3871, 3.4459, 3.4852, 3.5591, 3.6331,
)  # fmt: skip
_LFP_OCV: tuple[float, ...] = (
    2.4367, 2.6278, 2.8189, 2.9117, 3.0250, 3.1153, 3.1783, 3.2183, 3.2445, 3.2640, 3.2796, 3.2912,
    3.3012, 3.3056, 3.3081, 3.3117, 3.3171, 3.3231, 3.3305, 3.3411, 3.3454, 3.3480, 3.3521, 3.3570,
    3.3692, 3.4009, 3.4403, 3.5142, 3.5881,
)  # fmt: skip
_LFP_OCV_45C: tuple[float, ...] = (
    2.5051, 2.6962, 2.8407, 2.9252, 3.0334, 3.1200, 3.1804, 3.2184, 3.2437, 3.2631, 3.2784, 3.2918,
    3.3041, 3.3092, 3.3114, 3.3144, 3.3192, 3.3248, 3.3318, 3.3418, 3.3456, 3.3478, 3.3514, 3.3558,
    3.3666, 3.3961, 3.4343, 3.5078, 3.5817,
)  # fmt: skip

# A123 LFP hysteresis: half the gap between the C/27 charge and discharge branches (V).
_LFP_HYST_5C: tuple[float, ...] = (
    0.1414, 0.1414, 0.1414, 0.0901, 0.0609, 0.0470, 0.0391, 0.0297, 0.0321, 0.0348, 0.0363, 0.0318,
    0.0264, 0.0248, 0.0248, 0.0259, 0.0273, 0.0278, 0.0279, 0.0267, 0.0241, 0.0233, 0.0252, 0.0295,
    0.0432, 0.0793, 0.0793, 0.0793, 0.0793,
)  # fmt: skip
_LFP_HYST_25C: tuple[float, ...] = (
    0.1300, 0.1300, 0.0637, 0.0491, 0.0380, 0.0316, 0.0273, 0.0215, 0.0246, 0.0278, 0.0299, 0.0280,
    0.0193, 0.0167, 0.0169, 0.0181, 0.0198, 0.0206, 0.0203, 0.0167, 0.0137, 0.0128, 0.0122, 0.0129,
    0.0161, 0.0255, 0.0367, 0.0571, 0.0571,
)  # fmt: skip
_LFP_HYST_45C: tuple[float, ...] = (
    0.0569, 0.0569, 0.0354, 0.0281, 0.0224, 0.0195, 0.0181, 0.0176, 0.0202, 0.0237, 0.0262, 0.0249,
    0.0165, 0.0131, 0.0134, 0.0143, 0.0160, 0.0171, 0.0170, 0.0127, 0.0097, 0.0088, 0.0079, 0.0078,
    0.0092, 0.0152, 0.0235, 0.0407, 0.0407,
)  # fmt: skip

# LG M50 (NMC811 / graphite-SiOx), Chen et al. 2020 electrode OCP fits (bench/tools/make_ocv_tables.py).
_NMC_OCV: tuple[float, ...] = (
    2.4977, 2.6953, 2.8374, 2.9403, 3.0728, 3.1723, 3.2577, 3.3961, 3.4493, 3.4942, 3.5483, 3.5971,
    3.6343, 3.6682, 3.7078, 3.7573, 3.8089, 3.8621, 3.9236, 3.9713, 4.0215, 4.0700, 4.0941, 4.1005,
    4.1158, 4.1397, 4.1555, 4.1734, 4.1929,
)  # fmt: skip

_PROFILES: dict[Chemistry, ChemistryProfile] = {
    Chemistry.LFP: ChemistryProfile(
        chemistry=Chemistry.LFP,
        soc_points=_SOC_POINTS,
        ocv_points=_LFP_OCV,
        nominal_v=3.2,
        v_min_physical=1.0,
        v_max_physical=4.5,
        r0_ohm_ah=0.0220,
        cell_v_max_alarm=3.65,
        cell_v_max_warn=3.55,
        cell_v_min_warn=2.90,
        cell_v_min_alarm=2.50,
        charge_voltage_cell_v=3.45,
        discharge_voltage_cell_v=2.90,
        cell_v_max_fault=3.80,
        cell_v_min_fault=2.00,
        float_voltage_cell_v=3.375,
        pack_v_max=(3.50, 3.55, 3.65),
        pack_v_min=(2.85, 2.70, 2.50),
        imbalance_v=(0.15, 0.40, 1.00),
        r1_ohm_ah=0.0388,
        tau1_s=38.7,
        hyst_gamma=194.0,
        hyst_tau_s=493.0,
        coulomb_efficiency=0.9962,
        model_sigma_v=0.007,
        model_corr_s=290.0,
        ocv_temps_c=(5.0, 25.0, 45.0),
        ocv_by_temp=(_LFP_OCV_5C, _LFP_OCV, _LFP_OCV_45C),
        hyst_by_temp=(_LFP_HYST_5C, _LFP_HYST_25C, _LFP_HYST_45C),
        r_scale_temps_c=(5.0, 25.0, 45.0),
        r_scale=(1.77, 1.0, 0.785),
    ),
    Chemistry.NMC: ChemistryProfile(
        chemistry=Chemistry.NMC,
        soc_points=_SOC_POINTS,
        ocv_points=_NMC_OCV,
        nominal_v=3.65,
        v_min_physical=1.5,
        v_max_physical=4.8,
        r0_ohm_ah=0.125,
        cell_v_max_alarm=4.25,
        cell_v_max_warn=4.15,
        cell_v_min_warn=3.20,
        cell_v_min_alarm=2.80,
        charge_voltage_cell_v=4.10,
        discharge_voltage_cell_v=3.20,
        cell_v_max_fault=4.35,
        cell_v_min_fault=2.50,
        float_voltage_cell_v=4.00,
        pack_v_max=(4.15, 4.20, 4.25),
        pack_v_min=(3.15, 3.00, 2.80),
        imbalance_v=(0.10, 0.25, 0.60),
        r1_ohm_ah=0.117,
        tau1_s=86.0,
        coulomb_efficiency=0.999,
        model_sigma_v=0.010,
        model_corr_s=10.0,
        r_scale_temps_c=(5.0, 25.0, 45.0),
        r_scale=(1.41, 1.0, 0.71),
    ),
}


def profile(chemistry: Chemistry) -> ChemistryProfile:
    """The built-in profile for `chemistry`."""
    return _PROFILES[Chemistry(chemistry)]


def _interp(x: float, xs: tuple[float, ...], ys: tuple[float, ...]) -> float:
    """Piecewise-linear y(x) over ascending xs, clamped to the end values."""
    if x <= xs[0]:
        return ys[0]
    if x >= xs[-1]:
        return ys[-1]
    if math.isnan(x):  # NaN stays NaN instead of landing on an arbitrary segment
        return x
    k = bisect_right(xs, x)
    x0, x1, y0, y1 = xs[k - 1], xs[k], ys[k - 1], ys[k]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def _at_temp(
    rows: tuple[tuple[float, ...], ...], temps: tuple[float, ...], temp_c: float
) -> tuple[float, ...]:
    """The table row for `temp_c`: linear between the bracketing temperatures, clamped at the ends."""
    if len(temps) == 1 or temp_c <= temps[0]:
        return rows[0]
    if temp_c >= temps[-1]:
        return rows[-1]
    k = bisect_right(temps, temp_c)
    w = (temp_c - temps[k - 1]) / (temps[k] - temps[k - 1])
    return tuple(a + w * (b - a) for a, b in zip(rows[k - 1], rows[k], strict=True))


def ocv(p: ChemistryProfile, soc: float, temp_c: float = 25.0) -> float:
    """Open-circuit voltage (V per cell) at `soc` (0..1, clamped) and `temp_c` (clamped to the tables)."""
    if temp_c == 25.0:
        return _interp(soc, p.soc_points, p.ocv_points)
    return _interp(soc, p.soc_points, _at_temp(p.ocv_by_temp, p.ocv_temps_c, temp_c))


def soc_from_ocv(p: ChemistryProfile, v: float, temp_c: float = 25.0) -> float:
    """SOC (0..1) whose OCV at `temp_c` is `v`; clamped to 0 below the table and to 1 above it."""
    row = p.ocv_points if temp_c == 25.0 else _at_temp(p.ocv_by_temp, p.ocv_temps_c, temp_c)
    return _interp(v, row, p.soc_points)


def hysteresis_v(p: ChemistryProfile, soc: float, temp_c: float = 25.0) -> float:
    """Hysteresis half-gap M (V): the charge branch sits M above the OCV, the discharge branch M below."""
    return _interp(soc, p.soc_points, _at_temp(p.hyst_by_temp, p.ocv_temps_c, temp_c))


def resistance_scale(p: ChemistryProfile, temp_c: float) -> float:
    """R0 and R1 at `temp_c` relative to 25 °C: log-linear in 1/T between the table points, Arrhenius-like
    beyond them (the end segment's slope), so cold cells keep getting stiffer."""
    temps, scale = p.r_scale_temps_c, p.r_scale
    if len(temps) == 1:
        return scale[0]
    inv = 1.0 / (temp_c + 273.15)
    k = min(max(bisect_right(temps, temp_c), 1), len(temps) - 1)
    i0, i1 = 1.0 / (temps[k - 1] + 273.15), 1.0 / (temps[k] + 273.15)
    l0, l1 = math.log(scale[k - 1]), math.log(scale[k])
    x = l0 + (l1 - l0) * (inv - i0) / (i1 - i0)
    return math.exp(min(max(x, -5.0), 5.0))


def profile_from_csv(path: str | Path, base: ChemistryProfile) -> ChemistryProfile:
    """`base` with its OCV curve replaced by the CSV table at `path` (header ``soc,ocv_v``, SOC a fraction).

    The table must start at soc 0 and end at soc 1, both columns strictly increasing, every voltage inside
    the base chemistry's plausible range. It is used at every temperature; the base chemistry's hysteresis
    (resampled to the new SOC points), cell model and thresholds are kept. Raises :class:`OcvTableError`.
    """
    name = str(path)
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except OSError as exc:
        raise OcvTableError(f"{name}: cannot read: {exc.strerror or exc}") from None
    rows = [r for r in rows if r and any(c.strip() for c in r)]
    if not rows:
        raise OcvTableError(f"{name}: empty file (need a header soc,ocv_v and one row per point)")
    header = [c.strip().lower() for c in rows[0]]
    missing = [c for c in ("soc", "ocv_v") if c not in header]
    if missing:
        raise OcvTableError(f"{name}: missing column {', '.join(missing)} (header must include soc,ocv_v)")
    i_soc, i_v = header.index("soc"), header.index("ocv_v")
    socs: list[float] = []
    volts: list[float] = []
    for line, row in enumerate(rows[1:], start=2):
        try:
            z, v = float(row[i_soc]), float(row[i_v])
        except (IndexError, ValueError):
            raise OcvTableError(f"{name}: line {line}: need two numbers soc,ocv_v, got {row!r}") from None
        if not (math.isfinite(z) and math.isfinite(v)):
            raise OcvTableError(f"{name}: line {line}: values must be finite, got {row!r}")
        if not 0.0 <= z <= 1.0:
            raise OcvTableError(f"{name}: line {line}: soc = {z:g} is outside 0..1 (a fraction, not percent)")
        if not base.v_min_physical < v < base.v_max_physical:
            raise OcvTableError(
                f"{name}: line {line}: ocv_v = {v:g} V is outside the plausible {base.chemistry} range "
                f"{base.v_min_physical:g}..{base.v_max_physical:g} V"
            )
        if socs and z <= socs[-1]:
            raise OcvTableError(f"{name}: line {line}: soc {z:g} is not above {socs[-1]:g} (must increase)")
        if volts and v <= volts[-1]:
            raise OcvTableError(
                f"{name}: line {line}: ocv_v {v:g} is not above {volts[-1]:g} (OCV must rise with SOC)"
            )
        socs.append(z)
        volts.append(v)
    if len(socs) < 2 or socs[0] != 0.0 or socs[-1] != 1.0:
        span = f"{socs[0]:g}..{socs[-1]:g}" if socs else "no rows"
        raise OcvTableError(f"{name}: the table must start at soc 0 and end at soc 1 (got {span})")
    soc_t, ocv_t = tuple(socs), tuple(volts)
    hyst = tuple(hysteresis_v(base, z) for z in soc_t)
    return dataclasses.replace(
        base,
        soc_points=soc_t,
        ocv_points=ocv_t,
        ocv_temps_c=(25.0,),
        ocv_by_temp=(ocv_t,),
        hyst_by_temp=(hyst,),
    )
