"""EmsCommands: commands only tighten the core's limits, and revert to automatic without a heartbeat."""

from __future__ import annotations

import math

import pytest
from fakes import lim
from hypothesis import given
from hypothesis import strategies as st

from bmsgw.ems import RESERVE_TAPER, Command, EmsCommands, tighten
from bmsgw.model import Limit, Limits, Reason


def limits(ccl: float = 50.0, dcl: float = 80.0, *, charge: bool = True, discharge: bool = True) -> Limits:
    return lim(ccl=ccl, dcl=dcl, charge=charge, discharge=discharge)


def test_no_command_changes_nothing() -> None:
    lim = limits()
    assert EmsCommands().apply(lim, 0.0, 0.5) is lim


def test_caps_bind_only_when_tighter() -> None:
    lim = tighten(limits(), Command(max_charge_a=20.0, max_discharge_a=100.0), 0.5)
    assert lim.ccl == Limit(20.0, Reason.EMS)
    assert lim.dcl == Limit(80.0, Reason.CONFIG)  # 100 A would raise it: the core's limit stays


def test_cap_equal_to_the_core_keeps_the_core_reason() -> None:
    assert tighten(limits(), Command(max_charge_a=50.0), 0.5).ccl == Limit(50.0, Reason.CONFIG)


def test_reserve_soc_zeroes_dcl_at_and_below_with_a_taper_above() -> None:
    cmd = Command(reserve_soc=0.30)
    assert tighten(limits(), cmd, 0.30).dcl == Limit(0.0, Reason.EMS)
    assert tighten(limits(), cmd, 0.10).dcl == Limit(0.0, Reason.EMS)
    half = tighten(limits(), cmd, 0.30 + RESERVE_TAPER / 2).dcl
    assert half.value == pytest.approx(40.0)
    assert half.reason is Reason.EMS
    assert tighten(limits(), cmd, 0.30 + RESERVE_TAPER).dcl == Limit(80.0, Reason.CONFIG)
    assert tighten(limits(), cmd, math.nan).dcl.value == 0.0  # SOC unknown: no discharge below a reserve
    assert tighten(limits(), cmd, 0.10).ccl == Limit(50.0, Reason.CONFIG)  # charging stays allowed


def test_disconnect_stops_both_directions() -> None:
    lim = tighten(limits(), Command(disconnect=True), 0.5)
    assert (lim.ccl, lim.dcl) == (Limit(0.0, Reason.EMS), Limit(0.0, Reason.EMS))
    assert not lim.charge_enable
    assert not lim.discharge_enable
    assert lim.cvl == limits().cvl  # voltages untouched (never CVL 0)


def test_zero_from_the_core_keeps_its_reason() -> None:
    core = Limits(
        cvl=Limit(55.2, Reason.COMM_LOST),
        ccl=Limit(0.0, Reason.COMM_LOST),
        dcl=Limit(0.0, Reason.COMM_LOST),
        dvl=Limit(46.4, Reason.COMM_LOST),
        charge_enable=False,
        discharge_enable=False,
    )
    lim = tighten(core, Command(disconnect=True, max_charge_a=0.0), 0.5)
    assert lim.ccl.reason is Reason.COMM_LOST
    assert lim.dcl.reason is Reason.COMM_LOST


def test_force_charge_sets_the_request_only_while_charging_is_allowed() -> None:
    assert tighten(limits(), Command(force_charge=True), 0.1).force_charge_1
    assert not tighten(limits(charge=False), Command(force_charge=True), 0.1).force_charge_1


def test_heartbeat_timeout_reverts_to_automatic() -> None:
    ems = EmsCommands()
    ems.write(Command(max_charge_a=10.0), t=100.0, timeout_s=60.0)
    assert ems.apply(limits(), 159.9, 0.5).ccl.value == 10.0
    assert ems.remaining(130.0) == pytest.approx(30.0)
    ems.write(Command(max_charge_a=10.0, heartbeat=1), t=150.0, timeout_s=60.0)  # heartbeat: 60 s more
    assert ems.apply(limits(), 209.9, 0.5).ccl.value == 10.0
    assert ems.apply(limits(), 210.0, 0.5).ccl == Limit(50.0, Reason.CONFIG)
    assert ems.command(210.0) == Command()
    assert ems.command(100.0) == Command()  # expired commands do not come back
    assert ems.remaining(210.0) == 0.0


limit_values = st.floats(0.0, 1000.0, allow_nan=False)
commands = st.builds(
    Command,
    reserve_soc=st.none() | st.floats(0.0, 1.0),
    max_charge_a=st.none() | st.floats(0.0, 6553.4),
    max_discharge_a=st.none() | st.floats(0.0, 6553.4),
    force_charge=st.booleans(),
    disconnect=st.booleans(),
    inverter_state=st.none() | st.integers(1, 3),
    heartbeat=st.integers(0, 0xFFFF),
)


@given(
    commands,
    limit_values,
    limit_values,
    st.booleans(),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
)
def test_commands_never_loosen(
    cmd: Command, ccl: float, dcl: float, charge: bool, discharge: bool, soc: float
) -> None:
    core = limits(ccl, dcl, charge=charge, discharge=discharge)
    out = tighten(core, cmd, soc)
    assert 0.0 <= out.ccl.value <= core.ccl.value
    assert 0.0 <= out.dcl.value <= core.dcl.value
    assert out.charge_enable <= core.charge_enable
    assert out.discharge_enable <= core.discharge_enable
    assert (out.cvl, out.dvl) == (core.cvl, core.dvl)
    assert out.ccl.reason is Reason.EMS or out.ccl == core.ccl
    assert out.dcl.reason is Reason.EMS or out.dcl == core.dcl


@given(
    st.lists(st.tuples(commands, st.floats(0.0, 1e6), st.floats(1.0, 3600.0)), max_size=8), st.floats(0, 2e6)
)
def test_the_store_never_loosens_and_always_expires(
    writes: list[tuple[Command, float, float]], probe: float
) -> None:
    ems = EmsCommands()
    core = limits()
    last = -math.inf
    for cmd, t, timeout in sorted(writes, key=lambda w: w[1]):
        ems.write(cmd, t, timeout)
        last = t + timeout
    out = ems.apply(core, probe, 0.5)
    assert out.ccl.value <= core.ccl.value
    assert out.dcl.value <= core.dcl.value
    if probe >= last:
        assert out == core
