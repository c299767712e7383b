"""Shared core of the low-voltage CAN inverter codecs (Pylontech V1.2/V1.3, SMA Sunny Island, Victron).

DBC loading, scaling that rounds half away from zero and clamps to the DBC field range (never wraps), the
frames these protocols have in common (0x351 limits, 0x355 SOC/SOH, 0x356 measurements, 0x35A alarm bit
pairs, 0x35E manufacturer, 0x35F battery info, ASCII text frames) and the inverter's 0x305 keepalive.
Every protocol keeps its own DBC under dbc/; shared frames use the same signal names in each.

Invalid values: a DBC signal may declare a value named "Invalid" (SMA: 0xFFFF unsigned, 0x8000 signed).
Such a field encodes NaN, None, or "not given" as that marker; a field without one encodes NaN as 0
(clamped into range), ±inf as the field bound. Temperatures are the exception: an unknown temperature (a
pack without sensors) in a field without a marker goes out as the output's unknown_temperature_c
(scaling.known_temperature), because inverters derate or stop charging at 0 °C.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final, NamedTuple

import cantools

from bmsgw import __version__
from bmsgw.inverter.scaling import UNKNOWN_TEMPERATURE_C, known_temperature, round_clamp
from bmsgw.model import AlarmCode, AlarmLevel, Frame, GatewayState, Limits

__all__ = [
    "ACTIVE",
    "ALARM_PAIRS",
    "BMS_VERSION",
    "CLEARED",
    "KEEPALIVE_ID",
    "PAIR_NAMES",
    "CanCodecError",
    "InverterKeepalive",
    "LvFrames",
    "Msg",
    "ascii_raw",
    "decode_keepalive",
    "load_dbc",
]

KEEPALIVE_ID: Final = 0x305
BMS_VERSION: Final = tuple(int(x) for x in __version__.split(".")[:2])
"""(major, minor) of this gateway, sent where a protocol has a BMS version field."""

# 0x35A: 16 alarms (bytes 0-3) then the same 16 as warnings (bytes 4-7), 2 bits each starting at bit 0:
# low bit "arrive" (01 = active), high bit "leave" (10 = cleared), 00 = not supported. SMA order.
PAIR_NAMES: Final = (
    "General",
    "HighVoltage",
    "LowVoltage",
    "HighTemperature",
    "LowTemperature",
    "HighTemperatureCharge",
    "LowTemperatureCharge",
    "HighCurrent",
    "HighChargeCurrent",
    "Contactor",
    "ShortCircuit",
    "BmsInternal",
    "CellImbalance",
    None,  # reserved
    None,  # reserved
    "Generator",
)
ACTIVE: Final = 0b01
CLEARED: Final = 0b10

ALARM_PAIRS: Final[dict[AlarmCode, tuple[str, ...]]] = {
    AlarmCode.COMM_LOST: ("General", "BmsInternal"),
    AlarmCode.SENSOR_FAULT: ("BmsInternal",),
    AlarmCode.BMS_FAULT: ("BmsInternal",),
    AlarmCode.CELL_OVERVOLTAGE: ("HighVoltage",),
    AlarmCode.PACK_OVERVOLTAGE: ("HighVoltage",),
    AlarmCode.CELL_UNDERVOLTAGE: ("LowVoltage",),
    AlarmCode.PACK_UNDERVOLTAGE: ("LowVoltage",),
    AlarmCode.OVERTEMPERATURE: ("HighTemperature",),
    AlarmCode.THERMAL_RUNAWAY: ("HighTemperature",),
    AlarmCode.UNDERTEMPERATURE: ("LowTemperature",),
    AlarmCode.CHARGE_UNDERTEMPERATURE: ("LowTemperatureCharge",),
    AlarmCode.DISCHARGE_OVERCURRENT: ("HighCurrent",),
    AlarmCode.CHARGE_OVERCURRENT: ("HighChargeCurrent",),
    AlarmCode.CELL_IMBALANCE: ("CellImbalance",),
}
"""AlarmCode → 0x35A pairs; any FAULT-level alarm also raises "General". Pairs never named here are 00."""


class CanCodecError(ValueError):
    """An inbound frame of a known id is malformed (e.g. too short); count it and drop it."""


@dataclass(frozen=True, slots=True)
class InverterKeepalive:
    """0x305 inverter reply (all zero per Pylontech; other inverters put data in it); raw payload."""

    data: bytes


def decode_keepalive(frame: Frame) -> InverterKeepalive | None:
    """Keepalive for a standard-id 0x305 frame of any length, else None."""
    if frame.id != KEEPALIVE_ID or frame.extended:
        return None
    return InverterKeepalive(bytes(frame.data))


def load_dbc(filename: str) -> Any:
    """Load dbc/<filename> shipped with the package."""
    text = resources.files("bmsgw").joinpath(f"dbc/{filename}").read_text(encoding="ascii")
    return cantools.database.load_string(text, database_format="dbc")


def ascii_raw(prefix: str, text: str, size: int = 8, pad: bytes = b" ") -> dict[str, int]:
    """Raw values of byte signals <prefix>0..<prefix>size-1: `text` as ASCII ('?' for others), cut, padded."""
    data = text.encode("ascii", "replace")[:size].ljust(size, pad)
    return {f"{prefix}{i}": c for i, c in enumerate(data)}


class Msg:
    """One DBC message with per-signal raw clamps; encodes physical or raw values, never wraps."""

    __slots__ = ("_fields", "_msg", "frame_id")

    def __init__(self, db: Any, frame_id: int) -> None:
        self._msg = db.get_message_by_frame_id(frame_id)
        self._fields: dict[str, _Field] = {s.name: _field(s) for s in self._msg.signals}
        self.frame_id = frame_id

    def has(self, name: str) -> bool:
        """Whether the message carries signal `name`."""
        return name in self._fields

    def temperature(self, name: str, celsius: float, unknown_c: float) -> float:
        """°C for signal `name`: unknown (not finite) → NaN if it has an invalid marker, else `unknown_c`."""
        return known_temperature(celsius, math.nan if self._fields[name].invalid is not None else unknown_c)

    def raw(self, name: str, value: float | None) -> int:
        """Raw value of signal `name` for physical `value` (NaN/None → invalid marker, else 0)."""
        return _to_raw(value, self._fields[name])

    def encode(self, values: Mapping[str, float | None]) -> Frame:
        """Frame from physical values; NaN/None → the field's invalid marker or 0; missing → invalid or 0."""
        return self.encode_raw({k: _to_raw(v, self._fields[k]) for k, v in values.items()})

    def decode(self, data: bytes) -> dict[str, float | None]:
        """Physical values of a received payload (extra bytes ignored); the invalid marker → None."""
        n = self._msg.length
        if len(data) < n:
            raise CanCodecError(f"0x{self.frame_id:03X}: {len(data)} bytes, expected {n}")
        raw = self._msg.decode(bytes(data[:n]), decode_choices=False, scaling=False)
        return {
            k: None if raw[k] == f.invalid else round(raw[k] * f.scale + f.offset, 9)
            for k, f in self._fields.items()
        }

    def encode_raw(self, raw: Mapping[str, int]) -> Frame:
        """Frame from raw values, each clamped into its field; fields not given → invalid marker or 0."""
        out: dict[str, int] = {}
        for name, f in self._fields.items():
            v = raw.get(name)
            if v is None:
                v = f.invalid if f.invalid is not None else min(max(0, f.lo), f.hi)
            elif v != f.invalid and not f.lo <= v <= f.hi:
                v = min(max(v, f.lo), f.hi)
            out[name] = v
        return Frame(self.frame_id, bytes(self._msg.encode(out, scaling=False, strict=False)))


class LvFrames:
    """Encoders of the frames the LV protocols share, bound to one protocol's DBC."""

    __slots__ = ("_m",)

    def __init__(self, db: Any) -> None:
        self._m = {m.frame_id: Msg(db, m.frame_id) for m in db.messages}

    def msg(self, frame_id: int) -> Msg:
        """The protocol's message `frame_id` (for frames only that protocol has)."""
        return self._m[frame_id]

    def limits(self, lim: Limits, *, cvl: float | None = None) -> Frame:
        """0x351: CVL (or `cvl`), CCL/DCL (0 when that direction is disabled), DVL."""
        return self._m[0x351].encode(
            {
                "ChargeVoltage": lim.cvl.value if cvl is None else cvl,
                "ChargeCurrentLimit": lim.ccl.value if lim.charge_enable else 0.0,
                "DischargeCurrentLimit": lim.dcl.value if lim.discharge_enable else 0.0,
                "DischargeVoltage": lim.dvl.value,
            }
        )

    def soc(self, state: GatewayState) -> Frame:
        """0x355: SOC and SOH in %, plus SOC in 0.01 % where the DBC has SOCHiRes."""
        m = self._m[0x355]
        values = {"SOC": state.soc * 100.0, "SOH": state.soh * 100.0}
        if m.has("SOCHiRes"):
            values["SOCHiRes"] = state.soc * 100.0
        return m.encode(values)

    def measurements(
        self, state: GatewayState, unknown_temperature_c: float = UNKNOWN_TEMPERATURE_C
    ) -> Frame:
        """0x356: battery voltage, current (> 0 charging) and average cell temperature (unknown: the DBC's
        invalid marker if it has one, else `unknown_temperature_c`)."""
        m = self._m[0x356]
        return m.encode(
            {
                "BatteryVoltage": state.voltage,
                "BatteryCurrent": state.current,
                "BatteryTemperature": m.temperature(
                    "BatteryTemperature", state.temperature, unknown_temperature_c
                ),
            }
        )

    def alarms(self, state: GatewayState, *, cleared: int) -> Frame:
        """0x35A: ALARM/FAULT → alarm pairs, WARNING → warning pairs; inactive mapped pairs = `cleared`."""
        raw = dict(_PAIRS_IDLE)
        if cleared:
            raw.update(dict.fromkeys(_PAIRS_MAPPED, cleared))
        for a in state.alarms:
            prefix = "Alarm" if a.level >= AlarmLevel.ALARM else "Warning"
            names = ALARM_PAIRS.get(a.code, ())
            if a.level >= AlarmLevel.FAULT:
                names += ("General",)
            for name in names:
                raw[prefix + name] = ACTIVE
        return self._m[0x35A].encode_raw(raw)

    def manufacturer(self, name: str) -> Frame:
        """0x35E: manufacturer name, 8 ASCII bytes, space padded."""
        return self._m[0x35E].encode_raw(ascii_raw("ManufacturerName", name))

    def info(
        self,
        capacity_ah: float,
        *,
        battery_type: int | None = None,
        version: tuple[int, ...] | None = None,
        manufacturer_id: int | None = None,
    ) -> Frame:
        """0x35F: battery type, BMS version (major, minor bytes), capacity in Ah, manufacturer id."""
        raw: dict[str, int] = {}
        if battery_type is not None:
            raw["BatteryType"] = battery_type
        if version is not None:
            raw["BmsVersionMajor"], raw["BmsVersionMinor"] = version
        if manufacturer_id is not None:
            raw["ManufacturerId"] = manufacturer_id
        m = self._m[0x35F]
        return m.encode_raw({**raw, "Capacity": m.raw("Capacity", capacity_ah)})


# --- internals -------------------------------------------------------------------------------------------


class _Field(NamedTuple):
    scale: float
    offset: float
    lo: int  # raw bounds: DBC [min|max] intersected with what the bits can hold
    hi: int
    invalid: int | None  # raw value the DBC names "Invalid", if any


def _field(sig: Any) -> _Field:
    n: int = sig.length
    lo, hi = (-(1 << (n - 1)), (1 << (n - 1)) - 1) if sig.is_signed else (0, (1 << n) - 1)
    scale, offset = float(sig.scale), float(sig.offset)
    if sig.minimum is not None:
        lo = max(lo, round((sig.minimum - offset) / scale))
    if sig.maximum is not None:
        hi = min(hi, round((sig.maximum - offset) / scale))
    invalid = next((int(k) for k, v in (sig.choices or {}).items() if str(v) == "Invalid"), None)
    if invalid == lo:  # a clamped value must never read as "invalid"
        lo += 1
    if invalid == hi:
        hi -= 1
    return _Field(scale, offset, lo, hi, invalid)


def _to_raw(value: float | None, f: _Field) -> int:
    x = math.nan if value is None else (float(value) - f.offset) / f.scale
    if math.isnan(x) and f.invalid is not None:
        return f.invalid
    return round_clamp(x, f.lo, f.hi)


_PAIRS_ALL: Final = tuple(
    prefix + name for prefix in ("Alarm", "Warning") for name in PAIR_NAMES if name is not None
)
_PAIRS_IDLE: Final[dict[str, int]] = dict.fromkeys(_PAIRS_ALL, 0)
_PAIRS_MAPPED: Final = tuple(
    prefix + name
    for prefix in ("Alarm", "Warning")
    for name in dict.fromkeys([*(n for names in ALARM_PAIRS.values() for n in names), "General"])
)
