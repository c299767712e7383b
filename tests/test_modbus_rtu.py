"""Modbus RTU server on a real serial line (two bridged pty pairs): pysunspec2, mbpoll, pymodbus."""

from __future__ import annotations

import asyncio
import os
import shutil
import struct

import pytest
import sunspec2.modbus.client as sunspec_client
from hypothesis import given
from hypothesis import strategies as st
from modbus_support import bridged_ptys, run_pipeline, serving, settings_for, until
from ptys import PtyPair, pty_pair
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu import DecodePDU

from bmsgw.bms.daly_modbus import crc16
from bmsgw.inverter import modbus_map
from bmsgw.model import Reason
from bmsgw.outputs.modbus import ModbusOutput, _RtuFramer

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


# --- a shared line: other devices' traffic, noise, frames cut short ---------------------------------------


def rtu(body: bytes) -> bytes:
    """`body` (unit id, function code, data) with its CRC, low byte first."""
    return body + struct.pack("<H", crc16(body))


OURS = rtu(bytes([1, 3]) + struct.pack(">HH", 40000, 2))  # SunSpec marker, unit 1
ANSWER = rtu(bytes([1, 3, 4]) + b"SunS")


async def _line_reply(line: PtyPair, out: ModbusOutput, data: bytes, answers: int) -> bytes:
    """Write `data` in one piece; what the server sends once it has answered `answers` requests more."""
    want = out.sent + answers
    os.write(line.fd, data)
    await until(lambda: out.sent >= want)
    await asyncio.sleep(0.05)  # and nothing more
    return line.read_available()


async def test_rtu_finds_our_request_among_other_traffic_in_one_read() -> None:
    with pty_pair() as line:
        settings = settings_for(
            packs=1, output={"protocol": "modbus-rtu", "port": line.path, "tcp_port": None}
        )
        pipeline = run_pipeline(settings)
        async with serving(settings, lambda: pipeline.state) as out:
            other_request = rtu(bytes([9, 3]) + struct.pack(">HH", 0, 10))
            other_answer = rtu(bytes([9, 3, 4, 0, 1, 0, 2]))
            assert await _line_reply(line, out, other_request + other_answer + OURS, 1) == ANSWER
            assert await _line_reply(line, out, b"\x00" + OURS, 1) == ANSWER  # a glitch at line turnaround
            assert await _line_reply(line, out, OURS + OURS[:3], 1) == ANSWER  # the next one begins
            assert await _line_reply(line, out, OURS[3:], 1) == ANSWER  # … and completes
            assert await _line_reply(line, out, OURS[:5] + OURS, 1) == ANSWER  # a frame cut short, then ours
            # two of ours in one read (a master that retried too early): both answered, in order
            assert await _line_reply(line, out, OURS + OURS, 2) == ANSWER + ANSWER
            # a long write (writes off: exception 1) arriving in three pieces
            write = rtu(bytes([1, 16]) + struct.pack(">HHB", 40000, 100, 200) + bytes(range(200)))
            refused = rtu(bytes([1, 0x90, 1]))
            os.write(line.fd, write[:100])
            await asyncio.sleep(0.05)
            os.write(line.fd, write[100:180])
            await asyncio.sleep(0.05)
            assert await _line_reply(line, out, write[180:], 1) == refused
            # another unit's exception answer: pymodbus cannot decode it as a request; we stay silent
            os.write(line.fd, rtu(bytes([9, 0x83, 2])))
            await asyncio.sleep(0.2)
            assert line.read_available() == b""
            assert await _line_reply(line, out, OURS, 1) == ANSWER


@given(st.binary(max_size=600))
def test_rtu_framer_on_random_bytes_uses_at_most_what_it_got_and_checks_crcs(data: bytes) -> None:
    used, unit, _, pdu = _RtuFramer(DecodePDU(True)).decode(data)
    assert 0 <= used <= len(data)
    if pdu:
        frame = data[used - len(pdu) - 3 : used]
        assert frame[0] == unit
        assert rtu(frame[:-2]) == frame


@given(st.binary(max_size=300))
def test_rtu_framer_finds_a_request_that_ends_the_read_after_any_bytes(prefix: bytes) -> None:
    framer = _RtuFramer(DecodePDU(True))
    data, found = prefix + OURS, []
    while data:
        used, unit, _, pdu = framer.decode(data)
        if not used:
            break
        if pdu:
            found.append((unit, pdu))
        data = data[used:]
    assert found[-1] == (1, OURS[1:-2])
    assert data == b""
