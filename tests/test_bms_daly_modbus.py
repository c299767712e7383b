"""Daly Modbus-series codec: the real 24-cell answers (tests/fixtures/bms/SOURCES.md), CRC, slave and
exception handling, round trip, and random bytes."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
from fake_bms import load_frames
from hypothesis import given
from hypothesis import strategies as st

from bmsgw.bms import daly_modbus as dm
from bmsgw.model import BmsFlags

GOLDEN = load_frames("daly_modbus")


def test_request_and_crc() -> None:
    req = dm.read_request()
    assert req[:6] == bytes.fromhex("d2 03 00 00 00 3e")
    assert dm.decode_request(req) == (0xD2, 0, 62)
    assert dm.crc16(b"123456789") == 0x4B37  # the CRC-16/MODBUS check value


def test_24_cell_capture() -> None:
    regs = dm.decode_response(GOLDEN["realtime_24s"])
    assert regs is not None
    assert len(regs) == 62
    s = dm.decode_registers(regs)
    assert len(s.cell_v) == 24
    assert (min(s.cell_v), max(s.cell_v)) == (3.291, 3.294)
    assert s.temps == (16.0, 14.0, 16.0, 16.0)
    assert (s.voltage, s.current, s.soc, s.remaining_ah, s.cycles) == (79.0, 0.0, 33.3, 104.5, 0)
    assert (s.state, s.charge_fet, s.discharge_fet, s.balancing, s.alarms) == (0, True, True, False, 0)
    r = dm.reading(s)
    assert r.flags == BmsFlags.CHARGE_FET | BmsFlags.DISCHARGE_FET
    assert r.soc_reported == pytest.approx(0.333)
    # Our encoder rebuilds both captured register images byte for byte (derived registers included).
    for label in ("realtime_24s", "realtime_24s_2"):
        again = dm.decode_response(GOLDEN[label])
        assert again is not None
        assert dm.encode_response(dm.encode_registers(dm.decode_registers(again))) == GOLDEN[label]


@pytest.mark.parametrize(("raw", "amps"), [(30500, 50.0), (29500, -50.0)])
def test_current_above_the_offset_is_charging(raw: int, amps: float) -> None:
    regs = dm.decode_response(GOLDEN["realtime_24s"])
    assert regs is not None
    regs[0x29] = raw
    assert dm.decode_registers(regs).current == amps


def test_other_slave_exception_and_bad_crc() -> None:
    frame = GOLDEN["realtime_24s"]
    other = dm.encode_response(dm.decode_response(frame) or [], slave=0x81)
    assert dm.decode_response(other) is None
    assert dm.decode_response(other, slave=0x81) is not None
    exception = bytes((0xD2, 0x83, 0x02))
    with pytest.raises(dm.DalyModbusDecodeError, match="exception code 2"):
        dm.decode_response(exception + dm.crc16(exception).to_bytes(2, "little"))
    with pytest.raises(dm.DalyModbusDecodeError, match="CRC"):
        dm.decode_response(frame[:-1] + bytes((frame[-1] ^ 1,)))
    with pytest.raises(dm.DalyModbusDecodeError, match="62"):
        dm.decode_registers([0] * 10)


def test_round_trip_with_alarm_bits() -> None:
    regs = dm.decode_response(GOLDEN["realtime_24s"])
    assert regs is not None
    s = dataclasses.replace(dm.decode_registers(regs), current=-12.3, alarms=0x0001_0000_0000_8000, state=2)
    assert dm.decode_registers(dm.encode_registers(s)) == s
    assert dm.reading(s).extra["alarms"] == "0001000000008000"


@given(st.binary(max_size=300))
def test_random_bytes_raise_only_the_codec_error(data: bytes) -> None:
    for decode in (dm.decode_response, dm.decode_request):
        with contextlib.suppress(dm.DalyModbusDecodeError):
            decode(data)


@given(st.lists(st.integers(0, 0xFFFF), max_size=80))
def test_random_registers_raise_only_the_codec_error(regs: list[int]) -> None:
    with contextlib.suppress(dm.DalyModbusDecodeError):
        dm.reading(dm.decode_registers(dm.decode_response(dm.encode_response(regs)) or []))
