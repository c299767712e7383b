"""Multi-pack: current shares, hot-add (voltage window, ramp) and isolation, through the real Pipeline."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fakes import spec_decode
from lvcan_spec import VICTRON_DLC, by_id, decode_victron

from bmsgw.config import ConfigError, load_settings
from bmsgw.ems import Command
from bmsgw.inverter import pylontech_can, sunspec, victron_can
from bmsgw.model import AlarmCode, AlarmLevel, BmsFlags, GatewayState, PackSample, PackService, Reason
from bmsgw.pipeline import Pipeline

MAX_CHG = 50.0
MAX_DIS = 100.0
CELLS = 4
DT = 0.1


@dataclass
class Pack:
    """What one simulated BMS reports; tests change it between runs."""

    cell_v: float = 3.30
    temp: float = 25.0
    current: float = 0.0
    flags: BmsFlags = BmsFlags.NONE
    silent: bool = False
    implausible: bool = False
    alive: int = 0


@dataclass
class Rack:
    pipeline: Pipeline
    packs: list[Pack]
    t: float = 0.0
    history: list[GatewayState] = field(default_factory=list)

    def run(self, seconds: float) -> GatewayState:
        """Every pack reports every 0.1 s (unless silent); the pipeline steps after each round."""
        for _ in range(round(seconds / DT)):
            self.t = round(self.t + DT, 6)
            for i, p in enumerate(self.packs):
                if p.silent:
                    continue
                p.alive = (p.alive + 1) & 0xF
                v = np.full(CELLS, p.cell_v)
                if p.implausible:
                    v[1] = 9.0
                self.pipeline.submit(
                    PackSample(i, self.t, v, np.full(1, p.temp), p.current, float(v.sum()), p.flags, p.alive)
                )
            self.history.append(self.pipeline.step(self.t))
        return self.pipeline.state


def rack(
    n: int,
    *,
    capacity: tuple[float, ...] | None = None,
    initial_soc: list[float] | None = None,
    **multipack: float,
) -> Rack:
    caps = capacity or (100.0,) * n
    settings, _ = load_settings(
        None,
        {
            "packs": [
                {"id": f"p{i}", "cells": CELLS, "sensors": 1, "capacity_ah": caps[i], "address": i}
                for i in range(n)
            ],
            "gateway.recovery_ramp_s": 0.0,  # the system recovery ramp off: what moves is multi-pack logic
            "gateway.stale_after_s": 2.0,
            "limits": {"max_charge_current_a": MAX_CHG, "max_discharge_current_a": MAX_DIS},
            "multipack": {"hot_add_ramp_s": 10.0, "share_filter_s": 2.0, **multipack},
        },
        env={},
    )
    return Rack(Pipeline(settings, initial_soc), [Pack() for _ in range(n)])


def services(state: GatewayState) -> list[PackService]:
    return [p.service for p in state.packs]


# --- current sharing ---------------------------------------------------------------------------------------


def test_equal_shares_until_measured_then_limit_from_the_measured_split() -> None:
    r = rack(3)
    for p, i in zip(r.packs, (20.0, 10.0, 10.0), strict=True):
        p.current = i
    s = r.run(1.0)  # measured for 1 s < share_filter_s: still equal
    assert [p.share for p in s.packs] == pytest.approx([1 / 3] * 3)
    assert s.limits.ccl.value == pytest.approx(3 * MAX_CHG)
    s = r.run(3.0)
    assert [p.share for p in s.packs] == pytest.approx([0.5, 0.25, 0.25], abs=1e-6)
    # pack 0 carries half the current: the system may draw 50 A / 0.5 = 100 A, not 3 × 50 A
    assert s.limits.ccl.value == pytest.approx(MAX_CHG / 0.5, rel=1e-6)
    assert s.limits.dcl.value == pytest.approx(MAX_DIS / 0.5, rel=1e-6)
    assert s.ccl_pack == 0
    assert s.dcl_pack == 0


def test_small_currents_are_not_measured() -> None:
    r = rack(2, share_min_current_a=5.0)
    r.packs[0].current, r.packs[1].current = 3.0, 1.0  # 4 A total: below the threshold
    s = r.run(5.0)
    assert [p.share for p in s.packs] == [0.5, 0.5]
    assert s.limits.ccl.value == 2 * MAX_CHG


def test_the_pack_with_the_smallest_limit_per_share_binds() -> None:
    r = rack(2)
    r.packs[0].current, r.packs[1].current = 30.0, 10.0  # shares 0.75 / 0.25
    r.run(4.0)
    # pack 1 runs warm: its CCL is derated to about a quarter of the maximum
    r.packs[1].temp = 43.75
    s = r.run(0.5)
    ccl_p = r.pipeline.core.debug_state()["ccl_p"]
    assert ccl_p[0] == MAX_CHG
    assert 0.0 < ccl_p[1] < MAX_CHG / 3
    shares = [p.share for p in s.packs]
    assert shares == pytest.approx([0.75, 0.25], abs=1e-6)
    expected = min(ccl_p[0] / shares[0], ccl_p[1] / shares[1])
    assert s.limits.ccl.value == pytest.approx(expected)
    assert expected == pytest.approx(ccl_p[1] / shares[1])  # ~12.5 / 0.25 = 50 < 50 / 0.75
    assert s.ccl_pack == 1
    assert s.limits.ccl.reason is Reason.TEMPERATURE_HIGH


def test_discharge_shares_measured_the_same_way() -> None:
    r = rack(2)
    r.packs[0].current, r.packs[1].current = -60.0, -20.0
    s = r.run(4.0)
    assert s.packs[0].share == pytest.approx(0.75, abs=1e-6)
    assert s.limits.dcl.value == pytest.approx(MAX_DIS / 0.75, rel=1e-6)


# --- hot-add -----------------------------------------------------------------------------------------------


def test_hot_add_held_out_until_voltage_window_then_ramped() -> None:
    r = rack(3, hot_add_window_v=0.5, hot_add_ramp_s=10.0)
    r.packs[2].silent = True
    s = r.run(1.0)
    assert services(s)[:2] == [PackService.RUNNING] * 2
    assert s.limits.ccl.value == 2 * MAX_CHG
    # the new pack appears 0.8 V (4 × 0.2) below the running ones: held out, contactor asked open
    r.packs[2].silent = False
    r.packs[2].cell_v = 3.10
    s = r.run(3.0)
    assert s.packs[2].service is PackService.JOINING
    assert s.packs[2].contactor_open_request
    assert s.packs[2].share == 0.0
    assert s.modules_online == 2
    assert s.limits.ccl.value == 2 * MAX_CHG  # its limits count for nothing
    assert s.voltage == pytest.approx(CELLS * 3.30)  # nor its voltage: the bus is the running packs
    assert not any(a.code is AlarmCode.PACK_ISOLATED for a in s.alarms)
    # within 0.5 V of the others: admitted, its share of the limits ramps in over 10 s
    r.packs[2].cell_v = 3.25
    s = r.run(0.1)
    assert s.packs[2].service is PackService.RAMPING
    assert not s.packs[2].contactor_open_request
    assert s.modules_online == 3
    start = len(r.history)
    r.run(12.0)
    ccl = [st.limits.ccl.value for st in r.history[start:]]
    assert all(b >= a for a, b in itertools.pairwise(ccl))  # rises, never jumps back
    mid = r.history[start + 49]  # 5 s into the ramp: half way from 2 × 50 to 3 × 50 A
    assert mid.limits.ccl.value == pytest.approx(2 * MAX_CHG + 0.5 * MAX_CHG, abs=1.0)
    assert mid.limits.ccl.reason is Reason.RECOVERY
    assert mid.ccl_pack == 2
    assert ccl[0] < 2 * MAX_CHG + 0.1 * MAX_CHG
    s = r.pipeline.state
    assert s.packs[2].service is PackService.RUNNING
    assert s.limits.ccl.value == 3 * MAX_CHG


def test_hot_add_of_a_weak_pack_lowers_the_limit_at_once() -> None:
    r = rack(2, hot_add_ramp_s=60.0)
    r.packs[1].silent = True
    r.run(1.0)
    r.packs[1].silent = False
    r.packs[1].temp = 43.75  # derated to about 25 % on temperature
    s = r.run(0.5)
    assert s.packs[1].service is PackService.RAMPING
    ccl_p = r.pipeline.core.debug_state()["ccl_p"]
    # with it: 2 × ~12.5 A < 50 A without it; a limit that falls is never ramped
    assert s.limits.ccl.value == pytest.approx(2 * ccl_p[1])
    assert s.limits.ccl.value < MAX_CHG / 1.5


def test_packs_starting_together_run_at_once_and_outliers_wait() -> None:
    r = rack(3)
    r.packs[2].cell_v = 3.00  # 1.2 V below the other two
    s = r.run(0.2)
    assert services(s) == [PackService.RUNNING, PackService.RUNNING, PackService.JOINING]
    assert s.limits.ccl.value == 2 * MAX_CHG


def test_ramp_zero_admits_directly() -> None:
    r = rack(2, hot_add_ramp_s=0.0)
    r.packs[1].silent = True
    r.run(1.0)
    r.packs[1].silent = False
    s = r.run(0.2)
    assert s.packs[1].service is PackService.RUNNING
    assert s.limits.ccl.value == 2 * MAX_CHG


# --- isolation ---------------------------------------------------------------------------------------------


def _isolated(s: GatewayState, pack: int) -> list[Any]:
    return [a for a in s.alarms if a.code is AlarmCode.PACK_ISOLATED and a.pack == pack]


def test_bms_fault_isolates_the_pack_the_rest_keep_running_then_it_rejoins() -> None:
    r = rack(3)
    s = r.run(1.0)
    assert s.limits.ccl.value == 3 * MAX_CHG
    r.packs[1].flags = BmsFlags.BMS_FAULT
    s = r.run(2.0)
    assert s.packs[1].service is PackService.ISOLATED
    assert s.packs[1].contactor_open_request
    [iso] = _isolated(s, 1)
    assert iso.level is AlarmLevel.WARNING
    assert "bms_fault" in iso.detail
    # the pack's own fault no longer stops the others: shown, but at warning level
    [fault] = [a for a in s.alarms if a.code is AlarmCode.BMS_FAULT]
    assert (fault.pack, fault.level) == (1, AlarmLevel.WARNING)
    assert s.limits.ccl.value == 2 * MAX_CHG  # partial operation: recomputed for two packs
    assert s.limits.charge_enable
    assert s.limits.discharge_enable
    assert s.modules_online == 2
    # fault clears (after the core's debounce): back through the hot-add procedure
    r.packs[1].flags = BmsFlags.NONE
    s = r.run(1.5)
    assert s.packs[1].service is PackService.RAMPING
    assert not _isolated(s, 1)
    assert 2 * MAX_CHG < s.limits.ccl.value < 3 * MAX_CHG
    s = r.run(10.0)
    assert s.packs[1].service is PackService.RUNNING
    assert s.limits.ccl.value == 3 * MAX_CHG


def test_fault_step_is_safe_before_isolation() -> None:
    """The step on which the core trips the fault still counts the pack (CCL 0); isolation follows."""
    r = rack(2)
    r.run(1.0)
    r.packs[0].flags = BmsFlags.BMS_FAULT
    r.run(1.5)
    tripped = next(i for i, st in enumerate(r.history) if st.packs[0].contactor_open_request)
    assert r.history[tripped].limits.ccl.value == 0.0
    assert r.history[tripped + 1].packs[0].service is PackService.ISOLATED
    assert r.history[tripped + 1].limits.ccl.value == MAX_CHG


def test_lost_link_isolates_and_return_rejoins_via_hot_add() -> None:
    r = rack(3)
    r.run(1.0)
    r.packs[2].silent = True
    s = r.run(3.0)  # stale after 2 s
    assert s.packs[2].service is PackService.ISOLATED
    assert s.packs[2].contactor_open_request
    [iso] = _isolated(s, 2)
    assert "link lost" in iso.detail
    assert s.limits.ccl.value == 2 * MAX_CHG
    assert s.alarm_level(AlarmCode.COMM_LOST) is None
    # it returns with a voltage far from the others: held out (no alarm) until it matches
    r.packs[2].silent = False
    r.packs[2].cell_v = 3.0
    s = r.run(1.0)
    assert s.packs[2].service is PackService.JOINING
    assert not _isolated(s, 2)
    assert s.limits.ccl.value == 2 * MAX_CHG
    r.packs[2].cell_v = 3.3
    s = r.run(11.0)
    assert s.packs[2].service is PackService.RUNNING
    assert s.limits.ccl.value == 3 * MAX_CHG


def test_implausible_data_isolates() -> None:
    r = rack(2)
    r.run(1.0)
    r.packs[0].implausible = True
    s = r.run(0.5)
    assert s.packs[0].service is PackService.ISOLATED
    [iso] = _isolated(s, 0)
    assert "implausible" in iso.detail
    assert "cell 2" in iso.detail
    [sensor] = [a for a in s.alarms if a.code is AlarmCode.SENSOR_FAULT]
    assert sensor.level is AlarmLevel.WARNING  # capped: pack 1 still runs
    assert s.limits.ccl.value == MAX_CHG
    assert s.limits.ccl.reason is Reason.CONFIG
    r.packs[0].implausible = False
    s = r.run(11.0)
    assert s.packs[0].service is PackService.RUNNING
    assert s.limits.ccl.value == 2 * MAX_CHG


def test_every_pack_isolated_keeps_the_full_alarm_and_zero_limits() -> None:
    r = rack(2)
    r.run(1.0)
    for p in r.packs:
        p.flags = BmsFlags.BMS_FAULT
    s = r.run(2.0)
    assert services(s) == [PackService.ISOLATED] * 2
    assert (s.limits.ccl.value, s.limits.dcl.value) == (0.0, 0.0)
    assert s.limits.ccl.reason is Reason.FAULT
    assert {a.level for a in s.alarms if a.code is AlarmCode.BMS_FAULT} == {AlarmLevel.FAULT}
    assert s.modules_online == 0


def test_single_pack_fault_behaves_as_before() -> None:
    r = rack(1)
    r.run(1.0)
    r.packs[0].flags = BmsFlags.BMS_FAULT
    s = r.run(2.0)
    assert s.limits.ccl.value == 0.0
    assert s.limits.ccl.reason is Reason.FAULT
    assert not any(a.code is AlarmCode.PACK_ISOLATED for a in s.alarms)
    assert s.alarm_level(AlarmCode.BMS_FAULT) is AlarmLevel.FAULT
    r.packs[0].flags = BmsFlags.NONE
    s = r.run(2.0)
    assert s.packs[0].service is PackService.RUNNING
    assert s.limits.ccl.value == MAX_CHG


# --- SOC and capacity --------------------------------------------------------------------------------------


def test_system_soc_is_capacity_weighted_over_packs_in_service() -> None:
    r = rack(2, capacity=(100.0, 300.0), initial_soc=[0.2, 0.6])
    s = r.run(0.5)
    socs = [p.soc for p in s.packs]
    assert socs == pytest.approx([0.2, 0.6], abs=0.01)
    assert s.soc == pytest.approx((100 * socs[0] + 300 * socs[1]) / 400)
    assert s.capacity_ah == 400.0
    r.packs[1].silent = True
    s = r.run(2.5)
    assert s.packs[1].service is PackService.ISOLATED
    assert s.soc == pytest.approx(s.packs[0].soc)
    assert s.capacity_ah == 100.0


def test_held_out_pack_is_not_in_soc_or_capacity() -> None:
    r = rack(3, capacity=(100.0, 100.0, 200.0), initial_soc=[0.9, 0.5, 0.2])
    r.packs[0].cell_v = 3.0  # pack 0 is the outlier: the two that agree start, not the lowest index
    s = r.run(0.5)
    assert services(s) == [PackService.JOINING, PackService.RUNNING, PackService.RUNNING]
    assert s.soc == pytest.approx((100 * s.packs[1].soc + 200 * s.packs[2].soc) / 300)
    assert s.capacity_ah == 300.0


# --- module counts on the outputs that carry them -----------------------------------------------------------


def _804_enabled(image: list[int], pack: int, n: int) -> bool:
    off = 0
    for point in sunspec.STRING:
        if point.name == "St":
            break
        off += point.size
    at = sunspec.model_addresses(n)[f"804.{pack}"] + off - sunspec.BASE
    return bool((image[at] << 16 | image[at + 1]) & 1)  # bitfield32, bit 0 ENABLED


def test_module_counts_leave_out_held_out_and_isolated_packs() -> None:
    r = rack(4)
    r.run(1.0)
    r.packs[1].silent = True  # isolated: link lost
    r.packs[3].silent = True
    r.run(3.0)
    r.packs[3].silent = False
    r.packs[3].cell_v = 3.0  # back, but held out
    s = r.run(0.5)
    assert services(s) == [
        PackService.RUNNING, PackService.ISOLATED, PackService.RUNNING, PackService.JOINING,
    ]  # fmt: skip
    assert s.modules_online == 2
    pylon = spec_decode(pylontech_can.encode(s))
    assert pylon.modules == 2  # 0x359 byte 4
    _, victron = decode_victron(by_id(victron_can.encode(s), VICTRON_DLC))
    assert (victron.online, victron.offline) == (2, 2)  # 0x372
    assert victron.blocking_charge == 0  # the held-out pack's open contactor blocks nothing that runs
    image = sunspec.encode(s, sunspec.Identity(), Command())
    assert [_804_enabled(image, i, 4) for i in range(4)] == [True, False, True, False]


# --- configuration -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("hot_add_window_v", 0.0),
        ("hot_add_ramp_s", -1.0),
        ("share_min_current_a", 0.0),
        ("share_filter_s", math.inf),
        ("bogus", 1.0),
    ],
)
def test_bad_multipack_config_names_key_and_value(key: str, value: float) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(None, {"multipack": {key: value}}, env={})
    assert f"multipack.{key}" in str(exc.value)


def test_rack_example_is_valid() -> None:
    path = Path(__file__).parent.parent / "examples" / "rack-3-packs.toml"
    settings, _ = load_settings(path, env={})
    assert len(settings.packs) == 3
    assert settings.multipack.hot_add_window_v == 1.0
