# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# cython: annotation_typing=False
# ruff: noqa: PLR1730 -- explicit comparisons instead of min()/max(): same NaN/rounding rules compiled and
# pure, and no builtin call per element in pure-Python mode.
"""Numeric kernel of the estimation & protection core (Cython pure-Python mode).

This file is plain Python. ``setup.py`` compiles it with the C types declared in the sibling
``_kernel.pxd``; without a compiler the same code runs as it is. Keep it that way:

* no ``import cython`` here: every C type lives in the ``.pxd``;
* no Python objects in the hot loops: state is flat buffers (``memoryview`` in pure mode, typed memoryviews
  when compiled), one row per cell or per pack, packs laid out back to back (``cell_off``/``sens_off``);
* module constants used in loops are declared ``cdef`` in the ``.pxd``, so they are not importable from
  Python: the Python-visible tables (``REASONS``, ``ALARM_CODES``, ``LATCHES``) carry what the wrapper needs;
* no ``min``/``max``/``abs`` on floats (NaN and rounding rules differ between Python and C), no division
  by anything that can be zero (``cdivision`` is on), no clock, no I/O.

Sign convention: current > 0 charges. Time: `t` passed to :meth:`Kernel.step` drives debounce and ramps;
each pack's sample time ``s_t`` drives the SOC estimator and the rest/full/empty timers.

SOC estimator ("bar-delta" EKF, after Plett): per pack, a 5-state EKF on the pack's *mean cell* —
x = [z (SOC), v1 (RC voltage), h (hysteresis, −1..1), b (current-sensor bias, A), ρ (R0 scale)] — measured
by the mean cell voltage; per cell, a scalar filter on the cell's SOC offset δ from that mean cell
(cell SOC = z + δ), measured by the cell's own voltage. Everything the cells share (current, bias,
polarisation, hysteresis drive, capacity) lives once per pack, so the per-cell work is one table lookup and
a scalar update. Anchors (OCV reset after rest, full at the end of CV charging, empty at cut-off) enter as
measurements of z, so they also correct the bias through the z–b covariance.

The hysteresis magnitude is a Schmidt-Kalman "consider" parameter: the cells' half-gap is M·(1 + m),
m ~ N(0, σ_m²) (CoreParams.hysteresis_sigma), never estimated; the filter carries C = cov(x, m) (C' = F·C in
the prediction) and, with H_m = M·h, updates with S = H·P·Hᵀ + 2·H_m·H·C + H_m²·σ_m² + R,
K = (P·Hᵀ + C·H_m) / S, P −= K·S·Kᵀ, C −= K·(H·C + H_m·σ_m²). The offset a magnitude error causes lasts
hours; taken as white noise it would be averaged into the plateau SOC and, at the next anchor, into the
bias. The cell filters take the cells' residuals less their mean, so that common offset stays the mean
cell's, and h gains variance as the current drives it (a branch change's timing is uncertain).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bmsgw.core.core import CoreParams

# Reason codes: index into REASONS (values of bmsgw.model.Reason).
REASONS: tuple[str, ...] = (
    "config",
    "cell_voltage_high",
    "cell_voltage_low",
    "cell_overvoltage",
    "cell_undervoltage",
    "temperature_high",
    "temperature_low",
    "overtemperature",
    "undertemperature",
    "cold_charge",
    "overcurrent",
    "fault",
    "comm_lost",
    "recovery",
    "pack_voltage",
    "soc_full",
    "soc_empty",
    "cell_imbalance",
    "sensor_fault",
    "thermal_runaway",
)
R_CONFIG = 0
R_CELL_VOLTAGE_HIGH = 1
R_CELL_VOLTAGE_LOW = 2
R_CELL_OVERVOLTAGE = 3
R_CELL_UNDERVOLTAGE = 4
R_TEMPERATURE_HIGH = 5
R_TEMPERATURE_LOW = 6
R_OVERTEMPERATURE = 7
R_UNDERTEMPERATURE = 8
R_COLD_CHARGE = 9
R_OVERCURRENT = 10
R_FAULT = 11
R_COMM_LOST = 12
R_RECOVERY = 13
R_PACK_VOLTAGE = 14
R_SOC_FULL = 15
R_SOC_EMPTY = 16
R_CELL_IMBALANCE = 17
R_SENSOR_FAULT = 18
R_THERMAL_RUNAWAY = 19

# Alarm codes: index into ALARM_CODES (values of bmsgw.model.AlarmCode).
ALARM_CODES: tuple[str, ...] = (
    "cell_overvoltage",
    "cell_undervoltage",
    "overtemperature",
    "undertemperature",
    "charge_undertemperature",
    "charge_overcurrent",
    "discharge_overcurrent",
    "bms_fault",
    "pack_overvoltage",
    "pack_undervoltage",
    "cell_imbalance",
    "sensor_fault",
    "thermal_runaway",
)
A_OV = 0
A_UV = 1
A_OT = 2
A_UT = 3
A_CUT = 4
A_OCC = 5
A_ODC = 6
A_BMS = 7
A_POV = 8
A_PUV = 9
A_IMB = 10
A_SEN = 11
A_TR = 12

# Levels (bmsgw.model.AlarmLevel).
WARNING = 1
ALARM = 2
FAULT = 3

# Status bits of bmsgw.model.BmsFlags the core reacts to (tests assert they match the model).
F_BMS_FAULT = 1 << 4
F_ALARM_CELL_OV = 1 << 8
F_ALARM_CELL_UV = 1 << 9
F_ALARM_OVERTEMP = 1 << 10
F_ALARM_UNDERTEMP = 1 << 11
F_ALARM_CHARGE_OC = 1 << 12
F_ALARM_DISCHARGE_OC = 1 << 13
F_ALARM_SHORT_CIRCUIT = 1 << 14
F_ALARM_INTERNAL = 1 << 15

# Latches: one debounced Schmitt trigger per pack and row. Columns: (alarm code, level, zeroes charge,
# zeroes discharge, limit reason, detail, BmsFlags bit or 0, latched). Three tiers per quantity: WARNING
# (the trapezoids derate), ALARM (that direction's limit to 0), FAULT (both to 0 and the pack's contactor-open
# request). Latched rows stay on until reset_latched, whatever the value does. The order is the priority for
# the reason of a zeroed limit (the highest level wins, then the first row). Rows L_OTC_WARN … L_TR_CONFIRMED
# need temperature sensors.
LATCHES: tuple[tuple[int, int, int, int, int, str, int, int], ...] = (
    (A_OV, WARNING, 0, 0, R_CELL_VOLTAGE_HIGH, "", 0, 0),
    (A_OV, ALARM, 1, 0, R_CELL_OVERVOLTAGE, "", 0, 0),
    (A_OV, FAULT, 1, 1, R_CELL_OVERVOLTAGE, "latched", 0, 1),
    (A_UV, WARNING, 0, 0, R_CELL_VOLTAGE_LOW, "", 0, 0),
    (A_UV, ALARM, 0, 1, R_CELL_UNDERVOLTAGE, "", 0, 0),
    (A_UV, FAULT, 1, 1, R_CELL_UNDERVOLTAGE, "deep discharge, latched", 0, 1),
    (A_POV, WARNING, 0, 0, R_PACK_VOLTAGE, "", 0, 0),
    (A_POV, ALARM, 1, 0, R_PACK_VOLTAGE, "", 0, 0),
    (A_POV, FAULT, 1, 1, R_PACK_VOLTAGE, "latched", 0, 1),
    (A_PUV, WARNING, 0, 0, R_PACK_VOLTAGE, "", 0, 0),
    (A_PUV, ALARM, 0, 1, R_PACK_VOLTAGE, "", 0, 0),
    (A_PUV, FAULT, 1, 1, R_PACK_VOLTAGE, "latched", 0, 1),
    (A_OT, WARNING, 0, 0, R_TEMPERATURE_HIGH, "charge", 0, 0),
    (A_OT, ALARM, 1, 0, R_OVERTEMPERATURE, "charge", 0, 0),
    (A_OT, FAULT, 1, 1, R_OVERTEMPERATURE, "charge, latched", 0, 1),
    (A_OT, WARNING, 0, 0, R_TEMPERATURE_HIGH, "discharge", 0, 0),
    (A_OT, ALARM, 1, 1, R_OVERTEMPERATURE, "discharge", 0, 0),
    (A_OT, FAULT, 1, 1, R_OVERTEMPERATURE, "discharge, latched", 0, 1),
    (A_UT, WARNING, 0, 0, R_TEMPERATURE_LOW, "discharge", 0, 0),
    (A_UT, ALARM, 0, 1, R_UNDERTEMPERATURE, "discharge", 0, 0),
    (A_UT, FAULT, 1, 1, R_UNDERTEMPERATURE, "discharge, latched", 0, 1),
    (A_CUT, WARNING, 0, 0, R_TEMPERATURE_LOW, "charge", 0, 0),
    (A_CUT, ALARM, 1, 0, R_COLD_CHARGE, "charge", 0, 0),
    (A_CUT, FAULT, 1, 1, R_COLD_CHARGE, "charging while frozen, latched", 0, 1),
    (A_TR, WARNING, 0, 0, R_THERMAL_RUNAWAY, "temperature rising or hot spot", 0, 0),
    (A_TR, ALARM, 1, 0, R_THERMAL_RUNAWAY, "temperature rising fast: derated", 0, 0),
    (A_TR, FAULT, 1, 1, R_THERMAL_RUNAWAY, "temperature rise sustained: pack isolation, latched", 0, 1),
    (A_TR, FAULT, 1, 1, R_THERMAL_RUNAWAY, "confirmed (GB 38031): system shutdown, latched", 0, 1),
    (A_OCC, WARNING, 0, 0, R_OVERCURRENT, "", 0, 0),
    (A_OCC, ALARM, 1, 0, R_OVERCURRENT, "", 0, 0),
    (A_OCC, FAULT, 1, 1, R_OVERCURRENT, "latched", 0, 1),
    (A_ODC, WARNING, 0, 0, R_OVERCURRENT, "", 0, 0),
    (A_ODC, ALARM, 0, 1, R_OVERCURRENT, "", 0, 0),
    (A_ODC, FAULT, 1, 1, R_OVERCURRENT, "latched", 0, 1),
    (A_IMB, WARNING, 0, 0, R_CELL_IMBALANCE, "", 0, 0),
    (A_IMB, ALARM, 1, 0, R_CELL_IMBALANCE, "", 0, 0),
    (A_IMB, FAULT, 1, 1, R_CELL_IMBALANCE, "latched", 0, 1),
    (A_SEN, WARNING, 0, 0, R_SENSOR_FAULT, "reading not a number", 0, 0),
    (A_SEN, ALARM, 1, 1, R_SENSOR_FAULT, "reading not a number", 0, 0),
    (A_SEN, FAULT, 1, 1, R_SENSOR_FAULT, "reading not a number, latched", 0, 1),
    (A_OV, ALARM, 1, 0, R_CELL_OVERVOLTAGE, "reported by BMS", F_ALARM_CELL_OV, 0),
    (A_UV, ALARM, 0, 1, R_CELL_UNDERVOLTAGE, "reported by BMS", F_ALARM_CELL_UV, 0),
    (A_OT, ALARM, 1, 1, R_OVERTEMPERATURE, "reported by BMS", F_ALARM_OVERTEMP, 0),
    (A_UT, ALARM, 1, 1, R_UNDERTEMPERATURE, "reported by BMS", F_ALARM_UNDERTEMP, 0),
    (A_OCC, ALARM, 1, 0, R_OVERCURRENT, "reported by BMS", F_ALARM_CHARGE_OC, 0),
    (A_ODC, ALARM, 0, 1, R_OVERCURRENT, "reported by BMS", F_ALARM_DISCHARGE_OC, 0),
    (A_ODC, ALARM, 1, 1, R_OVERCURRENT, "short circuit, reported by BMS", F_ALARM_SHORT_CIRCUIT, 0),
    (A_BMS, ALARM, 1, 1, R_FAULT, "internal alarm, reported by BMS", F_ALARM_INTERNAL, 0),
    (A_BMS, FAULT, 1, 1, R_FAULT, "reported by BMS", F_BMS_FAULT, 0),  # the BMS latches its own faults
)
# Stable names of the rows (persisted latched faults, tests).
LATCH_KEYS: tuple[str, ...] = (
    "cell_ov_warn",
    "cell_ov_alarm",
    "cell_ov_fault",
    "cell_uv_warn",
    "cell_uv_alarm",
    "cell_uv_fault",
    "pack_ov_warn",
    "pack_ov_alarm",
    "pack_ov_fault",
    "pack_uv_warn",
    "pack_uv_alarm",
    "pack_uv_fault",
    "temp_charge_high_warn",
    "temp_charge_high_alarm",
    "temp_charge_high_fault",
    "temp_discharge_high_warn",
    "temp_discharge_high_alarm",
    "temp_discharge_high_fault",
    "temp_discharge_low_warn",
    "temp_discharge_low_alarm",
    "temp_discharge_low_fault",
    "temp_charge_low_warn",
    "temp_charge_low_alarm",
    "temp_charge_low_fault",
    "thermal_warn",
    "thermal_derate",
    "thermal_isolate",
    "thermal_confirmed",
    "charge_oc_warn",
    "charge_oc_alarm",
    "charge_oc_fault",
    "discharge_oc_warn",
    "discharge_oc_alarm",
    "discharge_oc_fault",
    "imbalance_warn",
    "imbalance_alarm",
    "imbalance_fault",
    "sensor_warn",
    "sensor_alarm",
    "sensor_fault",
    "bms_cell_ov",
    "bms_cell_uv",
    "bms_overtemp",
    "bms_undertemp",
    "bms_charge_oc",
    "bms_discharge_oc",
    "bms_short_circuit",
    "bms_internal",
    "bms_fault",
)
L_OV_WARN = 0
L_OV_ALARM = 1
L_OV_FAULT = 2
L_UV_WARN = 3
L_UV_ALARM = 4
L_UV_FAULT = 5
L_POV_WARN = 6
L_POV_ALARM = 7
L_POV_FAULT = 8
L_PUV_WARN = 9
L_PUV_ALARM = 10
L_PUV_FAULT = 11
L_OTC_WARN = 12
L_OTC_ALARM = 13
L_OTC_FAULT = 14
L_OTD_WARN = 15
L_OTD_ALARM = 16
L_OTD_FAULT = 17
L_UTD_WARN = 18
L_UTD_ALARM = 19
L_UTD_FAULT = 20
L_CUT_WARN = 21
L_CUT_ALARM = 22
L_CUT_FAULT = 23
L_TR_WARN = 24
L_TR_ALARM = 25
L_TR_ISOLATE = 26
L_TR_CONFIRMED = 27
L_OCC_WARN = 28
L_OCC_ALARM = 29
L_OCC_FAULT = 30
L_ODC_WARN = 31
L_ODC_ALARM = 32
L_ODC_FAULT = 33
L_IMB_WARN = 34
L_IMB_ALARM = 35
L_IMB_FAULT = 36
L_SEN_WARN = 37
L_SEN_ALARM = 38
L_SEN_FAULT = 39
L_FLAGS0 = 40  # first latch driven by a BmsFlags bit
N_LATCH = 49

# Charge-voltage stages (values of bmsgw.model.ChargeStage).
CHARGE_STAGES: tuple[str, ...] = ("bulk", "absorption", "float")
S_BULK = 0
S_ABSORPTION = 1
S_FLOAT = 2

# Anchor kinds (ANCHOR_KINDS[k] is the name the wrapper reports).
ANCHOR_KINDS: tuple[str, ...] = ("", "converged", "rest", "full", "empty")
K_NONE = 0
K_CONVERGED = 1
K_REST = 2
K_FULL = 3
K_EMPTY = 4

# Pack sets of Kernel._share_limit.
SET_ADMITTED = 0
SET_FULL = 1
SET_ONLINE = 2

# Estimator modes (CoreParams.estimator).
EST_EKF = 0
EST_COUNTING = 1

# Tuning constants (behaviour summarised in core.py's docstring; deliberately not configuration).
MAX_GAP_S = 5.0  # no coulomb counting across sample gaps longer than this
FULL_REST_SOC = 0.99  # at rest, a full episode needs a cell whose OCV says at least this
FULL_TAIL_MIN = 0.1  # … otherwise charging current above this fraction of the tail current
MAX_RAMP_DT_S = 5.0  # a ramp never advances more than this per step (sparse steps do not jump)
REST_FILTER_S = 10.0  # time constant of the current average the rest timer looks at
# EKF: initial uncertainty
INIT_OCV_V = 0.010  # voltage uncertainty of a first reading beyond hysteresis (relaxation, IR guess)
INIT_SD_MIN = 0.01  # bounds of the SOC σ derived from the OCV slope at start
INIT_SD_MAX = 0.30
KNOWN_SD = 0.10  # σ of a given initial SOC (user value or restored state of unknown age)
KNOWN_CELL_SD = 0.02  # σ of a given cell's offset from its pack
V1_SD0 = 0.010  # σ of the unknown polarisation at start (V)
H_SD0 = 0.6  # σ of the unknown hysteresis state at start (uniform on −1..1)
RHO_SD0 = 0.2  # σ of the R0 scale at start
# EKF: process noise (per √s unless stated)
CAP_SD = 0.02  # relative error of the capacity used for counting (random part, per unit of SOC moved)
CAP_SD_RATED = 0.05  # systematic capacity error while it is the rated value, then CAP_SD: at a calibration
# its share (this × SOC moved since the last reference) is not blamed on the bias
CELL_CAP_SD = 0.02  # cell-to-pack capacity spread (per unit of SOC moved)
CELL_RW = 2e-6  # cell offset drift: self-discharge and balancing differences
V1_REL = 0.2  # relative error of the RC model (per unit of v1 change)
H_RW = 1e-4
H_REL = 0.5  # variance of h added per unit of h the instantaneous current would move it (a transition's
# timing and shape are uncertain: deadband, drive filter and rate are fits), up to H_SD0²
BIAS_RW_C = 5e-6  # current-bias drift, × rated capacity (A/√s)
RHO_RW = 1e-4
# EKF: measurement noise
KAPPA = 0.01  # SOC-axis uncertainty of the OCV table (1 %): model error grows with the OCV slope
R0_SPREAD = 0.1  # cell-to-cell R0 spread (differential error of the per-cell update)
REST_SIGMA_V = 0.003  # model error of a rested reading (no RC, hysteresis still uncertain)
CAL_SD = 0.005  # σ of a full/empty calibration
ANCHOR_ITERS = 6  # iterations of the iterated-EKF update at an OCV reset
H_DEADBAND_C = 0.01  # |filtered current| below this × capacity does not drive the hysteresis
# EKF: limits
B_MAX_C = 0.05  # |bias| ≤ this × rated capacity
RHO_MIN = 0.3
RHO_MAX = 3.0
# anchors and capacity
CONVERGED_SD = 0.02  # SOC σ of the mean cell below which the filter counts as converged
ANCHOR_SD = 0.015  # anchors this certain (σ after the anchor) are capacity reference points
CAP_MIN_DZ = 0.4  # capacity is learnt between reference points at least this far apart in SOC
CAP_GAIN = 0.3  # weight of a new capacity sample
CAP_MIN = 0.5  # capacity estimate bounds, × rated
CAP_MAX = 1.2
TIME_EPS = 1e-9  # tolerance on debounce comparisons (sums of 0.1 s steps)
# a ramp binding by less than this fraction of its full scale keeps the target's reason unless it was
# already RECOVERY: small rises of a derated target otherwise flip the reason every few steps
RAMP_REASON_TOL = 0.01
# CVL holds the highest cell this far below cell_v_max_warn: the charge-voltage control's own overshoot
# (a few mV) must not raise the over-voltage warning at every full charge of an unbalanced pack
CVL_MARGIN_V = 0.02
SEG_BINS = 1024  # uniform bins of the SOC-segment table (_lookup)
UNSET = -1.0e300  # "no time": timers that are not running
UNSET_BELOW = -1.0e299
NAN = float("nan")
# protection
TR_FILTER_S = 2.0  # time constant of the per-sensor dT/dt filter
TR_RAW_MAX = 2.0  # °C/s: a faster step between two samples counts as this (a sensor glitch is not a rise)
TR_VDROP = 0.75  # GB 38031 "voltage drop > 25 %": the lowest cell below this × the pack's mean cell
TR_DERATE = 0.5  # thermal stage 2 ("derate"): DCL × this, CCL 0

# The constants above are C globals once compiled (not importable); this is their Python-visible copy.
TUNING: dict[str, float] = {
    "max_gap_s": MAX_GAP_S,
    "max_ramp_dt_s": MAX_RAMP_DT_S,
    "rest_filter_s": REST_FILTER_S,
    "init_ocv_v": INIT_OCV_V,
    "init_sd_min": INIT_SD_MIN,
    "init_sd_max": INIT_SD_MAX,
    "known_sd": KNOWN_SD,
    "known_cell_sd": KNOWN_CELL_SD,
    "cap_sd_rated": CAP_SD_RATED,
    "cap_sd": CAP_SD,
    "cell_cap_sd": CELL_CAP_SD,
    "bias_rw_c": BIAS_RW_C,
    "kappa": KAPPA,
    "rest_sigma_v": REST_SIGMA_V,
    "cal_sd": CAL_SD,
    "b_max_c": B_MAX_C,
    "converged_sd": CONVERGED_SD,
    "anchor_sd": ANCHOR_SD,
    "cap_min_dz": CAP_MIN_DZ,
    "tr_filter_s": TR_FILTER_S,
    "tr_raw_max": TR_RAW_MAX,
    "tr_vdrop": TR_VDROP,
    "tr_derate": TR_DERATE,
}


def _f64(n: int) -> memoryview[float]:
    return memoryview(bytearray(8 * (n if n > 0 else 1))).cast("d")


def _i32(n: int) -> memoryview[int]:
    return memoryview(bytearray(4 * (n if n > 0 else 1))).cast("i")


def _i64(n: int) -> memoryview[int]:
    return memoryview(bytearray(8 * (n if n > 0 else 1))).cast("q")


def _pair(a: float, b: float) -> memoryview[float]:
    out = _f64(2)
    out[0] = a
    out[1] = b
    return out


def interp(x: float, xs: memoryview[float], ys: memoryview[float], n: int) -> float:
    """Piecewise-linear y(x) over ascending xs[0:n], clamped to the end values."""
    if x <= xs[0]:
        return ys[0]
    if x >= xs[n - 1]:
        return ys[n - 1]
    lo = bracket(x, xs, n)
    return ys[lo] + (ys[lo + 1] - ys[lo]) * (x - xs[lo]) / (xs[lo + 1] - xs[lo])


def bracket(x: float, xs: memoryview[float], n: int) -> int:
    """Index lo of the segment [xs[lo], xs[lo + 1]] holding x (0 and n − 2 outside the table)."""
    lo = 0
    hi = n - 1
    while hi - lo > 1:
        mid = (lo + hi) >> 1
        if xs[mid] <= x:
            lo = mid
        else:
            hi = mid
    return lo


def derate_high(x: float, start: float, end: float) -> float:
    """Trapezoid edge: 1 at or below `start`, 0 at or above `end`, linear between."""
    if x <= start:
        return 1.0
    if x >= end:
        return 0.0
    return (end - x) / (end - start)


def derate_low(x: float, end: float, start: float) -> float:
    """Trapezoid edge: 0 at or below `end`, 1 at or above `start`, linear between."""
    if x >= start:
        return 1.0
    if x <= end:
        return 0.0
    return (x - end) / (start - end)


def ramp_reason(gap: float, reason: int, prev: int, full: float) -> int:
    """Reason of a limit the recovery ramp holds `gap` below its target: RECOVERY if it was already or the
    gap exceeds RAMP_REASON_TOL of the ramp's full scale `full`, else the target's `reason`."""
    if prev == R_RECOVERY or gap > RAMP_REASON_TOL * full:
        return R_RECOVERY
    return reason


class Kernel:
    """All state of the core in flat buffers; :meth:`step` advances it to time `t`.

    The caller writes each pack's inputs (``set_pack`` plus ``cell_v``/``cell_t`` rows) and calls
    :meth:`step`; results are read back from the output buffers and scalars.
    """

    def __init__(
        self,
        params: CoreParams,
        *,
        model: dict[str, float],
        soc_grid: memoryview[float],
        ocv_tab: memoryview[float],
        hyst_tab: memoryview[float],
        tab_temps: memoryview[float],
        rs_temps: memoryview[float],
        rs_vals: memoryview[float],
        current_sigma: memoryview[float],
        bias_sigma: memoryview[float],
        tail_current: memoryview[float],
        initial_soc: memoryview[float] | None,
        initial_cell_soc: memoryview[float] | None,
    ) -> None:
        """`model`: the chemistry's cell model (Core builds it from the profile). Per pack: `current_sigma`
        the current sensor's noise σ, `bias_sigma` the prior σ of its offset, `tail_current` the full-charge
        tail current. Tables: OCV and hysteresis M on ``soc_grid``, one row per ``tab_temps`` entry,
        flattened row-major; R(T)/R(25 °C) sampled at ``rs_temps``."""
        n_packs = len(params.cells)
        self.n_packs = n_packs
        self.n_grid = len(soc_grid)
        self.n_temps = len(tab_temps)
        self.n_rs = len(rs_temps)
        self.soc_grid = soc_grid
        self.ocv_tab = ocv_tab
        self.hyst_tab = hyst_tab
        self.tab_temps = tab_temps
        self.rs_temps = rs_temps
        self.rs_vals = rs_vals

        self.v_max_alarm = float(params.cell_v_max_alarm)
        self.v_max_warn = float(params.cell_v_max_warn)
        self.v_target = self.v_max_warn - CVL_MARGIN_V
        self.v_min_warn = float(params.cell_v_min_warn)
        self.v_min_alarm = float(params.cell_v_min_alarm)
        self.v_hyst = float(params.cell_v_hysteresis)
        self.chg_t_min = float(params.charge_temp_min_c)
        self.chg_t_max = float(params.charge_temp_max_c)
        self.dis_t_min = float(params.discharge_temp_min_c)
        self.dis_t_max = float(params.discharge_temp_max_c)
        self.t_margin = float(params.temp_warn_margin_c)
        self.t_hyst = float(params.temp_hysteresis_c)
        self.max_chg = float(params.max_charge_current_a)
        self.max_dis = float(params.max_discharge_current_a)
        self.oc_factor = float(params.overcurrent_factor)
        self.oc_time = float(params.overcurrent_time_s)
        self.debounce = float(params.debounce_s)
        self.chg_v = float(params.charge_voltage_cell_v)
        self.dis_v = float(params.discharge_voltage_cell_v)
        self.rest_i = float(params.rest_current_a)
        self.rest_time = float(params.rest_time_s)
        self.ramp_s = float(params.recovery_ramp_s)
        self.full_margin = float(params.full_voltage_margin_v)
        self.full_hold = float(params.full_hold_s)
        self.empty_v = float(params.empty_voltage_cell_v)
        self.sigma_v = float(params.voltage_sigma_v)
        self.estimator = EST_COUNTING if params.estimator == "counting" else EST_EKF
        # protection tiers, derating, charge stages, thermal staging (CoreParams documents each)
        self.v_max_fault = float(params.cell_v_max_fault)
        self.v_min_fault = float(params.cell_v_min_fault)
        self.t_fault = float(params.temp_fault_margin_c)
        self.oc_fault_f = float(params.overcurrent_fault_factor)
        self.oc_fault_t = float(params.overcurrent_fault_time_s)
        self.oc_k = (self.oc_factor * self.oc_factor - 1.0) * self.oc_time
        self.sens_t = float(params.sensor_fault_time_s)
        self.soc_floor = float(params.soc_derate_floor)
        self.float_v = float(params.float_voltage_cell_v)
        self.abs_max = float(params.absorption_time_max_s)
        self.rebulk_soc = float(params.rebulk_soc)
        self.rebulk_spread = float(params.rebulk_spread_v)
        self.tr_warn = float(params.tr_rate_warn_c_s)
        self.tr_alarm = float(params.tr_rate_alarm_c_s)
        self.tr_confirm = float(params.tr_rate_confirm_c_s)
        self.tr_confirm_s = float(params.tr_confirm_s)
        self.tr_delta = float(params.tr_delta_warn_c)
        self.pv_hi = _f64(3)  # pack voltage / cells: warn, alarm, fault
        self.pv_lo = _f64(3)
        self.imb_v = _f64(3)  # cell spread: warn, alarm, fault
        for k, tier in enumerate(("warn", "alarm", "fault")):
            self.pv_hi[k] = float(getattr(params, "pack_v_max_" + tier))
            self.pv_lo[k] = float(getattr(params, "pack_v_min_" + tier))
            self.imb_v[k] = float(getattr(params, "imbalance_" + tier + "_v"))
        # trapezoid edges per direction (0 charge, 1 discharge; discharge mirrored x → −x, see _pack_limit)
        m = self.t_margin
        self.dr_v0 = _pair(self.v_max_warn, -self.v_min_warn)
        self.dr_v1 = _pair(self.v_max_alarm, -self.v_min_alarm)
        self.dr_p0 = _pair(self.pv_hi[0], -self.pv_lo[0])
        self.dr_p1 = _pair(self.pv_hi[1], -self.pv_lo[1])
        self.dr_th0 = _pair(self.chg_t_max - m, self.dis_t_max - m)
        self.dr_th1 = _pair(self.chg_t_max, self.dis_t_max)
        self.dr_tl0 = _pair(self.chg_t_min, self.dis_t_min)
        self.dr_tl1 = _pair(self.chg_t_min + m, self.dis_t_min + m)
        self.dr_s0 = _pair(float(params.soc_charge_derate_start), -float(params.soc_discharge_derate_start))
        self.dr_s1 = _pair(1.0, -0.0)
        self.r0_ah = float(model["r0_ohm_ah"])
        self.r1_ah = float(model["r1_ohm_ah"])
        self.tau1 = float(model["tau1_s"])
        self.gamma = float(model["hyst_gamma"])
        self.tau_h = float(model["hyst_tau_s"])
        self.eta = float(model["coulomb_efficiency"])
        self.sigma_m = float(model["model_sigma_v"])
        # correlation time of the model error: one update per tc_s carries full weight, so faster sampling
        # does not make the filter more confident than the model is
        self.tc_s = float(model["model_corr_s"])
        # Schmidt "consider" parameter m: the cells' hysteresis is M·(1 + m), m ~ N(0, hm_var), never
        # estimated; its cross-covariance with x (pxm) keeps the persistent offset it causes from being
        # averaged away by thousands of updates or blamed on the bias
        self.hm_var = float(params.hysteresis_sigma) * float(params.hysteresis_sigma)

        self.cell_off = _i32(n_packs + 1)
        self.sens_off = _i32(n_packs + 1)
        self.cap_ah = _f64(n_packs)
        self.sig_i = _f64(n_packs)
        self.bias_sd = _f64(n_packs)
        self.tail_i = _f64(n_packs)
        nc = 0
        ns = 0
        for p in range(n_packs):
            self.cell_off[p] = nc
            self.sens_off[p] = ns
            nc += int(params.cells[p])
            ns += int(params.sensors[p])
            self.cap_ah[p] = float(params.capacity_ah[p])
            self.sig_i[p] = current_sigma[p]
            self.bias_sd[p] = bias_sigma[p]
            self.tail_i[p] = tail_current[p]
        self.cell_off[n_packs] = nc
        self.sens_off[n_packs] = ns
        self.n_cells = nc
        self.n_sens = ns

        self.lat_level = _i32(N_LATCH)
        self.lat_zero_c = _i32(N_LATCH)
        self.lat_zero_d = _i32(N_LATCH)
        self.lat_reason = _i32(N_LATCH)
        self.lat_flag = _i64(N_LATCH)
        for k in range(N_LATCH):
            row = LATCHES[k]
            self.lat_level[k] = row[1]
            self.lat_zero_c[k] = row[2]
            self.lat_zero_d[k] = row[3]
            self.lat_reason[k] = row[4]
            self.lat_flag[k] = row[6]

        # inputs
        self.cell_v = _f64(nc)
        self.cell_t = _f64(ns)
        self.s_t = _f64(n_packs)
        self.cur = _f64(n_packs)
        self.online = _i32(n_packs)
        self.flags = _i64(n_packs)
        self.share = _f64(n_packs)  # assumed fraction of the system current (any scale; normalised per set)
        self.admit = _f64(n_packs)  # 0 held out … 1 fully admitted (bmsgw/multipack.py)
        # cell state: output SOC, offset from the pack's mean cell and its variance
        self.soc = _f64(nc)
        self.dz = _f64(nc)
        self.dz_var = _f64(nc)
        self.c_res = _f64(nc)  # scratch of _update_cells: each cell's residual and dv/dδ
        self.c_hc = _f64(nc)
        # pack state and outputs
        self.seen = _i32(n_packs)
        self.prev_on = _i32(n_packs)
        self.fresh = _i32(n_packs)
        self.pending = _i32(n_packs)
        self.soc_known = _i32(n_packs)
        self.last_t = _f64(n_packs)
        self.last_i = _f64(n_packs)
        self.rest_since = _f64(n_packs)
        self.rest_next = _f64(n_packs)
        self.full_since = _f64(n_packs)
        self.empty_since = _f64(n_packs)
        self.full_done = _i32(n_packs)
        self.empty_done = _i32(n_packs)
        # mean-cell EKF: x = [z, v1, h, b, rho] and P (5 × 5, row-major) per pack
        self.x = _f64(5 * n_packs)
        self.pcov = _f64(25 * n_packs)
        self.pxm = _f64(5 * n_packs)  # cov(x, m) per pack
        self.ibar = _f64(n_packs)
        self.irest = _f64(n_packs)  # current averaged over REST_FILTER_S (rest detection)
        self.cap_est = _f64(n_packs)
        self.ah = _f64(n_packs)  # bias-corrected Ah counter (η applied)
        self.ref_z = _f64(n_packs)  # last capacity reference point: mean-cell SOC and Ah counter there
        self.ref_ah = _f64(n_packs)
        self.ref_ok = _i32(n_packs)
        self.thr = _f64(n_packs)  # SOC moved since the last reference point (capacity-error growth)
        self.cap_n = _i32(n_packs)
        self.anchor_n = _i32(n_packs)
        self.anchor_kind = _i32(n_packs)
        self.anchor_t = _f64(n_packs)
        self.first_anchor_t = _f64(n_packs)
        self.converged = _i32(n_packs)
        self.temp_p = _f64(n_packs)
        self.r0_p = _f64(n_packs)  # present cell R0 estimate (Ω)
        self.soc_pack = _f64(n_packs)
        self.vmin = _f64(n_packs)
        self.vmax = _f64(n_packs)
        self.tmin = _f64(n_packs)
        self.tmax = _f64(n_packs)
        self.excess = _f64(n_packs)
        self.ccl_p = _f64(n_packs)
        self.dcl_p = _f64(n_packs)
        self.ccl_r = _i32(n_packs)
        self.dcl_r = _i32(n_packs)
        self.contactor = _i32(n_packs)
        # latches, pack-major
        self.lat_on = _i32(n_packs * N_LATCH)
        self.lat_since = _f64(n_packs * N_LATCH)
        self.lat_pend = _f64(n_packs * N_LATCH)
        for k in range(n_packs * N_LATCH):
            self.lat_pend[k] = UNSET
        # protection state: overcurrent I²t per pack and direction, thermal filter per sensor
        self.lat_keep = _i32(N_LATCH)
        for k in range(N_LATCH):
            self.lat_keep[k] = LATCHES[k][7]
        self.vmean = _f64(n_packs)
        self.oc_acc = _f64(2 * n_packs)
        self.oc_t = _f64(n_packs)
        self.oc_i = _f64(n_packs)  # current of the previous step (the interval's current)
        self.th_t = _f64(n_packs)
        self.th_prev = _f64(ns)
        self.th_rate = _f64(ns)
        self.tr_rate = _f64(n_packs)
        self.tr_delta_p = _f64(n_packs)
        for p in range(n_packs):
            self.oc_t[p] = UNSET
            self.th_t[p] = UNSET
        self.stage = S_BULK
        self.float_armed = 0
        self.stage_since = 0.0
        self.abs_time = 0.0
        self.tail_since = UNSET
        self.shutdown = 0
        # scratch of _lookup / _temperature
        self.l_ocv = 0.0
        self.l_docv = 0.0
        self.l_m = 0.0
        self.l_dm = 0.0
        self.tt0 = 0
        self.tt1 = 0
        self.tw = 0.0
        self.kv = _f64(5)  # scratch: P·Hᵀ of a mean-cell update
        self.x0 = _f64(5)  # scratch: prior state of an iterated update
        self.brow = _f64(self.n_grid)  # the OCV row at the selected temperature (_temperature)
        self.hrow = _f64(self.n_grid)  # … and the hysteresis row
        self.bslope = _f64(self.n_grid)  # their slopes per SOC segment
        self.hslope = _f64(self.n_grid)
        # segment of every uniform SOC bin (bin b starts at soc_grid[0] + b / seg_scale), for _lookup
        self.seg_scale = SEG_BINS / (soc_grid[self.n_grid - 1] - soc_grid[0])
        self.seg_idx = _i32(SEG_BINS + 1)
        for k in range(SEG_BINS + 1):
            self.seg_idx[k] = bracket(soc_grid[0] + k / self.seg_scale, soc_grid, self.n_grid)
        self.fp = _f64(25)  # scratch: F·P
        for p in range(n_packs):
            self.rest_since[p] = UNSET
            self.rest_next[p] = UNSET
            self.full_since[p] = UNSET
            self.empty_since[p] = UNSET
            self.anchor_t[p] = NAN
            self.first_anchor_t[p] = NAN
            self.ccl_r[p] = R_COMM_LOST
            self.dcl_r[p] = R_COMM_LOST
            self.share[p] = 1.0
            self.admit[p] = 1.0
            self.cap_est[p] = self.cap_ah[p]
            self.x[5 * p + 4] = 1.0
            self.temp_p[p] = 25.0
            self.r0_p[p] = self.r0_ah / self.cap_ah[p]
            if initial_soc is not None:
                self.soc_known[p] = 1
                self.x[5 * p] = initial_soc[p]
                self.soc_pack[p] = initial_soc[p]
                for c in range(self.cell_off[p], self.cell_off[p + 1]):
                    self.soc[c] = initial_soc[p]
                if initial_cell_soc is not None:
                    zsum = 0.0
                    for c in range(self.cell_off[p], self.cell_off[p + 1]):
                        self.soc[c] = initial_cell_soc[c]
                        zsum += initial_cell_soc[c]
                    self.x[5 * p] = zsum / (self.cell_off[p + 1] - self.cell_off[p])
                for c in range(self.cell_off[p], self.cell_off[p + 1]):
                    self.dz[c] = self.soc[c] - self.x[5 * p]

        # system outputs: the safe state until data arrives
        cells0 = float(params.cells[0])
        self.soc_sys = 0.0
        if initial_soc is not None:
            self._system_soc(1)
        self.ccl = 0.0
        self.dcl = 0.0
        self.cvl = cells0 * float(model["nominal_v"])
        self.dvl = cells0 * self.dis_v
        if self.dvl > self.cvl:
            self.dvl = self.cvl
        self.ccl_reason = R_COMM_LOST
        self.dcl_reason = R_COMM_LOST
        self.cvl_reason = R_COMM_LOST
        self.dvl_reason = R_COMM_LOST
        self.n_online = 0
        self.n_admit = 0
        self.ccl_pack = -1
        self.dcl_pack = -1
        self.cb_pack = -1
        self.cb_reason = R_COMM_LOST
        self.have_data = 0
        self.comm_lost = 0
        self.comm_lost_since = 0.0
        self.alarm_version = 0
        self.t_prev = UNSET

    # ---------------------------------------------------------------- inputs

    def set_pack(self, p: int, online: int, t: float, current: float, flags: int, fresh: int) -> None:
        """Pack `p`'s inputs for the next step (cells go into ``cell_v``/``cell_t`` rows first).

        ``online == 0`` only marks the pack unusable; its last sample values are kept. ``fresh == 0`` says
        the sample is the one of the previous step (nothing to reload, nothing to integrate).
        """
        self.online[p] = online
        if online == 0:
            return
        self.fresh[p] = fresh
        self.s_t[p] = t
        self.cur[p] = current
        self.flags[p] = flags

    def set_share(self, p: int, share: float, admit: float) -> None:
        """Pack `p`'s assumed share of the system current (> 0; normalised over the packs in the limit) and
        its admission (0 held out: its limits count for nothing; 1 in service; between: ramping in)."""
        self.share[p] = share
        self.admit[p] = admit

    # ---------------------------------------------------------------- step

    def step(self, t: float) -> None:
        """Advance every online pack, then the system limits, to time `t`."""
        n_online = 0
        for p in range(self.n_packs):
            if self.online[p] != 0:
                n_online += 1
                if self.prev_on[p] == 0:
                    # back after a gap: conditions seen before it do not count towards debounce
                    self.prev_on[p] = 1
                    for k in range(p * N_LATCH, (p + 1) * N_LATCH):
                        self.lat_pend[k] = UNSET
                    self.pending[p] = 0
                    self.oc_t[p] = UNSET
                self._pack(p, t)
            else:
                self.prev_on[p] = 0
        self._shutdown()
        self._system(t, n_online)
        self.t_prev = t

    def reset_latched(self, pack: int) -> int:
        """Clear the latched (tier 3) rows of pack `pack` (−1: every pack); returns how many were on. A
        condition that still holds trips again after its delay. Limits are rebuilt at the next step."""
        n = 0
        for p in range(self.n_packs):
            if pack >= 0 and pack != p:
                continue
            fault = 0
            for k in range(N_LATCH):
                j = p * N_LATCH + k
                if self.lat_keep[k] != 0 and self.lat_on[j] != 0:
                    self.lat_on[j] = 0
                    self.lat_pend[j] = UNSET
                    n += 1
                elif self.lat_on[j] != 0 and self.lat_level[k] >= FAULT:
                    fault = 1
            self.contactor[p] = fault
        for p in range(self.n_packs):
            self.pending[p] = 1
        if n > 0:
            self.alarm_version += 1
        return n

    def set_latched(self, p: int, k: int, since: float) -> None:
        """Trip latched row `k` of pack `p` as of `since` (restoring latched faults after a restart)."""
        j = p * N_LATCH + k
        if self.lat_keep[k] != 0 and self.lat_on[j] == 0:
            self.lat_on[j] = 1
            self.lat_since[j] = since
            self.lat_pend[j] = UNSET
            self.contactor[p] = 1
            self.pending[p] = 1
            self.alarm_version += 1

    def _shutdown(self) -> None:
        """A confirmed thermal runaway in any pack shuts the system down: every pack's contactor-open
        request and every pack limit 0 (reason THERMAL_RUNAWAY) until the latch is reset."""
        shut = 0
        for p in range(self.n_packs):
            if self.lat_on[p * N_LATCH + L_TR_CONFIRMED] != 0:
                shut = 1
        self.shutdown = shut
        if shut == 0:
            return
        for p in range(self.n_packs):
            self.contactor[p] = 1
            self.ccl_p[p] = 0.0
            self.dcl_p[p] = 0.0
            self.ccl_r[p] = R_THERMAL_RUNAWAY
            self.dcl_r[p] = R_THERMAL_RUNAWAY

    # ---------------------------------------------------------------- per pack

    def _pack(self, p: int, t: float) -> None:
        if self.fresh[p] == 0 and self.pending[p] == 0 and self.seen[p] != 0:
            # Same sample as last step and no debounce timer running: every latch is in a steady state
            # for these inputs, so nothing in this pack can change. Skipping is exact, not approximate.
            return
        cv = self.cell_v
        soc = self.soc
        c0 = self.cell_off[p]
        c1 = self.cell_off[p + 1]
        s0 = self.sens_off[p]
        s1 = self.sens_off[p + 1]
        cur = self.cur[p]
        st = self.s_t[p]

        # cell extremes, mean, non-finite readings and the CVL excess
        vmin = cv[c0]
        vmax = cv[c0]
        vsum = 0.0
        excess = 0.0
        nbad = 0
        for c in range(c0, c1):
            v = cv[c]
            if v < vmin:
                vmin = v
            if v > vmax:
                vmax = v
            if v > self.v_target:
                excess += v - self.v_target
            if v - v != 0.0:  # NaN or ±inf
                nbad += 1
            vsum += v
        vmean = vsum / (c1 - c0)
        self.vmin[p] = vmin
        self.vmax[p] = vmax
        self.vmean[p] = vmean
        self.excess[p] = excess
        has_t = s1 > s0
        tmin = 0.0
        tmax = 0.0
        if has_t:
            tmin = self.cell_t[s0]
            tmax = self.cell_t[s0]
            for s in range(s0, s1):
                x = self.cell_t[s]
                if x < tmin:
                    tmin = x
                if x > tmax:
                    tmax = x
                if x - x != 0.0:
                    nbad += 1
            if self.fresh[p] != 0:
                self._thermal(p, s0, s1, st)
        self.tmin[p] = tmin
        self.tmax[p] = tmax

        self._soc_step(p, c0, c1, s0, s1, cur, st, has_t)

        smin = soc[c0]
        smax = soc[c0]
        for c in range(c0, c1):
            if soc[c] < smin:
                smin = soc[c]
            if soc[c] > smax:
                smax = soc[c]
        den = smin + (1.0 - smax)
        self.soc_pack[p] = smin / den if den > 0.0 else 0.5

        # overcurrent time-current curve: ∫((I/rated)² − 1) dt (cooling below rated, never below 0) against
        # K = (factor² − 1) × time, so overcurrent_factor × rated trips after overcurrent_time_s and a higher
        # current sooner; each interval counts with the current held since the previous step
        dt = 0.0
        if self.oc_t[p] > UNSET_BELOW:
            dt = t - self.oc_t[p]
            if dt < 0.0:
                dt = 0.0
            elif dt > MAX_RAMP_DT_S:
                dt = MAX_RAMP_DT_S
        self.oc_t[p] = t
        y = self.oc_i[p]
        self.oc_i[p] = cur
        x = y / self.max_chg
        a = self.oc_acc[2 * p] + (x * x - 1.0) * dt if y > 0.0 else self.oc_acc[2 * p] - dt
        self.oc_acc[2 * p] = a if a > 0.0 else 0.0
        x = y / self.max_dis
        a = self.oc_acc[2 * p + 1] + (x * x - 1.0) * dt if y < 0.0 else self.oc_acc[2 * p + 1] - dt
        self.oc_acc[2 * p + 1] = a if a > 0.0 else 0.0

        # protection latches (`pend` collects whether any timer is still running)
        j = p * N_LATCH
        vh = self.v_hyst
        th = self.t_hyst
        db = self.debounce
        pend = self.oc_acc[2 * p] > 0.0 or self.oc_acc[2 * p + 1] > 0.0
        pend |= self._latch(j + L_OV_WARN, t, vmax >= self.v_max_warn, vmax < self.v_max_warn - vh, db)
        pend |= self._latch(j + L_OV_ALARM, t, vmax >= self.v_max_alarm, vmax < self.v_max_alarm - vh, db)
        pend |= self._latch(j + L_OV_FAULT, t, vmax >= self.v_max_fault, False, db)
        pend |= self._latch(j + L_UV_WARN, t, vmin <= self.v_min_warn, vmin > self.v_min_warn + vh, db)
        pend |= self._latch(j + L_UV_ALARM, t, vmin <= self.v_min_alarm, vmin > self.v_min_alarm + vh, db)
        pend |= self._latch(j + L_UV_FAULT, t, vmin <= self.v_min_fault, False, db)
        lim = self.pv_hi[0]
        pend |= self._latch(j + L_POV_WARN, t, vmean >= lim, vmean < lim - vh, db)
        lim = self.pv_hi[1]
        pend |= self._latch(j + L_POV_ALARM, t, vmean >= lim, vmean < lim - vh, db)
        pend |= self._latch(j + L_POV_FAULT, t, vmean >= self.pv_hi[2], False, db)
        lim = self.pv_lo[0]
        pend |= self._latch(j + L_PUV_WARN, t, vmean <= lim, vmean > lim + vh, db)
        lim = self.pv_lo[1]
        pend |= self._latch(j + L_PUV_ALARM, t, vmean <= lim, vmean > lim + vh, db)
        pend |= self._latch(j + L_PUV_FAULT, t, vmean <= self.pv_lo[2], False, db)
        if has_t:
            tf = self.t_fault
            charging = cur >= self.rest_i
            warn = self.chg_t_max - self.t_margin
            pend |= self._latch(j + L_OTC_WARN, t, tmax >= warn, tmax < warn - th, db)
            lim = self.chg_t_max
            pend |= self._latch(j + L_OTC_ALARM, t, tmax >= lim and charging, tmax < lim - th, db)
            pend |= self._latch(j + L_OTC_FAULT, t, tmax >= lim + tf and charging, False, db)
            warn = self.dis_t_max - self.t_margin
            pend |= self._latch(j + L_OTD_WARN, t, tmax >= warn, tmax < warn - th, db)
            lim = self.dis_t_max
            pend |= self._latch(j + L_OTD_ALARM, t, tmax >= lim, tmax < lim - th, db)
            pend |= self._latch(j + L_OTD_FAULT, t, tmax >= lim + tf, False, db)
            warn = self.dis_t_min + self.t_margin
            pend |= self._latch(j + L_UTD_WARN, t, tmin <= warn, tmin > warn + th, db)
            lim = self.dis_t_min
            pend |= self._latch(j + L_UTD_ALARM, t, tmin <= lim, tmin > lim + th, db)
            pend |= self._latch(j + L_UTD_FAULT, t, tmin <= lim - tf, False, db)
            warn = self.chg_t_min + self.t_margin
            pend |= self._latch(j + L_CUT_WARN, t, tmin < warn, tmin >= warn + th, db)
            lim = self.chg_t_min
            pend |= self._latch(j + L_CUT_ALARM, t, tmin < lim, tmin >= lim + th, db)
            pend |= self._latch(j + L_CUT_FAULT, t, tmin < lim - tf and charging, False, db)
            # thermal runaway: warning → derate → pack isolation → (GB 38031 confirmed) system shutdown
            rate = self.tr_rate[p]
            lim = self.tr_warn
            on = rate >= lim or self.tr_delta_p[p] >= self.tr_delta
            off = rate < 0.5 * lim and self.tr_delta_p[p] < self.tr_delta - th
            pend |= self._latch(j + L_TR_WARN, t, on, off, db)
            lim = self.tr_alarm
            pend |= self._latch(j + L_TR_ALARM, t, rate >= lim, rate < 0.5 * lim, db)
            on = rate >= self.tr_confirm
            pend |= self._latch(j + L_TR_ISOLATE, t, on, False, self.tr_confirm_s + 2.0 * TIME_EPS)
            on = on and self.lat_on[j + L_TR_ISOLATE] != 0
            on = on and (vmin < TR_VDROP * vmean or tmax >= self.dis_t_max)
            pend |= self._latch(j + L_TR_CONFIRMED, t, on, False, 0.0)
        else:
            for k in range(L_OTC_WARN, L_TR_CONFIRMED + 1):
                pend |= self._latch(j + k, t, False, True, db)
        lim = self.max_chg
        pend |= self._latch(j + L_OCC_WARN, t, cur > lim, cur <= lim, db)
        on = cur > lim and self.oc_acc[2 * p] >= self.oc_k - TIME_EPS
        pend |= self._latch(j + L_OCC_ALARM, t, on, cur <= lim, 0.0)
        pend |= self._latch(j + L_OCC_FAULT, t, cur >= self.oc_fault_f * lim, False, self.oc_fault_t)
        lim = self.max_dis
        pend |= self._latch(j + L_ODC_WARN, t, -cur > lim, -cur <= lim, db)
        on = -cur > lim and self.oc_acc[2 * p + 1] >= self.oc_k - TIME_EPS
        pend |= self._latch(j + L_ODC_ALARM, t, on, -cur <= lim, 0.0)
        pend |= self._latch(j + L_ODC_FAULT, t, -cur >= self.oc_fault_f * lim, False, self.oc_fault_t)
        spread = vmax - vmin
        lim = self.imb_v[0]
        pend |= self._latch(j + L_IMB_WARN, t, spread >= lim, spread < lim - vh, db)
        lim = self.imb_v[1]
        pend |= self._latch(j + L_IMB_ALARM, t, spread >= lim, spread < lim - vh, db)
        pend |= self._latch(j + L_IMB_FAULT, t, spread >= self.imb_v[2], False, db)
        on = nbad > 0
        pend |= self._latch(j + L_SEN_WARN, t, on, not on, 0.0)
        pend |= self._latch(j + L_SEN_ALARM, t, on, not on, db)
        pend |= self._latch(j + L_SEN_FAULT, t, on, False, self.sens_t)
        flags = self.flags[p]
        for k in range(L_FLAGS0, N_LATCH):
            on = (flags & self.lat_flag[k]) != 0
            pend |= self._latch(j + k, t, on, not on, db)
        self.pending[p] = 1 if pend else 0

        # per-pack limits: alarms zero a direction, otherwise the tightest trapezoid
        zc = -1
        zc_level = 0
        zd = -1
        zd_level = 0
        fault = 0
        for k in range(N_LATCH):
            if self.lat_on[j + k] != 0:
                level = self.lat_level[k]
                if level >= FAULT:
                    fault = 1
                if self.lat_zero_c[k] != 0 and level > zc_level:
                    zc_level = level
                    zc = self.lat_reason[k]
                if self.lat_zero_d[k] != 0 and level > zd_level:
                    zd_level = level
                    zd = self.lat_reason[k]
        self.contactor[p] = fault
        self._pack_limit(p, 0, zc, vmax, vmean, tmin, tmax, spread, has_t)
        self._pack_limit(p, 1, zd, vmin, vmean, tmin, tmax, spread, has_t)

    def _pack_limit(
        self,
        p: int,
        d: int,
        zero: int,
        v: float,
        vmean: float,
        tmin: float,
        tmax: float,
        spread: float,
        has_t: bool,
    ) -> None:
        """Pack `p`'s CCL (d = 0, `v` its highest cell) or DCL (d = 1, `v` its lowest cell): 0 with reason
        `zero` when an alarm zeroes that direction, else the rated current times the tightest trapezoid
        (SOF: cell voltage, pack voltage, temperature high and low, SOC; charge also cell spread, discharge
        the thermal derate). Discharge edges are mirrored (x → −x) so every edge is a derate_high."""
        if zero >= 0:
            lim = 0.0
            reason = zero
        else:
            sg = 1.0 if d == 0 else -1.0
            imax = self.max_chg if d == 0 else self.max_dis
            lim = imax
            reason = R_CONFIG
            x = imax * derate_high(sg * v, self.dr_v0[d], self.dr_v1[d])
            if x < lim:
                lim = x
                reason = R_CELL_VOLTAGE_HIGH if d == 0 else R_CELL_VOLTAGE_LOW
            x = imax * derate_high(sg * vmean, self.dr_p0[d], self.dr_p1[d])
            if x < lim:
                lim = x
                reason = R_PACK_VOLTAGE
            if has_t:
                x = imax * derate_high(tmax, self.dr_th0[d], self.dr_th1[d])
                if x < lim:
                    lim = x
                    reason = R_TEMPERATURE_HIGH
                x = imax * derate_low(tmin, self.dr_tl0[d], self.dr_tl1[d])
                if x < lim:
                    lim = x
                    reason = R_TEMPERATURE_LOW
            f = derate_high(sg * self.soc_pack[p], self.dr_s0[d], self.dr_s1[d])
            x = imax * (self.soc_floor + (1.0 - self.soc_floor) * f)
            if x < lim:
                lim = x
                reason = R_SOC_FULL if d == 0 else R_SOC_EMPTY
            if d == 0:
                x = imax * derate_high(spread, self.imb_v[0], self.imb_v[1])
                if x < lim:
                    lim = x
                    reason = R_CELL_IMBALANCE
            elif self.lat_on[p * N_LATCH + L_TR_ALARM] != 0:
                x = imax * TR_DERATE
                if x < lim:
                    lim = x
                    reason = R_THERMAL_RUNAWAY
        if d == 0:
            self.ccl_p[p] = lim
            self.ccl_r[p] = reason
        else:
            self.dcl_p[p] = lim
            self.dcl_r[p] = reason

    def _thermal(self, p: int, s0: int, s1: int, st: float) -> None:
        """Per sensor, the dT/dt filtered over TR_FILTER_S (from sample times); per pack, the fastest rise
        and the largest step between neighbouring sensors."""
        last = self.th_t[p]
        tt = self.cell_t
        if last < UNSET_BELOW or st - last > MAX_GAP_S or st < last:
            for s in range(s0, s1):
                self.th_prev[s] = tt[s]
                self.th_rate[s] = 0.0
            self.th_t[p] = st
        elif st > last:
            dt = st - last
            a = dt / (TR_FILTER_S + dt)
            for s in range(s0, s1):
                x = tt[s]
                y = self.th_prev[s]
                if x - x == 0.0:
                    if y - y == 0.0:
                        r = (x - y) / dt
                        if r > TR_RAW_MAX:
                            r = TR_RAW_MAX
                        elif r < -TR_RAW_MAX:
                            r = -TR_RAW_MAX
                        self.th_rate[s] += a * (r - self.th_rate[s])
                    self.th_prev[s] = x
            self.th_t[p] = st
        rate = self.th_rate[s0]
        delta = 0.0
        for s in range(s0, s1):
            if self.th_rate[s] > rate:
                rate = self.th_rate[s]
            if s > s0:
                x = tt[s] - tt[s - 1]
                if x < 0.0:
                    x = -x
                if x > delta:
                    delta = x
        self.tr_rate[p] = rate
        self.tr_delta_p[p] = delta

    # ---------------------------------------------------------------- SOC estimator

    def _soc_step(
        self, p: int, c0: int, c1: int, s0: int, s1: int, cur: float, st: float, has_t: bool
    ) -> None:
        """Advance pack `p`'s SOC estimate to its sample time `st` (see the module docstring)."""
        temp = 25.0
        if has_t:
            tsum = 0.0
            for s in range(s0, s1):
                tsum += self.cell_t[s]
            temp = tsum / (s1 - s0)
            if temp != temp:  # noqa: PLR0124 -- NaN: keep the tables' reference temperature
                temp = 25.0
        self.temp_p[p] = temp
        self._temperature(temp)
        rs = interp(temp, self.rs_temps, self.rs_vals, self.n_rs)
        r0n = self.r0_ah / self.cap_ah[p] * rs
        n = c1 - c0
        if self.seen[p] == 0:
            self.seen[p] = 1
            self._init_soc(p, c0, c1, cur, r0n)
            self.last_t[p] = st
            self.last_i[p] = cur
            self.irest[p] = cur
            self._rest_timer(p, -self.rest_i < cur < self.rest_i, st, 1)
        elif st != self.last_t[p]:
            dt = st - self.last_t[p]
            if 0.0 < dt <= MAX_GAP_S:
                # rest is judged on a 10 s average: one noisy sample does not restart a 30-minute timer
                a = math.exp(-dt / REST_FILTER_S)
                self.irest[p] = a * self.irest[p] + (1.0 - a) * cur
                resting = -self.rest_i < self.irest[p] < self.rest_i
                self._predict(p, c0, c1, dt, 0.5 * (self.last_i[p] + cur), self.r1_ah / self.cap_ah[p] * rs)
                vbar = self.vmean[p]  # the mean cell, summed in _pack in the same order
                sv2 = self.sigma_v * self.sigma_v
                if self.estimator == EST_EKF:
                    scale = self.tc_s / dt if dt < self.tc_s else 1.0
                    self._update_mean(p, vbar, cur, r0n, sv2 / n + self.sigma_m * self.sigma_m, scale, 1, 0)
                    self._update_cells(p, c0, c1, cur, r0n, sv2, scale)
                rest = self._rest_timer(p, resting, st, 0)
                if rest != 0:  # rested for rest_time_s (again): OCV reset
                    # a repeat reads the same static model error (OCV table, hysteresis) again: taken as
                    # evidence about the bias, the remainder of each partial update would read as SOC drift,
                    # a phantom bias that drains the SOC for hours afterwards; so a repeat holds the bias
                    self._update_mean(
                        p, vbar, cur, r0n, sv2 / n + REST_SIGMA_V * REST_SIGMA_V, 1.0, ANCHOR_ITERS, rest - 1
                    )
                    self._update_cells(p, c0, c1, cur, r0n, sv2, 1.0)
                    self._anchor(p, st, K_REST)
            else:
                # gap or time going backwards: unknown current in between, restart the rest timer
                self.irest[p] = cur
                self._rest_timer(p, -self.rest_i < cur < self.rest_i, st, 1)
            self.last_t[p] = st
            self.last_i[p] = cur
        self._calibrations(p, c0, c1, cur, st)
        j5 = 5 * p
        if self.converged[p] == 0 and self.pcov[25 * p] <= CONVERGED_SD * CONVERGED_SD:
            self.converged[p] = 1
            if self.first_anchor_t[p] != self.first_anchor_t[p]:
                self.first_anchor_t[p] = st
        self.r0_p[p] = self.x[j5 + 4] * r0n
        zb = self.x[j5]
        for c in range(c0, c1):
            x = zb + self.dz[c]
            if x < 0.0:
                x = 0.0
            elif x > 1.0:
                x = 1.0
            self.soc[c] = x

    def _rest_timer(self, p: int, resting: bool, st: float, restart: int) -> int:
        """Track the rest period; returns 1 when an OCV reset is due after rest_time_s of rest, 2 for each
        repeat every rest_time_s while the rest lasts, else 0. `restart` = 1: a new timer from `st` (first
        sample, gap)."""
        if not resting:
            self.rest_since[p] = UNSET
            self.rest_next[p] = UNSET
            return 0
        if restart != 0 or self.rest_since[p] < UNSET_BELOW:
            self.rest_since[p] = st
            self.rest_next[p] = st + self.rest_time
            return 0
        if st >= self.rest_next[p] - TIME_EPS:
            self.rest_next[p] = st + self.rest_time
            if st - self.rest_since[p] < 2.0 * self.rest_time - TIME_EPS:
                return 1
            return 2
        return 0

    def _temperature(self, temp: float) -> None:
        """Select the table rows (tt0, tt1) and weight (tw) for `temp`: linear between, clamped outside."""
        nt = self.n_temps
        tt = self.tab_temps
        if nt == 1 or temp <= tt[0]:
            self.tt0 = 0
            self.tt1 = 0
            self.tw = 0.0
        elif temp >= tt[nt - 1]:
            self.tt0 = nt - 1
            self.tt1 = nt - 1
            self.tw = 0.0
        else:
            k = 1
            while temp >= tt[k]:
                k += 1
            self.tt0 = k - 1
            self.tt1 = k
            self.tw = (temp - tt[k - 1]) / (tt[k] - tt[k - 1])
        # the OCV and M rows at this temperature and their slopes per segment, once per pack instead of
        # per cell lookup (no division left in _lookup: it runs once per cell and step)
        n = self.n_grid
        a = self.tt0 * n
        b = self.tt1 * n
        w = self.tw
        t = self.ocv_tab
        h = self.hyst_tab
        g = self.soc_grid
        for k in range(n):
            self.brow[k] = t[a + k] + w * (t[b + k] - t[a + k])
            self.hrow[k] = h[a + k] + w * (h[b + k] - h[a + k])
        for k in range(n - 1):
            dg = g[k + 1] - g[k]
            self.bslope[k] = (self.brow[k + 1] - self.brow[k]) / dg
            self.hslope[k] = (self.hrow[k + 1] - self.hrow[k]) / dg

    def _lookup(self, z: float) -> None:
        """OCV, dOCV/dz, hysteresis M and dM/dz at SOC `z` for the selected temperature (beyond the table,
        its end segments extended)."""
        # runs once per cell and step: no memoryview bound to a local here (compiled, every such binding
        # is an atomic acquire/release pair, which cost more than the lookup itself)
        # the segment: bracket(z) in O(1), from a table of segments over uniform bins (no branchy search)
        x = (z - self.soc_grid[0]) * self.seg_scale
        b = 0
        if x >= SEG_BINS:
            b = SEG_BINS
        elif x > 0.0:
            b = int(x)
        lo = self.seg_idx[b]
        while lo > 0 and self.soc_grid[lo] > z:
            lo -= 1
        while lo < self.n_grid - 2 and self.soc_grid[lo + 1] <= z:
            lo += 1
        dz = z - self.soc_grid[lo]
        self.l_docv = self.bslope[lo]
        self.l_ocv = self.brow[lo] + self.l_docv * dz
        self.l_dm = self.hslope[lo]
        self.l_m = self.hrow[lo] + self.l_dm * dz

    def _soc_from_ocv(self, v: float) -> float:
        """SOC whose OCV (selected temperature) is `v`, clamped to the table's SOC range."""
        return interp(v, self.brow, self.soc_grid, self.n_grid)

    def _init_soc(self, p: int, c0: int, c1: int, cur: float, r0n: float) -> None:
        """First sample: cells from their IR-compensated OCV (unless given), covariance from the OCV slope."""
        j5 = 5 * p
        jp = 25 * p
        n = c1 - c0
        if self.soc_known[p] == 0:
            self.soc_known[p] = 1
            zsum = 0.0
            for c in range(c0, c1):
                z = self._soc_from_ocv(self.cell_v[c] - cur * r0n)
                self.soc[c] = z
                zsum += z
            zb = zsum / n
            self.x[j5] = zb
            for c in range(c0, c1):
                self.dz[c] = self.soc[c] - zb
                self._lookup(self.soc[c])
                sd = INIT_SD_MAX
                if self.l_docv * INIT_SD_MAX > INIT_OCV_V:
                    sd = INIT_OCV_V / self.l_docv
                if sd < INIT_SD_MIN:
                    sd = INIT_SD_MIN
                self.dz_var[c] = sd * sd
            self._lookup(zb)
            sd = INIT_SD_MAX
            if self.l_docv * INIT_SD_MAX > self.l_m + INIT_OCV_V:
                sd = (self.l_m + INIT_OCV_V) / self.l_docv
            if sd < INIT_SD_MIN:
                sd = INIT_SD_MIN
        else:
            sd = KNOWN_SD
            for c in range(c0, c1):
                self.dz_var[c] = KNOWN_CELL_SD * KNOWN_CELL_SD
        for k in range(25):
            self.pcov[jp + k] = 0.0
        for k in range(5):
            self.pxm[j5 + k] = 0.0
        bsd = self.bias_sd[p]
        self.pcov[jp] = sd * sd
        self.pcov[jp + 6] = V1_SD0 * V1_SD0
        self.pcov[jp + 12] = H_SD0 * H_SD0
        self.pcov[jp + 18] = bsd * bsd
        self.pcov[jp + 24] = RHO_SD0 * RHO_SD0
        if sd <= ANCHOR_SD:
            self.ref_z[p] = self.x[j5]
            self.ref_ah[p] = self.ah[p]
            self.ref_ok[p] = 1
        self.thr[p] = 0.0

    def _predict(self, p: int, c0: int, c1: int, dt: float, i_avg: float, r1: float) -> None:
        """Time update over `dt` with the trapezoid current `i_avg`: x' = f(x), P' = F·P·Fᵀ + Q."""
        j5 = 5 * p
        jp = 25 * p
        x = self.x
        pc = self.pcov
        fp = self.fp
        ic = i_avg - x[j5 + 3]
        eta = self.eta if ic > 0.0 else 1.0
        cap = self.cap_est[p]
        ek = eta * dt / (3600.0 * cap)
        a1 = math.exp(-dt / self.tau1)
        ah = math.exp(-dt / self.tau_h)
        ib = ah * self.ibar[p] + (1.0 - ah) * i_avg
        self.ibar[p] = ib
        # inside the deadband h holds: a rested LFP cell stays on its branch. Relaxing h towards 0 there
        # reads a cell rested after a discharge ~3 % low on the plateau; the A123 fit (5-minute rests)
        # cannot tell the two apart (bench/tools/fit_ecm.py: identical parameters)
        dead = H_DEADBAND_C * self.cap_ah[p]
        sg = 0.0
        aib = 0.0
        if ib > dead:
            sg = 1.0
            aib = ib
        elif ib < -dead:
            sg = -1.0
            aib = -ib
        ahy = math.exp(-self.gamma * aib * dt / (3600.0 * cap))
        d = 1.0 + x[j5 + 2] if i_avg < 0.0 else 1.0 - x[j5 + 2]
        aic = i_avg if i_avg >= 0.0 else -i_avg
        d = H_REL * d * (1.0 - math.exp(-self.gamma * aic * dt / (3600.0 * cap)))
        if pc[jp + 12] + d > H_SD0 * H_SD0:
            d = H_SD0 * H_SD0 - pc[jp + 12]
        x[j5] += ek * ic
        x[j5 + 1] = a1 * x[j5 + 1] + r1 * (1.0 - a1) * ic
        x[j5 + 2] = ahy * x[j5 + 2] + (1.0 - ahy) * sg
        self.ah[p] += eta * ic * dt / 3600.0
        f03 = -ek
        f13 = -r1 * (1.0 - a1)
        # F·P (F = I except F00 = 1, F03, F11 = a1, F13, F22 = A)
        for k in range(5):
            fp[k] = pc[jp + k] + f03 * pc[jp + 15 + k]
            fp[5 + k] = a1 * pc[jp + 5 + k] + f13 * pc[jp + 15 + k]
            fp[10 + k] = ahy * pc[jp + 10 + k]
            fp[15 + k] = pc[jp + 15 + k]
            fp[20 + k] = pc[jp + 20 + k]
        # (F·P)·Fᵀ
        for k in range(5):
            r = 5 * k
            pc[jp + r] = fp[r] + f03 * fp[r + 3]
            pc[jp + r + 1] = a1 * fp[r + 1] + f13 * fp[r + 3]
            pc[jp + r + 2] = ahy * fp[r + 2]
            pc[jp + r + 3] = fp[r + 3]
            pc[jp + r + 4] = fp[r + 4]
        xm = self.pxm  # F·cov(x, m): m is constant
        xm[j5] += f03 * xm[j5 + 3]
        xm[j5 + 1] = a1 * xm[j5 + 1] + f13 * xm[j5 + 3]
        xm[j5 + 2] *= ahy
        aic = ic if ic >= 0.0 else -ic
        si = self.sig_i[p]
        q = CAP_SD * ek * aic
        pc[jp] += 0.5 * (si * ek) * (si * ek) + q * q
        self.thr[p] += ek * aic
        q = r1 * (1.0 - a1)
        pc[jp + 6] += q * q * (si * si + V1_REL * V1_REL * ic * ic)
        if d > 0.0:
            pc[jp + 12] += d
        pc[jp + 12] += H_RW * H_RW * dt
        q = BIAS_RW_C * self.cap_ah[p]
        pc[jp + 18] += q * q * dt
        pc[jp + 24] += RHO_RW * RHO_RW * dt
        q = CELL_CAP_SD * ek * aic
        q = q * q + CELL_RW * CELL_RW * dt
        for c in range(c0, c1):
            self.dz_var[c] += q

    def _update_mean(
        self, p: int, v: float, cur: float, r0n: float, base_var: float, scale: float, iters: int, hold_b: int
    ) -> None:
        """Measurement update of the mean-cell EKF with the mean cell voltage `v`; `iters` > 1 makes it an
        iterated EKF (relinearised at each new estimate), used for anchors far from the prior. `hold_b` = 1:
        the bias is a consider state (Schmidt update: its estimate and variance stay, the rest is exact).
        The hysteresis-magnitude error m always is one: gain and covariances carry cov(x, m), m stays 0."""
        j5 = 5 * p
        jp = 25 * p
        x = self.x
        pc = self.pcov
        xm = self.pxm
        kv = self.kv
        x0 = self.x0
        c3 = xm[j5 + 3]
        for k in range(5):
            x0[k] = x[j5 + k]
        h0 = 0.0
        h2 = 0.0
        h3 = 0.0
        h4 = 0.0
        hm = 0.0
        hc = 0.0
        sv = 1.0
        for _it in range(iters):
            # the state may sit up to 5 % outside the table (_clamp_state): the prediction there follows
            # the slope H0 says it does. Clamped at 0..1 it went flat, so nothing opposed the state's drift
            # beyond 100 % while rested at the top and the filter read the drift as a current bias
            self._lookup(x[j5])
            h = x[j5 + 2]
            rho = x[j5 + 4]
            ic = cur - x[j5 + 3]
            h0 = self.l_docv + self.l_dm * h
            h2 = self.l_m
            h3 = -rho * r0n
            h4 = r0n * ic
            hm = self.l_m * h  # ∂v/∂m at m = 0
            innov = v - (self.l_ocv + self.l_m * h + x[j5 + 1] + rho * r0n * ic)
            # iterated form: innovation about the prior, linearised at the current estimate
            innov -= h0 * (x0[0] - x[j5]) + (x0[1] - x[j5 + 1]) + h2 * (x0[2] - x[j5 + 2])
            innov -= h3 * (x0[3] - x[j5 + 3]) + h4 * (x0[4] - x[j5 + 4])
            r = (base_var + KAPPA * KAPPA * h0 * h0) * scale
            for k in range(5):
                q = jp + 5 * k
                kv[k] = pc[q] * h0 + pc[q + 1] + pc[q + 2] * h2 + pc[q + 3] * h3 + pc[q + 4] * h4
                kv[k] += xm[j5 + k] * hm
            hc = xm[j5] * h0 + xm[j5 + 1] + xm[j5 + 2] * h2 + xm[j5 + 3] * h3 + xm[j5 + 4] * h4
            sv = kv[0] * h0 + kv[1] + kv[2] * h2 + kv[3] * h3 + kv[4] * h4 + hm * (hc + hm * self.hm_var) + r
            for k in range(5):
                x[j5 + k] = x0[k] + kv[k] * innov / sv
            if hold_b != 0:
                x[j5 + 3] = x0[3]
            self._clamp_state(p)
        for k in range(5):
            for m in range(5):
                pc[jp + 5 * k + m] -= kv[k] * kv[m] / sv
        hc = (hc + hm * self.hm_var) / sv
        for k in range(5):
            xm[j5 + k] -= kv[k] * hc
        if hold_b != 0:
            pc[jp + 18] += kv[3] * kv[3] / sv
            xm[j5 + 3] = c3

    def _clamp_state(self, p: int) -> None:
        j5 = 5 * p
        x = self.x
        if x[j5] < -0.05:
            x[j5] = -0.05
        elif x[j5] > 1.05:
            x[j5] = 1.05
        if x[j5 + 2] < -1.0:
            x[j5 + 2] = -1.0
        elif x[j5 + 2] > 1.0:
            x[j5 + 2] = 1.0
        bmax = B_MAX_C * self.cap_ah[p]
        if x[j5 + 3] < -bmax:
            x[j5 + 3] = -bmax
        elif x[j5 + 3] > bmax:
            x[j5 + 3] = bmax
        if x[j5 + 4] < RHO_MIN:
            x[j5 + 4] = RHO_MIN
        elif x[j5 + 4] > RHO_MAX:
            x[j5 + 4] = RHO_MAX

    def _update_cells(
        self, p: int, c0: int, c1: int, cur: float, r0n: float, base_var: float, scale: float
    ) -> None:
        """Scalar update of every cell's offset δ from the mean cell with its own voltage, less the cells'
        mean residual: what all cells share (hysteresis magnitude, model error) is the mean cell's."""
        j5 = 5 * p
        zb = self.x[j5]
        v1 = self.x[j5 + 1]
        h = self.x[j5 + 2]
        ir = self.x[j5 + 4] * r0n * (cur - self.x[j5 + 3])
        dv = R0_SPREAD * ir
        cvar = base_var + dv * dv
        cv = self.cell_v
        res = self.c_res
        esum = 0.0
        for c in range(c0, c1):
            self._lookup(zb + self.dz[c])  # unclamped, as in _update_mean
            self.c_hc[c] = self.l_docv + self.l_dm * h
            res[c] = cv[c] - (self.l_ocv + self.l_m * h + v1 + ir)
            esum += res[c]
        esum /= c1 - c0
        for c in range(c0, c1):
            hc = self.c_hc[c]
            pv = self.dz_var[c]
            sv = hc * hc * pv + (cvar + KAPPA * KAPPA * hc * hc) * scale
            k = pv * hc / sv
            self.dz[c] += k * (res[c] - esum)
            self.dz_var[c] = pv - k * hc * pv

    def _calibrations(self, p: int, c0: int, c1: int, cur: float, st: float) -> None:
        """Full at the end of CV charging (tail current) and empty at cut-off, each once per episode."""
        cv = self.cell_v
        tail = self.tail_i[p]
        if self.vmax[p] >= self.chg_v - self.full_margin and -tail < cur < tail:
            # the episode starts while still charging at the CV level (tail current flowing), or at rest on
            # the steep top of the OCV; a pack merely relaxing above the margin after a charge is not full
            if self.full_since[p] < UNSET_BELOW and (
                cur > FULL_TAIL_MIN * tail or self._soc_from_ocv(self.vmax[p]) >= FULL_REST_SOC
            ):
                self.full_since[p] = st
            if (
                self.full_done[p] == 0
                and self.full_since[p] > UNSET_BELOW
                and st - self.full_since[p] >= self.full_hold - TIME_EPS
            ):
                best = c0
                for c in range(c0, c1):
                    if cv[c] > cv[best]:
                        best = c
                self._calibrate(p, best, 1.0)
                self.full_done[p] = 1
                self._anchor(p, st, K_FULL)
        else:
            self.full_since[p] = UNSET
            self.full_done[p] = 0
        if self.vmin[p] <= self.empty_v and cur < self.rest_i:
            if self.empty_since[p] < UNSET_BELOW:
                self.empty_since[p] = st
            if self.empty_done[p] == 0 and st - self.empty_since[p] >= self.debounce - TIME_EPS:
                best = c0
                for c in range(c0, c1):
                    if cv[c] < cv[best]:
                        best = c
                self._calibrate(p, best, 0.0)
                self.empty_done[p] = 1
                self._anchor(p, st, K_EMPTY)
        else:
            self.empty_since[p] = UNSET
            self.empty_done[p] = 0

    def _calibrate(self, p: int, cell: int, target: float) -> None:
        """Cell `cell` is at SOC `target`. The pack's common offset enters the EKF as a measurement of z whose
        noise includes the systematic capacity error accumulated since the last reference, so the other
        states (the bias above all) take only their share; then z takes the rest of the offset and the
        cell's own offset is set exactly."""
        j5 = 5 * p
        jp = 25 * p
        x = self.x
        pc = self.pcov
        kv = self.kv
        delta = target - (x[j5] + self.dz[cell])
        q = (CAP_SD if self.cap_n[p] > 0 else CAP_SD_RATED) * self.thr[p]
        sv = pc[jp] + CAL_SD * CAL_SD + q * q
        for k in range(5):
            kv[k] = pc[jp + 5 * k]
        g = self.pxm[j5] / sv
        for k in range(5):
            x[j5 + k] += kv[k] * delta / sv
            self.pxm[j5 + k] -= kv[k] * g
            for m in range(5):
                pc[jp + 5 * k + m] -= kv[k] * kv[m] / sv
        self._clamp_state(p)
        x[j5] = target - self.dz[cell]  # the calibrated cell lands on target with its offset unchanged …
        if pc[jp] > CAL_SD * CAL_SD:  # … and z is as certain as the calibration (P stays PSD: D·P·D)
            a = math.sqrt(CAL_SD * CAL_SD / pc[jp])
            for k in range(5):
                pc[jp + k] *= a
                pc[jp + 5 * k] *= a
            self.pxm[j5] *= a
        self.dz_var[cell] = CAL_SD * CAL_SD
        self.thr[p] = 0.0

    def _anchor(self, p: int, st: float, kind: int) -> None:
        """Record an anchor event; certain ones are capacity reference points (ΔAh / ΔSOC between them)."""
        self.anchor_n[p] += 1
        self.anchor_kind[p] = kind
        self.anchor_t[p] = st
        if self.first_anchor_t[p] != self.first_anchor_t[p]:
            self.first_anchor_t[p] = st
        if self.pcov[25 * p] > ANCHOR_SD * ANCHOR_SD:
            return
        z = self.x[5 * p]
        dz = z - self.ref_z[p]
        if self.ref_ok[p] != 0 and (dz >= CAP_MIN_DZ or dz <= -CAP_MIN_DZ):
            q = (self.ah[p] - self.ref_ah[p]) / dz
            rated = self.cap_ah[p]
            if CAP_MIN * rated <= q <= CAP_MAX * rated:
                self.cap_est[p] += CAP_GAIN * (q - self.cap_est[p])
                self.cap_n[p] += 1
        self.ref_z[p] = z
        self.ref_ah[p] = self.ah[p]
        self.ref_ok[p] = 1
        self.thr[p] = 0.0

    def _latch(self, j: int, t: float, on: bool, off: bool, delay_on: float) -> bool:
        """Debounced Schmitt trigger: trips after `on` held `delay_on`, clears after `off` held debounce.

        Returns whether a timer is still running (the latch may change at a later `t` with the same input).
        """
        if self.lat_on[j] != 0:
            if off:
                if self.lat_pend[j] < UNSET_BELOW:
                    self.lat_pend[j] = t
                if t - self.lat_pend[j] >= self.debounce - TIME_EPS:
                    self.lat_on[j] = 0
                    self.lat_pend[j] = UNSET
                    self.alarm_version += 1
                    return False
                return True
            self.lat_pend[j] = UNSET
            return False
        if on:
            if self.lat_pend[j] < UNSET_BELOW:
                self.lat_pend[j] = t
            if t - self.lat_pend[j] >= delay_on - TIME_EPS:
                self.lat_on[j] = 1
                self.lat_since[j] = t
                self.lat_pend[j] = UNSET
                self.alarm_version += 1
                return False
            return True
        self.lat_pend[j] = UNSET
        return False

    # ---------------------------------------------------------------- system

    def _system_soc(self, all_packs: int) -> None:
        """Capacity-weighted SOC (Σ rated Ah × SOC / Σ rated Ah) over the packs in service, else online."""
        wsum = 0.0
        csum = 0.0
        for p in range(self.n_packs):
            if all_packs != 0 or (self.online[p] != 0 and self.admit[p] > 0.0):
                wsum += self.cap_ah[p] * self.soc_pack[p]
                csum += self.cap_ah[p]
        if csum <= 0.0 and all_packs == 0:
            for p in range(self.n_packs):
                if self.online[p] != 0:
                    wsum += self.cap_ah[p] * self.soc_pack[p]
                    csum += self.cap_ah[p]
        if csum > 0.0:
            self.soc_sys = wsum / csum

    def _share_limit(self, lim: memoryview[float], why: memoryview[int], which: int) -> float:
        """min over a set of packs of lim[p] / (share[p] / Σ share over the set); the set: SET_ADMITTED
        (admit > 0), SET_FULL (admit ≥ 1) or SET_ONLINE (every online pack). Binding pack and its reason go
        to ``cb_pack``/``cb_reason`` (−1 and FAULT for an empty set, whose limit is 0)."""
        ssum = 0.0
        for p in range(self.n_packs):
            if self._in_set(p, which):
                ssum += self.share[p]
        best = 0.0
        self.cb_pack = -1
        self.cb_reason = R_FAULT
        if ssum <= 0.0:
            return 0.0
        for p in range(self.n_packs):
            if self.share[p] > 0.0 and self._in_set(p, which):
                x = lim[p] * ssum / self.share[p]
                if self.cb_pack < 0 or x < best:
                    best = x
                    self.cb_pack = p
                    self.cb_reason = why[p]
        return best

    def _in_set(self, p: int, which: int) -> bool:
        if self.online[p] == 0:
            return False
        if which == SET_ADMITTED:
            return self.admit[p] > 0.0
        if which == SET_FULL:
            return self.admit[p] >= 1.0
        return True

    def _system(self, t: float, n_online: int) -> None:
        dt = 0.0
        if self.t_prev > UNSET_BELOW:
            dt = t - self.t_prev
            if dt < 0.0:
                dt = 0.0
            elif dt > MAX_RAMP_DT_S:
                dt = MAX_RAMP_DT_S
        self.n_online = n_online

        if n_online == 0:
            if self.comm_lost == 0:
                self.comm_lost = 1
                self.comm_lost_since = t
                self.alarm_version += 1
            self.ccl = 0.0
            self.dcl = 0.0
            self.ccl_reason = R_COMM_LOST
            self.dcl_reason = R_COMM_LOST
            self.cvl_reason = R_COMM_LOST
            self.dvl_reason = R_COMM_LOST
            self.ccl_pack = -1
            self.dcl_pack = -1
            self.n_admit = 0
            return
        if self.comm_lost != 0:
            self.comm_lost = 0
            self.alarm_version += 1

        self._system_soc(0)

        # CCL/DCL: the smallest (pack limit / its share of the current) over the packs in service; a pack
        # ramping in after a hot-add (0 < admit < 1) blends the limit from "without it" to "with it"
        first = -1
        n_in = 0
        a_min = 1.0
        ramp_p = -1
        for p in range(self.n_packs):
            if self.online[p] == 0:
                continue
            if first < 0:
                first = p
            if self.admit[p] > 0.0:
                n_in += 1
                if self.admit[p] < a_min:
                    a_min = self.admit[p]
                    ramp_p = p
        self.n_admit = n_in
        mode = SET_ADMITTED if n_in > 0 else SET_ONLINE  # none in service: 0, with the weakest pack's reason
        ccl = self._share_limit(self.ccl_p, self.ccl_r, mode)
        ccl_r = self.cb_reason
        ccl_pk = self.cb_pack
        dcl = self._share_limit(self.dcl_p, self.dcl_r, mode)
        dcl_r = self.cb_reason
        dcl_pk = self.cb_pack
        if n_in == 0:
            ccl = 0.0
            dcl = 0.0
        elif ramp_p >= 0:
            old = self._share_limit(self.ccl_p, self.ccl_r, SET_FULL)
            if ccl > old:
                ccl = old + a_min * (ccl - old)
                ccl_r = R_RECOVERY
                ccl_pk = ramp_p
            old = self._share_limit(self.dcl_p, self.dcl_r, SET_FULL)
            if dcl > old:
                dcl = old + a_min * (dcl - old)
                dcl_r = R_RECOVERY
                dcl_pk = ramp_p

        # increases are rate-limited (full scale over recovery_ramp_s); decreases are immediate
        if self.ramp_s > 0.0:
            cap = self.ccl + n_in * self.max_chg * dt / self.ramp_s
            if ccl > cap:
                ccl_r = ramp_reason(ccl - cap, ccl_r, self.ccl_reason, n_in * self.max_chg)
                ccl = cap
            cap = self.dcl + n_in * self.max_dis * dt / self.ramp_s
            if dcl > cap:
                dcl_r = ramp_reason(dcl - cap, dcl_r, self.dcl_reason, n_in * self.max_dis)
                dcl = cap
        self.ccl = ccl
        self.dcl = dcl
        self.ccl_reason = ccl_r
        self.dcl_reason = dcl_r
        self.ccl_pack = ccl_pk
        self.dcl_pack = dcl_pk

        # CVL/DVL from the first online pack's cell count and the charge stage
        self._charge_voltage(t, dt, first)

    def _charge_voltage(self, t: float, dt: float, first: int) -> None:
        """CVL through bulk → absorption → float (and back to bulk), with the cell-overshoot pull-down.

        Bulk and absorption hold the charge voltage; absorption starts when an online pack's mean cell is
        within ``full_voltage_margin_v`` of it and ends on the tail current (|I| below the summed full-charge
        tail currents for ``full_hold_s`` at that voltage) or after ``absorption_time_max_s`` spent at it.
        Float holds the float voltage until the system SOC falls below ``rebulk_soc`` or a pack's cell
        spread reaches ``rebulk_spread_v``. Every stage pulls CVL down by the summed excess of the cells over
        their target (the stage's voltage + (v_target − charge voltage)), and to at most the pack's
        sum of cells clipped to that target; CVL never drops below DVL,
        so it is never 0 (Victron reads 0 as "no limit"). Increases are rate-limited, decreases immediate."""
        n = self.cell_off[first + 1] - self.cell_off[first]
        vtop = 0.0
        spread = 0.0
        cur = 0.0
        tail = 0.0
        for p in range(self.n_packs):
            if self.online[p] == 0:
                continue
            if self.vmean[p] > vtop:
                vtop = self.vmean[p]
            if self.vmax[p] - self.vmin[p] > spread:
                spread = self.vmax[p] - self.vmin[p]
            cur += self.cur[p]
            tail += self.tail_i[p]
        at_cv = vtop >= self.chg_v - self.full_margin
        stage = self.stage
        if stage == S_BULK:
            if at_cv:
                stage = S_ABSORPTION
                self.abs_time = 0.0
                self.tail_since = UNSET
        elif stage == S_ABSORPTION:
            if at_cv:
                self.abs_time += dt
                if -tail < cur < tail:
                    if self.tail_since < UNSET_BELOW:
                        self.tail_since = t
                else:
                    self.tail_since = UNSET
            else:
                self.tail_since = UNSET
            done = self.tail_since > UNSET_BELOW and t - self.tail_since >= self.full_hold - TIME_EPS
            if done or self.abs_time >= self.abs_max - TIME_EPS:
                stage = S_FLOAT
        else:
            # an imbalance re-bulks only once float has seen the spread below the threshold: a pack that
            # ends absorption unbalanced would otherwise cycle absorption → float → bulk every full_hold_s
            if spread < self.rebulk_spread:
                self.float_armed = 1
            if self.soc_sys < self.rebulk_soc or (self.float_armed != 0 and spread >= self.rebulk_spread):
                stage = S_BULK
        if stage != self.stage:
            self.stage = stage
            self.stage_since = t
            self.float_armed = 0
        target = self.float_v if stage == S_FLOAT else self.chg_v
        dvl = self.dis_v * n
        cvl = target * n
        cvl_r = R_CONFIG
        # a pack with cells over the target: CVL at most the sum of its cells clipped to the target, so the
        # charger holds the others where they are instead of pushing the high cell further (an unbalanced
        # pack never reaches target × cells, and "target × cells − excess" alone would not bind)
        lim = self.v_target - (self.chg_v - target)
        clip = cvl
        excess = 0.0
        for p in range(self.n_packs):
            if self.online[p] == 0:
                continue
            if stage == S_FLOAT:  # the kernel's excess was summed over v_target: measure it from lim
                x = 0.0
                for c in range(self.cell_off[p], self.cell_off[p + 1]):
                    if self.cell_v[c] > lim:
                        x += self.cell_v[c] - lim
            else:
                x = self.excess[p]
            if x > 0.0:
                excess = max(excess, x)
                clip = min(clip, self.vmean[p] * (self.cell_off[p + 1] - self.cell_off[p]) - x)
        if excess > 0.0:
            cvl = min(cvl - excess, clip)
            cvl_r = R_CELL_VOLTAGE_HIGH
        if cvl < dvl:
            cvl = dvl
        if self.have_data != 0 and self.ramp_s > 0.0:
            cap = self.cvl + (self.chg_v - self.dis_v) * n * dt / self.ramp_s
            if cvl > cap:
                cvl_r = ramp_reason(cvl - cap, cvl_r, self.cvl_reason, (self.chg_v - self.dis_v) * n)
                cvl = cap
        self.have_data = 1
        self.cvl = cvl
        self.dvl = dvl
        self.cvl_reason = cvl_r
        self.dvl_reason = R_CONFIG
