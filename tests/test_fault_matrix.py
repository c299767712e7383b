"""Fault injection end to end against the real Gateway: what the inverter sees, and when.

Sources (every kind of bmsgw.sources.SOURCES, one pack each, Pylontech CAN out, gateway time 10x wall):
  (a) link loss: CCL = DCL = 0 with the comm-fail bit within stale_after_s + one output period + one step
      (+ one poll period for serial kinds) + MARGIN_S, measured in gateway time;
  (b) recovery: the limits ramp back over recovery_ramp_s, never jump;
  (c) frozen alive counter: CAN pack source only. Serial BMS send no alive counter (the source counts its
      own polls) and inverter-protocol batteries neither (the source counts 0x356 frames), so nothing can
      freeze there;
  (d) implausible cell voltage / temperature: excluded, SENSOR_FAULT, safe limits, recovery when it ends;
  (e) serial: the port (a by-id symlink to a pty) disappears and comes back; silent boards on a shared
      RS485 line must not starve a healthy one;
  (f) CAN error frames on the pack bus are counted, never data, never a crash. Bus-off cannot be produced
      on python-can's virtual interface; what is tested instead is the adapter failing under the source
      (the python-can bus shut down from under the notifier): the source reopens it with backoff.
Outputs: link loss as Modbus TCP and Pylontech RS485 clients see it (in time), a client leaving or
stalling mid-request (Modbus TCP, Pylontech RS485 over TCP), garbage on the RS485 line (a pty), a Modbus
client flood (20 clients in another process) while the pipeline keeps stepping and the CAN output keeps
its period, a failing CAN output adapter.
Clocks: a wall-clock jump (time.time patched, and the clock's wall mapping) changes nothing in the data
path: staleness, alive counters and ramps run on the monotonic gateway time only. No schedule is
configured here; with a time-of-use schedule a jump legitimately moves the schedule window.
Serial request timeouts are wall seconds (not scaled by the clock); the rig shortens them to 0.1 s, which
at 10x is the live 1 s in gateway time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TypeVar

import can
import pytest
from fake_bms import BmsModel, FakeBms
from fakes import A_COMM, P_SYS, Decoded, running
from fault_rig import (
    KINDS,
    MARGIN_S,
    MAX_CHARGE,
    MAX_DISCHARGE,
    OUTPUT_PERIOD_S,
    RAMP_S,
    SPEED,
    STALE_S,
    STEP_S,
    SYMLINK,
    FaultRig,
    fast_serial_timeouts,
    fault_rig,
    plugged,
    safe_after_loss_bound,
    sample_period,
)
from ptys import pty_pair
from pymodbus.client import AsyncModbusTcpClient
from test_pylontech_rs485_server import exchange
from test_serial_sources import serial_settings, until

from bmsgw.app import Gateway
from bmsgw.clock import ScaledClock
from bmsgw.inverter import modbus_map
from bmsgw.inverter import pylontech_rs485 as pr
from bmsgw.inverter.pylontech_rs485 import Command, Rtn
from bmsgw.model import AlarmCode, GatewayState, PackStatus, Reason
from bmsgw.outputs import can as outputs_can
from bmsgw.outputs.modbus import ModbusOutput
from bmsgw.outputs.pylontech_rs485 import PylontechRs485Output
from bmsgw.sources import SERIAL_KINDS, SOURCES, inverter_can
from bmsgw.sources import can as sources_can
from bmsgw.transport.can_bus import AsyncCanBus

T = TypeVar("T")


@pytest.fixture(autouse=True)
def _fast_serial(monkeypatch: pytest.MonkeyPatch) -> None:
    fast_serial_timeouts(monkeypatch)


def full(f: Decoded) -> bool:
    return f.ccl == MAX_CHARGE and f.dcl == MAX_DISCHARGE


def safe(f: Decoded) -> bool:
    return f.ccl == 0 and f.dcl == 0 and not f.charge_enable and not f.discharge_enable


def sensor_fault(s: GatewayState) -> bool:
    return any(a.code is AlarmCode.SENSOR_FAULT and a.pack == 0 for a in s.alarms)


def test_the_matrix_covers_every_source_kind() -> None:
    assert set(KINDS) == set(SOURCES)
    assert len(KINDS) >= 9


# --- (a) link loss, (b) ramped recovery -----------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_link_loss_is_safe_in_time_then_limits_ramp_back(kind: str) -> None:
    async with fault_rig(kind) as r:
        await r.inverter.first(full)
        lost = r.clock.now()
        r.peer.silence(True)
        t_safe, f = await r.inverter.first(safe, since=lost)
        assert t_safe - lost <= safe_after_loss_bound(kind), f"{kind}: safe after {t_safe - lost:.2f} s"
        assert A_COMM in f.flags  # 0x359 byte 3 bit 3: internal communication fail
        assert f.cvl > 0  # never CVL 0
        s = r.gateway.state()
        assert s.packs[0].status is PackStatus.STALE
        assert any(a.code is AlarmCode.COMM_LOST for a in s.alarms)
        last = s.packs[0].sample
        assert last is not None
        assert t_safe - last.t >= STALE_S  # and never before stale_after_s since the last sample
        print(
            f"time to safe, {kind}: {t_safe - lost:.2f} s after the loss, {t_safe - last.t:.2f} s after "
            f"the last sample (bound {safe_after_loss_bound(kind):.1f} s)"
        )  # measured figures (pytest -s)
        # the set just before the loss was full: the measurement measures the loss
        assert full([g for t, g in r.inverter.seen if t < lost][-1])

        back = r.clock.now()
        r.peer.silence(False)
        t_full, _ = await r.inverter.first(full, since=back)
        after = [(t, g) for t, g in r.inverter.seen if back <= t <= t_full]
        rising = [(t, g) for t, g in after if g.ccl > 0]
        t_first = rising[0][0]
        ccl = [g.ccl for _, g in rising]
        dcl = [g.dcl for _, g in rising]
        assert any(0 < c < MAX_CHARGE for c in ccl), ccl  # a ramp, not a jump
        assert any(0 < d < MAX_DISCHARGE for d in dcl), dcl
        assert ccl == sorted(ccl)
        assert dcl == sorted(dcl)
        # full scale takes recovery_ramp_s; the first non-zero set may be up to one period into it
        assert t_full - t_first >= RAMP_S - OUTPUT_PERIOD_S - STEP_S, (t_first, t_full)
        assert A_COMM not in rising[0][1].flags


# --- (c) frozen alive counter (CAN pack source only; see the module docstring) --------------------------


async def test_frozen_alive_counter_excludes_the_pack() -> None:
    async with fault_rig("can") as r:
        await r.inverter.first(full)
        frozen = r.clock.now()
        r.peer.model.freeze_alive = True  # type: ignore[attr-defined]
        t_safe, _f = await r.inverter.first(lambda f: safe(f) and P_SYS in f.flags, since=frozen)
        s = r.gateway.state()
        assert s.packs[0].status is PackStatus.FROZEN
        assert sensor_fault(s)
        # frozen_after samples, then one step and one output period
        frozen_after = r.gateway.settings.gateway.frozen_after
        assert t_safe - frozen <= frozen_after * sample_period("can") + STEP_S + OUTPUT_PERIOD_S + MARGIN_S
        r.peer.model.freeze_alive = False  # type: ignore[attr-defined]
        await r.inverter.first(full, since=r.clock.now(), within=10.0)
        assert r.gateway.state().packs[0].status is PackStatus.ONLINE


# --- (d) implausible values ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_implausible_readings_are_sensor_faults(kind: str) -> None:
    async with fault_rig(kind) as r:
        await r.inverter.first(full)
        # a broken sense wire (below any LFP cell), a shorted one (above), an absurd temperature
        for what, value, good in [("cell", 0.2, 3.30), ("cell", 6.0, 3.30), ("temperature", 150.0, 25.0)]:
            start = r.clock.now()
            getattr(r.peer, what)(value)
            t_safe, _f = await r.inverter.first(lambda f: safe(f) and P_SYS in f.flags, since=start)
            s = r.gateway.state()
            assert s.packs[0].status is PackStatus.IMPLAUSIBLE, (what, value)
            assert sensor_fault(s)
            assert s.limits.ccl.value == 0
            assert s.limits.dcl.value == 0
            bound = sample_period(kind) + STEP_S + OUTPUT_PERIOD_S + MARGIN_S  # the next sample is rejected
            assert t_safe - start <= bound, (what, value, t_safe - start)
            getattr(r.peer, what)(good)
            await r.state_until(lambda s: s.packs[0].status is PackStatus.ONLINE and not sensor_fault(s))
            await r.inverter.first(lambda f: f.ccl > 0 and P_SYS not in f.flags, since=r.clock.now())


# --- (e) a serial port that disappears and comes back ---------------------------------------------------


@pytest.mark.parametrize("kind", list(SERIAL_KINDS))
async def test_vanishing_serial_port_is_safe_then_recovers(kind: str, tmp_path: Path) -> None:
    link = tmp_path / SYMLINK
    async with fault_rig(kind, port=str(link)) as r:
        model = r.peer.model  # type: ignore[attr-defined]
        with pty_pair() as first, plugged(link, first):
            async with running(FakeBms(kind, first, model).run):
                await r.inverter.first(full)
                gone = r.clock.now()
        # unplugged: the tty and its by-id link are gone
        t_safe, f = await r.inverter.first(safe, since=gone)
        assert t_safe - gone <= safe_after_loss_bound(kind)
        assert A_COMM in f.flags
        await until(lambda: not r.source.connected)
        model.current = -4.0
        back = r.clock.now()
        with pty_pair() as second, plugged(link, second):
            async with running(FakeBms(kind, second, model).run):
                t_full, f = await r.inverter.first(full, since=back, within=15.0)
                assert f.current == pytest.approx(-4.0, abs=0.1)
                assert r.source.connected
                assert r.source.reconnects >= 1
                ramp = [g.ccl for t, g in r.inverter.seen if back <= t <= t_full and 0 < g.ccl < MAX_CHARGE]
                assert ramp  # ramped back


@pytest.mark.parametrize(
    "dead",
    [
        1,
        2,  # was a bug: each silent board held the line for timeout x attempts on every poll
    ],
)
async def test_silent_boards_on_a_shared_line_do_not_starve_a_healthy_one(dead: int) -> None:
    # Live numbers at 10x: request timeout REQUEST_TIMEOUT_S = 0.1 s wall = 1 s gateway, 3 attempts,
    # poll_interval_s = 1 s, stale_after_s = 5 s (the defaults).
    boards = (0x40, 0x41, 0x42)
    models = [BmsModel(daly_address=a, silent=k >= len(boards) - dead) for k, a in enumerate(boards)]
    with pty_pair() as line:
        settings = serial_settings("daly", [line.path] * 3, f"inv-{uuid.uuid4()}", addresses=boards)
        live = settings.gateway.model_copy(update={"stale_after_s": 5.0})
        gateway = Gateway(settings.model_copy(update={"gateway": live}), ScaledClock(SPEED))
        async with running(gateway.run, FakeBms("daly", line, *models).run):
            await until(lambda: gateway.state().packs[0].status is PackStatus.ONLINE)
            await until(lambda: gateway.state().limits.ccl.value > 0)  # its ramp has begun
            seen, ccl = set(), []
            end = time.monotonic() + 20.0 / SPEED
            while time.monotonic() < end:  # 20 s gateway time: 3+ rounds of the line
                seen.add(gateway.state().packs[0].status)
                ccl.append(gateway.state().limits.ccl.value)
                await asyncio.sleep(0.01)
    assert seen == {PackStatus.ONLINE}, seen
    assert min(ccl) > 0  # the system keeps running on the healthy board


# --- (f) CAN error frames; a failing bus adapter ----------------------------------------------------------


Opened = dict[str, list[AsyncCanBus]]


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[AsyncCanBus]]:
    """Every AsyncCanBus the pack sources ("source") and the CAN outputs ("output") open, in order."""
    got: dict[str, list[AsyncCanBus]] = {"source": [], "output": []}

    def counted(side: str) -> type[AsyncCanBus]:
        class Counted(AsyncCanBus):
            async def open(self) -> None:
                got[side].append(self)
                await super().open()

        return Counted

    monkeypatch.setattr(sources_can, "AsyncCanBus", counted("source"))
    monkeypatch.setattr(inverter_can, "AsyncCanBus", counted("source"))
    monkeypatch.setattr(outputs_can, "AsyncCanBus", counted("output"))
    return got


CAN_KINDS = [k for k in KINDS if k not in SERIAL_KINDS]


@pytest.mark.parametrize("kind", CAN_KINDS)
async def test_can_error_frames_are_counted_never_data(kind: str, opened: Opened) -> None:
    async with fault_rig(kind) as r:
        await r.inverter.first(full)
        channel = r.gateway.settings.packs[0].port or r.gateway.settings.can.channel
        async with error_frames_on(channel):
            start = r.clock.now()
            await asyncio.sleep(0.3)  # 3 s gateway time of error frames beside the data
            assert r.gateway.state().packs[0].status is PackStatus.ONLINE
            assert all(full(g) for t, g in r.inverter.seen if t >= start)
            # the error frames never count as data: silence the pack, the spam goes on, it goes stale
            lost = r.clock.now()
            r.peer.silence(True)
            t_safe, _f = await r.inverter.first(safe, since=lost)
            assert t_safe - lost <= safe_after_loss_bound(kind)
        assert not any(t.done() for t in r.gateway.tasks)  # still running, no crash
        assert getattr(r.source, "decoder", r.source).frames > 0
        assert sum(b.error_frames for b in opened["source"]) >= 100  # they reached the source, counted


async def test_can_error_frames_on_the_inverter_bus_change_nothing(opened: Opened) -> None:
    async with fault_rig("can") as r:
        await r.inverter.first(full)
        async with error_frames_on(r.gateway.settings.outputs[0].channel):
            start = r.clock.now()
            await asyncio.sleep(0.3)
            end = r.clock.now()
        sets = [(t, g) for t, g in r.inverter.seen if start <= t <= end]
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(sets)]
        assert len(sets) >= (end - start) / OUTPUT_PERIOD_S - 2
        assert max(gaps) <= OUTPUT_PERIOD_S + MARGIN_S, gaps  # the output keeps its period
        assert all(full(g) for _, g in sets)
        assert sum(b.error_frames for b in opened["output"]) >= 100  # they reached the output, counted
        assert r.gateway.outputs[0].received == 0  # type: ignore[attr-defined]  # and were not frames


@contextlib.asynccontextmanager
async def error_frames_on(channel: str) -> AsyncIterator[None]:
    """Error frames on the virtual `channel` every 2 ms wall while inside."""
    with can.Bus(interface="virtual", channel=channel) as noise:

        async def spam() -> None:
            while True:
                noise.send(can.Message(is_error_frame=True, arbitration_id=0x351, data=bytes(8)))
                await asyncio.sleep(0.002)

        async with running(spam):
            yield


# python-can's notifier thread reports the failure to the loop, then re-raises in its own thread.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize(("kind", "side"), [*((k, "source") for k in CAN_KINDS), ("can", "output")])
async def test_failed_can_adapter_is_reopened(kind: str, side: str, opened: Opened) -> None:
    async with fault_rig(kind) as r:
        await r.inverter.first(full)
        buses = opened[side]
        count = len(buses)
        dying = buses[-1]._bus
        assert dying is not None
        failed = r.clock.now()
        dying.shutdown()  # the adapter dies under the notifier thread (bus-off cannot be made on virtual)
        await until(lambda: len(buses) > count, within=5.0)  # reopened after its backoff
        if side == "source":  # the source waits 0.5 s wall (5 s gateway) first: the pack goes stale
            t_safe, _ = await r.inverter.first(safe, since=failed)
            assert t_safe - failed <= safe_after_loss_bound(kind)
            assert r.source.reconnects >= 1
        else:  # the output waits 0.5 s gateway, then sends again: at most a set or two missing
            t_next, _ = await r.inverter.first(lambda f: True, since=failed + 0.5)
            assert t_next - failed <= 0.5 + 2 * OUTPUT_PERIOD_S + MARGIN_S
            assert r.gateway.outputs[0].send_errors >= 1  # type: ignore[attr-defined]
        await r.inverter.first(full, since=r.clock.now(), within=10.0)
        assert not any(t.done() for t in r.gateway.tasks)


# --- outputs ---------------------------------------------------------------------------------------------

OUTPUTS = [
    {"protocol": "modbus-tcp", "tcp_port": 0},
    {"protocol": "pylontech-rs485", "tcp_port": 0},
]


def _output(r: FaultRig, kind: type[T]) -> T:
    (out,) = [o for o in r.gateway.outputs if isinstance(o, kind)]
    return out


async def _read_status(client: AsyncModbusTcpClient) -> list[int]:
    """Registers 0..30 of the bmsgw map (status block)."""
    regs = await client.read_holding_registers(0, count=31, device_id=1)
    assert not regs.isError()
    return list(regs.registers)


async def _read_limits(port: int) -> list[int]:
    """CCL, DCL (0.1 A) from the bmsgw map over a fresh pymodbus connection."""
    client = AsyncModbusTcpClient("127.0.0.1", port=port, retries=0)
    assert await client.connect()
    try:
        return (await _read_status(client))[10:12]
    finally:
        client.close()


async def _half_then_close(address: tuple[str, int], data: bytes) -> None:
    _reader, writer = await asyncio.open_connection(*address)
    writer.write(data)
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def test_clients_leaving_mid_request_do_not_stop_the_servers() -> None:
    async with fault_rig("can", outputs=OUTPUTS) as r:
        await r.inverter.first(full)
        modbus, rs485 = _output(r, ModbusOutput), _output(r, PylontechRs485Output)
        await until(lambda: modbus.bound_port is not None and rs485.tcp_address is not None)
        assert modbus.bound_port is not None
        assert rs485.tcp_address is not None
        mbap = bytes.fromhex("0001 0000 0006 01 03 0000 001f")  # a whole read request, MBAP + PDU
        request = pr.encode_request(Command.ANALOG, 2, 2)
        for cut in (3, 7, 9):  # inside the MBAP header, after it, inside the PDU
            await _half_then_close(("127.0.0.1", modbus.bound_port), mbap[:cut])
        for cut in (1, 9, len(request) - 1):
            await _half_then_close(rs485.tcp_address, request[:cut])
        # and clients that stall mid-request (connection kept open) hold up no one else
        _, stalled_modbus = await asyncio.open_connection("127.0.0.1", modbus.bound_port)
        _, stalled_rs485 = await asyncio.open_connection(*rs485.tcp_address)
        stalled_modbus.write(mbap[:9])
        stalled_rs485.write(request[:9])
        try:
            assert await _read_limits(modbus.bound_port) == [MAX_CHARGE * 10, MAX_DISCHARGE * 10]
            (reply,) = await exchange(rs485, request)
            assert reply.cid2 == Rtn.NORMAL
        finally:
            for w in (stalled_modbus, stalled_rs485):
                w.close()
                await w.wait_closed()
        assert not any(t.done() for t in r.gateway.tasks)


async def test_link_loss_reaches_the_request_driven_outputs_in_time() -> None:
    async with fault_rig("can", outputs=OUTPUTS) as r:
        await r.inverter.first(full)
        modbus, rs485 = _output(r, ModbusOutput), _output(r, PylontechRs485Output)
        await until(lambda: modbus.bound_port is not None and rs485.tcp_address is not None)
        client = AsyncModbusTcpClient("127.0.0.1", port=modbus.bound_port or 0, retries=0)
        assert await client.connect()
        comm_lost = modbus_map.REASON_CODES[Reason.COMM_LOST]

        async def modbus_safe() -> bool:
            regs = await _read_status(client)
            alarms = regs[18] << 16 | regs[19]
            bit = alarms >> modbus_map.ALARM_BITS[AlarmCode.COMM_LOST] & 1
            return regs[10:12] == [0, 0] and regs[14:16] == [comm_lost, comm_lost] and bit == 1

        async def rs485_safe() -> bool:
            (reply,) = await exchange(rs485, pr.encode_request(Command.MANAGEMENT, 2, 2))
            m = pr.decode_management(reply.info)
            off = not (m.charge_enable or m.discharge_enable)
            return reply.cid2 == Rtn.NORMAL and m.charge_current == m.discharge_current == 0 and off

        checks = {"modbus-tcp": modbus_safe, "pylontech-rs485": rs485_safe}
        try:
            assert not [name for name, check in checks.items() if await check()]  # both full before
            lost = r.clock.now()
            r.peer.silence(True)
            took: dict[str, float] = {}
            while len(took) < len(checks) and r.clock.now() - lost < 3 * safe_after_loss_bound("can"):
                for name, check in checks.items():
                    if name not in took and await check():
                        took[name] = r.clock.now() - lost
                await asyncio.sleep(0.01)
        finally:
            client.close()
        # request-driven: no output period, but one query round of the test (0.1-0.2 s gateway) instead
        print("time to safe, request-driven outputs:", {k: round(v, 2) for k, v in took.items()})
        assert took.keys() == checks.keys(), took
        assert max(took.values()) <= STALE_S + STEP_S + 2 * 0.2 + MARGIN_S, took


async def test_garbage_on_the_rs485_line_is_counted_and_requests_still_answered() -> None:
    with pty_pair() as line:
        async with fault_rig("can", outputs=[{"protocol": "pylontech-rs485", "port": line.path}]) as r:
            await r.inverter.first(full)
            rs485 = _output(r, PylontechRs485Output)
            await until(lambda: rs485.serial_opens >= 1)
            for noise in (b"\x00\xff\x13garbage\r\n", bytes(range(256)), b"~2002464\r"):
                line.write(noise + pr.encode_request(Command.ANALOG, 2, 2))
                got = b""

                def answered() -> bool:
                    nonlocal got
                    got += line.read_available()
                    return got.endswith(b"\r")

                await until(answered)
                reply = pr.decode_frame(got)
                assert reply.cid2 == Rtn.NORMAL
            assert rs485.garbage >= 10 + 250
            assert rs485.errors >= 1  # "~2002464\r" was a candidate frame and was refused
            assert rs485.serial_opens == 1  # garbage never took the line down


FLOOD = """
import sys, threading, time
from pymodbus.client import ModbusTcpClient
port, seconds, clients = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
count = [0] * clients
def hammer(k):
    c = ModbusTcpClient("127.0.0.1", port=port, retries=0)
    c.connect()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not c.read_holding_registers(0, count=31, device_id=1).isError():
            count[k] += 1
    c.close()
threads = [threading.Thread(target=hammer, args=(k,)) for k in range(clients)]
for t in threads: t.start()
for t in threads: t.join()
print(sum(count), min(count))
"""


async def test_modbus_flood_keeps_the_gateway_stepping_and_the_can_period() -> None:
    # Slower clock here: the flood competes for the same two CPUs; 1 s gateway = 0.5 s wall.
    async with fault_rig("can", outputs=OUTPUTS[:1], clock=ScaledClock(2.0)) as r:
        await r.inverter.first(full)
        modbus = _output(r, ModbusOutput)
        await until(lambda: modbus.bound_port is not None)
        start, steps = r.clock.now(), r.gateway.pipeline.steps
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", FLOOD, str(modbus.bound_port), "2", "20", stdout=asyncio.subprocess.PIPE
        )
        ages: list[float] = []
        while proc.returncode is None:
            ages.append(r.clock.now() - r.gateway.state().t)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 0.05)
        out, _ = await proc.communicate()
        total, least = map(int, out.split())
        print(f"modbus flood: {total} reads answered in 2 s wall, {least} for the slowest client")
        end = r.clock.now()
        assert total >= 200
        assert least >= 1
        sets = [t for t, g in r.inverter.seen if start <= t <= end]
        gaps = [b - a for a, b in itertools.pairwise(sets)]
        assert len(sets) >= (end - start) / OUTPUT_PERIOD_S - 2
        assert max(gaps) <= 2 * OUTPUT_PERIOD_S, gaps  # no set missed
        assert all(full(g) for t, g in r.inverter.seen if start <= t <= end)
        # the state stays fresh: never older than a few step periods (+ the margin)
        assert max(ages) <= 3 * STEP_S + MARGIN_S, max(ages)
        assert r.gateway.pipeline.steps - steps >= (end - start) / STEP_S / 2


# --- clocks ----------------------------------------------------------------------------------------------


class JumpingWallClock(ScaledClock):
    """Gateway time as ScaledClock; its wall-time mapping jumps by `jump` seconds (NTP step, manual set)."""

    jump = 0.0

    def wall(self, t: float) -> float:
        return super().wall(t) + self.jump


async def test_wall_clock_jumps_change_nothing_in_the_data_path(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = JumpingWallClock(SPEED)
    async with fault_rig("can", clock=clock) as r:
        await r.inverter.first(full)
        start = r.clock.now()
        real = time.time
        for jump in (86_400.0, -3_600.0, 0.0):  # +1 day, -1 h, back
            clock.jump = jump
            monkeypatch.setattr(time, "time", lambda j=jump: real() + j)
            assert time.time() - real() == pytest.approx(jump, abs=1.0)  # the patch is seen
            mark = r.clock.now()
            await r.inverter.first(lambda f: True, since=mark + 2 * STALE_S)  # well past stale_after_s
            s = r.gateway.state()
            assert s.packs[0].status is PackStatus.ONLINE, jump
            assert not s.alarms, s.alarms
        monkeypatch.undo()
        seen = [g for t, g in r.inverter.seen if t >= start]
        assert len(seen) >= 3 * 2 * STALE_S / OUTPUT_PERIOD_S - 3
        assert all(full(g) and not g.flags for g in seen)  # no stale data, no dip, no jump
