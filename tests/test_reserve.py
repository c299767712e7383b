"""Backup reserve: DCL taper, force-charge requests with hysteresis, full-charge request after N days."""

from __future__ import annotations

import math
from typing import Any

import pytest
from fakes import lim, make_state
from hypothesis import given
from hypothesis import strategies as st

from bmsgw.config import ConfigError, Settings, load_settings
from bmsgw.energy_management import EnergyManager
from bmsgw.inverter import pylontech_can
from bmsgw.model import Limit, Limits, Reason
from bmsgw.reserve import FullChargeTimer, Hysteresis, taper

DAY = 86400.0


def manager(**energy: Any) -> EnergyManager:
    """An EnergyManager with `[energy]` keys (forecast off unless given)."""
    energy.setdefault("forecast", False)
    return EnergyManager(Settings.model_validate({"energy": energy}))


def step(m: EnergyManager, soc: float, t: float = 0.0, limits: Limits | None = None) -> Limits:
    """One step without wall clock (schedules inactive)."""
    out, _ = m.step(t, None, limits or lim(), soc, 0.0, 100.0, True)
    return out


def test_dcl_tapers_linearly_to_zero_at_the_reserve() -> None:
    m = manager(reserve_soc_pct=20, reserve_taper_pct=5)
    assert step(m, 0.30).dcl == Limit(150.0, Reason.CONFIG)
    assert step(m, 0.25).dcl == Limit(150.0, Reason.CONFIG)  # top of the band: the core's value
    half = step(m, 0.225).dcl
    assert half.value == pytest.approx(75.0)
    assert half.reason is Reason.RESERVE
    assert step(m, 0.20).dcl == Limit(0.0, Reason.RESERVE)
    assert step(m, 0.05).dcl == Limit(0.0, Reason.RESERVE)
    assert step(m, math.nan).dcl == Limit(0.0, Reason.RESERVE)  # SOC unknown: the reserve is not spent
    low = step(m, 0.10)
    assert low.ccl == Limit(100.0, Reason.CONFIG)  # charging stays allowed below the reserve
    assert low.discharge_enable  # the enable bit stays; DCL = 0 is what holds the reserve


def test_taper_scales_whatever_the_core_allows() -> None:
    core = lim(dcl=10.0)
    assert taper(core, 0.25, 0.20, 0.05, Reason.RESERVE) is core
    assert taper(core, 0.24, 0.20, 0.05, Reason.RESERVE).dcl == Limit(pytest.approx(8.0), Reason.RESERVE)
    zero = lim(dcl=0.0)
    assert taper(zero, 0.10, 0.20, 0.05, Reason.RESERVE) is zero  # a core 0 keeps its own reason


def test_no_reserve_configured_changes_nothing() -> None:
    m = manager()
    core = lim()
    assert step(m, 0.01, limits=core) is core


def bits_0x35c(limits: Limits) -> int:
    """Byte 0 of the Pylontech 0x35C request frame for a state with `limits`."""
    frames = {f.id: f.data for f in pylontech_can.encode(make_state(limits=limits))}
    return frames[0x35C][0]


def test_force_charge_requests_follow_soc_with_hysteresis_and_reach_0x35c() -> None:
    m = manager(force_charge_1_soc_pct=15, force_charge_2_soc_pct=10, force_charge_hysteresis_pct=3)
    seen = []
    for soc in (0.20, 0.151, 0.149, 0.16, 0.179, 0.18, 0.099, 0.12, 0.129, 0.13, 0.17, 0.18):
        out = step(m, soc)
        seen.append((out.force_charge_1, out.force_charge_2))
    assert seen == [
        (False, False), (False, False),
        (True, False), (True, False), (True, False),  # on below 15 %, held until 18 %
        (False, False),
        (True, True), (True, True), (True, True),  # II on below 10 %, held until 13 %
        (True, False), (True, False),
        (False, False),
    ]  # fmt: skip
    both = step(m, 0.05)
    assert bits_0x35c(both) & 0b0011_1000 == 0b0011_0000  # bit 5 force charge I, bit 4 force charge II
    assert bits_0x35c(step(m, 0.5)) & 0b0011_1000 == 0


def test_no_force_charge_request_while_charging_is_not_allowed() -> None:
    m = manager(force_charge_1_soc_pct=15)
    out = step(m, 0.05, limits=lim(charge=False))
    assert not out.force_charge_1
    assert step(m, 0.05).force_charge_1  # the latch stayed on: requested once charging is allowed


def test_hysteresis_keeps_state_when_soc_is_unknown() -> None:
    h = Hysteresis(0.1, 0.13)
    assert h.update(0.05)
    assert h.update(math.nan)
    assert not h.update(0.2)
    assert not h.update(math.nan)
    with pytest.raises(ValueError, match="on_below"):
        Hysteresis(0.2, 0.1)


def test_full_charge_request_after_n_days_without_97_percent() -> None:
    m = manager(full_charge_days=2)
    hours = [float(h) * 3600 for h in range(24 * 7)]
    requested = {t: step(m, 0.8 if t < 3 * DAY else 0.975 if t == 3 * DAY else 0.6, t).full_charge_request
                 for t in hours}  # fmt: skip
    first = min(t for t, on in requested.items() if on)
    assert first == 2 * DAY  # 48 h after the start (nothing known before it) without reaching 97 %
    assert all(requested[t] for t in hours if 2 * DAY <= t < 3 * DAY)
    assert not requested[3 * DAY]  # cleared when 97 % is reached
    again = min(t for t, on in requested.items() if on and t > 3 * DAY)
    assert again == 5 * DAY
    assert bits_0x35c(step(m, 0.6, 5 * DAY + 1)) & 0b0000_1000  # bit 3: full charge request


def test_full_charge_timer_survives_a_restart_with_the_downtime() -> None:
    settings = Settings.model_validate({"energy": {"full_charge_days": 30, "forecast": False}})
    wall0 = 1_800_000_000.0
    m = EnergyManager(settings)
    for day in range(21):
        m.step(day * DAY, wall0 + day * DAY, lim(), 0.5, 0.0, 100.0, True)
    saved = m.capture(wall0 + 20 * DAY)
    assert saved.since_full_s == pytest.approx(20 * DAY)
    # Restarted 9 days later (monotonic time starts again at 0): 20 + 9 days < 30 …
    m2 = EnergyManager(settings, saved)
    base = wall0 + 29 * DAY
    assert not m2.step(0.0, base, lim(), 0.5, 0.0, 100.0, True)[0].full_charge_request
    # … and the request comes one day after the restart.
    assert m2.step(DAY, base + DAY, lim(), 0.5, 0.0, 100.0, True)[0].full_charge_request
    timer = FullChargeTimer(10.0, 0.97, since_full_s=-5.0)
    assert timer.since_full_s == 0.0


def test_full_charge_request_gated_by_charge_enable() -> None:
    m = manager(full_charge_days=1)
    step(m, 0.5, 0.0)
    assert not step(m, 0.5, DAY, limits=lim(charge=False)).full_charge_request
    assert step(m, 0.5, DAY + 1).full_charge_request


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("reserve_soc_pct", 99, "less than or equal to 95"),
        ("reserve_taper_pct", 0, "greater than 0"),
        ("force_charge_hysteresis_pct", -1, "greater than or equal to 0"),
        ("full_charge_days", 0, "greater than 0"),
        ("full_charge_soc_pct", 30, "greater than or equal to 50"),
        ("forecast_weeks", 0.5, "greater than or equal to 1"),
        ("timezone", "Moon/Tycho", "IANA name"),
    ],
)
def test_energy_config_errors_name_key_value_and_allowed(key: str, value: object, allowed: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(cli={f"energy.{key}": value})
    (line,) = exc.value.problems
    assert line.startswith(f"energy.{key} = {value!r}: ")
    assert allowed in line


limit_values = st.floats(0.0, 1000.0, allow_nan=False)
pct = st.none() | st.floats(0.0, 95.0)


@given(
    reserve=pct, fc1=pct, fc2=pct, days=st.none() | st.floats(0.1, 30.0),
    ccl=limit_values, dcl=limit_values, charge=st.booleans(), discharge=st.booleans(),
    socs=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=8),
)  # fmt: skip
def test_reserve_never_loosens(
    reserve: float | None, fc1: float | None, fc2: float | None, days: float | None,
    ccl: float, dcl: float, charge: bool, discharge: bool, socs: list[float],
) -> None:  # fmt: skip
    m = manager(
        reserve_soc_pct=reserve, force_charge_1_soc_pct=fc1, force_charge_2_soc_pct=fc2, full_charge_days=days
    )
    core = lim(ccl=ccl, dcl=dcl, charge=charge, discharge=discharge)
    for k, soc in enumerate(socs):
        out = step(m, soc, k * DAY, core)
        assert (out.ccl, out.cvl, out.dvl) == (core.ccl, core.cvl, core.dvl)
        assert 0.0 <= out.dcl.value <= core.dcl.value
        assert out.dcl == core.dcl or out.dcl.reason is Reason.RESERVE
        assert (out.charge_enable, out.discharge_enable) == (charge, discharge)
        if not charge:
            assert not out.force_charge_1
            assert not out.force_charge_2
            assert not out.full_charge_request
