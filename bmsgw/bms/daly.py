"""Daly BMS "A5" UART/RS485 protocol (9600 8N1): 13-byte frames, commands 0x90-0x98 <-> DalyStatus
-> BmsReading.

Frame, both directions (Daly UART/485 Communications Protocol V1.2; dreadnought/python-daly-bms):
  A5 | address | data ID (command) | data length (08) | 8 data bytes | checksum = sum of the 12 bytes & 0xFF
  address, host -> BMS: 0x40 + board - 1 on RS485, 0x80 on the UART port; BMS -> host: 0x01.
Commands 0x95 (cell voltages) and 0x96 (temperatures) are answered with one frame per group, numbered
from 1 in data byte 0. Pure: no asyncio, no logging, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bmsgw.bms.framing import BmsDecodeError, BmsReading, Framing, bit_flags
from bmsgw.model import BmsFlags

__all__ = [
    "BMS_ADDRESS",
    "CMD_BALANCE",
    "CMD_CELLS",
    "CMD_COUNTS",
    "CMD_FAILURES",
    "CMD_MOSFET",
    "CMD_SOC",
    "CMD_TEMPS",
    "FRAMING",
    "DalyDecodeError",
    "DalyFrame",
    "DalyStatus",
    "decode_frame",
    "decode_status",
    "encode_answers",
    "encode_frame",
    "frames_for",
    "reading",
    "request",
]


class DalyDecodeError(BmsDecodeError):
    """Not a valid Daly A5 frame (marker, data length, checksum), or answers that do not add up."""


CMD_SOC = 0x90  # total voltage, current, SOC
CMD_MOSFET = 0x93  # charge/discharge state, MOSFETs, remaining capacity
CMD_COUNTS = 0x94  # cell and temperature sensor counts, charger/load, DI/DO, cycles
CMD_CELLS = 0x95  # cell voltages, 3 per frame
CMD_TEMPS = 0x96  # temperatures, 7 per frame
CMD_BALANCE = 0x97  # cell balance state bits
CMD_FAILURES = 0x98  # battery failure status bits
BMS_ADDRESS = 0x01  # address byte of every BMS answer


@dataclass(frozen=True, slots=True)
class DalyFrame:
    """One checked frame: address byte, data ID, the 8 data bytes."""

    address: int
    command: int
    data: bytes


@dataclass(frozen=True, slots=True)
class DalyStatus:
    """What commands 0x90-0x98 report (SI units; current > 0 = charging); None = not answered."""

    voltage: float  # 0x90 cumulative total voltage (0.1 V)
    current: float  # 0x90 current (0.1 A, offset 30000; below 30000 = charging)
    soc: float  # 0x90 SOC, % (0.1 %)
    cell_v: tuple[float, ...]  # 0x95 (mV)
    temps: tuple[float, ...]  # 0x96 (°C, offset 40)
    cycles: int  # 0x94 bytes 5-6
    mosfet: tuple[int, bool, bool, float] | None = None  # 0x93 state (0 idle/1 chg/2 dsg), chg, dsg, Ah
    balance: int | None = None  # 0x97 bit n = cell n+1 balancing
    failures: bytes | None = None  # 0x98 bytes 0-6 failure bits, byte 7 fault code


FRAMING = Framing(start=b"\xa5", header_len=4, length=lambda h: _FRAME_LEN if h[3] == 8 else 0)


def encode_frame(address: int, command: int, data: bytes = bytes(8)) -> bytes:
    """A5 | address | command | 08 | data (8 bytes) | checksum."""
    if len(data) != 8:
        raise ValueError(f"Daly frames carry 8 data bytes, got {len(data)}")
    body = bytes((0xA5, address, command, 8)) + data
    return body + bytes((sum(body) & 0xFF,))


def request(address: int, command: int) -> bytes:
    """Read request from host `address` (0x40.. RS485 board, 0x80 UART) for `command`."""
    return encode_frame(address, command)


def decode_frame(frame: bytes) -> DalyFrame:
    """Check marker, length and checksum of one 13-byte frame (either direction)."""
    if len(frame) != _FRAME_LEN or frame[0] != 0xA5 or frame[3] != 8:
        raise DalyDecodeError(f"not a Daly A5 frame: {frame[:13].hex(' ')}")
    if sum(frame[:12]) & 0xFF != frame[12]:
        raise DalyDecodeError(f"checksum 0x{frame[12]:02X}, computed 0x{sum(frame[:12]) & 0xFF:02X}")
    return DalyFrame(frame[1], frame[2], frame[4:12])


def frames_for(command: int, cells: int, temps: int) -> int:
    """How many answer frames `command` gets from a BMS with that many cells and sensors."""
    if command == CMD_CELLS:
        return math.ceil(cells / _CELLS_PER_FRAME)
    if command == CMD_TEMPS:
        return math.ceil(temps / _TEMPS_PER_FRAME)
    return 1


def decode_status(answers: Mapping[int, Sequence[bytes]]) -> DalyStatus:
    """Data bytes of the answers per command -> DalyStatus (0x90, 0x94 and the 0x95/0x96 frames
    their counts call for are required; 0x93, 0x97, 0x98 optional)."""
    if any(len(d) != 8 for datas in answers.values() for d in datas):
        raise DalyDecodeError("answers must carry 8 data bytes each")
    for cmd in (CMD_SOC, CMD_COUNTS):
        if not answers.get(cmd):
            raise DalyDecodeError(f"no answer to command 0x{cmd:02X}")
    soc = answers[CMD_SOC][0]
    counts = answers[CMD_COUNTS][0]
    n_cells, n_temps = counts[0], counts[1]
    if n_cells == 0:
        raise DalyDecodeError("0x94 reports 0 cells")
    raw_cells = _groups(answers.get(CMD_CELLS, ()), n_cells, _CELLS_PER_FRAME, "0x95")
    cell_v = tuple(
        int.from_bytes(g[1 + 2 * k : 3 + 2 * k], "big") / 1000.0
        for g in raw_cells
        for k in range(_CELLS_PER_FRAME)
    )[:n_cells]
    raw_temps = _groups(answers.get(CMD_TEMPS, ()), n_temps, _TEMPS_PER_FRAME, "0x96")
    temps = tuple(float(g[1 + k] - 40) for g in raw_temps for k in range(_TEMPS_PER_FRAME))[:n_temps]
    mosfet = None
    if answers.get(CMD_MOSFET):
        m = answers[CMD_MOSFET][0]
        mosfet = (m[0], bool(m[1]), bool(m[2]), int.from_bytes(m[4:8], "big") / 1000.0)
    balance = None
    if answers.get(CMD_BALANCE):
        balance = int.from_bytes(answers[CMD_BALANCE][0][:6], "little")
    failures = bytes(answers[CMD_FAILURES][0]) if answers.get(CMD_FAILURES) else None
    return DalyStatus(
        voltage=int.from_bytes(soc[0:2], "big") / 10.0,
        current=(30000 - int.from_bytes(soc[4:6], "big")) / 10.0,
        soc=int.from_bytes(soc[6:8], "big") / 10.0,
        cell_v=cell_v,
        temps=temps,
        cycles=int.from_bytes(counts[5:7], "big"),
        mosfet=mosfet,
        balance=balance,
        failures=failures,
    )


def encode_answers(s: DalyStatus, command: int) -> list[bytes]:
    """The BMS's answer frames to `command` reporting `s` ([] when `s` lacks that data)."""
    datas: list[bytes]
    if command == CMD_SOC:
        datas = [
            _u16(round(s.voltage * 10)) + bytes(2) + _u16(30000 - round(s.current * 10))
            + _u16(round(s.soc * 10))
        ]  # fmt: skip
    elif command == CMD_COUNTS:
        datas = [bytes((len(s.cell_v), len(s.temps), 0, 0, 0)) + _u16(s.cycles) + b"\x00"]
    elif command == CMD_CELLS:
        mv = [round(v * 1000) for v in s.cell_v]
        datas = [
            bytes((i + 1,)) + b"".join(_u16(v) for v in [*mv[3 * i : 3 * i + 3], 0, 0, 0][:3]) + b"\x00"
            for i in range(frames_for(CMD_CELLS, len(mv), 0))
        ]
    elif command == CMD_TEMPS:
        raw = [round(t) + 40 for t in s.temps]
        datas = [
            bytes((i + 1,)) + bytes([*raw[7 * i : 7 * i + 7], 0, 0, 0, 0, 0, 0, 0][:7])
            for i in range(frames_for(CMD_TEMPS, 0, len(raw)))
        ]
    elif command == CMD_MOSFET and s.mosfet is not None:
        state, chg, dsg, ah = s.mosfet
        datas = [bytes((state, chg, dsg, 0)) + round(ah * 1000).to_bytes(4, "big")]
    elif command == CMD_BALANCE and s.balance is not None:
        datas = [s.balance.to_bytes(6, "little") + bytes(2)]
    elif command == CMD_FAILURES and s.failures is not None:
        datas = [s.failures]
    else:
        datas = []
    return [encode_frame(BMS_ADDRESS, command, d) for d in datas]


def reading(s: DalyStatus) -> BmsReading:
    """Our model of a Daly status: MOSFET and balance bits, level-2 alarms and hardware faults."""
    flags = BmsFlags.NONE
    if s.mosfet is not None:
        flags |= BmsFlags.CHARGE_FET if s.mosfet[1] else BmsFlags.NONE
        flags |= BmsFlags.DISCHARGE_FET if s.mosfet[2] else BmsFlags.NONE
    if s.balance:
        flags |= BmsFlags.BALANCING
    extra: dict[str, float | int | str] = {"cycles": s.cycles}
    if s.mosfet is not None:
        extra["remaining_ah"] = s.mosfet[3]
    if s.failures is not None:
        flags |= bit_flags(int.from_bytes(s.failures, "little"), _FAILURE_BITS)
        extra["failures"] = s.failures.hex()
    return BmsReading(s.cell_v, s.temps, s.current, s.voltage, flags, s.soc / 100.0, extra)


# ---------------------------------------------------------------------------------------------------

_FRAME_LEN = 13
_CELLS_PER_FRAME = 3
_TEMPS_PER_FRAME = 7

# 0x98 (byte, bit) -> flag: level-2 alarms (level 1 is a warning) and hardware faults that leave the
# pack unprotected. Not mapped: SOC, difference, sensor, EEPROM, RTC, precharge, communication bits.
_FAILURE_FLAGS = {
    (0, 1): BmsFlags.ALARM_CELL_OV,  # cell voltage too high, level 2
    (0, 3): BmsFlags.ALARM_CELL_UV,  # cell voltage too low, level 2
    (0, 5): BmsFlags.ALARM_CELL_OV,  # total voltage too high, level 2
    (0, 7): BmsFlags.ALARM_CELL_UV,  # total voltage too low, level 2
    (1, 1): BmsFlags.ALARM_OVERTEMP,  # charging temperature too high, level 2
    (1, 3): BmsFlags.ALARM_UNDERTEMP,  # charging temperature too low, level 2
    (1, 5): BmsFlags.ALARM_OVERTEMP,  # discharging temperature too high, level 2
    (1, 7): BmsFlags.ALARM_UNDERTEMP,  # discharging temperature too low, level 2
    (2, 1): BmsFlags.ALARM_CHARGE_OC,  # charge over-current, level 2
    (2, 3): BmsFlags.ALARM_DISCHARGE_OC,  # discharge over-current, level 2
    (4, 0): BmsFlags.ALARM_OVERTEMP,  # charging MOS over-temperature
    (4, 1): BmsFlags.ALARM_OVERTEMP,  # discharging MOS over-temperature
    (4, 4): BmsFlags.ALARM_INTERNAL,  # charging MOS adhesion (stuck closed)
    (4, 5): BmsFlags.ALARM_INTERNAL,  # discharging MOS adhesion
    (4, 6): BmsFlags.ALARM_INTERNAL,  # charging MOS breaker failure
    (4, 7): BmsFlags.ALARM_INTERNAL,  # discharging MOS breaker failure
    (5, 0): BmsFlags.ALARM_INTERNAL,  # AFE acquisition chip malfunction
    (5, 1): BmsFlags.ALARM_INTERNAL,  # cell voltage collection dropped off
    (6, 0): BmsFlags.ALARM_INTERNAL,  # current module failure
    (6, 2): BmsFlags.ALARM_SHORT_CIRCUIT,  # short circuit protection
}
_FAILURE_BITS = tuple((8 * byte + bit, flag) for (byte, bit), flag in _FAILURE_FLAGS.items())


def _u16(v: int) -> bytes:
    return int(v).to_bytes(2, "big")


def _groups(datas: Sequence[bytes], count: int, per: int, what: str) -> list[bytes]:
    """The frames numbered 1..ceil(count/per) in order (duplicates: the last wins)."""
    need = math.ceil(count / per)
    by_no = {d[0]: d for d in datas}
    missing = [k for k in range(1, need + 1) if k not in by_no]
    if missing:
        raise DalyDecodeError(f"{what}: frames {missing} of {need} missing")
    return [by_no[k] for k in range(1, need + 1)]
