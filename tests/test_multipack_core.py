"""The core's share of the multi-pack logic (Core.set_share) and MultiPack's invariants on random input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmsgw.core import Core, CoreOutput, CoreParams, PackOutput
from bmsgw.model import (
    Alarm,
    AlarmCode,
    AlarmLevel,
    Chemistry,
    Limit,
    Limits,
    PackSample,
    PackService,
    PackStatus,
    Reason,
)
from bmsgw.multipack import MultiPack, MultipackParams

MAX_CHG = 40.0
MAX_DIS = 80.0
_ZERO = Limit(0.0, Reason.FAULT)
_LIMITS = Limits(Limit(56.0, Reason.CONFIG), _ZERO, _ZERO, Limit(48.0, Reason.CONFIG), False, False)


def core(n: int, temps: tuple[float, ...] | None = None) -> tuple[Core, list[PackSample]]:
    p = CoreParams.defaults(
        Chemistry.LFP, (4,) * n, (1,) * n, (100.0,) * n,
        max_charge_current_a=MAX_CHG, max_discharge_current_a=MAX_DIS, recovery_ramp_s=0.0,
    )  # fmt: skip
    temps = temps or (25.0,) * n
    samples = [
        PackSample(i, 0.0, np.full(4, 3.3), np.full(1, temps[i]), 0.0, 13.2, alive=0) for i in range(n)
    ]
    return Core(p, [0.5] * n), samples


def test_default_is_n_times_the_weakest_pack() -> None:
    c, s = core(3, (25.0, 43.0, 25.0))
    out = c.step(0.0, s)
    ccl_p = c.debug_state()["ccl_p"]
    assert out.limits.ccl.value == 3 * min(ccl_p)
    assert out.ccl_pack == 1


def test_total_limit_is_min_of_pack_limit_over_share() -> None:
    c, s = core(3, (25.0, 43.0, 25.0))
    for i, share in enumerate((0.6, 0.1, 0.3)):
        c.set_share(i, share, 1.0)
    out = c.step(0.0, s)
    ccl_p = c.debug_state()["ccl_p"]
    expected = min(ccl_p[0] / 0.6, ccl_p[1] / 0.1, ccl_p[2] / 0.3)
    assert out.limits.ccl.value == pytest.approx(expected)
    assert out.limits.dcl.value == pytest.approx(MAX_DIS / 0.6)
    assert (out.ccl_pack, out.dcl_pack) == (0, 0)


def test_shares_are_normalised_over_the_packs_that_count() -> None:
    c, s = core(3)
    for i, share in enumerate((2.0, 1.0, 1.0)):
        c.set_share(i, share, 1.0)
    assert c.step(0.0, s).limits.ccl.value == pytest.approx(MAX_CHG / 0.5)
    c.set_share(2, 1.0, 0.0)  # held out: the other two split 2:1
    out = c.step(0.1, s)
    assert out.limits.ccl.value == pytest.approx(MAX_CHG / (2 / 3))
    assert out.soc == pytest.approx(0.5)


def test_ramping_pack_blends_from_without_to_with() -> None:
    c, s = core(3)
    c.set_share(2, 1.0, 0.25)
    out = c.step(0.0, s)
    assert out.limits.ccl.value == pytest.approx(2 * MAX_CHG + 0.25 * MAX_CHG)
    assert out.limits.ccl.reason is Reason.RECOVERY
    assert out.ccl_pack == 2


def test_ramping_weak_pack_lowers_at_once() -> None:
    c, s = core(2, (25.0, 44.0))
    c.set_share(1, 1.0, 0.1)
    out = c.step(0.0, s)
    ccl_p = c.debug_state()["ccl_p"]
    assert out.limits.ccl.value == pytest.approx(2 * ccl_p[1])
    assert out.limits.ccl.reason is Reason.TEMPERATURE_HIGH


def test_no_pack_admitted_means_zero_with_the_weakest_reason() -> None:
    c, s = core(2, (25.0, 44.0))
    c.set_share(0, 1.0, 0.0)
    c.set_share(1, 1.0, 0.0)
    out = c.step(0.0, s)
    assert (out.limits.ccl.value, out.limits.dcl.value) == (0.0, 0.0)
    assert out.limits.ccl.reason is Reason.TEMPERATURE_HIGH
    assert not out.limits.charge_enable
    assert not any(a.code is AlarmCode.COMM_LOST for a in out.alarms)


@pytest.mark.parametrize(("share", "admit"), [(0.0, 1.0), (-1.0, 1.0), (float("nan"), 1.0), (1.0, 1.5)])
def test_set_share_rejects_bad_values(share: float, admit: float) -> None:
    c, _ = core(1)
    with pytest.raises(ValueError, match="share must be > 0"):
        c.set_share(0, share, admit)


# --- MultiPack on random inputs ----------------------------------------------------------------------------

_STATUS = st.sampled_from([PackStatus.ONLINE] * 4 + [PackStatus.STALE, PackStatus.IMPLAUSIBLE])


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.floats(0.0, 3.0),
            st.lists(
                st.tuples(_STATUS, st.floats(45.0, 60.0), st.floats(-200.0, 200.0)), min_size=4, max_size=4
            ),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_roles_are_consistent(steps: list[tuple[float, list[tuple[PackStatus, float, float]]]]) -> None:
    mp = MultiPack(4, MultipackParams(hot_add_window_v=2.0, hot_add_ramp_s=2.0, share_filter_s=1.0))
    t = 0.0
    for dt, packs in steps:
        t += dt
        usable = [
            PackSample(i, t, np.full(16, v / 16), np.full(1, 25.0), cur, v)
            if status is PackStatus.ONLINE
            else None
            for i, (status, v, cur) in enumerate(packs)
        ]
        sensor = [Alarm(AlarmCode.SENSOR_FAULT, AlarmLevel.ALARM, t, i, "bad") for i, p in enumerate(packs)
                  if p[0] is PackStatus.IMPLAUSIBLE]  # fmt: skip
        roles = mp.update(t, usable, [p[0] for p in packs], sensor)
        members = [r for r in roles if r.service in (PackService.RUNNING, PackService.RAMPING)]
        if members:
            assert sum(r.share for r in members) == pytest.approx(1.0)
            assert all(r.share > 0.0 and r.weight > 0.0 for r in members)
        for r, (status, _, _) in zip(roles, packs, strict=True):
            assert 0.0 <= r.admit <= 1.0
            assert r.contactor_open == (r.service in (PackService.JOINING, PackService.ISOLATED))
            assert (r.admit > 0.0) == (r.service in (PackService.RUNNING, PackService.RAMPING))
            if status is not PackStatus.ONLINE:
                assert r.service is PackService.ISOLATED
        isolated = {a.pack for a in mp.system_alarms(()) if a.code is AlarmCode.PACK_ISOLATED}
        assert isolated == {i for i, r in enumerate(roles) if r.service is PackService.ISOLATED}


def test_roles_are_kept_while_nothing_moves_and_shares_advance_at_the_filter_cadence() -> None:
    mp = MultiPack(2, MultipackParams(share_filter_s=1.0))
    statuses = [PackStatus.ONLINE] * 2

    def usable(t: float, i0: float, i1: float) -> list[PackSample | None]:
        return [PackSample(i, t, np.full(4, 3.3), np.full(1, 25.0), c, 13.2) for i, c in enumerate((i0, i1))]

    roles = mp.update(0.0, usable(0.0, 0.0, 0.0), statuses)
    for k in range(1, 50):  # no current to measure, same statuses: the very same roles
        assert mp.update(0.001 * k, usable(0.001 * k, 0.0, 0.0), statuses) is roles
    seen = set()
    for k in range(50, 150):  # 30 A / 10 A at 1 ms steps: the filter advances every 10 ms (1 % of 1 s)
        seen.add(id(mp.update(0.001 * k, usable(0.001 * k, 30.0, 10.0), statuses)))
    assert 9 <= len(seen) <= 11
    for k in range(150, 1200):
        mp.update(0.001 * k, usable(0.001 * k, 30.0, 10.0), statuses)
    assert [r.share for r in mp.roles] == pytest.approx([0.75, 0.25])
    assert mp.shares == tuple(r.share for r in mp.roles)


def test_no_alarm_capping_when_the_core_opens_every_pack() -> None:
    """A system shutdown (every pack asked open) is never softened into pack-level warnings."""
    mp = MultiPack(2, MultipackParams())
    usable = [PackSample(i, 0.0, np.full(4, 3.3), np.full(1, 25.0), 0.0, 13.2) for i in range(2)]
    mp.update(0.0, usable, [PackStatus.ONLINE] * 2)
    assert [r.service for r in mp.roles] == [PackService.RUNNING] * 2
    trip = Alarm(AlarmCode.BMS_FAULT, AlarmLevel.FAULT, 0.0, 0, "")

    def output(open_: tuple[bool, bool]) -> CoreOutput:
        packs = tuple(PackOutput(0.5, 1.0, np.full(4, 0.5), o) for o in open_)
        return CoreOutput(packs, 0.5, 1.0, _LIMITS, (trip,))

    mp.observe(output((True, False)))  # pack 0 faults, pack 1 keeps running: capped
    mp.update(0.1, usable, [PackStatus.ONLINE] * 2)
    assert [a.level for a in mp.system_alarms((trip,)) if a.code is AlarmCode.BMS_FAULT] == [
        AlarmLevel.WARNING
    ]
    mp.observe(output((True, True)))  # now the core opens every pack: nothing runs on, nothing is capped
    assert [a.level for a in mp.system_alarms((trip,)) if a.code is AlarmCode.BMS_FAULT] == [AlarmLevel.FAULT]
