"""Pylontech LV CAN V1.2 inverter codec (protocol "pylontech-can"): GatewayState → frames, 0x305 → keepalive.

Layout lives in ``dbc/pylontech_lv.dbc`` (spec: CAN-Bus-protocol-PYLON-low-voltage-V1.2-20180408, see
reference protocols.md §5.1). 11-bit ids, little endian, one set of six frames every second.

0x351 is sent with 8 bytes (DVL in bytes 6–7) like real US5000 packs, which SMA/Victron require.
Every value is rounded half away from zero and clamped to its DBC field range, never wrapped; NaN encodes as 0
(clamped into range), ±inf as the field bound. The spec has no "no value" marker, so an unknown temperature
(a pack without sensors) goes out as `unknown_temperature_c` (default 25 °C), not as 0 °C.

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

from typing import Final

from bmsgw.inverter._can_common import (
    KEEPALIVE_ID,
    InverterKeepalive,
    LvFrames,
    decode_keepalive,
    load_dbc,
)
from bmsgw.inverter.scaling import UNKNOWN_TEMPERATURE_C
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


def encode(
    state: GatewayState, *, manufacturer: str = "PYLON", unknown_temperature_c: float = UNKNOWN_TEMPERATURE_C
) -> list[Frame]:
    """The six battery frames 0x351, 0x355, 0x356, 0x359, 0x35C, 0x35E for `state`."""
    lim = state.limits
    return [
        _LV.limits(lim),  # DVL in bytes 6-7: SMA/Victron extension, sent by US5000
        _LV.soc(state),
        _LV.measurements(state, unknown_temperature_c),
        _M359.encode_raw(_flags(state)),
        _M35C.encode_raw(
            {
                "ChargeEnable": int(lim.charge_enable),  # bit 7
                "DischargeEnable": int(lim.discharge_enable),  # bit 6
                "RequestForceCharge1": int(lim.force_charge_1),  # bit 5
                "RequestForceCharge2": int(lim.force_charge_2),  # bit 4
                "RequestFullCharge": int(lim.full_charge_request),  # bit 3
            }
        ),
        _LV.manufacturer(manufacturer),
    ]


decode_inverter: Final = decode_keepalive
"""Keepalive for a standard-id 0x305 frame of any length, else None."""


# --- internals -------------------------------------------------------------------------------------------


# AlarmCode → (protection signal, alarm signal) in 0x359.
_ALARM_BITS: Final[dict[AlarmCode, tuple[str, str]]] = {
    AlarmCode.CELL_OVERVOLTAGE: ("ProtCellOverVoltage", "AlarmCellHighVoltage"),
    AlarmCode.PACK_OVERVOLTAGE: ("ProtCellOverVoltage", "AlarmCellHighVoltage"),
    AlarmCode.CELL_UNDERVOLTAGE: ("ProtCellUnderVoltage", "AlarmCellLowVoltage"),
    AlarmCode.PACK_UNDERVOLTAGE: ("ProtCellUnderVoltage", "AlarmCellLowVoltage"),
    AlarmCode.OVERTEMPERATURE: ("ProtCellOverTemperature", "AlarmCellHighTemperature"),
    AlarmCode.THERMAL_RUNAWAY: ("ProtCellOverTemperature", "AlarmCellHighTemperature"),
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


_LV: Final = LvFrames(load_dbc("pylontech_lv.dbc"))
_M359: Final = _LV.msg(0x359)
_M35C: Final = _LV.msg(0x35C)
_FLAGS_CLEAR: Final[dict[str, int]] = {
    **{name: 0 for bits in _ALARM_BITS.values() for name in bits},
    _SYSTEM_ERROR: 0,
    _COMM_FAIL: 0,
    "ModuleNumbers": 0,
    "TokenP": 0x50,  # 'P'
    "TokenN": 0x4E,  # 'N'
}
