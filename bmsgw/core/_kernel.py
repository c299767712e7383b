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
each pack's sample time ``s_t`` drives coulomb counting and the rest timer.
"""

from __future__ import annotations

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

# Tuning constants (behaviour summarised in core.py's docstring; deliberately not configuration).
MAX_GAP_S = 5.0  # no coulomb counting across sample gaps longer than this
MAX_RAMP_DT_S = 5.0  # a ramp never advances more than this per step (sparse steps do not jump)
OCV_TOL_V = 0.020  # rest correction trusts OCV only to ±this (LFP hysteresis + relaxation)
OCV_BLEND_TAU_S = 60.0  # time constant of the rest correction towards the OCV band
BAL_WINDOW_V = 0.100  # balance only cells at or above cell_v_max_warn − this
BAL_DELTA_V = 0.020  # … that sit more than this above the pack's lowest cell
MASK_MAX_CELLS = 62  # packs up to this size get their balance mask as one int64
TIME_EPS = 1e-9  # tolerance on debounce comparisons (sums of 0.1 s steps)
UNSET = -1.0e300  # "no time": timers that are not running
UNSET_BELOW = -1.0e299

# The constants above are C globals once compiled (not importable); this is their Python-visible copy.
TUNING: dict[str, float] = {
    "max_gap_s": MAX_GAP_S,
    "max_ramp_dt_s": MAX_RAMP_DT_S,
    "ocv_tol_v": OCV_TOL_V,
    "ocv_blend_tau_s": OCV_BLEND_TAU_S,
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
    lo = 0
    hi = n - 1
    while hi - lo > 1:
        mid = (lo + hi) >> 1
        if xs[mid] <= x:
            lo = mid
        else:
            hi = mid
    return ys[lo] + (ys[hi] - ys[lo]) * (x - xs[lo]) / (xs[hi] - xs[lo])


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
        r0_ohm_ah: float,
        nominal_v: float,
        ocv_soc: memoryview[float],
        ocv_v: memoryview[float],
        initial_soc: memoryview[float] | None,
    ) -> None:
        n_packs = len(params.cells)
        self.n_packs = n_packs
        self.n_ocv = len(ocv_soc)
        self.ocv_soc = ocv_soc
        self.ocv_v = ocv_v

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

        self.cell_off = _i32(n_packs + 1)
        self.sens_off = _i32(n_packs + 1)
        self.cap_ah = _f64(n_packs)
        self.r0 = _f64(n_packs)
        nc = 0
        ns = 0
        for p in range(n_packs):
            self.cell_off[p] = nc
            self.sens_off[p] = ns
            nc += int(params.cells[p])
            ns += int(params.sensors[p])
            self.cap_ah[p] = float(params.capacity_ah[p])
            self.r0[p] = float(r0_ohm_ah) / float(params.capacity_ah[p])
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
        # cell state
        self.soc = _f64(nc)
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
        for p in range(n_packs):
            self.rest_since[p] = UNSET
            self.ccl_r[p] = R_COMM_LOST
            self.dcl_r[p] = R_COMM_LOST
            if initial_soc is not None:
                self.soc_known[p] = 1
                for c in range(self.cell_off[p], self.cell_off[p + 1]):
                    self.soc[c] = initial_soc[p]
                self.soc_pack[p] = initial_soc[p]

        # system outputs: the safe state until data arrives
        cells0 = float(params.cells[0])
        self.soc_sys = 0.0
        if initial_soc is not None:
            self._system_soc(1)
        self.ccl = 0.0
        self.dcl = 0.0
        self.cvl = cells0 * float(nominal_v)
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

        # SOC: OCV start, coulomb counting (trapezoid over sample times), rest correction
        resting = -self.rest_i < cur < self.rest_i
        if self.seen[p] == 0:
            self.seen[p] = 1
            if self.soc_known[p] == 0:
                self.soc_known[p] = 1
                ir = cur * self.r0[p]
                for c in range(c0, c1):
                    soc[c] = interp(cv[c] - ir, self.ocv_v, self.ocv_soc, self.n_ocv)
            self.last_t[p] = st
            self.last_i[p] = cur
            self.rest_since[p] = st if resting else UNSET
        elif st != self.last_t[p]:
            dt = st - self.last_t[p]
            if 0.0 < dt <= MAX_GAP_S:
                dsoc = 0.5 * (self.last_i[p] + cur) * dt / (3600.0 * self.cap_ah[p])
                for c in range(c0, c1):
                    x = soc[c] + dsoc
                    if x < 0.0:
                        x = 0.0
                    elif x > 1.0:
                        x = 1.0
                    soc[c] = x
                if not resting:
                    self.rest_since[p] = UNSET
                elif self.rest_since[p] < UNSET_BELOW:
                    self.rest_since[p] = st
                elif st - self.rest_since[p] >= self.rest_time:
                    self._rest_correct(c0, c1, dt / (OCV_BLEND_TAU_S + dt))
            else:
                # gap or time going backwards: unknown current in between, restart the rest timer
                self.rest_since[p] = st if resting else UNSET
            self.last_t[p] = st
            self.last_i[p] = cur

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

    def _rest_correct(self, c0: int, c1: int, w: float) -> None:
        """Pull each rested cell's SOC towards the band its OCV allows (±OCV_TOL_V)."""
        for c in range(c0, c1):
            v = self.cell_v[c]
            lo = interp(v - OCV_TOL_V, self.ocv_v, self.ocv_soc, self.n_ocv)
            hi = interp(v + OCV_TOL_V, self.ocv_v, self.ocv_soc, self.n_ocv)
            x = self.soc[c]
            if x < lo:
                self.soc[c] = x + w * (lo - x)
            elif x > hi:
                self.soc[c] = x + w * (hi - x)

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
