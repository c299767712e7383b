"""SMA Sunny Island CAN codec: spec-table decoder, ranges and invalid markers, 0x35A pairs, SI frames in,
200 ms frame spacing on a virtual bus, fail-safe, fuzzing, end to end (also beside a Pylontech output)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import math
import struct
from collections.abc import Callable
from typing import Any

import pytest
from fakes import ORDER as PYLON_ORDER
from fakes import Decoded, alarm, decode_pylon, lim, make_state
from hypothesis import given, settings
from hypothesis import strategies as st
from lvcan_spec import (
    CLEARED,
    CORE_DLC,
    MAX_CHARGE,
    MAX_DISCHARGE,
    S16_INVALID,
    U16_INVALID,
    Core,
    by_id,
    check_lv_dbc,
    check_pairs,
    decode_core,
    gateway_rig,
    output_on_bus,
    states,
)
from structlog.testing import capture_logs

from bmsgw import __version__
from bmsgw.inverter import CAN_CODECS, CanCodecError, _can_common
from bmsgw.inverter import sma_can as sma
from bmsgw.model import AlarmCode, AlarmLevel, Frame, GatewayState, PackStatus

ORDER = list(CORE_DLC)
VERSION = tuple(int(x) for x in __version__.split(".")[:2])
SAFE = make_state(
    lim(56.0, 0.0, 0.0, 46.0, charge=False, discharge=False),
    (alarm(AlarmCode.COMM_LOST),),
    statuses=(PackStatus.STALE,),
)


def enc(state: GatewayState, **kw: Any) -> Core:
    return decode_core(by_id(sma.encode(state, **kw), CORE_DLC))


# --- frames out ------------------------------------------------------------------------------------------


def test_public_constants_and_registry() -> None:
    assert tuple(ORDER) == sma.FRAME_IDS
    assert sma.FRAME_GAP_S == 0.2
    assert sma.PERIOD_S == 1.2
    codec = CAN_CODECS["sma-can"]
    assert (codec.period_s, codec.frame_gap_s) == (1.2, 0.2)
    assert codec.decode_inverter is sma.decode_inverter


def test_frame_order_dlc_and_defaults() -> None:
    frames = sma.encode(make_state(capacity_ah=200.0))
    assert [f.id for f in frames] == ORDER
    assert [len(f.data) for f in frames] == [8, 6, 6, 8, 8, 8]
    # No alarm: every mapped pair "cleared" (10), the rest "not supported" (00).
    assert frames[3].data == bytes.fromhex("AA A2 82 02 AA A2 82 02")
    d = decode_core(by_id(frames, CORE_DLC))
    assert d.manufacturer == b"PYLON   "
    # 0x35F: Bat-Type and manufacturer id unused (invalid), BMS version = ours, capacity.
    assert d.raw[0x35F] == (U16_INVALID, *VERSION, 200, U16_INVALID)


def test_limits_in_range_sent_as_is() -> None:
    d = enc(make_state(lim(57.6, 123.4, 234.5, 44.8)))
    assert d.raw[0x351] == (576, 1234, 2345, 448)


@pytest.mark.parametrize(
    ("limits", "raw"),
    [
        # SMA ranges: CVL 41-63 V, CCL/DCL 0-1200 A, DVL 41-48 V; the SI drops anything outside silently.
        ((40.0, 100.0, 100.0, 40.0), (410, 1000, 1000, 410)),
        ((70.0, 2000.0, 5000.0, 50.0), (630, 12000, 12000, 480)),
        ((-1.0, -5.0, -5.0, -1.0), (410, 0, 0, 410)),
        ((math.inf, math.inf, math.inf, math.inf), (630, 12000, 12000, 480)),
    ],
)
def test_limits_clamped_to_sma_ranges(
    limits: tuple[float, float, float, float], raw: tuple[int, ...]
) -> None:
    assert enc(make_state(lim(*limits))).raw[0x351] == raw


@pytest.mark.parametrize(("charge", "discharge"), [(False, True), (True, False), (False, False)])
def test_disabled_direction_sends_zero_current(charge: bool, discharge: bool) -> None:
    d = enc(make_state(lim(56.0, 100.0, 150.0, 46.0, charge=charge, discharge=discharge)))
    assert d.ccl == (100.0 if charge else 0.0)
    assert d.dcl == (150.0 if discharge else 0.0)
    assert (d.cvl, d.dvl) == (56.0, 46.0)


def test_nan_goes_out_as_the_invalid_markers() -> None:
    nan = math.nan
    d = enc(
        make_state(
            lim(nan, nan, nan, nan),
            soc=nan,
            soh=nan,
            voltage=nan,
            current=nan,
            temperature=nan,
            capacity_ah=nan,
        )
    )
    assert d.raw[0x351] == (U16_INVALID, S16_INVALID, S16_INVALID, U16_INVALID)
    assert d.raw[0x355] == (U16_INVALID,) * 3
    assert d.raw[0x356] == (S16_INVALID,) * 3
    assert d.raw[0x35F][3] == U16_INVALID


def test_clamped_values_never_land_on_a_marker() -> None:
    d = enc(make_state(voltage=-1e9, current=-1e9, temperature=-1e9, capacity_ah=1e9))
    assert d.raw[0x356] == (-32767, -32767, -32767)
    assert d.capacity == 65534


@pytest.mark.parametrize(
    ("soc", "soh", "raw"),
    [
        (0.84, 0.96, (84, 96, 8400)),
        (0.12345, 0.886, (12, 89, 1235)),
        (1.3, 2.0, (100, 100, 10000)),
        (-0.2, -1.0, (0, 0, 0)),
    ],
)
def test_soc_soh_and_hires_soc(soc: float, soh: float, raw: tuple[int, int, int]) -> None:
    assert enc(make_state(soc=soc, soh=soh)).raw[0x355] == raw


def test_measurements_0x356_current_positive_charging() -> None:
    d = enc(make_state(voltage=53.12, current=42.5, temperature=-3.25))
    assert d.raw[0x356] == (5312, 425, -33)


# --- 0x35A -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", list(AlarmCode))
@pytest.mark.parametrize("level", list(AlarmLevel))
def test_each_alarm_sets_exactly_its_pairs(code: AlarmCode, level: AlarmLevel) -> None:
    alarms = (alarm(code, level),)
    check_pairs(enc(make_state(alarms=alarms)), alarms, cleared=CLEARED)


def test_alarm_bit_positions() -> None:
    """Spot checks against the SMA table: byte, bit pair and arrive/leave bit."""
    frames = sma.encode(
        make_state(
            alarms=(
                alarm(AlarmCode.CELL_OVERVOLTAGE, AlarmLevel.ALARM),  # byte 0 bits 2-3 → 01
                alarm(AlarmCode.CHARGE_UNDERTEMPERATURE, AlarmLevel.WARNING),  # byte 5 bits 4-5 → 01
                alarm(AlarmCode.CELL_IMBALANCE, AlarmLevel.ALARM),  # byte 3 bits 0-1 → 01
            )
        )
    )
    assert frames[3].data == bytes.fromhex("A6 A2 82 01 AA 92 82 02")


def test_comm_lost_raises_general_and_bms_internal_alarms() -> None:
    d = enc(SAFE)
    assert d.active() == {("alarm", "general"), ("alarm", "bms_internal")}
    assert (d.ccl, d.dcl) == (0.0, 0.0)


# --- DBC -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dbc() -> Any:
    return _can_common.load_dbc("sma.dbc")


def test_dbc_messages(dbc: Any) -> None:
    inbound = {0x305: 8, 0x306: 8, 0x307: 2}
    # Each of our frames repeats every 6 x 200 ms; the SI sends its own every second.
    check_lv_dbc(
        dbc, {**CORE_DLC, **inbound}, {**dict.fromkeys(CORE_DLC, 1200), **dict.fromkeys(inbound, 1000)}
    )


def test_dbc_declares_the_invalid_markers(dbc: Any) -> None:
    invalid = {
        (m.frame_id, s.name): k
        for m in dbc.messages
        for s in m.signals
        for k, v in (s.choices or {}).items()
        if str(v) == "Invalid"
    }
    for fid in (0x351, 0x355, 0x356, 0x35F):
        for s in dbc.get_message_by_frame_id(fid).signals:
            marker = -0x8000 if s.is_signed else (1 << s.length) - 1
            assert invalid[fid, s.name] == marker, s.name


def test_dbc_ranges_match_the_sma_table(dbc: Any) -> None:
    m = {s.name: (s.minimum, s.maximum) for s in dbc.get_message_by_frame_id(0x351).signals}
    assert m == {
        "ChargeVoltage": (41, 63),
        "ChargeCurrentLimit": (0, 1200),
        "DischargeCurrentLimit": (0, 1200),
        "DischargeVoltage": (41, 48),
    }


# --- frames in: 0x305 / 0x306 / 0x307 --------------------------------------------------------------------


def test_decode_0x305_battery() -> None:
    # SI: battery V u16 0.1 V, I s16 0.1 A (negative while charging), T s16 0.1 °C, SOC s16 0.1 %
    data = struct.pack("<Hhhh", 532, -123, 251, 875)
    assert sma.decode_inverter(Frame(0x305, data)) == sma.SiBattery(
        voltage=53.2, current=12.3, temperature=25.1, soc=0.875
    )
    unknown = struct.pack("<Hhhh", U16_INVALID, S16_INVALID, S16_INVALID, S16_INVALID)
    assert sma.decode_inverter(Frame(0x305, unknown)) == sma.SiBattery(None, None, None, None)


def test_decode_0x306_state_and_0x307_relays() -> None:
    # SOH u16 %, charging procedure u8, operating state u8, active error u16, charge V set-point u16 0.1 V
    data = struct.pack("<HBBHH", 97, 2, 3, 0x0123, 560)
    assert sma.decode_inverter(Frame(0x306, data)) == sma.SiState(
        soh=0.97, charging_procedure=2, operating_state=3, active_error=0x123, charge_voltage_setpoint=56.0
    )
    relays = sma.decode_inverter(Frame(0x307, bytes((0x05, 0x01, 0xEE))))
    assert relays == sma.SiRelays(relay_state=0x0105, data=bytes((0x05, 0x01, 0xEE)))


@pytest.mark.parametrize(("fid", "size"), [(0x305, 7), (0x306, 0), (0x307, 1)])
def test_short_inverter_frame_is_a_codec_error(fid: int, size: int) -> None:
    with pytest.raises(CanCodecError):
        sma.decode_inverter(Frame(fid, bytes(size)))


def test_other_frames_are_not_inverter_frames() -> None:
    assert sma.decode_inverter(Frame(0x351, bytes(8))) is None
    assert sma.decode_inverter(Frame(0x305, bytes(8), extended=True)) is None


@given(
    fid=st.sampled_from([0x305, 0x306, 0x307, 0x308, 0x351]), data=st.binary(max_size=16), ext=st.booleans()
)
def test_decode_inverter_random_bytes_only_codec_errors(fid: int, data: bytes, ext: bool) -> None:
    try:
        status = sma.decode_inverter(Frame(fid, data, ext))
    except CanCodecError:
        assert not ext
        assert fid in sma.INVERTER_IDS
        return
    if ext or fid not in sma.INVERTER_IDS:
        assert status is None
    else:
        assert isinstance(status, sma.SiBattery | sma.SiState | sma.SiRelays)


# --- on a bus --------------------------------------------------------------------------------------------


async def test_frames_at_least_200_ms_apart_on_the_bus() -> None:
    state = make_state()
    async with output_on_bus("sma-can", lambda: state, speed=1.0) as (_, inverter):
        await inverter.until(lambda f: f, [0x351], lambda f: inverter.count(0x351) >= 3, within=6.0)
    stamps = inverter.stamps
    assert [i for i, _ in stamps[:12]] == ORDER * 2
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(stamps)]
    assert min(gaps) >= 0.19, gaps  # SMA inhibit time 200 ms (bound generous for timer jitter)
    first = [t for i, t in stamps if i == 0x351]
    assert min(b - a for a, b in itertools.pairwise(first)) >= 1.19  # a set takes 6 × 0.2 s


async def test_fail_safe_comm_lost_keeps_coming() -> None:
    async with output_on_bus("sma-can", lambda: SAFE) as (_, inverter):
        await inverter.until(lambda f: f, ORDER, lambda f: inverter.count(0x35F) >= 2)
        sets = inverter.count(0x351)
        d = decode_core(inverter.latest)
        await asyncio.sleep(0.3)
        assert inverter.count(0x351) > sets
    assert (d.ccl, d.dcl) == (0.0, 0.0)
    assert ("alarm", "general") in d.active()
    assert ("alarm", "bms_internal") in d.active()


async def test_inverter_frames_decoded_and_logged_once() -> None:
    state = make_state()
    with capture_logs() as logs:
        async with output_on_bus("sma-can", lambda: state, speed=20.0) as (output, inverter):
            await inverter.until(lambda f: f, [0x351], lambda f: True)
            assert output.inverter is None
            assert not output.inverter_present
            for _ in range(3):
                await inverter.bus.send(Frame(0x305, struct.pack("<Hhhh", 532, -123, 251, 875)))
                await inverter.bus.send(Frame(0x306, struct.pack("<HBBHH", 97, 2, 3, 0, 560)))
                await inverter.bus.send(Frame(0x307, bytes(2)))
                await inverter.bus.send(Frame(0x305, bytes(3)))  # garbled: counted, dropped
                await asyncio.sleep(0.02)
            await inverter.until(lambda f: f, [0x351], lambda f: output.rx_errors == 3, within=2.0)
            assert output.inverter_present
            assert output.inverter_frames[0x305] == sma.SiBattery(53.2, 12.3, 25.1, 0.875)
            assert isinstance(output.inverter_frames[0x306], sma.SiState)
            assert output.inverter == sma.SiRelays(0, bytes(2))
            seen_t = output.inverter_seen_t
            # Silent for the codec's 10 s timeout (0.5 s wall at speed 20).
            await inverter.until(lambda f: f, [0x351], lambda f: not output.inverter_present, within=3.0)
            await asyncio.sleep(0.3)
    assert output.inverter_seen_t == seen_t
    assert output.received == 12
    events = [e["event"] for e in logs if e["event"].startswith("inverter")]
    assert events == ["inverter seen", "inverter silent"]


async def test_no_inverter_frames_is_fine() -> None:
    state = make_state()
    async with output_on_bus("sma-can", lambda: state) as (output, inverter):
        await inverter.until(lambda f: f, ORDER, lambda f: inverter.count(0x35F) >= 2)
    assert output.inverter is None
    assert output.inverter_seen_t is None
    assert output.sent >= 12


# --- fuzzing ---------------------------------------------------------------------------------------------


def _in_range_or_marker(raw: int, lo: int, hi: int, marker: int, value: float) -> bool:
    if math.isnan(value):
        return raw == marker
    return lo <= raw <= hi


@settings(max_examples=300, deadline=None)
@given(state=states(), manufacturer=st.text(max_size=12))
def test_encode_fuzz_fields_in_range(state: GatewayState, manufacturer: str) -> None:
    d = enc(state, manufacturer=manufacturer)
    lm = state.limits
    cvl, ccl, dcl, dvl = d.raw[0x351]
    assert _in_range_or_marker(cvl, 410, 630, U16_INVALID, lm.cvl.value)
    assert _in_range_or_marker(dvl, 410, 480, U16_INVALID, lm.dvl.value)
    if lm.charge_enable:
        assert _in_range_or_marker(ccl, 0, 12000, S16_INVALID, lm.ccl.value)
    else:
        assert ccl == 0
    if lm.discharge_enable:
        assert _in_range_or_marker(dcl, 0, 12000, S16_INVALID, lm.dcl.value)
    else:
        assert dcl == 0
    soc, soh, hires = d.raw[0x355]
    assert _in_range_or_marker(soc, 0, 100, U16_INVALID, state.soc * 100)
    assert _in_range_or_marker(hires, 0, 10000, U16_INVALID, state.soc * 100)
    assert _in_range_or_marker(soh, 0, 100, U16_INVALID, state.soh * 100)
    volts, amps, temp = d.raw[0x356]
    assert _in_range_or_marker(volts, -32767, 32767, S16_INVALID, state.voltage)
    assert _in_range_or_marker(amps, -32767, 32767, S16_INVALID, state.current)
    if math.isfinite(state.temperature):  # an unknown temperature (NaN, ±inf) is the spec's invalid marker
        assert -32767 <= temp <= 32767
    else:
        assert temp == S16_INVALID
    check_pairs(d, state.alarms, cleared=CLEARED)
    assert all(c < 0x80 for c in d.manufacturer)


# --- end to end ------------------------------------------------------------------------------------------


async def test_e2e_fake_pack_to_sma_frames_with_si_answering() -> None:
    async with gateway_rig(["sma-can"]) as rig:
        inverter = rig.inverters[0]
        d = await inverter.until(decode_core, ORDER, lambda d: d.ccl == MAX_CHARGE and d.dcl == MAX_DISCHARGE)
        assert d.voltage == pytest.approx(16 * 3.30, abs=0.01)
        assert d.current == pytest.approx(10.0, abs=0.1)
        assert d.soc_hires == pytest.approx(d.soc, abs=0.5)
        assert d.capacity == 100
        assert d.active() == set()
        output = rig.gateway.outputs[0]
        await inverter.bus.send(Frame(0x305, struct.pack("<Hhhh", 528, -100, 250, 500)))
        await inverter.until(decode_core, ORDER, lambda d: getattr(output, "inverter", None) is not None)
        assert getattr(output, "inverter", None) == sma.SiBattery(52.8, 10.0, 25.0, 0.5)
        rig.pack.silent = True
        # Frames are 200 ms apart: the alarm pairs may follow the zeroed limits by up to a second.
        lost = await inverter.until(
            decode_core, ORDER, lambda d: d.ccl == 0 and d.dcl == 0 and ("alarm", "general") in d.active()
        )
        assert ("alarm", "bms_internal") in lost.active()
        assert 41.0 <= lost.cvl <= 63.0


async def test_pylontech_and_sma_outputs_agree() -> None:
    async with gateway_rig(["pylontech-can", "sma-can"]) as rig:
        pylon, si = rig.inverters

        def both(_: object) -> tuple[Core, Decoded] | None:
            if not ({*ORDER} <= si.latest.keys() and {*PYLON_ORDER} <= pylon.latest.keys()):
                return None
            return decode_core(si.latest), decode_pylon(pylon.latest)

        def agree(pred: Callable[[Core], bool]) -> Callable[[tuple[Core, Decoded] | None], bool]:
            def check(sp: tuple[Core, Decoded] | None) -> bool:
                if sp is None:
                    return False
                s, p = sp
                return pred(s) and (p.soc, p.ccl, p.dcl) == (s.soc, s.ccl, s.dcl)

            return check

        await si.until(both, [], agree(lambda s: s.ccl == MAX_CHARGE and s.dcl == MAX_DISCHARGE))
        rig.pack.cell_v = rig.pack.cell_v.copy()
        rig.pack.cell_v[5] = 3.70  # cell over-voltage: charging stops on both
        await si.until(both, [], agree(lambda s: s.ccl == 0 and s.dcl == MAX_DISCHARGE))
        rig.pack.silent = True  # link loss: both go to the safe state
        await si.until(both, [], agree(lambda s: s.ccl == 0 and s.dcl == 0))


async def test_a_decoder_bug_is_counted_not_fatal() -> None:
    def broken(frame: Frame) -> object:
        raise KeyError(frame.id)

    state = make_state()
    async with output_on_bus("sma-can", lambda: state) as (output, inverter):
        output.codec = dataclasses.replace(output.codec, decode_inverter=broken)
        await inverter.until(lambda f: f, [0x351], lambda f: True)
        await inverter.bus.send(Frame(0x305, bytes(8)))
        await inverter.until(lambda f: f, [0x351], lambda f: output.rx_errors == 1, within=2.0)
        sent = output.sent
        await inverter.until(lambda f: f, [0x351], lambda f: output.sent > sent + 6)
    assert output.inverter is None
