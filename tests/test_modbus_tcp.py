"""Modbus TCP server against clients we did not write: pysunspec2, mbpoll, pymodbus."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sunspec2.modbus.client as sunspec_client
from modbus_support import comm_lost, feed, run_pipeline, serving, settings_for, tcp_client, until

from bmsgw.clock import SteppedClock
from bmsgw.ems import Command
from bmsgw.inverter import modbus_map, sunspec
from bmsgw.model import Limit, Reason
from bmsgw.outputs.modbus import ModbusOutput
from bmsgw.pipeline import Pipeline

CCL = 100.0  # 2 packs × 50 A
DCL = 160.0  # 2 packs × 80 A
WRITER = {"writes": True, "allow": ["127.0.0.1"], "control_timeout_s": 60}


def scan(port: int, unit: int = 1) -> sunspec_client.SunSpecModbusClientDeviceTCP:
    """pysunspec2's own discovery: probe 40000 for "SunS", walk the models, read them all."""
    device = sunspec_client.SunSpecModbusClientDeviceTCP(
        slave_id=unit, ipaddr="127.0.0.1", ipport=port, timeout=5
    )
    try:
        device.scan()
    finally:
        device.disconnect()
    return device


async def test_pysunspec2_scans_and_reads_every_model() -> None:
    settings = settings_for(packs=2)
    pipeline = run_pipeline(settings)
    state = pipeline.state
    async with serving(settings, lambda: pipeline.state) as out:
        assert out.bound_port is not None
        dev = await asyncio.to_thread(scan, out.bound_port)
    assert {k: len(v) for k, v in dev.models.items() if isinstance(k, int)} == {1: 1, 802: 1, 803: 1, 804: 2}
    common = dev.models[1][0]
    assert (common.Mn.value, common.SN.value, common.DA.value) == ("bmsgw", "bmsgw", 1)
    assert common.Md.value == "bmsgw LFP 2x16S"
    bat = dev.models[802][0]
    assert bat.SoC.cvalue == pytest.approx(state.soc * 100, abs=0.05)
    assert bat.SoH.cvalue == pytest.approx(state.soh * 100, abs=0.05)
    assert bat.V.cvalue == pytest.approx(state.voltage, abs=0.005)
    assert bat.A.cvalue == pytest.approx(20.0)
    assert bat.W.cvalue == pytest.approx(state.voltage * 20.0, rel=0.01)
    assert bat.AChaMax.cvalue == pytest.approx(CCL)
    assert bat.ADisChaMax.cvalue == pytest.approx(DCL)
    assert bat.AHRtg.cvalue == pytest.approx(210.0)
    assert bat.CellVMax.cvalue == pytest.approx(3.311)
    assert bat.CellVMaxStr.value == 2
    assert bat.CellVMin.cvalue == pytest.approx(3.300)
    assert bat.Evt1.value == 0
    assert bat.State.value == 3  # CONNECTED
    assert bat.ChaSt.value == 4  # CHARGING
    assert bat.Typ.value == 4  # LITHIUM_ION
    assert bat.NCyc.value is None  # not implemented reads as None in pysunspec2
    bank = dev.models[803][0]
    assert bank.NStr.value == 2
    assert bank.NStrCon.value == 2
    assert len(bank.string) == 2
    assert bank.string[1].StrCellVMax.cvalue == pytest.approx(3.311)
    assert bank.ModTmpMax.cvalue == pytest.approx(27.0)
    assert bank.ModTmpMaxStr.value == 2
    for i, string in enumerate(dev.models[804]):
        view = state.packs[i]
        assert string.Idx.value == i + 1
        assert string.SoC.cvalue == pytest.approx(view.soc * 100, abs=0.05)
        assert string.A.cvalue == pytest.approx(10.0)
        assert string.V.cvalue == pytest.approx(view.sample.voltage if view.sample else 0, abs=0.005)
        module = string.lithium_ion_string_module[0]
        assert module.ModNCell.value == 16
        assert module.ModCellVMaxCell.value == 4 + i
        assert module.ModCellTmpMax.cvalue == pytest.approx(26.0 + i)


async def test_fail_safe_is_served() -> None:
    settings = settings_for(packs=1)
    pipeline = run_pipeline(settings)
    comm_lost(pipeline)
    async with serving(settings, lambda: pipeline.state) as out:
        assert out.bound_port is not None
        bat = (await asyncio.to_thread(scan, out.bound_port)).models[802][0]
        async with tcp_client(out) as client:
            rr = await client.read_holding_registers(0, count=31, device_id=1)
    assert bat.Evt1.value & 1  # COMMUNICATION_ERROR
    assert bat.AChaMax.cvalue == 0
    assert bat.ADisChaMax.cvalue == 0
    assert bat.State.value == 99  # FAULT
    assert rr.registers[10:12] == [0, 0]  # CCL, DCL
    assert rr.registers[14] == modbus_map.REASON_CODES[Reason.COMM_LOST]


@pytest.mark.skipif(
    shutil.which("mbpoll") is None, reason="mbpoll not installed (apt-get install mbpoll; CI does)"
)
async def test_mbpoll_reads_the_sunspec_header() -> None:
    settings = settings_for(packs=1)
    pipeline = run_pipeline(settings)
    async with serving(settings, lambda: pipeline.state) as out:
        proc = await asyncio.create_subprocess_exec(
            "mbpoll", "-m", "tcp", "-p", str(out.bound_port), "-a", "1",
            "-r", "40001", "-c", "4", "-t", "4:hex", "-1", "127.0.0.1",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 20)
    text = stdout.decode()
    assert proc.returncode == 0, stderr.decode()
    for ref, value in (("40001", "0x5375"), ("40002", "0x6E53"), ("40003", "0x0001"), ("40004", "0x0042")):
        assert f"[{ref}]: \t{value}" in text, text


async def test_pymodbus_reads_the_bmsgw_map() -> None:
    settings = settings_for(packs=2)
    pipeline = run_pipeline(settings)
    state = pipeline.state
    async with serving(settings, lambda: pipeline.state) as out, tcp_client(out) as client:
        hr = await client.read_holding_registers(0, count=31, device_id=1)
        ir = await client.read_input_registers(0, count=31, device_id=1)
        pack = await client.read_holding_registers(modbus_map.PACK_BASE + modbus_map.PACK_STRIDE, count=20)
        current = client.convert_from_registers(hr.registers[5:6], client.DATATYPE.INT16)
        power = client.convert_from_registers(hr.registers[6:8], client.DATATYPE.INT32)
    assert hr.registers == ir.registers  # FC3 and FC4 read the same registers
    regs = hr.registers
    assert regs[0] == modbus_map.MAP_VERSION
    assert regs[2] == round(state.soc * 1000)
    assert regs[4] == round(state.voltage * 100)
    assert current == 200  # 20.0 A
    assert power == pytest.approx(state.voltage * 20.0, abs=1)
    assert regs[9:13] == [552, 1000, 1600, 464]  # CVL, CCL, DCL, DVL
    assert regs[13:17] == [modbus_map.REASON_CODES[Reason.CONFIG]] * 4
    assert regs[22] == 3311
    assert regs[24] == 2 << 8 | 5
    assert regs[28:30] == [2, 2]
    assert pack.registers[0] == 0  # online
    assert pack.registers[6] == 3311
    assert pack.registers[19] == 110


async def test_errors_for_bad_requests() -> None:
    settings = settings_for(packs=1)
    pipeline = run_pipeline(settings)
    async with serving(settings, lambda: pipeline.state) as out, tcp_client(out) as client:
        gap = await client.read_holding_registers(50, count=1, device_id=1)
        across = await client.read_holding_registers(25, count=10, device_id=1)  # status block ends at 30
        beyond = await client.read_holding_registers(modbus_map.PACK_BASE + modbus_map.PACK_STRIDE, count=1)
        coils = await client.read_coils(0, count=8, device_id=1)
        other = await client.read_holding_registers(0, count=1, device_id=7)
        ok = await client.read_holding_registers(sunspec.BASE, count=2, device_id=1)
    assert (gap.exception_code, across.exception_code, beyond.exception_code) == (2, 2, 2)
    assert coils.exception_code == 1
    assert other.exception_code == 0x0B
    assert ok.registers == [0x5375, 0x6E53]
    assert out.requests == out.sent == 6


def _read(tid: int, address: int, count: int, unit: int = 1) -> bytes:
    """A raw Modbus TCP read-holding-registers request (MBAP + PDU)."""
    return struct.pack(">HHHBBHH", tid, 0, 6, unit, 3, address, count)


async def _answers(reader: asyncio.StreamReader, n: int) -> list[tuple[int, int, bytes]]:
    """`n` MBAP answers as (transaction id, function code, data)."""
    out = []
    async with asyncio.timeout(10):
        for _ in range(n):
            tid, _, length = struct.unpack(">HHH", await reader.readexactly(6))
            body = await reader.readexactly(length)
            out.append((tid, body[1], body[2:]))
    return out


_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@contextlib.asynccontextmanager
async def _raw_connections(n: int) -> AsyncIterator[list[_Conn]]:
    """`n` raw TCP connections to a Modbus TCP output of one pack; closed on exit."""
    settings = settings_for(packs=1)
    pipeline = run_pipeline(settings)
    async with serving(settings, lambda: pipeline.state) as out:
        assert out.bound_port is not None
        conns = [await asyncio.open_connection("127.0.0.1", out.bound_port) for _ in range(n)]
        try:
            yield conns
        finally:
            for _, writer in conns:
                writer.close()


async def test_pipelined_requests_are_all_answered_in_order() -> None:
    async with _raw_connections(1) as [(reader, writer)]:
        # one write, six requests: SunSpec, the map, an exception, another unit, a function code pymodbus
        # does not know, SunSpec again
        unknown = struct.pack(">HHHBB", 18, 0, 2, 1, 0x41)
        writer.write(_read(11, sunspec.BASE, 2) + _read(12, 0, 1) + _read(13, 50, 1) + _read(14, 0, 1, 7)
                     + unknown + _read(15, sunspec.BASE + 2, 1))  # fmt: skip
        await writer.drain()
        got = await _answers(reader, 6)
        # the next request arrives in two pieces, the first with a request whose answer goes out between
        writer.write(_read(16, 0, 1) + _read(17, sunspec.BASE, 2)[:5])
        await writer.drain()
        assert (await _answers(reader, 1))[0][0] == 16
        writer.write(_read(17, sunspec.BASE, 2)[5:])
        await writer.drain()
        late = await _answers(reader, 1)
    assert [tid for tid, _, _ in got] == [11, 12, 13, 14, 18, 15]
    assert got[0][1:] == (3, bytes([4]) + b"SunS")
    assert got[1][1:] == (3, struct.pack(">BH", 2, modbus_map.MAP_VERSION))
    assert got[2][1:] == (0x83, bytes([2]))  # ILLEGAL DATA ADDRESS
    assert got[3][1:] == (0x83, bytes([0x0B]))  # another unit: gateway target failed to respond
    assert got[4][1:] == (0xC1, bytes([1]))  # ILLEGAL FUNCTION
    assert got[5][1:] == (3, struct.pack(">BH", 2, 1))  # SunSpec model 1 starts at 40002
    assert late == [(17, 3, bytes([4]) + b"SunS")]


async def test_a_long_pipeline_in_one_segment_is_answered() -> None:
    async with _raw_connections(1) as [(reader, writer)]:
        writer.write(b"".join(_read(100 + k, sunspec.BASE, 2) for k in range(40)))  # 480 bytes
        await writer.drain()
        got = await _answers(reader, 40)
    assert [tid for tid, _, _ in got] == [100 + k for k in range(40)]  # pymodbus dropped reads > 264 bytes
    assert {body for _, _, body in got} == {bytes([4]) + b"SunS"}


@pytest.mark.parametrize(
    "header", [struct.pack(">HHHB", 1, 1, 6, 1), struct.pack(">HHHB", 1, 0, 3000, 1)], ids=["pid", "length"]
)
async def test_a_bad_mbap_header_closes_the_connection_and_others_go_on(header: bytes) -> None:
    async with _raw_connections(2) as [(bad_reader, bad), (good_reader, good)]:
        bad.write(header + struct.pack(">BHH", 3, 0, 1))
        await bad.drain()
        async with asyncio.timeout(5):
            assert await bad_reader.read() == b""  # closed: the client reconnects clean
        good.write(_read(5, sunspec.BASE, 2))
        await good.drain()
        assert await _answers(good_reader, 1) == [(5, 3, bytes([4]) + b"SunS")]


async def test_writes_off_are_refused_and_change_nothing() -> None:
    settings = settings_for(packs=1)
    pipeline = run_pipeline(settings)
    async with serving(settings, lambda: pipeline.state) as out, tcp_client(out) as client:
        cap = await client.write_register(modbus_map.CONTROL_BASE + 2, 100, device_id=1)
        reading = await client.write_register(2, 100, device_id=1)  # a reading: still 1, writes are off
        setop = await client.write_register(sunspec.BATTERY_ADDR + 50, 2, device_id=1)
        back = await client.read_holding_registers(modbus_map.CONTROL_BASE, count=6, device_id=1)
    assert (cap.exception_code, reading.exception_code, setop.exception_code) == (1, 1, 1)
    assert back.registers == modbus_map.encode_control(Command())
    assert out.rejected_writes == 3
    assert pipeline.ems is None


async def writer_rig(**output: Any) -> tuple[Any, Pipeline, SteppedClock]:
    settings = settings_for(packs=2, output={**WRITER, **output})
    pipeline = run_pipeline(settings)
    return settings, pipeline, SteppedClock(start=pipeline.state.t)


async def test_allowed_client_caps_ccl_and_other_clients_cannot() -> None:
    settings, pipeline, clock = await writer_rig()
    async with serving(settings, lambda: pipeline.state, clock, pipeline) as out:
        async with tcp_client(out, source="127.0.0.2") as stranger:
            refused = await stranger.write_register(modbus_map.CONTROL_BASE + 2, 200, device_id=1)
            readable = await stranger.read_holding_registers(0, count=1, device_id=1)
        async with tcp_client(out) as client:
            ok = await client.write_register(modbus_map.CONTROL_BASE + 2, 200, device_id=1)  # 20.0 A
            raise_ = await client.write_register(modbus_map.CONTROL_BASE + 3, 5000, device_id=1)  # 500 A
            state = feed(pipeline, range(5, 6))
            status = await client.read_holding_registers(0, count=31, device_id=1)
    assert refused.exception_code == 1
    assert readable.registers == [modbus_map.MAP_VERSION]
    assert not ok.isError()
    assert ok.registers == [200]  # FC6 echo
    assert not raise_.isError()
    assert state.limits.ccl.value == 20.0
    assert state.limits.ccl.reason is Reason.EMS
    assert state.limits.dcl.value == DCL  # a cap above the core's limit leaves the core's limit
    assert state.limits.dcl.reason is Reason.CONFIG
    regs = status.registers
    assert regs[10:12] == [200, 1600]
    assert regs[14] == modbus_map.REASON_CODES[Reason.EMS]
    assert regs[17] & 1 << modbus_map.F_EMS_ACTIVE
    assert regs[30] == 60  # control_remaining
    assert out.rejected_writes == 1
    assert out.accepted_writes == 2


async def test_out_of_range_and_read_only_writes_change_nothing() -> None:
    settings, pipeline, clock = await writer_rig()
    async with serving(settings, lambda: pipeline.state, clock, pipeline) as out, tcp_client(out) as client:
        await client.write_register(modbus_map.CONTROL_BASE + 1, 300, device_id=1)  # reserve 30 %
        before = await client.read_holding_registers(modbus_map.CONTROL_BASE, count=6, device_id=1)
        bad = await client.write_registers(modbus_map.CONTROL_BASE + 2, [100, 100, 0, 7], device_id=1)
        too_high = await client.write_register(modbus_map.CONTROL_BASE + 1, 1001, device_id=1)
        reading = await client.write_register(2, 0, device_id=1)
        undefined = await client.write_register(modbus_map.CONTROL_BASE + 6, 0, device_id=1)
        bad_setop = await client.write_register(sunspec.BATTERY_ADDR + 50, 3, device_id=1)
        after = await client.read_holding_registers(modbus_map.CONTROL_BASE, count=6, device_id=1)
    assert before.registers == [0, 300, 0xFFFF, 0xFFFF, 0, 0]
    assert (bad.exception_code, too_high.exception_code, bad_setop.exception_code) == (3, 3, 3)
    assert (reading.exception_code, undefined.exception_code) == (2, 2)
    assert after.registers == before.registers
    assert pipeline.ems is not None
    assert pipeline.ems.command(clock.now()) == Command(reserve_soc=0.3)


async def test_sunspec_writes_through_pysunspec2() -> None:
    settings, pipeline, clock = await writer_rig()

    def write(port: int) -> tuple[Any, ...]:
        dev = scan(port)
        bat = dev.models[802][0]
        bat.SoCRsvMin.cvalue = 95.0
        bat.SetOp.value = 2  # DISCONNECT
        bat.write()
        bat.read()
        dev.disconnect()
        return bat.SoCRsvMin.cvalue, bat.SetOp.value, bat.LocRemCtl.value, bat.State.value

    async with serving(settings, lambda: pipeline.state, clock, pipeline) as out:
        assert out.bound_port is not None
        reserve, setop, locrem, bat_state = await asyncio.to_thread(write, out.bound_port)
        state = feed(pipeline, range(5, 6))
    assert (reserve, setop, locrem, bat_state) == (95.0, 2, 0, 1)  # REMOTE, DISCONNECTED
    assert state.limits.ccl.value == state.limits.dcl.value == 0
    assert state.limits.ccl.reason is Reason.EMS
    assert not state.limits.charge_enable


async def test_heartbeat_timeout_reverts_to_automatic() -> None:
    settings, pipeline, clock = await writer_rig(control_timeout_s=30)
    t0 = clock.now()
    async with serving(settings, lambda: pipeline.state, clock, pipeline) as out, tcp_client(out) as client:
        await client.write_register(modbus_map.CONTROL_BASE + 2, 150, device_id=1)  # until t0 + 30
        clock.advance(t0 + 20)
        await client.write_register(modbus_map.CONTROL_BASE, 1, device_id=1)  # heartbeat: until t0 + 50
        capped = feed(pipeline, range(1), start=t0 + 45)
        clock.advance(t0 + 49)
        kept = await client.read_holding_registers(modbus_map.CONTROL_BASE, count=6, device_id=1)
        clock.advance(t0 + 50)
        dropped = await client.read_holding_registers(modbus_map.CONTROL_BASE, count=6, device_id=1)
        status = await client.read_holding_registers(0, count=31, device_id=1)
        state = feed(pipeline, range(1), start=t0 + 51)
    assert capped.limits.ccl == Limit(15.0, Reason.EMS)
    assert kept.registers[:3] == [1, 0xFFFF, 150]
    assert dropped.registers == modbus_map.encode_control(Command())
    assert status.registers[30] == 0
    assert not status.registers[17] & 1 << modbus_map.F_EMS_ACTIVE
    assert state.limits.ccl == Limit(CCL, Reason.CONFIG)


async def test_busy_port_is_retried_until_free() -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        settings = settings_for(packs=1, output={"tcp_port": port})
        pipeline = run_pipeline(settings)
        out = ModbusOutput(settings, settings.outputs[0], SteppedClock(speed=20.0), lambda: pipeline.state)
        task = asyncio.create_task(out.run())
        try:
            await until(lambda: out.errors >= 2)
            assert out.bound_port is None
            blocker.close()
            await until(lambda: out.bound_port is not None, within=10)
            assert out.bound_port == port
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
