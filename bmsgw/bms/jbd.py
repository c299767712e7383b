"""JBD / Xiaoxiang / Overkill Solar BMS UART/RS485 protocol (9600 8N1): register reads `DD A5 … 77`,
basic info (0x03) and cell voltages (0x04) <-> JbdBasicInfo / cells -> BmsReading.

Frames (syssi/esphome-jbd-bms, dbus-serialbattery lltjbd.py):
  read request  DD | A5 | register | 00 | checksum (u16 BE) | 77
  response      DD | register | status (00 ok, 80 error) | length | data | checksum (u16 BE) | 77
  checksum = (0x10000 - sum of the bytes from byte 2 up to the checksum) & 0xFFFF
Pure: no asyncio, no logging, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from bmsgw.bms.framing import BmsDecodeError, BmsReading, Framing, bit_flags
from bmsgw.model import BmsFlags

__all__ = [
    "FRAMING",
    "REG_BASIC",
    "REG_CELLS",
    "REG_VERSION",
    "JbdBasicInfo",
    "JbdDecodeError",
    "decode_basic",
    "decode_cells",
    "decode_request",
    "decode_response",
    "encode_basic",
    "encode_cells",
    "encode_response",
    "reading",
    "request",
]


class JbdDecodeError(BmsDecodeError):
    """Not a valid JBD frame (marker, end byte, checksum, length), or a BMS error answer."""


REG_BASIC = 0x03  # basic information and status
REG_CELLS = 0x04  # cell voltages
REG_VERSION = 0x05  # hardware version (model string)


@dataclass(frozen=True, slots=True)
class JbdBasicInfo:
    """Register 0x03 (SI units; current > 0 = charging)."""

    voltage: float  # total voltage (10 mV)
    current: float  # current (s16, 10 mA)
    remaining_ah: float  # remaining capacity (10 mAh)
    nominal_ah: float  # nominal capacity (10 mAh)
    cycles: int  # cycle count
    production_date: int  # (year - 2000) << 9 | month << 5 | day
    balance: int  # balance status: bit n = cell n+1 (low word cells 1-16, high word 17-32)
    protection: int  # protection status bitmask
    version: int  # software version (0x80 = 8.0)
    rsoc: int  # remaining state of charge, %
    fet: int  # FET control status: bit 0 charge, bit 1 discharge
    cell_count: int  # number of battery strings
    temps: tuple[float, ...]  # NTC temperatures, °C (0.1 K on the wire, offset 2731)


FRAMING = Framing(start=b"\xdd", header_len=4, length=lambda h: h[3] + 7)


def request(register: int) -> bytes:
    """Read request for `register` (e.g. 0x03 -> DD A5 03 00 FF FD 77)."""
    return _frame(0xA5, bytes((register, 0)))


def decode_request(frame: bytes) -> int:
    """The register of a read request frame; JbdDecodeError if it is not one."""
    body = _unwrap(frame)
    if frame[1] != 0xA5 or len(body) != 2 or body[1] != 0:
        raise JbdDecodeError(f"not a read request: {frame.hex(' ')}")
    return body[0]


def decode_response(frame: bytes) -> tuple[int, bytes] | None:
    """(register, data) of a response; None for a valid request frame (e.g. our own echoed)."""
    body = _unwrap(frame)
    if frame[1] in (0xA5, 0x5A):
        return None
    status, data = body[0], body[2:]
    if status != 0:
        raise JbdDecodeError(f"BMS answered register 0x{frame[1]:02X} with error status 0x{status:02X}")
    return frame[1], data


def decode_basic(data: bytes) -> JbdBasicInfo:
    """Register 0x03 data (23 bytes plus 2 per NTC; later firmware appends more, ignored)."""
    if len(data) < _BASIC_LEN:
        raise JbdDecodeError(f"basic info of {len(data)} bytes, expected at least {_BASIC_LEN}")
    ntc = data[22]
    if len(data) < _BASIC_LEN + 2 * ntc:
        raise JbdDecodeError(f"basic info announces {ntc} NTCs but has {len(data)} bytes")
    u = [int.from_bytes(data[i : i + 2], "big") for i in range(0, 16, 2)]
    temps = tuple(
        (int.from_bytes(data[_BASIC_LEN + 2 * k : _BASIC_LEN + 2 * k + 2], "big") - 2731) / 10.0
        for k in range(ntc)
    )
    return JbdBasicInfo(
        voltage=u[0] / 100.0,
        current=int.from_bytes(data[2:4], "big", signed=True) / 100.0,
        remaining_ah=u[2] / 100.0,
        nominal_ah=u[3] / 100.0,
        cycles=u[4],
        production_date=u[5],
        balance=u[6] | u[7] << 16,
        protection=int.from_bytes(data[16:18], "big"),
        version=data[18],
        rsoc=data[19],
        fet=data[20],
        cell_count=data[21],
        temps=temps,
    )


def decode_cells(data: bytes) -> tuple[float, ...]:
    """Register 0x04 data: cell voltages in V (u16 mV each)."""
    if not data or len(data) % 2:
        raise JbdDecodeError(f"cell data of {len(data)} bytes is not 2 x n with n >= 1")
    return tuple(int.from_bytes(data[i : i + 2], "big") / 1000.0 for i in range(0, len(data), 2))


def encode_response(register: int, data: bytes, status: int = 0) -> bytes:
    """A response frame for `register` carrying `data` (status 0x80 = error)."""
    if len(data) > 0xFF:
        raise ValueError(f"{len(data)} data bytes do not fit one frame")
    return _frame(register, bytes((status, len(data))) + data)


def encode_basic(b: JbdBasicInfo) -> bytes:
    """Register 0x03 response frame reporting `b`."""
    data = (
        _u16(round(b.voltage * 100))
        + round(b.current * 100).to_bytes(2, "big", signed=True)
        + _u16(round(b.remaining_ah * 100))
        + _u16(round(b.nominal_ah * 100))
        + _u16(b.cycles)
        + _u16(b.production_date)
        + _u16(b.balance & 0xFFFF)
        + _u16(b.balance >> 16)
        + _u16(b.protection)
        + bytes((b.version, b.rsoc, b.fet, b.cell_count, len(b.temps)))
        + b"".join(_u16(round(t * 10) + 2731) for t in b.temps)
    )
    return encode_response(REG_BASIC, data)


def encode_cells(cells: tuple[float, ...]) -> bytes:
    """Register 0x04 response frame with `cells` (V)."""
    return encode_response(REG_CELLS, b"".join(_u16(round(v * 1000)) for v in cells))


def reading(b: JbdBasicInfo, cells: tuple[float, ...]) -> BmsReading:
    """Our model from basic info and cell voltages: FET, balance and protection bits to BmsFlags."""
    flags = BmsFlags.NONE
    if b.fet & 1:
        flags |= BmsFlags.CHARGE_FET
    if b.fet & 2:
        flags |= BmsFlags.DISCHARGE_FET
    if b.balance:
        flags |= BmsFlags.BALANCING
    flags |= bit_flags(b.protection, _PROTECTION_FLAGS)
    extra: dict[str, float | int | str] = {
        "cycles": b.cycles,
        "remaining_ah": b.remaining_ah,
        "nominal_ah": b.nominal_ah,
        "protection": b.protection,
        "balance": b.balance,
        "software_version": f"{b.version >> 4}.{b.version & 0xF}",
    }
    return BmsReading(cells, b.temps, b.current, b.voltage, flags, b.rsoc / 100.0, extra)


# ---------------------------------------------------------------------------------------------------

_BASIC_LEN = 23  # register 0x03 bytes before the NTC values

# Protection status bits (bit 12, MOS software lock, is a user setting: the FET bits show it).
_PROTECTION_FLAGS = (
    (0, BmsFlags.ALARM_CELL_OV),  # cell over-voltage
    (1, BmsFlags.ALARM_CELL_UV),  # cell under-voltage
    (2, BmsFlags.ALARM_CELL_OV),  # pack over-voltage
    (3, BmsFlags.ALARM_CELL_UV),  # pack under-voltage
    (4, BmsFlags.ALARM_OVERTEMP),  # charge over-temperature
    (5, BmsFlags.ALARM_UNDERTEMP),  # charge under-temperature
    (6, BmsFlags.ALARM_OVERTEMP),  # discharge over-temperature
    (7, BmsFlags.ALARM_UNDERTEMP),  # discharge under-temperature
    (8, BmsFlags.ALARM_CHARGE_OC),  # charge over-current
    (9, BmsFlags.ALARM_DISCHARGE_OC),  # discharge over-current
    (10, BmsFlags.ALARM_SHORT_CIRCUIT),  # short circuit
    (11, BmsFlags.ALARM_INTERNAL),  # front-end IC error
)


def _u16(v: int) -> bytes:
    return int(v).to_bytes(2, "big")


def _checksum(body: bytes) -> bytes:
    return ((0x10000 - sum(body)) & 0xFFFF).to_bytes(2, "big")


def _frame(second: int, body: bytes) -> bytes:
    """DD | second byte (A5 or register) | body | checksum over body | 77."""
    return b"\xdd" + bytes((second,)) + body + _checksum(body) + b"\x77"


def _unwrap(frame: bytes) -> bytes:
    """The checksummed body (bytes 2..n-4) of a frame whose framing and checksum are right."""
    n = len(frame)
    if n < 7 or frame[0] != 0xDD:
        raise JbdDecodeError(f"not a JBD frame: {frame[:8].hex(' ')}")
    if frame[-1] != 0x77:
        raise JbdDecodeError(f"end byte 0x{frame[-1]:02X}, expected 0x77")
    if n != frame[3] + 7:
        raise JbdDecodeError(f"length byte {frame[3]} does not match a {n}-byte frame")
    body = frame[2 : n - 3]
    if frame[n - 3 : n - 1] != _checksum(body):
        raise JbdDecodeError(f"checksum {frame[n - 3 : n - 1].hex()}, computed {_checksum(body).hex()}")
    return body
