"""Victron CAN-bus BMS codec (protocol "victron-can"): GatewayState → frames for a GX, 0x305 → keepalive.

Layout lives in ``dbc/victron.dbc``. Victron does not publish the protocol; the frame set is what
third-party batteries send to a GX (diyBMS victron_canbus.cpp, dfch/BydCanProtocol, a Pytes capture,
Victron's bms-check list of mandatory ids; reference protocols.md §5.4, anchors_bridges.md §3): the SMA-style
core frames plus 0x370-0x379. 11-bit ids, little endian, 500 kbit/s, every frame once a second.

    0x351  CVL, CCL, DCL, DVL. Never CVL = 0 (a GX treats it as over-voltage and tries to empty the
           battery): charging stops with CCL = 0 and CVL held. CVL is never below DVL; if that is still
           not a positive number (it would round to 0) the present pack voltage goes out instead, and the
           DBC range keeps CVL at 0.1 V or more whatever happens.
    0x355  SOC %, SOH %, SOC 0.01 %        0x356  voltage, current (> 0 charging), temperature
    0x35A  alarm/warning pairs as SMA (01 active, 10 cleared, 00 not supported; see sma_can)
    0x35E  manufacturer name (8 ASCII, space padded)
    0x35F  battery type (invalid), BMS version major/minor, capacity of the packs in use (Ah),
           manufacturer id (invalid)
    0x370/0x371  battery name (gateway name), 16 ASCII characters, NUL padded
    0x372  modules online / blocking charge / blocking discharge / offline. Online = packs the core
           uses; offline = the others (stale, never seen, implausible, frozen). An online pack blocks a
           direction while it has an alarm of its own at ALARM level that stops that direction (below),
           any alarm at FAULT level, or a contactor-open request.
    0x373  lowest/highest cell voltage (mV), lowest/highest temperature (K, from °C + 273.15)
    0x374-0x377  where those are: "p<pack>c<cell>" for voltages, "p<pack>t<sensor>" for temperatures
           (1-based, two-digit cell/sensor, e.g. "p1c05"); empty while the value is unknown (NaN)
    0x379  installed capacity = capacity of the packs in use (Ah)

Values are scaled as in the other LV codecs (round half away from zero, clamp, never wrap, NaN → 0). An
unknown temperature (a pack without sensors) goes out as `unknown_temperature_c` in 0x356 and 0x373 (Victron
has no "no value" marker; NaN → 0 would be 0 °C in 0x356 and 0 K in 0x373); 0x376/0x377 stay empty.
"""

from __future__ import annotations

import math
from typing import Final

from bmsgw.inverter._can_common import (
    BMS_VERSION,
    CLEARED,
    KEEPALIVE_ID,
    InverterKeepalive,
    LvFrames,
    ascii_raw,
    decode_keepalive,
    load_dbc,
)
from bmsgw.inverter.scaling import UNKNOWN_TEMPERATURE_C, known_temperature
from bmsgw.model import AlarmCode, AlarmLevel, CellRef, Frame, GatewayState, Limits

__all__ = [
    "FRAME_IDS",
    "KEEPALIVE_ID",
    "NAME_MAX",
    "PERIOD_S",
    "InverterKeepalive",
    "charge_voltage",
    "decode_inverter",
    "encode",
]

PERIOD_S: Final = 1.0
NAME_MAX: Final = 16
FRAME_IDS: Final = (
    0x351, 0x355, 0x356, 0x35A, 0x35E, 0x35F, 0x370, 0x371, 0x372, 0x373, 0x374, 0x375, 0x376, 0x377, 0x379,
)  # fmt: skip


def encode(
    state: GatewayState,
    *,
    manufacturer: str = "PYLON",
    name: str = "bmsgw",
    unknown_temperature_c: float = UNKNOWN_TEMPERATURE_C,
) -> list[Frame]:
    """The fifteen battery frames of FRAME_IDS for `state`; `name` goes into 0x370/0x371."""
    name_raw = ascii_raw("BatteryName", name, NAME_MAX, b"\0")
    t_min = known_temperature(state.cell_t_min, unknown_temperature_c)
    t_max = known_temperature(state.cell_t_max, unknown_temperature_c)
    return [
        _LV.limits(state.limits, cvl=charge_voltage(state.limits, state.voltage)),
        _LV.soc(state),
        _LV.measurements(state, unknown_temperature_c),
        _LV.alarms(state, cleared=CLEARED),
        _LV.manufacturer(manufacturer),
        _LV.info(state.capacity_ah, version=BMS_VERSION),
        _M370.encode_raw(name_raw),  # characters 1-8
        _M371.encode_raw(name_raw),  # characters 9-16
        _M372.encode_raw(_modules(state)),
        _M373.encode(
            {
                "MinCellVoltage": state.cell_v_min,
                "MaxCellVoltage": state.cell_v_max,
                "MinCellTemperature": t_min + _KELVIN,
                "MaxCellTemperature": t_max + _KELVIN,
            }
        ),
        _M374.encode_raw(_where("MinCellVoltageId", "c", state.cell_v_min_at, state.cell_v_min)),
        _M375.encode_raw(_where("MaxCellVoltageId", "c", state.cell_v_max_at, state.cell_v_max)),
        _M376.encode_raw(_where("MinTemperatureId", "t", state.cell_t_min_at, state.cell_t_min)),
        _M377.encode_raw(_where("MaxTemperatureId", "t", state.cell_t_max_at, state.cell_t_max)),
        _M379.encode({"InstalledCapacity": state.capacity_ah}),
    ]


def charge_voltage(limits: Limits, voltage: float) -> float:
    """CVL to send: the limit, raised to DVL if below it; the pack voltage if that would go out as 0."""
    cvl, dvl = limits.cvl.value, limits.dvl.value
    if math.isfinite(dvl) and not cvl >= dvl:
        cvl = dvl
    if math.isfinite(cvl) and cvl >= _HALF_STEP:
        return cvl
    # No usable CVL: hold the pack voltage (never 0, never below DVL).
    return max(voltage, dvl) if math.isfinite(dvl) else voltage


decode_inverter: Final = decode_keepalive
"""Keepalive for a standard-id 0x305 frame of any length (the GX's payload is not decoded), else None."""


# --- internals -------------------------------------------------------------------------------------------

_KELVIN: Final = 273.15
_HALF_STEP: Final = 0.05  # V: below this 0x351 CVL rounds to 0 (the DBC also clamps CVL to >= 0.1 V)
# Alarms (ALARM level, per pack) that stop charging / discharging; any FAULT-level alarm stops both.
_BLOCKS_CHARGE: Final = frozenset(
    {
        AlarmCode.CELL_OVERVOLTAGE,
        AlarmCode.PACK_OVERVOLTAGE,
        AlarmCode.OVERTEMPERATURE,
        AlarmCode.UNDERTEMPERATURE,
        AlarmCode.CHARGE_UNDERTEMPERATURE,
        AlarmCode.CHARGE_OVERCURRENT,
        AlarmCode.BMS_FAULT,
        AlarmCode.SENSOR_FAULT,
    }
)
_BLOCKS_DISCHARGE: Final = frozenset(
    {
        AlarmCode.CELL_UNDERVOLTAGE,
        AlarmCode.PACK_UNDERVOLTAGE,
        AlarmCode.OVERTEMPERATURE,
        AlarmCode.UNDERTEMPERATURE,
        AlarmCode.DISCHARGE_OVERCURRENT,
        AlarmCode.BMS_FAULT,
        AlarmCode.SENSOR_FAULT,
    }
)


def _modules(state: GatewayState) -> dict[str, int]:
    no_charge: set[int] = set()
    no_discharge: set[int] = set()
    for a in state.alarms:
        if a.pack is None or a.level < AlarmLevel.ALARM:
            continue
        fault = a.level >= AlarmLevel.FAULT
        if fault or a.code in _BLOCKS_CHARGE:
            no_charge.add(a.pack)
        if fault or a.code in _BLOCKS_DISCHARGE:
            no_discharge.add(a.pack)
    online = [p for p in state.packs if p.in_service]  # held-out and isolated packs count as offline
    return {
        "ModulesOnline": len(online),
        "ModulesBlockingCharge": sum(p.contactor_open_request or p.pack in no_charge for p in online),
        "ModulesBlockingDischarge": sum(p.contactor_open_request or p.pack in no_discharge for p in online),
        "ModulesOffline": len(state.packs) - len(online),
    }


def _where(prefix: str, kind: str, ref: CellRef, value: float) -> dict[str, int]:
    text = f"p{ref.pack + 1}{kind}{ref.cell + 1:02d}" if math.isfinite(value) else ""
    return ascii_raw(prefix, text, pad=b"\0")


_LV: Final = LvFrames(load_dbc("victron.dbc"))
_M370: Final = _LV.msg(0x370)
_M371: Final = _LV.msg(0x371)
_M372: Final = _LV.msg(0x372)
_M373: Final = _LV.msg(0x373)
_M374: Final = _LV.msg(0x374)
_M375: Final = _LV.msg(0x375)
_M376: Final = _LV.msg(0x376)
_M377: Final = _LV.msg(0x377)
_M379: Final = _LV.msg(0x379)
