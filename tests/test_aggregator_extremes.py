"""Aggregator's one-pass plausibility check and cell extremes agree with the plain numpy formulas."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import event, given, settings
from hypothesis import strategies as st

from bmsgw.aggregator import Aggregator, Extremes, Plausibility
from bmsgw.model import CellRef, PackSample, PackStatus

PLAUS = Plausibility(2.0, 4.0)
# plausible values (ties on purpose: the first occurrence wins), and odd ones: outside, NaN, infinities
volts = st.one_of(st.sampled_from([2.0, 3.3, 4.0]), st.floats(2.0, 4.0))
temps = st.one_of(st.sampled_from([-40.0, 25.0, 120.0]), st.floats(-40.0, 120.0))
odd = st.sampled_from([0.0, -0.0, -41.0, 121.0, 4.001, 1.999, math.nan, math.inf, -math.inf])
currents = st.sampled_from([0.0, -25.5, 300.0])
odd_currents = st.sampled_from([1e5, -1e5, math.nan, math.inf])


def reference_problem(s: PackSample, cells: int, sensors: int) -> str | None:
    """The straightforward check: numpy min/max over the whole arrays."""
    p = PLAUS
    if s.cell_v.shape != (cells,):
        return f"expected {cells} cell voltages, got {s.cell_v.shape[0]}"
    if s.cell_t.shape != (sensors,):
        return f"expected {sensors} temperatures, got {s.cell_t.shape[0]}"
    vmin, vmax = float(np.min(s.cell_v)), float(np.max(s.cell_v))
    if not (p.cell_v_min <= vmin and vmax <= p.cell_v_max):
        bad = int(np.argmin(s.cell_v)) if not p.cell_v_min <= vmin else int(np.argmax(s.cell_v))
        return f"cell {bad + 1} voltage {s.cell_v[bad]:.3f} V outside {p.cell_v_min}..{p.cell_v_max} V"
    tmin = float(np.min(s.cell_t, initial=p.temp_min_c))
    tmax = float(np.max(s.cell_t, initial=p.temp_max_c))
    if not (p.temp_min_c <= tmin and tmax <= p.temp_max_c):
        return f"temperature {tmin if not p.temp_min_c <= tmin else tmax:.1f} °C outside physical range"
    if not (math.isfinite(s.current) and abs(s.current) <= p.current_max_a):
        return f"current {s.current} A not plausible"
    return None


def reference_extremes(s: PackSample) -> tuple[object, ...]:
    v, t = s.cell_v, s.cell_t
    iv, jv = int(np.argmin(v)), int(np.argmax(v))
    head = (float(np.min(v)), CellRef(s.pack, iv), float(np.max(v)), CellRef(s.pack, jv))
    if not t.shape[0]:
        return (*head, math.nan, CellRef(0, 0), math.nan, CellRef(0, 0), math.nan, 0)
    it, jt = int(np.argmin(t)), int(np.argmax(t))
    return (*head, float(np.min(t)), CellRef(s.pack, it), float(np.max(t)), CellRef(s.pack, jt),
            float(np.sum(t)), t.shape[0])  # fmt: skip


def same(a: tuple[object, ...], b: tuple[object, ...]) -> bool:
    """Field-wise equal, NaN equal to NaN."""
    return all(x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))
               for x, y in zip(a, b, strict=True))  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(pack=st.integers(0, 1), cells=st.integers(1, 6), sensors=st.integers(0, 12), data=st.data())
def test_examine_matches_reference(pack: int, cells: int, sensors: int, data: st.DataObject) -> None:
    n_v = data.draw(st.sampled_from([cells, cells, cells, cells + 1]))
    n_t = data.draw(st.sampled_from([sensors, sensors, sensors, sensors + 1]))
    clean = data.draw(st.booleans())  # half the samples without odd values: those exercise the extremes
    v_s, t_s, c_s = (
        (volts, temps, currents)
        if clean
        else (st.one_of(volts, odd), st.one_of(temps, odd), st.one_of(currents, odd_currents))
    )
    v = np.array(data.draw(st.lists(v_s, min_size=n_v, max_size=n_v)), dtype=np.float64)
    t = np.array(data.draw(st.lists(t_s, min_size=n_t, max_size=n_t)), dtype=np.float64)
    current = data.draw(c_s)
    s = PackSample(pack=pack, t=1.0, cell_v=v, cell_t=t, current=current, voltage=float(n_v) * 3.3)
    agg = Aggregator((cells, cells), (sensors, sensors), PLAUS, 5.0)

    expected = reference_problem(s, cells, sensors)
    accepted = agg.submit(s)
    event("accepted" if accepted else "rejected")
    assert accepted is (expected is None)
    if expected is not None:
        alarms = agg.select(1.0)[2]
        assert [a.detail for a in alarms] == [expected]
        assert agg.extremes[pack] is None
    else:
        got = agg.extremes[pack]
        assert isinstance(got, Extremes)
        assert same(tuple(got), reference_extremes(s)), (got, reference_extremes(s))


def reference_status(agg: Aggregator, i: int, t: float, stale: float) -> PackStatus:
    """The straightforward per-pack rule: excluded, never seen, stale or online."""
    fault, s = agg._fault[i], agg.newest()[i]
    if fault is not None:
        return fault[0]
    if s is None:
        return PackStatus.NEVER_SEEN
    return PackStatus.STALE if t - s.t > stale else PackStatus.ONLINE


times = st.one_of(st.floats(0.0, 20.0), st.sampled_from([0.0, 5.0, 10.0, math.nan, math.inf, -math.inf]))


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.integers(0, 1), times, st.booleans(), st.integers(0, 3), times), min_size=1, max_size=12
    )
)
def test_select_matches_reference(steps: list[tuple[int, float, bool, int, float]]) -> None:
    """Any mix of samples (good, implausible, frozen counter, odd timestamps) and select times."""
    agg = Aggregator((2, 2), (1, 1), PLAUS, 5.0, frozen_after=3)
    for pack, t, good, alive, now in steps:
        v = np.array([3.3, 3.3 if good else 9.0])
        agg.submit(PackSample(pack=pack, t=t, cell_v=v, cell_t=np.array([25.0]), current=0.0, voltage=6.6,
                              alive=alive))  # fmt: skip
        usable, statuses, alarms = agg.select(now)
        assert statuses == [reference_status(agg, i, now, 5.0) for i in range(2)]
        pairs = zip(agg.newest(), statuses, strict=True)
        assert usable == [s if st is PackStatus.ONLINE else None for s, st in pairs]
        assert [a.detail for a in alarms] == [f[2] for f in agg._fault if f is not None]
