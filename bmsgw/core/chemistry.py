"""Cell chemistry profiles: OCV(SOC) curve, physical plausibility range and default thresholds.

Pure Python, no numpy: the simulator and the configuration layer import it as well as the core.

Where the numbers come from (regenerate / check with ``python bench/tools/make_ocv_tables.py [--check]``):

* **LFP OCV**: A123 LiFePO4 cell (≈2.07 Ah), slow C/27 OCV tests at 25 °C (``/work/shared/data/a123``,
  MIT licence, originally G. Plett's ESCtoolbox): average of the slow-charge and slow-discharge branches on
  the SOC grid below (cancels the ohmic drop and, to first order, the hysteresis); 0 % and 100 % are
  extrapolated from their two neighbours because neither branch reaches both ends. ``r0_ohm_ah`` = median
  1 s ΔV/ΔI of the A123 dynamic test at 25 °C (9.75 mΩ) × 2.0726 Ah.
* **NMC OCV**: not measured here. LG INR21700-M50 full-cell OCV computed from the electrode OCP fits and
  stoichiometry window of Chen et al., J. Electrochem. Soc. 167 (2020) 080534 (PyBaMM's "Chen2020" set):
  2.50 V at 0 % to 4.19 V at 100 % (the cell's rated window). ``r0_ohm_ah`` for NMC is an assumed typical
  value (≈10 mΩ for a 5 Ah cylindrical cell), not a measurement.
* **Thresholds**: LFP 3.65/2.50 V alarm and 3.55/2.90 V warning bracket the common LFP datasheet window
  (2.5–3.65 V); CVL 3.45 V/cell charges to ≈98 % without living on the steep top knee; DVL 2.90 V/cell sits
  at ≈3 % SOC on the curve below. NMC 4.25/2.80 V alarm, 4.15/3.20 V warning, CVL 4.10 V/cell (≈92 %, a
  longevity-friendly top), DVL 3.20 V/cell (≈8 %).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from itertools import pairwise

from bmsgw.model import Chemistry

__all__ = ["ChemistryProfile", "ocv", "profile", "soc_from_ocv"]


@dataclass(frozen=True, slots=True)
class ChemistryProfile:
    """Everything chemistry-specific the core and the simulator need (V per cell, 25 °C)."""

    chemistry: Chemistry
    soc_points: tuple[float, ...]  # ascending, 0..1
    ocv_points: tuple[float, ...]  # V at 25 °C, same length, strictly ascending
    nominal_v: float
    v_min_physical: float  # below/above these a reading is a sensor fault, not data
    v_max_physical: float
    r0_ohm_ah: float  # typical R0 × capacity (Ω·Ah) at 25 °C
    cell_v_max_alarm: float
    cell_v_max_warn: float
    cell_v_min_warn: float
    cell_v_min_alarm: float
    charge_voltage_cell_v: float
    discharge_voltage_cell_v: float

    def __post_init__(self) -> None:
        if len(self.soc_points) != len(self.ocv_points) or len(self.soc_points) < 2:
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


# SOC grid shared by both tables: dense at the steep ends, 5 % steps on the plateau.
_SOC_POINTS: tuple[float, ...] = (
    0.000, 0.010, 0.020, 0.030, 0.050, 0.075, 0.100, 0.150, 0.200, 0.250, 0.300, 0.350, 0.400, 0.450,
    0.500, 0.550, 0.600, 0.650, 0.700, 0.750, 0.800, 0.850, 0.900, 0.925, 0.950, 0.970, 0.980, 0.990,
    1.000,
)  # fmt: skip

# A123 LFP, 25 °C, mean of the C/27 charge and discharge branches (bench/tools/make_ocv_tables.py).
_LFP_OCV: tuple[float, ...] = (
    2.4367, 2.6278, 2.8189, 2.9117, 3.0250, 3.1153, 3.1783, 3.2183, 3.2445, 3.2640, 3.2796, 3.2912,
    3.3012, 3.3056, 3.3081, 3.3117, 3.3171, 3.3231, 3.3305, 3.3411, 3.3454, 3.3480, 3.3521, 3.3570,
    3.3692, 3.4009, 3.4403, 3.5142, 3.5881,
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
        r0_ohm_ah=0.020,
        cell_v_max_alarm=3.65,
        cell_v_max_warn=3.55,
        cell_v_min_warn=2.90,
        cell_v_min_alarm=2.50,
        charge_voltage_cell_v=3.45,
        discharge_voltage_cell_v=2.90,
    ),
    Chemistry.NMC: ChemistryProfile(
        chemistry=Chemistry.NMC,
        soc_points=_SOC_POINTS,
        ocv_points=_NMC_OCV,
        nominal_v=3.65,
        v_min_physical=1.5,
        v_max_physical=4.8,
        r0_ohm_ah=0.050,
        cell_v_max_alarm=4.25,
        cell_v_max_warn=4.15,
        cell_v_min_warn=3.20,
        cell_v_min_alarm=2.80,
        charge_voltage_cell_v=4.10,
        discharge_voltage_cell_v=3.20,
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


def ocv(p: ChemistryProfile, soc: float) -> float:
    """Open-circuit voltage (V per cell, 25 °C) at `soc` (0..1; outside is clamped)."""
    return _interp(soc, p.soc_points, p.ocv_points)


def soc_from_ocv(p: ChemistryProfile, v: float) -> float:
    """SOC (0..1) whose OCV is `v`; clamped to 0 below the table and to 1 above it."""
    return _interp(v, p.ocv_points, p.soc_points)
