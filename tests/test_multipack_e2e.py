"""End to end on python-can virtual buses: three fake packs, one is cut and comes back."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest
from fakes import A_COMM, PackModel, run_fake_pack, running
from test_gateway_e2e import Inverter

from bmsgw.app import Gateway
from bmsgw.bms.pack_can import ContactorRequest, GatewayCommandMsg, PackCanError, decode
from bmsgw.clock import ScaledClock
from bmsgw.config import load_settings
from bmsgw.model import AlarmCode, PackService
from bmsgw.transport.can_bus import AsyncCanBus

SPEED = 10.0  # gateway time runs 10x wall time
MAX_CHARGE = 50.0
N = 3


class Commands:
    """Listens on the pack bus for the gateway's GatewayCommand frames."""

    def __init__(self, bus: AsyncCanBus) -> None:
        self.bus = bus
        self.open_requested: set[int] = set()

    async def run(self) -> None:
        while True:
            msg = await self.bus.recv()
            with contextlib.suppress(PackCanError):
                cmd = decode(msg.arbitration_id, bytes(msg.data))
                if isinstance(cmd, GatewayCommandMsg) and cmd.contactor is ContactorRequest.OPEN:
                    self.open_requested.add(cmd.module)


def near(x: float, y: float) -> bool:
    return abs(x - y) < 0.5


async def test_a_pack_is_cut_the_others_run_and_it_rejoins_ramped() -> None:
    pack_ch, out_ch = f"pack-{uuid.uuid4()}", f"inv-{uuid.uuid4()}"
    settings, _ = load_settings(
        None,
        {
            "packs": [
                {"id": f"p{i}", "cells": 16, "sensors": 4, "capacity_ah": 100, "address": i} for i in range(N)
            ],
            "can": {"interface": "virtual", "channel": pack_ch},
            "outputs": [{"protocol": "pylontech-can", "interface": "virtual", "channel": out_ch}],
            "gateway.stale_after_s": 3.0,
            "gateway.recovery_ramp_s": 2.0,
            "gateway.step_period_s": 0.1,
            "limits": {"max_charge_current_a": MAX_CHARGE, "max_discharge_current_a": 80.0},
            "multipack": {"hot_add_ramp_s": 10.0, "share_filter_s": 2.0},
        },
        env={},
    )
    gateway = Gateway(settings, ScaledClock(SPEED))
    packs = [PackModel(module=i) for i in range(N)]
    async with (
        AsyncCanBus("virtual", pack_ch) as pack_bus,
        AsyncCanBus("virtual", pack_ch) as cmd_bus,
        AsyncCanBus("virtual", out_ch) as inv_bus,
    ):
        inverter = Inverter(inv_bus)
        commands = Commands(cmd_bus)
        fake_packs = [lambda p=p: run_fake_pack(pack_bus, p, 0.1 / SPEED) for p in packs]
        async with running(gateway.run, *fake_packs, inverter.run, commands.run):
            # equal currents (10 A each): 50 A per pack over a third of the current each
            f = await inverter.until(lambda f: f.modules == N and near(f.ccl, N * MAX_CHARGE), within=10.0)
            assert f.current == pytest.approx(30.0, abs=0.1)
            packs[2].silent = True
            f = await inverter.until(lambda f: f.modules == N - 1, within=10.0)
            # partial operation: never the safe state, limits recomputed for the two that remain
            f = await inverter.until(lambda f: near(f.ccl, (N - 1) * MAX_CHARGE), within=5.0)
            assert A_COMM not in f.flags
            assert f.charge_enable
            assert f.discharge_enable
            state = gateway.state()
            assert state.packs[2].service is PackService.ISOLATED
            assert state.packs[2].contactor_open_request
            assert [a.pack for a in state.alarms if a.code is AlarmCode.PACK_ISOLATED] == [2]
            for _ in range(100):  # the pack-bus command goes out at the source's command period
                if 2 in commands.open_requested:
                    break
                await asyncio.sleep(0.02)
            assert 2 in commands.open_requested
            # it comes back: rejoins through the hot-add procedure, its share ramps in
            packs[2].silent = False
            mid = await inverter.until(
                lambda f: f.modules == N and (N - 1) * MAX_CHARGE + 1 < f.ccl < N * MAX_CHARGE - 1,
                within=10.0,
            )
            assert A_COMM not in mid.flags
            await inverter.until(lambda f: near(f.ccl, N * MAX_CHARGE), within=10.0)
            # the CCL is "near" full a little before the hot-add ramp ends: then the pack runs
            async with asyncio.timeout(5.0):
                while (service := gateway.state().packs[2].service) is not PackService.RUNNING:
                    assert service is PackService.RAMPING
                    await asyncio.sleep(0.02)
