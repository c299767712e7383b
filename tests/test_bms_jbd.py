"""JBD `DD … 77` codec: golden frames from real hardware (tests/fixtures/bms/SOURCES.md), protection and
FET bits, round trip, and random bytes."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
from fake_bms import load_frames
from hypothesis import given
from hypothesis import strategies as st

from bmsgw.bms import jbd
from bmsgw.model import BmsFlags

GOLDEN = load_frames("jbd")


def answer(frame: bytes) -> bytes:
    got = jbd.decode_response(frame)
    assert got is not None
    return got[1]


def test_requests_are_the_published_ones() -> None:
    assert jbd.request(jbd.REG_BASIC) == GOLDEN["request_basic"]
    assert jbd.request(jbd.REG_CELLS) == GOLDEN["request_cells"]
    assert jbd.decode_request(GOLDEN["request_cells"]) == jbd.REG_CELLS
    assert jbd.decode_response(GOLDEN["request_basic"]) is None  # an echo is not an answer


def test_16s_sp25s003_capture() -> None:
    b = jbd.decode_basic(answer(GOLDEN["sp25s003_16s_basic"]))
    assert (b.voltage, b.current, b.remaining_ah, b.nominal_ah, b.cycles) == (0.0, 0.0, 0.0, 100.0, 0)
    d = b.production_date
    assert (2000 + (d >> 9), d >> 5 & 0xF, d & 0x1F) == (2022, 2, 16)  # "Date of manufacture: 2022.2.16"
    assert (b.version, b.rsoc, b.fet, b.cell_count, b.temps) == (0x20, 0, 1, 16, ())
    cells = jbd.decode_cells(answer(GOLDEN["sp25s003_16s_cells"]))
    assert cells == (3.6,) * 15 + (0.0,)
    r = jbd.reading(b, cells)
    assert r.flags == BmsFlags.CHARGE_FET  # operation status bitmask 1
    assert r.extra["software_version"] == "2.0"
    assert r.soc_reported == 0.0


def test_4s_sp04s034_capture() -> None:
    b = jbd.decode_basic(answer(GOLDEN["sp04s034_4s_basic"]))
    assert b.voltage == pytest.approx(15.60)
    assert b.current == 0.0
    assert (b.remaining_ah, b.nominal_ah, b.cycles, b.rsoc) == (4.98, 5.0, 0, 100)
    assert (b.balance, b.protection, b.fet, b.cell_count) == (0, 0, 0x03, 4)
    assert b.temps == pytest.approx((22.4, 22.3, 21.7))
    assert jbd.decode_basic(answer(GOLDEN["sp04s034_4s_basic_2"])).temps == pytest.approx((22.4, 22.2, 21.7))
    cells = jbd.decode_cells(answer(GOLDEN["sp04s034_4s_cells"]))
    assert cells == (3.909, 3.901, 3.895, 3.901)
    assert jbd.decode_cells(answer(GOLDEN["sp04s034_4s_cells_2"])) == (3.909, 3.902, 3.895, 3.901)
    r = jbd.reading(b, cells)
    assert r.flags == BmsFlags.CHARGE_FET | BmsFlags.DISCHARGE_FET
    assert r.extra["software_version"] == "8.0"
    # Our encoder reproduces the captured bytes exactly.
    assert jbd.encode_basic(b) == GOLDEN["sp04s034_4s_basic"]
    assert jbd.encode_cells(cells) == GOLDEN["sp04s034_4s_cells"]


def test_cell_overvoltage_capture_sets_the_alarm_flag() -> None:
    frame = jbd.encode_response(jbd.REG_BASIC, GOLDEN["payload_cell_overvoltage_280ah"])
    b = jbd.decode_basic(answer(frame))
    assert (b.voltage, b.current, b.remaining_ah, b.nominal_ah, b.cycles, b.rsoc) == (
        14.28, 0.0, 280.0, 280.0, 8, 100,
    )  # fmt: skip
    assert b.temps == pytest.approx((21.5, 20.9, 20.4))
    flags = jbd.reading(b, (3.65,) * 4).flags
    assert flags == BmsFlags.ALARM_CELL_OV | BmsFlags.DISCHARGE_FET  # errors 0x0001, status 0x02


def test_mosfet_software_lock_is_no_alarm() -> None:
    frame = jbd.encode_response(jbd.REG_BASIC, GOLDEN["payload_mosfet_software_lock"])
    b = jbd.decode_basic(answer(frame))
    assert (b.voltage, b.remaining_ah, b.rsoc, b.protection) == (15.47, 4.93, 99, 0x1000)
    assert b.temps == pytest.approx((24.5, 24.2, 23.7))
    assert jbd.reading(b, (3.87,) * 4).flags == BmsFlags.DISCHARGE_FET


@pytest.mark.parametrize(
    ("bit", "flag"),
    [
        (0, BmsFlags.ALARM_CELL_OV),
        (1, BmsFlags.ALARM_CELL_UV),
        (2, BmsFlags.ALARM_CELL_OV),
        (3, BmsFlags.ALARM_CELL_UV),
        (4, BmsFlags.ALARM_OVERTEMP),
        (5, BmsFlags.ALARM_UNDERTEMP),
        (8, BmsFlags.ALARM_CHARGE_OC),
        (9, BmsFlags.ALARM_DISCHARGE_OC),
        (10, BmsFlags.ALARM_SHORT_CIRCUIT),
        (11, BmsFlags.ALARM_INTERNAL),
    ],
)
def test_protection_bits(bit: int, flag: BmsFlags) -> None:
    b = jbd.decode_basic(answer(GOLDEN["sp04s034_4s_basic"]))
    b = dataclasses.replace(b, protection=1 << bit, fet=0)
    assert jbd.reading(b, (3.3,) * 4).flags == flag


def test_negative_current_is_discharge_and_balance_bits_set_balancing() -> None:
    b = jbd.decode_basic(answer(GOLDEN["sp04s034_4s_basic"]))
    again = jbd.decode_basic(answer(jbd.encode_basic(dataclasses.replace(b, current=-12.34))))
    assert again.current == pytest.approx(-12.34)
    balancing = dataclasses.replace(b, balance=1 << 17)
    assert BmsFlags.BALANCING in jbd.reading(balancing, (3.3,) * 4).flags


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (bytes.fromhex("dd 03 80 00 ff 80 77"), "error status 0x80"),
        (bytes.fromhex("dd 03 00 00 ff fd 78"), "end byte"),
        (bytes.fromhex("dd 03 00 00 ff fc 77"), "checksum"),
        (bytes.fromhex("dd 03 00 05 ff fd 77"), "length byte"),
    ],
)
def test_bad_frames_raise_the_codec_error(frame: bytes, message: str) -> None:
    with pytest.raises(jbd.JbdDecodeError, match=message):
        jbd.decode_response(frame)


def test_short_register_data_is_rejected() -> None:
    with pytest.raises(jbd.JbdDecodeError, match="NTC"):
        jbd.decode_basic(answer(GOLDEN["sp04s034_4s_basic"])[:-1])
    with pytest.raises(jbd.JbdDecodeError, match="2 x n"):
        jbd.decode_cells(b"\x0f")


@given(st.binary(max_size=300))
def test_random_bytes_raise_only_the_codec_error(data: bytes) -> None:
    for decode in (jbd.decode_response, jbd.decode_request, jbd.decode_basic, jbd.decode_cells):
        with contextlib.suppress(jbd.JbdDecodeError):
            decode(data)


@given(st.integers(0, 255), st.binary(max_size=255))
def test_random_data_in_a_valid_envelope_raise_only_the_codec_error(register: int, data: bytes) -> None:
    try:
        got = jbd.decode_response(jbd.encode_response(register, data))
        assert got == (register, data) or register in (0xA5, 0x5A)
        jbd.decode_basic(data)
        jbd.decode_cells(data)
    except jbd.JbdDecodeError:
        pass
