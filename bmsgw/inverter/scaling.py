"""Raw field values for the inverter codecs: round half away from zero and clamp, never wrap; unknown
temperatures; the SOC an inverter that ignores zero limits is shown."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Final

from bmsgw.model import GatewayState

__all__ = ["UNKNOWN_TEMPERATURE_C", "known_temperature", "round_clamp", "soc_following_limits"]

UNKNOWN_TEMPERATURE_C: Final = 25.0
"""°C sent for an unknown temperature where a protocol has no "no value" marker (default of the
[[outputs]] key unknown_temperature_c): mid-band of the usual full-current derating band (10-40 °C), so
an inverter neither derates nor stops for a pack without sensors."""


def round_clamp(x: float, lo: int, hi: int) -> int:
    """`x` rounded half away from zero, clamped to [lo, hi]; ±inf → the bound, NaN → 0 clamped into range."""
    if math.isnan(x):
        return min(max(0, lo), hi)
    if x >= hi:
        return hi
    if x <= lo:
        return lo
    return math.floor(x + 0.5) if x >= 0 else -math.floor(0.5 - x)


def known_temperature(t_c: float, unknown_c: float = UNKNOWN_TEMPERATURE_C) -> float:
    """`t_c` if finite, else `unknown_c`: an unknown temperature (no sensor) must not read as 0 °C."""
    return t_c if math.isfinite(t_c) else unknown_c


def soc_following_limits(state: GatewayState) -> GatewayState:
    """`state` with SOC 0 while discharging is forbidden (DCL 0 or disabled), else 1 while charging is: for
    inverters that keep going at zero limits and stop only on the SOC (Deye off-grid, Battery-Emulator #873).
    Discharge wins when both are forbidden: draining a battery that cannot be seen is the lasting damage."""
    lim = state.limits
    if lim.dcl.value <= 0.0 or not lim.discharge_enable:
        return replace(state, soc=0.0)
    if lim.ccl.value <= 0.0 or not lim.charge_enable:
        return replace(state, soc=1.0)
    return state
