"""JK `4E 57` codec: golden frames from real hardware (tests/fixtures/bms/SOURCES.md), current sign by
protocol version, flags, round trip, and random bytes."""

from __future__ import annotations

import contextlib

import pytest
from fake_bms import load_frames
from hypothesis import given
from hypothesis import strategies as st

from bmsgw.bms import jk
from bmsgw.bms.framing import FrameBuffer
from bmsgw.model import BmsFlags

GOLDEN = load_frames("jk")


def envelope(data: bytes, cmd: int = 0x06, ftype: int = 0x01) -> bytes:
    """A response frame around `data`, built here from the published layout (not with jk.py)."""
    body = b"\x4e\x57" + (len(data) + 18).to_bytes(2, "big") + bytes(4) + bytes((cmd, 0, ftype)) + data
    body += bytes(4) + b"\x68\x00\x00"
    return body + (sum(body) & 0xFFFF).to_bytes(2, "big")


def records(frame: bytes) -> bytes:
    return frame[11:-9]


def patch(frame: bytes, rid: int, value: bytes) -> bytes:
    """`frame` with record `rid`'s value replaced (same size), checksum recomputed."""
    data = bytearray(records(frame))
    at = data.index(bytes((rid,)), 2 + data[1])  # after the 0x79 cell block
    data[at + 1 : at + 1 + len(value)] = value
    return envelope(bytes(data))


def test_read_all_request_is_the_published_one() -> None:
    assert jk.read_all_request() == GOLDEN["request_read_all"]
    assert jk.decode_request(GOLDEN["request_read_all"]) == jk.CMD_READ_ALL
    assert jk.decode_response(GOLDEN["request_read_all"]) is None  # an echo is not an answer


def test_status_frame_14s_decodes_to_the_stated_values() -> None:
    s = jk.decode_response(GOLDEN["status_14s"])
    assert s is not None
    assert s.cell_v == pytest.approx(
        (3.821, 3.834, 3.831, 3.820, 3.832, 3.834, 3.825, 3.832, 3.811, 3.834, 3.825, 3.835, 3.835, 3.826)
    )
    assert min(s.cell_v) == 3.811
    assert s.cell_v.index(3.811) == 8
    assert max(s.cell_v) == 3.835
    assert s.cell_v.index(3.835) == 11
    assert s.voltage == pytest.approx(53.59)
    assert s.current == pytest.approx(2.08)  # charging, protocol version 1
    assert s.mos_temp == 29.0
    assert s.temps == (30.0, 28.0)
    assert (s.soc, s.cycles, s.warnings, s.status, s.protocol_version) == (15, 4, 0, 0x07, 1)
    r = jk.reading(s)
    assert r.flags == BmsFlags.CHARGE_FET | BmsFlags.DISCHARGE_FET | BmsFlags.BALANCING
    assert r.soc_reported == pytest.approx(0.15)
    assert r.cell_t == (30.0, 28.0)
    assert r.extra["mos_temp_c"] == 29.0


def test_13s_capture_fw_10_07() -> None:
    frame = GOLDEN["b2a24s_13s_10_07"]
    assert len(frame) == 282
    s = jk.decode_response(frame)
    assert s is not None
    assert len(s.cell_v) == 13
    assert s.cell_v[:3] == pytest.approx((4.092, 4.047, 4.093))
    assert s.voltage == pytest.approx(53.13)
    assert s.current == 0.0
    assert (s.soc, s.cycles, s.mos_temp, s.temps) == (94, 0, 22.0, (19.0, 19.0))
    assert jk.reading(s).flags == BmsFlags.BALANCING  # status 0x0004: both MOS switches off (0xAB/0xAC = 0)


def test_16s_capture_fw_7_1_0h_discharging() -> None:
    s = jk.decode_response(GOLDEN["bd6a17s_16s_7_1_0h"])
    assert s is not None
    assert len(s.cell_v) == 16
    assert min(s.cell_v) == pytest.approx(3.185)
    assert s.cell_v.index(min(s.cell_v)) == 6
    assert s.voltage == pytest.approx(51.21)
    assert s.current == pytest.approx(-0.69)  # 0x0045, bit 15 clear with 0xC0 = 1: discharging
    assert (s.soc, s.cycles, s.status) == (15, 17, 0x03)


def test_the_published_7_1_0h_text_fails_its_checksum_before_the_repair() -> None:
    frame = bytearray(GOLDEN["bd6a17s_16s_7_1_0h"])
    at = bytes(frame).index(bytes.fromhex("9f0046a0"))
    frame[at + 3] = 0x00  # the text as published (":0:" where the 0xA0 record id belongs)
    with pytest.raises(jk.JkDecodeError, match="checksum"):
        jk.decode_response(bytes(frame))


@pytest.mark.parametrize(
    ("version", "raw", "amps"),
    [
        (1, 0x87D0, 20.0),  # register table: charging 20 A is sent as 34768
        (1, 0x07D0, -20.0),  # discharging 20 A is sent as 2000
        (0, 11000, -10.0),  # offset 10000: (10000 - 11000) x 0.01 = -10 A, discharging
        (0, 9500, 5.0),  # (10000 - 9500) x 0.01 = 5 A, charging
    ],
)
def test_current_sign_depends_on_protocol_version(version: int, raw: int, amps: float) -> None:
    frame = patch(patch(GOLDEN["status_14s"], 0x84, raw.to_bytes(2, "big")), 0xC0, bytes((version,)))
    s = jk.decode_response(frame)
    assert s is not None
    assert s.current == pytest.approx(amps)
    again = jk.decode_response(jk.encode_response(s))
    assert again is not None
    assert again.current == pytest.approx(amps)


def test_temperatures_above_100_are_negative() -> None:
    s = jk.decode_response(patch(GOLDEN["status_14s"], 0x81, (101).to_bytes(2, "big")))
    assert s is not None
    assert s.temps[0] == -1.0


@pytest.mark.parametrize(
    ("bit", "flag"),
    [
        (1, BmsFlags.ALARM_OVERTEMP),
        (2, BmsFlags.ALARM_CELL_OV),
        (3, BmsFlags.ALARM_CELL_UV),
        (5, BmsFlags.ALARM_CHARGE_OC),
        (6, BmsFlags.ALARM_DISCHARGE_OC),
        (9, BmsFlags.ALARM_UNDERTEMP),
        (10, BmsFlags.ALARM_CELL_OV),
        (11, BmsFlags.ALARM_CELL_UV),
        (12, BmsFlags.ALARM_INTERNAL),
        (0, BmsFlags.NONE),  # low capacity: a warning, not a protection
    ],
)
def test_warning_bits_map_to_alarm_flags(bit: int, flag: BmsFlags) -> None:
    s = jk.decode_response(patch(GOLDEN["status_14s"], 0x8B, (1 << bit).to_bytes(2, "big")))
    assert s is not None
    alarms = jk.reading(s).flags & ~(BmsFlags.CHARGE_FET | BmsFlags.DISCHARGE_FET | BmsFlags.BALANCING)
    assert alarms == flag


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f[:-1], "length"),
        (lambda f: f[:-1] + bytes(((f[-1] + 1) & 0xFF,)), "checksum"),
        (lambda f: f[:-5] + b"\x69" + f[-4:], "end identity"),
        (lambda f: b"\x4e\x58" + f[2:], "starts with"),
        (lambda f: envelope(records(f) + b"\x88\x00"), "unknown record"),
        (lambda f: envelope(records(f)[:-1]), "cut off"),
        (lambda f: envelope(b"\x85\x10"), "lacks records"),
    ],
)
def test_malformed_frames_raise_the_codec_error(mutate: object, message: str) -> None:
    assert callable(mutate)
    with pytest.raises(jk.JkDecodeError, match=message):
        jk.decode_response(mutate(GOLDEN["status_14s"]))


@given(
    cells=st.lists(st.integers(0, 5000), min_size=1, max_size=32),
    temps=st.tuples(*[st.integers(-40, 100)] * 3),
    current_10ma=st.integers(-32767, 32767),
    version=st.sampled_from([0, 1]),
    soc=st.integers(0, 100),
    words=st.tuples(*[st.integers(0, 0xFFFF)] * 3),
)
def test_encode_decode_round_trip(
    cells: list[int],
    temps: tuple[int, int, int],
    current_10ma: int,
    version: int,
    soc: int,
    words: tuple[int, int, int],
) -> None:
    if version == 0:
        current_10ma = max(-55535, min(current_10ma, 10000))
    s = jk.JkStatus(
        cell_v=tuple(c / 1000 for c in cells), mos_temp=float(temps[0]), temps=(temps[1], temps[2]),
        voltage=words[0] / 100, current=current_10ma / 100, soc=soc, cycles=words[1], warnings=words[2],
        status=words[2] & 7, protocol_version=version,
    )  # fmt: skip
    assert jk.decode_response(jk.encode_response(s)) == s


@given(st.binary(max_size=400))
def test_random_bytes_raise_only_the_codec_error(data: bytes) -> None:
    for decode in (jk.decode_response, jk.decode_request):
        with contextlib.suppress(jk.JkDecodeError):
            decode(data)


@given(st.binary(max_size=300), st.integers(0, 255), st.integers(0, 255))
def test_random_records_in_a_valid_envelope_raise_only_the_codec_error(
    data: bytes, cmd: int, ftype: int
) -> None:
    with contextlib.suppress(jk.JkDecodeError):
        jk.decode_response(envelope(data, cmd, ftype))


@given(st.lists(st.binary(max_size=64), max_size=8))
def test_frames_are_found_in_a_stream_with_garbage(junk: list[bytes]) -> None:
    frame = GOLDEN["status_14s"]
    buf = FrameBuffer(jk.FRAMING)
    for piece in junk:
        buf.feed(piece.replace(b"\x4e", b"\x00"))  # garbage without a frame start marker
        buf.feed(frame)
    found = []
    while (candidate := buf.next()) is not None:
        found.append(candidate)
    assert found == [frame] * len(junk)
