"""Pylontech HV CAN codec (protocol "pylontech-hv-can"): inverter requests → battery answers, commands in.

29-bit ids, 500 kbit/s, request/response: the battery sends nothing unasked. Sources (reference
protocols.md §5.5, anchors_bridges.md §1.7): "CAN-Bus-Protocol high voltage" V1.17/V1.18 (Deye, Sermatec) as
cited by diyBMSv4ESP32 pylonforce_canbus.cpp, and Battery-Emulator PYLON-CAN.cpp / PYLON-BATTERY.cpp.

- Inverter → battery: 0x4200 byte 0 = 0x00 "ensemble information" → 0x4210…0x4290 (+addr);
  byte 0 = 0x02 "system equipment information" → 0x7310…0x7340 (+addr). 0x4200 has no address.
- Commands (+addr): 0x8200 byte 0 0x55 sleep / 0xAA quit sleep; 0x8210 byte 0 0xAA charge command, byte 1
  0xAA discharge command (a real battery closes its relay after UV/OV protection); 0x8240 "mask the external
  communication fault for 5 min", answered on 0x8250 (byte 0 0xAA will act, 0x00 won't).
- Every multi-byte field is u16 in `byte_order` (little endian on real Pylontech packs: a captured
  0x4220 ``A4 10 20 0D 2A 76 36 74`` = 426.0 V, 336.0 V, +25.0 A, −25.0 A, Battery-Emulator#2019).
- Currents are 0.1 A with `current_offset_a` (spec: 3000 A, raw 30000 = 0 A; > 0 charging). With offset 0
  the field is s16 two's complement instead (what some Solis/Sofar setups expect). The max discharge current
  is sent as a negative current (offset − DCL), as the captured frame shows.
- Temperatures are 0.1 °C with offset 100 °C. Values are rounded half away from zero and clamped into their
  field, never wrapped; NaN (no data) encodes as physical 0, except an unknown temperature (a pack without
  sensors): the spec has no "no value" marker, so it goes out as `unknown_temperature_c` (default 25 °C).
- Inverters differ (Battery-Emulator offers "30k offset", "invert byte order" and the id suffix; Sungrow
  #670, Deye #763), hence HvOptions.
"""

from __future__ import annotations

import enum
import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Final, Literal

from bmsgw.ems import Command, tighten
from bmsgw.inverter._can_common import BMS_VERSION, CanCodecError
from bmsgw.inverter.scaling import UNKNOWN_TEMPERATURE_C, known_temperature, round_clamp
from bmsgw.model import AlarmCode, AlarmLevel, CellRef, Frame, GatewayState

__all__ = [
    "CHARGE_ID",
    "ENSEMBLE_IDS",
    "EQUIPMENT_IDS",
    "FORBIDDEN",
    "FRAME_GAP_S",
    "MASK_ID",
    "MASK_REPLY_ID",
    "REQUEST_ID",
    "SLEEP_ID",
    "ByteOrder",
    "CanCodecError",
    "HvChargeCommand",
    "HvInverterFrame",
    "HvMaskRequest",
    "HvOptions",
    "HvRequest",
    "HvSleep",
    "RequestKind",
    "answer",
    "decode_inverter",
    "encode_ensemble",
    "encode_equipment",
    "encode_mask_reply",
]

REQUEST_ID: Final = 0x4200
ENSEMBLE_IDS: Final = (0x4210, 0x4220, 0x4230, 0x4240, 0x4250, 0x4260, 0x4270, 0x4280, 0x4290)
EQUIPMENT_IDS: Final = (0x7310, 0x7320, 0x7330, 0x7340)
SLEEP_ID: Final = 0x8200
CHARGE_ID: Final = 0x8210
MASK_ID: Final = 0x8240
MASK_REPLY_ID: Final = 0x8250
FORBIDDEN: Final = 0xAA  # 0x4280 charge/discharge forbidden mark; also the "effect" value of commands
FRAME_GAP_S: Final = 0.02
"""Minimum spacing of the frames of one answer (diyBMS waits 60 ms; Battery-Emulator none)."""
IDLE_BAND_A: Final = 0.5
"""0x4250 basic status: |current| below this is idle, not charge/discharge."""

ByteOrder = Literal["little", "big"]


@dataclass(frozen=True, slots=True)
class HvOptions:
    """Per-output knobs: the interop variants, and the installed system for the equipment frames."""

    current_offset_a: float = 3000.0  # 0.1 A fields carry (I + offset); 0: s16 two's complement
    byte_order: ByteOrder = "little"
    address: int = 0  # added to every battery id and to the command ids listened to (0x4210 + 1 = 0x4211)
    manufacturer: str = "PYLON"  # 0x7330, 8 ASCII
    name: str = "bmsgw"  # 0x7340, 8 ASCII
    cells_per_pack: int = 0  # cell numbering across packs: pack * cells_per_pack + cell + 1
    sensors_per_pack: int = 0  # same for temperature sensors
    packs_in_series: int = 1
    nominal_voltage: float = 0.0  # V, 0x7320 voltage level
    capacity_ah: float = 0.0  # installed Ah, 0x7320
    unknown_temperature_c: float = UNKNOWN_TEMPERATURE_C  # sent for an unknown temperature (no sensors)


class RequestKind(enum.IntEnum):
    """0x4200 byte 0."""

    ENSEMBLE = 0x00  # → 0x4210…0x4290
    EQUIPMENT = 0x02  # → 0x7310…0x7340


@dataclass(frozen=True, slots=True)
class HvRequest:
    """0x4200: the inverter asks for a frame set."""

    kind: RequestKind


@dataclass(frozen=True, slots=True)
class HvSleep:
    """0x8200+addr: True = sleep (0x55), False = quit sleep (0xAA), None = any other byte (no effect)."""

    sleep: bool | None


@dataclass(frozen=True, slots=True)
class HvChargeCommand:
    """0x8210+addr: charge (byte 0 = 0xAA) and discharge (byte 1 = 0xAA) commands."""

    charge: bool
    discharge: bool


@dataclass(frozen=True, slots=True)
class HvMaskRequest:
    """0x8240+addr: mask the external communication fault for 5 minutes (payload as sent)."""

    data: bytes


HvInverterFrame = HvRequest | HvSleep | HvChargeCommand | HvMaskRequest


def decode_inverter(frame: Frame, address: int = 0) -> HvInverterFrame | None:
    """The inverter frame for battery `address`, None if not one; CanCodecError if malformed."""
    if not frame.extended:
        return None
    data = frame.data
    if frame.id == REQUEST_ID:
        if not data:
            raise CanCodecError("0x4200: empty request")
        try:
            return HvRequest(RequestKind(data[0]))
        except ValueError:
            raise CanCodecError(f"0x4200: unknown request 0x{data[0]:02X}") from None
    if frame.id == SLEEP_ID + address:
        if not data:
            raise CanCodecError(f"0x{frame.id:04X}: empty sleep/awake command")
        return HvSleep(True if data[0] == 0x55 else False if data[0] == FORBIDDEN else None)
    if frame.id == CHARGE_ID + address:
        if len(data) < 2:
            raise CanCodecError(f"0x{frame.id:04X}: {len(data)} bytes, expected 2")
        return HvChargeCommand(charge=data[0] == FORBIDDEN, discharge=data[1] == FORBIDDEN)
    if frame.id == MASK_ID + address:
        return HvMaskRequest(bytes(data))
    return None


def answer(request: HvRequest, state: GatewayState, opts: HvOptions, *, asleep: bool = False) -> list[Frame]:
    """The frames that answer `request`."""
    if request.kind is RequestKind.EQUIPMENT:
        return encode_equipment(opts)
    return encode_ensemble(state, opts, asleep=asleep)


def encode_ensemble(state: GatewayState, opts: HvOptions, *, asleep: bool = False) -> list[Frame]:
    """0x4210…0x4290 (+addr) for `state`; `asleep` (the inverter sent sleep): status sleep, no current."""
    if asleep:
        state = replace(state, limits=tighten(state.limits, Command(disconnect=True), state.soc))
    lim = state.limits
    ccl = _positive(lim.ccl.value) if lim.charge_enable else 0.0
    dcl = _positive(lim.dcl.value) if lim.discharge_enable else 0.0
    e = _Enc(opts)
    cur = e.current_kind
    online = [p.sample for p in state.packs if p.in_service and p.sample is not None]
    pack_v = [(s.voltage, s.pack) for s in online]
    pack_t_hi = [(_max(s.cell_t), s.pack) for s in online]
    pack_t_lo = [(_min(s.cell_t), s.pack) for s in online]
    v_hi, v_lo = _extremes(pack_v)
    t_hi, t_lo = _extremes(pack_t_hi)[0], _extremes(pack_t_lo)[1]
    error, alarm, protection = _flags(state)
    return [
        e.frame(
            0x4210,
            f"H{cur}HBB",
            e.u16(state.voltage, 0.1),  # Battery Pile Total Voltage, 0.1 V
            e.current(state.current),  # Battery Pile Current, 0.1 A, offset
            e.temp(state.temperature),  # Second-level BMS temperature, 0.1 °C, offset 100 °C
            e.pct(state.soc),  # SOC, 1 %
            e.pct(state.soh),  # SOH, 1 %
        ),
        e.frame(
            0x4220,
            f"HH{cur}{cur}",
            e.u16(lim.cvl.value, 0.1),  # Charge cutoff voltage, 0.1 V
            e.u16(lim.dvl.value, 0.1),  # Discharge cutoff voltage, 0.1 V
            e.current(ccl),  # Max charge current, 0.1 A, offset
            e.current(-dcl),  # Max discharge current (negative), 0.1 A, offset
        ),
        e.frame(
            0x4230,
            "HHHH",
            e.u16(state.cell_v_max, 0.001),  # Maximum single battery cell voltage, mV
            e.u16(state.cell_v_min, 0.001),  # Minimum single battery cell voltage, mV
            _number(state.cell_v_max_at, opts.cells_per_pack),  # Max single battery cell voltage number
            _number(state.cell_v_min_at, opts.cells_per_pack),  # Min single battery cell voltage number
        ),
        e.frame(
            0x4240,
            "HHHH",
            e.temp(state.cell_t_max),  # Maximum single battery cell temperature, 0.1 °C, offset 100 °C
            e.temp(state.cell_t_min),  # Minimum single battery cell temperature
            _number(state.cell_t_max_at, opts.sensors_per_pack),  # Max single cell temperature number
            _number(state.cell_t_min_at, opts.sensors_per_pack),  # Min single cell temperature number
        ),
        e.frame(
            0x4250,
            "BHBHH",
            _basic_status(state, asleep),  # Basic status
            _cycles(state),  # Cycle period
            error,  # Error
            alarm,  # Alarm
            protection,  # Protection
        ),
        e.frame(
            0x4260,
            "HHHH",
            e.u16(v_hi[0], 0.001),  # Maximum module voltage, mV
            e.u16(v_lo[0], 0.001),  # Minimum module voltage, mV
            v_hi[1] + 1,  # Maximum module voltage number
            v_lo[1] + 1,  # Minimum module voltage number
        ),
        e.frame(
            0x4270,
            "HHHH",
            e.temp(t_hi[0]),  # Maximum module temperature, 0.1 °C, offset 100 °C
            e.temp(t_lo[0]),  # Minimum module temperature
            t_hi[1] + 1,  # Maximum module temperature number
            t_lo[1] + 1,  # Minimum module temperature number
        ),
        e.frame(
            0x4280,
            "BB6x",
            FORBIDDEN if ccl < _MIN_A else 0,  # Charge forbidden mark: no current allowed
            FORBIDDEN if dcl < _MIN_A else 0,  # Discharge forbidden mark
        ),
        e.frame(0x4290, "B7x", 0),  # Fault extension: nothing of ours maps onto it
    ]


def encode_equipment(opts: HvOptions) -> list[Frame]:
    """0x7310…0x7340 (+addr): versions, cell/module counts, voltage level and Ah, name."""
    e = _Enc(opts)
    cells = opts.cells_per_pack * opts.packs_in_series
    major, minor = BMS_VERSION
    return [
        # Hardware version, reserve, hardware V, hardware R, software major, minor, development major, minor
        e.frame(0x7310, "BBBBBBBB", 1, 0, 1, 0, major & 0xFF, minor & 0xFF, 0, 0),
        e.frame(
            0x7320,
            "HBBHH",
            e.u16(cells, 1),  # Battery module cells in series (all modules)
            e.u8(opts.packs_in_series),  # Battery modules in series
            e.u8(opts.cells_per_pack),  # Cells per module
            e.u16(opts.nominal_voltage, 1),  # Voltage level, 1 V
            e.u16(opts.capacity_ah, 1),  # AH number, 1 Ah
        ),
        e.frame(0x7330, "8s", _ascii(opts.manufacturer)),  # Battery name, bytes 0-7
        e.frame(0x7340, "8s", _ascii(opts.name)),  # Battery name, bytes 8-15
    ]


def encode_mask_reply(opts: HvOptions) -> Frame:
    """0x8250+addr: we won't mask the external communication fault (byte 0 = 0x00); bmsgw has no relay."""
    return Frame(MASK_REPLY_ID + opts.address, bytes(8), True)


# --- internals -------------------------------------------------------------------------------------------

_MIN_A: Final = 0.05  # the smallest limit that does not round to 0 in a 0.1 A field
_U16: Final = (0, 0xFFFF)
_S16: Final = (-0x8000, 0x7FFF)


class _Enc:
    """Field encoders bound to one output's byte order and current offset."""

    __slots__ = ("_addr", "_off", "_order", "_unknown_c")

    def __init__(self, opts: HvOptions) -> None:
        self._order = "<" if opts.byte_order == "little" else ">"
        self._off = round_clamp(opts.current_offset_a * 10.0, 0, 0xFFFF)
        self._addr = opts.address
        self._unknown_c = opts.unknown_temperature_c

    @property
    def current_kind(self) -> str:
        """struct code of the current fields: u16 with an offset, s16 without."""
        return "H" if self._off else "h"

    def frame(self, fid: int, fmt: str, *values: int | bytes) -> Frame:
        return Frame(fid + self._addr, struct.pack(self._order + fmt, *values), True)

    def current(self, amps: float) -> int:
        """0.1 A plus the offset: u16 with an offset, s16 without."""
        x = _finite(amps) * 10.0
        if not self._off:
            return round_clamp(x, *_S16)
        return round_clamp(x, -self._off, 0xFFFF - self._off) + self._off

    @staticmethod
    def u16(value: float, scale: float) -> int:
        return round_clamp(_finite(value) / scale, *_U16)

    @staticmethod
    def u8(value: float) -> int:
        return round_clamp(_finite(value), 0, 0xFF)

    @staticmethod
    def pct(fraction: float) -> int:
        """A 0..1 fraction as whole percent, 0..100."""
        return round_clamp(_finite(fraction) * 100.0, 0, 100)

    def temp(self, celsius: float) -> int:
        """0.1 °C with offset 100 °C (raw 1000 = 0 °C); unknown → the configured unknown temperature."""
        return round_clamp((known_temperature(celsius, self._unknown_c) + 100.0) * 10.0, *_U16)


def _finite(x: float) -> float:
    """NaN (no data) → 0; ±inf stay (they clamp to the field bound)."""
    return 0.0 if math.isnan(x) else x


def _positive(x: float) -> float:
    """A current limit as sent: negative and NaN → 0."""
    return x if x > 0 else 0.0


def _number(ref: CellRef, per_pack: int) -> int:
    """1-based cell/sensor number across packs."""
    return min(max(ref.pack * per_pack + ref.cell + 1, 0), 0xFFFF)


def _max(values: Iterable[float]) -> float:
    return max((v for v in values if not math.isnan(v)), default=math.nan)


def _min(values: Iterable[float]) -> float:
    return min((v for v in values if not math.isnan(v)), default=math.nan)


def _extremes(items: Sequence[tuple[float, int]]) -> tuple[tuple[float, int], tuple[float, int]]:
    """(highest, lowest) of (value, pack) pairs, NaN values skipped; (NaN, -1) when there are none."""
    ok = [x for x in items if not math.isnan(x[0])]
    return max(ok, default=(math.nan, -1)), min(ok, default=(math.nan, -1))


def _basic_status(state: GatewayState, asleep: bool) -> int:
    """Bits 0-2: 0 sleep, 1 charge, 2 discharge, 3 idle; bit 3 force charge request, bit 4 balance charge."""
    lim = state.limits
    if asleep:
        status = 0
    elif state.current >= IDLE_BAND_A:
        status = 1
    elif state.current <= -IDLE_BAND_A:
        status = 2
    else:
        status = 3
    force = lim.force_charge_1 or lim.force_charge_2
    return status | force << 3 | lim.full_charge_request << 4


def _cycles(state: GatewayState) -> int:
    cycles = [p.health.equivalent_full_cycles for p in state.packs if p.health is not None]
    return round_clamp(max(cycles, default=0.0), *_U16)


# 0x4250 error byte (byte 3)
_E_COMM: Final = 1 << 2  # internal communication error
_E_OTHER: Final = 1 << 7  # other error
# 0x4250 alarm (bytes 4-5) and protection (bytes 6-7) bits
_BLV, _BHV, _PLV, _PHV, _CLT, _CHT, _DLT, _DHT, _COCA, _DOCA = (1 << b for b in range(10))
_BITS: Final[dict[AlarmCode, int]] = {
    AlarmCode.CELL_UNDERVOLTAGE: _BLV,  # single cell low voltage
    AlarmCode.CELL_OVERVOLTAGE: _BHV,  # single cell high voltage
    AlarmCode.PACK_UNDERVOLTAGE: _PLV,  # charge system low voltage
    AlarmCode.PACK_OVERVOLTAGE: _PHV,  # charge system high voltage
    AlarmCode.CHARGE_UNDERTEMPERATURE: _CLT,  # charge cell low temperature
    AlarmCode.UNDERTEMPERATURE: _CLT | _DLT,  # charge and discharge cell low temperature
    AlarmCode.OVERTEMPERATURE: _CHT | _DHT,  # charge and discharge cell high temperature
    AlarmCode.THERMAL_RUNAWAY: _CHT | _DHT,
    AlarmCode.CHARGE_OVERCURRENT: _COCA,  # charge over current
    AlarmCode.DISCHARGE_OVERCURRENT: _DOCA,  # discharge over current
}
_OTHER_ERROR_CODES: Final = frozenset({AlarmCode.BMS_FAULT, AlarmCode.SENSOR_FAULT})


def _flags(state: GatewayState) -> tuple[int, int, int]:
    """(error, alarm, protection) bits: WARNING → alarm, ALARM/FAULT → protection (docs/inverters.md)."""
    error = alarm = protection = 0
    for a in state.alarms:
        if a.code is AlarmCode.COMM_LOST:
            error |= _E_COMM
        if a.level >= AlarmLevel.FAULT or (a.level >= AlarmLevel.ALARM and a.code in _OTHER_ERROR_CODES):
            error |= _E_OTHER
        bits = _BITS.get(a.code, 0)
        if a.level >= AlarmLevel.ALARM:
            protection |= bits
        else:
            alarm |= bits
    return error, alarm, protection


def _ascii(text: str) -> bytes:
    return text.encode("ascii", "replace")[:8].ljust(8, b"\0")
