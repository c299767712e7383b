"""Pylontech LV CAN codec: spec-table decoder, golden US5000 frames, DBC checks, fuzzing."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from importlib import resources
from typing import Any

import cantools
import pytest
from fakes import (
    A_CHC,
    A_COMM,
    A_DHC,
    A_HT,
    A_HV,
    A_LT,
    A_LV,
    DLC,
    ORDER,
    P_COC,
    P_DOC,
    P_OT,
    P_OV,
    P_SYS,
    P_UT,
    P_UV,
    Decoded,
    alarm,
    check_dbc_messages,
    lim,
    make_state,
    spec_decode,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from bmsgw.inverter import pylontech_can as pc
from bmsgw.model import AlarmCode, AlarmLevel, Frame, GatewayState, PackStatus

# Expected (protection bit, warning bit) per code; None = no spec bit.
EXPECTED_BITS: dict[AlarmCode, tuple[tuple[int, int] | None, tuple[int, int] | None]] = {
    AlarmCode.CELL_OVERVOLTAGE: (P_OV, A_HV),
    AlarmCode.PACK_OVERVOLTAGE: (P_OV, A_HV),
    AlarmCode.CELL_UNDERVOLTAGE: (P_UV, A_LV),
    AlarmCode.PACK_UNDERVOLTAGE: (P_UV, A_LV),
    AlarmCode.OVERTEMPERATURE: (P_OT, A_HT),
    AlarmCode.THERMAL_RUNAWAY: (P_OT, A_HT),
    AlarmCode.UNDERTEMPERATURE: (P_UT, A_LT),
    AlarmCode.CHARGE_UNDERTEMPERATURE: (P_UT, A_LT),
    AlarmCode.DISCHARGE_OVERCURRENT: (P_DOC, A_DHC),
    AlarmCode.CHARGE_OVERCURRENT: (P_COC, A_CHC),
    AlarmCode.BMS_FAULT: (P_SYS, None),
    AlarmCode.SENSOR_FAULT: (P_SYS, None),
    AlarmCode.COMM_LOST: (A_COMM, A_COMM),
    AlarmCode.CELL_IMBALANCE: (None, None),
    AlarmCode.PACK_ISOLATED: (None, None),
    AlarmCode.HISTORY_DEGRADED: (None, None),  # operations only: nothing for the inverter
    AlarmCode.STATE_RESET: (None, None),  # operations only: nothing for the inverter
}


def enc(state: GatewayState, **kw: Any) -> Decoded:
    return spec_decode(pc.encode(state, **kw))


# --- field values ----------------------------------------------------------------------------------------


def test_public_constants() -> None:
    assert pc.PERIOD_S == 1.0
    assert pc.MANUFACTURER_MAX == 8
    assert tuple(ORDER) == pc.FRAME_IDS
    assert pc.KEEPALIVE_ID == 0x305


def test_frame_order_dlc_and_defaults() -> None:
    frames = pc.encode(make_state())
    assert [f.id for f in frames] == ORDER
    assert [len(f.data) for f in frames] == [8, 4, 6, 7, 2, 8]
    d = spec_decode(frames)
    assert d.pn == b"PN"
    assert d.modules == 1
    assert d.flags == frozenset()
    assert d.manufacturer == b"PYLON   "
    assert d.request_raw == b"\xc0\x00"


def test_limits_all_four_fields() -> None:
    d = enc(make_state(lim(57.6, 123.4, 234.5, 44.8)))
    assert d.raw[0x351] == (576, 1234, 2345, 448)
    assert (d.cvl, d.ccl, d.dcl, d.dvl) == (57.6, 123.4, 234.5, 44.8)


@pytest.mark.parametrize(("charge", "discharge"), [(False, True), (True, False), (False, False)])
def test_enable_bits_cleared_force_current_limits_zero(charge: bool, discharge: bool) -> None:
    d = enc(make_state(lim(56.0, 100.0, 150.0, 46.0, charge=charge, discharge=discharge)))
    assert d.charge_enable is charge
    assert d.discharge_enable is discharge
    assert d.ccl == (100.0 if charge else 0.0)
    assert d.dcl == (150.0 if discharge else 0.0)
    assert (d.cvl, d.dvl) == (56.0, 46.0)  # voltages untouched


@pytest.mark.parametrize(
    ("kw", "byte0"),
    [
        ({}, 0xC0),
        ({"force_1": True}, 0xE0),
        ({"force_2": True}, 0xD0),
        ({"full": True}, 0xC8),
        ({"charge": False, "discharge": False}, 0x00),
        ({"charge": False, "force_1": True}, 0x60),
        ({"force_1": True, "force_2": True, "full": True}, 0xF8),
    ],
)
def test_request_flags_0x35c(kw: dict[str, bool], byte0: int) -> None:
    d = enc(make_state(lim(**kw)))
    assert d.request_raw == bytes((byte0, 0))


@pytest.mark.parametrize(
    ("voltage", "current", "temperature", "raw"),
    [
        (49.86, -27.0, 36.3, (4986, -270, 363)),
        (52.28, 0.4, 22.0, (5228, 4, 220)),
        (53.1, 150.0, -10.5, (5310, 1500, -105)),
        (48.0, -0.04, -0.04, (4800, 0, 0)),
        (48.0, -0.05, 0.05, (4800, -1, 1)),  # half away from zero
        (0.0, -3000.0, -40.0, (0, -30000, -400)),
    ],
)
def test_measurements_0x356(voltage: float, current: float, temperature: float, raw: tuple[int, ...]) -> None:
    d = enc(make_state(voltage=voltage, current=current, temperature=temperature))
    assert d.raw[0x356] == raw


@pytest.mark.parametrize(
    ("soc", "soh", "raw"),
    [
        (0.88, 0.94, (88, 94)),
        (0.884, 0.886, (88, 89)),
        (0.125, 0.375, (13, 38)),  # x.5 rounds up, not to even
        (0.0, 1.0, (0, 100)),
        (0.996, 0.9951, (100, 100)),
        (1.3, 2.0, (100, 100)),  # clamped, not 130
        (-0.2, -1.0, (0, 0)),  # clamped, not wrapped
        (6.56, 655.37, (100, 100)),  # would wrap a u16 if not clamped
    ],
)
def test_soc_soh_percent_rounding_and_clamping(soc: float, soh: float, raw: tuple[int, int]) -> None:
    assert enc(make_state(soc=soc, soh=soh)).raw[0x355] == raw


def test_module_count_counts_online_packs_only() -> None:
    statuses = (
        PackStatus.ONLINE,
        PackStatus.STALE,
        PackStatus.ONLINE,
        PackStatus.NEVER_SEEN,
        PackStatus.IMPLAUSIBLE,
        PackStatus.FROZEN,
        PackStatus.ONLINE,
    )
    assert enc(make_state(statuses=statuses)).modules == 3
    assert enc(make_state(statuses=())).modules == 0
    assert enc(make_state(statuses=(PackStatus.ONLINE,) * 300)).modules == 255


@pytest.mark.parametrize(
    ("value", "raw351"),
    [
        (1e9, (65535, 32767, 32767, 65535)),  # top of each field, no wrap to negative
        (-1e9, (0, 0, 0, 0)),  # limits are magnitudes: never negative
        (-0.04, (0, 0, 0, 0)),
        (math.inf, (65535, 32767, 32767, 65535)),
        (-math.inf, (0, 0, 0, 0)),
        (math.nan, (0, 0, 0, 0)),
        (3276.7, (32767, 32767, 32767, 32767)),
        (3276.8, (32768, 32767, 32767, 32768)),
    ],
)
def test_limits_clamped_never_wrapped(value: float, raw351: tuple[int, ...]) -> None:
    d = enc(make_state(lim(value, value, value, value)))
    assert d.raw[0x351] == raw351


@pytest.mark.parametrize(
    ("value", "raw356"),
    [
        (1e9, (32767, 32767, 32767)),
        (-1e9, (-32768, -32768, -32768)),
        # an unknown (non-finite) temperature goes out as 25.0 °C (test_unknown_temperature.py)
        (math.inf, (32767, 32767, 250)),
        (-math.inf, (-32768, -32768, 250)),
        (math.nan, (0, 0, 250)),
        (400.0, (32767, 4000, 4000)),
        (-3276.8, (-32768, -32768, -32768)),
    ],
)
def test_measurements_clamped_never_wrapped(value: float, raw356: tuple[int, ...]) -> None:
    d = enc(make_state(voltage=value, current=value, temperature=value))
    assert d.raw[0x356] == raw356


def test_nan_soc_soh() -> None:
    assert enc(make_state(soc=math.nan, soh=math.inf)).raw[0x355] == (0, 100)


@pytest.mark.parametrize(
    ("name", "sent"),
    [
        ("PYLON", b"PYLON   "),
        ("", b" " * 8),
        ("PYLONDIY", b"PYLONDIY"),
        ("BatteryEmulator", b"BatteryE"),
        ("Pylön", b"Pyl?n   "),
    ],
)
def test_manufacturer_0x35e(name: str, sent: bytes) -> None:
    assert enc(make_state(), manufacturer=name).manufacturer == sent


# --- 0x359 alarm mapping ---------------------------------------------------------------------------------


@pytest.mark.parametrize("code", list(AlarmCode))
@pytest.mark.parametrize("level", list(AlarmLevel))
def test_each_alarm_sets_exactly_its_bit(code: AlarmCode, level: AlarmLevel) -> None:
    prot, warn = EXPECTED_BITS[code]
    expected = set()
    bit = warn if level is AlarmLevel.WARNING else prot
    if bit is not None:
        expected.add(bit)
    if level is AlarmLevel.FAULT:
        expected.add(P_SYS)  # any fault-level alarm is a system error
    d = enc(make_state(alarms=(alarm(code, level),)))
    assert d.flags == expected, (code, level)
    # Frame bytes 4-6 untouched by alarms.
    assert (d.modules, d.pn) == (1, b"PN")


def test_overtemperature_is_bit3_only() -> None:
    for level, byte in ((AlarmLevel.ALARM, 0), (AlarmLevel.WARNING, 2)):
        d = enc(make_state(alarms=(alarm(AlarmCode.OVERTEMPERATURE, level),)))
        assert (byte, 3) in d.flags
        assert (byte, 2) not in d.flags  # not under-voltage (BE sets 0x0C)


def test_system_error_is_byte1_bit3() -> None:
    frames = pc.encode(make_state(alarms=(alarm(AlarmCode.BMS_FAULT, AlarmLevel.FAULT),)))
    assert frames[3].data[:4] == b"\x00\x08\x00\x00"


def test_cell_overvoltage_sets_bit1() -> None:
    frames = pc.encode(
        make_state(
            alarms=(
                alarm(AlarmCode.CELL_OVERVOLTAGE, AlarmLevel.ALARM),
                alarm(AlarmCode.CELL_OVERVOLTAGE, AlarmLevel.WARNING),
            )
        )
    )
    assert frames[3].data[:4] == b"\x02\x00\x02\x00"


def test_comm_lost_safe_state() -> None:
    safe = lim(56.0, 0.0, 0.0, 46.0, charge=False, discharge=False)
    d = enc(make_state(safe, (alarm(AlarmCode.COMM_LOST, AlarmLevel.ALARM),), statuses=(PackStatus.STALE,)))
    assert d.flags == {A_COMM}
    assert d.request_raw == b"\x00\x00"
    assert (d.ccl, d.dcl) == (0.0, 0.0)
    assert d.modules == 0


def test_comm_lost_forces_currents_zero_even_if_limits_not_zeroed() -> None:
    stale = lim(56.0, 80.0, 90.0, 46.0, charge=False, discharge=False)
    d = enc(make_state(stale, (alarm(AlarmCode.COMM_LOST, AlarmLevel.WARNING),)))
    assert (d.ccl, d.dcl, d.charge_enable, d.discharge_enable) == (0.0, 0.0, False, False)
    assert d.flags == {A_COMM}


def test_alarms_accumulate_across_codes_and_levels() -> None:
    alarms = (
        alarm(AlarmCode.CELL_OVERVOLTAGE, AlarmLevel.WARNING),
        alarm(AlarmCode.CELL_UNDERVOLTAGE, AlarmLevel.ALARM),
        alarm(AlarmCode.CHARGE_UNDERTEMPERATURE, AlarmLevel.WARNING),
        alarm(AlarmCode.DISCHARGE_OVERCURRENT, AlarmLevel.FAULT),
        alarm(AlarmCode.CHARGE_OVERCURRENT, AlarmLevel.WARNING),
        alarm(AlarmCode.COMM_LOST, AlarmLevel.ALARM),
    )
    assert enc(make_state(alarms=alarms)).flags == {A_HV, P_UV, A_LT, P_DOC, P_SYS, A_CHC, A_COMM}


# --- golden frames ---------------------------------------------------------------------------------------
#
# Old US5000 (Pylon V1.2) capture published by setfirelabs.com ("pylontech-battery-can-comms-v1-2-vs-v1-3"),
# copied from /work/shared/reference/protocols.md §5.2. Extra 0x351/0x356 examples from
# ArminJo/JK-BMSToPylontechCAN JK-BMSToPylontechCAN/Pylontech_CAN.h (commit 27cb0b772c59, frame-id comments).

US5000_V12 = {
    0x351: bytes.fromhex("14 02 C0 12 C0 12 C2 01"),
    0x355: bytes.fromhex("58 00 5E 00"),
    0x356: bytes.fromhex("7A 13 F2 FE 6B 01"),
    0x359: bytes.fromhex("00 00 00 00 06 50 4E"),
    0x35C: bytes.fromhex("C0 00"),
    0x35E: bytes.fromhex("50 59 4C 4F 4E 20 20 20"),
}
ARMINJO_351 = bytes.fromhex("28 02 F4 01 20 03 E0 01")
ARMINJO_356 = bytes.fromhex("6C 14 04 00 DC 00")


@pytest.fixture(scope="module")
def dbc() -> Any:
    text = resources.files("bmsgw").joinpath("dbc/pylontech_lv.dbc").read_text(encoding="ascii")
    return cantools.database.load_string(text, database_format="dbc")


def test_dbc_decodes_golden_us5000(dbc: Any) -> None:
    def dec(fid: int, data: bytes) -> dict[str, Any]:
        return dict(dbc.decode_message(fid, data))

    m351 = dec(0x351, US5000_V12[0x351])
    assert m351 == pytest.approx(
        {
            "ChargeVoltage": 53.2,
            "ChargeCurrentLimit": 480.0,
            "DischargeCurrentLimit": 480.0,
            "DischargeVoltage": 45.0,
        }
    )
    assert dec(0x355, US5000_V12[0x355]) == {"SOC": 88, "SOH": 94}
    assert dec(0x356, US5000_V12[0x356]) == pytest.approx(
        {"BatteryVoltage": 49.86, "BatteryCurrent": -27.0, "BatteryTemperature": 36.3}
    )
    m359 = dec(0x359, US5000_V12[0x359])
    assert m359.pop("ModuleNumbers") == 6
    assert (m359.pop("TokenP"), m359.pop("TokenN")) == (ord("P"), ord("N"))
    assert len(m359) == 14
    assert set(m359.values()) == {0}
    m35c = dec(0x35C, US5000_V12[0x35C])
    assert m35c == {
        "ChargeEnable": 1,
        "DischargeEnable": 1,
        "RequestForceCharge1": 0,
        "RequestForceCharge2": 0,
        "RequestFullCharge": 0,
    }
    m35e = dec(0x35E, US5000_V12[0x35E])
    assert bytes(m35e[f"ManufacturerName{i}"] for i in range(8)) == b"PYLON   "
    assert dec(0x351, ARMINJO_351) == pytest.approx(
        {
            "ChargeVoltage": 55.2,
            "ChargeCurrentLimit": 50.0,
            "DischargeCurrentLimit": 80.0,
            "DischargeVoltage": 48.0,
        }
    )
    assert dec(0x356, ARMINJO_356) == pytest.approx(
        {"BatteryVoltage": 52.28, "BatteryCurrent": 0.4, "BatteryTemperature": 22.0}
    )


def test_dbc_matches_spec_bits(dbc: Any) -> None:
    """Each 0x359/0x35C flag signal alone encodes to the spec bit (DBC checked against the table)."""
    prot_alarm = {
        "ProtCellOverVoltage": P_OV,
        "ProtCellUnderVoltage": P_UV,
        "ProtCellOverTemperature": P_OT,
        "ProtCellUnderTemperature": P_UT,
        "ProtDischargeOverCurrent": P_DOC,
        "ProtChargeOverCurrent": P_COC,
        "ProtSystemError": P_SYS,
        "AlarmCellHighVoltage": A_HV,
        "AlarmCellLowVoltage": A_LV,
        "AlarmCellHighTemperature": A_HT,
        "AlarmCellLowTemperature": A_LT,
        "AlarmDischargeHighCurrent": A_DHC,
        "AlarmChargeHighCurrent": A_CHC,
        "AlarmInternalCommFail": A_COMM,
    }
    m = dbc.get_message_by_frame_id(0x359)
    base = {s.name: 0 for s in m.signals}
    for name, (byte, bit) in prot_alarm.items():
        data = m.encode({**base, name: 1})
        expected = bytearray(7)
        expected[byte] = 1 << bit
        assert data == bytes(expected), name
    m = dbc.get_message_by_frame_id(0x35C)
    base = {s.name: 0 for s in m.signals}
    req = {
        "ChargeEnable": 7,
        "DischargeEnable": 6,
        "RequestForceCharge1": 5,
        "RequestForceCharge2": 4,
        "RequestFullCharge": 3,
    }
    for name, bit in req.items():
        assert m.encode({**base, name: 1}) == bytes((1 << bit, 0)), name


def test_dbc_messages_and_cycle_times(dbc: Any) -> None:
    lengths = {**DLC, 0x305: 8}
    check_dbc_messages(dbc, lengths, dict.fromkeys(lengths, 1000))


def test_spec_decoder_reads_golden_us5000() -> None:
    frames = [Frame(fid, US5000_V12[fid]) for fid in ORDER]
    d = spec_decode(frames)
    assert (d.cvl, d.ccl, d.dcl, d.dvl) == (53.2, 480.0, 480.0, 45.0)
    assert (d.soc, d.soh) == (88, 94)
    assert (d.voltage, d.current, d.temperature) == (49.86, -27.0, 36.3)
    assert (d.flags, d.modules, d.pn) == (frozenset(), 6, b"PN")
    assert (d.charge_enable, d.discharge_enable, d.force_1, d.force_2, d.full_charge) == (
        True,
        True,
        False,
        False,
        False,
    )
    assert d.manufacturer == b"PYLON   "
    assert struct.unpack("<HhhH", ARMINJO_351) == (552, 500, 800, 480)
    assert struct.unpack("<hhh", ARMINJO_356) == (5228, 4, 220)


def test_reencode_golden_us5000_bytes_exact() -> None:
    state = make_state(
        lim(53.2, 480.0, 480.0, 45.0),
        soc=0.88,
        soh=0.94,
        voltage=49.86,
        current=-27.0,
        temperature=36.3,
        statuses=(PackStatus.ONLINE,) * 6,
    )
    frames = pc.encode(state)
    assert {f.id: f.data for f in frames} == US5000_V12
    assert [f.id for f in frames] == ORDER


def test_reencode_arminjo_examples_bytes_exact() -> None:
    state = make_state(lim(55.2, 50.0, 80.0, 48.0), voltage=52.28, current=0.4, temperature=22.0)
    frames = {f.id: f.data for f in pc.encode(state)}
    assert frames[0x351] == ARMINJO_351
    assert frames[0x356] == ARMINJO_356


# --- keepalive -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [bytes(8), b"\x21" + bytes(7), b"", b"\x00", bytes(range(8)), bytes(64)])
def test_decode_inverter_keepalive_any_dlc(data: bytes) -> None:
    ka = pc.decode_inverter(Frame(0x305, data))
    assert ka == pc.InverterKeepalive(data)
    assert ka is not None
    assert ka.data == data


def test_decode_inverter_ignores_other_frames() -> None:
    assert pc.decode_inverter(Frame(0x351, bytes(8))) is None
    assert pc.decode_inverter(Frame(0x306, bytes(8))) is None
    assert pc.decode_inverter(Frame(0x305, bytes(8), extended=True)) is None


def test_keepalive_is_frozen() -> None:
    ka = pc.InverterKeepalive(b"\x00")
    with pytest.raises(AttributeError):
        ka.data = b"\x01"  # type: ignore[misc]


@given(fid=st.integers(0, 0x1FFFFFFF), data=st.binary(max_size=64), ext=st.booleans())
def test_decode_inverter_never_raises(fid: int, data: bytes, ext: bool) -> None:
    ka = pc.decode_inverter(Frame(fid, data, ext))
    if fid == 0x305 and not ext:
        assert ka is not None
        assert ka.data == data
    else:
        assert ka is None


# --- fuzzing ---------------------------------------------------------------------------------------------

wide = st.floats(allow_nan=True, allow_infinity=True, width=64)
moderate = st.floats(-1e6, 1e6, allow_nan=False)
any_float = st.one_of(wide, moderate)


def _expected(value: float, scale: float, lo: int, hi: int) -> float:
    """Value the field should carry (in units of `scale`), for finite input."""
    return min(max(value / scale, lo), hi) * scale


@dataclass(frozen=True)
class Fuzz:
    """Random inputs for one encode() call."""

    cvl: float
    ccl: float
    dcl: float
    dvl: float
    charge: bool
    discharge: bool
    req: tuple[bool, bool, bool]
    soc: float
    soh: float
    voltage: float
    current: float
    temperature: float
    alarms: list[tuple[AlarmCode, AlarmLevel]]
    statuses: list[PackStatus]
    manufacturer: str


fuzz_inputs = st.builds(
    Fuzz,
    cvl=any_float,
    ccl=any_float,
    dcl=any_float,
    dvl=any_float,
    charge=st.booleans(),
    discharge=st.booleans(),
    req=st.tuples(st.booleans(), st.booleans(), st.booleans()),
    soc=any_float,
    soh=any_float,
    voltage=any_float,
    current=any_float,
    temperature=any_float,
    alarms=st.lists(
        st.tuples(st.sampled_from(list(AlarmCode)), st.sampled_from(list(AlarmLevel))), max_size=6
    ),
    statuses=st.lists(st.sampled_from(list(PackStatus)), max_size=20),
    manufacturer=st.text(max_size=12),
)


@settings(max_examples=300, deadline=None)
@given(f=fuzz_inputs)
def test_encode_fuzz_fields_in_range(f: Fuzz) -> None:
    cvl, ccl, dcl, dvl = f.cvl, f.ccl, f.dcl, f.dvl
    charge, discharge, req, alarms = f.charge, f.discharge, f.req, f.alarms
    limits = lim(
        cvl, ccl, dcl, dvl, charge=charge, discharge=discharge, force_1=req[0], force_2=req[1], full=req[2]
    )
    state = make_state(
        limits,
        tuple(alarm(c, lv) for c, lv in alarms),
        soc=f.soc,
        soh=f.soh,
        voltage=f.voltage,
        current=f.current,
        temperature=f.temperature,
        statuses=tuple(f.statuses),
    )
    d = enc(state, manufacturer=f.manufacturer)
    # Ranges (spec types, limits are non-negative magnitudes, SOC/SOH are percentages).
    assert 0.0 <= d.cvl <= 6553.5
    assert 0.0 <= d.dvl <= 6553.5
    assert 0.0 <= d.ccl <= 3276.7
    assert 0.0 <= d.dcl <= 3276.7
    assert 0 <= d.soc <= 100
    assert 0 <= d.soh <= 100
    assert d.modules == min(f.statuses.count(PackStatus.ONLINE), 255)
    assert d.pn == b"PN"
    assert (d.charge_enable, d.discharge_enable) == (charge, discharge)
    assert (d.force_1, d.force_2, d.full_charge) == req
    assert d.request_raw[1] == 0
    if not charge:
        assert d.ccl == 0.0
    if not discharge:
        assert d.dcl == 0.0
    assert all(c < 0x80 for c in d.manufacturer)  # ASCII only
    # Only spec-defined bits ever appear in 0x359.
    spec_bits = {P_OV, P_UV, P_OT, P_UT, P_DOC, P_COC, P_SYS, A_HV, A_LV, A_HT, A_LT, A_DHC, A_CHC, A_COMM}
    assert d.flags <= spec_bits
    assert (P_SYS in d.flags) == any(
        lv is AlarmLevel.FAULT
        or (lv >= AlarmLevel.ALARM and c in {AlarmCode.BMS_FAULT, AlarmCode.SENSOR_FAULT})
        for c, lv in alarms
    )
    assert (A_COMM in d.flags) == any(c is AlarmCode.COMM_LOST for c, _ in alarms)
    # Values: finite inputs land within half a step of the clamped value.
    checks = [
        (cvl, d.cvl, 0.1, 0, 65535),
        (dvl, d.dvl, 0.1, 0, 65535),
        (f.voltage, d.voltage, 0.01, -32768, 32767),
        (f.current, d.current, 0.1, -32768, 32767),
        (f.soc * 100, float(d.soc), 1.0, 0, 100),
        (f.soh * 100, float(d.soh), 1.0, 0, 100),
    ]
    if math.isfinite(f.temperature):
        checks.append((f.temperature, d.temperature, 0.1, -32768, 32767))
    else:
        assert d.temperature == 25.0  # unknown: the neutral default, never 0 °C
    if charge:
        checks.append((ccl, d.ccl, 0.1, 0, 32767))
    if discharge:
        checks.append((dcl, d.dcl, 0.1, 0, 32767))
    for value, got, scale, lo, hi in checks:
        if math.isfinite(value):
            tolerance = scale / 2 + 1e-9 * max(1.0, abs(got))
            assert abs(got - _expected(value, scale, lo, hi)) <= tolerance, (value, got)
        elif math.isnan(value):
            assert round(got / scale) == min(max(0, lo), hi)
        else:
            assert round(got / scale) == (hi if value > 0 else lo)
