"""Runtime forecast: the hour-of-week load profile is learned online and predicts time to empty / full."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from fakes import lim
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmsgw.clock import SteppedClock
from bmsgw.config import Settings, load_settings
from bmsgw.daemon import Daemon
from bmsgw.energy_management import EnergyFileError, EnergyManager, EnergyStore
from bmsgw.forecast import (
    HOURS_PER_WEEK,
    LoadProfile,
    ProfileLearner,
    forecast,
    hour_of_week,
)
from bmsgw.inverter import modbus_map
from bmsgw.model import PackSample
from bmsgw.pipeline import Pipeline
from bmsgw.schedule import local_time
from bmsgw.telemetry.ha_discovery import entities, state_payload
from bmsgw.telemetry.metrics import exposition
from bmsgw.telemetry.snapshot import state_dict

BERLIN = ZoneInfo("Europe/Berlin")
MONDAY = datetime(2026, 11, 2, tzinfo=BERLIN).timestamp()  # Monday 00:00, no DST change for weeks
WEEK = 7 * 86400.0


def hourly(how: int) -> float:
    """A site's mean battery current by hour of week: night load, PV at midday, more load at weekends."""
    day, hour = divmod(how, 24)
    load = 6.0 + 10.0 * (17 <= hour < 22) + 3.0 * (day >= 5)
    pv = 30.0 * max(0.0, math.sin(math.pi * (hour - 7) / 10)) if 7 <= hour < 17 else 0.0
    return pv - load


def true_current(wall: float) -> float:
    """`hourly` plus a wobble within each hour that averages out over the hour."""
    local = local_time(wall, BERLIN)
    return hourly(hour_of_week(local)) + 4.0 * math.sin(
        2 * math.pi * (local.minute * 60 + local.second) / 3600
    )


def learn(weeks: float, current: Callable[[float], float], step_s: float = 60.0) -> ProfileLearner:
    learner = ProfileLearner(LoadProfile.empty(), weeks=4.0)
    for k in range(int(weeks * WEEK / step_s)):
        wall = MONDAY + k * step_s
        learner.observe(k * step_s, wall, hour_of_week(local_time(wall, BERLIN)), current(wall))
    return learner


def simulate_to_reserve(wall: float, soc: float, reserve: float, cap_ah: float) -> float:
    """Seconds until SOC reaches the reserve under the true current (10 s steps, full caps at 1)."""
    t = 0.0
    while soc > reserve:
        soc = min(1.0, soc + true_current(wall + t) * 10.0 / (cap_ah * 3600.0))
        t += 10.0
        assert t < 2 * WEEK
    return t


def test_learns_a_known_hour_of_week_profile() -> None:
    learner = learn(1.0 + 1 / 168, true_current)  # one week and the first hour of the next
    p = learner.profile
    assert p.ready
    # Each 60 s interval counts to the hour it ends in: a steep hour is off by a fraction of an ampere.
    np.testing.assert_allclose(p.mean, [hourly(h) for h in range(HOURS_PER_WEEK)], atol=0.2)
    assert set(p.count) == {1}


@pytest.mark.parametrize(
    ("start", "soc"),
    [
        (datetime(2026, 11, 25, 17, 20, tzinfo=BERLIN), 0.60),  # Wednesday evening peak
        (datetime(2026, 11, 27, 9, 45, tzinfo=BERLIN), 0.55),  # Friday morning: PV first, then the night
        (datetime(2026, 11, 28, 23, 5, tzinfo=BERLIN), 0.80),  # Saturday night into a weekend day
    ],
)
def test_predicts_time_to_empty_within_three_percent(start: datetime, soc: float) -> None:
    rng = np.random.default_rng(5)
    noisy = learn(3.0, lambda w: true_current(w) + rng.normal(0.0, 3.0))
    wall = start.timestamp()
    fc = forecast(soc, 100.0, 0.20, true_current(wall), profile=noisy.profile, local=local_time(wall, BERLIN))
    assert fc is not None
    assert fc.basis == "load_profile"
    truth = simulate_to_reserve(wall, soc, 0.20, 100.0)
    assert fc.time_to_empty_s == pytest.approx(truth, rel=0.03), (fc.time_to_empty_s / 3600, truth / 3600)


def test_time_to_full_from_the_profile() -> None:
    p = LoadProfile.empty()
    for h in range(HOURS_PER_WEEK):
        p.learn(h, 10.0 if h % 24 == 12 else -1.0, 1.0)
    noon = datetime(2026, 11, 23, 11, 30, tzinfo=BERLIN)  # half an hour of -1 A, then +10 A from 12:00
    fc = forecast(0.95, 100.0, 0.1, -1.0, profile=p, local=noon)
    assert fc is not None
    # 0.5 h at -1 A: 5.5 Ah to go at 10 A = 0.55 h after 12:00.
    assert fc.time_to_full_s == pytest.approx(1800 + 0.55 * 3600)


def test_present_current_until_every_hour_of_the_day_is_learned() -> None:
    p = LoadProfile.empty()
    for h in range(23):
        p.learn(h, -5.0, 0.25)
    noon = datetime(2026, 11, 23, 12, 0, tzinfo=BERLIN)
    fc = forecast(0.5, 100.0, 0.2, -10.0, profile=p, local=noon)
    assert fc is not None
    assert fc.basis == "present_current"
    assert fc.time_to_empty_s == pytest.approx(0.3 * 100 * 3600 / 10.0)
    assert fc.time_to_full_s == math.inf
    p.learn(23, -5.0, 0.25)  # Monday 23:00 completes a day: the other days borrow Monday's hours
    assert p.ready
    assert p.predict(24 * 4 + 7) == -5.0
    fc = forecast(0.5, 100.0, 0.2, -10.0, profile=p, local=noon)
    assert fc is not None
    assert fc.basis == "load_profile"
    assert fc.time_to_empty_s == pytest.approx(0.3 * 100 * 3600 / 5.0)


def test_edge_cases() -> None:
    assert forecast(math.nan, 100.0, 0.2, -5.0) is None
    assert forecast(0.5, 0.0, 0.2, -5.0) is None
    idle = forecast(0.5, 100.0, 0.2, 0.3, idle_a=0.5)
    assert idle is not None
    assert (idle.time_to_empty_s, idle.time_to_full_s) == (math.inf, math.inf)
    at_reserve = forecast(0.2, 100.0, 0.2, -5.0)
    assert at_reserve is not None
    assert at_reserve.time_to_empty_s == 0.0
    full = forecast(1.0, 100.0, 0.2, 5.0)
    assert full is not None
    assert full.time_to_full_s == 0.0
    charging = forecast(0.5, 100.0, 0.2, 25.0)
    assert charging is not None
    assert charging.time_to_full_s == pytest.approx(2 * 3600.0)


def test_profile_horizon_limits_the_forecast() -> None:
    p = LoadProfile.empty()
    for h in range(HOURS_PER_WEEK):
        p.learn(h, -1.0, 1.0)
    local = datetime(2026, 11, 23, 0, 0, tzinfo=BERLIN)
    fc = forecast(0.9, 100.0, 0.0, -1.0, profile=p, local=local, horizon_s=24 * 3600.0)
    assert fc is not None
    assert fc.time_to_empty_s == math.inf  # 90 h away, beyond the 24 h horizon
    fc = forecast(0.9, 100.0, 0.0, -1.0, profile=p, local=local)
    assert fc is not None
    assert fc.time_to_empty_s == pytest.approx(90 * 3600.0)


def observe_span(learner: ProfileLearner, t0: float, wall0: float, seconds: float, current: float) -> None:
    for k in range(int(seconds / 30) + 1):
        wall = wall0 + 30 * k
        learner.observe(t0 + 30 * k, wall, hour_of_week(local_time(wall, BERLIN)), current)


def test_wall_clock_steps_and_gaps_are_not_learned() -> None:
    learner = ProfileLearner(LoadProfile.empty(), weeks=4.0)
    ten = MONDAY + 10 * 3600
    observe_span(learner, 0.0, ten, 20 * 60, -10.0)  # Monday 10:00–10:20 …
    observe_span(learner, 1230.0, ten + 2 * 3600 + 1230, 50 * 60 - 30, -5.0)  # … NTP steps to 12:20.5
    observe_span(learner, 5000.0, ten + 3 * 3600 + 600, 0.0, -5.0)  # 13:10 after a gap
    p = learner.profile
    assert p.count[10] == 0  # 20 minutes of 10:00 are not an hour's mean
    assert p.count[12] == 1
    assert p.mean[12] == pytest.approx(-5.0)
    assert sum(p.count) == 1
    # A gap longer than MAX_GAP_S is not bridged: 13:00–13:10 saw one observation, nothing integrated.
    observe_span(learner, 5000.0 + 3000, ten + 3 * 3600 + 3600, 0.0, -5.0)
    assert p.count[13] == 0


def test_unknown_wall_time_or_no_data_does_not_learn() -> None:
    learner = ProfileLearner(LoadProfile.empty(), weeks=4.0)
    for k in range(200):
        learner.observe(k * 30.0, None, None, -5.0)
        learner.observe(k * 30.0 + 6000, MONDAY + k * 30.0, 0, None)
    learner.observe(7000.0, MONDAY + 7200.0, 2, -5.0)
    assert sum(learner.profile.count) == 0


def berlin(**energy: object) -> Settings:
    return Settings.model_validate({"energy": {"timezone": "Europe/Berlin", **energy}})


def test_manager_forecast_learns_online_and_switches_basis() -> None:
    m = EnergyManager(berlin(reserve_soc_pct=20))
    t = 0.0
    fc = None
    bases = set()
    for k in range(int(1.5 * 86400 / 20)):  # a day and a half, one step per 20 s
        t = k * 20.0
        wall = MONDAY + t
        _, fc = m.step(t, wall, lim(), 0.6, true_current(wall), 100.0, True)
        assert fc is not None
        bases.add(fc.basis)
    assert bases == {"present_current", "load_profile"}
    assert fc is not None
    assert fc.basis == "load_profile"
    _, gone = m.step(t + 20, MONDAY + t + 20, lim(), math.nan, 0.0, 0.0, False)
    assert gone is None  # no usable pack: no forecast


def test_forecast_can_be_switched_off() -> None:
    m = EnergyManager(berlin(forecast=False))
    assert m.step(0.0, MONDAY, lim(), 0.5, -5.0, 100.0, True)[1] is None


def test_profile_and_timer_persist(tmp_path: Path) -> None:
    s = berlin(full_charge_days=30)
    m = EnergyManager(s)
    learner = learn(1.0, true_current)
    m.learner.profile = learner.profile
    m.step(0.0, MONDAY, lim(), 0.5, 0.0, 100.0, True)
    m.step(3600.0, MONDAY + 3600, lim(), 0.5, 0.0, 100.0, True)
    store = EnergyStore(tmp_path)
    assert store.load() is None
    store.save(m.capture(MONDAY + 3600))
    saved = store.load()
    assert saved is not None
    again = EnergyManager(s, saved)
    assert again.notes == []
    np.testing.assert_allclose(again.learner.profile.mean, learner.profile.mean)
    assert again.learner.profile.count == learner.profile.count
    assert saved.since_full_s == pytest.approx(3600.0)
    moved = EnergyManager(Settings.model_validate({"energy": {"timezone": "UTC"}}), saved)
    assert moved.notes
    assert "relearning" in moved.notes[0]
    assert sum(moved.learner.profile.count) == 0


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"{", "not a valid energy state"),
        (b'{"version": 1, "saved_at": null, "timezone": "UTC", "since_full_s": -1, "profile_mean": [],'
         b' "profile_count": []}', "since_full_s"),
        (b'{"version": 9, "saved_at": null, "timezone": "UTC", "since_full_s": 0, "profile_mean": [],'
         b' "profile_count": []}', "version 9"),
    ],
)  # fmt: skip
def test_bad_energy_file_is_reported(tmp_path: Path, content: bytes, match: str) -> None:
    (tmp_path / "energy.json").write_bytes(content)
    with pytest.raises(EnergyFileError, match=match):
        EnergyStore(tmp_path).load()


def test_a_short_profile_in_the_file_is_not_used(tmp_path: Path) -> None:
    store = EnergyStore(tmp_path)
    m = EnergyManager(berlin())
    store.save(m.capture(None).model_copy(update={"profile_mean": (1.0,), "profile_count": (1,)}))
    saved = store.load()
    assert saved is not None
    again = EnergyManager(berlin(), saved)
    assert again.notes
    assert "168" in again.notes[0]


def test_forecast_reaches_the_state_and_every_output_that_carries_it() -> None:
    s = Settings.model_validate({"energy": {"timezone": "UTC", "reserve_soc_pct": 20}})
    pipe = Pipeline(s, [0.5], wall=lambda t: MONDAY + t)
    for k in range(3):
        sample = PackSample(0, float(k), np.full(16, 3.3), np.full(4, 25.0), -10.0, 52.8, alive=k)
        assert pipe.submit(sample)
        state = pipe.step(float(k))
    fc = state.forecast
    assert fc is not None
    assert fc.basis == "present_current"
    expected = (state.soc - 0.20) * 100.0 * 3600 / 10.0
    assert fc.time_to_empty_s == pytest.approx(expected, rel=1e-3)  # recomputed every 10 s, not every step
    assert fc.time_to_full_s == math.inf
    snap = state_dict(state)["forecast"]
    assert snap == {"time_to_empty_s": fc.time_to_empty_s, "time_to_full_s": None, "basis": "present_current"}
    doc = state_payload(state, s, 0.0, 0.0)
    assert doc["time_to_empty_min"] == round(fc.time_to_empty_s / 60, 1)
    assert doc["time_to_full_min"] is None
    assert {"time_to_empty", "time_to_full"} <= {e.key for e in entities(s)}
    text = exposition(state, version="x", compiled=False)
    assert f'bmsgw_time_to_empty_seconds{{basis="present_current"}} {fc.time_to_empty_s:g}' in text
    assert 'bmsgw_time_to_full_seconds{basis="present_current"} +Inf' in text
    block = modbus_map.encode_status(state, modbus_map.Command(), 0.0, writes=False)
    regs = {r.name: block[r.offset] for r in modbus_map.STATUS}
    assert regs["time_to_empty"] == round(fc.time_to_empty_s / 60)
    assert regs["time_to_full"] == 0xFFFE  # beyond the horizon


def daemon_settings(state_dir: Path) -> Settings:
    cfg, _ = load_settings(
        None,
        {
            "gateway.state_dir": str(state_dir),
            "can": {"interface": "virtual", "channel": "forecast-tests"},
            "energy": {"timezone": "Europe/Berlin", "full_charge_days": 30},
        },
        env={},
    )
    return cfg


def test_the_daemon_saves_and_restores_the_profile_and_timer(tmp_path: Path) -> None:
    daemon = Daemon(daemon_settings(tmp_path), env={}, clock=SteppedClock(epoch=MONDAY))
    management = daemon.gateway.pipeline.management
    management.learner.profile = learn(1.0 + 1 / 168, true_current).profile
    daemon.save()
    assert (tmp_path / "energy.json").is_file()
    again = Daemon(daemon_settings(tmp_path), env={}, clock=SteppedClock(epoch=MONDAY + 86400.0))
    restored = again.gateway.pipeline.management
    assert restored.learner.profile.count == management.learner.profile.count
    np.testing.assert_allclose(restored.learner.profile.mean, management.learner.profile.mean)
    # The day the daemon was down counts towards the full-charge timer at the first step.
    again.gateway.pipeline.step(0.0)
    assert restored.capture(MONDAY + 86400.0).since_full_s == pytest.approx(86400.0)


def test_the_daemon_ignores_a_bad_energy_file(tmp_path: Path) -> None:
    (tmp_path / "energy.json").write_text("{torn")
    daemon = Daemon(daemon_settings(tmp_path), env={}, clock=SteppedClock(epoch=MONDAY))
    assert sum(daemon.gateway.pipeline.management.learner.profile.count) == 0


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_random_energy_files_never_raise_anything_else(tmp_path: Path, data: bytes) -> None:
    (tmp_path / "energy.json").write_bytes(data)
    try:
        saved = EnergyStore(tmp_path).load()
    except EnergyFileError:
        return
    assert saved is not None
    EnergyManager(Settings(), saved)  # whatever validated can be restored without raising
