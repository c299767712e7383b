"""SunSpec image: layout checked against pysunspec2's model definitions; values, fail-safe, writes."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
import sunspec2.device
from fakes import alarm, make_state
from modbus_support import comm_lost, run_pipeline, settings_for

from bmsgw.ems import Command
from bmsgw.inverter import modbus_map, sunspec
from bmsgw.inverter.registers import ModbusError
from bmsgw.inverter.sunspec import (
    BANK,
    BANK_STRING,
    BATTERY,
    BATTERY_ADDR,
    COMMON,
    STRING,
    STRING_MODULE,
    Identity,
    Point,
)
from bmsgw.model import AlarmCode, AlarmLevel, GatewayState

GROUPS = {803: ("NStr", "string", BANK_STRING), 804: ("NMod", "lithium_ion_string_module", STRING_MODULE)}


def offsets(points: Sequence[Point], start: int = 0) -> dict[str, tuple[int, str, int, str | None]]:
    out, off = {}, start
    for p in points:
        out[p.name] = (off, p.type, p.size, p.sf)
        off += p.size
    return out


def spec_points(group: sunspec2.device.Group) -> dict[str, tuple[int, str, int, str | None]]:
    return {name: (p.offset, p.pdef["type"], p.len, p.pdef.get("sf")) for name, p in group.points.items()}


@pytest.mark.parametrize(("model_id", "points"), [(1, COMMON), (802, BATTERY), (803, BANK), (804, STRING)])
def test_layout_matches_the_sunspec_model_definitions(model_id: int, points: Sequence[Point]) -> None:
    """Every point's offset, type, size and scale factor as pysunspec2 reads them from the model JSON."""
    repeats = 3
    data: dict[str, object] = {"ID": model_id}
    if model_id in GROUPS:
        count, name, _ = GROUPS[model_id]
        data |= {count: repeats, name: [{} for _ in range(repeats)]}
    model = sunspec2.device.Model(model_id, data=data)
    assert not model.error_info
    assert offsets(points) == spec_points(model)
    fixed = sum(p.size for p in points)
    length = fixed
    if model_id in GROUPS:
        _, name, group = GROUPS[model_id]
        glen = sum(p.size for p in group)
        for k, g in enumerate(model.groups[name]):
            assert offsets(group, fixed + k * glen) == spec_points(g)
        length += repeats * glen
    assert model.len == length  # ID and L included


def regs_at(image: list[int], address: int, n: int = 1) -> list[int]:
    return image[address - sunspec.BASE : address - sunspec.BASE + n]


def point(image: list[int], model_addr: int, points: Sequence[Point], name: str) -> int:
    """Raw value of a point (32-bit ones high word first)."""
    off, _, size, _ = offsets(points)[name]
    words = regs_at(image, model_addr + off, size)
    return words[0] if size == 1 else words[0] << 16 | words[1]


def s16(x: int) -> int:
    return x - 0x10000 if x >= 0x8000 else x


def scaled(image: list[int], addr: int, points: Sequence[Point], name: str) -> float:
    sf = s16(point(image, addr, points, offsets(points)[name][3] or ""))
    raw = point(image, addr, points, name)
    signed = offsets(points)[name][1] == "int16"
    return (s16(raw) if signed else raw) * 10.0**sf


@pytest.fixture
def state() -> GatewayState:
    return run_pipeline(settings_for(packs=2)).state


def test_image_structure(state: GatewayState) -> None:
    image = sunspec.encode(state, Identity(), Command())
    addr = sunspec.model_addresses(2)
    assert len(image) == sunspec.image_length(2) == addr["end"] + 2 - sunspec.BASE
    assert regs_at(image, sunspec.BASE, 4) == [0x5375, 0x6E53, 1, 66]  # "SunS", model 1, L = 66
    assert regs_at(image, addr["802"], 2) == [802, 62]
    assert regs_at(image, addr["803"], 3) == [803, 26 + 2 * 32, 2]  # NStr = 2
    for i in range(2):
        assert regs_at(image, addr[f"804.{i}"], 4) == [804, 46 + 16, i + 1, 1]  # Idx, NMod
    assert regs_at(image, addr["end"], 2) == [0xFFFF, 0]


def test_battery_values(state: GatewayState) -> None:
    ident = Identity(pack_capacity_ah=(100.0, 110.0), pack_nominal_v=(51.2, 51.2), max_charge_a=100.0)
    image = sunspec.encode(state, ident, Command())
    b = BATTERY_ADDR
    assert scaled(image, b, BATTERY, "SoC") == pytest.approx(state.soc * 100, abs=0.05)
    assert scaled(image, b, BATTERY, "V") == pytest.approx(state.voltage, abs=0.005)
    assert scaled(image, b, BATTERY, "A") == pytest.approx(20.0, abs=0.05)  # two packs at 10 A
    assert scaled(image, b, BATTERY, "W") == pytest.approx(state.voltage * 20.0, rel=0.01)
    assert scaled(image, b, BATTERY, "AChaMax") == pytest.approx(100.0)
    assert scaled(image, b, BATTERY, "ADisChaMax") == pytest.approx(160.0)
    assert scaled(image, b, BATTERY, "AHRtg") == pytest.approx(210.0)
    assert scaled(image, b, BATTERY, "WHRtg") == pytest.approx(210.0 * 51.2, rel=1e-3)
    assert scaled(image, b, BATTERY, "CellVMax") == pytest.approx(3.311, abs=1e-4)
    assert point(image, b, BATTERY, "CellVMaxStr") == 2  # pack 2 holds the highest cell
    assert point(image, b, BATTERY, "ChaSt") == sunspec.ChaSt.CHARGING
    assert point(image, b, BATTERY, "State") == sunspec.BatState.CONNECTED
    assert point(image, b, BATTERY, "Typ") == 4  # LITHIUM_ION
    assert point(image, b, BATTERY, "Evt1") == 0
    assert point(image, b, BATTERY, "LocRemCtl") == 1  # LOCAL: writes are off
    assert point(image, b, BATTERY, "SetOp") == sunspec.SET_OP_CONNECT
    assert point(image, b, BATTERY, "NCyc") == 0xFFFF_FFFF  # not known: not implemented


def test_fail_safe_comm_lost() -> None:
    pipeline = run_pipeline(settings_for(packs=2))
    state = comm_lost(pipeline)
    image = sunspec.encode(state, Identity(), Command())
    b = BATTERY_ADDR
    assert point(image, b, BATTERY, "Evt1") & 1 << sunspec.EVT1_COMMUNICATION_ERROR
    assert point(image, b, BATTERY, "AChaMax") == 0
    assert point(image, b, BATTERY, "ADisChaMax") == 0
    assert point(image, b, BATTERY, "State") == sunspec.BatState.FAULT
    assert point(image, b, BATTERY, "A") == 0
    for i in range(2):
        assert point(image, sunspec.model_addresses(2)[f"804.{i}"], STRING, "Evt1") & 1


def test_scale_factors_grow_with_the_system() -> None:
    small = sunspec.scale_factors(Identity(max_charge_a=100.0, max_discharge_a=100.0))
    big = sunspec.scale_factors(Identity(max_charge_a=16 * 500.0, max_discharge_a=16 * 500.0))
    assert small["A_SF"] == -1
    assert big["A_SF"] == 0  # 16000 A peak does not fit int16 in 0.1 A
    assert big["W_SF"] is not None
    assert small["W_SF"] is not None
    assert big["W_SF"] > small["W_SF"]


def test_writes_to_the_ems_points() -> None:
    base = Command()
    addr = {name: BATTERY_ADDR + off for name, (off, *_) in offsets(BATTERY).items()}
    assert sunspec.decode_write(addr["SoCRsvMin"], [250], base) == Command(reserve_soc=0.25)
    assert sunspec.decode_write(addr["SoCRsvMin"], [0xFFFF], Command(reserve_soc=0.3)) == Command()
    assert sunspec.decode_write(addr["CtrlHb"], [7], base) == Command(heartbeat=7)
    assert sunspec.decode_write(addr["AlmRst"], [1], base) == base
    both = sunspec.decode_write(addr["SetOp"], [2, 3], base)  # SetOp and SetInvState in one write
    assert both == Command(disconnect=True, inverter_state=3)
    assert sunspec.decode_write(addr["SetOp"], [1], Command(disconnect=True)) == Command()


@pytest.mark.parametrize(
    ("name", "values", "error"),
    [
        ("SoCRsvMin", [1001], ModbusError.ILLEGAL_VALUE),
        ("SetOp", [0], ModbusError.ILLEGAL_VALUE),
        ("SetOp", [2, 4], ModbusError.ILLEGAL_VALUE),  # a bad SetInvState spoils the whole write
        ("AlmRst", [2], ModbusError.ILLEGAL_VALUE),
        ("SoC", [500], ModbusError.ILLEGAL_ADDRESS),  # a reading
        ("SocRsvMax", [900], ModbusError.ILLEGAL_ADDRESS),  # writable in the spec, not supported here
        ("SoCRsvMin", [100, 200], ModbusError.ILLEGAL_ADDRESS),  # runs into SoC
        ("ID", [802], ModbusError.ILLEGAL_ADDRESS),
    ],
)
def test_bad_writes_are_refused(name: str, values: list[int], error: ModbusError) -> None:
    address = BATTERY_ADDR + offsets(BATTERY)[name][0]
    assert sunspec.decode_write(address, values, Command()) is error
    assert sunspec.decode_write(sunspec.BASE, [1], Command()) is ModbusError.ILLEGAL_ADDRESS


def test_unknown_values_read_not_implemented() -> None:
    pipeline = run_pipeline(settings_for(packs=1), seconds=0)  # nothing seen yet
    image = sunspec.encode(pipeline.state, Identity(), Command())
    b = BATTERY_ADDR
    assert point(image, b, BATTERY, "SoC") == 0xFFFF
    assert point(image, b, BATTERY, "CellVMax") == 0xFFFF
    assert point(image, b, BATTERY, "State") == sunspec.BatState.INITIALIZING
    assert math.isnan(pipeline.state.soc)


@pytest.mark.parametrize(
    ("code", "level", "bit"),
    [
        (AlarmCode.COMM_LOST, AlarmLevel.ALARM, 0),
        (AlarmCode.OVERTEMPERATURE, AlarmLevel.ALARM, 1),
        (AlarmCode.OVERTEMPERATURE, AlarmLevel.WARNING, 2),
        (AlarmCode.CHARGE_UNDERTEMPERATURE, AlarmLevel.FAULT, 3),
        (AlarmCode.CHARGE_OVERCURRENT, AlarmLevel.WARNING, 6),
        (AlarmCode.DISCHARGE_OVERCURRENT, AlarmLevel.ALARM, 7),
        (AlarmCode.PACK_OVERVOLTAGE, AlarmLevel.ALARM, 9),
        (AlarmCode.CELL_OVERVOLTAGE, AlarmLevel.WARNING, 10),
        (AlarmCode.CELL_UNDERVOLTAGE, AlarmLevel.ALARM, 11),
        (AlarmCode.CELL_IMBALANCE, AlarmLevel.WARNING, 17),
        (AlarmCode.SENSOR_FAULT, AlarmLevel.ALARM, 25),
        (AlarmCode.BMS_FAULT, AlarmLevel.WARNING, 26),
    ],
)
def test_evt1_bits(code: AlarmCode, level: AlarmLevel, bit: int) -> None:
    state = make_state(alarms=(alarm(code, level, pack=0),))
    image = sunspec.encode(state, Identity(), Command())
    assert point(image, BATTERY_ADDR, BATTERY, "Evt1") == 1 << bit
    assert point(image, BATTERY_ADDR, BATTERY, "EvtVnd1") == 1 << modbus_map.ALARM_BITS[code]
    string = sunspec.model_addresses(1)["804.0"]
    assert point(image, string, STRING, "Evt1") & 1 << bit
    fault = point(image, BATTERY_ADDR, BATTERY, "State") == sunspec.BatState.FAULT
    assert fault == (level is AlarmLevel.FAULT or code is AlarmCode.COMM_LOST)
