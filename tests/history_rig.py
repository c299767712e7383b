"""Simulator histories for the history/report tests: SimPack physics → real Pipeline → HistoryRecorder → DB.

Runs synchronously at simulated time (no event loop, no CAN), so months of sessions take seconds. A
session is a list of phases; each phase sets a current until its stop condition holds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bmsgw.config import Settings
from bmsgw.model import GatewayState, PackSample
from bmsgw.pipeline import Pipeline
from bmsgw.sim import SimPack, SimPackConfig
from bmsgw.telemetry.energy import EnergyCounters
from bmsgw.telemetry.history_db import HistoryDB
from bmsgw.telemetry.history_service import HistoryRecorder

DAY = 86_400.0
EPOCH0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


@dataclass(frozen=True)
class Phase:
    """Drive `current` (A per pack, > 0 charging) until `until(state)` or `max_s` seconds have passed."""

    current: float | Callable[[float], float]  # A, or a function of the epoch time
    max_s: float
    until: Callable[[GatewayState], bool] = lambda _: False
    obey_limits: bool = True


def history_settings(tmp: Path, cells: int = 8, capacity_ah: float = 10.0, **history: Any) -> Settings:
    """One pack on the pack CAN bus, history enabled under `tmp`."""
    return Settings.model_validate(
        {
            "gateway": {"state_dir": str(tmp), "stale_after_s": 30},
            "packs": [{"id": "p1", "cells": cells, "sensors": 2, "capacity_ah": capacity_ah}],
            "web": {"enabled": False},
            "history": {"enabled": True, "series_period_s": 60, "cells_period_s": 300, **history},
        }
    )


def run_session(
    settings: Settings,
    db: HistoryDB,
    pack: SimPackConfig,
    start: float,
    phases: Sequence[Phase],
    dt: float = 2.0,
) -> GatewayState:
    """One gateway run starting at epoch `start`: phases in order; rows written to `db`; the last state."""
    pipe = Pipeline(settings)
    energy = EnergyCounters(len(settings.packs), settings.gateway.stale_after_s)
    energy.restore(*db.counters())  # what the history service does at start
    rec = HistoryRecorder(settings, offset=start, energy=energy)
    sim = SimPack(pack)
    t, k = 0.0, 0
    state = pipe.step(t)
    for ph in phases:
        end = t + ph.max_s
        while t < end:
            current = ph.current(start + t) if callable(ph.current) else ph.current
            if ph.obey_limits:
                lim = state.limits
                current = min(max(current, -lim.dcl.value), lim.ccl.value)
            sim.step(dt, current)
            t += dt
            k += 1
            r = sim.reading()
            pipe.submit(PackSample(0, t, r.cell_v, r.cell_t, r.current, r.voltage, alive=k % 16))
            state = pipe.step(t)
            energy.see(state)
            rec.see(state)
            if ph.until(state):
                break
    rec.close()
    db.write(rec.take())
    return state


def full(state: GatewayState) -> bool:
    """Charging has tapered: the core's CCL fell to (almost) nothing near the top."""
    return state.limits.ccl.value < 0.5 and state.cell_v_max > 3.4


def below(volts: float) -> Callable[[GatewayState], bool]:
    """Stop when the lowest cell is at or below `volts`."""
    return lambda s: s.cell_v_min <= volts


def capacity_cycle(rest_s: float = 1200.0) -> list[Phase]:
    """Charge to full at 1 C, rest, discharge at 1 C with a mid-SOC rest, to 2.85 V, rest."""
    return [
        Phase(10.0, 3 * 3600, full),
        Phase(0.0, rest_s),
        Phase(-10.0, 1440),  # to ~60 % SOC
        Phase(0.0, rest_s),
        Phase(-10.0, 3 * 3600, below(2.85), obey_limits=False),  # a capacity test runs to the cut-off
        Phase(0.0, rest_s),
    ]


def aged(base: SimPackConfig, months: int) -> SimPackConfig:
    """The pack after `months` of use: -2 % capacity and +10 % resistance per month."""
    return replace(base, capacity_scale=1 - 0.02 * months, resistance_scale=1 + 0.1 * months)
