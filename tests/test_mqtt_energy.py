"""Energy counters (pure): trapezoidal integration of V·I, split at zero crossings, never bridging gaps."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bmsgw.telemetry.energy import EnergyMeter, split_energy

power = st.floats(-20_000, 20_000, allow_nan=False)


def test_constant_charging_one_hour_is_v_times_i() -> None:
    m = EnergyMeter(max_gap_s=5)
    for k in range(3601):
        m.add(float(k), 52.0 * 10.0)
    assert m.charged_wh == pytest.approx(520.0)
    assert m.discharged_wh == 0.0


def test_discharge_counts_separately() -> None:
    m = EnergyMeter(max_gap_s=5)
    for k in range(1801):
        m.add(k * 1.0, 50.0 * -20.0)
    assert m.discharged_wh == pytest.approx(500.0)
    assert m.charged_wh == 0.0


def test_ramp_through_zero_splits_into_two_triangles() -> None:
    # +1000 W to -1000 W over 2 h: a 1 h triangle each side of the crossing, 500 Wh each.
    assert split_energy(1000.0, -1000.0, 7200.0) == pytest.approx((500.0, 500.0))
    assert split_energy(-1000.0, 3000.0, 3600.0) == pytest.approx((1125.0, 125.0))
    assert split_energy(0.0, -3600.0, 3600.0) == pytest.approx((0.0, 1800.0))
    assert split_energy(-3600.0, 0.0, 3600.0) == pytest.approx((0.0, 1800.0))


@given(power, power, st.floats(0, 10_000, allow_nan=False))
def test_split_is_nonnegative_and_nets_to_the_trapezoid(p0: float, p1: float, dt: float) -> None:
    charged, discharged = split_energy(p0, p1, dt)
    assert charged >= 0
    assert discharged >= 0
    assert charged - discharged == pytest.approx((p0 + p1) / 2 * dt / 3600, abs=1e-6)


@given(st.lists(st.tuples(st.floats(0, 10, allow_nan=False), st.one_of(st.none(), power)), max_size=60))
def test_totals_never_decrease(points: list[tuple[float, float | None]]) -> None:
    m = EnergyMeter(max_gap_s=5)
    t, before = 0.0, (0.0, 0.0)
    for dt, p in points:
        t += dt
        m.add(t, p)
        now = (m.charged_wh, m.discharged_wh)
        assert now[0] >= before[0]
        assert now[1] >= before[1]
        before = now


def test_gap_longer_than_max_is_not_bridged() -> None:
    m = EnergyMeter(max_gap_s=5)
    m.add(0.0, 1000.0)
    m.add(3600.0, 1000.0)  # an hour without states: not 1 kWh of guessed energy
    assert m.charged_wh == 0.0
    m.add(3603.6, 1000.0)
    assert m.charged_wh == pytest.approx(1.0)


@pytest.mark.parametrize("missing", [None, math.nan, math.inf])
def test_missing_power_breaks_the_line(missing: float | None) -> None:
    m = EnergyMeter(max_gap_s=5)
    m.add(0.0, 3600.0)
    m.add(1.0, missing)
    m.add(2.0, 3600.0)
    assert m.charged_wh == 0.0  # neither 0→1 nor 1→2 counted
    m.add(3.0, 3600.0)
    assert m.charged_wh == pytest.approx(1.0)


def test_time_running_backwards_is_ignored() -> None:
    m = EnergyMeter(max_gap_s=5)
    m.add(10.0, 3600.0)
    m.add(9.0, -3600.0)
    m.add(11.0, 3600.0)
    assert m.charged_wh == pytest.approx(1.0)
    assert m.discharged_wh == 0.0
