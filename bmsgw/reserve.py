"""Backup reserve: DCL tapers to 0 at the reserve SOC; force/full-charge requests (Pylontech 0x35C).

Pure and clock-free: time `t` (gateway seconds) and SOC (fraction 0..1, NaN = unknown) are passed in. The
request bits map to Pylontech 0x35C / 0x92 status bits 5 (force charge I), 4 (force charge II) and 3
(full charge request) in every codec that carries them.
"""

from __future__ import annotations

import math
from dataclasses import replace

from bmsgw.ems import cap, reserve_factor
from bmsgw.model import Limits, Reason

__all__ = ["FullChargeTimer", "Hysteresis", "taper"]


def taper(limits: Limits, soc: float, reserve: float, band: float, reason: Reason) -> Limits:
    """DCL scaled from the core's value at reserve + band down to 0 at/below the reserve (SOC unknown: 0)."""
    dcl = cap(limits.dcl, limits.dcl.value * reserve_factor(soc, reserve, band), reason)
    return limits if dcl is limits.dcl else replace(limits, dcl=dcl)


class Hysteresis:
    """A request that turns on when SOC falls below `on_below` and off once SOC reaches `off_at`."""

    def __init__(self, on_below: float, off_at: float) -> None:
        """Requires on_below <= off_at (fractions of SOC)."""
        if on_below > off_at:
            raise ValueError(f"on_below {on_below} must not exceed off_at {off_at}")
        self.on_below = on_below
        self.off_at = off_at
        self.on = False

    def update(self, soc: float) -> bool:
        """The request after seeing `soc`; an unknown SOC keeps the previous state."""
        if math.isfinite(soc):
            if soc < self.on_below:
                self.on = True
            elif soc >= self.off_at:
                self.on = False
        return self.on


class FullChargeTimer:
    """Requests a full charge once `after_s` passed without SOC reaching `full_soc`; cleared when it does."""

    def __init__(self, after_s: float, full_soc: float, since_full_s: float = 0.0) -> None:
        """`since_full_s`: time already spent without a full charge (restored from the state file)."""
        self.after_s = after_s
        self.full_soc = full_soc
        self.since_full_s = max(0.0, since_full_s)
        self._t: float | None = None

    def update(self, t: float, soc: float) -> bool:
        """Account the time since the previous call (gateway time never runs backwards); True = request."""
        if self._t is not None:
            self.since_full_s += max(0.0, t - self._t)
        self._t = t
        if math.isfinite(soc) and soc >= self.full_soc:
            self.since_full_s = 0.0
        return self.since_full_s >= self.after_s
