"""Pylontech RS485 output: python-pylontech reads it over a real pty pair and over TCP; resync, refusals,
reconnects, configuration, and a byte stream that never kills it."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import serial
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ptys import PtyPair, pty_pair
from pylontech import Pylontech
from test_pylontech_rs485 import CELLS, CURRENTS, TEMPS, comm_lost, live_pipeline, rig_settings

from bmsgw.app import Gateway
from bmsgw.clock import ScaledClock
from bmsgw.config import ConfigError, Settings, load_settings
from bmsgw.inverter import pylontech_rs485 as pr
from bmsgw.inverter.pylontech_rs485 import Command, Rtn
from bmsgw.model import GatewayState
from bmsgw.outputs.pylontech_rs485 import PylontechRs485Output

CLOCK = ScaledClock(speed=20.0)  # backoff sleeps 20x shorter


@contextlib.asynccontextmanager
async def serving(
    s: Settings, state: Callable[[], GatewayState], **cfg: Any
) -> AsyncIterator[PylontechRs485Output]:
    """Run the output (config from `s` plus `cfg`) until the block ends; waits for the TCP listener."""
    out = PylontechRs485Output(s, s.outputs[0].model_copy(update=cfg), CLOCK, state)
    task = asyncio.create_task(out.run())
    try:
        for _ in range(200):
            if out.cfg.tcp_port is None or out.tcp_address is not None or task.done():
                break
            await asyncio.sleep(0.01)
        assert not task.done(), task
        yield out
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def exchange(out: PylontechRs485Output, data: bytes, replies: int = 1) -> list[pr.Rs485Frame]:
    """Send `data` over a fresh TCP connection and read `replies` CR-terminated frames."""
    assert out.tcp_address is not None
    reader, writer = await asyncio.open_connection(*out.tcp_address)
    try:
        writer.write(data)
        await writer.drain()
        return [pr.decode_frame(await asyncio.wait_for(reader.readuntil(b"\r"), 5)) for _ in range(replies)]
    finally:
        writer.close()
        await writer.wait_closed()


@contextlib.contextmanager
def bridged(a: PtyPair, b: PtyPair) -> Iterator[None]:
    """Copy bytes between the two pty masters, so whoever opens a.path talks to whoever opens b.path."""
    loop = asyncio.get_running_loop()

    def pump(src: int, dst: int) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(dst, os.read(src, 65536))

    loop.add_reader(a.fd, pump, a.fd, b.fd)
    loop.add_reader(b.fd, pump, b.fd, a.fd)
    try:
        yield
    finally:
        loop.remove_reader(a.fd)
        loop.remove_reader(b.fd)


def tcp_client(address: tuple[str, int]) -> Pylontech:
    p = Pylontech.__new__(Pylontech)
    p.s = serial.serial_for_url(f"socket://{address[0]}:{address[1]}", timeout=2)
    return p


# --- the real client ---------------------------------------------------------------------------------------


async def test_python_pylontech_reads_the_gateway_state_over_a_pty_and_over_tcp() -> None:
    s = rig_settings(baudrate=115200)
    p = live_pipeline(s)
    state = p.state
    lim = state.limits
    with pty_pair() as server_end, pty_pair() as client_end, bridged(server_end, client_end):
        async with serving(s, lambda: state, port=server_end.path) as out:

            def over_pty() -> tuple[Any, Any, Any]:
                client = Pylontech(
                    serial_port=client_end.path, baudrate=115200
                )  # exclusive=True: a real flock
                try:
                    return client.get_values(), client.get_values_single(3), client.get_management_info(2)
                finally:
                    client.s.close()

            def over_tcp(call: Callable[[Pylontech], Any]) -> Any:
                client = tcp_client(cast(tuple[str, int], out.tcp_address))
                try:
                    return call(client)
                finally:
                    client.s.close()

            (values, single, management), version, maker, serial_no, params = await asyncio.gather(
                asyncio.to_thread(over_pty),
                asyncio.to_thread(over_tcp, lambda c: c.get_protocol_version()),
                asyncio.to_thread(over_tcp, lambda c: c.get_manufacturer_info()),
                asyncio.to_thread(over_tcp, lambda c: c.get_module_serial_number(3)),
                asyncio.to_thread(over_tcp, lambda c: c.get_system_parameters()),
            )
            assert out.serial_opens == 1
            assert out.errors == 0
            assert out.sent == out.requests == 7

    assert values.NumberOfModules == 2
    for i, m in enumerate(values.Module):
        view = state.packs[i]
        assert m.CellVoltages == pytest.approx(list(CELLS + 0.001 * i))
        assert m.AverageBMSTemperature == pytest.approx(25.0 + i)
        assert m.GroupedCellsTemperatures == pytest.approx(list(TEMPS + i))
        assert m.Current == pytest.approx(CURRENTS[i])  # sign kept: > 0 charging
        assert m.Voltage == pytest.approx(view.sample.voltage if view.sample else 0, abs=1e-3)
        cap = (100.0, 50.0)[i]  # 24-bit and 16-bit capacity fields
        assert (m.RemainingCapacity, m.TotalCapacity) == pytest.approx((view.soc * cap, cap), abs=1e-3)
    assert values.StateOfCharge == pytest.approx(
        (state.packs[0].soc * 100 + state.packs[1].soc * 50) / 150, abs=1e-4
    )
    assert (single.NumberOfModule, single.Current) == (3, pytest.approx(CURRENTS[1]))
    assert single.StateOfCharge == pytest.approx(state.packs[1].soc, abs=1e-4)

    assert management.ChargeVoltageLimit == pytest.approx(lim.cvl.value, abs=1e-3)
    assert management.DischargeVoltageLimit == pytest.approx(lim.dvl.value, abs=1e-3)
    assert management.ChargeCurrentLimit == pytest.approx(lim.ccl.value / 2, abs=0.05)  # two modules share
    assert management.DischargeCurrentLimit == pytest.approx(-lim.dcl.value / 2, abs=0.05)
    assert management.status.ChargeEnable
    assert management.status.DischargeEnable
    assert not management.status.ShouldCharge

    assert (version.ver, version.cid2, version.info) == (b"\x20", b"\x00", b"")
    assert maker.DeviceName == b"bmsgw\0\0\0\0\0"
    assert maker.ManufacturerName == b"PYLON" + b"-" * 15
    assert (serial_no.CommandValue, serial_no.ModuleSerialNumber) == (3, b"pack-B          ")
    assert params.CellHighVoltageLimit == pytest.approx(3.65)
    assert params.ChargeCurrentLimit == pytest.approx(90.0)
    assert params.DischargeCurrentLimit == pytest.approx(-120.0)
    assert params.ModuleHighVoltageLimit == pytest.approx(16 * 3.65)


async def test_python_pylontech_sees_zero_limits_and_cleared_enables_when_comm_is_lost() -> None:
    s = rig_settings()
    state = comm_lost(live_pipeline(s))
    async with serving(s, lambda: state) as out:
        client = tcp_client(cast(tuple[str, int], out.tcp_address))
        try:
            m = await asyncio.to_thread(client.get_management_info, 2)
        finally:
            client.s.close()
        (system,) = await exchange(out, pr.encode_request(Command.SYSTEM_MANAGEMENT, 2))
        (alarm,) = await exchange(out, pr.encode_request(Command.SYSTEM_ALARM, 2))
    assert (m.ChargeCurrentLimit, m.DischargeCurrentLimit) == (0, 0)
    assert not m.status.ChargeEnable
    assert not m.status.DischargeEnable
    assert m.ChargeVoltageLimit == pytest.approx(state.limits.cvl.value, abs=1e-3)
    assert m.ChargeVoltageLimit > 0
    sm = pr.decode_management(system.info, address=False)
    assert (sm.charge_current, sm.discharge_current, sm.charge_enable, sm.discharge_enable) == (
        0,
        0,
        False,
        False,
    )
    assert alarm.info[1] & 1 << 4  # internal communication failure


# --- the line: resync, refusals, counters ------------------------------------------------------------------


async def test_garbage_then_a_request_still_gets_its_answer() -> None:
    s = rig_settings()
    state = live_pipeline(s).state
    async with serving(s, lambda: state) as out:
        noise = b"\x00\xff\r\n~20024642E0~garbage\r" + pr.encode_request(Command.ANALOG, 2, 2)[:9]
        (reply,) = await exchange(out, noise + pr.encode_request(Command.ANALOG, 2, 3))
        assert reply.cid2 == Rtn.NORMAL
        assert pr.decode_analog(reply.info, all_modules=False).value == 3
        # discarded: "\x00\xff\r\n", "~20024642E0" (a '~' restarts the frame), the 9 cut-off bytes
        assert out.garbage == 4 + 11 + 9
        assert (out.requests, out.sent, out.errors) == (2, 1, 1)  # "~garbage\r" was a candidate


async def test_refusals_on_the_wire() -> None:
    s = rig_settings()
    state = live_pipeline(s).state
    async with serving(s, lambda: state) as out:
        body = b"20024642D00202"  # LCHKSUM D where E is right, CHKSUM correct
        requests = (
            pr.encode_request(Command.ANALOG, 7, 7)  # no module 7
            + b"~20024642E00202FD34\r"  # bad CHKSUM
            + b"~%s%04X\r" % (body, pr.chksum(body))
            + pr.encode_request(0x99, 2)  # unknown CID2
            + pr.encode_request(Command.MANAGEMENT, 3, 3)
        )
        replies = await exchange(out, requests, replies=5)
        assert [(r.adr, r.cid2) for r in replies] == [
            (7, Rtn.ADR_ERROR),
            (2, Rtn.CHKSUM_ERROR),
            (2, Rtn.LCHKSUM_ERROR),
            (2, Rtn.CID2_INVALID),
            (3, Rtn.NORMAL),
        ]
        assert all(r.info == b"" for r in replies[:4])
        assert (out.requests, out.sent, out.errors) == (5, 5, 4)


async def test_responses_end_with_cr_only_and_follow_the_newest_state() -> None:
    s = rig_settings()
    p = live_pipeline(s)
    async with serving(s, lambda: p.state) as out:
        assert out.tcp_address is not None
        reader, writer = await asyncio.open_connection(*out.tcp_address)
        try:
            writer.write(pr.encode_request(Command.MANAGEMENT, 2, 2))
            first = await asyncio.wait_for(reader.readuntil(b"\r"), 5)
            comm_lost(p)  # the pipeline publishes a new state; the same connection sees it
            writer.write(pr.encode_request(Command.MANAGEMENT, 2, 2))
            second = await asyncio.wait_for(reader.readuntil(b"\r"), 5)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(reader.read(1), 0.2)  # nothing after CR (no LF)
        finally:
            writer.close()
            await writer.wait_closed()
    assert first.endswith(b"\r")
    assert not first.endswith(b"\n\r")
    assert pr.decode_management(pr.decode_frame(first).info).charge_enable
    assert not pr.decode_management(pr.decode_frame(second).info).charge_enable


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(max_size=300), max_size=6))
async def test_random_byte_streams_never_kill_a_session(chunks: list[bytes]) -> None:
    s = rig_settings()
    out = PylontechRs485Output(s, s.outputs[0], CLOCK, lambda: _STATE)
    reader = asyncio.StreamReader()
    for chunk in [*chunks, pr.encode_request(Command.ANALOG, 2, 2)]:
        reader.feed_data(chunk)
    reader.feed_eof()
    writer = _Sink()
    await out._session(reader, cast(asyncio.StreamWriter, writer))
    assert writer.closed
    last = writer.data.rsplit(b"~", 1)[-1]
    assert pr.decode_frame(b"~" + last).cid2 == Rtn.NORMAL  # the request after the noise was answered
    assert out.sent == writer.data.count(b"\r")
    fed = sum(map(len, chunks)) + len(pr.encode_request(Command.ANALOG, 2, 2))
    assert out.garbage <= fed


_STATE = live_pipeline(rig_settings()).state


class _Sink:
    """The parts of a StreamWriter a session uses, collecting what it writes."""

    def __init__(self) -> None:
        self.data = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.data += data

    async def drain(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    async def wait_closed(self) -> None:
        pass


async def test_random_garbage_over_tcp_then_a_valid_request() -> None:
    s = rig_settings()
    state = live_pipeline(s).state
    noise = bytes((i * 7919 + 13) % 256 for i in range(20000))  # includes '~' and CR many times
    async with serving(s, lambda: state) as out:
        assert out.tcp_address is not None
        reader, writer = await asyncio.open_connection(*out.tcp_address)
        writer.write(noise + b"\r")
        await writer.drain()
        writer.write(pr.encode_request(Command.ANALOG, 2, 0xFF))
        await writer.drain()
        buf, last = b"", None
        while last is None:  # replies to noise that looked like frames come first, then ours
            buf += await asyncio.wait_for(reader.read(65536), 5)
            *lines, buf = buf.split(b"\r")
            for line in lines:
                frame = pr.decode_frame(line[line.rindex(b"~") :] + b"\r")
                if frame.cid2 == Rtn.NORMAL:
                    last = frame
        writer.close()
        await writer.wait_closed()
        assert pr.decode_analog(last.info, all_modules=True).value == 2
        (again,) = await exchange(out, pr.encode_request(Command.PROTOCOL_VERSION, 0))  # still serving
        assert again.cid2 == Rtn.NORMAL
        assert out.garbage > 0
        assert out.errors > 0


async def test_tcp_sessions_are_capped_and_idle_ones_closed() -> None:
    s = rig_settings()
    state = live_pipeline(s).state
    async with serving(s, lambda: state) as out:
        assert out.tcp_address is not None
        out.max_sessions, out.idle_s = 3, 0.3
        held = [await asyncio.open_connection(*out.tcp_address) for _ in range(3)]
        await asyncio.sleep(0.05)
        extra_r, extra_w = await asyncio.open_connection(*out.tcp_address)
        assert await asyncio.wait_for(extra_r.read(100), 2) == b""  # closed at once: 3 already open
        assert out.refused == 1
        extra_w.close()
        # the idle ones are closed after idle_s; an active one keeps its session
        active_r, active_w = held[0]
        for _ in range(4):
            active_w.write(pr.encode_request(Command.PROTOCOL_VERSION, 0))
            await active_w.drain()
            assert (await asyncio.wait_for(active_r.readuntil(b"\r"), 2)).startswith(b"~")
            await asyncio.sleep(0.15)
        for r, _ in held[1:]:
            assert await asyncio.wait_for(r.read(100), 2) == b""
        assert out.idle_closed == 2
        (again,) = await exchange(out, pr.encode_request(Command.PROTOCOL_VERSION, 0))  # room again
        assert again.cid2 == Rtn.NORMAL
        for _, w in held:
            w.close()


# --- the serial port: vanishes, comes back ----------------------------------------------------------------


async def test_serial_port_is_reopened_with_backoff_when_it_vanishes(tmp_path: Path) -> None:
    s = rig_settings()
    state = live_pipeline(s).state
    link = tmp_path / "ttyBMS"  # what the config names; repointed at a new pty like a re-enumerated adapter

    async def request_over(peer: PtyPair) -> pr.Rs485Frame:
        got = b""
        for _ in range(500):  # the output may still be between retries: repeat the request until answered
            peer.write(pr.encode_request(Command.ANALOG, 2, 2))
            await asyncio.sleep(0.02)
            got += peer.read_available()
            if got.endswith(b"\r"):
                return pr.decode_frame(got[got.rindex(b"~") :])
        raise AssertionError("no answer")

    async with serving(s, lambda: state, port=str(link), tcp_port=None) as out:
        await asyncio.sleep(0.2)  # the port does not exist yet: the output keeps retrying
        assert out.serial_opens == 0
        with pty_pair() as first:
            link.symlink_to(first.path)
            assert (await request_over(first)).cid2 == Rtn.NORMAL
            assert out.serial_opens == 1
        link.unlink()  # the adapter is gone: reads fail, the output closes and retries
        await asyncio.sleep(0.2)
        with pty_pair() as second:
            link.symlink_to(second.path)
            assert (await request_over(second)).cid2 == Rtn.NORMAL
            assert out.serial_opens == 2


# --- configuration and wiring ------------------------------------------------------------------------------


def test_config_needs_a_serial_port_or_a_tcp_port() -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(cli={"outputs": [{"protocol": "pylontech-rs485"}]}, env={})
    assert "outputs[0]" in str(exc.value)
    assert "port" in str(exc.value)
    assert "tcp_port" in str(exc.value)
    with pytest.raises(ConfigError, match="address"):
        load_settings(
            cli={"outputs": [{"protocol": "pylontech-rs485", "tcp_port": 5000, "address": 0xF0}]}, env={}
        )
    ok, _ = load_settings(
        cli={"outputs": [{"protocol": "pylontech-rs485", "port": "/dev/ttyUSB0", "baudrate": 9600}]}, env={}
    )
    assert (ok.outputs[0].address, ok.outputs[0].baudrate, ok.outputs[0].tcp_port) == (2, 9600, None)


async def test_the_gateway_builds_and_runs_the_output_from_the_registry() -> None:
    s = rig_settings()
    gw = Gateway(s)
    (out,) = gw.outputs
    assert isinstance(out, PylontechRs485Output)
    task = asyncio.create_task(gw.run())
    try:
        for _ in range(200):
            if out.tcp_address is not None:
                break
            await asyncio.sleep(0.01)
        (reply,) = await exchange(out, pr.encode_request(Command.MANAGEMENT, 2, 2))
        m = pr.decode_management(reply.info)  # no pack has reported: the gateway's safe state
        assert (m.charge_current, m.discharge_current, m.charge_enable) == (0, 0, False)
        (reply,) = await exchange(out, pr.encode_request(Command.ANALOG, 2, 2))
        assert reply.cid2 == Rtn.INTERNAL_COMMUNICATION_ERROR
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
