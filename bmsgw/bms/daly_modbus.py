"""Daly H/K/M/S "Modbus" series (9600 8N1): Modbus RTU function 3 from slave 0xD2, one read of the
real-time block (62 registers from 0x0000) <-> DalyModbusStatus -> BmsReading.

Frames: request  slave | 03 | start (u16 BE) | count (u16 BE) | CRC-16/Modbus (LE)
        response slave | 03 | byte count | registers (u16 BE) | CRC;  exception: slave | 83 | code | CRC
Register map ("D2" block; syssi/esphome-daly-bms docs/protocol-register-map.md, aiobmsble daly_bms.py):
  0x00-0x1F cell voltages (mV), 0x20-0x27 temperatures (offset 40), 0x28 total voltage (0.1 V),
  0x29 current (0.1 A, offset 30000, above = charging), 0x2A SOC (0.1 %), 0x2F state (0 idle, 1 charge,
  2 discharge), 0x30 remaining capacity (0.1 Ah), 0x31 cell count, 0x32 sensor count, 0x33 cycles,
  0x34 balancer state, 0x35 charge MOSFET, 0x36 discharge MOSFET, 0x3A-0x3D alarm bits.
Pure: no asyncio, no logging, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from bmsgw.bms.framing import BmsDecodeError, BmsReading, Framing
from bmsgw.model import BmsFlags

__all__ = [
    "FRAMING",
    "REALTIME_COUNT",
    "SLAVE",
    "DalyModbusDecodeError",
    "DalyModbusStatus",
    "crc16",
    "decode_registers",
    "decode_request",
    "decode_response",
    "encode_registers",
    "encode_response",
    "read_request",
    "reading",
]


class DalyModbusDecodeError(BmsDecodeError):
    """Not a valid Modbus RTU function-3 frame (CRC, length), an exception answer, or a short block."""


SLAVE = 0xD2  # the BMS's default Modbus slave id
REALTIME_COUNT = 62  # registers 0x00-0x3D


@dataclass(frozen=True, slots=True)
class DalyModbusStatus:
    """The real-time block (SI units; current > 0 = charging)."""

    cell_v: tuple[float, ...]
    temps: tuple[float, ...]
    voltage: float
    current: float
    soc: float  # %
    state: int  # 0 idle, 1 charging, 2 discharging
    remaining_ah: float
    cycles: int
    balancing: bool
    charge_fet: bool
    discharge_fet: bool
    alarms: int  # registers 0x3A-0x3D as one 64-bit word (0x3A most significant)


FRAMING = Framing(start=b"", header_len=3, length=lambda h: _frame_length(h))  # noqa: PLW0108


def crc16(data: bytes) -> int:
    """CRC-16/Modbus (poly 0xA001 reflected, init 0xFFFF); sent low byte first."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def read_request(slave: int = SLAVE, start: int = 0, count: int = REALTIME_COUNT) -> bytes:
    """Function 3 (read holding registers) request."""
    return _with_crc(bytes((slave, 3)) + start.to_bytes(2, "big") + count.to_bytes(2, "big"))


def decode_request(frame: bytes) -> tuple[int, int, int]:
    """(slave, start, count) of a function-3 request; DalyModbusDecodeError if it is not one."""
    body = _check(frame)
    if len(frame) != 8 or frame[1] != 3:
        raise DalyModbusDecodeError(f"not a function-3 request: {frame.hex(' ')}")
    return body[0], int.from_bytes(body[2:4], "big"), int.from_bytes(body[4:6], "big")


def decode_response(frame: bytes, slave: int = SLAVE) -> list[int] | None:
    """Registers of a function-3 answer from `slave`; None for a valid frame from another slave."""
    body = _check(frame)
    if len(body) < 3 or body[1] not in (0x03, 0x83):
        raise DalyModbusDecodeError(f"not a function-3 answer: {frame[:8].hex(' ')}")
    if body[0] != slave:
        return None
    if body[1] == 0x83:
        raise DalyModbusDecodeError(f"slave 0x{slave:02X} answered with exception code {body[2]}")
    data = body[3:]
    if body[2] != len(data) or len(data) % 2:
        raise DalyModbusDecodeError(f"byte count {body[2]} does not match {len(data)} data bytes")
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


def encode_response(registers: list[int], slave: int = SLAVE) -> bytes:
    """A function-3 answer carrying `registers`."""
    data = b"".join((r & 0xFFFF).to_bytes(2, "big") for r in registers)
    return _with_crc(bytes((slave, 3, len(data))) + data)


def decode_registers(regs: list[int]) -> DalyModbusStatus:
    """The real-time block (at least 62 registers from 0x0000) -> DalyModbusStatus."""
    if len(regs) < REALTIME_COUNT:
        raise DalyModbusDecodeError(f"{len(regs)} registers, expected {REALTIME_COUNT}")
    cells, sensors = regs[0x31], regs[0x32]
    if not 1 <= cells <= 32 or sensors > 8:
        raise DalyModbusDecodeError(f"implausible counts: {cells} cells, {sensors} sensors")
    return DalyModbusStatus(
        cell_v=tuple(r / 1000.0 for r in regs[:cells]),
        temps=tuple(float(r - 40) for r in regs[0x20 : 0x20 + sensors]),
        voltage=regs[0x28] / 10.0,
        current=(regs[0x29] - 30000) / 10.0,
        soc=regs[0x2A] / 10.0,
        state=regs[0x2F],
        remaining_ah=regs[0x30] / 10.0,
        cycles=regs[0x33],
        balancing=regs[0x34] != 0,
        charge_fet=regs[0x35] != 0,
        discharge_fet=regs[0x36] != 0,
        alarms=regs[0x3A] << 48 | regs[0x3B] << 32 | regs[0x3C] << 16 | regs[0x3D],
    )


def encode_registers(s: DalyModbusStatus) -> list[int]:
    """The real-time block reporting `s` (min/max/average/delta registers derived from the cells)."""
    regs = [0] * REALTIME_COUNT
    mv = [round(v * 1000) for v in s.cell_v]
    regs[: len(mv)] = mv
    regs[0x20 : 0x20 + len(s.temps)] = [round(t) + 40 for t in s.temps]
    regs[0x28] = round(s.voltage * 10)
    regs[0x29] = round(s.current * 10) + 30000
    regs[0x2A] = round(s.soc * 10)
    regs[0x2B], regs[0x2C] = max(mv), min(mv)
    if s.temps:
        regs[0x2D], regs[0x2E] = max(regs[0x20 : 0x20 + len(s.temps)]), min(regs[0x20 : 0x20 + len(s.temps)])
    regs[0x2F] = s.state
    regs[0x30] = round(s.remaining_ah * 10)
    regs[0x31], regs[0x32], regs[0x33] = len(mv), len(s.temps), s.cycles
    regs[0x34], regs[0x35], regs[0x36] = int(s.balancing), int(s.charge_fet), int(s.discharge_fet)
    regs[0x37], regs[0x38] = round(sum(mv) / len(mv)), max(mv) - min(mv)
    regs[0x3A:0x3E] = [s.alarms >> shift & 0xFFFF for shift in (48, 32, 16, 0)]
    return regs


def reading(s: DalyModbusStatus) -> BmsReading:
    """Our model of the block: MOSFET and balancer flags; alarm bits only as an extra (layout unpublished)."""
    flags = BmsFlags.NONE
    for on, flag in ((s.charge_fet, BmsFlags.CHARGE_FET), (s.discharge_fet, BmsFlags.DISCHARGE_FET)):
        flags |= flag if on else BmsFlags.NONE
    flags |= BmsFlags.BALANCING if s.balancing else BmsFlags.NONE
    extra: dict[str, float | int | str] = {
        "remaining_ah": s.remaining_ah,
        "cycles": s.cycles,
        "state": s.state,
        "alarms": f"{s.alarms:016x}",
    }
    return BmsReading(s.cell_v, s.temps, s.current, s.voltage, flags, s.soc / 100.0, extra)


# ---------------------------------------------------------------------------------------------------


def _frame_length(header: bytes) -> int:
    """slave | function | byte count (function 3) or exception code (0x83)."""
    if header[1] == 0x03:
        return header[2] + 5
    return 5 if header[1] == 0x83 else 0


def _with_crc(body: bytes) -> bytes:
    return body + crc16(body).to_bytes(2, "little")


def _check(frame: bytes) -> bytes:
    """The frame without its CRC, if the CRC is right."""
    if len(frame) < 4:
        raise DalyModbusDecodeError(f"frame of {len(frame)} bytes is too short")
    if crc16(frame[:-2]) != int.from_bytes(frame[-2:], "little"):
        raise DalyModbusDecodeError(f"CRC {frame[-2:].hex()} does not match {frame[:-2].hex(' ')[:48]}…")
    return frame[:-2]
