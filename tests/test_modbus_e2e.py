"""End to end: fake pack on virtual CAN → gateway → Pylontech CAN and Modbus/SunSpec at once; EMS writes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from fakes import A_COMM, PackModel, run_fake_pack, running
from modbus_support import tcp_client, until
from test_gateway_e2e import Inverter
from test_modbus_tcp import scan

from bmsgw.app import Gateway
from bmsgw.clock import ScaledClock
from bmsgw.config import load_settings
from bmsgw.inverter import modbus_map
from bmsgw.model import Reason
from bmsgw.outputs.modbus import ModbusOutput
from bmsgw.transport.can_bus import AsyncCanBus

SPEED = 10.0
MAX_CHARGE = 50.0
MAX_DISCHARGE = 80.0
TIMEOUT_S = 5.0  # control_timeout_s: 0.5 s wall at SPEED
CAP = modbus_map.CONTROL_BASE + 2


@dataclass
class Rig:
    gateway: Gateway
    pack: PackModel
    inverter: Inverter
    modbus: ModbusOutput


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    pack_ch, out_ch = f"pack-{uuid.uuid4()}", f"inv-{uuid.uuid4()}"
    settings, _ = load_settings(
        None,
        {
            "packs": [{"id": "p1", "cells": 16, "sensors": 4, "chemistry": "lfp", "capacity_ah": 100}],
            "can": {"interface": "virtual", "channel": pack_ch},
            "outputs": [
                {"protocol": "pylontech-can", "interface": "virtual", "channel": out_ch},
                {
                    "protocol": "modbus-tcp",
                    "tcp_port": 0,
                    "writes": True,
                    "allow": ["127.0.0.1"],
                    "control_timeout_s": TIMEOUT_S,
                },
            ],
            "gateway.stale_after_s": 3.0,
            "gateway.recovery_ramp_s": 1.0,
            "gateway.step_period_s": 0.1,
            "limits": {"max_charge_current_a": MAX_CHARGE, "max_discharge_current_a": MAX_DISCHARGE},
        },
        env={},
    )
    gateway = Gateway(settings, ScaledClock(SPEED))
    modbus = gateway.outputs[1]
    assert isinstance(modbus, ModbusOutput)
    assert modbus.ems is gateway.pipeline.ems is not None  # writes reach the pipeline, hence every output
    pack = PackModel()
    async with AsyncCanBus("virtual", pack_ch) as pack_bus, AsyncCanBus("virtual", out_ch) as inv_bus:
        inverter = Inverter(inv_bus)
        async with running(gateway.run, lambda: run_fake_pack(pack_bus, pack, 0.1 / SPEED), inverter.run):
            await until(lambda: modbus.listening)
            yield Rig(gateway, pack, inverter, modbus)


async def test_sunspec_and_pylontech_can_agree(rig: Rig) -> None:
    f = await rig.inverter.until(lambda f: f.ccl == MAX_CHARGE and f.dcl == MAX_DISCHARGE)
    assert rig.modbus.bound_port is not None
    bat = (await asyncio.to_thread(scan, rig.modbus.bound_port)).models[802][0]
    f = await rig.inverter.until(lambda f: True)
    assert bat.SoC.cvalue == pytest.approx(f.soc, abs=1.0)  # CAN: whole %, SunSpec: 0.1 %
    assert bat.SoH.cvalue == pytest.approx(f.soh, abs=1.0)
    assert bat.AChaMax.cvalue == f.ccl == MAX_CHARGE
    assert bat.ADisChaMax.cvalue == f.dcl == MAX_DISCHARGE
    assert bat.V.cvalue == pytest.approx(f.voltage, abs=0.02)
    assert bat.A.cvalue == pytest.approx(f.current, abs=0.1)
    assert bat.Evt1.value == 0


async def test_ems_cap_shows_on_the_can_frames_and_cannot_raise(rig: Rig) -> None:
    await rig.inverter.until(lambda f: f.ccl == MAX_CHARGE)
    async with tcp_client(rig.modbus) as client:
        assert not (await client.write_register(CAP, 200, device_id=1)).isError()  # 20.0 A
        await client.write_register(modbus_map.CONTROL_BASE, 1, device_id=1)
        f = await rig.inverter.until(lambda f: f.ccl == 20.0)
        assert f.dcl == MAX_DISCHARGE
        assert rig.gateway.state().limits.ccl.reason is Reason.EMS
        status = await client.read_holding_registers(0, count=31, device_id=1)
        assert status.registers[14] == modbus_map.REASON_CODES[Reason.EMS]
        assert status.registers[10] == 200
        # A cap above the core's limit does not raise it: the core's 50 A stays, with the core's reason.
        assert not (await client.write_register(CAP, 5000, device_id=1)).isError()
        f = await rig.inverter.until(lambda f: f.ccl == MAX_CHARGE)
        assert rig.gateway.state().limits.ccl.reason is not Reason.EMS
        async with tcp_client(rig.modbus, source="127.0.0.2") as stranger:
            refused = await stranger.write_register(CAP, 0, device_id=1)
        assert refused.exception_code == 1
        out_of_range = await client.write_register(modbus_map.CONTROL_BASE + 1, 2000, device_id=1)
        assert out_of_range.exception_code == 3
    await asyncio.sleep(0.3)
    f = await rig.inverter.until(lambda f: True)
    assert (f.ccl, f.dcl) == (MAX_CHARGE, MAX_DISCHARGE)


async def test_no_heartbeat_reverts_the_can_frames(rig: Rig) -> None:
    await rig.inverter.until(lambda f: f.ccl == MAX_CHARGE)
    async with tcp_client(rig.modbus) as client:
        await client.write_register(modbus_map.CONTROL_BASE + 5, 1, device_id=1)  # disconnect
    f = await rig.inverter.until(lambda f: f.ccl == 0 and f.dcl == 0)
    assert not f.charge_enable
    assert not f.discharge_enable
    assert A_COMM not in f.flags  # a command, not a communication failure
    # Nobody writes any more: after control_timeout_s the gateway is automatic again.
    await rig.inverter.until(
        lambda f: f.ccl == MAX_CHARGE and f.dcl == MAX_DISCHARGE, within=TIMEOUT_S / SPEED + 3
    )


async def test_comm_lost_reaches_sunspec_and_can(rig: Rig) -> None:
    await rig.inverter.until(lambda f: f.ccl == MAX_CHARGE)
    rig.pack.silent = True
    f = await rig.inverter.until(lambda f: f.ccl == 0 and f.dcl == 0 and A_COMM in f.flags)
    assert rig.modbus.bound_port is not None
    bat = (await asyncio.to_thread(scan, rig.modbus.bound_port)).models[802][0]
    assert bat.Evt1.value & 1  # COMMUNICATION_ERROR
    assert bat.AChaMax.cvalue == bat.ADisChaMax.cvalue == 0
    assert bat.State.value == 99
    assert f.cvl > 0
