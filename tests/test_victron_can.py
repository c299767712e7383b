"""Victron CAN-bus BMS codec: spec-table decoder, never CVL 0, module counts, cell extremes and ids, name,
DBC checks, fail-safe on a bus, fuzzing, end to end."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from fakes import alarm, lim, make_state
from hypothesis import given, settings
from hypothesis import strategies as st
from lvcan_spec import (
    CLEARED,
    CORE_DLC,
    MAX_CHARGE,
    MAX_DISCHARGE,
    U16_INVALID,
    VICTRON_DLC,
    Core,
    VictronExtra,
    by_id,
    check_lv_dbc,
    check_pairs,
    decode_victron,
    gateway_rig,
    output_on_bus,
    states,
)

from bmsgw import __version__
from bmsgw.inverter import CAN_CODECS, _can_common
from bmsgw.inverter import victron_can as vc
from bmsgw.model import AlarmCode, AlarmLevel, CellRef, Frame, GatewayState, PackStatus

ORDER = list(VICTRON_DLC)
VERSION = tuple(int(x) for x in __version__.split(".")[:2])
ONLINE, STALE = PackStatus.ONLINE, PackStatus.STALE


def enc(state: GatewayState, **kw: Any) -> tuple[Core, VictronExtra]:
    return decode_victron(by_id(vc.encode(state, **kw), VICTRON_DLC))


def test_public_constants_and_registry() -> None:
    assert tuple(ORDER) == vc.FRAME_IDS
    assert vc.PERIOD_S == 1.0
    assert vc.NAME_MAX == 16
    codec = CAN_CODECS["victron-can"]
    assert (codec.period_s, codec.frame_gap_s) == (1.0, 0.0)
    assert codec.decode_inverter is vc.decode_inverter


def test_frame_order_dlc_and_defaults() -> None:
    frames = vc.encode(make_state(capacity_ah=280.0))
    assert [f.id for f in frames] == ORDER
    # bms-check's mandatory minimum DLCs: 351 ≥ 8, 355 ≥ 4, 356 ≥ 6, 35A ≥ 8, 35E ≥ 2, 35F ≥ 6.
    minimum = {0x351: 8, 0x355: 4, 0x356: 6, 0x35A: 8, 0x35E: 2, 0x35F: 6}
    assert all(len(f.data) >= minimum.get(f.id, 0) for f in frames)
    d, x = decode_victron(by_id(frames, VICTRON_DLC))
    assert frames[3].data == bytes.fromhex("AA A2 82 02 AA A2 82 02")  # mapped pairs cleared
    assert d.raw[0x35F] == (U16_INVALID, *VERSION, 280, U16_INVALID)
    assert x.name == b"bmsgw" + bytes(11)
    assert x.installed_ah == 280
    assert (x.online, x.blocking_charge, x.blocking_discharge, x.offline) == (1, 0, 0, 0)


# --- 0x351: never CVL 0 ------------------------------------------------------------------------------------


def test_charging_stops_with_ccl_zero_and_cvl_held() -> None:
    d, _ = enc(make_state(lim(55.2, 0.0, 80.0, 46.4, charge=False)))
    assert d.raw[0x351] == (552, 0, 800, 464)


@pytest.mark.parametrize(
    ("cvl", "dvl", "voltage", "sent"),
    [
        (55.2, 46.4, 52.0, 55.2),
        (40.0, 46.4, 52.0, 46.4),  # below DVL: raised to DVL
        (0.0, 46.4, 52.0, 46.4),
        (math.nan, 46.4, 52.0, 46.4),
        (0.0, 0.0, 52.1, 52.1),  # neither positive: the pack voltage
        (math.nan, math.nan, 51.3, 51.3),
        (-5.0, -1.0, 50.0, 50.0),
        (55.2, math.nan, 52.0, 55.2),
        (0.0, 0.03, 50.0, 50.0),  # DVL would go out as 0
        (math.nan, math.nan, math.nan, 0.1),  # nothing known: the DBC floor, still not 0
    ],
)
def test_cvl_never_below_dvl_never_zero(cvl: float, dvl: float, voltage: float, sent: float) -> None:
    state = make_state(lim(cvl, 0.0, 0.0, dvl, charge=False, discharge=False), voltage=voltage)
    if math.isfinite(voltage):
        assert vc.charge_voltage(state.limits, voltage) == pytest.approx(sent)
    d, _ = enc(state)
    assert d.cvl == sent


async def test_core_never_gives_cvl_zero_in_the_safe_state() -> None:
    """The gateway's own safe state (no pack ever seen) keeps a positive CVL on the Victron bus."""
    async with gateway_rig(["victron-can"]) as rig:
        rig.pack.silent = True
        d, _ = await rig.inverters[0].until(decode_victron, ORDER, lambda dx: dx[0].ccl == 0)
        assert d.cvl > 0
        assert d.cvl >= d.dvl
        assert (d.ccl, d.dcl) == (0.0, 0.0)


def test_core_frames_as_sma() -> None:
    d, _ = enc(make_state(lim(57.6, 123.4, 234.5, 44.8), soc=0.4567, soh=0.9, voltage=53.12, current=-42.5))
    assert d.raw[0x351] == (576, 1234, 2345, 448)
    assert d.raw[0x355] == (46, 90, 4567)
    assert d.raw[0x356][:2] == (5312, -425)


# --- 0x35A -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", list(AlarmCode))
@pytest.mark.parametrize("level", list(AlarmLevel))
def test_each_alarm_sets_exactly_its_pairs(code: AlarmCode, level: AlarmLevel) -> None:
    alarms = (alarm(code, level),)
    check_pairs(enc(make_state(alarms=alarms))[0], alarms, cleared=CLEARED)


# --- 0x370-0x379 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "sent"),
    [
        ("bmsgw", b"bmsgw" + bytes(11)),
        ("Garage rack west", b"Garage rack west"),
        ("a very long gateway name", b"a very long gate"),
        ("Bäckerei", b"B?ckerei" + bytes(8)),
    ],
)
def test_name_0x370_0x371(name: str, sent: bytes) -> None:
    assert enc(make_state(), name=name)[1].name == sent


def test_module_counts_0x372() -> None:
    statuses = (ONLINE, ONLINE, STALE, ONLINE, PackStatus.NEVER_SEEN, ONLINE, ONLINE)
    alarms = (
        alarm(AlarmCode.CELL_OVERVOLTAGE, AlarmLevel.ALARM, pack=0),  # blocks charge
        alarm(AlarmCode.CELL_UNDERVOLTAGE, AlarmLevel.ALARM, pack=1),  # blocks discharge
        alarm(AlarmCode.OVERTEMPERATURE, AlarmLevel.ALARM, pack=2),  # offline pack: not counted
        alarm(AlarmCode.BMS_FAULT, AlarmLevel.FAULT, pack=3),  # blocks both
        alarm(AlarmCode.CELL_OVERVOLTAGE, AlarmLevel.WARNING, pack=5),  # warning: blocks nothing
        alarm(AlarmCode.COMM_LOST, AlarmLevel.ALARM),  # system-wide: no module
    )
    # pack 6 asks for its contactor to open: blocks both
    _, x = enc(make_state(alarms=alarms, statuses=statuses, contactor_open=frozenset({6})))
    assert (x.online, x.blocking_charge, x.blocking_discharge, x.offline) == (5, 3, 3, 2)


@pytest.mark.parametrize(
    ("code", "charge", "discharge"),
    [
        (AlarmCode.CELL_OVERVOLTAGE, 1, 0),
        (AlarmCode.PACK_OVERVOLTAGE, 1, 0),
        (AlarmCode.CHARGE_UNDERTEMPERATURE, 1, 0),
        (AlarmCode.CHARGE_OVERCURRENT, 1, 0),
        (AlarmCode.CELL_UNDERVOLTAGE, 0, 1),
        (AlarmCode.PACK_UNDERVOLTAGE, 0, 1),
        (AlarmCode.DISCHARGE_OVERCURRENT, 0, 1),
        (AlarmCode.OVERTEMPERATURE, 1, 1),
        (AlarmCode.UNDERTEMPERATURE, 1, 1),
        (AlarmCode.SENSOR_FAULT, 1, 1),
        (AlarmCode.CELL_IMBALANCE, 0, 0),
    ],
)
def test_which_pack_alarm_blocks_which_direction(code: AlarmCode, charge: int, discharge: int) -> None:
    _, x = enc(make_state(alarms=(alarm(code, AlarmLevel.ALARM, pack=0),)))
    assert (x.blocking_charge, x.blocking_discharge) == (charge, discharge)
    _, fault = enc(make_state(alarms=(alarm(code, AlarmLevel.FAULT, pack=0),)))
    assert (fault.blocking_charge, fault.blocking_discharge) == (1, 1)


def test_cell_extremes_0x373_and_ids_0x374_0x377() -> None:
    state = make_state(
        cell_v=(3.2874, 3.4126),
        cell_v_at=(CellRef(0, 4), CellRef(1, 15)),
        cell_t=(16.4, 18.0),
        cell_t_at=(CellRef(2, 0), CellRef(0, 11)),
    )
    _, x = enc(state)
    assert x.cell_mv == (3287, 3413)
    assert x.temp_k == (290, 291)  # 289.55 K and 291.15 K, rounded
    assert x.ids == (b"p1c05", b"p2c16", b"p3t01", b"p1t12")


def test_unknown_extremes_send_empty_ids() -> None:
    nan = math.nan
    _, x = enc(make_state(cell_v=(nan, nan), cell_t=(nan, nan), statuses=()))
    assert x.ids == (b"", b"", b"", b"")
    assert x.cell_mv == (0, 0)
    assert (x.online, x.offline) == (0, 0)


@pytest.mark.parametrize(("capacity", "raw"), [(280.0, 280), (99.6, 100), (0.0, 0), (1e9, 65535)])
def test_installed_capacity_0x379(capacity: float, raw: int) -> None:
    d, x = enc(make_state(capacity_ah=capacity))
    assert x.installed_ah == raw
    assert d.capacity == min(raw, 65534)  # 0x35F: 0xFFFF is its invalid marker


# --- DBC -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dbc() -> Any:
    return _can_common.load_dbc("victron.dbc")


def test_dbc_messages(dbc: Any) -> None:
    lengths = {**VICTRON_DLC, 0x305: 8}
    check_lv_dbc(dbc, lengths, dict.fromkeys(lengths, 1000))
    m373 = {s.name: (s.start, s.length, s.scale, s.unit) for s in dbc.get_message_by_frame_id(0x373).signals}
    assert m373 == {
        "MinCellVoltage": (0, 16, 0.001, "V"),
        "MaxCellVoltage": (16, 16, 0.001, "V"),
        "MinCellTemperature": (32, 16, 1, "K"),
        "MaxCellTemperature": (48, 16, 1, "K"),
    }


# --- keepalive, fail-safe --------------------------------------------------------------------------------


@given(fid=st.integers(0, 0x7FF), data=st.binary(max_size=16), ext=st.booleans())
def test_decode_inverter_never_raises(fid: int, data: bytes, ext: bool) -> None:
    ka = vc.decode_inverter(Frame(fid, data, ext))
    assert (ka == vc.InverterKeepalive(data)) if (fid == 0x305 and not ext) else ka is None


async def test_fail_safe_comm_lost_keeps_coming() -> None:
    safe = make_state(
        lim(55.2, 0.0, 0.0, 46.4, charge=False, discharge=False),
        (alarm(AlarmCode.COMM_LOST),),
        statuses=(STALE, STALE),
    )
    async with output_on_bus("victron-can", lambda: safe, name="rack") as (output, inverter):
        await inverter.until(lambda f: f, ORDER, lambda f: inverter.count(0x379) >= 3)
        d, x = decode_victron(inverter.latest)
        sets = inverter.count(0x351)
        await inverter.bus.send(Frame(0x305, bytes(8)))
        await asyncio.sleep(0.3)
        assert inverter.count(0x351) > sets
    assert (d.ccl, d.dcl, d.cvl) == (0.0, 0.0, 55.2)
    assert d.active() == {("alarm", "general"), ("alarm", "bms_internal")}
    assert (x.online, x.offline) == (0, 2)
    assert x.name == b"rack" + bytes(12)
    assert output.inverter == vc.InverterKeepalive(bytes(8))


# --- fuzzing ---------------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(state=states(), name=st.text(max_size=40))
def test_encode_fuzz_fields_in_range(state: GatewayState, name: str) -> None:
    d, x = enc(state, name=name)
    lm = state.limits
    cvl, _, _, dvl = d.raw[0x351]
    assert cvl > 0  # never CVL 0, whatever the state
    if not math.isinf(lm.dvl.value):
        assert cvl >= dvl  # never below DVL
    assert 0 <= d.soc <= 100
    assert 0 <= d.soc_hires <= 100
    if not lm.charge_enable:
        assert d.ccl == 0.0
    check_pairs(d, state.alarms, cleared=CLEARED)
    online = sum(p.status is ONLINE for p in state.packs)
    assert (x.online, x.offline) == (online, len(state.packs) - online)
    assert 0 <= x.blocking_charge <= online
    assert 0 <= x.blocking_discharge <= online
    assert all(c < 0x80 for c in x.name)
    for text in x.ids:
        assert text == b"" or text.startswith(b"p")


# --- end to end ------------------------------------------------------------------------------------------


async def test_e2e_fake_pack_to_victron_frames() -> None:
    async with gateway_rig(["victron-can"], name="shed battery") as rig:
        inverter = rig.inverters[0]
        d, x = await inverter.until(
            decode_victron, ORDER, lambda dx: (dx[0].ccl, dx[0].dcl) == (MAX_CHARGE, MAX_DISCHARGE)
        )
        assert d.voltage == pytest.approx(16 * 3.30, abs=0.01)
        assert x.name == b"shed battery" + bytes(4)
        assert (x.online, x.blocking_charge, x.blocking_discharge, x.offline) == (1, 0, 0, 0)
        assert x.cell_mv == (3300, 3300)
        assert x.temp_k == (298, 298)
        assert x.installed_ah == 100
        rig.pack.cell_v = rig.pack.cell_v.copy()
        rig.pack.cell_v[5] = 3.70
        d, x = await inverter.until(
            decode_victron,
            ORDER,
            lambda dx: ("alarm", "high_voltage") in dx[0].active() and dx[1].blocking_charge,
        )
        assert d.ccl == 0
        assert d.cvl > 0
        assert x.cell_mv[1] == 3700
        assert x.ids[1] == b"p1c06"
        assert (x.blocking_charge, x.blocking_discharge) == (1, 0)


def test_core_dlc_shared_with_sma() -> None:
    assert all(VICTRON_DLC[i] == n for i, n in CORE_DLC.items())
