"""JK BMS (JK-B*/JK-BD*, "GPS port" UART-TTL/RS485, 115200 8N1) `4E 57` protocol: read-all request,
status response (id/value records) <-> JkStatus -> BmsReading.

Frame (syssi/esphome-jk-bms docs/protocol-design-uart-ttl-gps-port.md):
  4E 57 | length (u16 BE, = frame length - 2) | terminal number (4) | command | frame source | transport
  type | data (records) | record number (4) | end identity 0x68 | checksum (4: 00 00, then u16 BE sum of
  every byte before it)
Pure: no asyncio, no logging, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from bmsgw.bms.framing import BmsDecodeError, BmsReading, Framing, bit_flags
from bmsgw.model import BmsFlags

__all__ = [
    "FRAMING",
    "JkDecodeError",
    "JkStatus",
    "decode_request",
    "decode_response",
    "encode_response",
    "read_all_request",
    "reading",
]


class JkDecodeError(BmsDecodeError):
    """Not a valid JK `4E 57` frame (marker, length, end identity, checksum, records)."""


CMD_READ_ALL = 0x06  # command: 01 activate, 02 write, 03 read one, 05 password, 06 read all
SOURCE_BMS, SOURCE_PC = 0x00, 0x03  # frame source: 0 BMS, 1 Bluetooth, 2 GPS, 3 PC
TYPE_REQUEST, TYPE_RESPONSE = 0x00, 0x01  # transport type: 0 request, 1 response, 2 BMS upload


@dataclass(frozen=True, slots=True)
class JkStatus:
    """What a read-all response reports (SI units; current > 0 = charging)."""

    cell_v: tuple[float, ...]  # 0x79 cell voltages (mV on the wire)
    mos_temp: float  # 0x80 power tube (MOSFET) temperature, °C
    temps: tuple[float, float]  # 0x81 battery box, 0x82 battery temperature, °C
    voltage: float  # 0x83 total voltage (10 mV)
    current: float  # 0x84 current (10 mA; sign coding depends on 0xC0)
    soc: int  # 0x85 remaining capacity, %
    cycles: int  # 0x87 number of battery cycles
    warnings: int  # 0x8B battery warning bitmask
    status: int  # 0x8C battery status: bit 0 charge MOS, bit 1 discharge MOS, bit 2 balancer
    protocol_version: int = 1  # 0xC0: 0 = current offset 10000, 1 = bit 15 set when charging


FRAMING = Framing(start=b"\x4e\x57", header_len=4, length=lambda h: _frame_length(h))  # noqa: PLW0108 (defined below)


def read_all_request() -> bytes:
    """The 21-byte "read all data" request (command 06, source PC)."""
    return _frame(CMD_READ_ALL, SOURCE_PC, TYPE_REQUEST, b"\x00")


def decode_request(frame: bytes) -> int:
    """The command byte of a host request frame; JkDecodeError if it is not one."""
    cmd, _, ftype, _ = _unwrap(frame)
    if ftype != TYPE_REQUEST:
        raise JkDecodeError(f"transport type {ftype}: not a request")
    return cmd


def decode_response(frame: bytes) -> JkStatus | None:
    """Decode a read-all response; None for a valid frame that is not one (e.g. our request echoed)."""
    cmd, _, ftype, data = _unwrap(frame)
    if cmd != CMD_READ_ALL or ftype != TYPE_RESPONSE:
        return None
    rec = _records(data)
    missing = [f"0x{i:02X}" for i in _REQUIRED if i not in rec]
    if missing:
        raise JkDecodeError(f"read-all response lacks records {', '.join(missing)}")
    raw_cells = rec[0x79]
    if not raw_cells or len(raw_cells) % 3:
        raise JkDecodeError(f"0x79 cell block of {len(raw_cells)} bytes is not n x 3 with n >= 1")
    cells = tuple(
        int.from_bytes(raw_cells[i + 1 : i + 3], "big") / 1000.0 for i in range(0, len(raw_cells), 3)
    )
    version = rec[0xC0][0] if 0xC0 in rec else 0
    return JkStatus(
        cell_v=cells,
        mos_temp=_temp(_u(rec[0x80])),
        temps=(_temp(_u(rec[0x81])), _temp(_u(rec[0x82]))),
        voltage=_u(rec[0x83]) / 100.0,
        current=_current(_u(rec[0x84]), version),
        soc=_u(rec[0x85]),
        cycles=_u(rec[0x87]),
        warnings=_u(rec[0x8B]),
        status=_u(rec[0x8C]),
        protocol_version=version,
    )


def encode_response(s: JkStatus) -> bytes:
    """A read-all response frame reporting `s` (the records a JK sends that bmsgw reads)."""
    cells = b"".join(bytes((i + 1,)) + _mv(v) for i, v in enumerate(s.cell_v))
    if len(cells) > 0xFF:
        raise ValueError(f"{len(s.cell_v)} cells do not fit a 0x79 record")
    records = [
        b"\x79" + bytes((len(cells),)) + cells,
        b"\x80" + _u16(_temp_raw(s.mos_temp)),
        b"\x81" + _u16(_temp_raw(s.temps[0])),
        b"\x82" + _u16(_temp_raw(s.temps[1])),
        b"\x83" + _u16(round(s.voltage * 100)),
        b"\x84" + _u16(_current_raw(s.current, s.protocol_version)),
        b"\x85" + bytes((s.soc,)),
        b"\x86" + bytes((len(s.temps),)),
        b"\x87" + _u16(s.cycles),
        b"\x8a" + _u16(len(s.cell_v)),
        b"\x8b" + _u16(s.warnings),
        b"\x8c" + _u16(s.status),
        b"\xc0" + bytes((s.protocol_version,)),
    ]
    return _frame(CMD_READ_ALL, SOURCE_BMS, TYPE_RESPONSE, b"".join(records))


def reading(s: JkStatus) -> BmsReading:
    """Our model of a JK status: cell temperatures are 0x81/0x82 (the MOSFET one goes to `extra`)."""
    flags = bit_flags(s.status, _STATUS_FLAGS) | bit_flags(s.warnings, _WARNING_FLAGS)
    extra: dict[str, float | int | str] = {
        "mos_temp_c": s.mos_temp,
        "cycles": s.cycles,
        "warnings": s.warnings,
        "status": s.status,
        "protocol_version": s.protocol_version,
    }
    return BmsReading(s.cell_v, s.temps, s.current, s.voltage, flags, s.soc / 100.0, extra)


# ---------------------------------------------------------------------------------------------------

_HEAD = 11  # marker, length, terminal number, command, source, type
_TAIL = 9  # record number, end identity, checksum
_END = 0x68
_MIN_LEN = _HEAD + 1 + _TAIL
_MAX_LEN = 1024  # 32 cells and every record fit in about 400 bytes

# Bytes of value after each record id (0x79 carries its own length byte), from the register table.
_SIZES: dict[int, int] = {
    **dict.fromkeys((0x80, 0x81, 0x82, 0x83, 0x84, 0x87, 0x8A, 0x8B, 0x8C), 2),
    **dict.fromkeys(range(0x8E, 0x9D), 2),
    **dict.fromkeys(range(0x9E, 0xA9), 2),
    **dict.fromkeys((0xAD, 0xB0, 0xBE, 0xBF), 2),
    **dict.fromkeys((0x85, 0x86, 0x9D, 0xA9, 0xAB, 0xAC, 0xAE, 0xAF, 0xB1, 0xB3, 0xB8), 1),
    **dict.fromkeys((0xBB, 0xBC, 0xBD, 0xC0), 1),
    **dict.fromkeys((0x89, 0xAA, 0xB5, 0xB6, 0xB9), 4),
    0xB2: 10,  # parameter password
    0xB4: 8,  # device ID code
    0xB7: 15,  # software version
    0xBA: 24,  # manufacturer ID
}
_REQUIRED = (0x79, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x87, 0x8B, 0x8C)

# 0x8C battery status bits.
_STATUS_FLAGS = ((0, BmsFlags.CHARGE_FET), (1, BmsFlags.DISCHARGE_FET), (2, BmsFlags.BALANCING))
# 0x8B warning bits that mean the BMS is protecting (bit 0 low capacity, bit 7 cell difference: no flag).
_WARNING_FLAGS = (
    (1, BmsFlags.ALARM_OVERTEMP),  # MOS tube over-temperature
    (2, BmsFlags.ALARM_CELL_OV),  # charging over-voltage
    (3, BmsFlags.ALARM_CELL_UV),  # discharging under-voltage
    (4, BmsFlags.ALARM_OVERTEMP),  # battery over-temperature
    (5, BmsFlags.ALARM_CHARGE_OC),  # charging over-current
    (6, BmsFlags.ALARM_DISCHARGE_OC),  # discharging over-current
    (8, BmsFlags.ALARM_OVERTEMP),  # battery box over-temperature
    (9, BmsFlags.ALARM_UNDERTEMP),  # battery low temperature
    (10, BmsFlags.ALARM_CELL_OV),  # cell (monomer) over-voltage
    (11, BmsFlags.ALARM_CELL_UV),  # cell (monomer) under-voltage
    (12, BmsFlags.ALARM_INTERNAL),  # 309_A protection
    (13, BmsFlags.ALARM_INTERNAL),  # 309_B protection
)


def _frame_length(header: bytes) -> int:
    n = int.from_bytes(header[2:4], "big") + 2
    return n if _MIN_LEN <= n <= _MAX_LEN else 0


def _frame(cmd: int, source: int, ftype: int, data: bytes) -> bytes:
    body = (
        b"\x4e\x57"
        + (_HEAD + len(data) + _TAIL - 2).to_bytes(2, "big")
        + bytes(4)  # terminal number
        + bytes((cmd, source, ftype))
        + data
        + bytes(4)  # record number
        + bytes((_END, 0, 0))
    )
    return body + (sum(body) & 0xFFFF).to_bytes(2, "big")


def _unwrap(frame: bytes) -> tuple[int, int, int, bytes]:
    """(command, source, transport type, data) of a frame whose framing and checksum are right."""
    n = len(frame)
    if frame[:2] != b"\x4e\x57":
        raise JkDecodeError(f"frame starts with {frame[:2].hex(' ')}, expected 4e 57")
    if n < _MIN_LEN:
        raise JkDecodeError(f"frame of {n} bytes is shorter than {_MIN_LEN}")
    length = int.from_bytes(frame[2:4], "big")
    if length != n - 2:
        raise JkDecodeError(f"length field {length} does not match a {n}-byte frame")
    if frame[n - 5] != _END:
        raise JkDecodeError(f"end identity 0x{frame[n - 5]:02X}, expected 0x68")
    got = int.from_bytes(frame[n - 4 :], "big")
    want = sum(frame[: n - 2]) & 0xFFFF
    if got != want:
        raise JkDecodeError(f"checksum 0x{got:08X}, computed 0x{want:04X}")
    return frame[8], frame[9], frame[10], frame[_HEAD : n - _TAIL]


def _records(data: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    i, n = 0, len(data)
    while i < n:
        rid = data[i]
        if rid == 0x79:
            if i + 1 >= n:
                raise JkDecodeError("0x79 cell record cut off")
            size, i = data[i + 1], i + 2
        elif rid in _SIZES:
            size, i = _SIZES[rid], i + 1
        else:
            raise JkDecodeError(f"unknown record id 0x{rid:02X} at data byte {i}")
        if i + size > n:
            raise JkDecodeError(f"record 0x{rid:02X} cut off")
        out[rid] = data[i : i + size]
        i += size
    return out


def _u(b: bytes) -> int:
    return int.from_bytes(b, "big")


def _u16(v: int) -> bytes:
    return int(v).to_bytes(2, "big")


def _mv(v: float) -> bytes:
    return _u16(round(v * 1000))


def _temp(raw: int) -> float:
    """0x80-0x82: 0..100 = °C; above 100 is negative (101 = -1 °C)."""
    return float(raw if raw <= 100 else 100 - raw)


def _temp_raw(c: float) -> int:
    t = round(c)
    return t if t >= 0 else 100 - t


def _current(raw: int, version: int) -> float:
    """0x84 in A, > 0 charging. 0xC0 = 1: bit 15 set = charging, 10 mA; 0: (10000 - raw) x 10 mA."""
    if version == 1:
        magnitude = (raw & 0x7FFF) / 100.0
        return magnitude if raw & 0x8000 else 0.0 - magnitude  # no -0.0
    return (10000 - raw) / 100.0


def _current_raw(a: float, version: int) -> int:
    c = round(a * 100)
    if version == 1:
        return (abs(c) & 0x7FFF) | (0x8000 if c > 0 else 0)
    return (10000 - c) & 0xFFFF
