"""The bmsgw Modbus register map for EMS integrators (docs/modbus-map.md): GatewayState ↔ 16-bit registers.

One address space, readable with FC3 and FC4 alike:

- status block at 0 (read-only): SOC, SOH, V, A, W, limits and their reasons, flags, alarms, extremes;
- one block per pack at 100 + 20·i (read-only);
- control block at 1000 (read/write, only when the output has `writes = true`): EMS commands
  (bmsgw/ems.py), which can only tighten the core's limits and expire without a heartbeat.

Unknown values read as the not-implemented marker of their type (0xFFFF, 0x8000, 0xFFFFFFFF, 0x80000000).
That includes an unknown temperature (a pack without sensors): this is our own documented map, so readers
get the marker, never a made-up value (the [[outputs]] key unknown_temperature_c does not apply).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Final, NamedTuple

import numpy as np

from bmsgw.core.balancing import balancing_mask
from bmsgw.ems import Command
from bmsgw.inverter.registers import Kind, ModbusError, bits, encode
from bmsgw.model import Alarm, AlarmCode, CellRef, GatewayState, PackStatus, PackView, Reason

__all__ = [
    "ALARM_BITS",
    "CONTROL",
    "CONTROL_BASE",
    "MAP_VERSION",
    "PACK",
    "PACK_BASE",
    "PACK_STATUS_CODES",
    "PACK_STRIDE",
    "REASON_CODES",
    "STATUS",
    "STATUS_BASE",
    "PackStats",
    "Reg",
    "alarm_bits",
    "decode_write",
    "encode_control",
    "encode_pack",
    "encode_status",
    "reserve_from_register",
]

MAP_VERSION: Final = 1
STATUS_BASE: Final = 0
PACK_BASE: Final = 100
PACK_STRIDE: Final = 20
CONTROL_BASE: Final = 1000


class Reg(NamedTuple):
    """One documented value: offset in its block, name, type, value = raw · 10**exponent in `unit`."""

    offset: int
    name: str
    kind: Kind
    exponent: int
    unit: str
    meaning: str

    @property
    def size(self) -> int:
        """Registers it occupies."""
        return 2 if self.kind in ("u32", "s32", "b32") else 1


STATUS: Final = (
    Reg(0, "map_version", "u16", 0, "", f"layout version of this map ({MAP_VERSION})"),
    Reg(1, "heartbeat", "u16", 0, "s", "gateway seconds, counts up once a second (wraps after 65534)"),
    Reg(2, "soc", "u16", -1, "%", "state of charge"),
    Reg(3, "soh", "u16", -1, "%", "state of health"),
    Reg(4, "voltage", "u16", -2, "V", "battery voltage"),
    Reg(5, "current", "s16", -1, "A", "battery current, > 0 charging"),
    Reg(6, "power", "s32", 0, "W", "battery power (V·A), > 0 charging"),
    Reg(8, "temperature", "s16", -1, "°C", "average cell temperature"),
    Reg(9, "cvl", "u16", -1, "V", "charge voltage limit"),
    Reg(10, "ccl", "u16", -1, "A", "charge current limit as sent to inverters (0 when charging is disabled)"),
    Reg(11, "dcl", "u16", -1, "A", "discharge current limit (0 when discharging is disabled)"),
    Reg(12, "dvl", "u16", -1, "V", "discharge voltage limit"),
    Reg(13, "cvl_reason", "u16", 0, "code", "what bound CVL (reason codes below)"),
    Reg(14, "ccl_reason", "u16", 0, "code", "what bound CCL"),
    Reg(15, "dcl_reason", "u16", 0, "code", "what bound DCL"),
    Reg(16, "dvl_reason", "u16", 0, "code", "what bound DVL"),
    Reg(17, "flags", "b16", 0, "bits", "status flags (bits below)"),
    Reg(18, "alarms", "b32", 0, "bits", "active alarms at any level (alarm bits below)"),
    Reg(20, "alarm_level", "u16", 0, "code", "highest active level: 0 none, 1 warning, 2 alarm, 3 fault"),
    Reg(21, "cell_v_min", "u16", -3, "V", "lowest cell voltage"),
    Reg(22, "cell_v_max", "u16", -3, "V", "highest cell voltage"),
    Reg(23, "cell_v_min_at", "u16", 0, "pack·256+cell", "where the lowest cell is (both 1-based)"),
    Reg(24, "cell_v_max_at", "u16", 0, "pack·256+cell", "where the highest cell is (both 1-based)"),
    Reg(25, "cell_t_min", "s16", -1, "°C", "lowest cell temperature"),
    Reg(26, "cell_t_max", "s16", -1, "°C", "highest cell temperature"),
    Reg(27, "capacity_ah", "u16", 0, "Ah", "capacity of the packs in use"),
    Reg(28, "packs", "u16", 0, "", "packs configured (blocks at 100 + 20·i)"),
    Reg(29, "packs_online", "u16", 0, "", "packs in use"),
    Reg(30, "control_remaining", "u16", 0, "s", "seconds until EMS commands expire (0: none in force)"),
    Reg(31, "time_to_empty", "u16", 0, "min", "forecast time to the reserve SOC; 65534: beyond the horizon"),
    Reg(32, "time_to_full", "u16", 0, "min", "forecast time to full; 65534: beyond the horizon"),
)
"""Status block at STATUS_BASE (read-only)."""

PACK: Final = (
    Reg(0, "status", "u16", 0, "code", "0 online, 1 never seen, 2 stale, 3 implausible, 4 frozen"),
    Reg(1, "soc", "u16", -1, "%", "pack state of charge"),
    Reg(2, "soh", "u16", -1, "%", "pack state of health"),
    Reg(3, "voltage", "u16", -2, "V", "pack voltage"),
    Reg(4, "current", "s16", -1, "A", "pack current, > 0 charging"),
    Reg(5, "cell_v_min", "u16", -3, "V", "lowest cell voltage"),
    Reg(6, "cell_v_max", "u16", -3, "V", "highest cell voltage"),
    Reg(7, "cell_v_min_cell", "u16", 0, "", "which cell is lowest (1-based)"),
    Reg(8, "cell_v_max_cell", "u16", 0, "", "which cell is highest (1-based)"),
    Reg(9, "cell_t_min", "s16", -1, "°C", "lowest temperature sensor"),
    Reg(10, "cell_t_max", "s16", -1, "°C", "highest temperature sensor"),
    Reg(11, "bms_flags", "b16", 0, "bits", "flags the pack BMS reports (docs/pack-protocol.md PackStatus)"),
    Reg(12, "balance_mask", "b32", 0, "bits", "cells being balanced, bled or in a transfer (bit 0 = cell 1)"),
    Reg(14, "alarms", "b32", 0, "bits", "active alarms of this pack (alarm bits below)"),
    Reg(16, "contactor_open_request", "u16", 0, "", "1: the core asks to open this pack's contactor"),
    Reg(17, "cells", "u16", 0, "", "cells in series"),
    Reg(18, "age", "u16", 0, "s", "seconds since the newest sample"),
    Reg(19, "capacity_ah", "u16", 0, "Ah", "configured capacity"),
)
"""Per-pack block at PACK_BASE + PACK_STRIDE · i (read-only)."""

CONTROL: Final = (
    Reg(0, "control_heartbeat", "u16", 0, "", "write any value to keep commands alive; reads the last value"),
    Reg(1, "reserve_soc", "u16", -1, "%", "DCL → 0 at/below this SOC; 0..1000, 0xFFFF = none"),
    Reg(2, "charge_current_cap", "u16", -1, "A", "CCL at most this; 0..65534, 0xFFFF = none"),
    Reg(3, "discharge_current_cap", "u16", -1, "A", "DCL at most this; 0..65534, 0xFFFF = none"),
    Reg(4, "force_charge", "u16", 0, "", "1: request force charge (Pylontech 0x35C bit 5); 0..1"),
    Reg(5, "disconnect", "u16", 0, "", "1: CCL = DCL = 0 and both enables off; 0..1"),
)
"""Control block at CONTROL_BASE (read/write; see docs/modbus-map.md for the write policy)."""

REASON_CODES: Final[dict[Reason, int]] = {
    Reason.CONFIG: 0,
    Reason.CELL_VOLTAGE_HIGH: 1,
    Reason.CELL_VOLTAGE_LOW: 2,
    Reason.CELL_OVERVOLTAGE: 3,
    Reason.CELL_UNDERVOLTAGE: 4,
    Reason.TEMPERATURE_HIGH: 5,
    Reason.TEMPERATURE_LOW: 6,
    Reason.OVERTEMPERATURE: 7,
    Reason.UNDERTEMPERATURE: 8,
    Reason.COLD_CHARGE: 9,
    Reason.OVERCURRENT: 10,
    Reason.SOC_FULL: 11,
    Reason.SOC_EMPTY: 12,
    Reason.BMS_REQUEST: 13,
    Reason.FAULT: 14,
    Reason.COMM_LOST: 15,
    Reason.RECOVERY: 16,
    Reason.PACK_VOLTAGE: 17,
    Reason.EMS: 18,
    Reason.RESERVE: 19,
    Reason.SCHEDULE: 20,
    Reason.CELL_IMBALANCE: 21,
    Reason.SENSOR_FAULT: 22,
    Reason.THERMAL_RUNAWAY: 23,
}
"""Stable numbers of the limit reasons (a reason added later gets the next number)."""

ALARM_BITS: Final[dict[AlarmCode, int]] = {
    AlarmCode.COMM_LOST: 0,
    AlarmCode.SENSOR_FAULT: 1,
    AlarmCode.CELL_OVERVOLTAGE: 2,
    AlarmCode.CELL_UNDERVOLTAGE: 3,
    AlarmCode.OVERTEMPERATURE: 4,
    AlarmCode.UNDERTEMPERATURE: 5,
    AlarmCode.CHARGE_UNDERTEMPERATURE: 6,
    AlarmCode.CHARGE_OVERCURRENT: 7,
    AlarmCode.DISCHARGE_OVERCURRENT: 8,
    AlarmCode.PACK_OVERVOLTAGE: 9,
    AlarmCode.PACK_UNDERVOLTAGE: 10,
    AlarmCode.CELL_IMBALANCE: 11,
    AlarmCode.BMS_FAULT: 12,
    AlarmCode.PACK_ISOLATED: 13,
    AlarmCode.HISTORY_DEGRADED: 14,
    AlarmCode.THERMAL_RUNAWAY: 15,
    AlarmCode.STATE_RESET: 16,
}
"""Bit of each alarm code in the `alarms` registers (also SunSpec EvtVnd1)."""

PACK_STATUS_CODES: Final[dict[PackStatus, int]] = {
    PackStatus.ONLINE: 0,
    PackStatus.NEVER_SEEN: 1,
    PackStatus.STALE: 2,
    PackStatus.IMPLAUSIBLE: 3,
    PackStatus.FROZEN: 4,
}

# Status `flags` bits.
F_CHARGE_ENABLE, F_DISCHARGE_ENABLE, F_FORCE_1, F_FORCE_2, F_FULL_CHARGE = 0, 1, 2, 3, 4
F_USABLE, F_EMS_ACTIVE, F_WRITES = 5, 6, 7

_NONE: Final = 0xFFFF  # "no command" in the control block
_RESERVE_MAX: Final = 1000  # 100.0 %


@dataclass(frozen=True, slots=True)
class PackStats:
    """Cell extremes and averages of one sample (indices 0-based); temperatures NaN (index -1) without a
    live sensor."""

    v_min: float
    v_max: float
    v_min_cell: int
    v_max_cell: int
    v_avg: float
    t_min: float
    t_max: float
    t_min_sensor: int
    t_max_sensor: int
    t_avg: float

    @classmethod
    def of(cls, view: PackView) -> PackStats | None:
        """Stats of the pack's newest sample, None before the first one."""
        s = view.sample
        if s is None or s.cell_v.size == 0:
            return None
        v = s.cell_v
        iv, jv = int(np.argmin(v)), int(np.argmax(v))
        t = np.where(np.isfinite(s.cell_t), s.cell_t, np.nan)
        if np.isnan(t).all():  # no sensors, or none alive
            t_stats: tuple[float, float, int, int, float] = (math.nan, math.nan, -1, -1, math.nan)
        else:
            it, jt = int(np.nanargmin(t)), int(np.nanargmax(t))
            t_stats = (float(t[it]), float(t[jt]), it, jt, float(np.nanmean(t)))
        return cls(float(v[iv]), float(v[jv]), iv, jv, float(np.mean(v)), *t_stats)


def encode_status(state: GatewayState, cmd: Command, remaining_s: float, writes: bool) -> list[int]:
    """The status block for `state` (`cmd`/`remaining_s`: the EMS command in force and its time left)."""
    lim = state.limits
    usable = state.usable
    flags = bits(
        bit
        for bit, on in (
            (F_CHARGE_ENABLE, lim.charge_enable),
            (F_DISCHARGE_ENABLE, lim.discharge_enable),
            (F_FORCE_1, lim.force_charge_1),
            (F_FORCE_2, lim.force_charge_2),
            (F_FULL_CHARGE, lim.full_charge_request),
            (F_USABLE, usable),
            (F_EMS_ACTIVE, cmd.active),
            (F_WRITES, writes),
        )
        if on
    )
    levels = [a.level for a in state.alarms]
    values: dict[str, float | None] = {
        "map_version": MAP_VERSION,
        "heartbeat": int(state.t) % 0xFFFF if math.isfinite(state.t) else None,
        "soc": _pct(state.soc),
        "soh": _pct(state.soh),
        "voltage": state.voltage,
        "current": state.current,
        "power": state.voltage * state.current,
        "temperature": state.temperature,
        "cvl": lim.cvl.value,
        "ccl": lim.ccl.value if lim.charge_enable else 0.0,
        "dcl": lim.dcl.value if lim.discharge_enable else 0.0,
        "dvl": lim.dvl.value,
        "cvl_reason": REASON_CODES.get(lim.cvl.reason),
        "ccl_reason": REASON_CODES.get(lim.ccl.reason),
        "dcl_reason": REASON_CODES.get(lim.dcl.reason),
        "dvl_reason": REASON_CODES.get(lim.dvl.reason),
        "flags": flags,
        "alarms": alarm_bits(state.alarms),
        "alarm_level": int(max(levels)) if levels else 0,
        "cell_v_min": state.cell_v_min,
        "cell_v_max": state.cell_v_max,
        "cell_v_min_at": _where(state.cell_v_min_at, state.cell_v_min),
        "cell_v_max_at": _where(state.cell_v_max_at, state.cell_v_max),
        "cell_t_min": state.cell_t_min,
        "cell_t_max": state.cell_t_max,
        "capacity_ah": state.capacity_ah,
        "packs": len(state.packs),
        "packs_online": state.modules_online,
        "control_remaining": math.ceil(remaining_s),
    }
    if (fc := state.forecast) is not None:
        values |= {"time_to_empty": fc.time_to_empty_s / 60.0, "time_to_full": fc.time_to_full_s / 60.0}
    return _serialize(STATUS, values)


def encode_pack(
    view: PackView, state: GatewayState, t: float, capacity_ah: float, stats: PackStats | None = None
) -> list[int]:
    """The block of one pack of `state` at gateway time t."""
    s = view.sample
    st = stats if stats is not None else PackStats.of(view)
    values: dict[str, float | None] = {
        "status": PACK_STATUS_CODES.get(view.status),
        "soc": _pct(view.soc),
        "soh": _pct(view.soh),
        "capacity_ah": capacity_ah,
        "balance_mask": balancing_mask(state, view),
        "alarms": alarm_bits(a for a in state.alarms if a.pack == view.pack),
        "contactor_open_request": int(view.contactor_open_request),
    }
    if s is not None:
        values |= {
            "voltage": s.voltage,
            "current": s.current,
            "bms_flags": int(s.flags) & 0xFFFF,
            "cells": s.cell_v.size,
            "age": max(0.0, t - s.t),
        }
    if st is not None:
        values |= {
            "cell_v_min": st.v_min,
            "cell_v_max": st.v_max,
            "cell_v_min_cell": st.v_min_cell + 1,
            "cell_v_max_cell": st.v_max_cell + 1,
            "cell_t_min": st.t_min,
            "cell_t_max": st.t_max,
        }
    return _serialize(PACK, values)


def encode_control(cmd: Command) -> list[int]:
    """The control block as read back: the command in force (0xFFFF where none)."""
    values: dict[str, float | None] = {
        "control_heartbeat": cmd.heartbeat,
        "reserve_soc": None if cmd.reserve_soc is None else cmd.reserve_soc * 100.0,
        "charge_current_cap": cmd.max_charge_a,
        "discharge_current_cap": cmd.max_discharge_a,
        "force_charge": int(cmd.force_charge),
        "disconnect": int(cmd.disconnect),
    }
    return _serialize(CONTROL, values)


def decode_write(address: int, values: Sequence[int], cmd: Command) -> Command | ModbusError:
    """A write of `values` at `address` → the new command; an error (and no change) if any part is bad.

    Only the control block is writable (else ILLEGAL_ADDRESS); a value outside a register's range gives
    ILLEGAL_VALUE. Current caps take any value: a cap above the core's limit simply does not bind.
    """
    offsets = [address + i - CONTROL_BASE for i in range(len(values))]
    if not values or any(not 0 <= o < len(CONTROL) for o in offsets):
        return ModbusError.ILLEGAL_ADDRESS
    for off, raw in zip(offsets, values, strict=True):
        if not 0 <= raw <= 0xFFFF:
            return ModbusError.ILLEGAL_VALUE
        match off:
            case 0:
                cmd = replace(cmd, heartbeat=raw)
            case 1:
                reserve = reserve_from_register(raw)
                if isinstance(reserve, ModbusError):
                    return reserve
                cmd = replace(cmd, reserve_soc=reserve)
            case 2:
                cmd = replace(cmd, max_charge_a=None if raw == _NONE else raw / 10.0)
            case 3:
                cmd = replace(cmd, max_discharge_a=None if raw == _NONE else raw / 10.0)
            case 4 | 5:
                if raw > 1:
                    return ModbusError.ILLEGAL_VALUE
                cmd = replace(cmd, force_charge=bool(raw)) if off == 4 else replace(cmd, disconnect=bool(raw))
    return cmd


def reserve_from_register(raw: int) -> float | ModbusError | None:
    """A reserve-SOC register value (0.1 %, 0..1000; 0xFFFF = none) as a fraction, or ILLEGAL_VALUE."""
    if raw == _NONE:
        return None
    return raw / 1000.0 if 0 <= raw <= _RESERVE_MAX else ModbusError.ILLEGAL_VALUE


def alarm_bits(alarms: Iterable[Alarm]) -> int:
    """Bitfield of the active alarm codes (ALARM_BITS), any level."""
    return bits(ALARM_BITS[a.code] for a in alarms if a.code in ALARM_BITS)


def _pct(fraction: float) -> float:
    return fraction * 100.0


def _where(ref: CellRef, value: float) -> int | None:
    """pack·256 + cell, both 1-based; None when there is no value."""
    return None if math.isnan(value) else (ref.pack + 1) << 8 | (ref.cell + 1)


def _serialize(layout: Sequence[Reg], values: dict[str, float | None]) -> list[int]:
    """Registers of a block (layouts are contiguous), missing values as not-implemented markers."""
    out: list[int] = []
    for reg in layout:
        out += encode(values.get(reg.name), reg.kind, reg.exponent)
    return out
