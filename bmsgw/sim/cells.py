"""Equivalent-circuit series pack (OCV + R0 + one RC branch + lumped thermal), vectorised over cells."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bmsgw.core.chemistry import ChemistryProfile
from bmsgw.core.chemistry import profile as chemistry_profile
from bmsgw.model import F64, Chemistry

__all__ = ["SimPack", "SimPackConfig", "SimReading"]

THERMAL_MASS_J_PER_K_PER_AH = 20.0
"""Default heat capacity per cell per Ah (~5.5 kg × 1 kJ/(kg·K) for a 280 Ah prismatic LFP cell)."""
THERMAL_TAU_S = 3600.0
"""Default cell-to-ambient thermal time constant; sets the default conductance from the mass."""


@dataclass(frozen=True, slots=True)
class SimPackConfig:
    """Parameters of one simulated pack; spreads are drawn once per cell from `seed`.

    `thermal_mass_j_per_k` / `thermal_conductance_w_per_k` are per cell; None picks a per-Ah default
    (filled in at construction, so after __init__ they are always floats). The RC branch defaults to the
    chemistry profile's fitted one (`rc_tau_s` = tau1_s, `r1_fraction` = r1_ohm_ah / r0_ohm_ah), filled in.
    """

    cells: int
    chemistry: Chemistry
    capacity_ah: float
    sensors: int = 4
    initial_soc: float = 0.5
    capacity_spread: float = 0.03
    soc_spread: float = 0.02
    resistance_spread: float = 0.1
    self_discharge_per_day: float = 0.0005
    ambient_c: float = 25.0
    seed: int = 0
    # Injected aging / weak cells (reports tests): factors on the drawn capacity and R0, whole pack and
    # per cell (empty: all 1).
    capacity_scale: float = 1.0
    resistance_scale: float = 1.0
    cell_capacity_scale: tuple[float, ...] = ()
    cell_resistance_scale: tuple[float, ...] = ()
    rc_tau_s: float = math.nan  # RC branch τ (s); NaN: the chemistry profile's fitted tau1_s
    r1_fraction: float = math.nan  # its R1 / R0; NaN: the profile's r1_ohm_ah / r0_ohm_ah
    thermal_mass_j_per_k: float | None = None
    thermal_conductance_w_per_k: float | None = None
    hysteresis: float = 0.0  # × the chemistry's OCV hysteresis half-gap M(z, T); 0 = none (LFP: 1 is real)
    hysteresis_gamma: float | None = None  # its rate per unit of SOC moved; None = the chemistry's
    hysteresis_drive_tau_s: float = 0.0  # h driven by the current filtered with this τ; 0 = instantaneous
    cell_leak_a: tuple[float, ...] = ()  # extra self-discharge current per cell (A), e.g. a soft short

    def __post_init__(self) -> None:
        fitted = chemistry_profile(self.chemistry)  # measured cells (bench/tools/fit_ecm.py)
        if math.isnan(self.rc_tau_s):
            object.__setattr__(self, "rc_tau_s", fitted.tau1_s)
        if math.isnan(self.r1_fraction):
            object.__setattr__(self, "r1_fraction", fitted.r1_ohm_ah / fitted.r0_ohm_ah)
        checks = {
            "cells": self.cells >= 1,
            "capacity_ah": self.capacity_ah > 0,
            "sensors": 1 <= self.sensors <= self.cells,
            "initial_soc": 0.0 <= self.initial_soc <= 1.0,
            "capacity_spread": 0.0 <= self.capacity_spread < 1.0,
            "soc_spread": 0.0 <= self.soc_spread <= 1.0,
            "resistance_spread": 0.0 <= self.resistance_spread < 1.0,
            "self_discharge_per_day": self.self_discharge_per_day >= 0,
            "seed": self.seed >= 0,
            "capacity_scale": 0 < self.capacity_scale <= 2,
            "resistance_scale": 0 < self.resistance_scale <= 100,
            "cell_capacity_scale": len(self.cell_capacity_scale) in (0, self.cells)
            and all(0 < x <= 2 for x in self.cell_capacity_scale),
            "cell_resistance_scale": len(self.cell_resistance_scale) in (0, self.cells)
            and all(0 < x <= 100 for x in self.cell_resistance_scale),
            "rc_tau_s": self.rc_tau_s > 0,
            "r1_fraction": self.r1_fraction > 0,
            "thermal_mass_j_per_k": self.thermal_mass_j_per_k is None or self.thermal_mass_j_per_k > 0,
            "thermal_conductance_w_per_k": (
                self.thermal_conductance_w_per_k is None or self.thermal_conductance_w_per_k > 0
            ),
            "hysteresis": 0.0 <= self.hysteresis <= 2.0,
            "hysteresis_gamma": self.hysteresis_gamma is None or self.hysteresis_gamma >= 0,
            "hysteresis_drive_tau_s": self.hysteresis_drive_tau_s >= 0,
            "cell_leak_a": len(self.cell_leak_a) in (0, self.cells) and all(x >= 0 for x in self.cell_leak_a),
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"SimPackConfig.{name}: {getattr(self, name)!r} is out of range")
        mass = self.thermal_mass_j_per_k or THERMAL_MASS_J_PER_K_PER_AH * self.capacity_ah
        object.__setattr__(self, "thermal_mass_j_per_k", mass)
        if self.thermal_conductance_w_per_k is None:
            object.__setattr__(self, "thermal_conductance_w_per_k", mass / THERMAL_TAU_S)


@dataclass(frozen=True, slots=True, eq=False)
class SimReading:
    """What the pack's sensors would report now, plus the hidden truth (arrays are read-only)."""

    cell_v: F64
    cell_t: F64
    current: float
    voltage: float
    soc_true: F64
    capacity_true: F64


class SimPack:
    """A series string of cells with per-cell capacity, SOC, R0 and temperature.

    One RC branch per cell with the same τ, so its state is one filtered current i_rc and V1 = R1·i_rc
    (R1 = r1_fraction·R0). With ``hysteresis`` > 0 each cell also has a hysteresis state h ∈ [−1, 1]
    (Plett's model, driven by the instantaneous current: dh = (sgn I − h)·γ·|I|·dt / (3600·Q); with
    ``hysteresis_drive_tau_s`` > 0 by I low-passed with that τ, as the estimator's fitted model has it) adding
    hysteresis·M(z, T)·h to the OCV, M from the chemistry profile at the cell's temperature.
    step() only advances scalars (and h when hysteresis is on); the per-cell arrays (SOC, temperature, R0) are
    committed every COMMIT_S of simulated time (and before set_balance/set_ambient), and reading() adds
    the not-yet-committed charge, so readings are exact and the trajectory depends only on the steps.
    """

    def __init__(self, config: SimPackConfig) -> None:
        """Draw the per-cell spreads from `config.seed` and start at rest at ambient temperature."""
        c = config
        self.config = c
        self.profile: ChemistryProfile = chemistry_profile(c.chemistry)
        n = c.cells
        rng = np.random.default_rng(c.seed)
        self._capacity = c.capacity_ah * (1.0 + c.capacity_spread * rng.uniform(-1.0, 1.0, n))
        self._capacity *= c.capacity_scale * np.asarray(c.cell_capacity_scale or np.ones(n))
        self._capacity.flags.writeable = False
        self._soc = np.clip(c.initial_soc + c.soc_spread * rng.uniform(-1.0, 1.0, n), 0.0, 1.0)
        self._r0_25 = self.profile.r0_ohm_ah / self._capacity
        self._r0_25 *= 1.0 + c.resistance_spread * rng.uniform(-1.0, 1.0, n)
        self._r0_25 *= c.resistance_scale * np.asarray(c.cell_resistance_scale or np.ones(n))
        self._self_discharge = (c.self_discharge_per_day / 86400.0) * (
            1.0 + SELF_DISCHARGE_SPREAD * rng.uniform(-1.0, 1.0, n)
        )
        if c.cell_leak_a:
            self._self_discharge += np.asarray(c.cell_leak_a, dtype=np.float64) / (self._capacity * 3600.0)
        self._soc_per_as = 1.0 / (self._capacity * 3600.0)
        self._drain = self._self_discharge.copy()  # SOC/s: self-discharge + balancing bleed
        self._balance_mask = 0
        self._bleed_a = 0.0
        self._cell_a = np.zeros(n)  # extra current into each cell (active balancing), A
        self._temp = np.full(n, c.ambient_c)
        self._ambient = c.ambient_c
        self._g = c.thermal_conductance_w_per_k or 0.0  # never None after SimPackConfig.__post_init__
        self._mass = c.thermal_mass_j_per_k or 0.0
        self._r1_fraction = c.r1_fraction
        self._current = 0.0
        self._i_rc = 0.0
        self._dt = math.nan
        self._decay_rc = 0.0
        self._i_h = 0.0  # the current driving the hysteresis (= current when hysteresis_drive_tau_s is 0)
        self._decay_h = 0.0
        self._pending_s = 0.0  # not yet committed: elapsed time, charge (A·s), heat ∫(I² + k·i_rc²)dt
        self._pending_as = 0.0
        self._pending_heat = 0.0
        p = self.profile
        soc_pts = np.asarray(p.soc_points, dtype=np.float64)
        ocv_pts = np.asarray(p.ocv_points, dtype=np.float64)
        # Over-/under-charge: the state may leave [0, 1] by SOC_MARGIN, and the OCV is extended steeply
        # (OVERCHARGE_V_PER_SOC) so protection sees the cell run away instead of a flat saturated curve.
        self._soc_x = np.concatenate(([-SOC_MARGIN], soc_pts, [1.0 + SOC_MARGIN]))
        self._ocv_y = np.concatenate(
            (
                [ocv_pts[0] - OVERCHARGE_V_PER_SOC * SOC_MARGIN],
                ocv_pts,
                [ocv_pts[-1] + OVERCHARGE_V_PER_SOC * SOC_MARGIN],
            )
        )
        # Keep terminal voltages inside the physical range so the gateway sees an over-voltage alarm
        # rather than an implausible (sensor-fault) reading.
        self._v_lo = p.v_min_physical + PHYSICAL_MARGIN_V
        self._v_hi = p.v_max_physical - PHYSICAL_MARGIN_V
        self._sensor_w = np.zeros((c.sensors, n))
        for k, group in enumerate(np.array_split(np.arange(n), c.sensors)):
            self._sensor_w[k, group] = 1.0 / len(group)
        self._r0 = self._r0_25
        self._sensor_t = self._temp
        self._update_temperature_derived()
        self._hyst = np.zeros(n)
        gamma = p.hyst_gamma if c.hysteresis_gamma is None else c.hysteresis_gamma
        self._hyst_rate = gamma / (3600.0 * self._capacity)  # per A·s
        self._hyst_rows = c.hysteresis * np.asarray(p.hyst_by_temp, dtype=np.float64)
        self._hyst_temps = np.asarray(p.ocv_temps_c, dtype=np.float64)

    def step(self, dt: float, current: float) -> None:
        """Advance dt seconds with `current` (A, > 0 charging) through every cell, held constant over dt."""
        if dt != self._dt:
            if not dt >= 0:
                raise ValueError(f"dt must be >= 0, got {dt}")
            self._dt = dt
            self._decay_rc = math.exp(-dt / self.config.rc_tau_s)
            tau_h = self.config.hysteresis_drive_tau_s
            self._decay_h = math.exp(-dt / tau_h) if tau_h > 0 else 0.0
        self._current = current
        i_rc = self._i_rc * self._decay_rc + current * (1.0 - self._decay_rc)
        self._i_rc = i_rc
        self._pending_s += dt
        self._pending_as += current * dt
        self._pending_heat += (current * current + self._r1_fraction * i_rc * i_rc) * dt
        i_h = self._i_h * self._decay_h + current * (1.0 - self._decay_h)
        self._i_h = i_h
        if i_h != 0.0 and self.config.hysteresis > 0.0:
            target = 1.0 if i_h > 0.0 else -1.0
            h = self._hyst
            h -= target
            h *= np.exp(-self._hyst_rate * abs(i_h) * dt)
            h += target
        if self._pending_s >= COMMIT_S - 1e-9:  # ten 0.1 s steps sum to 0.9999…
            self._commit()

    def reading(self) -> SimReading:
        """Terminal voltages OCV(SOC) + I·R0 + V1, sensor temperatures (mean of each group) and the truth."""
        soc = self._soc_state()
        v = self._ocv(soc)
        v += self._r0 * (self._current + self._r1_fraction * self._i_rc)
        np.minimum(v, self._v_hi, out=v)
        np.maximum(v, self._v_lo, out=v)
        v.flags.writeable = False
        soc_true = np.minimum(soc, 1.0)
        np.maximum(soc_true, 0.0, out=soc_true)
        soc_true.flags.writeable = False
        return SimReading(
            cell_v=v,
            cell_t=self._sensor_t,
            current=self._current,
            voltage=float(v.sum()),
            soc_true=soc_true,
            capacity_true=self._capacity,
        )

    def cv_current(self, volts: float, dt: float) -> float:
        """The string current (A) over the next `dt` that brings the terminal voltage to `volts`: what a
        charger regulating at that voltage draws (negative when the pack already sits above it)."""
        decay = math.exp(-dt / self.config.rc_tau_s)
        ocv = self._ocv(self._soc_state())
        r0 = float(self._r0.sum())
        k = self._r1_fraction
        rest = float(ocv.sum()) + r0 * k * self._i_rc * decay  # the RC branch's share that decays anyway
        return (volts - rest) / (r0 * (1.0 + k * (1.0 - decay)))

    def set_balance(self, mask: int, bleed_current_a: float = 0.05) -> None:
        """Bleed `bleed_current_a` from each cell whose bit is set in `mask` (bit i = cell i); 0 stops."""
        n = self.config.cells
        if not 0 <= mask < 1 << n:
            raise ValueError(f"balance mask {mask:#x} has bits beyond {n} cells")
        if bleed_current_a < 0:
            raise ValueError(f"bleed_current_a must be >= 0, got {bleed_current_a}")
        if mask == self._balance_mask and (mask == 0 or bleed_current_a == self._bleed_a):
            return
        self._commit()
        self._balance_mask = mask
        self._bleed_a = bleed_current_a
        self._update_drain()

    def set_cell_currents(self, extra_a: F64) -> None:
        """Add `extra_a[i]` amperes into cell i on top of the string current (an active balancer)."""
        extra = np.asarray(extra_a, dtype=np.float64)
        if extra.shape != (self.config.cells,) or not np.isfinite(extra).all():
            raise ValueError(f"expected {self.config.cells} finite currents")
        self._commit()
        self._cell_a = extra.copy()
        self._update_drain()

    def _update_drain(self) -> None:
        bits = (self._balance_mask >> np.arange(self.config.cells)) & 1
        self._drain = self._self_discharge + (bits * self._bleed_a - self._cell_a) * self._soc_per_as

    def set_ambient(self, celsius: float) -> None:
        """Change the ambient temperature the cells relax toward."""
        self._commit()
        self._ambient = celsius

    @property
    def balance_mask(self) -> int:
        """Cells currently bleeding (bit i = cell i)."""
        return self._balance_mask

    @property
    def soc_true(self) -> F64:
        """True SOC per cell, within [0, 1] (a copy)."""
        soc = np.minimum(self._soc_state(), 1.0)
        return np.maximum(soc, 0.0, out=soc)

    @property
    def capacity_true(self) -> F64:
        """True capacity per cell, Ah (read-only)."""
        return self._capacity

    @property
    def r0_true(self) -> F64:
        """True ohmic resistance per cell at its present temperature, Ω (a copy)."""
        return self._r0.copy()

    @property
    def r0_25c(self) -> F64:
        """True ohmic resistance per cell at 25 °C, Ω (a copy)."""
        return self._r0_25.copy()

    @property
    def temperature_true(self) -> F64:
        """True temperature per cell as of the last commit (at most COMMIT_S old), °C (a copy)."""
        return self._temp.copy()

    @property
    def hysteresis_true(self) -> F64:
        """True hysteresis state per cell, −1..1 (a copy; zeros without hysteresis)."""
        return self._hyst.copy()

    def _ocv(self, soc: F64) -> F64:
        """Open-circuit voltage per cell at `soc`, with the hysteresis offset when the pack has one."""
        v = np.interp(soc, self._soc_x, self._ocv_y)
        if self.config.hysteresis > 0.0:
            v += self._hysteresis_v(soc)
        return v

    def _hysteresis_v(self, soc: F64) -> F64:
        """M(z, T)·h per cell: the profile's half-gap rows, blended linearly over the cell temperature."""
        grid = self.profile.soc_points
        temps = self._hyst_temps
        z = np.clip(soc, 0.0, 1.0)
        m = np.zeros_like(z)
        for k, row in enumerate(self._hyst_rows):
            w = np.interp(self._temp, temps, np.eye(len(temps))[k]) if len(temps) > 1 else 1.0
            m += w * np.interp(z, grid, row)
        return m * self._hyst

    def _soc_state(self) -> F64:
        """SOC state including uncommitted charge (self-discharge/bleed of < COMMIT_S left out)."""
        if self._pending_as == 0.0:
            return self._soc.copy()
        soc = self._soc + self._soc_per_as * self._pending_as
        np.minimum(soc, 1.0 + SOC_MARGIN, out=soc)
        return np.maximum(soc, -SOC_MARGIN, out=soc)

    def _commit(self) -> None:
        """Fold the pending charge, drain and heat into the per-cell arrays."""
        elapsed = self._pending_s
        if elapsed <= 0.0:
            return
        soc = self._soc
        soc += self._soc_per_as * self._pending_as
        soc -= self._drain * elapsed
        np.minimum(soc, 1.0 + SOC_MARGIN, out=soc)
        np.maximum(soc, -SOC_MARGIN, out=soc)
        # Exact solution of m dT/dt = R0·q - G (T - T_amb) with q (I² + k·i_rc²) at its mean over the
        # interval; COMMIT_S is far below the thermal time constant, so the averaging is invisible.
        decay = math.exp(-elapsed * self._g / self._mass)
        heat = (1.0 - decay) * (self._pending_heat / elapsed) / self._g
        temp = self._temp
        temp *= decay
        temp += self._r0 * heat
        temp += (1.0 - decay) * self._ambient
        self._pending_s = self._pending_as = self._pending_heat = 0.0
        self._update_temperature_derived()

    def _update_temperature_derived(self) -> None:
        """R0(T) (Arrhenius, T clamped to [-40, 80] °C so it stays sane) and the sensor readings."""
        x = np.maximum(self._temp, -40.0)
        np.minimum(x, 80.0, out=x)
        x += 273.15
        np.reciprocal(x, out=x)
        x -= _INV_T_REF
        x *= _EA_OVER_R_K
        np.exp(x, out=x)
        x *= self._r0_25
        self._r0 = x
        sensor_t = self._sensor_w @ self._temp
        sensor_t.flags.writeable = False
        self._sensor_t = sensor_t


COMMIT_S = 1.0
"""Simulated time between commits of the per-cell state (SOC, temperature, R0)."""
SOC_MARGIN = 0.2
"""How far the charge state may run past empty/full (over-charge/-discharge) before it saturates."""
OVERCHARGE_V_PER_SOC = 10.0
"""OCV slope beyond full/empty: 1 V per 10 % of capacity."""
PHYSICAL_MARGIN_V = 0.005
SELF_DISCHARGE_SPREAD = 0.5
"""Relative ± spread of the per-cell self-discharge rate."""
_EA_OVER_R_K = 2400.0
"""Arrhenius activation temperature of R0 (~20 kJ/mol): R0 roughly doubles from 25 °C to 0 °C."""
_INV_T_REF = 1.0 / 298.15
