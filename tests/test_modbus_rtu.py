"""Modbus RTU server on a real serial line (two bridged pty pairs): pysunspec2, mbpoll, pymodbus."""

from __future__ import annotations

import asyncio
import shutil

import pytest
import sunspec2.modbus.client as sunspec_client
from modbus_support import bridged_ptys, run_pipeline, serving, settings_for
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import ModbusIOException

from bmsgw.inverter import modbus_map
from bmsgw.model import Reason

BAUD = 19200


def scan_rtu(path: str) -> dict[int, list[object]]:
    """pysunspec2 discovery over RTU 19200 8N1 on `path`."""
    device = sunspec_client.SunSpecModbusClientDeviceRTU(
        slave_id=1, name=path, baudrate=BAUD, parity="N", timeout=2
    )
    try:
        device.scan()
    finally:
        device.close()
    return {k: v for k, v in device.models.items() if isinstance(k, int)}


async def test_pysunspec2_scans_over_rtu() -> None:
    with bridged_ptys() as (server_path, client_path):
        settings = settings_for(
            packs=2, output={"protocol": "modbus-rtu", "port": server_path, "tcp_port": None}
        )
        pipeline = run_pipeline(settings)
        state = pipeline.state
        async with serving(settings, lambda: pipeline.state) as out:
            models = await asyncio.to_thread(scan_rtu, client_path)
    assert {k: len(v) for k, v in models.items()} == {1: 1, 802: 1, 803: 1, 804: 2}
    bat = models[802][0]
    assert bat.SoC.cvalue == pytest.approx(state.soc * 100, abs=0.05)  # type: ignore[attr-defined]
    assert bat.AChaMax.cvalue == pytest.approx(100.0)  # type: ignore[attr-defined]
    assert bat.V.cvalue == pytest.approx(state.voltage, abs=0.005)  # type: ignore[attr-defined]
    assert out.requests == out.sent > 0


@pytest.mark.skipif(
    shutil.which("mbpoll") is None, reason="mbpoll not installed (apt-get install mbpoll; CI does)"
)
async def test_mbpoll_reads_over_rtu() -> None:
    with bridged_ptys() as (server_path, client_path):
        settings = settings_for(
            packs=1, output={"protocol": "modbus-rtu", "port": server_path, "tcp_port": None}
        )
        pipeline = run_pipeline(settings)
        async with serving(settings, lambda: pipeline.state):
            proc = await asyncio.create_subprocess_exec(
                "mbpoll", "-m", "rtu", "-b", str(BAUD), "-P", "none", "-a", "1", "-0",
                "-r", "0", "-c", "3", "-1", client_path,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            stdout, stderr = await asyncio.wait_for(proc.communicate(), 20)
    text = stdout.decode()
    assert proc.returncode == 0, stderr.decode()
    soc = round(pipeline.state.soc * 1000)
    assert f"[0]: \t{modbus_map.MAP_VERSION}" in text, text
    assert f"[2]: \t{soc}" in text, text


async def test_rtu_writes_and_silence_for_other_units() -> None:
    with bridged_ptys() as (server_path, client_path):
        output = {"protocol": "modbus-rtu", "port": server_path, "tcp_port": None, "writes": True}
        settings = settings_for(packs=1, output=output)
        pipeline = run_pipeline(settings)
        async with serving(settings, lambda: pipeline.state, pipeline=pipeline) as out:
            client = AsyncModbusSerialClient(client_path, baudrate=BAUD, parity="N", timeout=0.5, retries=0)
            assert await client.connect()
            try:
                with pytest.raises(ModbusIOException, match="No response"):  # unit 9's turn, not ours
                    await client.read_holding_registers(0, count=1, device_id=9)
                cap = await client.write_register(modbus_map.CONTROL_BASE + 3, 123, device_id=1)
                bad = await client.write_register(modbus_map.CONTROL_BASE + 5, 2, device_id=1)
                status = await client.read_holding_registers(0, count=31, device_id=1)
            finally:
                client.close()
        state = pipeline.step(pipeline.state.t + 0.1)
    assert not cap.isError()
    assert bad.exception_code == 3
    assert status.registers[17] & 1 << modbus_map.F_WRITES
    assert state.limits.dcl.value == pytest.approx(12.3)
    assert state.limits.dcl.reason is Reason.EMS
    assert out.rejected_writes == 1
