"""Estimation & protection core: pack samples in, SOC per cell, limits with reasons and alarms out.

Deterministic and free of I/O: the caller passes the time. All numeric work happens in
:mod:`bmsgw.core._kernel` (compiled with Cython when available); this module converts between the shared
data model and the kernel's flat buffers.

Behaviour in one place (see the kernel for the details):

* **SOC** per cell ("bar-delta" EKF): per pack, an EKF on the mean cell with x = [SOC, RC voltage,
  hysteresis h, current-sensor bias, R0 scale], model V = OCV(z, T) + M(z, T)·h + v1 + R0·(I − b) from the
  chemistry profile (temperature = mean of the pack's sensors; OCV and M tables at 5/25/45 °C for LFP);
  per cell, a scalar filter on the cell's offset from the mean cell, updated with its own voltage less the
  cells' mean residual. The hysteresis magnitude is a Schmidt "consider" parameter: the cells' M may be off
  by a factor 1 + m, m ~ N(0, ``hysteresis_sigma``²), never estimated, its covariance with the state carried,
  so the persistent offset it causes neither pins the plateau SOC nor reads as a bias. Counting
  uses the trapezoid between successive sample times (none across gaps > 5 s), η on charge, and the
  capacity estimate. Noise: process noise from ``current_sigma_a`` and the capacity uncertainty,
  measurement noise from ``voltage_sigma_v`` + the model's fit error, which is treated as correlated over the
  profile's ``model_corr_s`` (faster sampling does not make the filter more confident). The start is the
  IR-compensated OCV of each cell (σ from the OCV slope and hysteresis) unless ``initial_soc`` is given.
  Anchors: after ``rest_time_s`` with the 10 s current average below ``rest_current_a`` an iterated-EKF
  OCV reset, again every ``rest_time_s`` while the rest lasts with the bias held (a repeat reads the same
  static model error; the hysteresis state holds while the filtered current is inside its C/100
  deadband, so a rested cell is read on its branch); full when the highest cell is within
  ``full_voltage_margin_v`` of the charge voltage and |I| < ``full_tail_current_a`` for ``full_hold_s``
  (that cell → 1); empty when the lowest cell is at or below ``empty_voltage_cell_v``
  while not charging for ``debounce_s`` (that cell → 0). A calibration is a measurement of the mean cell's
  SOC, so the bias learns from it through the SOC–bias covariance (minus the share the capacity error since
  the last reference explains); far-apart certain anchors (ΔSOC ≥ 0.4) give a capacity sample ΔAh/ΔSOC.
  The bias is observable wherever the OCV has slope (the SOC drift it causes shows in the voltage) and at
  anchors; on a flat LFP plateau only via anchors.
  ``estimator="counting"`` keeps the anchors but skips the voltage updates.
  Pack SOC = soc_min / (soc_min + 1 − soc_max); system SOC = weighted by rated capacity over the packs in
  service (the online ones while none is).
* **Protection**, three tiers per quantity and pack (debounced Schmitt triggers: trip after the condition
  held ``debounce_s``, clear after the value held inside limit ∓ hysteresis for ``debounce_s``): WARNING
  (the trapezoids derate), ALARM (that direction's limit 0), FAULT (both 0 and the pack's
  ``contactor_open_request``; latched until :meth:`Core.reset_latched`, :meth:`Core.latched` /
  :meth:`Core.restore_latched` carry them over a restart). Quantities: highest/lowest cell, pack voltage as
  its mean cell, temperature for charge (trips only while charging, |I| ≥ rest current) and discharge,
  the cold-charge lockout, charge/discharge overcurrent (warning above the rated current; alarm on the
  time-current curve ∫((I/rated)² − 1) dt ≥ (overcurrent_factor² − 1) × overcurrent_time_s; fault at
  overcurrent_fault_factor for overcurrent_fault_time_s), cell spread, non-finite readings (warning at
  once, alarm after the debounce, fault after sensor_fault_time_s). BMS flag bits are debounced alarms (the
  BMS's own fault bit a non-latched FAULT). Thermal runaway per pack, from a per-sensor dT/dt filtered over
  2 s (steps faster than 2 °C/s count as 2 °C/s) and the largest step between neighbouring sensors:
  warning, derate (CCL 0, DCL halved), pack isolation (≥ tr_rate_confirm_c_s for more than tr_confirm_s,
  latched) and, with the lowest cell below 75 % of the mean cell or a sensor at discharge_temp_max_c
  (GB 38031), system shutdown: every pack's contactor-open request and every limit 0, latched. Packs that
  are offline keep their alarms frozen.
* **Limits**: per pack, CCL/DCL = 0 on an alarm for that direction, otherwise the rated current times the
  tightest trapezoid (SOF): cell voltage warn → alarm, pack voltage warn → alarm, temperature limit −
  margin → limit, SOC (CCL from soc_charge_derate_start to soc_derate_floor at 100 %, DCL likewise towards
  0 %), for CCL the cell spread warn → alarm, for DCL the thermal derate; each limit names its reason. The
  packs combine in the kernel's ``_system``. Increases are rate-limited to full scale per
  ``recovery_ramp_s`` (reason RECOVERY while the ramp binds, entered only when it holds the limit more than
  1 % of full scale below its target, else the target's reason stays); decreases are immediate.
* **Charge voltage**: bulk → absorption (a pack's mean cell within ``full_voltage_margin_v`` of the charge
  voltage) → float (tail current for ``full_hold_s`` or ``absorption_time_max_s`` at the voltage) → bulk
  (system SOC below ``rebulk_soc``, or a cell spread of ``rebulk_spread_v`` after float saw it below
  that: a pack still unbalanced when absorption ends stays in float); ``Limits.charge_stage``
  reports it. CVL = the stage's voltage × cells of the first online pack, minus the worst pack's summed
  excess over the cell target (the stage voltage + cell_v_max_warn − 20 mV − charge voltage), and at most
  such a pack's cells clipped to the target, summed; never below DVL (never 0), rate-limited like the
  currents. With no usable pack: CCL = DCL = 0 (COMM_LOST), CVL/DVL hold.

Contract: samples are already plausibility-checked by the caller (finite values, right cell/sensor counts;
the count is re-checked here, NaN is not). A pack whose sample is the same object as last step and has no
debounce timer running is skipped inside the kernel; that is exact (nothing in it can change), not an
approximation.
"""

from __future__ import annotations

import itertools
import math
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from types import ModuleType
from typing import Any, cast

import numpy as np

from bmsgw.core import _health, _kernel
from bmsgw.core.chemistry import ChemistryProfile, profile, resistance_scale
from bmsgw.model import (
    F64,
    Alarm,
    AlarmCode,
    AlarmLevel,
    ChargeStage,
    Chemistry,
    Limit,
    Limits,
    PackHealth,
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

# settings that must be >= 0 (margins, hystereses, times)
_NON_NEGATIVE = (
    "cell_v_hysteresis",
    "temp_warn_margin_c",
    "temp_hysteresis_c",
    "overcurrent_time_s",
    "debounce_s",
    "rest_current_a",
    "rest_time_s",
    "recovery_ramp_s",
    "full_voltage_margin_v",
    "full_hold_s",
    "temp_fault_margin_c",
    "overcurrent_fault_time_s",
    "sensor_fault_time_s",
    "absorption_time_max_s",
    "rebulk_spread_v",
    "tr_confirm_s",
)

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
    hysteresis_sigma: float = 0.15  # relative σ of the cells' hysteresis magnitude vs the profile's
    full_tail_current_a: float = math.nan  # full when |I| stays below this at the CV level; NaN: 0.05 C
    full_voltage_margin_v: float = 0.05  # … with the highest cell at charge_voltage_cell_v − this or above
    full_hold_s: float = 60.0  # … for this long
    empty_voltage_cell_v: float = math.nan  # empty when the lowest cell is at or below this; NaN: min alarm
    ocv_profile: ChemistryProfile | None = None  # replaces the built-in profile (e.g. profile_from_csv)
    # protection tiers (see the module docstring); NaN = the chemistry profile's value
    cell_v_max_fault: float = math.nan
    cell_v_min_fault: float = math.nan
    pack_v_max_warn: float = math.nan  # pack voltage / cells
    pack_v_max_alarm: float = math.nan
    pack_v_max_fault: float = math.nan
    pack_v_min_warn: float = math.nan
    pack_v_min_alarm: float = math.nan
    pack_v_min_fault: float = math.nan
    temp_fault_margin_c: float = 10.0  # temperature fault = the direction's limit ± this
    overcurrent_fault_factor: float = 2.0  # |I| ≥ this × the maximum for overcurrent_fault_time_s: fault
    overcurrent_fault_time_s: float = 0.2
    imbalance_warn_v: float = math.nan  # cell spread (max − min)
    imbalance_alarm_v: float = math.nan
    imbalance_fault_v: float = math.nan
    sensor_fault_time_s: float = 10.0  # a non-finite reading this long is a fault
    # derating over SOC: CCL from 1 at this pack SOC to soc_derate_floor at 1; DCL likewise towards 0
    soc_charge_derate_start: float = 0.90
    soc_discharge_derate_start: float = 0.10
    soc_derate_floor: float = 0.10
    # charge-voltage stages
    float_voltage_cell_v: float = math.nan
    absorption_time_max_s: float = 3600.0
    rebulk_soc: float = 0.85  # float → bulk when the system SOC falls below this …
    rebulk_spread_v: float = 0.08  # … or the cell spread of a pack reaches this
    # thermal-runaway staging (filtered dT/dt per sensor, neighbour ΔT)
    tr_rate_warn_c_s: float = 0.3
    tr_rate_alarm_c_s: float = 0.6
    tr_rate_confirm_c_s: float = 1.0  # GB 38031: ≥ 1 °C/s …
    tr_confirm_s: float = 3.0  # … for more than 3 s
    tr_delta_warn_c: float = 15.0

    def __post_init__(self) -> None:
        chem = Chemistry(self.chemistry)
        prof = self.ocv_profile or profile(chem)
        object.__setattr__(self, "chemistry", chem)
        object.__setattr__(self, "cells", tuple(int(n) for n in self.cells))
        object.__setattr__(self, "sensors", tuple(int(n) for n in self.sensors))
        object.__setattr__(self, "capacity_ah", tuple(float(q) for q in self.capacity_ah))
        for name, value in _profile_defaults(
            prof, self.charge_voltage_cell_v, self.discharge_voltage_cell_v
        ).items():
            if math.isnan(getattr(self, name)):
                object.__setattr__(self, name, value)
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
        for name in _NON_NEGATIVE:
            if getattr(self, name) < 0.0:
                raise bad(name, "must be >= 0")
        if self.estimator not in ESTIMATORS:
            raise bad("estimator", f"must be one of {', '.join(ESTIMATORS)}")
        for name in ("voltage_sigma_v", *_PER_PACK_C):
            if not getattr(self, name) > 0.0 and not math.isnan(getattr(self, name)):
                raise bad(name, "must be > 0")
        if not 0.0 <= self.hysteresis_sigma <= 2.0:
            raise bad("hysteresis_sigma", "must be in 0..2")
        if not 0.0 < self.empty_voltage_cell_v < self.cell_v_max_warn:
            raise bad("empty_voltage_cell_v", "need 0 < empty_voltage_cell_v < cell_v_max_warn")
        if self.ocv_profile is not None and self.ocv_profile.chemistry is not self.chemistry:
            raise bad("ocv_profile", f"is a {self.ocv_profile.chemistry} profile for a {self.chemistry} core")
        self._validate_protection(bad)

    def _validate_protection(self, bad: Callable[[str, str], ValueError]) -> None:
        if not 0.0 < self.cell_v_min_fault < self.cell_v_min_alarm:
            raise bad("cell_v_min_fault", "need 0 < cell_v_min_fault < cell_v_min_alarm")
        if not self.cell_v_max_fault > self.cell_v_max_alarm:
            raise bad("cell_v_max_fault", "need cell_v_max_fault > cell_v_max_alarm")
        pack = (
            self.pack_v_min_fault,
            self.pack_v_min_alarm,
            self.pack_v_min_warn,
            self.pack_v_max_warn,
            self.pack_v_max_alarm,
            self.pack_v_max_fault,
        )
        if not pack[0] > 0.0 or any(b <= a for a, b in itertools.pairwise(pack)):
            raise bad(
                "pack_v_max_warn",
                "need 0 < pack_v_min_fault < pack_v_min_alarm < pack_v_min_warn < pack_v_max_warn "
                "< pack_v_max_alarm < pack_v_max_fault",
            )
        if not 0.0 < self.imbalance_warn_v < self.imbalance_alarm_v < self.imbalance_fault_v:
            raise bad("imbalance_warn_v", "need 0 < imbalance_warn_v < imbalance_alarm_v < imbalance_fault_v")
        if not self.overcurrent_fault_factor > self.overcurrent_factor:
            raise bad("overcurrent_fault_factor", "must be above overcurrent_factor")
        if not 0.0 <= self.soc_discharge_derate_start < self.soc_charge_derate_start <= 1.0:
            raise bad(
                "soc_charge_derate_start",
                "need 0 <= soc_discharge_derate_start < soc_charge_derate_start <= 1",
            )
        if not 0.0 <= self.soc_derate_floor <= 1.0:
            raise bad("soc_derate_floor", "must be within 0..1")
        if not self.discharge_voltage_cell_v < self.float_voltage_cell_v <= self.charge_voltage_cell_v:
            raise bad(
                "float_voltage_cell_v",
                "need discharge_voltage_cell_v < float_voltage_cell_v <= charge_voltage_cell_v",
            )
        if not 0.0 <= self.rebulk_soc <= 1.0:
            raise bad("rebulk_soc", "must be within 0..1")
        if not 0.0 < self.tr_rate_warn_c_s < self.tr_rate_alarm_c_s < self.tr_rate_confirm_c_s:
            raise bad(
                "tr_rate_warn_c_s", "need 0 < tr_rate_warn_c_s < tr_rate_alarm_c_s < tr_rate_confirm_c_s"
            )
        if not self.tr_delta_warn_c > 0.0:
            raise bad("tr_delta_warn_c", "must be > 0")

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
    contactor_open_request: bool
    soc_std: float = math.nan  # 1σ of the pack's mean-cell SOC estimate
    capacity_ah: float = math.nan  # capacity estimate (rated until two anchors were far enough apart)
    r0_ohm: float = math.nan  # cell R0 estimate at the present temperature
    current_bias_a: float = math.nan  # estimated current-sensor offset (measured − true)
    anchors: int = 0  # OCV resets and full/empty calibrations so far
    last_anchor: str = ""  # kind of the newest anchor: "rest", "full" or "empty"
    last_anchor_t: float = math.nan
    first_anchor_t: float = math.nan  # first anchor, or the first time soc_std fell below 2 %
    health: PackHealth | None = None  # capacity, R0, cycles, drift per cell (bmsgw.core._health)


@dataclass(frozen=True, slots=True, eq=False)
class CoreOutput:
    """Everything one step of the core produces."""

    packs: tuple[PackOutput, ...]
    soc: float
    soh: float
    limits: Limits
    alarms: tuple[Alarm, ...]
    ccl_pack: int | None = None  # pack whose limit over its current share bound CCL (None: none did)
    dcl_pack: int | None = None


_REASONS: tuple[Reason, ...] = tuple(Reason(r) for r in _kernel.REASONS)
_STAGES: tuple[ChargeStage, ...] = tuple(ChargeStage(x) for x in _kernel.CHARGE_STAGES)


def _profile_defaults(prof: ChemistryProfile, charge_v: float, discharge_v: float) -> dict[str, float]:
    """CoreParams fields whose NaN default comes from the chemistry profile. The derived defaults follow a
    configured charge/discharge voltage (NaN: the profile's): float never above the charge voltage, and the
    pack-voltage tiers at least 50/100/150 mV per cell outside the CVL…DVL window."""
    if math.isnan(charge_v):
        charge_v = prof.charge_voltage_cell_v
    if math.isnan(discharge_v):
        discharge_v = prof.discharge_voltage_cell_v
    out = {
        "charge_voltage_cell_v": charge_v,
        "discharge_voltage_cell_v": discharge_v,
        "cell_v_max_fault": prof.cell_v_max_fault,
        "cell_v_min_fault": prof.cell_v_min_fault,
        "float_voltage_cell_v": min(prof.float_voltage_cell_v, charge_v),
    }
    for k, tier in enumerate(("warn", "alarm", "fault")):
        out[f"pack_v_max_{tier}"] = max(prof.pack_v_max[k], charge_v + 0.05 * (k + 1))
        out[f"pack_v_min_{tier}"] = min(prof.pack_v_min[k], discharge_v - 0.05 * (k + 1))
        out[f"imbalance_{tier}_v"] = prof.imbalance_v[k]
    return {name: round(float(x), 9) for name, x in out.items()}


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


_HIST = 10  # DoD histogram bins (PackHealth.dod_histogram)


def _frozen(buf: Any, a: int, b: int, scale: float = 1.0) -> F64:
    """A read-only float64 copy of buf[a:b] × scale."""
    out: F64 = np.asarray(buf)[a:b] * scale
    out.flags.writeable = False
    return out


def _f64_buffer(values: Sequence[float]) -> memoryview[float]:
    return memoryview(array("d", values)).cast("B").cast("d")


class Core:
    """The stateful core. Call :meth:`step` with the newest usable sample of every pack (or None)."""

    __slots__ = (
        "_alarm_version",
        "_alarms",
        "_cap_total",
        "_contactor",
        "_est_f",
        "_est_i",
        "_h",
        "_h_fast",
        "_h_ver",
        "_health_at",
        "_health_out",
        "_idle",
        "_k",
        "_last",
        "_lat_on",
        "_lat_since",
        "_limits",
        "_limits_key",
        "_n",
        "_offs",
        "_pack_out",
        "_requests",
        "_rows",
        "_soc",
        "_soc_pack",
        "_soffs",
        "_soh",
        "_soh_parts",
        "params",
    )

    def __init__(
        self,
        params: CoreParams,
        initial_soc: Sequence[float] | None = None,
        *,
        initial_cell_soc: Sequence[Sequence[float]] | None = None,
        kernel_module: ModuleType | None = None,
        health_module: ModuleType | None = None,
    ) -> None:
        """`initial_soc`: one SOC (0..1) per pack, or None to start each cell from its OCV on the first
        sample. `initial_cell_soc` (needs `initial_soc`): per pack, its cells' SOC, e.g. restored after a
        restart; `initial_soc` is then the pack SOC reported until the first sample. `kernel_module` swaps
        the kernel implementation and `health_module` the health module's (parity tests and benchmarks
        only)."""
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
        hm = health_module if health_module is not None else _health
        self._h: _health.Health = hm.Health(
            k,
            r0_rated=_f64_buffer([prof.r0_ohm_ah / q for q in params.capacity_ah]),
            kinds=(_ANCHORS.index("rest"), _ANCHORS.index("full"), _ANCHORS.index("empty")),
        )
        self._health_out: list[PackHealth | None] = [None] * n
        # what _pack_health checks every fresh step, as Python memoryviews (cheap scalar reads)
        self._h_ver: memoryview[int] = memoryview(self._h.ver).cast("B").cast("i")
        self._h_fast: tuple[memoryview[float], ...] = tuple(
            memoryview(b).cast("B").cast("d") for b in (self._h.thr, self._h.t_now)
        )
        self._health_at: list[tuple[int, float, float]] = [(-1, 0.0, 0.0)] * n
        self._n = n
        self._offs = tuple(int(x) for x in np.asarray(k.cell_off))
        self._soffs = tuple(int(x) for x in np.asarray(k.sens_off))
        cell_v: F64 = np.asarray(k.cell_v)
        cell_t: F64 = np.asarray(k.cell_t)
        # per pack, views of its rows in the kernel's input buffers (a fresh sample is copied into them)
        self._rows: tuple[tuple[F64, F64], ...] = tuple(
            (cell_v[self._offs[i] : self._offs[i + 1]], cell_t[self._soffs[i] : self._soffs[i + 1]])
            for i in range(n)
        )
        self._soc: F64 = np.asarray(k.soc)
        # scalar reads go through Python memoryviews (cheaper than numpy scalars)
        self._soc_pack: memoryview[float] = memoryview(k.soc_pack).cast("B").cast("d")
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
        self._limits_key: tuple[float | int, ...] = ()
        self._limits: Limits | None = None
        self._cap_total = sum(params.capacity_ah)
        self._soh_parts = [0.0] * n  # per pack, SOH × rated capacity (the SOH is their sum / total)
        # per pack, whether the kernel already holds its last sample as "online, nothing new"
        self._idle = [False] * n
        # the contactor requests the outputs reflect (b"": some output is missing, rebuild what is)
        self._requests = b""
        self._soh = math.nan

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
        pack_out = self._pack_out
        rows = self._rows
        idle = self._idle
        set_pack = k.set_pack
        fresh: list[int] = []
        for i in range(n):
            s = samples[i]
            if s is None:
                set_pack(i, 0, 0.0, 0.0, 0, 0)
                idle[i] = False
            elif s is last[i]:
                if not idle[i]:
                    set_pack(i, 1, s.t, s.current, int(s.flags), 0)
                    idle[i] = True
            else:
                cv, ct = rows[i]
                if s.pack != i or len(s.cell_v) != len(cv) or len(s.cell_t) != len(ct):
                    raise ValueError(
                        f"sample for pack {i} has pack={s.pack}, {len(s.cell_v)} cells, {len(s.cell_t)} "
                        f"sensors; configured {len(cv)} cells, {len(ct)} sensors"
                    )
                cv[...] = s.cell_v
                ct[...] = s.cell_t
                last[i] = s
                pack_out[i] = None  # new data: this pack's output is rebuilt below
                set_pack(i, 1, s.t, s.current, int(s.flags), 1)
                idle[i] = False
                fresh.append(i)
        k.step(t)
        self._h.step()

        # SOC only changes with new data; the contactor request can also change with t
        contactor = self._contactor
        stale = fresh
        requests = contactor.tobytes()
        if requests != self._requests:  # some request changed (or outputs were dropped): look at every pack
            self._requests = requests
            stale = [
                i
                for i in range(n)
                if (po := pack_out[i]) is None or po.contactor_open_request is not (contactor[i] != 0)
            ]
        if stale:
            self._pack_outputs(stale)
            self._soh = sum(self._soh_parts) / self._cap_total
        packs = cast("tuple[PackOutput, ...]", tuple(pack_out))  # every pack has an output now

        if k.alarm_version != self._alarm_version:
            self._alarm_version = k.alarm_version
            self._alarms = self._build_alarms()

        ccl = k.ccl
        dcl = k.dcl
        key = (k.cvl, k.cvl_reason, ccl, k.ccl_reason, dcl, k.dcl_reason, k.dvl, k.dvl_reason, k.stage)
        limits = self._limits
        if limits is None or key != self._limits_key:
            r = _REASONS
            limits = Limits(
                Limit(k.cvl, r[k.cvl_reason]),
                Limit(ccl, r[k.ccl_reason]),
                Limit(dcl, r[k.dcl_reason]),
                Limit(k.dvl, r[k.dvl_reason]),
                ccl > 0.0,
                dcl > 0.0,
                charge_stage=_STAGES[k.stage],
            )
            self._limits = limits
            self._limits_key = key
        return CoreOutput(
            packs, k.soc_sys, self._soh, limits, self._alarms,
            k.ccl_pack if k.ccl_pack >= 0 else None, k.dcl_pack if k.dcl_pack >= 0 else None,
        )  # fmt: skip

    def _pack_outputs(self, stale: list[int]) -> None:
        """Rebuild the PackOutput of the packs in `stale` (new data, or a changed contactor request)."""
        offs = self._offs
        soc = self._soc
        if len(stale) > 1:
            # one read-only copy of every cell's SOC, each pack's cell_soc a view of it (cheaper than a copy
            # per pack; a view kept alive keeps the whole copy: at most one per pack, n_cells × 8 bytes each)
            soc = soc.copy()
            soc.setflags(write=False)
        soc_pack = self._soc_pack
        contactor = self._contactor
        est_x, est_p, est_cap, est_r0, est_at, est_first = self._est_f
        est_n, est_kind = self._est_i
        pack_out = self._pack_out
        soh_parts = self._soh_parts
        caps = self.params.capacity_ah
        for i in stale:
            cell_soc = soc[offs[i] : offs[i + 1]]
            if len(stale) == 1:
                cell_soc = cell_soc.copy()
                cell_soc.setflags(write=False)  # shared by every output until the pack changes
            var = est_p[25 * i]
            health = self._pack_health(i)
            pack_out[i] = PackOutput(
                soc_pack[i], health.soh, cell_soc, contactor[i] != 0,
                math.sqrt(var) if var > 0.0 else 0.0, est_cap[i], est_r0[i], est_x[5 * i + 3],
                est_n[i], _ANCHORS[est_kind[i]], est_at[i], est_first[i], health,
            )  # fmt: skip
            soh_parts[i] = health.soh * caps[i]

    def set_share(self, pack: int, share: float, admit: float) -> None:
        """For the next steps: `pack`'s assumed share of the system current (> 0, any scale: normalised over
        the packs that count) and its admission (0 held out, 1 in service, between: ramping in). Default
        1, 1: equal shares, every online pack in service (system limit = n × the weakest pack)."""
        if not (share > 0.0 and math.isfinite(share) and 0.0 <= admit <= 1.0):
            raise ValueError(f"pack {pack}: share must be > 0 and admit in 0..1, got {share!r}, {admit!r}")
        self._k.set_share(pack, float(share), float(admit))

    def _pack_health(self, i: int) -> PackHealth:
        """Pack i's health, rebuilt when an estimate changed, the throughput moved 0.001 cycles or a
        minute passed (calendar time)."""
        h = self._h
        ver = self._h_ver[i]
        thr = self._h_fast[0][i]
        now = self._h_fast[1][i]
        out = self._health_out[i]
        at = self._health_at[i]
        rated = self.params.capacity_ah[i]
        if out is not None and at[0] == ver and thr - at[1] < 0.002 * rated and now - at[2] < 60.0:
            return out
        a = self._offs[i]
        b = self._offs[i + 1]
        days = float(h.cal_days[i])
        if h.seen[i] != 0:
            days += (now - float(h.t0[i])) / 86400.0
        out = PackHealth(
            soh=float(h.soh[i]),
            soh_capacity=float(h.soh_cap[i]),
            soh_resistance=float(h.soh_res[i]),
            capacity_ah=float(h.cap_p[i]),
            cell_capacity_ah=_frozen(h.cap, a, b),
            r0_ohm=float(h.r0_p[i]),
            cell_r0_ohm=_frozen(h.r0, a, b),
            equivalent_full_cycles=thr / (2.0 * rated),
            dod_histogram=tuple(int(x) for x in np.asarray(h.hist)[i * _HIST : (i + 1) * _HIST]),
            calendar_days=days,
            cell_self_discharge_pct_day=_frozen(h.sd, a, b, 100.0),
        )
        self._health_out[i] = out
        self._health_at[i] = (ver, thr, now)
        return out

    def export_health(self) -> list[dict[str, Any]]:
        """Per pack, the health filters' state to persist (JSON-able, NaN as None): see restore_health."""
        h = self._h
        out: list[dict[str, Any]] = []
        for i in range(self._n):
            a = self._offs[i]
            b = self._offs[i + 1]
            health = self._pack_health(i)
            d: dict[str, Any] = {
                "throughput_ah": float(h.thr[i]),
                "calendar_days": health.calendar_days,
                "dod_histogram": list(health.dod_histogram),
            }
            for name in _health.CELL_STATE:
                d[name] = [None if math.isnan(x) else float(x) for x in np.asarray(getattr(h, name))[a:b]]
            out.append(d)
        return out

    def restore_health(self, saved: Sequence[dict[str, Any] | None]) -> None:
        """Restore what :meth:`export_health` saved, one entry per pack (None: that pack starts as new).
        ValueError naming the packs whose entry does not fit; those start as new, the others are restored."""
        h = self._h
        bad: list[str] = []
        for i, d in enumerate(saved[: self._n]):
            h.reset(i)
            self._health_out[i] = None
            self._pack_out[i] = None
            self._requests = b""
            if d is None:
                continue
            a = self._offs[i]
            b = self._offs[i + 1]
            try:
                rows = {
                    name: np.asarray([math.nan if x is None else x for x in d[name]], dtype=np.float64)
                    for name in _health.CELL_STATE
                }
                hist = np.asarray(d["dod_histogram"], dtype=np.int32)
                if any(len(r) != b - a for r in rows.values()) or hist.shape != (_HIST,) or hist.min() < 0:
                    raise ValueError("wrong number of cells or histogram bins")
                for name, r in rows.items():
                    np.asarray(getattr(h, name))[a:b] = r
                np.asarray(h.hist)[i * _HIST : (i + 1) * _HIST] = hist
                np.asarray(h.thr)[i] = float(d["throughput_ah"])
                np.asarray(h.cal_days)[i] = float(d["calendar_days"])
            except (KeyError, TypeError, ValueError) as exc:
                h.reset(i)
                bad.append(f"pack {i}: {exc}")
            h.summarise(i)
        if bad:
            raise ValueError("saved health state does not fit: " + "; ".join(bad))

    def reset_latched(self, pack: int | None = None) -> int:
        """Clear the latched (tier 3) faults of `pack` (None: every pack); returns how many were latched.

        A fault whose condition still holds trips again after its delay; limits are rebuilt at the next step.
        """
        if pack is not None and not 0 <= pack < self._n:
            raise ValueError(f"pack {pack} is not configured (0..{self._n - 1})")
        return int(self._k.reset_latched(-1 if pack is None else pack))

    def latched(self) -> tuple[tuple[int, str, float], ...]:
        """The latched faults now on, as (pack, latch key, since): what survives a restart."""
        keys = _kernel.LATCH_KEYS
        nl = len(keys)
        on = self._lat_on
        return tuple(
            (p, keys[k], float(self._lat_since[p * nl + k]))
            for p in range(self._n)
            for k in range(nl)
            if _kernel.LATCHES[k][7] and on[p * nl + k]
        )

    def restore_latched(self, items: Sequence[tuple[int, str, float]]) -> None:
        """Latch again what :meth:`latched` returned before a restart; unknown keys or packs are ignored
        (the configuration may have changed), so a stale state file never raises here."""
        index = {key: k for k, key in enumerate(_kernel.LATCH_KEYS) if _kernel.LATCHES[k][7]}
        for pack, key, since in items:
            k = index.get(key)
            if k is not None and 0 <= pack < self._n:
                self._k.set_latched(pack, k, float(since))

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
        confirmed = _kernel.LATCH_KEYS.index("thermal_confirmed")
        for p in range(self._n):
            # per code, the highest active level: since its earliest trip, the detail of its latest (the
            # later stage of a thermal runaway, or the BMS's own report of a condition seen here first)
            best: dict[int, tuple[int, float, str, float]] = {}
            for j in range(nl):
                if on[p * nl + j] == 0:
                    continue
                code, level, _zc, _zd, _reason, detail, _flag, _keep = table[j]
                s = since[p * nl + j]
                cur = best.get(code)
                if cur is None or level > cur[0]:
                    best[code] = (level, s, detail, s)
                elif level == cur[0]:
                    best[code] = (level, min(s, cur[1]), detail if s >= cur[3] else cur[2], max(s, cur[3]))
            for code in sorted(best):
                level, s, detail, _last = best[code]
                out.append(Alarm(_CODES[code], AlarmLevel(level), s, p, detail))
            if on[p * nl + confirmed]:
                out.append(
                    Alarm(
                        AlarmCode.THERMAL_RUNAWAY,
                        AlarmLevel.FAULT,
                        since[p * nl + confirmed],
                        None,
                        f"thermal runaway confirmed in pack {p} (GB 38031): system shutdown, latched",
                    )
                )
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
            "pxm",
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
            "lat_on",
            "lat_since",
            "lat_pend",
            "vmean",
            "oc_acc",
            "oc_t",
            "oc_i",
            "th_t",
            "th_prev",
            "th_rate",
            "tr_rate",
            "tr_delta_p",
            "share",
            "admit",
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
            "n_admit",
            "ccl_pack",
            "dcl_pack",
            "have_data",
            "comm_lost",
            "comm_lost_since",
            "alarm_version",
            "t_prev",
            "stage",
            "float_armed",
            "stage_since",
            "abs_time",
            "tail_since",
            "shutdown",
        ):
            out[name] = getattr(k, name)
        return out
