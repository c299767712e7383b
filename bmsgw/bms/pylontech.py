"""Pylontech RS485 as a pack-side protocol (source `pylontech-rs485`: a real stack read as packs, one pack
per module address): the ASCII frame as a FrameBuffer framing, answers of one module, the 0x42 analog /
0x44 alarm records -> BmsReading, and the 0x92 management record -> the module's own limits (BmsRequest).

Frames and payloads are bmsgw.inverter.pylontech_rs485's (V3.3 §2-3); this file only adapts them to the
serial BMS sources (Seplos V2 uses the same frame, see bmsgw.bms.seplos). Pure: no asyncio, no logging,
no clock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from bmsgw.bms.framing import BmsDecodeError, BmsReading, Framing
from bmsgw.inverter.pylontech_rs485 import (
    ALARM_OTHER,
    CID1_BATTERY,
    Command,
    Management,
    ModuleAlarms,
    ModuleRecords,
    ModuleValues,
    Rs485Error,
    Status1,
    Status2,
    decode_alarms,
    decode_analog,
    decode_frame,
    decode_management,
    encode_request,
    lchksum,
)
from bmsgw.model import BmsFlags, BmsRequest

__all__ = [
    "FRAMING",
    "PylontechDecodeError",
    "PylontechRefusedError",
    "decode_alarm_answer",
    "decode_analog_answer",
    "decode_answer",
    "decode_management_answer",
    "limits_request",
    "reading",
    "request",
]


class PylontechDecodeError(BmsDecodeError):
    """Not a valid Pylontech frame or payload, or the module answered with an error RTN."""


class PylontechRefusedError(PylontechDecodeError):
    """A valid answer from the module with an error RTN (e.g. 04: a command its firmware does not serve)."""


def _frame_length(header: bytes) -> int:
    """Whole frame length from ``~`` + 12 header characters; 0 unless they are hex with a LENGTH whose
    LCHKSUM holds (so a stray ``~`` or noise does not make the buffer wait for a bogus length)."""
    chars = header[1:13]
    if len(chars) != 12 or chars.translate(None, b"0123456789ABCDEFabcdef"):
        return 0
    length = int(chars[8:12], 16)
    lenid = length & 0xFFF
    if lenid % 2 or length >> 12 != lchksum(lenid):
        return 0
    return 13 + lenid + 5  # header, INFO, CHKSUM and CR


FRAMING = Framing(start=b"~", header_len=13, length=_frame_length)
"""Where the ASCII frames (Pylontech RS485 and Seplos V2 alike) sit in a byte stream."""


def request(command: int, address: int) -> bytes:
    """Request `command` from the module at `address`, INFO = that address (e.g. ~20024642E00202FD33)."""
    return encode_request(command, address, address)


def decode_answer(
    frame: bytes, address: int, error: type[BmsDecodeError] = PylontechDecodeError
) -> bytes | None:
    """INFO of a normal answer (RTN 00) from `address`; None for a valid frame that is not one (another
    module's answer, a request such as our own echo); `error` for a garbled frame or an error RTN."""
    try:
        f = decode_frame(frame)
    except Rs485Error as exc:
        raise error(str(exc)) from None
    if f.cid1 != CID1_BATTERY:
        raise error(f"CID1 {f.cid1:02X} is not a battery (46)")
    if f.adr != address or f.cid2 in _REQUESTS:
        return None
    if f.cid2 != 0:
        refused = PylontechRefusedError if error is PylontechDecodeError else error
        raise refused(f"module at address 0x{address:02X} answered with error RTN 0x{f.cid2:02X}")
    return f.info


def decode_analog_answer(frame: bytes, address: int) -> ModuleValues | None:
    """The 0x42 record in `frame` from the module at `address` (None: not its answer)."""
    values = _record(frame, address, decode_analog, "0x42")
    if values is not None and not values.cell_v:
        raise PylontechDecodeError("0x42 answer reports no cells")
    return values


def decode_alarm_answer(frame: bytes, address: int) -> ModuleAlarms | None:
    """The 0x44 record in `frame` from the module at `address` (None: not its answer)."""
    return _record(frame, address, decode_alarms, "0x44")


def decode_management_answer(frame: bytes, address: int) -> Management | None:
    """The 0x92 record in `frame` from the module at `address` (None: not its answer); PylontechRefusedError
    when the module answers with an error RTN."""
    info = decode_answer(frame, address)
    if info is None:
        return None
    if info[:1] != bytes((address,)):
        raise PylontechDecodeError(f"0x92 answer from 0x{address:02X} names another module")
    try:
        return decode_management(info)
    except Rs485Error as exc:
        raise PylontechDecodeError(f"0x92 answer: {exc}") from None


def limits_request(m: Management) -> BmsRequest:
    """The module's own limits (0x92: charge voltage limit, discharge voltage limit, charge/discharge
    current limits, charge/discharge enable); a voltage of 0 means the module sent none."""
    return BmsRequest(
        cvl=m.charge_voltage if m.charge_voltage > 0 else None,
        ccl=m.charge_current,
        dcl=m.discharge_current,
        dvl=m.discharge_voltage if m.discharge_voltage > 0 else None,
        charge_enable=m.charge_enable,
        discharge_enable=m.discharge_enable,
    )


def reading(v: ModuleValues, a: ModuleAlarms, m: Management | None = None) -> BmsReading:
    """Our model of one module: the first temperature (BMS board) goes to `extra`, the rest are the cell
    temperatures; SOC = remaining / total capacity; Status 1 protection bits become alarms (the per-item
    high/low states are warnings the core judges itself), a cell in "other error" an internal alarm; the
    0x92 limits, when the module answered them, become its BmsRequest."""
    flags = BmsFlags.NONE
    if a.status2 & Status2.CHARGE_FET:
        flags |= BmsFlags.CHARGE_FET
    if a.status2 & Status2.DISCHARGE_FET:
        flags |= BmsFlags.DISCHARGE_FET
    for bit, flag in _STATUS1_FLAGS:
        if a.status1 & bit:
            flags |= flag
    if ALARM_OTHER in a.cells:  # "other error": the module's own data is not valid
        flags |= BmsFlags.ALARM_INTERNAL
    board, cell_t = (v.temperatures[0], v.temperatures[1:]) if v.temperatures else (None, ())
    extra: dict[str, float | int | str] = {
        "cycles": v.cycles,
        "remaining_ah": round(v.remaining_ah, 3),
        "capacity_ah": round(v.capacity_ah, 3),
        "status": f"{int(a.status1):02X} {int(a.status2):02X} {int(a.status3):02X}",
    }
    if board is not None:
        extra["board_temp_c"] = board
    soc = v.remaining_ah / v.capacity_ah if v.capacity_ah > 0 else None
    # the wire's resolution (mV, 0.1 A): the payload decoder scales by 1e-3 and leaves float noise
    cells = tuple(round(x, 3) for x in v.cell_v)
    request = None if m is None else limits_request(m)
    return BmsReading(cells, cell_t, round(v.current, 1), round(v.voltage, 3), flags, soc, extra, request)


# ---------------------------------------------------------------------------------------------------

_R = TypeVar("_R")


def _record(frame: bytes, address: int, decode: Callable[..., ModuleRecords[_R]], what: str) -> _R | None:
    """The one record of a single-module answer from `address`."""
    info = decode_answer(frame, address)
    if info is None:
        return None
    try:
        (record,) = decode(info, all_modules=False).modules
    except Rs485Error as exc:
        raise PylontechDecodeError(f"{what} answer: {exc}") from None
    return record


_REQUESTS = frozenset(int(c) for c in Command)  # a CID2 that is a command is a request, not an answer

_STATUS1_FLAGS = (
    (Status1.MODULE_OVERVOLTAGE, BmsFlags.ALARM_CELL_OV),
    (Status1.CELL_UNDERVOLTAGE, BmsFlags.ALARM_CELL_UV),
    (Status1.MODULE_UNDERVOLTAGE, BmsFlags.ALARM_CELL_UV),
    (Status1.CHARGE_OVERCURRENT, BmsFlags.ALARM_CHARGE_OC),
    (Status1.DISCHARGE_OVERCURRENT, BmsFlags.ALARM_DISCHARGE_OC),
    (Status1.CHARGE_OVERTEMPERATURE, BmsFlags.ALARM_OVERTEMP),
    (Status1.DISCHARGE_OVERTEMPERATURE, BmsFlags.ALARM_OVERTEMP),
)
