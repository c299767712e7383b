"""History ring buffer, state snapshot JSON, and the web API's request parsers (property tests)."""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from web_rig import web_settings

from bmsgw.ems import Command
from bmsgw.model import GatewayState, PackSample
from bmsgw.pipeline import Pipeline
from bmsgw.telemetry.history_buffer import PACK_SERIES, SYSTEM_SERIES, RingHistory
from bmsgw.telemetry.snapshot import state_dict
from bmsgw.telemetry.web import _ems_command, _float_param, _int_param


class Feed:
    """A real pipeline stepping on synthetic samples of one 16-cell pack."""

    def __init__(self) -> None:
        self.pipe = Pipeline(web_settings(f"pack-{uuid.uuid4()}"))
        self.k = 0

    def state(self, t: float, current: float, cell_max: float = 3.30) -> GatewayState:
        cells = np.full(16, 3.29)
        cells[3] = cell_max
        self.k += 1
        s = PackSample(0, t, cells, np.full(4, 25.0), current=current, voltage=float(np.sum(cells)),
                       alive=self.k % 16)  # fmt: skip
        assert self.pipe.submit(s)
        return self.pipe.step(t)


def test_buckets_hold_mean_min_and_max() -> None:
    feed, hist = Feed(), RingHistory(("p1",), resolution_s=10.0)
    for i in range(100):  # 0..9.9 s: current 0..99 A, one 3.40 V spike at 5 s
        t = i * 0.1
        hist.record(t, feed.state(t, float(i), 3.40 if i == 50 else 3.30))
    hist.record(10.0, feed.state(10.0, 500.0))  # opens the next bucket
    r = hist.query(None, None)
    assert r.t == [0.0, 10.0]
    # Sampled every resolution/10 = 1 s: i = 0, 10, ..., 90.
    assert r.packs["p1"]["current"][0] == pytest.approx(45.0)
    assert r.packs["p1"]["cell_v_max"][0] == pytest.approx(3.40)
    assert r.system["cell_v_min"][0] == pytest.approx(3.29)
    assert r.system["current"][1] == 500.0  # the open bucket is part of the answer
    assert set(r.system) == {n for n, _ in SYSTEM_SERIES}
    assert set(r.packs["p1"]) == {n for n, _ in PACK_SERIES}
    json.dumps(r.as_dict(), allow_nan=False)


def test_ring_keeps_only_its_span_and_filters_by_time() -> None:
    feed, hist = Feed(), RingHistory(("p1",), resolution_s=1.0, span_s=5.0)
    for i in range(20):
        hist.record(float(i), feed.state(float(i), float(i)))
    r = hist.query(None, None)
    assert r.t == [14.0, 15.0, 16.0, 17.0, 18.0, 19.0]  # 5 closed buckets + the open one
    assert r.system["current"] == [14.0, 15.0, 16.0, 17.0, 18.0, 19.0]
    assert hist.query(15.5, 17.0).t == [16.0, 17.0]
    merged = hist.query(None, None, points=3)
    assert merged.resolution_s == 2.0
    assert merged.t == [14.0, 16.0, 18.0]
    assert merged.system["current"] == [14.5, 16.5, 18.5]  # mean of means
    assert merged.system["cell_v_max"] == [3.30, 3.30, 3.30]


def test_gaps_and_offline_packs_are_none() -> None:
    feed, hist = Feed(), RingHistory(("p1",), resolution_s=1.0)
    hist.record(0.0, feed.state(0.0, 1.0))
    stale = feed.pipe.step(10.0)  # no sample for 10 s: the pack is stale, the system unusable
    assert not stale.usable
    hist.record(10.0, stale)
    r = hist.query(None, None)
    assert r.t == [0.0, 10.0]  # no invented buckets in between
    assert r.packs["p1"]["current"] == [1.0, None]
    assert r.system["voltage"][1] is None
    assert r.system["ccl"][1] == 0.0  # the safe limits are data, not a gap
    hist.record(5.0, stale)  # time running backwards is ignored
    assert hist.query(None, None).t == [0.0, 10.0]


def test_snapshot_is_strict_json_without_data() -> None:
    pipe = Pipeline(web_settings(f"pack-{uuid.uuid4()}"))
    doc = state_dict(pipe.step(0.0))  # nothing seen yet: NaN measurements
    text = json.dumps(doc, allow_nan=False)
    assert json.loads(text)["temperature"] is None
    assert doc["packs"][0]["sample"] is None
    assert doc["cell_v_min"] is None


@given(st.text(max_size=40))
def test_query_parameters_raise_only_value_error(raw: str) -> None:
    for parse in (lambda q: _float_param(q, "x"), lambda q: _int_param(q, "x", 1, 100)):
        try:
            value = parse({"x": raw})
        except ValueError as exc:
            message = str(exc)
        else:
            message = "x="
            assert value is None or math.isfinite(value)
        assert "x=" in message


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)
BODIES = JSON | st.fixed_dictionaries(
    {}, optional={"amperes": JSON, "timeout_s": JSON, "enable": JSON}
)  # fmt: skip


@given(st.sampled_from(["charge-current-limit", "discharge-current-limit", "force-charge"]), BODIES)
def test_control_bodies_raise_only_value_error(action: str, body: Any) -> None:
    try:
        cmd, timeout = _ems_command(action, body, Command())
    except ValueError:
        return
    assert 1 <= timeout <= 86_400
    for cap in (cmd.max_charge_a, cmd.max_discharge_a):
        assert cap is None or 0 <= cap <= 10_000
