"""Low-voltage CAN inverter protocols read from the battery side (sources `pylontech-can`, `sma-can`): a
battery that already speaks Pylontech LV (V1.2, or V1.3 with 0x35A) or SMA/Victron CAN, decoded into
LvBattery and then a BmsReading plus the limits it requests (BmsRequest).

Layouts are the inverter codecs' own DBCs (dbc/pylontech_lv.dbc, dbc/sma.dbc, dbc/victron.dbc for 0x373),
decoded with bmsgw.inverter._can_common.Msg (scaling, SMA invalid markers → None). Frames shorter than the
DBC length are accepted with the signals they fully carry (Pylontech V1.2 sends 0x351 with 6 bytes and
0x355 with 4); a frame too short for any signal is a LvCanError.

Such batteries give no per-cell voltages. A pack of `cells` series cells is represented as:
  * with 0x373 (Victron-style min/max cell voltage): one cell at the minimum, one at the maximum, the
    others at the voltage that makes the cells add up to the pack voltage (kept within min..max);
  * without it: every cell at pack voltage / `cells`.
Temperatures: `sensors` = 0 (none), 1 (0x356 average) or 2 (0x373 minimum and maximum; both the 0x356
average until a 0x373 arrives).
Pure: no asyncio, no logging, no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from bmsgw.bms.framing import BmsDecodeError, BmsReading
from bmsgw.inverter._can_common import ACTIVE, CanCodecError, Msg, load_dbc
from bmsgw.model import BmsFlags, BmsRequest, Frame

__all__ = [
    "MAX_SENSORS",
    "PROTOCOLS",
    "LvBattery",
    "LvCanError",
    "cells_for",
    "decode",
    "reading",
    "request",
]

PROTOCOLS: Final = ("pylontech-can", "sma-can")
MAX_SENSORS: Final = 2


class LvCanError(BmsDecodeError):
    """A frame of a known id that is too short to carry any of its signals."""


@dataclass(frozen=True, slots=True)
class LvBattery:
    """What the battery has said so far (SI units, SOC/SOH as fractions; None = not sent or invalid).
    `seen` holds the ids received, `t` the time each field group last arrived (set by the caller)."""

    cvl: float | None = None  # 0x351 charge voltage
    ccl: float | None = None  # 0x351 charge current limit
    dcl: float | None = None  # 0x351 discharge current limit
    dvl: float | None = None  # 0x351 discharge voltage (SMA/Victron; bytes 6-7 of Pylontech 0x351)
    soc: float | None = None  # 0x355 SOC (HiRes when sent)
    soh: float | None = None  # 0x355 SOH
    voltage: float | None = None  # 0x356
    current: float | None = None  # 0x356, > 0 charging
    temperature: float | None = None  # 0x356 average cell temperature
    charge_enable: bool = True  # 0x35C bit 7 (Pylontech)
    discharge_enable: bool = True  # 0x35C bit 6
    force_charge: bool = False  # 0x35C bits 5/4
    flags: BmsFlags = BmsFlags.NONE  # 0x359 protection bits / 0x35A alarm pairs
    modules: int | None = None  # 0x359 module count (Pylontech)
    cell_v_min: float | None = None  # 0x373
    cell_v_max: float | None = None
    cell_t_min: float | None = None  # 0x373, °C
    cell_t_max: float | None = None
    manufacturer: str | None = None  # 0x35E


def decode(protocol: str, frame: Frame) -> dict[str, Any] | None:
    """The LvBattery fields one frame of `protocol` carries (None: an id it does not define, an
    extended id, or the inverter's own 0x305); LvCanError when too short."""
    table = _TABLES[protocol]
    if frame.extended or frame.id not in table:
        return None
    layout = table[frame.id]
    try:
        values = layout.decode(frame.data)
    except CanCodecError as exc:
        raise LvCanError(str(exc)) from None
    return layout.fields(values)


def cells_for(b: LvBattery, cells: int) -> tuple[float, ...]:
    """The `cells` cell voltages the pack is represented by (see the module docstring)."""
    if b.voltage is None:
        return ()
    lo, hi = b.cell_v_min, b.cell_v_max
    if lo is None or hi is None or cells < 2 or lo > hi:
        return (b.voltage / cells,) * cells
    rest = (b.voltage - lo - hi) / (cells - 2) if cells > 2 else 0.0
    return (lo, hi, *(min(max(rest, lo), hi),) * (cells - 2))


def reading(b: LvBattery, cells: int, sensors: int) -> BmsReading:
    """Our model of the battery for a pack of `cells` cells and `sensors` (0..2) temperatures; the
    battery must have sent 0x356 (voltage, current)."""
    if b.voltage is None or b.current is None:
        raise LvCanError("no 0x356 (voltage, current) received yet")
    t = b.temperature
    temps: tuple[float, ...] = ()
    if sensors >= 2 and b.cell_t_min is not None and b.cell_t_max is not None:
        temps = (b.cell_t_min, b.cell_t_max)
    elif sensors and t is not None:
        temps = (t,) * min(sensors, MAX_SENSORS)
    flags = b.flags
    if b.charge_enable and (b.ccl or 0.0) > 0:
        flags |= BmsFlags.CHARGE_FET
    if b.discharge_enable and (b.dcl or 0.0) > 0:
        flags |= BmsFlags.DISCHARGE_FET
    extra: dict[str, float | int | str] = {
        k: v
        for k, v in (
            ("cvl", b.cvl), ("ccl", b.ccl), ("dcl", b.dcl), ("dvl", b.dvl), ("soh", b.soh),
            ("modules", b.modules), ("manufacturer", b.manufacturer),
            ("cell_v_min", b.cell_v_min), ("cell_v_max", b.cell_v_max),
        )
        if v is not None
    }  # fmt: skip
    return BmsReading(cells_for(b, cells), temps, b.current, b.voltage, flags, b.soc, extra)


def request(b: LvBattery) -> BmsRequest:
    """The limits the battery allows (0x351 and the 0x35C enables)."""
    return BmsRequest(
        cvl=b.cvl,
        ccl=b.ccl,
        dcl=b.dcl,
        dvl=b.dvl,
        charge_enable=b.charge_enable,
        discharge_enable=b.discharge_enable,
    )


# ---------------------------------------------------------------------------------------------------


_Fields = Callable[[Mapping[str, float | None]], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class _Layout:
    """One message of a protocol's DBC and the LvBattery fields it fills."""

    msg: Msg
    length: int  # DBC length in bytes
    ends: Mapping[str, int]  # signal -> the bit after its last (little-endian layouts)
    fields: _Fields

    def decode(self, data: bytes) -> dict[str, float | None]:
        """Signals fully inside `data`; CanCodecError if none is."""
        values = self.msg.decode(bytes(data[: self.length]).ljust(self.length, b"\0"))
        fits = {k: v for k, v in values.items() if self.ends[k] <= 8 * len(data)}
        if not fits:
            raise CanCodecError(f"0x{self.msg.frame_id:03X}: {len(data)} bytes carry none of its signals")
        return fits


def _limits(v: Mapping[str, float | None]) -> dict[str, Any]:
    return {
        "cvl": v.get("ChargeVoltage"),
        "ccl": _magnitude(v.get("ChargeCurrentLimit")),
        "dcl": _magnitude(v.get("DischargeCurrentLimit")),
        "dvl": v.get("DischargeVoltage"),
    }


def _soc(v: Mapping[str, float | None]) -> dict[str, Any]:
    soc = v.get("SOCHiRes")
    if soc is None:
        soc = v.get("SOC")
    soh = v.get("SOH")
    return {"soc": None if soc is None else soc / 100.0, "soh": None if soh is None else soh / 100.0}


def _measurements(v: Mapping[str, float | None]) -> dict[str, Any]:
    return {
        "voltage": v.get("BatteryVoltage"),
        "current": v.get("BatteryCurrent"),
        "temperature": v.get("BatteryTemperature"),
    }


def _pylon_flags(v: Mapping[str, float | None]) -> dict[str, Any]:
    flags = BmsFlags.NONE
    for name, flag in _PYLON_PROTECTION.items():
        if v.get(name):
            flags |= flag
    modules = v.get("ModuleNumbers")
    return {"flags": flags, "modules": None if modules is None else int(modules)}


def _pylon_request(v: Mapping[str, float | None]) -> dict[str, Any]:
    return {
        "charge_enable": bool(v.get("ChargeEnable", 1)),
        "discharge_enable": bool(v.get("DischargeEnable", 1)),
        "force_charge": bool(v.get("RequestForceCharge1") or v.get("RequestForceCharge2")),
    }


def _pairs(v: Mapping[str, float | None]) -> dict[str, Any]:
    flags = BmsFlags.NONE
    for name, flag in _ALARM_PAIRS.items():
        if v.get(name) == ACTIVE:
            flags |= flag
    return {"flags": flags}


def _extremes(v: Mapping[str, float | None]) -> dict[str, Any]:
    t_min, t_max = v.get("MinCellTemperature"), v.get("MaxCellTemperature")
    return {
        "cell_v_min": v.get("MinCellVoltage"),
        "cell_v_max": v.get("MaxCellVoltage"),
        "cell_t_min": None if t_min is None else round(t_min - 273.15, 2),
        "cell_t_max": None if t_max is None else round(t_max - 273.15, 2),
    }


def _name(v: Mapping[str, float | None]) -> dict[str, Any]:
    raw = bytes(int(v.get(f"ManufacturerName{i}") or 0) for i in range(8))
    return {"manufacturer": raw.decode("ascii", "replace").rstrip(" \0")}


def _magnitude(x: float | None) -> float | None:
    return None if x is None else abs(x)


_PYLON_PROTECTION: Final = {
    "ProtCellOverVoltage": BmsFlags.ALARM_CELL_OV,
    "ProtCellUnderVoltage": BmsFlags.ALARM_CELL_UV,
    "ProtCellOverTemperature": BmsFlags.ALARM_OVERTEMP,
    "ProtCellUnderTemperature": BmsFlags.ALARM_UNDERTEMP,
    "ProtDischargeOverCurrent": BmsFlags.ALARM_DISCHARGE_OC,
    "ProtChargeOverCurrent": BmsFlags.ALARM_CHARGE_OC,
    "ProtSystemError": BmsFlags.ALARM_INTERNAL,
}
# 0x35A alarm pairs (bytes 0-3) that are active (01); warnings (bytes 4-7) are left to the core.
_ALARM_PAIRS: Final = {
    "AlarmGeneral": BmsFlags.ALARM_INTERNAL,
    "AlarmHighVoltage": BmsFlags.ALARM_CELL_OV,
    "AlarmLowVoltage": BmsFlags.ALARM_CELL_UV,
    "AlarmHighTemperature": BmsFlags.ALARM_OVERTEMP,
    "AlarmLowTemperature": BmsFlags.ALARM_UNDERTEMP,
    "AlarmHighTemperatureCharge": BmsFlags.ALARM_OVERTEMP,
    "AlarmLowTemperatureCharge": BmsFlags.ALARM_UNDERTEMP,
    "AlarmHighCurrent": BmsFlags.ALARM_DISCHARGE_OC,
    "AlarmHighChargeCurrent": BmsFlags.ALARM_CHARGE_OC,
    "AlarmContactor": BmsFlags.ALARM_INTERNAL,
    "AlarmShortCircuit": BmsFlags.ALARM_SHORT_CIRCUIT,
    "AlarmBmsInternal": BmsFlags.ALARM_INTERNAL,
}


def _table(dbc: str, rows: Mapping[int, _Fields]) -> dict[int, _Layout]:
    db = load_dbc(dbc)
    out = {}
    for fid, fields in rows.items():
        m = db.get_message_by_frame_id(fid)
        ends = {sig.name: sig.start + sig.length for sig in m.signals}
        out[fid] = _Layout(Msg(db, fid), m.length, ends, fields)
    return out


_VICTRON_373: Final = _table("victron.dbc", {0x373: _extremes})
_SHARED: Final[dict[int, _Fields]] = {0x351: _limits, 0x355: _soc, 0x356: _measurements, 0x35E: _name}
_TABLES: Final[dict[str, dict[int, _Layout]]] = {
    "pylontech-can": {
        **_table("pylontech_lv.dbc", {**_SHARED, 0x359: _pylon_flags, 0x35C: _pylon_request}),
        **_table("pylontech_lv_v13.dbc", {0x35A: _pairs}),  # V1.3 (US5000): 0x35A instead of 0x359/0x35C
        **_VICTRON_373,
    },
    "sma-can": {**_table("sma.dbc", {**_SHARED, 0x35A: _pairs}), **_VICTRON_373},
}
