"""Raw field values for the inverter codecs: round half away from zero and clamp, never wrap."""

from __future__ import annotations

import math

__all__ = ["round_clamp"]


def round_clamp(x: float, lo: int, hi: int) -> int:
    """`x` rounded half away from zero, clamped to [lo, hi]; ±inf → the bound, NaN → 0 clamped into range."""
    if math.isnan(x):
        return min(max(0, lo), hi)
    if x >= hi:
        return hi
    if x <= lo:
        return lo
    return math.floor(x + 0.5) if x >= 0 else -math.floor(0.5 - x)
