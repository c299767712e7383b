"""Pylontech LV CAN V1.3 codec: spec-table decoder, the real US5000 V1.3 frames, DBC checks, bus, fuzzing."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from fakes import alarm, lim, make_state
from hypothesis import given, settings
from hypothesis import strategies as st
from lvcan_spec import (
    CORE_DLC,
    MAX_CHARGE,
    MAX_DISCHARGE,
    Core,
    by_id,
    check_lv_dbc,
    check_pairs,
    decode_core,
    gateway_rig,
    output_on_bus,
    states,
)

from bmsgw.inverter import CAN_CODECS, _can_common
from bmsgw.inverter import pylontech_can_v13 as v13
from bmsgw.model import AlarmCode, AlarmLevel, Frame, GatewayState, PackStatus

ORDER = list(CORE_DLC)


def enc(state: GatewayState, **kw: Any) -> Core:
    return decode_core(by_id(v13.encode(state, **kw), CORE_DLC))


# --- the real US5000 V1.3 frames -------------------------------------------------------------------------
#
# New US5000 (Pylontech "V1.3") capture published by setfirelabs.com ("pylontech-battery-can-comms-v1-2-vs-
# v1-3"), copied from /work/shared/reference/protocols.md §5.2.

US5000_V13 = {
    0x351: bytes.fromhex("10 02 C0 12 C0 12 C2 01"),
    0x355: bytes.fromhex("54 00 60 00 00 00"),
    0x356: bytes.fromhex("7B 13 E9 FE 6B 01"),
    0x35A: bytes(8),
    0x35E: b"PYLON   ",
    0x35F: bytes.fromhex("4C 49 01 03 3C 02 AA 00"),
}


@pytest.fixture(scope="module")
def dbc() -> Any:
    return _can_common.load_dbc("pylontech_lv_v13.dbc")


def test_dbc_decodes_us5000_v13_to_published_values(dbc: Any) -> None:
    def dec(fid: int) -> dict[str, Any]:
        return dict(dbc.decode_message(fid, US5000_V13[fid], decode_choices=False))

    assert dec(0x351) == pytest.approx(
        {
            "ChargeVoltage": 52.8,
            "ChargeCurrentLimit": 480.0,
            "DischargeCurrentLimit": 480.0,
            "DischargeVoltage": 45.0,
        }
    )
    assert dec(0x355) == {"SOC": 84, "SOH": 96, "SOCHiRes": 0}
    assert dec(0x356) == pytest.approx(
        {"BatteryVoltage": 49.87, "BatteryCurrent": -27.9, "BatteryTemperature": 36.3}
    )
    pairs = dec(0x35A)
    assert len(pairs) == 28
    assert set(pairs.values()) == {0}
    name = dec(0x35E)
    assert bytes(name[f"ManufacturerName{i}"] for i in range(8)) == b"PYLON   "
    info = dec(0x35F)
    assert info == {
        "BatteryType": int.from_bytes(b"LI", "little"),
        "BmsVersionMajor": 1,
        "BmsVersionMinor": 3,
        "Capacity": 572,
        "ManufacturerId": 0xAA,
    }


def test_spec_decoder_reads_us5000_v13() -> None:
    d = decode_core(US5000_V13)
    assert (d.cvl, d.ccl, d.dcl, d.dvl) == (52.8, 480.0, 480.0, 45.0)
    assert (d.soc, d.soh, d.soc_hires) == (84, 96, 0.0)
    assert (d.voltage, d.current, d.temperature) == (49.87, -27.9, 36.3)
    assert d.active() == set()
    assert (d.battery_type, d.version, d.capacity, d.manufacturer_id) == (0x494C, (1, 3), 572, 0xAA)


def test_reencode_us5000_v13_bytes_exact_where_the_state_allows() -> None:
    state = make_state(
        lim(52.8, 480.0, 480.0, 45.0),
        soc=0.84,
        soh=0.96,
        voltage=49.87,
        current=-27.9,
        temperature=36.3,
        capacity_ah=572,
        statuses=(PackStatus.ONLINE,) * 6,
    )
    frames = {f.id: f.data for f in v13.encode(state)}
    assert frames.keys() == US5000_V13.keys()
    for fid, data in US5000_V13.items():
        if fid == 0x355:
            # The US5000 leaves bytes 4-5 at 0; we send the high-resolution SOC there (84.00 %).
            assert frames[fid][:4] == data[:4]
            assert frames[fid][4:] == (8400).to_bytes(2, "little")
        else:
            assert frames[fid] == data, hex(fid)


# --- field values ----------------------------------------------------------------------------------------


def test_public_constants_and_registry() -> None:
    assert v13.PERIOD_S == 1.0
    assert tuple(ORDER) == v13.FRAME_IDS
    assert v13.KEEPALIVE_ID == 0x305
    codec = CAN_CODECS["pylontech-can-v13"]
    assert (codec.period_s, codec.frame_gap_s) == (1.0, 0.0)
    assert codec.decode_inverter is v13.decode_inverter


def test_frame_order_dlc_and_defaults() -> None:
    frames = v13.encode(make_state(capacity_ah=100.0))
    assert [f.id for f in frames] == ORDER
    assert [len(f.data) for f in frames] == [8, 6, 6, 8, 8, 8]
    d = decode_core(by_id(frames, CORE_DLC))
    assert d.manufacturer == b"PYLON   "
    assert frames[3].data == bytes(8)  # no alarm: every pair 00, as the US5000 sends
    assert (d.battery_type, d.version, d.capacity, d.manufacturer_id) == (0x494C, (1, 3), 100, 0xAA)


def test_limits_all_four_fields() -> None:
    d = enc(make_state(lim(57.6, 123.4, 234.5, 44.8)))
    assert d.raw[0x351] == (576, 1234, 2345, 448)


@pytest.mark.parametrize(("charge", "discharge"), [(False, True), (True, False), (False, False)])
def test_disabled_direction_sends_zero_current_voltages_held(charge: bool, discharge: bool) -> None:
    d = enc(make_state(lim(56.0, 100.0, 150.0, 46.0, charge=charge, discharge=discharge)))
    assert d.ccl == (100.0 if charge else 0.0)
    assert d.dcl == (150.0 if discharge else 0.0)
    assert (d.cvl, d.dvl) == (56.0, 46.0)


@pytest.mark.parametrize(
    ("soc", "soh", "raw"),
    [
        (0.84, 0.96, (84, 96, 8400)),
        (0.12345, 0.886, (12, 89, 1235)),  # half away from zero
        (0.125, 0.375, (13, 38, 1250)),
        (1.3, 2.0, (100, 100, 10000)),  # clamped
        (-0.2, -1.0, (0, 0, 0)),
        (math.nan, math.inf, (0, 100, 0)),
    ],
)
def test_soc_soh_and_hires_soc(soc: float, soh: float, raw: tuple[int, int, int]) -> None:
    assert enc(make_state(soc=soc, soh=soh)).raw[0x355] == raw


@pytest.mark.parametrize(
    ("voltage", "current", "temperature", "raw"),
    [
        (49.87, -27.9, 36.3, (4987, -279, 363)),
        (48.0, -0.05, 0.05, (4800, -1, 1)),
        (1e9, -1e9, math.nan, (32767, -32768, 250)),  # unknown temperature: 25.0 °C
    ],
)
def test_measurements_0x356(voltage: float, current: float, temperature: float, raw: tuple[int, ...]) -> None:
    d = enc(make_state(voltage=voltage, current=current, temperature=temperature))
    assert d.raw[0x356] == raw


@pytest.mark.parametrize(("capacity", "raw"), [(572.0, 572), (99.5, 100), (0.0, 0), (-5.0, 0), (1e9, 65535)])
def test_capacity_0x35f(capacity: float, raw: int) -> None:
    assert enc(make_state(capacity_ah=capacity)).capacity == raw


def test_manufacturer_0x35e() -> None:
    assert enc(make_state(), manufacturer="BatteryEmulator").manufacturer == b"BatteryE"
    assert enc(make_state(), manufacturer="").manufacturer == b" " * 8


# --- 0x35A -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", list(AlarmCode))
@pytest.mark.parametrize("level", list(AlarmLevel))
def test_each_alarm_sets_exactly_its_pairs(code: AlarmCode, level: AlarmLevel) -> None:
    alarms = (alarm(code, level),)
    check_pairs(enc(make_state(alarms=alarms)), alarms, cleared=0)


def test_alarms_accumulate() -> None:
    alarms = (
        alarm(AlarmCode.CELL_OVERVOLTAGE, AlarmLevel.WARNING),
        alarm(AlarmCode.CELL_UNDERVOLTAGE, AlarmLevel.ALARM),
        alarm(AlarmCode.DISCHARGE_OVERCURRENT, AlarmLevel.FAULT),
        alarm(AlarmCode.CELL_IMBALANCE, AlarmLevel.WARNING),
    )
    d = enc(make_state(alarms=alarms))
    assert d.active() == {
        ("warning", "high_voltage"),
        ("alarm", "low_voltage"),
        ("alarm", "high_current"),
        ("alarm", "general"),
        ("warning", "cell_imbalance"),
    }


def test_comm_lost_is_byte0_general_and_byte2_bms_internal() -> None:
    frames = v13.encode(make_state(alarms=(alarm(AlarmCode.COMM_LOST),)))
    assert frames[3].data == bytes((0x01, 0x00, 0x40, 0x00, 0, 0, 0, 0))


# --- DBC -------------------------------------------------------------------------------------------------


def test_dbc_messages(dbc: Any) -> None:
    lengths = {**CORE_DLC, 0x305: 8}
    check_lv_dbc(dbc, lengths, dict.fromkeys(lengths, 1000))


# --- keepalive -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [bytes(8), b"\x21" + bytes(7), b""])
def test_decode_inverter_keepalive(data: bytes) -> None:
    assert v13.decode_inverter(Frame(0x305, data)) == v13.InverterKeepalive(data)
    assert v13.decode_inverter(Frame(0x305, data, extended=True)) is None
    assert v13.decode_inverter(Frame(0x351, data)) is None


@given(fid=st.integers(0, 0x1FFFFFFF), data=st.binary(max_size=64), ext=st.booleans())
def test_decode_inverter_never_raises(fid: int, data: bytes, ext: bool) -> None:
    ka = v13.decode_inverter(Frame(fid, data, ext))
    assert (ka is not None) == (fid == 0x305 and not ext)


# --- fail-safe on a bus ----------------------------------------------------------------------------------


async def test_comm_lost_safe_state_keeps_coming() -> None:
    safe = make_state(
        lim(56.0, 0.0, 0.0, 46.0, charge=False, discharge=False),
        (alarm(AlarmCode.COMM_LOST),),
        statuses=(PackStatus.STALE,),
    )
    async with output_on_bus("pylontech-can-v13", lambda: safe) as (output, inverter):
        await inverter.until(lambda f: f, ORDER, lambda f: inverter.count(0x35F) >= 3)
        d = decode_core(inverter.latest)
        sets = inverter.count(0x351)
        await asyncio.sleep(0.3)
        assert inverter.count(0x351) > sets  # still sending
    assert (d.ccl, d.dcl) == (0.0, 0.0)
    assert (d.cvl, d.dvl) == (56.0, 46.0)
    assert d.active() == {("alarm", "general"), ("alarm", "bms_internal")}
    assert output.sent >= 18


async def test_inverter_keepalive_is_seen() -> None:
    state = make_state()
    async with output_on_bus("pylontech-can-v13", lambda: state) as (output, inverter):
        await inverter.until(lambda f: f, [0x351], lambda f: True)  # the output's bus is open
        await inverter.bus.send(Frame(0x305, bytes(8)))
        await inverter.until(lambda f: f, [0x351], lambda f: output.inverter is not None, within=2.0)
    assert output.inverter == v13.InverterKeepalive(bytes(8))
    assert output.inverter_seen_t is not None


# --- fuzzing ---------------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(state=states(), manufacturer=st.text(max_size=12))
def test_encode_fuzz_fields_in_range(state: GatewayState, manufacturer: str) -> None:
    d = enc(state, manufacturer=manufacturer)
    assert 0 <= d.raw[0x351][0] <= 65535
    assert 0 <= d.raw[0x351][1] <= 32767
    assert 0 <= d.raw[0x351][2] <= 32767
    assert 0 <= d.soc <= 100
    assert 0 <= d.soh <= 100
    assert 0 <= d.soc_hires <= 100
    if not state.limits.charge_enable:
        assert d.ccl == 0.0
    if not state.limits.discharge_enable:
        assert d.dcl == 0.0
    check_pairs(d, state.alarms, cleared=0)
    assert all(c < 0x80 for c in d.manufacturer)
    assert (d.battery_type, d.version, d.manufacturer_id) == (0x494C, (1, 3), 0xAA)


# --- end to end ------------------------------------------------------------------------------------------


async def test_e2e_fake_pack_to_v13_frames_and_link_loss() -> None:
    async with gateway_rig(["pylontech-can-v13"]) as rig:
        inverter = rig.inverters[0]
        d = await inverter.until(decode_core, ORDER, lambda d: d.ccl == MAX_CHARGE and d.dcl == MAX_DISCHARGE)
        assert d.voltage == pytest.approx(16 * 3.30, abs=0.01)
        assert d.current == pytest.approx(10.0, abs=0.1)
        assert d.temperature == pytest.approx(25.0, abs=0.1)
        assert d.soc_hires == pytest.approx(d.soc, abs=0.5)
        assert d.capacity == 100
        assert d.active() == set()
        rig.pack.silent = True
        lost = await inverter.until(
            decode_core, ORDER, lambda d: d.ccl == 0 and d.dcl == 0 and ("alarm", "general") in d.active()
        )
        assert ("alarm", "bms_internal") in lost.active()
        assert lost.cvl > 0
