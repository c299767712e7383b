"""Aggregator: only fresh, complete, plausible samples with a moving alive counter reach the core."""

from __future__ import annotations

import numpy as np

from bmsgw.aggregator import Aggregator, Plausibility
from bmsgw.model import AlarmCode, PackSample, PackStatus


def sample(t: float, alive: int, *, pack: int = 0, cells: int = 4, v: float = 3.3) -> PackSample:
    return PackSample(
        pack=pack, t=t, cell_v=np.full(cells, v), cell_t=np.full(2, 25.0), current=1.0,
        voltage=v * cells, alive=alive,
    )  # fmt: skip


def make(stale: float = 5.0, frozen_after: int = 3) -> Aggregator:
    return Aggregator((4, 4), (2, 2), Plausibility(2.0, 4.0), stale, frozen_after)


def test_never_seen_then_online_then_stale() -> None:
    agg = make()
    usable, statuses, alarms = agg.select(0.0)
    assert usable == [None, None]
    assert statuses == [PackStatus.NEVER_SEEN] * 2
    s = sample(1.0, 0)
    assert agg.submit(s)
    usable, statuses, _ = agg.select(5.9)
    assert usable[0] is s
    assert statuses[0] is PackStatus.ONLINE
    usable, statuses, alarms = agg.select(6.1)
    assert usable[0] is None
    assert statuses[0] is PackStatus.STALE
    assert alarms == []


def test_implausible_cell_excludes_pack_and_raises_sensor_fault() -> None:
    agg = make()
    agg.submit(sample(0.0, 0))
    bad = sample(0.1, 1)
    bad.cell_v[2] = 4.9
    assert not agg.submit(bad)
    usable, statuses, alarms = agg.select(0.2)
    assert usable[0] is None
    assert statuses[0] is PackStatus.IMPLAUSIBLE
    assert [a.code for a in alarms] == [AlarmCode.SENSOR_FAULT]
    assert "cell 3" in alarms[0].detail
    assert alarms[0].since == 0.1
    assert agg.submit(sample(0.3, 2))
    assert agg.select(0.3)[1][0] is PackStatus.ONLINE


def test_nan_and_wrong_cell_count_are_implausible() -> None:
    agg = make()
    nan = sample(0.0, 0)
    nan.cell_v[0] = np.nan
    assert not agg.submit(nan)
    assert not agg.submit(sample(0.1, 1, cells=3))
    assert "expected 4 cell voltages" in agg.select(0.1)[2][0].detail
    hot = sample(0.2, 2)
    hot.cell_t[1] = 500.0
    assert not agg.submit(hot)


def test_frozen_alive_counter() -> None:
    agg = make(frozen_after=3)
    assert agg.submit(sample(0.0, 7))
    assert agg.submit(sample(0.1, 7))
    assert not agg.submit(sample(0.2, 7))
    _, statuses, alarms = agg.select(0.2)
    assert statuses[0] is PackStatus.FROZEN
    assert "alive counter stuck at 7" in alarms[0].detail
    assert agg.submit(sample(0.3, 8))
    assert agg.select(0.3)[1][0] is PackStatus.ONLINE


def test_packs_are_independent() -> None:
    agg = make()
    agg.submit(sample(0.0, 0, pack=1))
    usable, statuses, _ = agg.select(1.0)
    assert usable[0] is None
    assert usable[1] is not None
    assert statuses == [PackStatus.NEVER_SEEN, PackStatus.ONLINE]
