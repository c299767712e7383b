"""End to end on python-can virtual buses: fake pack frames in, Pylontech frames out, fail-safe, recovery."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import numpy as np
import pytest
from fakes import A_COMM, P_OV, P_SYS, Decoded, PackModel, decode_pylon, run_fake_pack, running

from bmsgw.app import Gateway
from bmsgw.clock import ScaledClock
from bmsgw.config import Settings, load_settings
from bmsgw.core.chemistry import profile, soc_from_ocv
from bmsgw.model import Chemistry
from bmsgw.transport.can_bus import AsyncCanBus

SPEED = 10.0  # gateway time runs 10x wall time: 1 s Pylontech period = 0.1 s wall
MAX_CHARGE = 50.0
MAX_DISCHARGE = 80.0


@dataclass
class Rig:
    gateway: Gateway
    pack: PackModel
    inverter: Inverter


class Inverter:
    """Listens on the output bus like an inverter would; decodes with the spec-table decoder."""

    def __init__(self, bus: AsyncCanBus) -> None:
        self.bus = bus
        self.latest: dict[int, bytes] = {}
        self.sets = 0

    async def run(self) -> None:
        while True:
            msg = await self.bus.recv()
            self.latest[msg.arbitration_id] = bytes(msg.data)
            if msg.arbitration_id == 0x35E:
                self.sets += 1

    async def until(self, pred: Callable[[Decoded], bool], within: float = 5.0) -> Decoded:
        deadline = time.monotonic() + within
        last: Decoded | None = None
        while time.monotonic() < deadline:
            if {0x351, 0x355, 0x356, 0x359, 0x35C, 0x35E} <= self.latest.keys():
                last = decode_pylon(self.latest)
                if pred(last):
                    return last
            await asyncio.sleep(0.01)
        raise AssertionError(f"condition not met within {within}s; last frames: {last}")


def settings_for(pack_channel: str, out_channel: str, **limits: float) -> Settings:
    settings, _ = load_settings(
        None,
        {
            "packs": [{"id": "p1", "cells": 16, "sensors": 4, "chemistry": "lfp", "capacity_ah": 100}],
            "can": {"interface": "virtual", "channel": pack_channel},
            "outputs": [{"protocol": "pylontech-can", "interface": "virtual", "channel": out_channel}],
            "gateway.stale_after_s": 3.0,
            "gateway.recovery_ramp_s": 5.0,
            "gateway.step_period_s": 0.1,
            "limits": {
                "max_charge_current_a": MAX_CHARGE,
                "max_discharge_current_a": MAX_DISCHARGE,
                "debounce_s": 1.0,
                **limits,
            },
        },
        env={},
    )
    return settings


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    pack_ch, out_ch = f"pack-{uuid.uuid4()}", f"inv-{uuid.uuid4()}"
    gateway = Gateway(settings_for(pack_ch, out_ch), ScaledClock(SPEED))
    pack = PackModel()
    async with AsyncCanBus("virtual", pack_ch) as pack_bus, AsyncCanBus("virtual", out_ch) as inv_bus:
        inverter = Inverter(inv_bus)
        async with running(gateway.run, lambda: run_fake_pack(pack_bus, pack, 0.1 / SPEED), inverter.run):
            yield Rig(gateway, pack, inverter)


async def test_pack_frames_in_pylontech_frames_out(rig: Rig) -> None:
    f = await rig.inverter.until(lambda f: f.ccl == MAX_CHARGE and f.dcl == MAX_DISCHARGE)
    lfp = profile(Chemistry.LFP)
    assert f.voltage == pytest.approx(16 * 3.30, abs=0.01)
    assert f.current == pytest.approx(10.0, abs=0.1)
    assert f.temperature == pytest.approx(25.0, abs=0.1)
    assert f.cvl == pytest.approx(16 * lfp.charge_voltage_cell_v, abs=0.1)
    assert f.dvl == pytest.approx(16 * lfp.discharge_voltage_cell_v, abs=0.1)
    assert f.soc == pytest.approx(round(soc_from_ocv(lfp, 3.30) * 100), abs=2)
    assert f.charge_enable
    assert f.discharge_enable
    assert f.flags == frozenset()
    assert f.modules == 1
    state = rig.gateway.state()
    assert state.cell_v_max == pytest.approx(3.30, abs=0.001)


async def test_link_loss_drives_safe_state_then_ramped_recovery(rig: Rig) -> None:
    await rig.inverter.until(lambda f: f.ccl == MAX_CHARGE)
    rig.pack.silent = True
    lost_at = time.monotonic()
    f = await rig.inverter.until(lambda f: f.ccl == 0 and f.dcl == 0, within=(3.0 + 2.0) / SPEED + 1.0)
    # Safe state within stale_after_s plus one output period (and a little scheduling slack).
    assert (time.monotonic() - lost_at) * SPEED <= 3.0 + 1.0 + 1.5
    assert A_COMM in f.flags  # byte 3 bit 3: internal communication fail
    assert not f.charge_enable
    assert not f.discharge_enable
    assert f.cvl > 0  # never CVL 0
    sets = rig.inverter.sets
    await asyncio.sleep(0.3)
    assert rig.inverter.sets > sets  # still transmitting in the safe state
    rig.pack.silent = False
    mid = await rig.inverter.until(lambda f: 0 < f.ccl < MAX_CHARGE)
    assert A_COMM not in mid.flags
    await rig.inverter.until(lambda f: f.ccl == MAX_CHARGE and f.dcl == MAX_DISCHARGE)


async def test_cell_overvoltage_trips_charge_only(rig: Rig) -> None:
    await rig.inverter.until(lambda f: f.ccl == MAX_CHARGE)
    rig.pack.cell_v = np.full(16, 3.30)
    rig.pack.cell_v[5] = 3.70
    derated = await rig.inverter.until(lambda f: f.ccl == 0)  # the derating reaches 0 before the alarm
    assert derated.dcl == MAX_DISCHARGE
    f = await rig.inverter.until(lambda f: P_OV in f.flags)  # byte 0 bit 1: cell over-voltage
    assert f.ccl == 0
    assert f.dcl == MAX_DISCHARGE
    assert f.discharge_enable
    state = rig.gateway.state()
    assert state.cell_v_max_at.cell == 5


async def test_frozen_alive_counter_is_a_sensor_fault(rig: Rig) -> None:
    await rig.inverter.until(lambda f: f.ccl == MAX_CHARGE)
    rig.pack.freeze_alive = True
    f = await rig.inverter.until(lambda f: f.ccl == 0 and f.dcl == 0)
    assert P_SYS in f.flags  # byte 1 bit 3: system error (sensor fault)


async def test_implausible_cell_is_a_sensor_fault(rig: Rig) -> None:
    await rig.inverter.until(lambda f: f.dcl == MAX_DISCHARGE)
    rig.pack.cell_v = np.full(16, 3.30)
    rig.pack.cell_v[0] = 0.2  # below any LFP cell's physical range: a broken sense wire
    f = await rig.inverter.until(lambda f: f.ccl == 0 and f.dcl == 0)
    assert P_SYS in f.flags
