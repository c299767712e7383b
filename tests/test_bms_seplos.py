"""Seplos V2 codec: golden frames from real hardware (tests/fixtures/bms/SOURCES.md) decode to the values
their sources state; protection bits; round trip through our encoder; random bytes."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
from fake_bms import load_ascii_frames
from hypothesis import given
from hypothesis import strategies as st

from bmsgw.bms import seplos
from bmsgw.bms.framing import FrameBuffer
from bmsgw.model import BmsFlags

GOLDEN = load_ascii_frames("seplos")


def info(label: str, address: int = 0) -> bytes:
    got = seplos.decode_response(GOLDEN[label], address)
    assert got is not None
    return got


def test_requests_are_the_published_ones() -> None:
    assert seplos.request(seplos.CMD_TELEMETRY, 0) == GOLDEN["request_telemetry_0"]
    assert seplos.request(seplos.CMD_ALARMS, 0) == GOLDEN["request_alarms_0"]
    assert seplos.decode_request(GOLDEN["request_alarms_0"]) == (seplos.CMD_ALARMS, 0)
    assert seplos.decode_response(GOLDEN["request_telemetry_0"], 0) is None  # an echo is not an answer


def test_16s_telemetry_capture() -> None:
    t = seplos.decode_telemetry(info("telemetry_16s"))
    assert t.cell_v == (3.287, 3.305, 3.316, 3.286, 3.311, 3.301, 3.297, 3.292,
                        3.305, 3.312, 3.304, 3.311, 3.306, 3.290, 3.294, 3.288)  # fmt: skip
    assert (min(t.cell_v), t.cell_v.index(min(t.cell_v)) + 1) == (3.286, 4)
    assert (max(t.cell_v), t.cell_v.index(max(t.cell_v)) + 1) == (3.316, 3)
    assert t.temps == pytest.approx((25.1, 24.5, 23.6, 25.1, 25.0, 24.7))
    assert t.current == pytest.approx(-6.76)  # discharging
    assert (t.voltage, t.residual_ah, t.capacity_ah) == (52.80, 133.90, 170.00)
    assert (t.soc, t.rated_ah, t.cycles, t.soh, t.port_voltage) == (0.787, 180.0, 70, 1.0, 52.79)
    # the 6th frame of the same fake-BMS recording: current and residual capacity moved
    t6 = seplos.decode_telemetry(info("telemetry_16s_6"))
    assert (t6.current, t6.voltage, t6.residual_ah, t6.soc) == (-6.95, 52.79, 133.71, 0.786)


def test_15s_telemetry_capture() -> None:
    t = seplos.decode_telemetry(info("telemetry_15s"))
    assert len(t.cell_v) == 15
    assert (t.cell_v[0], t.cell_v[14]) == (3.336, 3.333)
    assert t.temps == pytest.approx((40.1, 39.6, 40.0, 39.5, 39.7, 37.6))
    assert (t.current, t.voltage, t.residual_ah, t.capacity_ah) == (0.0, 50.04, 95.53, 100.0)
    assert (t.soc, t.rated_ah, t.cycles, t.soh, t.port_voltage) == (0.955, 100.0, 258, 1.0, 50.08)


def test_telemetry_from_address_1_with_filled_reserved_words() -> None:
    assert seplos.decode_response(GOLDEN["telemetry_16s_address_1"], 0) is None  # another pack's answer
    t = seplos.decode_telemetry(info("telemetry_16s_address_1", 1))
    assert t.command_group == 1
    assert (min(t.cell_v), max(t.cell_v)) == (3.299, 3.313)
    assert (t.current, t.voltage, t.soc, t.cycles) == (-9.09, 52.93, 0.776, 22)


def test_alarm_capture_and_reading() -> None:
    a = seplos.decode_alarms(info("alarms_15s"))
    assert (a.cells, a.temps, a.current, a.voltage) == ((0,) * 15, (0,) * 6, 0, 0)
    assert (a.events, a.switches, a.balancing, a.system) == ((0,) * 8, 0x03, 0, 0x02)  # both on, charging
    r = seplos.reading(seplos.decode_telemetry(info("telemetry_15s")), a)
    assert r.flags == BmsFlags.CHARGE_FET | BmsFlags.DISCHARGE_FET
    assert r.cell_t == pytest.approx((40.1, 39.6, 40.0, 39.5))  # environment and power go to extra
    assert (r.extra["environment_temp_c"], r.extra["power_temp_c"]) == pytest.approx((39.7, 37.6))
    assert r.soc_reported == 0.955


@pytest.mark.parametrize(
    ("event", "bit", "flag"),
    [
        (0, 0, BmsFlags.ALARM_INTERNAL),  # voltage sensor fault
        (1, 1, BmsFlags.ALARM_CELL_OV),  # monomer overvoltage protection
        (1, 7, BmsFlags.ALARM_CELL_UV),  # total under voltage protection
        (2, 3, BmsFlags.ALARM_UNDERTEMP),  # charge under temperature protection
        (3, 4, BmsFlags.ALARM_OVERTEMP),  # power over temperature protection
        (4, 1, BmsFlags.ALARM_CHARGE_OC),
        (4, 3, BmsFlags.ALARM_DISCHARGE_OC),
        (4, 5, BmsFlags.ALARM_SHORT_CIRCUIT),
    ],
)
def test_protection_bits_become_alarms(event: int, bit: int, flag: BmsFlags) -> None:
    t = seplos.decode_telemetry(info("telemetry_16s"))
    a = seplos.decode_alarms(info("alarms_15s"))
    events = tuple(1 << bit if i == event else 0 for i in range(8))
    r = seplos.reading(t, dataclasses.replace(a, events=events))
    assert flag in r.flags
    warning = tuple(1 if i == 1 else 0 for i in range(8))  # monomer high voltage *alarm*: a warning
    assert seplos.reading(t, dataclasses.replace(a, events=warning)).flags == r.flags & ~flag | (
        BmsFlags.CHARGE_FET | BmsFlags.DISCHARGE_FET
    )


def test_encoder_rebuilds_the_real_frames() -> None:
    t = seplos.decode_telemetry(info("telemetry_16s"))
    assert seplos.encode_telemetry(t, 0) == GOLDEN["telemetry_16s"]
    a = seplos.decode_alarms(info("alarms_15s"))
    frame = seplos.encode_alarms(a, 0)
    got = seplos.decode_alarms(info_of(frame))
    assert got == a


def test_error_rtn_and_garbled_frames_raise_the_codec_error() -> None:
    with pytest.raises(seplos.SeplosDecodeError, match="RTN 0x02"):
        seplos.decode_response(b"~200046020000FDB2\r", 0)
    bad = GOLDEN["telemetry_16s"][:-3] + b"D\r"
    with pytest.raises(seplos.SeplosDecodeError, match="CHKSUM"):
        seplos.decode_response(bad, 0)
    with pytest.raises(seplos.SeplosDecodeError):
        seplos.decode_telemetry(info("alarms_15s"))  # an alarm answer is not telemetry


def test_frame_buffer_cuts_frames_out_of_a_noisy_line() -> None:
    buf = FrameBuffer(seplos.FRAMING)
    # a stray "~" (its "header" is not hex with a valid LCHKSUM) is skipped, not waited on
    buf.feed(b"\x00junk~2" + GOLDEN["telemetry_16s"] + GOLDEN["alarms_15s"][:20])
    assert buf.next() == GOLDEN["telemetry_16s"]
    assert buf.next() is None
    buf.feed(GOLDEN["alarms_15s"][20:])
    assert buf.next() == GOLDEN["alarms_15s"]
    assert (buf.garbage, buf.rejected) == (7, 0)
    bad_lchksum = b"~20004600F096" + b"0" * 150 + b"0000\r"  # LENGTH F096: LCHKSUM should be 1
    buf.feed(bad_lchksum + GOLDEN["alarms_15s"])
    assert buf.next() == GOLDEN["alarms_15s"]


telemetry = st.builds(
    seplos.SeplosTelemetry,
    cell_v=st.lists(st.integers(0, 5000).map(lambda v: v / 1000), min_size=1, max_size=24).map(tuple),
    temps=st.lists(st.integers(-400, 900).map(lambda t: t / 10), max_size=8).map(tuple),
    current=st.integers(-30000, 30000).map(lambda i: i / 100),
    voltage=st.integers(0, 65535).map(lambda v: v / 100),
    residual_ah=st.integers(0, 65535).map(lambda v: v / 100),
    capacity_ah=st.integers(0, 65535).map(lambda v: v / 100),
    soc=st.integers(0, 1000).map(lambda v: v / 1000),
    cycles=st.integers(0, 65535),
    command_group=st.integers(1, 15),
)


@given(telemetry, st.integers(0, 15))
def test_telemetry_round_trip(t: seplos.SeplosTelemetry, address: int) -> None:
    got = seplos.decode_telemetry(info_of(seplos.encode_telemetry(t, address), address))
    assert got == t


@given(st.binary(max_size=300))
def test_random_info_never_raises_anything_but_the_codec_error(data: bytes) -> None:
    for decode in (seplos.decode_telemetry, seplos.decode_alarms):
        with contextlib.suppress(seplos.SeplosDecodeError):
            decode(data)


@given(st.binary(max_size=300) | st.text("~0123456789ABCDEF\r", max_size=200).map(str.encode))
def test_random_frames_never_raise_anything_but_the_codec_error(data: bytes) -> None:
    for call in (lambda: seplos.decode_response(data, 0), lambda: seplos.decode_request(data)):
        with contextlib.suppress(seplos.SeplosDecodeError):
            call()


def info_of(frame: bytes, address: int = 0) -> bytes:
    got = seplos.decode_response(frame, address)
    assert got is not None
    return got
