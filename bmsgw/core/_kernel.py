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
)
A_OV = 0
A_UV = 1
A_OT = 2
A_UT = 3
A_CUT = 4
A_OCC = 5
A_ODC = 6
A_BMS = 7

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

# Latches: one debounced Schmitt trigger per pack and row. Columns:
# (alarm code, level, zeroes charge, zeroes discharge, limit reason, detail, BmsFlags bit or 0).
# The order is the priority for the reason of a zeroed limit (the highest level wins, then the first row).
LATCHES: tuple[tuple[int, int, int, int, int, str, int], ...] = (
    (A_OV, WARNING, 0, 0, R_CELL_VOLTAGE_HIGH, "", 0),
    (A_OV, ALARM, 1, 0, R_CELL_OVERVOLTAGE, "", 0),
    (A_UV, WARNING, 0, 0, R_CELL_VOLTAGE_LOW, "", 0),
    (A_UV, ALARM, 0, 1, R_CELL_UNDERVOLTAGE, "", 0),
    (A_OT, WARNING, 0, 0, R_TEMPERATURE_HIGH, "charge", 0),
    (A_OT, ALARM, 1, 0, R_OVERTEMPERATURE, "charge", 0),
    (A_OT, WARNING, 0, 0, R_TEMPERATURE_HIGH, "discharge", 0),
    (A_OT, ALARM, 1, 1, R_OVERTEMPERATURE, "discharge", 0),
    (A_UT, WARNING, 0, 0, R_TEMPERATURE_LOW, "discharge", 0),
    (A_UT, ALARM, 0, 1, R_UNDERTEMPERATURE, "discharge", 0),
    (A_CUT, WARNING, 0, 0, R_TEMPERATURE_LOW, "charge", 0),
    (A_CUT, ALARM, 1, 0, R_COLD_CHARGE, "charge", 0),
    (A_OCC, ALARM, 1, 0, R_OVERCURRENT, "", 0),
    (A_ODC, ALARM, 0, 1, R_OVERCURRENT, "", 0),
    (A_OV, ALARM, 1, 0, R_CELL_OVERVOLTAGE, "reported by BMS", F_ALARM_CELL_OV),
    (A_UV, ALARM, 0, 1, R_CELL_UNDERVOLTAGE, "reported by BMS", F_ALARM_CELL_UV),
    (A_OT, ALARM, 1, 1, R_OVERTEMPERATURE, "reported by BMS", F_ALARM_OVERTEMP),
    (A_UT, ALARM, 1, 1, R_UNDERTEMPERATURE, "reported by BMS", F_ALARM_UNDERTEMP),
    (A_OCC, ALARM, 1, 0, R_OVERCURRENT, "reported by BMS", F_ALARM_CHARGE_OC),
    (A_ODC, ALARM, 0, 1, R_OVERCURRENT, "reported by BMS", F_ALARM_DISCHARGE_OC),
    (A_ODC, ALARM, 1, 1, R_OVERCURRENT, "short circuit, reported by BMS", F_ALARM_SHORT_CIRCUIT),
    (A_BMS, ALARM, 1, 1, R_FAULT, "internal alarm, reported by BMS", F_ALARM_INTERNAL),
    (A_BMS, FAULT, 1, 1, R_FAULT, "reported by BMS", F_BMS_FAULT),
)
L_OV_WARN = 0
L_OV_ALARM = 1
L_UV_WARN = 2
L_UV_ALARM = 3
L_OTC_WARN = 4
L_OTC_ALARM = 5
L_OTD_WARN = 6
L_OTD_ALARM = 7
L_UTD_WARN = 8
L_UTD_ALARM = 9
L_CUT_WARN = 10
L_CUT_ALARM = 11
L_OCC = 12
L_ODC = 13
L_FLAGS0 = 14  # first latch driven by a BmsFlags bit
N_LATCH = 23

# Anchor kinds (ANCHOR_KINDS[k] is the name the wrapper reports).
ANCHOR_KINDS: tuple[str, ...] = ("", "converged", "rest", "full", "empty")
K_NONE = 0
K_CONVERGED = 1
K_REST = 2
K_FULL = 3
K_EMPTY = 4

# Estimator modes (CoreParams.estimator).
EST_EKF = 0
EST_COUNTING = 1

# Tuning constants (behaviour summarised in core.py's docstring; deliberately not configuration).
MAX_GAP_S = 5.0  # no coulomb counting across sample gaps longer than this
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
BAL_WINDOW_V = 0.100  # balance only cells at or above cell_v_max_warn − this
BAL_DELTA_V = 0.020  # … that sit more than this above the pack's lowest cell
MASK_MAX_CELLS = 62  # packs up to this size get their balance mask as one int64
TIME_EPS = 1e-9  # tolerance on debounce comparisons (sums of 0.1 s steps)
UNSET = -1.0e300  # "no time": timers that are not running
UNSET_BELOW = -1.0e299
NAN = float("nan")

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
    "bal_window_v": BAL_WINDOW_V,
    "bal_delta_v": BAL_DELTA_V,
    "mask_max_cells": MASK_MAX_CELLS,
}


def _f64(n: int) -> memoryview[float]:
    return memoryview(bytearray(8 * (n if n > 0 else 1))).cast("d")


def _i32(n: int) -> memoryview[int]:
    return memoryview(bytearray(4 * (n if n > 0 else 1))).cast("i")


def _i64(n: int) -> memoryview[int]:
    return memoryview(bytearray(8 * (n if n > 0 else 1))).cast("q")


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
        # cell state: output SOC, offset from the pack's mean cell and its variance
        self.soc = _f64(nc)
        self.dz = _f64(nc)
        self.dz_var = _f64(nc)
        self.bal = _i32(nc)
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
        self.mask = _i64(n_packs)
        # latches, pack-major
        self.lat_on = _i32(n_packs * N_LATCH)
        self.lat_since = _f64(n_packs * N_LATCH)
        self.lat_pend = _f64(n_packs * N_LATCH)
        for k in range(n_packs * N_LATCH):
            self.lat_pend[k] = UNSET
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
        self.brow = _f64(self.n_grid)  # scratch: the OCV row at the selected temperature
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
        self.have_data = 0
        self.comm_lost = 0
        self.comm_lost_since = 0.0
        self.alarm_version = 0
        self.t_prev = UNSET
        self.mask_cells = MASK_MAX_CELLS

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
                self._pack(p, t)
            else:
                self.prev_on[p] = 0
        self._system(t, n_online)
        self.t_prev = t

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

        # cell extremes and the CVL excess
        vmin = cv[c0]
        vmax = cv[c0]
        excess = 0.0
        for c in range(c0, c1):
            v = cv[c]
            if v < vmin:
                vmin = v
            if v > vmax:
                vmax = v
            if v > self.v_max_warn:
                excess += v - self.v_max_warn
        self.vmin[p] = vmin
        self.vmax[p] = vmax
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

        # balancing: not while discharging; top cells only
        bal_from = self.v_max_warn - BAL_WINDOW_V
        bal_ok = cur > -self.rest_i
        mask = 0
        one = 1
        small = c1 - c0 <= MASK_MAX_CELLS
        for c in range(c0, c1):
            if bal_ok and cv[c] >= bal_from and cv[c] - vmin > BAL_DELTA_V:
                self.bal[c] = 1
                if small:
                    mask |= one << (c - c0)
            else:
                self.bal[c] = 0
        self.mask[p] = mask

        # protection latches
        # protection latches (`pend` collects whether any debounce timer is still running)
        j = p * N_LATCH
        vh = self.v_hyst
        th = self.t_hyst
        db = self.debounce
        pend = self._latch(j + L_OV_WARN, t, vmax >= self.v_max_warn, vmax < self.v_max_warn - vh, db)
        pend |= self._latch(j + L_OV_ALARM, t, vmax >= self.v_max_alarm, vmax < self.v_max_alarm - vh, db)
        pend |= self._latch(j + L_UV_WARN, t, vmin <= self.v_min_warn, vmin > self.v_min_warn + vh, db)
        pend |= self._latch(j + L_UV_ALARM, t, vmin <= self.v_min_alarm, vmin > self.v_min_alarm + vh, db)
        if has_t:
            warn = self.chg_t_max - self.t_margin
            pend |= self._latch(j + L_OTC_WARN, t, tmax >= warn, tmax < warn - th, db)
            charging = cur >= self.rest_i
            lim = self.chg_t_max
            pend |= self._latch(j + L_OTC_ALARM, t, tmax >= lim and charging, tmax < lim - th, db)
            warn = self.dis_t_max - self.t_margin
            pend |= self._latch(j + L_OTD_WARN, t, tmax >= warn, tmax < warn - th, db)
            lim = self.dis_t_max
            pend |= self._latch(j + L_OTD_ALARM, t, tmax >= lim, tmax < lim - th, db)
            warn = self.dis_t_min + self.t_margin
            pend |= self._latch(j + L_UTD_WARN, t, tmin <= warn, tmin > warn + th, db)
            lim = self.dis_t_min
            pend |= self._latch(j + L_UTD_ALARM, t, tmin <= lim, tmin > lim + th, db)
            warn = self.chg_t_min + self.t_margin
            pend |= self._latch(j + L_CUT_WARN, t, tmin < warn, tmin >= warn + th, db)
            lim = self.chg_t_min
            pend |= self._latch(j + L_CUT_ALARM, t, tmin < lim, tmin >= lim + th, db)
        else:
            for k in range(L_OTC_WARN, L_CUT_ALARM + 1):
                pend |= self._latch(j + k, t, False, True, db)
        lim = self.oc_factor * self.max_chg
        pend |= self._latch(j + L_OCC, t, cur > lim, cur <= self.max_chg, self.oc_time)
        lim = self.oc_factor * self.max_dis
        pend |= self._latch(j + L_ODC, t, -cur > lim, -cur <= self.max_dis, self.oc_time)
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

        if zc >= 0:
            self.ccl_p[p] = 0.0
            self.ccl_r[p] = zc
        else:
            lim = self.max_chg
            reason = R_CONFIG
            x = self.max_chg * derate_high(vmax, self.v_max_warn, self.v_max_alarm)
            if x < lim:
                lim = x
                reason = R_CELL_VOLTAGE_HIGH
            if has_t:
                x = self.max_chg * derate_high(tmax, self.chg_t_max - self.t_margin, self.chg_t_max)
                if x < lim:
                    lim = x
                    reason = R_TEMPERATURE_HIGH
                x = self.max_chg * derate_low(tmin, self.chg_t_min, self.chg_t_min + self.t_margin)
                if x < lim:
                    lim = x
                    reason = R_TEMPERATURE_LOW
            self.ccl_p[p] = lim
            self.ccl_r[p] = reason

        if zd >= 0:
            self.dcl_p[p] = 0.0
            self.dcl_r[p] = zd
        else:
            lim = self.max_dis
            reason = R_CONFIG
            x = self.max_dis * derate_low(vmin, self.v_min_alarm, self.v_min_warn)
            if x < lim:
                lim = x
                reason = R_CELL_VOLTAGE_LOW
            if has_t:
                x = self.max_dis * derate_high(tmax, self.dis_t_max - self.t_margin, self.dis_t_max)
                if x < lim:
                    lim = x
                    reason = R_TEMPERATURE_HIGH
                x = self.max_dis * derate_low(tmin, self.dis_t_min, self.dis_t_min + self.t_margin)
                if x < lim:
                    lim = x
                    reason = R_TEMPERATURE_LOW
            self.dcl_p[p] = lim
            self.dcl_r[p] = reason

    # ---------------------------------------------------------------- SOC estimator

    def _soc_step(
        self, p: int, c0: int, c1: int, s0: int, s1: int, cur: float, st: float, has_t: bool
    ) -> None:
        """Advance pack `p`'s SOC estimate to its sample time `st` (see the module docstring)."""
        cv = self.cell_v
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
                vsum = 0.0
                for c in range(c0, c1):
                    vsum += cv[c]
                vbar = vsum / n
                sv2 = self.sigma_v * self.sigma_v
                if self.estimator == EST_EKF:
                    scale = self.tc_s / dt if dt < self.tc_s else 1.0
                    self._update_mean(p, vbar, cur, r0n, sv2 / n + self.sigma_m * self.sigma_m, scale, 1)
                    self._update_cells(p, c0, c1, cur, r0n, sv2, scale)
                if self._rest_timer(p, resting, st, 0) != 0:  # rested for rest_time_s (again): OCV reset
                    self._update_mean(
                        p, vbar, cur, r0n, sv2 / n + REST_SIGMA_V * REST_SIGMA_V, 1.0, ANCHOR_ITERS
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
        """Track the rest period; returns 1 when an OCV reset is due (rest_time_s of rest, then every
        rest_time_s while the rest lasts). `restart` = 1: a new timer from `st` (first sample, gap)."""
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
            return 1
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

    def _lookup(self, z: float) -> None:
        """OCV, dOCV/dz, hysteresis M and dM/dz at SOC `z` (in 0..1) for the selected temperature."""
        g = self.soc_grid
        n = self.n_grid
        lo = bracket(z, g, n)
        g0 = g[lo]
        dg = g[lo + 1] - g0
        f = (z - g0) / dg
        w = self.tw
        a = self.tt0 * n + lo
        b = self.tt1 * n + lo
        t = self.ocv_tab
        o0 = t[a] + w * (t[b] - t[a])
        o1 = t[a + 1] + w * (t[b + 1] - t[a + 1])
        self.l_ocv = o0 + (o1 - o0) * f
        self.l_docv = (o1 - o0) / dg
        t = self.hyst_tab
        o0 = t[a] + w * (t[b] - t[a])
        o1 = t[a + 1] + w * (t[b + 1] - t[a + 1])
        self.l_m = o0 + (o1 - o0) * f
        self.l_dm = (o1 - o0) / dg

    def _soc_from_ocv(self, v: float) -> float:
        """SOC whose OCV (selected temperature) is `v`, clamped to the table's SOC range."""
        t = self.ocv_tab
        row = self.brow
        a = self.tt0 * self.n_grid
        b = self.tt1 * self.n_grid
        for j in range(self.n_grid):
            row[j] = t[a + j] + self.tw * (t[b + j] - t[a + j])
        return interp(v, row, self.soc_grid, self.n_grid)

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
        dead = H_DEADBAND_C * self.cap_ah[p]
        sg = 0.0
        aib = ib
        if ib > dead:
            sg = 1.0
        elif ib < -dead:
            sg = -1.0
        if aib < 0.0:
            aib = -aib
        ahy = math.exp(-self.gamma * aib * dt / (3600.0 * cap))
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
        aic = ic if ic >= 0.0 else -ic
        si = self.sig_i[p]
        q = CAP_SD * ek * aic
        pc[jp] += 0.5 * (si * ek) * (si * ek) + q * q
        self.thr[p] += ek * aic
        q = r1 * (1.0 - a1)
        pc[jp + 6] += q * q * (si * si + V1_REL * V1_REL * ic * ic)
        pc[jp + 12] += H_RW * H_RW * dt
        q = BIAS_RW_C * self.cap_ah[p]
        pc[jp + 18] += q * q * dt
        pc[jp + 24] += RHO_RW * RHO_RW * dt
        q = CELL_CAP_SD * ek * aic
        q = q * q + CELL_RW * CELL_RW * dt
        for c in range(c0, c1):
            self.dz_var[c] += q

    def _update_mean(
        self, p: int, v: float, cur: float, r0n: float, base_var: float, scale: float, iters: int
    ) -> None:
        """Measurement update of the mean-cell EKF with the mean cell voltage `v`; `iters` > 1 makes it an
        iterated EKF (relinearised at each new estimate), used for anchors far from the prior."""
        j5 = 5 * p
        jp = 25 * p
        x = self.x
        pc = self.pcov
        kv = self.kv
        x0 = self.x0
        for k in range(5):
            x0[k] = x[j5 + k]
        h0 = 0.0
        h2 = 0.0
        h3 = 0.0
        h4 = 0.0
        sv = 1.0
        for _it in range(iters):
            z = x[j5]
            if z < 0.0:
                z = 0.0
            elif z > 1.0:
                z = 1.0
            self._lookup(z)
            h = x[j5 + 2]
            rho = x[j5 + 4]
            ic = cur - x[j5 + 3]
            h0 = self.l_docv + self.l_dm * h
            h2 = self.l_m
            h3 = -rho * r0n
            h4 = r0n * ic
            innov = v - (self.l_ocv + self.l_m * h + x[j5 + 1] + rho * r0n * ic)
            # iterated form: innovation about the prior, linearised at the current estimate
            innov -= h0 * (x0[0] - x[j5]) + (x0[1] - x[j5 + 1]) + h2 * (x0[2] - x[j5 + 2])
            innov -= h3 * (x0[3] - x[j5 + 3]) + h4 * (x0[4] - x[j5 + 4])
            r = (base_var + KAPPA * KAPPA * h0 * h0) * scale
            for k in range(5):
                q = jp + 5 * k
                kv[k] = pc[q] * h0 + pc[q + 1] + pc[q + 2] * h2 + pc[q + 3] * h3 + pc[q + 4] * h4
            sv = kv[0] * h0 + kv[1] + kv[2] * h2 + kv[3] * h3 + kv[4] * h4 + r
            for k in range(5):
                x[j5 + k] = x0[k] + kv[k] * innov / sv
            self._clamp_state(p)
        for k in range(5):
            for m in range(5):
                pc[jp + 5 * k + m] -= kv[k] * kv[m] / sv

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
        """Scalar update of every cell's offset δ from the mean cell with its own voltage."""
        j5 = 5 * p
        zb = self.x[j5]
        v1 = self.x[j5 + 1]
        h = self.x[j5 + 2]
        ir = self.x[j5 + 4] * r0n * (cur - self.x[j5 + 3])
        dv = R0_SPREAD * ir
        cvar = base_var + dv * dv
        cv = self.cell_v
        for c in range(c0, c1):
            z = zb + self.dz[c]
            if z < 0.0:
                z = 0.0
            elif z > 1.0:
                z = 1.0
            self._lookup(z)
            hc = self.l_docv + self.l_dm * h
            pv = self.dz_var[c]
            sv = hc * hc * pv + (cvar + KAPPA * KAPPA * hc * hc) * scale
            k = pv * hc / sv
            self.dz[c] += k * (cv[c] - (self.l_ocv + self.l_m * h + v1 + ir))
            self.dz_var[c] = pv - k * hc * pv

    def _calibrations(self, p: int, c0: int, c1: int, cur: float, st: float) -> None:
        """Full at the end of CV charging (tail current) and empty at cut-off, each once per episode."""
        cv = self.cell_v
        tail = self.tail_i[p]
        if self.vmax[p] >= self.chg_v - self.full_margin and -tail < cur < tail:
            if self.full_since[p] < UNSET_BELOW:
                self.full_since[p] = st
            if self.full_done[p] == 0 and st - self.full_since[p] >= self.full_hold - TIME_EPS:
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
        for k in range(5):
            x[j5 + k] += kv[k] * delta / sv
            for m in range(5):
                pc[jp + 5 * k + m] -= kv[k] * kv[m] / sv
        self._clamp_state(p)
        x[j5] = target - self.dz[cell]  # the calibrated cell lands on target with its offset unchanged …
        if pc[jp] > CAL_SD * CAL_SD:  # … and z is as certain as the calibration (P stays PSD: D·P·D)
            a = math.sqrt(CAL_SD * CAL_SD / pc[jp])
            for k in range(5):
                pc[jp + k] *= a
                pc[jp + 5 * k] *= a
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
        wsum = 0.0
        csum = 0.0
        for p in range(self.n_packs):
            if all_packs != 0 or self.online[p] != 0:
                wsum += self.cap_ah[p] * self.soc_pack[p]
                csum += self.cap_ah[p]
        if csum > 0.0:
            self.soc_sys = wsum / csum

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
            return
        if self.comm_lost != 0:
            self.comm_lost = 0
            self.alarm_version += 1

        self._system_soc(0)

        # CCL/DCL: n_online × the weakest online pack
        ccl = 0.0
        dcl = 0.0
        ccl_r = R_CONFIG
        dcl_r = R_CONFIG
        first = -1
        excess = 0.0
        for p in range(self.n_packs):
            if self.online[p] == 0:
                continue
            if first < 0:
                first = p
                ccl = self.ccl_p[p]
                ccl_r = self.ccl_r[p]
                dcl = self.dcl_p[p]
                dcl_r = self.dcl_r[p]
            else:
                if self.ccl_p[p] < ccl:
                    ccl = self.ccl_p[p]
                    ccl_r = self.ccl_r[p]
                if self.dcl_p[p] < dcl:
                    dcl = self.dcl_p[p]
                    dcl_r = self.dcl_r[p]
            if self.excess[p] > excess:
                excess = self.excess[p]
        ccl = ccl * n_online
        dcl = dcl * n_online

        # increases are rate-limited (full scale over recovery_ramp_s); decreases are immediate
        if self.ramp_s > 0.0:
            cap = self.ccl + n_online * self.max_chg * dt / self.ramp_s
            if ccl > cap:
                ccl = cap
                ccl_r = R_RECOVERY
            cap = self.dcl + n_online * self.max_dis * dt / self.ramp_s
            if dcl > cap:
                dcl = cap
                dcl_r = R_RECOVERY
        self.ccl = ccl
        self.dcl = dcl
        self.ccl_reason = ccl_r
        self.dcl_reason = dcl_r

        # CVL/DVL from the first online pack's cell count; CVL pulled down by the cell excess
        n = self.cell_off[first + 1] - self.cell_off[first]
        dvl = self.dis_v * n
        cvl = self.chg_v * n
        cvl_r = R_CONFIG
        if excess > 0.0:
            cvl = cvl - excess
            cvl_r = R_CELL_VOLTAGE_HIGH
        if cvl < dvl:
            cvl = dvl
        if self.have_data != 0 and self.ramp_s > 0.0:
            cap = self.cvl + (self.chg_v - self.dis_v) * n * dt / self.ramp_s
            if cvl > cap:
                cvl = cap
                cvl_r = R_RECOVERY
        self.have_data = 1
        self.cvl = cvl
        self.dvl = dvl
        self.cvl_reason = cvl_r
        self.dvl_reason = R_CONFIG
