"""Estimation & protection core: pack samples in, SOC per cell, limits with reasons and alarms out.

Deterministic and free of I/O: the caller passes the time. All numeric work happens in
:mod:`bmsgw.core._kernel` (compiled with Cython when available); this module converts between the shared
data model and the kernel's flat buffers.

Behaviour in one place (see the kernel for the details):

* **SOC** per cell ("bar-delta" EKF): per pack, an EKF on the mean cell with x = [SOC, RC voltage,
  hysteresis h, current-sensor bias, R0 scale], model V = OCV(z, T) + M(z, T)·h + v1 + R0·(I − b) from the
  chemistry profile (temperature = mean of the pack's sensors; OCV and M tables at 5/25/45 °C for LFP);
  per cell, a scalar filter on the cell's offset from the mean cell, updated with its own voltage. Counting
  uses the trapezoid between successive sample times (none across gaps > 5 s), η on charge, and the
  capacity estimate. Noise: process noise from ``current_sigma_a`` and the capacity uncertainty,
  measurement noise from ``voltage_sigma_v`` + the model's fit error, which is treated as correlated over the
  profile's ``model_corr_s`` (faster sampling does not make the filter more confident). The start is the
  IR-compensated OCV of each cell (σ from the OCV slope and hysteresis) unless ``initial_soc`` is given.
  Anchors: after ``rest_time_s`` with the 10 s current average below ``rest_current_a`` an iterated-EKF
  OCV reset (every ``rest_time_s`` while the rest lasts); full when the highest cell is within
  ``full_voltage_margin_v`` of the charge voltage and |I| < ``full_tail_current_a`` for ``full_hold_s``
  (that cell → 1); empty when the lowest cell is at or below ``empty_voltage_cell_v`` while not charging
  for ``debounce_s`` (that cell → 0). A calibration is a measurement of the mean cell's SOC, so the bias
  learns from it through the SOC–bias covariance (minus the share the capacity error since the last
  reference explains); far-apart certain anchors (ΔSOC ≥ 0.4) give a capacity sample ΔAh/ΔSOC. The bias
  is observable wherever the OCV has slope (the SOC drift it causes shows in the voltage) and at anchors;
  on a flat LFP plateau only via anchors.
  ``estimator="counting"`` keeps the anchors but skips the voltage updates.
  Pack SOC = soc_min / (soc_min + 1 − soc_max); system SOC = capacity-weighted over online packs.
* **Protection**: debounced Schmitt triggers per pack (trip after the condition held ``debounce_s``,
  ``overcurrent_time_s`` for overcurrent; clear after the value held inside limit ∓ hysteresis for
  ``debounce_s``). Overtemperature has a charge side (trips only while charging, |I| ≥ rest current,
  zeroes CCL) and a discharge side (zeroes both). Overcurrent clears once |I| is back at or below the
  rated maximum. BMS flag bits are debounced the same way. Packs that are offline keep their alarms frozen.
* **Limits**: per pack, CCL/DCL = 0 on an alarm for that direction, otherwise the tightest of the configured
  maximum and the trapezoids (cell voltage warn → alarm, temperature limit − margin → limit); system =
  n_online × weakest pack. Increases are rate-limited to full scale per ``recovery_ramp_s`` (reason
  RECOVERY while the ramp binds); decreases are immediate. CVL = charge V/cell × cells of the first online
  pack, minus the summed excess over ``cell_v_max_warn`` of the worst pack, never below DVL; its increases
  are rate-limited the same way. With no usable pack: CCL = DCL = 0 (COMM_LOST), CVL/DVL hold.

Contract: samples are already plausibility-checked by the caller (finite values, right cell/sensor counts;
the count is re-checked here, NaN is not). A pack whose sample is the same object as last step and has no
debounce timer running is skipped inside the kernel; that is exact (nothing in it can change), not an
approximation.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, fields
from types import ModuleType
from typing import Any

import numpy as np

from bmsgw.core import _kernel
from bmsgw.core.chemistry import ChemistryProfile, profile, resistance_scale
from bmsgw.model import (
    F64,
    Alarm,
    AlarmCode,
    AlarmLevel,
    Chemistry,
    Limit,
    Limits,
    PackSample,
    Reason,
)

__all__ = ["Core", "CoreOutput", "CoreParams", "PackOutput"]

ESTIMATORS: tuple[str, ...] = ("ekf", "counting")

# per-pack current settings whose NaN default is this fraction of the pack's capacity (A per Ah)
_PER_PACK_C: dict[str, float] = {
    "current_sigma_a": 0.002,
    "current_bias_sigma_a": 0.005,
    "full_tail_current_a": 0.05,
}

_CHEMISTRY_DEFAULTS = (
    "cell_v_max_alarm",
    "cell_v_max_warn",
    "cell_v_min_warn",
    "cell_v_min_alarm",
    "charge_voltage_cell_v",
    "discharge_voltage_cell_v",
)


@dataclass(frozen=True, slots=True)
class CoreParams:
    """Configuration of the core. Voltages per cell, currents per pack, temperatures in °C.

    ``charge_voltage_cell_v``/``discharge_voltage_cell_v`` default (NaN) to the chemistry profile's values.
    """

    chemistry: Chemistry
    cells: tuple[int, ...]  # cells per pack
    sensors: tuple[int, ...]  # temperature sensors per pack
    capacity_ah: tuple[float, ...]  # rated capacity per pack
    max_charge_current_a: float  # per pack
    max_discharge_current_a: float  # per pack
    cell_v_max_alarm: float
    cell_v_max_warn: float
    cell_v_min_warn: float
    cell_v_min_alarm: float
    cell_v_hysteresis: float = 0.05
    charge_temp_min_c: float = 0.0
    charge_temp_max_c: float = 45.0
    discharge_temp_min_c: float = -20.0
    discharge_temp_max_c: float = 55.0
    temp_warn_margin_c: float = 5.0
    temp_hysteresis_c: float = 3.0
    overcurrent_factor: float = 1.2
    overcurrent_time_s: float = 2.0
    debounce_s: float = 1.0
    charge_voltage_cell_v: float = math.nan
    discharge_voltage_cell_v: float = math.nan
    rest_current_a: float = 0.5
    rest_time_s: float = 1800.0
    recovery_ramp_s: float = 60.0
    # SOC estimator (see the module docstring); NaN = the default named in the comment
    estimator: str = "ekf"  # "ekf", or "counting": coulomb counting with the anchors only
    voltage_sigma_v: float = 0.002  # cell-voltage measurement noise incl. resolution (1σ)
    current_sigma_a: float = math.nan  # current-sensor noise per sample (1σ); NaN: 0.002 C of each pack
    current_bias_sigma_a: float = math.nan  # prior σ of the current-sensor offset; NaN: 0.005 C of each pack
    full_tail_current_a: float = math.nan  # full when |I| stays below this at the CV level; NaN: 0.05 C
    full_voltage_margin_v: float = 0.05  # … with the highest cell at charge_voltage_cell_v − this or above
    full_hold_s: float = 60.0  # … for this long
    empty_voltage_cell_v: float = math.nan  # empty when the lowest cell is at or below this; NaN: min alarm
    ocv_profile: ChemistryProfile | None = None  # replaces the built-in profile (e.g. profile_from_csv)

    def __post_init__(self) -> None:
        chem = Chemistry(self.chemistry)
        prof = self.ocv_profile or profile(chem)
        object.__setattr__(self, "chemistry", chem)
        object.__setattr__(self, "cells", tuple(int(n) for n in self.cells))
        object.__setattr__(self, "sensors", tuple(int(n) for n in self.sensors))
        object.__setattr__(self, "capacity_ah", tuple(float(q) for q in self.capacity_ah))
        for name in ("charge_voltage_cell_v", "discharge_voltage_cell_v"):
            if math.isnan(getattr(self, name)):
                object.__setattr__(self, name, float(getattr(prof, name)))
        if math.isnan(self.empty_voltage_cell_v):
            object.__setattr__(self, "empty_voltage_cell_v", float(self.cell_v_min_alarm))
        self._validate()

    @property
    def profile(self) -> ChemistryProfile:
        """The chemistry profile in use: ``ocv_profile`` or the built-in one."""
        return self.ocv_profile or profile(self.chemistry)

    def per_pack(self, name: str) -> tuple[float, ...]:
        """A per-pack current setting (``current_sigma_a``, ``current_bias_sigma_a``, ``full_tail_current_a``)
        resolved for every pack: the configured value, or its C-rate default."""
        value = float(getattr(self, name))
        if not math.isnan(value):
            return (value,) * len(self.capacity_ah)
        return tuple(_PER_PACK_C[name] * q for q in self.capacity_ah)

    def _validate(self) -> None:
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"CoreParams.{name} = {getattr(self, name)!r}: {why}")

        for f in fields(self):
            v = getattr(self, f.name)
            if (
                isinstance(v, float)
                and not math.isfinite(v)
                and not (f.name in _PER_PACK_C and math.isnan(v))
            ):
                raise bad(f.name, "must be a finite number")
        n = len(self.cells)
        if n == 0:
            raise bad("cells", "at least one pack is required")
        for name in ("sensors", "capacity_ah"):
            if len(getattr(self, name)) != n:
                raise bad(name, f"needs one entry per pack ({n})")
        if any(c < 1 for c in self.cells):
            raise bad("cells", "every pack needs at least one cell")
        if any(s < 0 for s in self.sensors):
            raise bad("sensors", "must be >= 0")
        if any(not (math.isfinite(q) and q > 0.0) for q in self.capacity_ah):
            raise bad("capacity_ah", "must be > 0")
        for name in ("max_charge_current_a", "max_discharge_current_a"):
            if getattr(self, name) <= 0.0:
                raise bad(name, "must be > 0")
        if not (
            0.0 < self.cell_v_min_alarm < self.cell_v_min_warn < self.cell_v_max_warn < self.cell_v_max_alarm
        ):
            raise bad("cell_v_max_alarm", "need 0 < min_alarm < min_warn < max_warn < max_alarm")
        if not (0.0 < self.discharge_voltage_cell_v < self.charge_voltage_cell_v):
            raise bad("charge_voltage_cell_v", "need 0 < discharge_voltage_cell_v < charge_voltage_cell_v")
        if self.charge_temp_min_c >= self.charge_temp_max_c:
            raise bad("charge_temp_min_c", "must be below charge_temp_max_c")
        if self.discharge_temp_min_c >= self.discharge_temp_max_c:
            raise bad("discharge_temp_min_c", "must be below discharge_temp_max_c")
        if self.overcurrent_factor < 1.0:
            raise bad("overcurrent_factor", "must be >= 1")
        for name in (
            "cell_v_hysteresis",
            "temp_warn_margin_c",
            "temp_hysteresis_c",
            "overcurrent_time_s",
            "debounce_s",
            "rest_current_a",
            "rest_time_s",
            "recovery_ramp_s",
        ):
            if getattr(self, name) < 0.0:
                raise bad(name, "must be >= 0")
        if self.estimator not in ESTIMATORS:
            raise bad("estimator", f"must be one of {', '.join(ESTIMATORS)}")
        for name in ("full_voltage_margin_v", "full_hold_s"):
            if getattr(self, name) < 0.0:
                raise bad(name, "must be >= 0")
        for name in ("voltage_sigma_v", *_PER_PACK_C):
            if not getattr(self, name) > 0.0 and not math.isnan(getattr(self, name)):
                raise bad(name, "must be > 0")
        if not 0.0 < self.empty_voltage_cell_v < self.cell_v_max_warn:
            raise bad("empty_voltage_cell_v", "need 0 < empty_voltage_cell_v < cell_v_max_warn")
        if self.ocv_profile is not None and self.ocv_profile.chemistry is not self.chemistry:
            raise bad("ocv_profile", f"is a {self.ocv_profile.chemistry} profile for a {self.chemistry} core")

    @classmethod
    def defaults(
        cls,
        chemistry: Chemistry,
        cells: Sequence[int],
        sensors: Sequence[int],
        capacity_ah: Sequence[float],
        **overrides: Any,
    ) -> CoreParams:
        """Parameters with the chemistry profile's thresholds; currents default to 0.5 C charge / 1 C
        discharge of the smallest pack. Any field can be overridden by keyword."""
        prof = overrides.get("ocv_profile") or profile(Chemistry(chemistry))
        caps = tuple(float(q) for q in capacity_ah)
        kw: dict[str, Any] = {name: getattr(prof, name) for name in _CHEMISTRY_DEFAULTS}
        if caps:
            kw["max_charge_current_a"] = 0.5 * min(caps)
            kw["max_discharge_current_a"] = 1.0 * min(caps)
        kw.update(overrides)
        return cls(chemistry=chemistry, cells=tuple(cells), sensors=tuple(sensors), capacity_ah=caps, **kw)


@dataclass(frozen=True, slots=True, eq=False)
class PackOutput:
    """Estimates for one pack (kept at their last values while the pack is offline)."""

    soc: float
    soh: float
    cell_soc: F64
    balance_mask: int  # bit n = bleed cell n
    contactor_open_request: bool
    soc_std: float = math.nan  # 1σ of the pack's mean-cell SOC estimate
    capacity_ah: float = math.nan  # capacity estimate (rated until two anchors were far enough apart)
    r0_ohm: float = math.nan  # cell R0 estimate at the present temperature
    current_bias_a: float = math.nan  # estimated current-sensor offset (measured − true)
    anchors: int = 0  # OCV resets and full/empty calibrations so far
    last_anchor: str = ""  # kind of the newest anchor: "rest", "full" or "empty"
    last_anchor_t: float = math.nan
    first_anchor_t: float = math.nan  # first anchor, or the first time soc_std fell below 2 %


@dataclass(frozen=True, slots=True, eq=False)
class CoreOutput:
    """Everything one step of the core produces."""

    packs: tuple[PackOutput, ...]
    soc: float
    soh: float
    limits: Limits
    alarms: tuple[Alarm, ...]


_REASONS: tuple[Reason, ...] = tuple(Reason(r) for r in _kernel.REASONS)
# the profile's cell model as the kernel reads it
_MODEL_FIELDS = (
    "r0_ohm_ah",
    "r1_ohm_ah",
    "tau1_s",
    "hyst_gamma",
    "hyst_tau_s",
    "coulomb_efficiency",
    "model_sigma_v",
    "model_corr_s",
    "nominal_v",
)
_ANCHORS: tuple[str, ...] = _kernel.ANCHOR_KINDS
_RS_TEMPS: tuple[float, ...] = tuple(float(x) for x in range(-40, 86))  # R(T) sampled every 1 °C
_CODES: tuple[AlarmCode, ...] = tuple(AlarmCode(c) for c in _kernel.ALARM_CODES)


def _f64_buffer(values: Sequence[float]) -> memoryview[float]:
    return memoryview(array("d", values)).cast("B").cast("d")


class Core:
    """The stateful core. Call :meth:`step` with the newest usable sample of every pack (or None)."""

    __slots__ = (
        "_alarm_version",
        "_alarms",
        "_bal",
        "_cell_t",
        "_cell_v",
        "_contactor",
        "_est_f",
        "_est_i",
        "_k",
        "_last",
        "_lat_on",
        "_lat_since",
        "_mask",
        "_n",
        "_offs",
        "_pack_out",
        "_soc",
        "_soc_pack",
        "_soffs",
        "params",
    )

    def __init__(
        self,
        params: CoreParams,
        initial_soc: Sequence[float] | None = None,
        *,
        initial_cell_soc: Sequence[Sequence[float]] | None = None,
        kernel_module: ModuleType | None = None,
    ) -> None:
        """`initial_soc`: one SOC (0..1) per pack, or None to start each cell from its OCV on the first
        sample. `initial_cell_soc` (needs `initial_soc`): per pack, its cells' SOC, e.g. restored after a
        restart; `initial_soc` is then the pack SOC reported until the first sample. `kernel_module` swaps
        the kernel implementation (parity tests and benchmarks only)."""
        self.params = params
        n = len(params.cells)
        init: memoryview[float] | None = None
        if initial_soc is not None:
            vals = [float(x) for x in initial_soc]
            if len(vals) != n or any(not 0.0 <= x <= 1.0 for x in vals):
                raise ValueError(f"initial_soc needs {n} values in 0..1, got {initial_soc!r}")
            init = _f64_buffer(vals)
        cells: list[list[float]] | None = None
        if initial_cell_soc is not None:
            cells = [[float(x) for x in row] for row in initial_cell_soc]
            if (
                initial_soc is None
                or [len(row) for row in cells] != list(params.cells)
                or any(not 0.0 <= x <= 1.0 for row in cells for x in row)
            ):
                raise ValueError(
                    f"initial_cell_soc needs initial_soc and {list(params.cells)} cell values in 0..1"
                )
        prof = params.profile
        km = kernel_module if kernel_module is not None else _kernel
        model = {name: float(getattr(prof, name)) for name in _MODEL_FIELDS}
        self._k: _kernel.Kernel = km.Kernel(
            params,
            model=model,
            soc_grid=_f64_buffer(prof.soc_points),
            ocv_tab=_f64_buffer([v for row in prof.ocv_by_temp for v in row]),
            hyst_tab=_f64_buffer([v for row in prof.hyst_by_temp for v in row]),
            tab_temps=_f64_buffer(prof.ocv_temps_c),
            rs_temps=_f64_buffer(_RS_TEMPS),
            rs_vals=_f64_buffer([resistance_scale(prof, x) for x in _RS_TEMPS]),
            current_sigma=_f64_buffer(params.per_pack("current_sigma_a")),
            bias_sigma=_f64_buffer(params.per_pack("current_bias_sigma_a")),
            tail_current=_f64_buffer(params.per_pack("full_tail_current_a")),
            initial_soc=init,
            initial_cell_soc=_f64_buffer([x for row in cells for x in row]) if cells is not None else None,
        )
        k = self._k
        self._n = n
        self._offs = tuple(int(x) for x in np.asarray(k.cell_off))
        self._soffs = tuple(int(x) for x in np.asarray(k.sens_off))
        self._cell_v: F64 = np.asarray(k.cell_v)
        self._cell_t: F64 = np.asarray(k.cell_t)
        self._soc: F64 = np.asarray(k.soc)
        self._bal = np.asarray(k.bal)
        # scalar reads go through Python memoryviews (cheaper than numpy scalars)
        self._soc_pack: memoryview[float] = memoryview(k.soc_pack).cast("B").cast("d")
        self._mask: memoryview[int] = memoryview(k.mask).cast("B").cast("q")
        self._contactor: memoryview[int] = memoryview(k.contactor).cast("B").cast("i")
        self._lat_on: memoryview[int] = memoryview(k.lat_on).cast("B").cast("i")
        self._lat_since: memoryview[float] = memoryview(k.lat_since).cast("B").cast("d")
        self._est_f: tuple[memoryview[float], ...] = tuple(
            memoryview(b).cast("B").cast("d")
            for b in (k.x, k.pcov, k.cap_est, k.r0_p, k.anchor_t, k.first_anchor_t)
        )
        self._est_i: tuple[memoryview[int], ...] = tuple(
            memoryview(b).cast("B").cast("i") for b in (k.anchor_n, k.anchor_kind)
        )
        self._last: list[PackSample | None] = [None] * n
        self._pack_out: list[PackOutput | None] = [None] * n
        self._alarm_version = -1
        self._alarms: tuple[Alarm, ...] = ()

    def step(self, t: float, samples: Sequence[PackSample | None]) -> CoreOutput:
        """Advance to time `t` (s, non-decreasing) with `samples[i]` = pack i's newest usable sample or None.

        Passing the same sample object again means "no new data": it is not integrated twice.
        """
        t = float(t)
        k = self._k
        n = self._n
        if len(samples) != n:
            raise ValueError(f"expected {n} samples (one per pack, None when unusable), got {len(samples)}")
        last = self._last
        offs = self._offs
        soffs = self._soffs
        pack_out = self._pack_out
        for i in range(n):
            s = samples[i]
            if s is None:
                k.set_pack(i, 0, 0.0, 0.0, 0, 0)
                continue
            fresh = s is not last[i]
            if fresh:
                pack_out[i] = None  # new data: this pack's output is rebuilt below
                a = offs[i]
                b = offs[i + 1]
                if s.pack != i or len(s.cell_v) != b - a or len(s.cell_t) != soffs[i + 1] - soffs[i]:
                    raise ValueError(
                        f"sample for pack {i} has pack={s.pack}, {len(s.cell_v)} cells, {len(s.cell_t)} "
                        f"sensors; configured {b - a} cells, {soffs[i + 1] - soffs[i]} sensors"
                    )
                self._cell_v[a:b] = s.cell_v
                self._cell_t[soffs[i] : soffs[i + 1]] = s.cell_t
                last[i] = s
            k.set_pack(i, 1, s.t, s.current, int(s.flags), 1 if fresh else 0)
        k.step(t)

        soc_pack = self._soc_pack
        mask = self._mask
        contactor = self._contactor
        limit_cells = k.mask_cells
        est_x, est_p, est_cap, est_r0, est_at, est_first = self._est_f
        est_n, est_kind = self._est_i
        packs: list[PackOutput] = []
        for i in range(n):
            # SOC and balancing only change with new data; the contactor request can also change with t
            po = pack_out[i]
            if po is not None and po.contactor_open_request is (contactor[i] != 0):
                packs.append(po)
                continue
            a = offs[i]
            b = offs[i + 1]
            if b - a <= limit_cells:
                m = mask[i]
            else:
                m = int.from_bytes(np.packbits(self._bal[a:b] != 0, bitorder="little").tobytes(), "little")
            cell_soc = self._soc[a:b].copy()
            cell_soc.flags.writeable = False  # shared by every output until the pack changes
            var = est_p[25 * i]
            po = PackOutput(
                soc_pack[i], 1.0, cell_soc, m, contactor[i] != 0,
                math.sqrt(var) if var > 0.0 else 0.0, est_cap[i], est_r0[i], est_x[5 * i + 3],
                est_n[i], _ANCHORS[est_kind[i]], est_at[i], est_first[i],
            )  # fmt: skip
            pack_out[i] = po
            packs.append(po)

        if k.alarm_version != self._alarm_version:
            self._alarm_version = k.alarm_version
            self._alarms = self._build_alarms()

        r = _REASONS
        ccl = k.ccl
        dcl = k.dcl
        limits = Limits(
            Limit(k.cvl, r[k.cvl_reason]),
            Limit(ccl, r[k.ccl_reason]),
            Limit(dcl, r[k.dcl_reason]),
            Limit(k.dvl, r[k.dvl_reason]),
            ccl > 0.0,
            dcl > 0.0,
        )
        return CoreOutput(tuple(packs), k.soc_sys, 1.0, limits, self._alarms)

    def _build_alarms(self) -> tuple[Alarm, ...]:
        k = self._k
        out: list[Alarm] = []
        if k.comm_lost:
            out.append(
                Alarm(AlarmCode.COMM_LOST, AlarmLevel.ALARM, k.comm_lost_since, None, "no usable pack sample")
            )
        table = _kernel.LATCHES
        nl = len(table)
        on = self._lat_on
        since = self._lat_since
        for p in range(self._n):
            # per code: (level, since, detail) of the highest active level, earliest trip among equals
            best: dict[int, tuple[int, float, str]] = {}
            for j in range(nl):
                if on[p * nl + j] == 0:
                    continue
                code, level, _zc, _zd, _reason, detail, _flag = table[j]
                s = since[p * nl + j]
                cur = best.get(code)
                if cur is None or level > cur[0] or (level == cur[0] and s < cur[1]):
                    best[code] = (level, s, detail)
            for code in sorted(best):
                level, s, detail = best[code]
                out.append(Alarm(_CODES[code], AlarmLevel(level), s, p, detail))
        return tuple(out)

    def debug_state(self) -> dict[str, Any]:
        """Copies of the kernel's buffers and scalars (parity tests and diagnostics)."""
        k = self._k
        out: dict[str, Any] = {}
        for name in (
            "soc",
            "dz",
            "dz_var",
            "x",
            "pcov",
            "ibar",
            "irest",
            "cap_est",
            "ah",
            "ref_z",
            "ref_ah",
            "ref_ok",
            "thr",
            "cap_n",
            "anchor_n",
            "anchor_kind",
            "anchor_t",
            "first_anchor_t",
            "converged",
            "temp_p",
            "r0_p",
            "rest_next",
            "full_since",
            "empty_since",
            "full_done",
            "empty_done",
            "bal",
            "seen",
            "pending",
            "last_t",
            "last_i",
            "rest_since",
            "soc_pack",
            "vmin",
            "vmax",
            "tmin",
            "tmax",
            "excess",
            "ccl_p",
            "dcl_p",
            "ccl_r",
            "dcl_r",
            "contactor",
            "mask",
            "lat_on",
            "lat_since",
            "lat_pend",
        ):
            out[name] = np.array(getattr(k, name), copy=True)
        for name in (
            "soc_sys",
            "ccl",
            "dcl",
            "cvl",
            "dvl",
            "ccl_reason",
            "dcl_reason",
            "cvl_reason",
            "dvl_reason",
            "n_online",
            "have_data",
            "comm_lost",
            "comm_lost_since",
            "alarm_version",
            "t_prev",
        ):
            out[name] = getattr(k, name)
        return out
