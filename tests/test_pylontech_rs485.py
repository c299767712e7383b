"""Pylontech RS485 codec: real captured frames, checksum edge cases, every RTN path, state mapping, fuzz."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pylontech import Pylontech

from bmsgw.config import GatewaySection, LimitsSection, PackConfig, Settings
from bmsgw.inverter import pylontech_rs485 as pr
from bmsgw.inverter.pylontech_rs485 import Command, Rtn
from bmsgw.model import Alarm, AlarmCode, AlarmLevel, BmsFlags, GatewayState, PackSample
from bmsgw.outputs.pylontech_rs485 import stack_info
from bmsgw.pipeline import Pipeline

# --- the rig: a real pipeline fed two packs ---------------------------------------------------------------

CELLS = np.array([3.300 + 0.003 * i for i in range(16)])
TEMPS = np.array([24.0, 25.0, 26.0, 25.0])  # mean 25.0 (the "BMS board" slot)
CURRENTS = (-12.3, 4.7)  # pack A discharging, pack B charging


def rig_settings(**output: object) -> Settings:
    """Two 16S LFP packs (100 Ah → 24-bit capacities, 50 Ah → 16-bit), no recovery ramp."""
    return Settings(
        gateway=GatewaySection(recovery_ramp_s=0),
        packs=[
            PackConfig(id="pack-A", cells=16, sensors=4, capacity_ah=100),
            PackConfig(id="pack-B", address=1, cells=16, sensors=4, capacity_ah=50),
        ],
        limits=LimitsSection(max_charge_current_a=90, max_discharge_current_a=120),
        outputs=[{"protocol": "pylontech-rs485", "tcp_port": 0, **output}],
    )


def pack_sample(pack: int, t: float, alive: int) -> PackSample:
    return PackSample(
        pack=pack, t=t, cell_v=CELLS + 0.001 * pack, cell_t=TEMPS + pack, current=CURRENTS[pack],
        voltage=float(np.sum(CELLS)) + 0.016 * pack, flags=BmsFlags.CHARGE_FET | BmsFlags.DISCHARGE_FET,
        alive=alive,
    )  # fmt: skip


def live_pipeline(s: Settings, packs: tuple[int, ...] = (0, 1)) -> Pipeline:
    """A pipeline that has seen three samples of each pack in `packs` (t = 0, 1, 2)."""
    p = Pipeline(s)
    for k in range(3):
        for i in packs:
            p.submit(pack_sample(i, float(k), k))
        p.step(float(k))
    return p


def comm_lost(p: Pipeline) -> GatewayState:
    """The state long after the last sample: every pack stale, COMM_LOST."""
    st_ = p.step(p.state.t + 100.0)
    assert st_.alarm_level(AlarmCode.COMM_LOST) is not None
    return st_


def ask(state: GatewayState, stack: pr.StackInfo, command: int, adr: int, target: int | None = None) -> bytes:
    """Send one request through the battery side; the response INFO (RTN must be 00)."""
    reply = pr.answer(pr.encode_request(command, adr, target), state, stack).reply
    assert reply is not None
    frame = pr.decode_frame(reply)
    assert (frame.cid1, frame.cid2, frame.adr) == (0x46, Rtn.NORMAL, adr)
    return frame.info


def rtn_of(raw: bytes, state: GatewayState, stack: pr.StackInfo) -> int | None:
    reply = pr.answer(raw, state, stack).reply
    return None if reply is None else pr.decode_frame(reply).cid2


@pytest.fixture(scope="module")
def rig() -> tuple[Settings, Pipeline, pr.StackInfo]:
    s = rig_settings()
    return s, live_pipeline(s), stack_info(s, s.outputs[0])


# --- real captured frames (tests/fixtures/SOURCES.md) -----------------------------------------------------


def captures() -> dict[str, bytes]:
    text = (Path(__file__).parent / "fixtures" / "pylontech_rs485_frames.txt").read_text()
    rows = [line.split() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return {name: frame.encode() + b"\r" for name, _source, frame in rows}


CAPTURES = captures()


@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_real_frames_decode_and_reencode_byte_for_byte(name: str) -> None:
    raw = CAPTURES[name]
    frame = pr.decode_frame(raw)
    assert (frame.ver, frame.adr, frame.cid1, frame.cid2) == (0x20, 0x02, 0x46, 0x00)
    assert pr.encode_frame(frame) == raw


def test_real_us2000_stack_decodes_to_the_values_python_pylontech_asserts() -> None:
    a = pr.decode_analog(pr.decode_frame(CAPTURES["us2000_3modules_0x42_all"]).info, all_modules=True)
    assert (a.flag, a.value, len(a.modules)) == (0x11, 3, 3)
    m = a.modules[0]
    assert m.cell_v == pytest.approx([3.303, 3.304, 3.302, 3.303, 3.304, 3.304, 3.304, 3.302, 3.301, 3.302,
                                      3.304, 3.303, 3.306, 3.301, 3.302])  # fmt: skip
    assert m.temperatures == pytest.approx([23.0, 22.0, 22.0, 22.0, 22.0])
    assert (m.current, m.voltage, m.remaining_ah, m.capacity_ah, m.cycles) == pytest.approx(
        (-2.6, 49.545, 33.5, 50.0, 31)
    )
    assert [x.current for x in a.modules] == pytest.approx([-2.6, -2.5, -2.7])
    assert pr.encode_analog(a) == pr.decode_frame(CAPTURES["us2000_3modules_0x42_all"]).info


@pytest.mark.parametrize(
    ("name", "remaining", "total"),
    [
        ("us3000_4modules_0x42_all", [61.42, 62.16, 59.2, 60.68], [74.0] * 4),
        ("mixed_us3000_us2000_0x42_all", [32.56, 24.5], [74.0, 50.0]),  # US2000 here also uses 24-bit
    ],
)
def test_real_24bit_capacities(name: str, remaining: list[float], total: list[float]) -> None:
    a = pr.decode_analog(pr.decode_frame(CAPTURES[name]).info, all_modules=True)
    assert [m.remaining_ah for m in a.modules] == pytest.approx(remaining)
    assert [m.capacity_ah for m in a.modules] == pytest.approx(total)


@pytest.mark.parametrize(
    ("name", "cells", "current", "voltage", "remaining", "total", "cycles"),
    [
        ("up2500_0x42_single", 8, -0.6, 26.638, 95.46, 111.0, 0),
        ("us3000c_0x42_single", 15, 2.3, 50.087, 50.068, 74.0, 55),
    ],
)
def test_real_single_module_records_roundtrip(
    name: str, cells: int, current: float, voltage: float, remaining: float, total: float, cycles: int
) -> None:
    info = pr.decode_frame(CAPTURES[name]).info
    a = pr.decode_analog(info, all_modules=False)
    m = a.modules[0]
    assert a.value == 2  # the module's address
    assert len(m.cell_v) == cells
    assert len(m.temperatures) == 5
    assert (m.current, m.voltage, m.remaining_ah, m.capacity_ah, m.cycles) == pytest.approx(
        (current, voltage, remaining, total, cycles)
    )
    assert pr.encode_analog(a) == info


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("up2500_0x92", pr.Management(28.4, 23.2, 55.5, 55.5, True, True)),
        ("us3000c_0x92", pr.Management(53.25, 45.0, 37.0, 37.0, True, True)),
    ],
)
def test_real_management_frames(name: str, expected: pr.Management) -> None:
    info = pr.decode_frame(CAPTURES[name]).info
    got = pr.decode_management(info)
    assert dataclasses.astuple(got) == pytest.approx(dataclasses.astuple(expected))
    assert pr.encode_management(got, 2) == info  # discharge current negative on the wire, like the battery


def test_real_system_parameters_and_alarm_and_identity_frames() -> None:
    info = pr.decode_frame(CAPTURES["us3000c_0x47"]).info
    p = pr.decode_system_parameters(info)
    assert dataclasses.astuple(p) == pytest.approx(
        (3.65, 3.05, 2.8, 60.0, -10.0, 90.0, 54.0, 46.0, 43.0, 60.0, -10.0, 90.0)
    )
    assert pr.encode_system_parameters(p, infoflag=0x10) == info

    info = pr.decode_frame(CAPTURES["us3000c_0x44_single"]).info
    a = pr.decode_alarms(info, all_modules=False)
    m = a.modules[0]
    assert (a.value, m.cells, m.temperatures) == (2, (0,) * 15, (0,) * 5)
    assert m.status2 == pr.Status2.USING_BATTERY_POWER | pr.Status2.CHARGE_FET | pr.Status2.DISCHARGE_FET
    assert m.status3 == pr.Status3.EFFECTIVE_DISCHARGE_CURRENT
    assert pr.encode_alarms(a) == info[:-1]  # the US3000C adds one byte after Status 5

    assert (
        pr.decode_frame(CAPTURES["us3000c_0x93"]).info == b"\x02H222003C3222 0459"[:1] + b"H222003C32220459"
    )
    assert pr.decode_frame(CAPTURES["us3000c_0x51"]).info[:10] == b"US3000C\0\0\0"
    assert pr.decode_frame(CAPTURES["us3000c_0x96"]).info == bytes((2, 1, 3, 0, 6, 9))
    assert pr.decode_frame(CAPTURES["us3000c_0x4f"]).info == b""


# --- requests, and the checksum edge cases ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "adr", "target", "frame"),
    [
        (Command.PROTOCOL_VERSION, 2, None, b"~2002464F0000FD98\r"),
        (Command.MANUFACTURER, 2, None, b"~200246510000FDAC\r"),
        (Command.ANALOG, 2, 2, b"~20024642E00202FD33\r"),
        (Command.ANALOG, 2, 0xFF, b"~20024642E002FFFD09\r"),
        (Command.ALARM, 2, 2, b"~20024644E00202FD31\r"),
        (Command.SYSTEM_PARAMETERS, 2, None, b"~200246470000FDA7\r"),
        (Command.MANAGEMENT, 2, 2, b"~20024692E00202FD2E\r"),
        (Command.SERIAL_NUMBER, 2, 2, b"~20024693E00202FD2D\r"),
        (Command.FIRMWARE, 2, 2, b"~20024696E00202FD2A\r"),
        (Command.SYSTEM_ANALOG, 2, None, b"~200246610000FDAB\r"),
        (Command.SYSTEM_MANAGEMENT, 2, None, b"~200246630000FDA9\r"),
        (Command.ANALOG, 0, 0, b"~20004642E00200FD37\r"),  # Seplos V2.0 spec, table 7, address 00
    ],
)
def test_requests_match_python_pylontech_and_the_seplos_table(
    command: int, adr: int, target: int | None, frame: bytes
) -> None:
    assert pr.encode_request(command, adr, target) == frame
    info = b"" if target is None else b"%02X" % target
    assert Pylontech._encode_cmd(None, adr, command, info) == frame


@pytest.mark.parametrize("lenid", [0x000, 0x0E2, 0x0F1, 0x1E1, 0x2C2, 0xFF2])
def test_lchksum_is_zero_when_the_nibble_sum_is_a_multiple_of_16(lenid: int) -> None:
    assert pr.lchksum(lenid) == 0
    if lenid:  # python-pylontech writes a 5-digit LENGTH here (16 << 12 | LENID)
        assert Pylontech.get_info_length(b"0" * lenid) == 0x10000 | lenid


def test_lchksum_values() -> None:
    assert [pr.lchksum(x) for x in (0x002, 0x012, 0x014, 0x07A, 0x042, 0xFFF)] == [
        0xE,
        0xD,
        0xB,
        0xF,
        0xA,
        0x3,
    ]


def test_frame_with_zero_lchksum_roundtrips() -> None:
    frame = pr.Rs485Frame(0x20, 2, 0x46, 0, bytes(range(113)))  # LENID 0x0E2: nibbles 0+14+2 = 16
    raw = pr.encode_frame(frame)
    assert raw[9:13] == b"00E2"
    assert pr.decode_frame(raw) == frame


def test_frame_whose_sum_is_a_multiple_of_65536_has_chksum_0000() -> None:
    frame = _frame_with_sum(0x10000)
    raw = pr.encode_frame(frame)
    assert sum(raw[1:-5]) == 0x10000
    assert raw[-5:] == b"0000\r"
    assert pr.decode_frame(raw) == frame
    assert Pylontech.get_frame_checksum(raw[1:-5]) == 0x10000  # python-pylontech's off-by-one at the edge


def _frame_with_sum(target: int) -> pr.Rs485Frame:
    """A frame whose ASCII sum (after '~', before CHKSUM) is exactly `target`: bytes 0xab (a, b ≤ 9) add
    96 + a + b each, so spread the remainder over them."""
    for n in range(400, 700):
        lenid = 2 * n
        head = b"20024600%04X" % (pr.lchksum(lenid) << 12 | lenid)
        rest = target - sum(head) - 96 * n
        if 0 <= rest <= 18 * n:
            info = bytearray(n)
            for i in range(n):
                step = min(rest, 18)
                info[i] = (min(step, 9) << 4) | (step - min(step, 9))
                rest -= step
            return pr.Rs485Frame(0x20, 2, 0x46, 0, bytes(info))
    raise AssertionError("no length fits")


# --- every refusal: the RTN a battery answers with (or silence) -------------------------------------------


def _reframe(body: bytes) -> bytes:
    """`body` (between '~' and CHKSUM) with a correct CHKSUM."""
    return b"~%s%04X\r" % (body, pr.chksum(body))


@pytest.mark.parametrize(
    ("raw", "rtn", "error"),
    [
        (b"~20024642E00202FD34\r", Rtn.CHKSUM_ERROR, pr.ChecksumError),
        (b"~20024642E00202FDZZ\r", Rtn.CHKSUM_ERROR, pr.ChecksumError),
        (_reframe(b"20024642D00202"), Rtn.LCHKSUM_ERROR, pr.LengthChecksumError),
        (_reframe(b"20024699E00202"), Rtn.CID2_INVALID, pr.CommandError),
        (_reframe(b"20024A42E00202"), Rtn.CID2_INVALID, pr.CommandError),  # CID1 not 0x46
        (pr.encode_request(Command.TURN_OFF, 2, 2), Rtn.CID2_INVALID, pr.CommandError),
        (_reframe(b"20024694D012" + b"02" + b"0" * 16), Rtn.CID2_INVALID, pr.CommandError),  # 0x94 set
        (pr.encode_request(Command.ANALOG, 9, 9), Rtn.ADR_ERROR, pr.AddressError),
        (pr.encode_request(Command.ANALOG, 2, 7), Rtn.ADR_ERROR, pr.AddressError),
        (pr.encode_request(Command.MANAGEMENT, 2, 0xFF), Rtn.ADR_ERROR, pr.AddressError),
        (pr.encode_request(Command.MANAGEMENT, 0), Rtn.ADR_ERROR, pr.AddressError),
        (pr.encode_request(Command.SYSTEM_ANALOG, 0x30), Rtn.ADR_ERROR, pr.AddressError),
        (_reframe(b"20024642C00402"), Rtn.COMMAND_FORMAT_ERROR, pr.FrameError),  # LENID 4, 2 chars
        (_reframe(b"20024642E0020G"), Rtn.COMMAND_FORMAT_ERROR, pr.BadHexError),
        (_reframe(b"20024642C0040202"), Rtn.COMMAND_FORMAT_ERROR, pr.FrameError),  # 2 INFO bytes
        (_reframe(b"2002XX42E00202"), None, pr.BadHexError),  # header unreadable: silence
        (b"~20024642E00202FD33", None, pr.FrameError),  # no CR
        (b"~2002\r", None, pr.FrameError),
        (b"20024642E00202FD33\r", None, pr.FrameError),  # no '~'
        (b"~" + b"0" * pr.MAX_FRAME_BYTES + b"\r", None, pr.FrameTooLongError),
    ],
)
def test_refusals(
    rig: tuple[Settings, Pipeline, pr.StackInfo], raw: bytes, rtn: Rtn | None, error: type[pr.Rs485Error]
) -> None:
    _, p, stack = rig
    result = pr.answer(raw, p.state, stack)
    assert type(result.error) is error
    if rtn is None:
        assert result.reply is None
    else:
        assert result.reply is not None
        reply = pr.decode_frame(result.reply)
        assert (reply.cid1, reply.cid2, reply.info) == (0x46, rtn, b"")
        assert reply.adr == int(raw[3:5], 16)  # the request's ADR is echoed


def test_module_without_data_answers_rtn_91_and_keeps_its_place_in_the_stack() -> None:
    s = rig_settings()
    stack = stack_info(s, s.outputs[0])
    never = Pipeline(s).state
    assert (
        rtn_of(pr.encode_request(Command.ANALOG, 2, 0xFF), never, stack) == Rtn.INTERNAL_COMMUNICATION_ERROR
    )
    assert rtn_of(pr.encode_request(Command.ALARM, 2, 2), never, stack) == Rtn.INTERNAL_COMMUNICATION_ERROR

    only_b = live_pipeline(s, packs=(1,)).state
    assert rtn_of(pr.encode_request(Command.ANALOG, 2, 2), only_b, stack) == Rtn.INTERNAL_COMMUNICATION_ERROR
    a = pr.decode_analog(ask(only_b, stack, Command.ANALOG, 2, 0xFF), all_modules=True)
    assert a.value == 2
    assert a.modules[0].cell_v == (0.0,) * 16  # placeholder: module 2 has no data
    assert a.modules[1].cell_v == pytest.approx(list(CELLS + 0.001))
    alarms = pr.decode_alarms(ask(only_b, stack, Command.ALARM, 2, 0xFF), all_modules=True)
    assert alarms.modules[0].cells == (pr.ALARM_OTHER,) * 16
    assert alarms.modules[1].cells == (pr.ALARM_NORMAL,) * 16


# --- payloads from the state ------------------------------------------------------------------------------


def test_analog_records_follow_the_packs(rig: tuple[Settings, Pipeline, pr.StackInfo]) -> None:
    _, p, stack = rig
    state = p.state
    for pack, adr in ((0, 2), (1, 3)):
        a = pr.decode_analog(ask(state, stack, Command.ANALOG, 2, adr), all_modules=False)
        m = a.modules[0]
        assert a.value == adr
        assert m.cell_v == pytest.approx(list(CELLS + 0.001 * pack))
        assert m.temperatures == pytest.approx([25.0 + pack, *(TEMPS + pack)])
        assert m.current == pytest.approx(CURRENTS[pack])
        cap = (100.0, 50.0)[pack]
        assert m.capacity_ah == cap
        assert m.remaining_ah == pytest.approx(state.packs[pack].soc * cap, abs=1e-3)
    # 100 Ah needs the 24-bit fields (user-defined count 4, 16-bit fields 0xFFFF); 50 Ah does not
    info = ask(state, stack, Command.ANALOG, 2, 2)
    assert info[-13:-6] == bytes.fromhex("FFFF04FFFF0000")
    info = ask(state, stack, Command.ANALOG, 3, 3)
    assert info[-5] == 2
    assert int.from_bytes(info[-4:-2], "big") == 50000


def test_management_splits_the_system_limits_across_online_modules(
    rig: tuple[Settings, Pipeline, pr.StackInfo],
) -> None:
    _, p, stack = rig
    lim = p.state.limits
    assert lim.charge_enable
    assert lim.discharge_enable
    m = pr.decode_management(ask(p.state, stack, Command.MANAGEMENT, 3, 3))
    assert (m.charge_voltage, m.discharge_voltage) == pytest.approx((lim.cvl.value, lim.dvl.value))
    assert (m.charge_current, m.discharge_current) == pytest.approx((lim.ccl.value / 2, lim.dcl.value / 2))
    assert m.charge_enable
    assert m.discharge_enable
    system = pr.decode_management(ask(p.state, stack, Command.SYSTEM_MANAGEMENT, 2), address=False)
    assert (system.charge_current, system.discharge_current) == pytest.approx((lim.ccl.value, lim.dcl.value))
    assert system.charge_enable
    assert system.discharge_enable


def test_request_bits_reach_0x92_and_0x63(rig: tuple[Settings, Pipeline, pr.StackInfo]) -> None:
    _, p, stack = rig
    lim = dataclasses.replace(p.state.limits, force_charge_1=True, full_charge_request=True)
    state = dataclasses.replace(p.state, limits=lim)
    for info, address in (
        (ask(state, stack, Command.MANAGEMENT, 2, 2), True),
        (ask(state, stack, Command.SYSTEM_MANAGEMENT, 0), False),
    ):
        status = info[-1]
        assert status == 0b1110_1000  # charge, discharge enable; charge immediately 1; full charge request
        m = pr.decode_management(info, address=address)
        assert m.force_charge_1
        assert m.full_charge_request
        assert not m.force_charge_2


def test_comm_lost_zeroes_currents_and_clears_enables_on_every_limit_command() -> None:
    s = rig_settings()
    stack = stack_info(s, s.outputs[0])
    state = comm_lost(live_pipeline(s))
    for adr in (2, 3):
        m = pr.decode_management(ask(state, stack, Command.MANAGEMENT, adr, adr))
        assert (m.charge_current, m.discharge_current, m.charge_enable, m.discharge_enable) == (
            0,
            0,
            False,
            False,
        )
        assert m.charge_voltage > 0
        assert m.discharge_voltage > 0
    m = pr.decode_management(ask(state, stack, Command.SYSTEM_MANAGEMENT, 2), address=False)
    assert (m.charge_current, m.discharge_current, m.charge_enable, m.discharge_enable) == (
        0,
        0,
        False,
        False,
    )
    alarm = ask(state, stack, Command.SYSTEM_ALARM, 2)
    assert alarm[1] & 1 << 4  # alarm 2 bit 4: internal communication failure
    a = pr.decode_analog(ask(state, stack, Command.ANALOG, 2, 2), all_modules=False)
    assert a.modules[0].current == 0.0  # a stale module reports no current
    alarms = pr.decode_alarms(ask(state, stack, Command.ALARM, 2, 2), all_modules=False)
    assert alarms.flag & 0x10
    assert set(alarms.modules[0].cells) == {pr.ALARM_OTHER}
    assert not alarms.modules[0].status2 & pr.Status2.USING_BATTERY_POWER


def test_alarm_record_marks_the_extreme_cell_and_sets_protection_bits_at_alarm_level(
    rig: tuple[Settings, Pipeline, pr.StackInfo],
) -> None:
    _, p, stack = rig
    warn = Alarm(AlarmCode.CELL_OVERVOLTAGE, AlarmLevel.WARNING, 0.0, 0)
    state = dataclasses.replace(p.state, alarms=(warn,))
    m = pr.decode_alarms(ask(state, stack, Command.ALARM, 2, 2), all_modules=False).modules[0]
    assert m.cells == (0,) * 15 + (pr.ALARM_HIGH,)  # cell 16 is the highest
    assert m.cell_faults == 1 << 15
    assert m.status1 == pr.Status1(0)  # a warning is not a protection
    assert m.status2 == pr.Status2.USING_BATTERY_POWER | pr.Status2.CHARGE_FET | pr.Status2.DISCHARGE_FET
    assert m.status3 == pr.Status3.EFFECTIVE_DISCHARGE_CURRENT

    alarms = (
        Alarm(AlarmCode.CELL_UNDERVOLTAGE, AlarmLevel.ALARM, 0.0, 1),
        Alarm(AlarmCode.OVERTEMPERATURE, AlarmLevel.ALARM, 0.0, 1),
        Alarm(AlarmCode.CHARGE_OVERCURRENT, AlarmLevel.ALARM, 0.0, 1),
    )
    state = dataclasses.replace(p.state, alarms=alarms)
    m = pr.decode_alarms(ask(state, stack, Command.ALARM, 3, 3), all_modules=False).modules[0]
    assert m.cells == (pr.ALARM_LOW,) + (0,) * 15
    assert m.temperatures == (0, 0, 0, pr.ALARM_HIGH, 0)  # the board slot, then sensor 3 is hottest
    assert m.charge_current == pr.ALARM_HIGH
    s1 = pr.Status1
    assert m.status1 == s1.CELL_UNDERVOLTAGE | s1.CHARGE_OVERCURRENT | s1.CHARGE_OVERTEMPERATURE | (
        s1.DISCHARGE_OVERTEMPERATURE
    )
    assert m.status3 == pr.Status3.EFFECTIVE_CHARGE_CURRENT
    other = pr.decode_alarms(ask(state, stack, Command.ALARM, 2, 2), all_modules=False).modules[0]
    assert other.status1 == s1(0)
    assert set(other.cells) == {0}


def test_system_analog_and_alarm_and_identity(rig: tuple[Settings, Pipeline, pr.StackInfo]) -> None:
    s, p, stack = rig
    state = p.state
    info = ask(state, stack, Command.SYSTEM_ANALOG, 0)
    assert len(info) == 49
    volts, current, soc = (
        int.from_bytes(info[0:2], "big"),
        int.from_bytes(info[2:4], "big", signed=True),
        info[4],
    )
    assert volts == round(state.voltage * 1000)
    assert current == round(state.current * 100)  # 0.01 A
    assert soc == round(state.soc * 100)
    vmax, where = int.from_bytes(info[11:13], "big"), int.from_bytes(info[13:15], "big")
    assert vmax == round(state.cell_v_max * 1000)
    assert where == (state.cell_v_max_at.pack + 1) << 8 | 16
    assert ask(state, stack, Command.SYSTEM_ALARM, 2) == bytes(4)

    basic = ask(state, stack, Command.SYSTEM_BASIC, 0)
    assert basic[:10] == b"bmsgw\0\0\0\0\0"
    assert basic[32] == 2
    assert basic[33:49] == b"pack-A          "
    assert (
        ask(state, stack, Command.MANUFACTURER, 0)
        == b"bmsgw\0\0\0\0\0" + bytes((0, 1)) + b"PYLON" + b"-" * 15
    )
    assert ask(state, stack, Command.SERIAL_NUMBER, 3) == b"\x03pack-B          "
    assert ask(state, stack, Command.FIRMWARE, 2, 2) == bytes((2, 0, 1, 0, 1, 0))
    assert ask(state, stack, Command.PROTOCOL_VERSION, 0) == b""
    params = pr.decode_system_parameters(ask(state, stack, Command.SYSTEM_PARAMETERS, 3))
    t = stack.thresholds
    assert (params.cell_v_high, params.module_v_high) == pytest.approx((t.cell_v_high, 16 * t.cell_v_high))
    assert (params.charge_current, params.discharge_current) == (90.0, 120.0)
    assert s.outputs[0].address == 2


def test_configured_base_address_moves_every_module() -> None:
    s = rig_settings(address=0x12)  # group 1
    stack = stack_info(s, s.outputs[0])
    state = live_pipeline(s).state
    assert rtn_of(pr.encode_request(Command.ANALOG, 2, 2), state, stack) == Rtn.ADR_ERROR
    a = pr.decode_analog(ask(state, stack, Command.ANALOG, 0x13, 0x13), all_modules=False)
    assert a.modules[0].current == pytest.approx(CURRENTS[1])


# --- the stream splitter ----------------------------------------------------------------------------------

REQ = pr.encode_request(Command.ANALOG, 2, 2)


def test_splitter_drops_garbage_and_resyncs_on_tilde() -> None:
    sp = pr.FrameSplitter()
    assert sp.feed(b"\x00\xffnoise\n" + REQ[:7]) == []
    assert sp.feed(REQ[7:] + b"\n~2002 half a frame" + REQ) == [REQ, REQ]
    assert sp.discarded == 8 + 1 + len(b"~2002 half a frame")


def test_splitter_bounds_its_buffer() -> None:
    sp = pr.FrameSplitter(max_bytes=64)
    assert sp.feed(b"~" + b"0" * 100) == []
    assert sp.feed(b"0" * 100 + b"\r" + REQ) == [REQ]
    assert sp.discarded == 202


@given(st.lists(st.binary(max_size=40), max_size=12), st.data())
def test_splitter_is_independent_of_how_bytes_arrive(chunks: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(c + data.draw(st.sampled_from([b"", REQ, REQ[:5]])) for c in chunks)
    whole = pr.FrameSplitter()
    expected = whole.feed(stream)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    split = pr.FrameSplitter()
    got = [f for piece in pieces for f in split.feed(piece)]
    assert got == expected
    assert all(f.startswith(b"~") and f.endswith(b"\r") and f.count(b"~") == 1 for f in got)
    assert split.discarded == whole.discarded
    assert split.discarded + sum(map(len, got)) <= len(stream)


# --- fuzzing: the codec's own errors only, and a battery that never raises --------------------------------

hex_frames = st.builds(
    lambda body, fix: _reframe(body) if fix else b"~" + body + b"\r",
    st.binary(max_size=60).map(lambda b: b.hex().upper().encode()[: len(b)]),
    st.booleans(),
)
anything = st.one_of(st.binary(max_size=200), hex_frames, st.builds(lambda b: b"~" + b + b"\r", st.binary()))


@given(anything)
def test_decode_frame_raises_only_rs485_errors(raw: bytes) -> None:
    try:
        frame = pr.decode_frame(raw)
    except pr.Rs485Error:
        return
    assert pr.encode_frame(frame).upper() == raw.upper()


@settings(max_examples=300)
@given(anything)
def test_the_battery_never_raises_and_always_answers_with_a_valid_frame(raw: bytes) -> None:
    s = _FUZZ[0]
    result = pr.answer(raw, s.state, _FUZZ[1])
    if result.reply is not None:
        assert pr.decode_frame(result.reply).cid1 == 0x46
    assert (result.error is None) == (result.reply is not None and pr.decode_frame(result.reply).cid2 == 0)


@given(st.sampled_from(sorted(Command)), st.integers(0, 255), st.one_of(st.none(), st.integers(0, 255)))
def test_every_command_at_every_address(command: Command, adr: int, target: int | None) -> None:
    result = pr.answer(pr.encode_request(command, adr, target), _FUZZ[0].state, _FUZZ[1])
    assert result.reply is not None  # every well-formed request gets an answer, data or RTN
    pr.decode_frame(result.reply)


@given(st.binary(max_size=120), st.booleans())
def test_payload_decoders_raise_only_payload_errors(info: bytes, all_modules: bool) -> None:
    for decode in (
        lambda: pr.decode_analog(info, all_modules=all_modules),
        lambda: pr.decode_alarms(info, all_modules=all_modules),
        lambda: pr.decode_management(info, address=all_modules),
        lambda: pr.decode_system_parameters(info),
    ):
        with contextlib.suppress(pr.PayloadError):
            decode()


floats = st.floats(allow_nan=True, allow_infinity=True, width=32)


@given(
    st.lists(st.floats(0, 5, allow_nan=False), min_size=1, max_size=32),
    st.lists(st.floats(-40, 90, allow_nan=False), min_size=1, max_size=12),
    st.floats(-3000, 3000, allow_nan=False),
    st.floats(0, 65, allow_nan=False),
    st.floats(0.001, 16000, allow_nan=False),
)
def test_analog_roundtrip_within_one_count(
    cells: list[float], temps: list[float], current: float, voltage: float, capacity: float
) -> None:
    m = pr.ModuleValues(tuple(cells), tuple(temps), current, voltage, capacity / 2, capacity, 7)
    (got,) = pr.decode_analog(pr.encode_analog(pr.ModuleRecords(0, 1, (m,))), all_modules=True).modules
    assert got.cell_v == pytest.approx(cells, abs=5e-4 + 1e-9)
    assert got.temperatures == pytest.approx(temps, abs=0.05 + 1e-9)
    assert got.current == pytest.approx(current, abs=0.05 + 1e-9)
    assert (got.remaining_ah, got.capacity_ah) == pytest.approx((capacity / 2, capacity), abs=5e-4 + 1e-9)


@given(floats, floats, floats, floats, floats, st.integers(0, 3))
def test_absurd_states_still_answer_every_command(
    v: float, i: float, t: float, soc: float, lim: float, n_alarms: int
) -> None:
    base = _FUZZ[0].state
    packs = tuple(dataclasses.replace(p, soc=soc, soh=soc) for p in base.packs)
    limits = dataclasses.replace(
        base.limits,
        cvl=dataclasses.replace(base.limits.cvl, value=lim),
        ccl=dataclasses.replace(base.limits.ccl, value=lim),
        dcl=dataclasses.replace(base.limits.dcl, value=-lim if math.isfinite(lim) else lim),
    )
    alarms = tuple(Alarm(code, AlarmLevel.FAULT, 0.0, k % 3 or None) for k, code in enumerate(AlarmCode))
    state = dataclasses.replace(
        base, packs=packs, voltage=v, current=i, temperature=t, cell_t_max=t, cell_v_max=v, soc=soc,
        limits=limits, alarms=alarms[: n_alarms * 5],
    )  # fmt: skip
    for command in sorted(Command):
        pr.answer(pr.encode_request(command, 2, 2 if command in (0x42, 0x44, 0x92, 0x93, 0x96) else None),
                  state, _FUZZ[1])  # fmt: skip


def _fuzz_rig() -> tuple[Pipeline, pr.StackInfo]:
    s = rig_settings()
    return live_pipeline(s), stack_info(s, s.outputs[0])


_FUZZ = _fuzz_rig()
