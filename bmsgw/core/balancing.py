"""Balancing planner: which cells to bleed (passive) or between which cells to move charge (active).

Pure and deterministic: arrays in, a plan out; the only state is each cell's on/off hysteresis. It runs at
the planning period (seconds), not per sample, so it is numpy rather than compiled kernel code.

- **Passive, SOC-based** (LFP, whose flat OCV hides imbalance except at the top of charge): at the top of
  charge, a cell that would reach full `delta_ah` before the last cell does is bled, until it is within half
  of that. Ah to full = (1 − SOC) × capacity, so a small cell is bled less than a big one at the same SOC.
- **Passive, voltage** (NMC and other sloped OCVs): while charging or resting, a cell above `start_v` and
  more than `delta_v` above the lowest cell is bled until it is within `delta_v − hyst_v`.
- **Active**: move charge from the highest to the lowest cell where the cells' voltages tell them apart:
  on the top knee while charging or resting (the first cell to fill gives to the last), on the bottom knee
  while discharging (the cell about to run empty is fed). That recovers part of the capacity spread itself,
  which passive balancing cannot. With a sloped OCV (`soc_based = False`) the knees span the whole range.
  Per-cell SOC estimates are not used for it: the estimator cannot tell the cells' capacities apart on the
  LFP plateau, and transfers steered by them run away (bench/balancing.py measures both).
Never bleeds while discharging (that only wastes energy); nothing when any input is not finite.
`Pipeline` puts the masks and transfers on the pack views; the CAN pack source sends transfers
(pack.dbc GatewayBalanceTransfer) only while `safe_transfers` allows them (fresh state and data, no faults).

The estimator counts the pack current for every cell; it cannot see the charge the balancer itself moves.
The planner therefore adds what it commanded (bleed or transfer current × time ÷ capacity) to the cell SOC
estimates it is given, until the estimator's next anchor (`anchors` changes) re-reads the cells. Without
that, an active balancer steered by stale per-cell SOC keeps moving charge the same way and runs away.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from bmsgw.model import (
    F64,
    AlarmCode,
    AlarmLevel,
    BmsFlags,
    GatewayState,
    PackSample,
    PackService,
    PackStatus,
    PackView,
    Transfer,
)

if TYPE_CHECKING:
    from bmsgw.core.core import PackOutput

__all__ = [
    "BalanceMode",
    "BalanceParams",
    "BalancePlan",
    "BalancePlanner",
    "Balancing",
    "Transfer",
    "balancing_mask",
    "safe_transfers",
    "transfers_sent",
]


class BalanceMode(enum.StrEnum):
    """How the pack balances."""

    OFF = "off"
    PASSIVE = "passive"
    ACTIVE = "active"


@dataclass(frozen=True, slots=True)
class BalanceParams:
    """Planner settings; `soc_based` picks the SOC rule for passive balancing (LFP) over the voltage rule."""

    mode: BalanceMode = BalanceMode.PASSIVE
    soc_based: bool = True
    top_soc: float = 0.90  # SOC rule: plan only while the fullest cell is at or above this
    delta_ah: float = 0.2  # SOC rule / active: start at this Ah spread, stop at half of it
    start_v: float = 3.45  # voltage rule: only cells at or above this
    delta_v: float = 0.015  # voltage rule: start this far above the lowest cell …
    hyst_v: float = 0.005  # … stop at delta_v − hyst_v
    rest_current_a: float = 1.0  # |I| below this is rest
    knee_high_v: float = 3.40  # active: transfers while charging/resting once the highest cell is above this
    knee_low_v: float = 3.15  # active: transfers while discharging once the lowest cell is below this
    transfer_current_a: float = 2.0  # active: current one transfer moves out of its source cell
    max_transfers: int = 1  # active: simultaneous source→sink pairs (one converter = 1)
    bleed_current_a: float = 0.2  # passive: what one bleeding cell loses (for the SOC bookkeeping)
    transfer_efficiency: float = 0.85  # active: the sink gains this fraction of what the source gives

    def __post_init__(self) -> None:
        checks = {
            "top_soc": 0.0 <= self.top_soc <= 1.0,
            "delta_ah": self.delta_ah > 0.0,
            "delta_v": self.delta_v > 0.0,
            "hyst_v": 0.0 <= self.hyst_v < self.delta_v,
            "rest_current_a": self.rest_current_a >= 0.0,
            "transfer_current_a": self.transfer_current_a > 0.0,
            "max_transfers": self.max_transfers >= 1,
            "bleed_current_a": self.bleed_current_a >= 0.0,
            "transfer_efficiency": 0.0 < self.transfer_efficiency <= 1.0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"BalanceParams.{name} = {getattr(self, name)!r} is out of range")


@dataclass(frozen=True, slots=True)
class BalancePlan:
    """Bleed mask (bit i = cell i) for passive balancing, transfers for active; `why` for logs/UI."""

    mask: int
    transfers: tuple[Transfer, ...]
    why: str


IDLE = BalancePlan(0, (), "idle")


class BalancePlanner:
    """One pack's planner: call `plan` at the planning period with the newest estimates."""

    def __init__(self, cells: int, params: BalanceParams) -> None:
        if cells < 1:
            raise ValueError(f"cells must be >= 1, got {cells}")
        self.cells = cells
        self.params = params
        self._on = np.zeros(cells, dtype=bool)
        self._active: tuple[int, int] | None = None
        self._shift = np.zeros(cells)  # SOC the balancer moved since the estimator's last anchor
        self._cell_a = np.zeros(cells)  # current the last plan draws from (−) / adds to (+) each cell
        self._t = math.nan
        self._anchors = -1

    def plan(
        self,
        cell_v: F64,
        cell_soc: F64,
        cell_capacity_ah: F64,
        current: float,
        t: float,
        anchors: int = 0,
    ) -> BalancePlan:
        """The plan at t (s) from cell voltages (V), SOC estimates (0..1), capacities (Ah), pack current
        and the estimator's anchor count; the previous plan is assumed to have run since the last call."""
        p = self.params
        if len(cell_v) != self.cells or len(cell_soc) != self.cells or len(cell_capacity_ah) != self.cells:
            raise ValueError(f"expected {self.cells} values per cell")
        if anchors != self._anchors:
            self._shift[:] = 0.0
            self._anchors = anchors
        elif math.isfinite(self._t) and t > self._t and np.isfinite(cell_capacity_ah).all():
            self._shift += self._cell_a * (t - self._t) / (3600.0 * np.maximum(cell_capacity_ah, 1e-6))
        self._t = t
        plan = self._plan(cell_v, np.clip(cell_soc + self._shift, 0.0, 1.0), cell_capacity_ah, current)
        self._cell_a[:] = 0.0
        for c in range(self.cells):
            if plan.mask >> c & 1:
                self._cell_a[c] = -p.bleed_current_a
        for tr in plan.transfers:
            self._cell_a[tr.source] -= tr.current_a
            self._cell_a[tr.sink] += p.transfer_efficiency * tr.current_a
        return plan

    def _plan(self, cell_v: F64, cell_soc: F64, cell_capacity_ah: F64, current: float) -> BalancePlan:
        p = self.params
        finite = (
            math.isfinite(current)
            and np.isfinite(cell_v).all()
            and np.isfinite(cell_soc).all()
            and np.isfinite(cell_capacity_ah).all()
        )
        if p.mode is BalanceMode.OFF or not finite:
            return self._idle("off" if finite else "estimates not finite")
        if p.mode is BalanceMode.ACTIVE:
            return self._transfer(cell_v, current)
        if current < -p.rest_current_a:
            return self._idle("discharging")
        if p.soc_based:
            return self._passive_soc(cell_soc, cell_capacity_ah)
        return self._passive_v(cell_v)

    def _idle(self, why: str) -> BalancePlan:
        self._on[:] = False
        self._active = None
        return BalancePlan(0, (), why)

    def _passive_soc(self, soc: F64, cap: F64) -> BalancePlan:
        p = self.params
        if float(soc.max()) < p.top_soc:
            return self._idle("below the top of charge")
        to_full = (1.0 - soc) * cap
        excess = float(to_full.max()) - to_full  # Ah each cell is ahead of the last one to fill
        self._on = np.where(self._on, excess > 0.5 * p.delta_ah, excess > p.delta_ah)
        return BalancePlan(_mask(self._on), (), "soc spread at the top of charge")

    def _passive_v(self, v: F64) -> BalancePlan:
        p = self.params
        above = v - float(v.min())
        start = (v >= p.start_v) & (above > p.delta_v)
        keep = (v >= p.start_v - p.hyst_v) & (above > p.delta_v - p.hyst_v)
        self._on = np.where(self._on, keep, start)
        return BalancePlan(_mask(self._on), (), "voltage spread")

    def _transfer(self, v: F64, current: float) -> BalancePlan:
        p = self.params
        discharging = current < -p.rest_current_a
        if p.soc_based:
            on_knee = float(v.min()) <= p.knee_low_v if discharging else float(v.max()) >= p.knee_high_v
            if not on_knee:
                self._active = None
                return BalancePlan(0, (), "plateau: cells indistinguishable")
        spread = float(v.max() - v.min())
        if spread <= (p.delta_v - p.hyst_v if self._active is not None else p.delta_v):
            self._active = None
            return BalancePlan(0, (), "balanced")
        order = np.argsort(v, kind="stable")
        pairs = []
        for k in range(min(p.max_transfers, self.cells // 2)):
            pairs.append(Transfer(int(order[-1 - k]), int(order[k]), p.transfer_current_a))
        self._active = (pairs[0].source, pairs[0].sink)
        return BalancePlan(0, tuple(pairs), "bottom knee" if discharging else "top knee")


def _mask(on: np.ndarray) -> int:
    return sum(1 << int(i) for i in np.flatnonzero(on))


class Balancing:
    """Every pack's planner, run at most every `period_s` on the newest samples and core estimates."""

    def __init__(
        self, planners: Sequence[BalancePlanner | None], rated_ah: Sequence[float], period_s: float
    ) -> None:
        self.planners = list(planners)
        self.rated_ah = [float(x) for x in rated_ah]
        self.period_s = period_s
        self.masks: tuple[int, ...] = (0,) * len(self.planners)
        self.transfers: tuple[tuple[Transfer, ...], ...] = ((),) * len(self.planners)
        self._next = -math.inf

    def step(
        self, t: float, samples: Sequence[PackSample | None], estimates: Sequence[PackOutput] | None
    ) -> None:
        """Re-plan at `t` when the period is up; a pack without a sample or estimate gets an idle plan."""
        if t < self._next:
            return
        self._next = t + self.period_s
        masks = []
        transfers: list[tuple[Transfer, ...]] = []
        for i, planner in enumerate(self.planners):
            s = samples[i]
            po = estimates[i] if estimates is not None else None
            if planner is None or s is None or po is None or len(po.cell_soc) != len(s.cell_v):
                masks.append(0)
                transfers.append(())
                continue
            cap = self.rated_ah[i]
            capacity = np.full(len(s.cell_v), cap)
            if po.health is not None and np.isfinite(po.health.cell_capacity_ah).all():
                capacity = po.health.cell_capacity_ah
            plan = planner.plan(s.cell_v, po.cell_soc, capacity, s.current, t, po.anchors)
            masks.append(plan.mask)
            transfers.append(plan.transfers)
        self.masks = tuple(masks)
        self.transfers = tuple(transfers)


# Alarms (at ALARM level or above, on the pack or system-wide) that stop transfers: the data or the pack
# cannot be trusted, or heat must not be added. Cell over/under-voltage and imbalance do not: moving charge
# out of the high cell into the low one is what relieves them.
_STOP_CODES = frozenset(
    {
        AlarmCode.COMM_LOST,
        AlarmCode.SENSOR_FAULT,
        AlarmCode.BMS_FAULT,
        AlarmCode.OVERTEMPERATURE,
        AlarmCode.THERMAL_RUNAWAY,
        AlarmCode.PACK_ISOLATED,
    }
)


def transfers_sent(state: GatewayState, view: PackView) -> tuple[Transfer, ...]:
    """The active-balancing transfers the gateway commands for `view` in `state`: the plan wherever
    `safe_transfers` lets it run (the state's own age aside), else ()."""
    return safe_transfers(state, view, state.t, math.inf)


def balancing_mask(state: GatewayState, view: PackView) -> int:
    """Cells of `view` being balanced in `state` (bit 0 = cell 1): bled, or in a transfer sent."""
    mask = view.balance_mask
    for tr in transfers_sent(state, view):
        mask |= 1 << tr.source | 1 << tr.sink
    return mask


def safe_transfers(state: GatewayState, view: PackView, now: float, max_age_s: float) -> tuple[Transfer, ...]:
    """The view's planned transfers if running them at `now` is safe, else (): the state is at most
    `max_age_s` old, the pack online with fresh data, not isolated, no BMS fault flag, no FAULT-level alarm
    and no stopping alarm (comm, sensor, BMS, temperature) on it or system-wide."""
    if not view.transfers or not now - state.t <= max_age_s:
        return ()
    sample = view.sample
    if view.status is not PackStatus.ONLINE or sample is None or view.service is PackService.ISOLATED:
        return ()
    if sample.flags & BmsFlags.BMS_FAULT:
        return ()
    for a in state.alarms:
        if a.pack in (None, view.pack) and (
            a.level is AlarmLevel.FAULT or (a.level >= AlarmLevel.ALARM and a.code in _STOP_CODES)
        ):
            return ()
    return view.transfers
