"""Pylontech LV CAN "V1.3" codec (protocol "pylontech-can-v13"): GatewayState → frames, 0x305 → keepalive.

Layout lives in ``dbc/pylontech_lv_v13.dbc``. No V1.3 document is public: the frame set is the one newer
US5000 firmware sends (capture published by setfirelabs.com, reference protocols.md §5.2), which is V1.2
with 0x35A in place of 0x359, 0x35F in place of 0x35C and a 6-byte 0x355. 11-bit ids, little endian, one
set of six frames every second; the inverter answers 0x305 (as V1.2). Values are scaled as in V1.2
(round half away from zero, clamp, never wrap, NaN → 0; an unknown temperature → `unknown_temperature_c`).

Frames, in the order the US5000 sends them:

    0x351  CVL, CCL, DCL, DVL (8 bytes; CCL/DCL 0 when that direction is disabled)
    0x355  SOC %, SOH %, SOC 0.01 % (6 bytes). The captured US5000 sends 00 00 in bytes 4-5; we send the
           high-resolution SOC there, as SMA/Victron read it.
    0x356  voltage, current (> 0 charging), average cell temperature
    0x35A  alarm/warning 2-bit pairs in SMA order (mapping in _can_common.ALARM_PAIRS; COMM_LOST → general
           + BMS internal, any FAULT → general). An inactive pair is 00, as the US5000 sends with no alarm
           (SMA itself would read 00 as "not supported", 10 as "cleared").
    0x35E  manufacturer name, 8 ASCII bytes, space padded ("PYLON   ")
    0x35F  bytes 0-1 ASCII "LI", byte 2-3 0x01 0x03, bytes 4-5 capacity u16 Ah, bytes 6-7 0x00AA. This is
           the SMA 0x35F layout (battery type, BMS version, capacity, manufacturer id). The capture shows
           "LI" (lithium), 1.3 (apparently the protocol version), 572 Ah (its stack: six US5000, nominal
           600 Ah, SOH 96 %; whether Pylontech sends nominal, full-charge or aged capacity is unknown) and
           0x00AA (meaning unknown). We send "LI", 1.3 and 0x00AA as observed and the capacity of the packs in
           use (state.capacity_ah).

There are no charge/discharge enable flags in V1.3 (0x35C is gone): a stop is CCL = 0 / DCL = 0.
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
from bmsgw.model import Frame, GatewayState

__all__ = [
    "BATTERY_TYPE",
    "FRAME_IDS",
    "KEEPALIVE_ID",
    "MANUFACTURER_ID",
    "PERIOD_S",
    "PROTOCOL_VERSION",
    "InverterKeepalive",
    "decode_inverter",
    "encode",
]

PERIOD_S: Final = 1.0
FRAME_IDS: Final = (0x351, 0x355, 0x356, 0x35A, 0x35E, 0x35F)
BATTERY_TYPE: Final = int.from_bytes(b"LI", "little")  # 0x35F bytes 0-1 as sent by the US5000
PROTOCOL_VERSION: Final = (1, 3)  # 0x35F bytes 2-3 as sent by the US5000
MANUFACTURER_ID: Final = 0x00AA  # 0x35F bytes 6-7 as sent by the US5000 (meaning unknown)


def encode(
    state: GatewayState, *, manufacturer: str = "PYLON", unknown_temperature_c: float = UNKNOWN_TEMPERATURE_C
) -> list[Frame]:
    """The six battery frames 0x351, 0x355, 0x356, 0x35A, 0x35E, 0x35F for `state`."""
    return [
        _LV.limits(state.limits),
        _LV.soc(state),
        _LV.measurements(state, unknown_temperature_c),
        _LV.alarms(state, cleared=0b00),
        _LV.manufacturer(manufacturer),
        _LV.info(
            state.capacity_ah,
            battery_type=BATTERY_TYPE,
            version=PROTOCOL_VERSION,
            manufacturer_id=MANUFACTURER_ID,
        ),
    ]


decode_inverter: Final = decode_keepalive
"""Keepalive for a standard-id 0x305 frame of any length, else None."""


_LV: Final = LvFrames(load_dbc("pylontech_lv_v13.dbc"))
