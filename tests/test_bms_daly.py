"""Daly A5 codec: real replies and worked requests (tests/fixtures/bms/SOURCES.md), current sign,
multi-frame cells/temperatures, failure bits, round trip, and random bytes."""

from __future__ import annotations

import contextlib

import pytest
from fake_bms import load_frames
from hypothesis import given
from hypothesis import strategies as st

from bmsgw.bms import daly
from bmsgw.model import BmsFlags

GOLDEN = load_frames("daly")


def data_of(frames: list[bytes]) -> list[bytes]:
    return [daly.decode_frame(f).data for f in frames]


def answers(s: daly.DalyStatus) -> dict[int, list[bytes]]:
    return {cmd: data_of(daly.encode_answers(s, cmd)) for cmd in range(0x90, 0x99)}


STATUS = daly.DalyStatus(
    voltage=52.8, current=-12.3, soc=48.4, cell_v=tuple((3300 + k) / 1000 for k in range(16)),
    temps=(21.0, 22.0, -5.0), cycles=12, mosfet=(2, True, True, 87.5), balance=0, failures=bytes(8),
)  # fmt: skip


def test_requests_are_the_worked_examples() -> None:
    assert daly.request(0x80, daly.CMD_CELLS) == GOLDEN["request_95_uart"]
    assert daly.request(0x40, daly.CMD_SOC) == GOLDEN["request_90_rs485"]


def test_real_replies_of_a_4s_pack_at_rest() -> None:
    soc = daly.decode_frame(GOLDEN["reply_90_4s_at_rest"])
    counts = daly.decode_frame(GOLDEN["reply_94_4s_at_rest"])
    assert (soc.address, soc.command, counts.command) == (daly.BMS_ADDRESS, 0x90, 0x94)
    cells = daly.encode_answers(STATUS, daly.CMD_CELLS)[:2]  # 4 cells: two frames
    temps = daly.encode_answers(STATUS, daly.CMD_TEMPS)
    s = daly.decode_status(
        {0x90: [soc.data], 0x94: [counts.data], 0x95: data_of(cells), 0x96: data_of(temps)}
    )
    assert s.voltage == pytest.approx(13.3)
    assert s.current == 0.0
    assert s.soc == pytest.approx(48.4)
    assert (len(s.cell_v), len(s.temps)) == (4, 2)  # 0x94: 4 cells, 2 temperature sensors
    assert daly.reading(s).soc_reported == pytest.approx(0.484)


@pytest.mark.parametrize(("raw", "amps"), [(29000, 100.0), (31000, -100.0), (30000, 0.0)])
def test_current_below_the_offset_is_charging(raw: int, amps: float) -> None:
    soc = daly.encode_frame(
        1, daly.CMD_SOC, bytes.fromhex("0210 0000") + raw.to_bytes(2, "big") + b"\x01\xf4"
    )
    s = daly.decode_status({**answers(STATUS), 0x90: data_of([soc])})
    assert s.current == amps


def test_round_trip_through_the_answers() -> None:
    s = daly.decode_status(answers(STATUS))
    assert s == STATUS
    r = daly.reading(s)
    assert r.cell_v == STATUS.cell_v
    assert r.cell_t == (21.0, 22.0, -5.0)
    assert r.current == -12.3
    assert r.flags == BmsFlags.CHARGE_FET | BmsFlags.DISCHARGE_FET
    assert r.extra["remaining_ah"] == 87.5


def test_cell_frames_are_numbered_and_counted() -> None:
    got = answers(STATUS)
    assert [d[0] for d in got[0x95]] == [1, 2, 3, 4, 5, 6]  # 16 cells, 3 per frame
    shuffled = {**got, 0x95: [*got[0x95][::-1], got[0x95][0]]}  # out of order, one duplicate
    assert daly.decode_status(shuffled).cell_v == STATUS.cell_v
    with pytest.raises(daly.DalyDecodeError, match=r"0x95: frames \[3\] of 6 missing"):
        daly.decode_status({**got, 0x95: got[0x95][:2] + got[0x95][3:]})


def test_optional_answers_may_be_missing() -> None:
    got = {k: v for k, v in answers(STATUS).items() if k in (0x90, 0x94, 0x95, 0x96)}
    s = daly.decode_status(got)
    assert (s.mosfet, s.balance, s.failures) == (None, None, None)
    assert daly.reading(s).flags == BmsFlags.NONE
    with pytest.raises(daly.DalyDecodeError, match="0x94"):
        daly.decode_status({0x90: got[0x90]})


@pytest.mark.parametrize(
    ("byte", "bit", "flag"),
    [
        (0, 1, BmsFlags.ALARM_CELL_OV),
        (0, 0, BmsFlags.NONE),  # level 1 is a warning
        (0, 3, BmsFlags.ALARM_CELL_UV),
        (1, 3, BmsFlags.ALARM_UNDERTEMP),
        (1, 5, BmsFlags.ALARM_OVERTEMP),
        (2, 1, BmsFlags.ALARM_CHARGE_OC),
        (2, 3, BmsFlags.ALARM_DISCHARGE_OC),
        (4, 4, BmsFlags.ALARM_INTERNAL),
        (5, 4, BmsFlags.NONE),  # RTC clock malfunction
        (6, 2, BmsFlags.ALARM_SHORT_CIRCUIT),
    ],
)
def test_failure_bits(byte: int, bit: int, flag: BmsFlags) -> None:
    failures = bytearray(8)
    failures[byte] = 1 << bit
    got = answers(STATUS)
    got[0x98] = [bytes(failures)]
    got[0x93] = [bytes(8)]  # both MOSFETs off
    assert daly.reading(daly.decode_status(got)).flags == flag


def test_bad_frames_raise_the_codec_error() -> None:
    good = GOLDEN["reply_90_4s_at_rest"]
    with pytest.raises(daly.DalyDecodeError, match="checksum"):
        daly.decode_frame(good[:-1] + b"\x00")
    with pytest.raises(daly.DalyDecodeError, match="not a Daly"):
        daly.decode_frame(good[:-1])
    with pytest.raises(daly.DalyDecodeError, match="8 data bytes"):
        daly.decode_status({0x90: [b"\x00"]})


@given(st.binary(min_size=13, max_size=13) | st.binary(max_size=40))
def test_random_bytes_raise_only_the_codec_error(data: bytes) -> None:
    with contextlib.suppress(daly.DalyDecodeError):
        daly.decode_frame(data)


@given(st.dictionaries(st.integers(0x90, 0x98), st.lists(st.binary(min_size=8, max_size=8), max_size=12)))
def test_random_answers_raise_only_the_codec_error(got: dict[int, list[bytes]]) -> None:
    with contextlib.suppress(daly.DalyDecodeError):
        daly.reading(daly.decode_status(got))
