"""round_clamp: the one round-half-away-from-zero-and-clamp of the inverter codecs, against exact decimals."""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bmsgw.inverter.scaling import round_clamp


@given(x=st.floats(allow_nan=False), lo=st.integers(-(2**40), 0), span=st.integers(0, 2**41))
def test_matches_exact_half_up_then_clamp(x: float, lo: int, span: int) -> None:
    hi = lo + span
    expected = lo if x <= lo else hi if x >= hi else int(Decimal(x).quantize(Decimal(1), ROUND_HALF_UP))
    assert round_clamp(x, lo, hi) == expected


@pytest.mark.parametrize(
    ("x", "raw"),
    [(0.5, 1), (-0.5, -1), (1.49999, 1), (-2.5, -3), (math.inf, 9), (-math.inf, -9), (math.nan, 0)],
)
def test_edges(x: float, raw: int) -> None:
    assert round_clamp(x, -9, 9) == raw


def test_nan_is_zero_clamped_into_range() -> None:
    assert round_clamp(math.nan, 3, 9) == 3
    assert round_clamp(math.nan, -9, -3) == -3
