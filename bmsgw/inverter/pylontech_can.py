"""Pylontech LV CAN V1.2 inverter codec (protocol "pylontech-can"): GatewayState → frames, 0x305 → keepalive.

Layout lives in ``dbc/pylontech_lv.dbc`` (spec: CAN-Bus-protocol-PYLON-low-voltage-V1.2-20180408, see
reference protocols.md §5.1). 11-bit ids, little endian, one set of six frames every second.

0x351 is sent with 8 bytes (DVL in bytes 6–7) like real US5000 packs, which SMA/Victron require.
Every value is rounded half away from zero and clamped to its DBC field range, never wrapped; NaN encodes as 0
(clamped into range), ±inf as the field bound.

0x359 mapping (ALARM/FAULT level → protection bytes 0–1, WARNING → alarm bytes 2–3)::

    AlarmCode                                     protection      alarm (warning)
    CELL_OVERVOLTAGE, PACK_OVERVOLTAGE            b0.1            b2.1   cell/module over/high voltage
    CELL_UNDERVOLTAGE, PACK_UNDERVOLTAGE          b0.2            b2.2   cell/module under/low voltage
    OVERTEMPERATURE                               b0.3            b2.3   cell over/high temperature
    UNDERTEMPERATURE, CHARGE_UNDERTEMPERATURE     b0.4            b2.4   cell under/low temperature
    DISCHARGE_OVERCURRENT                         b0.7            b2.7   discharge over/high current
    CHARGE_OVERCURRENT                            b1.0            b3.0   charge over/high current
    BMS_FAULT, SENSOR_FAULT (ALARM/FAULT only)    b1.3            -      system error
    any code at FAULT level                       b1.3 (also)     -      system error
    COMM_LOST (any level)                         -               b3.3   internal communication fail
    CELL_IMBALANCE (below FAULT)                  -               -      (no spec bit)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final, NamedTuple

import cantools

from bmsgw.model import AlarmCode, AlarmLevel, Frame, GatewayState

__all__ = [
    "FRAME_IDS",
    "KEEPALIVE_ID",
    "MANUFACTURER_MAX",
    "PERIOD_S",
    "InverterKeepalive",
    "decode_inverter",
    "encode",
]

PERIOD_S: Final = 1.0
MANUFACTURER_MAX: Final = 8
FRAME_IDS: Final = (0x351, 0x355, 0x356, 0x359, 0x35C, 0x35E)
KEEPALIVE_ID: Final = 0x305


@dataclass(frozen=True, slots=True)
class InverterKeepalive:
    """0x305 inverter reply ("00-00-00-00-00-00-00-00" per spec); raw payload as received."""

    data: bytes


def encode(state: GatewayState, *, manufacturer: str = "PYLON") -> list[Frame]:
    """The six battery frames 0x351, 0x355, 0x356, 0x359, 0x35C, 0x35E for `state`."""
    lim = state.limits
    f351 = _M351.encode(
        {
            "ChargeVoltage": lim.cvl.value,  # Battery charge voltage
            "ChargeCurrentLimit": lim.ccl.value if lim.charge_enable else 0.0,
            "DischargeCurrentLimit": lim.dcl.value if lim.discharge_enable else 0.0,
            "DischargeVoltage": lim.dvl.value,  # SMA/Victron extension, sent by US5000
        }
    )
    f355 = _M355.encode({"SOC": float(state.soc) * 100.0, "SOH": float(state.soh) * 100.0})  # fraction → %
    f356 = _M356.encode(
        {
            "BatteryVoltage": state.voltage,
            "BatteryCurrent": state.current,  # > 0 charging, same as Pylon
            "BatteryTemperature": state.temperature,  # average cell temperature
        }
    )
    f359 = _M359.encode_raw(_flags(state))
    f35c = _M35C.encode_raw(
        {
            "ChargeEnable": int(lim.charge_enable),  # bit 7
            "DischargeEnable": int(lim.discharge_enable),  # bit 6
            "RequestForceCharge1": int(lim.force_charge_1),  # bit 5
            "RequestForceCharge2": int(lim.force_charge_2),  # bit 4
            "RequestFullCharge": int(lim.full_charge_request),  # bit 3
        }
    )
    name = manufacturer.encode("ascii", "replace")[:MANUFACTURER_MAX].ljust(MANUFACTURER_MAX, b" ")
    f35e = _M35E.encode_raw({f"ManufacturerName{i}": c for i, c in enumerate(name)})
    return [
        Frame(0x351, f351),
        Frame(0x355, f355),
        Frame(0x356, f356),
        Frame(0x359, f359),
        Frame(0x35C, f35c),
        Frame(0x35E, f35e),
    ]


def decode_inverter(frame: Frame) -> InverterKeepalive | None:
    """Keepalive for a standard-id 0x305 frame of any length, else None."""
    if frame.id != KEEPALIVE_ID or frame.extended:
        return None
    return InverterKeepalive(bytes(frame.data))


# --- internals -------------------------------------------------------------------------------------------


class _Field(NamedTuple):
    scale: float
    offset: float
    lo: int  # raw bounds: DBC [min|max] intersected with what the bits can hold
    hi: int


class _Msg:
    """One DBC message with per-signal raw clamps; encodes physical or raw values, never wraps."""

    __slots__ = ("_fields", "_msg")

    def __init__(self, db: Any, frame_id: int) -> None:
        self._msg = db.get_message_by_frame_id(frame_id)
        self._fields: dict[str, _Field] = {s.name: _field(s) for s in self._msg.signals}

    def encode(self, values: dict[str, float]) -> bytes:
        return self.encode_raw({k: _to_raw(v, self._fields[k]) for k, v in values.items()})

    def encode_raw(self, raw: dict[str, int]) -> bytes:
        for k, v in raw.items():
            f = self._fields[k]
            if not f.lo <= v <= f.hi:
                raw[k] = min(max(v, f.lo), f.hi)
        return bytes(self._msg.encode(raw, scaling=False, strict=False))


def _field(sig: Any) -> _Field:
    n: int = sig.length
    lo, hi = (-(1 << (n - 1)), (1 << (n - 1)) - 1) if sig.is_signed else (0, (1 << n) - 1)
    scale, offset = float(sig.scale), float(sig.offset)
    if sig.minimum is not None:
        lo = max(lo, round((sig.minimum - offset) / scale))
    if sig.maximum is not None:
        hi = min(hi, round((sig.maximum - offset) / scale))
    return _Field(scale, offset, lo, hi)


def _to_raw(value: float, f: _Field) -> int:
    x = (float(value) - f.offset) / f.scale
    if math.isnan(x):
        return min(max(0, f.lo), f.hi)
    if x >= f.hi:
        return f.hi
    if x <= f.lo:
        return f.lo
    return math.floor(x + 0.5) if x >= 0 else -math.floor(0.5 - x)


# AlarmCode → (protection signal, alarm signal) in 0x359.
_ALARM_BITS: Final[dict[AlarmCode, tuple[str, str]]] = {
    AlarmCode.CELL_OVERVOLTAGE: ("ProtCellOverVoltage", "AlarmCellHighVoltage"),
    AlarmCode.PACK_OVERVOLTAGE: ("ProtCellOverVoltage", "AlarmCellHighVoltage"),
    AlarmCode.CELL_UNDERVOLTAGE: ("ProtCellUnderVoltage", "AlarmCellLowVoltage"),
    AlarmCode.PACK_UNDERVOLTAGE: ("ProtCellUnderVoltage", "AlarmCellLowVoltage"),
    AlarmCode.OVERTEMPERATURE: ("ProtCellOverTemperature", "AlarmCellHighTemperature"),
    AlarmCode.UNDERTEMPERATURE: ("ProtCellUnderTemperature", "AlarmCellLowTemperature"),
    AlarmCode.CHARGE_UNDERTEMPERATURE: ("ProtCellUnderTemperature", "AlarmCellLowTemperature"),
    AlarmCode.DISCHARGE_OVERCURRENT: ("ProtDischargeOverCurrent", "AlarmDischargeHighCurrent"),
    AlarmCode.CHARGE_OVERCURRENT: ("ProtChargeOverCurrent", "AlarmChargeHighCurrent"),
}
_SYSTEM_ERROR_CODES: Final = frozenset({AlarmCode.BMS_FAULT, AlarmCode.SENSOR_FAULT})
_SYSTEM_ERROR: Final = "ProtSystemError"  # protection byte 1 bit 3
_COMM_FAIL: Final = "AlarmInternalCommFail"  # alarm byte 3 bit 3


def _flags(state: GatewayState) -> dict[str, int]:
    raw = dict(_FLAGS_CLEAR)
    for a in state.alarms:
        protection = a.level >= AlarmLevel.ALARM
        if a.level >= AlarmLevel.FAULT or (protection and a.code in _SYSTEM_ERROR_CODES):
            raw[_SYSTEM_ERROR] = 1
        if a.code is AlarmCode.COMM_LOST:
            raw[_COMM_FAIL] = 1
        bits = _ALARM_BITS.get(a.code)
        if bits is not None:
            raw[bits[0] if protection else bits[1]] = 1
    raw["ModuleNumbers"] = state.modules_online  # clamped to u8 by encode_raw
    return raw


def _load() -> Any:
    text = resources.files("bmsgw").joinpath("dbc/pylontech_lv.dbc").read_text(encoding="ascii")
    return cantools.database.load_string(text, database_format="dbc")


_DB: Final = _load()
_M351: Final = _Msg(_DB, 0x351)
_M355: Final = _Msg(_DB, 0x355)
_M356: Final = _Msg(_DB, 0x356)
_M359: Final = _Msg(_DB, 0x359)
_M35C: Final = _Msg(_DB, 0x35C)
_M35E: Final = _Msg(_DB, 0x35E)
_FLAGS_CLEAR: Final[dict[str, int]] = {
    **{name: 0 for bits in _ALARM_BITS.values() for name in bits},
    _SYSTEM_ERROR: 0,
    _COMM_FAIL: 0,
    "ModuleNumbers": 0,
    "TokenP": 0x50,  # 'P'
    "TokenN": 0x4E,  # 'N'
}
