"""SunSpec register image of a GatewayState: "SunS", models 1, 802, 803, one 804 per pack, end marker.

Written from the SunSpec model definitions (model_1/802/803/804.json of sunspec/models; point names below are
the spec's). The image starts at 40000 (Modbus address, 0-based). One pack = one 804 string of one module.

- 1 common: Mn/Md/SN/Vr from the Identity, DA = unit id.
- 802 battery: ratings, SoC/SoH/DoD, ChaSt, State, Evt1 from the alarms (COMM_LOST → COMMUNICATION_ERROR),
  V/A/W, AChaMax = CCL and ADisChaMax = DCL as sent to inverters (0 when that direction is disabled),
  cell extremes, and the EMS points SoCRsvMin (reserve SOC), CtrlHb, AlmRst, SetOp, SetInvState.
  EvtVnd1 carries bmsgw's own alarm bits (modbus_map.ALARM_BITS).
- 803 lithium-ion bank: string count and statistics, one `string` group per pack.
- 804 lithium-ion string per pack, with one `lithium_ion_string_module` group.

Values that bmsgw does not know read as the type's not-implemented marker (0xFFFF, 0x8000, 0xFFFFFFFF).
An unknown temperature (a pack without sensors) is one of them: ModTmp*/ModCellTmp* read 0x8000 (int16 not
implemented) and their location points 0xFFFF, as the spec defines, rather than a made-up temperature.
Scale factors are fixed per Identity, chosen so the largest expected value fits its register.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Final, Literal, NamedTuple

from bmsgw.core.balancing import balancing_mask
from bmsgw.ems import Command
from bmsgw.inverter.modbus_map import PackStats, alarm_bits, reserve_from_register
from bmsgw.inverter.registers import Kind, ModbusError, encode_string
from bmsgw.inverter.registers import encode as encode_value
from bmsgw.model import Alarm, AlarmCode, AlarmLevel, BmsFlags, GatewayState, PackStatus, PackView, Reason

__all__ = [
    "BANK_ADDR",
    "BASE",
    "BATTERY",
    "BATTERY_ADDR",
    "COMMON",
    "COMMON_ADDR",
    "Identity",
    "Point",
    "decode_write",
    "encode",
    "image_length",
    "model_addresses",
    "scale_factors",
]

BASE: Final = 40000
"""Address of the "SunS" marker (Modbus address, 0-based; mbpoll's 1-based reference 40001)."""

PointType = Literal[
    "uint16", "int16", "enum16", "bitfield16", "uint32", "bitfield32", "sunssf", "pad", "string"
]


class Point(NamedTuple):
    """A SunSpec point: name, type, size in registers, and the scale-factor point that applies (if any)."""

    name: str
    type: PointType
    size: int = 1
    sf: str | None = None


def _p(name: str, type_: PointType = "uint16", sf: str | None = None) -> Point:
    return Point(name, type_, 2 if type_ in ("uint32", "bitfield32") else 1, sf)


COMMON: Final = (
    _p("ID"), _p("L"),
    Point("Mn", "string", 16), Point("Md", "string", 16), Point("Opt", "string", 8),
    Point("Vr", "string", 8), Point("SN", "string", 16),
    _p("DA"), _p("Pad", "pad"),
)  # fmt: skip
"""Model 1 (common), L = 66."""

BATTERY: Final = (
    _p("ID"), _p("L"),
    _p("AHRtg", sf="AHRtg_SF"), _p("WHRtg", sf="WHRtg_SF"),
    _p("WChaRteMax", sf="WChaDisChaMax_SF"), _p("WDisChaRteMax", sf="WChaDisChaMax_SF"),
    _p("DisChaRte", sf="DisChaRte_SF"),
    _p("SoCMax", sf="SoC_SF"), _p("SoCMin", sf="SoC_SF"),
    _p("SocRsvMax", sf="SoC_SF"), _p("SoCRsvMin", sf="SoC_SF"),
    _p("SoC", sf="SoC_SF"), _p("DoD", sf="DoD_SF"), _p("SoH", sf="SoH_SF"),
    _p("NCyc", "uint32"), _p("ChaSt", "enum16"), _p("LocRemCtl", "enum16"),
    _p("Hb"), _p("CtrlHb"), _p("AlmRst"), _p("Typ", "enum16"), _p("State", "enum16"),
    _p("StateVnd", "enum16"), _p("WarrDt", "uint32"),
    _p("Evt1", "bitfield32"), _p("Evt2", "bitfield32"),
    _p("EvtVnd1", "bitfield32"), _p("EvtVnd2", "bitfield32"),
    _p("V", sf="V_SF"), _p("VMax", sf="V_SF"), _p("VMin", sf="V_SF"),
    _p("CellVMax", sf="CellV_SF"), _p("CellVMaxStr"), _p("CellVMaxMod"),
    _p("CellVMin", sf="CellV_SF"), _p("CellVMinStr"), _p("CellVMinMod"),
    _p("CellVAvg", sf="CellV_SF"),
    _p("A", "int16", "A_SF"), _p("AChaMax", sf="AMax_SF"), _p("ADisChaMax", sf="AMax_SF"),
    _p("W", "int16", "W_SF"),
    _p("ReqInvState", "enum16"), _p("ReqW", "int16", "W_SF"),
    _p("SetOp", "enum16"), _p("SetInvState", "enum16"),
    _p("AHRtg_SF", "sunssf"), _p("WHRtg_SF", "sunssf"), _p("WChaDisChaMax_SF", "sunssf"),
    _p("DisChaRte_SF", "sunssf"), _p("SoC_SF", "sunssf"), _p("DoD_SF", "sunssf"), _p("SoH_SF", "sunssf"),
    _p("V_SF", "sunssf"), _p("CellV_SF", "sunssf"), _p("A_SF", "sunssf"), _p("AMax_SF", "sunssf"),
    _p("W_SF", "sunssf"),
)  # fmt: skip
"""Model 802 (battery base), L = 62."""

BANK: Final = (
    _p("ID"), _p("L"), _p("NStr"), _p("NStrCon"),
    _p("ModTmpMax", "int16", "ModTmp_SF"), _p("ModTmpMaxStr"), _p("ModTmpMaxMod"),
    _p("ModTmpMin", "int16", "ModTmp_SF"), _p("ModTmpMinStr"), _p("ModTmpMinMod"),
    _p("ModTmpAvg", "int16", "ModTmp_SF"),
    _p("StrVMax", sf="V_SF"), _p("StrVMaxStr"), _p("StrVMin", sf="V_SF"), _p("StrVMinStr"),
    _p("StrVAvg", sf="V_SF"),
    _p("StrAMax", "int16", "A_SF"), _p("StrAMaxStr"), _p("StrAMin", "int16", "A_SF"), _p("StrAMinStr"),
    _p("StrAAvg", "int16", "A_SF"),
    _p("NCellBal"),
    _p("CellV_SF", "sunssf"), _p("ModTmp_SF", "sunssf"), _p("A_SF", "sunssf"), _p("SoH_SF", "sunssf"),
    _p("SoC_SF", "sunssf"), _p("V_SF", "sunssf"),
)  # fmt: skip
"""Model 803 (lithium-ion bank), fixed part; followed by NStr `string` groups."""

BANK_STRING: Final = (
    _p("StrNMod"), _p("StrSt", "bitfield32"), _p("StrConFail", "enum16"),
    _p("StrSoC", sf="SoC_SF"), _p("StrSoH", sf="SoH_SF"), _p("StrA", "int16", "A_SF"),
    _p("StrCellVMax", sf="CellV_SF"), _p("StrCellVMaxMod"), _p("StrCellVMin", sf="CellV_SF"),
    _p("StrCellVMinMod"), _p("StrCellVAvg", sf="CellV_SF"),
    _p("StrModTmpMax", "int16", "ModTmp_SF"), _p("StrModTmpMaxMod"),
    _p("StrModTmpMin", "int16", "ModTmp_SF"), _p("StrModTmpMinMod"),
    _p("StrModTmpAvg", "int16", "ModTmp_SF"),
    _p("StrDisRsn", "enum16"), _p("StrConSt", "bitfield32"),
    _p("StrEvt1", "bitfield32"), _p("StrEvt2", "bitfield32"),
    _p("StrEvtVnd1", "bitfield32"), _p("StrEvtVnd2", "bitfield32"),
    _p("StrSetEna", "enum16"), _p("StrSetCon", "enum16"), _p("Pad1", "pad"), _p("Pad2", "pad"),
)  # fmt: skip
"""Model 803 repeating group `string` (one per pack)."""

STRING: Final = (
    _p("ID"), _p("L"), _p("Idx"), _p("NMod"), _p("St", "bitfield32"), _p("ConFail", "enum16"),
    _p("NCellBal"), _p("SoC", sf="SoC_SF"), _p("DoD", sf="DoD_SF"), _p("NCyc", "uint32"),
    _p("SoH", sf="SoH_SF"), _p("A", "int16", "A_SF"), _p("V", sf="V_SF"),
    _p("CellVMax", sf="CellV_SF"), _p("CellVMaxMod"), _p("CellVMin", sf="CellV_SF"), _p("CellVMinMod"),
    _p("CellVAvg", sf="CellV_SF"),
    _p("ModTmpMax", "int16", "ModTmp_SF"), _p("ModTmpMaxMod"),
    _p("ModTmpMin", "int16", "ModTmp_SF"), _p("ModTmpMinMod"),
    _p("ModTmpAvg", "int16", "ModTmp_SF"), _p("Pad1", "pad"),
    _p("ConSt", "bitfield32"), _p("Evt1", "bitfield32"), _p("Evt2", "bitfield32"),
    _p("EvtVnd1", "bitfield32"), _p("EvtVnd2", "bitfield32"),
    _p("SetEna", "enum16"), _p("SetCon", "enum16"),
    _p("SoC_SF", "sunssf"), _p("SoH_SF", "sunssf"), _p("DoD_SF", "sunssf"), _p("A_SF", "sunssf"),
    _p("V_SF", "sunssf"), _p("CellV_SF", "sunssf"), _p("ModTmp_SF", "sunssf"),
    _p("Pad2", "pad"), _p("Pad3", "pad"), _p("Pad4", "pad"),
)  # fmt: skip
"""Model 804 (lithium-ion string), fixed part; followed by NMod module groups."""

STRING_MODULE: Final = (
    _p("ModNCell"), _p("ModSoC", sf="SoC_SF"), _p("ModSoH", sf="SoH_SF"),
    _p("ModCellVMax", sf="CellV_SF"), _p("ModCellVMaxCell"), _p("ModCellVMin", sf="CellV_SF"),
    _p("ModCellVMinCell"), _p("ModCellVAvg", sf="CellV_SF"),
    _p("ModCellTmpMax", "int16", "ModTmp_SF"), _p("ModCellTmpMaxCell"),
    _p("ModCellTmpMin", "int16", "ModTmp_SF"), _p("ModCellTmpMinCell"),
    _p("ModCellTmpAvg", "int16", "ModTmp_SF"),
    _p("Pad5", "pad"), _p("Pad6", "pad"), _p("Pad7", "pad"),
)  # fmt: skip
"""Model 804 repeating group `lithium_ion_string_module` (one: the pack)."""


def _offsets(points: Sequence[Point]) -> dict[str, int]:
    out, off = {}, 0
    for p in points:
        out[p.name] = off
        off += p.size
    return out


def _size(points: Sequence[Point]) -> int:
    return sum(p.size for p in points)


COMMON_ADDR: Final = BASE + 2
BATTERY_ADDR: Final = COMMON_ADDR + _size(COMMON)
BANK_ADDR: Final = BATTERY_ADDR + _size(BATTERY)
_B: Final = _offsets(BATTERY)
_TYP_LITHIUM_ION: Final = 4


class ChaSt:
    """802 ChaSt enumeration."""

    OFF, EMPTY, DISCHARGING, CHARGING, FULL, HOLDING, TESTING = 1, 2, 3, 4, 5, 6, 7


class BatState:
    """802 State enumeration."""

    DISCONNECTED, INITIALIZING, CONNECTED, STANDBY, SOC_PROTECTION, SUSPENDING, FAULT = 1, 2, 3, 4, 5, 6, 99


SET_OP_CONNECT, SET_OP_DISCONNECT = 1, 2
IDLE_A: Final = 0.5
"""|current| below this reads as neither charging nor discharging (ChaSt)."""

# Evt1 bits (802, and StrEvt1/Evt1 of 803/804): alarm code → (bit at ALARM/FAULT level, bit at WARNING level).
EVT1_COMMUNICATION_ERROR: Final = 0
_EVT1: Final[dict[AlarmCode, tuple[int, int]]] = {
    AlarmCode.COMM_LOST: (0, 0),  # COMMUNICATION_ERROR
    AlarmCode.OVERTEMPERATURE: (1, 2),  # OVER_TEMP_ALARM / _WARNING
    AlarmCode.THERMAL_RUNAWAY: (1, 2),
    AlarmCode.UNDERTEMPERATURE: (3, 4),  # UNDER_TEMP_ALARM / _WARNING
    AlarmCode.CHARGE_UNDERTEMPERATURE: (3, 4),
    AlarmCode.CHARGE_OVERCURRENT: (5, 6),  # OVER_CHARGE_CURRENT_ALARM / _WARNING
    AlarmCode.DISCHARGE_OVERCURRENT: (7, 8),  # OVER_DISCHARGE_CURRENT_ALARM / _WARNING
    AlarmCode.CELL_OVERVOLTAGE: (9, 10),  # OVER_VOLT_ALARM / _WARNING
    AlarmCode.PACK_OVERVOLTAGE: (9, 10),
    AlarmCode.CELL_UNDERVOLTAGE: (11, 12),  # UNDER_VOLT_ALARM / _WARNING
    AlarmCode.PACK_UNDERVOLTAGE: (11, 12),
    AlarmCode.CELL_IMBALANCE: (17, 17),  # VOLTAGE_IMBALANCE_WARNING
    AlarmCode.SENSOR_FAULT: (25, 26),  # OTHER_ALARM / OTHER_WARNING
    AlarmCode.BMS_FAULT: (25, 26),
}


@dataclass(frozen=True, slots=True)
class Identity:
    """Static facts of the image: common-model strings, ratings (sizing the scale factors), control mode."""

    serial: str = "bmsgw"
    manufacturer: str = "bmsgw"
    model: str = "bmsgw"
    version: str = ""
    options: str = ""
    unit_id: int = 1
    pack_capacity_ah: tuple[float, ...] = (100.0,)
    pack_nominal_v: tuple[float, ...] = (51.2,)
    max_charge_a: float = 100.0  # whole system
    max_discharge_a: float = 100.0
    remote_control: bool = False  # EMS writes accepted (LocRemCtl REMOTE)


def model_addresses(packs: int) -> dict[str, int]:
    """Address of each model's ID register ("1", "802", "803", "804.<i>") and of the end marker ("end")."""
    out = {"1": COMMON_ADDR, "802": BATTERY_ADDR, "803": BANK_ADDR}
    addr = BANK_ADDR + _size(BANK) + packs * _size(BANK_STRING)
    for i in range(packs):
        out[f"804.{i}"] = addr
        addr += _size(STRING) + _size(STRING_MODULE)
    out["end"] = addr
    return out


def image_length(packs: int) -> int:
    """Registers from BASE through the end marker."""
    return model_addresses(packs)["end"] + 2 - BASE


def scale_factors(ident: Identity) -> dict[str, int | None]:
    """Every *_SF point's value for `ident` (None: not implemented)."""
    v_nom = max(ident.pack_nominal_v, default=0.0)
    a_peak = 2.0 * max(ident.max_charge_a, ident.max_discharge_a)  # headroom for over-current readings
    a_sf = _fit(a_peak, -1, 0x7FFF)
    return {
        "AHRtg_SF": _fit(sum(ident.pack_capacity_ah), 0, 0xFFFE),
        "WHRtg_SF": _fit(_rated_wh(ident), 0, 0xFFFE),
        "WChaDisChaMax_SF": _fit(max(ident.max_charge_a, ident.max_discharge_a) * v_nom, 0, 0xFFFE),
        "DisChaRte_SF": None,
        "SoC_SF": -1,
        "DoD_SF": -1,
        "SoH_SF": -1,
        "V_SF": -2,
        "CellV_SF": -3,
        "A_SF": a_sf,
        "AMax_SF": a_sf,
        "W_SF": _fit(a_peak * v_nom * 1.2, 0, 0x7FFF),
        "ModTmp_SF": -1,
    }


def encode(
    state: GatewayState, ident: Identity, cmd: Command, stats: Sequence[PackStats | None] | None = None
) -> list[int]:
    """The image from BASE: "SunS", 1, 802, 803, 804 × packs, 0xFFFF/0 (`stats`: PackStats.of per pack)."""
    st = list(stats) if stats is not None else [PackStats.of(v) for v in state.packs]
    sfs = scale_factors(ident)
    regs = [0x5375, 0x6E53]  # "SunS"
    regs += _model(1, COMMON, _common(ident), sfs)
    regs += _model(802, BATTERY, _battery(state, ident, cmd, st), sfs)
    strings = [_bank_string(state, v, s) for v, s in zip(state.packs, st, strict=True)]
    regs += _model(803, BANK, _bank(state), sfs, BANK_STRING, strings)
    for view, s in zip(state.packs, st, strict=True):
        regs += _model(804, STRING, _string(state, view, s), sfs, STRING_MODULE, [_module(view, s)])
    return [*regs, 0xFFFF, 0]


def decode_write(address: int, values: Sequence[int], cmd: Command) -> Command | ModbusError:
    """A write into the image → the new command; ILLEGAL_ADDRESS unless every register is a supported
    writable 802 point (SoCRsvMin, CtrlHb, AlmRst, SetOp, SetInvState), ILLEGAL_VALUE for a value out of
    its range. Nothing changes on an error.
    """
    names = {off: name for name, off in _B.items()}
    points = [names.get(address + i - BATTERY_ADDR) for i in range(len(values))]
    if not values or any(p not in _WRITABLE for p in points):
        return ModbusError.ILLEGAL_ADDRESS
    for name, raw in zip(points, values, strict=True):
        if not 0 <= raw <= 0xFFFF:
            return ModbusError.ILLEGAL_VALUE
        if name == "SoCRsvMin":
            reserve = reserve_from_register(raw)
            if isinstance(reserve, ModbusError):
                return reserve
            cmd = replace(cmd, reserve_soc=reserve)
        elif name == "CtrlHb":
            cmd = replace(cmd, heartbeat=raw)
        elif name == "AlmRst":  # bmsgw's alarms are not latched: a reset request changes nothing
            if raw > 1:
                return ModbusError.ILLEGAL_VALUE
        elif name == "SetOp":
            if raw not in (SET_OP_CONNECT, SET_OP_DISCONNECT):
                return ModbusError.ILLEGAL_VALUE
            cmd = replace(cmd, disconnect=raw == SET_OP_DISCONNECT)
        else:  # SetInvState: INVERTER_STOPPED 1, INVERTER_STANDBY 2, INVERTER_STARTED 3
            if not 1 <= raw <= 3:
                return ModbusError.ILLEGAL_VALUE
            cmd = replace(cmd, inverter_state=raw)
    return cmd


_WRITABLE: Final = frozenset({"SoCRsvMin", "CtrlHb", "AlmRst", "SetOp", "SetInvState"})

# --- values of each model, in SunSpec units (%, V, A, W, Ah, Wh, °C); None = not implemented ----------

Values = dict[str, float | str | None]


def _common(ident: Identity) -> Values:
    return {
        "Mn": ident.manufacturer,
        "Md": ident.model,
        "Opt": ident.options,
        "Vr": ident.version,
        "SN": ident.serial,
        "DA": ident.unit_id,
    }


def _battery(state: GatewayState, ident: Identity, cmd: Command, stats: list[PackStats | None]) -> Values:
    lim = state.limits
    online = [(v, s) for v, s in zip(state.packs, stats, strict=True) if v.status is PackStatus.ONLINE]
    volts = [v.sample.voltage for v, _ in online if v.sample is not None]
    v_nom = max(ident.pack_nominal_v, default=0.0)
    return {
        "AHRtg": sum(ident.pack_capacity_ah),
        "WHRtg": _rated_wh(ident),
        "WChaRteMax": ident.max_charge_a * v_nom,
        "WDisChaRteMax": ident.max_discharge_a * v_nom,
        "SoCRsvMin": None if cmd.reserve_soc is None else cmd.reserve_soc * 100.0,
        "SoC": state.soc * 100.0,
        "DoD": (1.0 - state.soc) * 100.0,
        "SoH": state.soh * 100.0,
        "ChaSt": _cha_st(state),
        "LocRemCtl": 0 if ident.remote_control else 1,  # REMOTE / LOCAL
        "Hb": _heartbeat(state.t),
        "CtrlHb": cmd.heartbeat,
        "AlmRst": 0,
        "Typ": _TYP_LITHIUM_ION,
        "State": _state(state, cmd),
        "Evt1": _evt1(state.alarms),
        "Evt2": 0,
        "EvtVnd1": alarm_bits(state.alarms),
        "EvtVnd2": 0,
        "V": state.voltage if state.packs and _shown(state) else None,
        "VMax": max(volts, default=None),
        "VMin": min(volts, default=None),
        "CellVMax": state.cell_v_max,
        "CellVMaxStr": _index(state.cell_v_max_at.pack, state.cell_v_max),
        "CellVMaxMod": _index(0, state.cell_v_max),
        "CellVMin": state.cell_v_min,
        "CellVMinStr": _index(state.cell_v_min_at.pack, state.cell_v_min),
        "CellVMinMod": _index(0, state.cell_v_min),
        "CellVAvg": _cell_v_avg([(v, s) for v, s in online]),
        "A": state.current,
        "AChaMax": lim.ccl.value if lim.charge_enable else 0.0,
        "ADisChaMax": lim.dcl.value if lim.discharge_enable else 0.0,
        "W": state.voltage * state.current,
        "ReqInvState": 0,  # NO REQUEST
        "SetOp": SET_OP_DISCONNECT if cmd.disconnect else SET_OP_CONNECT,
        "SetInvState": cmd.inverter_state,
    }


def _bank(state: GatewayState) -> Values:
    online = [v for v in state.packs if v.status is PackStatus.ONLINE and v.sample is not None]
    by_v = sorted(online, key=lambda v: v.sample.voltage if v.sample else 0.0)
    by_a = sorted(online, key=lambda v: v.sample.current if v.sample else 0.0)
    out: Values = {
        "NStr": len(state.packs),
        "NStrCon": sum(1 for v in online if v.sample and v.sample.flags & BmsFlags.CONTACTOR_CLOSED),
        "ModTmpMax": state.cell_t_max,
        "ModTmpMaxStr": _index(state.cell_t_max_at.pack, state.cell_t_max),
        "ModTmpMaxMod": _index(0, state.cell_t_max),
        "ModTmpMin": state.cell_t_min,
        "ModTmpMinStr": _index(state.cell_t_min_at.pack, state.cell_t_min),
        "ModTmpMinMod": _index(0, state.cell_t_min),
        "ModTmpAvg": state.temperature,
        "NCellBal": sum(balancing_mask(state, v).bit_count() for v in state.packs),
    }
    if by_v and by_a:
        samples = [v.sample for v in online if v.sample is not None]
        out |= {
            "StrVMax": by_v[-1].sample.voltage if by_v[-1].sample else None,
            "StrVMaxStr": by_v[-1].pack + 1,
            "StrVMin": by_v[0].sample.voltage if by_v[0].sample else None,
            "StrVMinStr": by_v[0].pack + 1,
            "StrVAvg": sum(s.voltage for s in samples) / len(samples),
            "StrAMax": by_a[-1].sample.current if by_a[-1].sample else None,
            "StrAMaxStr": by_a[-1].pack + 1,
            "StrAMin": by_a[0].sample.current if by_a[0].sample else None,
            "StrAMinStr": by_a[0].pack + 1,
            "StrAAvg": sum(s.current for s in samples) / len(samples),
        }
    return out


def _bank_string(state: GatewayState, view: PackView, st: PackStats | None) -> Values:
    s = _string(state, view, st)
    return {"StrNMod": 1, "StrEvt2": 0, "StrEvtVnd2": 0, **{f"Str{k}": s.get(k) for k in _STRING_IN_BANK}}


_STRING_IN_BANK: Final = (
    "St", "SoC", "SoH", "A", "CellVMax", "CellVMaxMod", "CellVMin", "CellVMinMod", "CellVAvg",
    "ModTmpMax", "ModTmpMaxMod", "ModTmpMin", "ModTmpMinMod", "ModTmpAvg", "ConSt", "Evt1", "EvtVnd1",
)  # fmt: skip
"""804 points repeated in the 803 string group as Str<name>."""


def _string(state: GatewayState, view: PackView, st: PackStats | None) -> Values:
    smp = view.sample
    mine = [a for a in state.alarms if a.pack in (None, view.pack)]
    evt1 = _evt1(mine)
    if view.status in (PackStatus.STALE, PackStatus.NEVER_SEEN):
        evt1 |= 1 << EVT1_COMMUNICATION_ERROR
    closed = smp is not None and bool(smp.flags & BmsFlags.CONTACTOR_CLOSED)
    out: Values = {
        "Idx": view.pack + 1,
        "NMod": 1,
        "St": (1 if view.in_service else 0) | (2 if closed else 0),  # ENABLED (not held out), CONTACTOR
        "NCellBal": balancing_mask(state, view).bit_count(),
        "SoC": view.soc * 100.0,
        "DoD": (1.0 - view.soc) * 100.0,
        "SoH": view.soh * 100.0,
        "ConSt": None if smp is None else int(closed),  # CONTACTOR_0
        "Evt1": evt1,
        "Evt2": 0,
        "EvtVnd1": alarm_bits(a for a in mine if a.pack == view.pack),
        "EvtVnd2": 0,
    }
    if smp is not None:
        out |= {"A": smp.current, "V": smp.voltage}
    if st is not None:
        out |= {
            "CellVMax": st.v_max,
            "CellVMaxMod": 1,
            "CellVMin": st.v_min,
            "CellVMinMod": 1,
            "CellVAvg": st.v_avg,
            "ModTmpMax": st.t_max,
            "ModTmpMaxMod": 1,
            "ModTmpMin": st.t_min,
            "ModTmpMinMod": 1,
            "ModTmpAvg": st.t_avg,
        }
    return out


def _module(view: PackView, st: PackStats | None) -> Values:
    out: Values = {
        "ModNCell": view.sample.cell_v.size if view.sample is not None else None,
        "ModSoC": view.soc * 100.0,
        "ModSoH": view.soh * 100.0,
    }
    if st is not None:
        out |= {
            "ModCellVMax": st.v_max,
            "ModCellVMaxCell": st.v_max_cell + 1,
            "ModCellVMin": st.v_min,
            "ModCellVMinCell": st.v_min_cell + 1,
            "ModCellVAvg": st.v_avg,
            "ModCellTmpMax": st.t_max,
            "ModCellTmpMaxCell": _index(st.t_max_sensor, st.t_max),
            "ModCellTmpMin": st.t_min,
            "ModCellTmpMinCell": _index(st.t_min_sensor, st.t_min),
            "ModCellTmpAvg": st.t_avg,
        }
    return out


# --- helpers --------------------------------------------------------------------------------------------

_KIND: Final[dict[str, Kind]] = {
    "uint16": "u16",
    "enum16": "u16",
    "int16": "s16",
    "sunssf": "s16",
    "pad": "s16",  # pads read 0x8000
    "bitfield16": "b16",
    "bitfield32": "b32",
    "uint32": "u32",
}


def _model(
    model_id: int,
    points: Sequence[Point],
    values: Values,
    sfs: dict[str, int | None],
    group: Sequence[Point] = (),
    repeats: Iterable[Values] = (),
) -> list[int]:
    """One model's registers: ID, L (filled in), its points, then `group` once per entry of `repeats`."""
    body = _points(points[2:], values, sfs)
    for rep in repeats:
        body += _points(group, rep, sfs)
    return [model_id, len(body), *body]


def _points(points: Sequence[Point], values: Values, sfs: dict[str, int | None]) -> list[int]:
    out: list[int] = []
    for p in points:
        if p.type == "string":
            v = values.get(p.name)
            out += encode_string(v if isinstance(v, str) else "", p.size)
            continue
        value = sfs.get(p.name) if p.type == "sunssf" else values.get(p.name)
        exponent = sfs.get(p.sf) if p.sf is not None else 0
        if exponent is None or isinstance(value, str):  # no scale factor: the value cannot be stated
            value = None
        out += encode_value(value, _KIND[p.type], exponent or 0)
    return out


def _fit(peak: float, exponent: int, limit: int) -> int:
    """The smallest exponent ≥ `exponent` at which `peak` fits in `limit` raw counts."""
    while peak / 10.0**exponent > limit and exponent < 10:
        exponent += 1
    return exponent


def _rated_wh(ident: Identity) -> float:
    return sum(c * v for c, v in zip(ident.pack_capacity_ah, ident.pack_nominal_v, strict=False))


def _heartbeat(t: float) -> int | None:
    return int(t) % 0xFFFF if math.isfinite(t) else None


def _shown(state: GatewayState) -> bool:
    return any(v.sample is not None for v in state.packs)


def _index(zero_based: int, value: float) -> int | None:
    """A 1-based index, or None where there is no value."""
    return None if math.isnan(value) else zero_based + 1


def _cell_v_avg(packs: list[tuple[PackView, PackStats | None]]) -> float | None:
    weighted = [(s.v_avg, v.sample.cell_v.size) for v, s in packs if s is not None and v.sample is not None]
    n = sum(w for _, w in weighted)
    return sum(a * w for a, w in weighted) / n if n else None


def _evt1(alarms: Iterable[Alarm]) -> int:
    out = 0
    for a in alarms:
        bits = _EVT1.get(a.code)
        if bits is not None:
            out |= 1 << (bits[1] if a.level is AlarmLevel.WARNING else bits[0])
    return out


def _cha_st(state: GatewayState) -> int:
    lim = state.limits
    if not state.usable:
        return ChaSt.OFF
    if state.current > IDLE_A:
        return ChaSt.CHARGING
    if state.current < -IDLE_A:
        return ChaSt.DISCHARGING
    if lim.ccl.reason is Reason.SOC_FULL:
        return ChaSt.FULL
    if lim.dcl.reason is Reason.SOC_EMPTY:
        return ChaSt.EMPTY
    return ChaSt.HOLDING


def _state(state: GatewayState, cmd: Command) -> int:
    if state.alarm_level(AlarmCode.COMM_LOST) is not None or any(
        a.level is AlarmLevel.FAULT for a in state.alarms
    ):
        return BatState.FAULT
    if not state.usable:
        return BatState.INITIALIZING
    if cmd.disconnect:
        return BatState.DISCONNECTED
    if state.limits.dcl.value == 0 and state.limits.dcl.reason is Reason.SOC_EMPTY:
        return BatState.SOC_PROTECTION
    return BatState.CONNECTED
