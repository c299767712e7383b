"""Pylontech RS485 ASCII protocol (CID1 0x46): framing, payloads, and a battery stack answering from state.

Spec: RS485-protocol-pylon-low-voltage-V3.3-20180821 (§2 framing, §3 commands); the V3.5 system commands
0x60–0x63 follow the battery-side implementations listed in reference protocols.md §1.6 (the V3.5 PDF is
not public), so their layouts are marked unverified. Pure: no asyncio, no logging, no clock.

Three layers, each usable alone:

* **Framing** (`encode_frame`, `decode_frame`, `FrameSplitter`) knows nothing about commands, so a client
  reading a real stack and the Seplos V2 codec (same frame, different payloads) can share it.
  ``~ VER ADR CID1 CID2 LENGTH INFO CHKSUM CR``: everything between ``~`` and CR is uppercase hex;
  LENGTH = LCHKSUM(4 bits) << 12 | LENID (INFO characters); LCHKSUM = -(sum of LENID nibbles) mod 16;
  CHKSUM = -(sum of the ASCII codes between ``~`` and CHKSUM) mod 65536. Both are written ``(-s) & mask``:
  a nibble sum ≡ 0 mod 16 gives LCHKSUM 0 and a sum ≡ 0 mod 65536 gives CHKSUM 0000 (python-pylontech and
  the spec's worked examples get these wrong).
* **Payloads**: dataclasses in SI units ↔ INFO bytes, both directions for 0x42, 0x44, 0x47 and 0x92
  (client side), encoders for the rest; `encode_request` builds requests.
* **Battery side** (`parse_request`, `respond`, `answer`): a stack of ``len(stack.modules)`` modules at
  ADR ``base_address + pack index`` answering from the newest GatewayState.

Scaling on the wire: cell/module voltage mV; temperature 0.1 K (raw = °C·10 + 2731); current 0.1 A with
> 0 charging (0x61: 0.01 A); capacity mAh. Every value is rounded half away from zero and clamped to its
field, never wrapped; NaN encodes as 0 (clamped into range). The protocol has no "no value" marker and raw 0
would read as -273.1 °C, so the battery side sends an unknown temperature (a pack without sensors, a dead
sensor) as StackInfo.unknown_temperature_c (default 25 °C).
"""

from __future__ import annotations

import enum
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Final, Generic, NamedTuple, TypeAlias, TypeVar

from bmsgw.inverter.scaling import UNKNOWN_TEMPERATURE_C, known_temperature, round_clamp
from bmsgw.model import AlarmCode, AlarmLevel, BmsFlags, GatewayState, Limits, PackStatus, PackView

__all__ = [
    "ALARM_HIGH",
    "ALARM_LOW",
    "ALARM_NORMAL",
    "ALARM_OTHER",
    "ALL_MODULES",
    "CID1_BATTERY",
    "MAX_FRAME_BYTES",
    "MAX_INFO_BYTES",
    "VER",
    "AddressError",
    "AlarmValues",
    "AnalogValues",
    "Answer",
    "BadHexError",
    "ChecksumError",
    "Command",
    "CommandError",
    "FrameError",
    "FrameSplitter",
    "FrameTooLongError",
    "Header",
    "InfoReader",
    "LengthChecksumError",
    "Management",
    "ModuleAlarms",
    "ModuleInfo",
    "ModuleRecords",
    "ModuleValues",
    "NoDataError",
    "PayloadError",
    "Request",
    "Rs485Error",
    "Rs485Frame",
    "Rtn",
    "StackInfo",
    "Status1",
    "Status2",
    "Status3",
    "SystemParameters",
    "Thresholds",
    "answer",
    "chksum",
    "decode_alarms",
    "decode_analog",
    "decode_frame",
    "decode_management",
    "decode_system_parameters",
    "encode_alarms",
    "encode_analog",
    "encode_frame",
    "encode_management",
    "encode_request",
    "encode_system_parameters",
    "lchksum",
    "parse_request",
    "respond",
]

# ---------------------------------------------------------------------------------------------------
# Framing
# ---------------------------------------------------------------------------------------------------

SOI: Final = 0x7E  # '~'
EOI: Final = 0x0D  # CR; responses end with CR only (a trailing LF breaks python-pylontech)
VER: Final = 0x20  # protocol version real US2000/US3000 answer with
CID1_BATTERY: Final = 0x46  # lithium iron phosphate battery data
MAX_INFO_CHARS: Final = 0xFFF  # LENID is 12 bits
MAX_INFO_BYTES: Final = MAX_INFO_CHARS // 2
MAX_FRAME_BYTES: Final = 1 + 12 + MAX_INFO_CHARS + 4 + 1
_MIN_FRAME_BYTES: Final = 1 + 12 + 4 + 1
_HEX: Final = b"0123456789ABCDEFabcdef"


class Rtn(enum.IntEnum):
    """Response CID2 (RTN): 00 normal, else why the request was refused (V3.3 §2.2)."""

    NORMAL = 0x00
    VER_ERROR = 0x01
    CHKSUM_ERROR = 0x02
    LCHKSUM_ERROR = 0x03
    CID2_INVALID = 0x04
    COMMAND_FORMAT_ERROR = 0x05
    INVALID_DATA = 0x06
    ADR_ERROR = 0x90
    INTERNAL_COMMUNICATION_ERROR = 0x91


class Header(NamedTuple):
    """VER, ADR, CID1 and CID2 (the command in a request, RTN in a response)."""

    ver: int
    adr: int
    cid1: int
    cid2: int


class Rs485Error(ValueError):
    """A frame, request or payload the codec refuses; `rtn` is what a battery answers (None: silence)."""

    rtn: ClassVar[Rtn | None] = None

    def __init__(self, message: str, header: Header | None = None) -> None:
        super().__init__(message)
        self.header = header


class FrameError(Rs485Error):
    """No SOI/EOI, too short, or LENID disagreeing with the INFO length."""

    rtn = Rtn.COMMAND_FORMAT_ERROR


class FrameTooLongError(Rs485Error):
    """More than MAX_FRAME_BYTES, or INFO longer than LENID can say."""


class BadHexError(FrameError):
    """A character that is not a hex digit where hex is required."""


class ChecksumError(Rs485Error):
    """CHKSUM does not match the frame."""

    rtn = Rtn.CHKSUM_ERROR


class LengthChecksumError(Rs485Error):
    """LCHKSUM does not match LENID."""

    rtn = Rtn.LCHKSUM_ERROR


class CommandError(Rs485Error):
    """CID1 is not 0x46 or CID2 is a command this battery does not serve."""

    rtn = Rtn.CID2_INVALID


class AddressError(Rs485Error):
    """ADR (or the module address in INFO) names no module of this stack."""

    rtn = Rtn.ADR_ERROR


class NoDataError(Rs485Error):
    """The addressed module has never delivered a sample."""

    rtn = Rtn.INTERNAL_COMMUNICATION_ERROR


class PayloadError(Rs485Error):
    """INFO does not have the layout of its command."""


@dataclass(frozen=True, slots=True)
class Rs485Frame:
    """One frame with INFO as bytes (each sent as two hex characters)."""

    ver: int
    adr: int
    cid1: int
    cid2: int
    info: bytes = b""

    @property
    def header(self) -> Header:
        """VER, ADR, CID1, CID2."""
        return Header(self.ver, self.adr, self.cid1, self.cid2)


def lchksum(lenid: int) -> int:
    """LCHKSUM for a 12-bit LENID: the nibble sum mod 16, inverted, plus one (0 when the sum is 0 mod 16)."""
    return -((lenid >> 8 & 0xF) + (lenid >> 4 & 0xF) + (lenid & 0xF)) & 0xF


def chksum(body: bytes) -> int:
    """CHKSUM over the ASCII characters after SOI and before CHKSUM (0 when the sum is 0 mod 65536)."""
    return -sum(body) & 0xFFFF


def encode_frame(frame: Rs485Frame) -> bytes:
    """``~…CHKSUM\\r`` for `frame`; FrameTooLongError if INFO exceeds MAX_INFO_BYTES."""
    if len(frame.info) > MAX_INFO_BYTES:
        raise FrameTooLongError(f"INFO of {len(frame.info)} bytes exceeds {MAX_INFO_BYTES}")
    lenid = 2 * len(frame.info)
    body = (
        f"{frame.ver & 0xFF:02X}{frame.adr & 0xFF:02X}{frame.cid1 & 0xFF:02X}{frame.cid2 & 0xFF:02X}"
        f"{lchksum(lenid) << 12 | lenid:04X}{frame.info.hex().upper()}"
    ).encode("ascii")
    return b"~%s%04X\r" % (body, chksum(body))


def decode_frame(raw: bytes) -> Rs485Frame:
    """Parse one ``~…\\r`` frame, checking CHKSUM, LCHKSUM and LENID; raises a Rs485Error subclass."""
    if len(raw) > MAX_FRAME_BYTES:
        raise FrameTooLongError(f"frame of {len(raw)} bytes exceeds {MAX_FRAME_BYTES}")
    if len(raw) < _MIN_FRAME_BYTES or raw[0] != SOI or raw[-1] != EOI:
        raise FrameError(f"not a frame (need '~', at least 16 characters, CR): {raw[:24]!r}")
    head = raw[1:13]
    if not _is_hex(head):
        raise BadHexError(f"header is not hex: {head!r}")
    ver, adr, cid1, cid2, length_hi, length_lo = bytes.fromhex(head.decode("ascii"))
    header = Header(ver, adr, cid1, cid2)
    body, check = raw[1:-5], raw[-5:-1]
    if not _is_hex(check) or int(check, 16) != chksum(body):
        raise ChecksumError(f"CHKSUM {check!r} != {chksum(body):04X}", header)
    length = length_hi << 8 | length_lo
    lenid = length & 0xFFF
    if length >> 12 != lchksum(lenid):
        raise LengthChecksumError(f"LENGTH {length:04X}: LCHKSUM should be {lchksum(lenid):X}", header)
    info = raw[13:-5]
    if len(info) != lenid:
        raise FrameError(f"LENID {lenid} but {len(info)} INFO characters", header)
    if lenid % 2 or not _is_hex(info):
        raise BadHexError("INFO is not whole hex bytes", header)
    return Rs485Frame(ver, adr, cid1, cid2, bytes.fromhex(info.decode("ascii")))


class FrameSplitter:
    """Cuts a byte stream into candidate frames (``~`` … CR); `discarded` counts the bytes thrown away.

    A ``~`` always starts a new frame (it cannot occur inside one), so a lost CR or line noise costs at
    most the frame it hit. Candidates longer than `max_bytes` are discarded, never buffered without bound.
    """

    def __init__(self, max_bytes: int = MAX_FRAME_BYTES) -> None:
        self._buf = bytearray()
        self._max = max_bytes
        self.discarded = 0

    def feed(self, data: bytes) -> list[bytes]:
        """Add `data`; return the complete candidates it finished, oldest first."""
        buf = self._buf
        buf += data
        out: list[bytes] = []
        while buf:
            start = buf.find(SOI)
            if start < 0:
                self._drop(len(buf))
                break
            self._drop(start)
            end = buf.find(EOI, 1)
            restart = buf.find(SOI, 1, end if end >= 0 else len(buf))
            if restart > 0:
                self._drop(restart)
            elif end < 0:
                if len(buf) > self._max:
                    self._drop(len(buf))
                break
            elif end + 1 > self._max:
                self._drop(end + 1)
            else:
                out.append(bytes(buf[: end + 1]))
                del buf[: end + 1]
        return out

    def _drop(self, n: int) -> None:
        if n:
            self.discarded += n
            del self._buf[:n]


def _is_hex(chars: bytes) -> bool:
    return not chars.translate(None, _HEX)


# ---------------------------------------------------------------------------------------------------
# Commands and payloads
# ---------------------------------------------------------------------------------------------------


_R = TypeVar("_R")


class Command(enum.IntEnum):
    """Request CID2 values (V3.3 §2.5; 0x60–0x63 from V3.5)."""

    ANALOG = 0x42  # get analog value, fixed point
    ALARM = 0x44  # get alarm info
    SYSTEM_PARAMETERS = 0x47  # get system parameter, fixed point
    PROTOCOL_VERSION = 0x4F  # get protocol version
    MANUFACTURER = 0x51  # get manufacturer info
    SYSTEM_BASIC = 0x60  # get system basic information (V3.5)
    SYSTEM_ANALOG = 0x61  # get system analog data (V3.5)
    SYSTEM_ALARM = 0x62  # get system alarm info (V3.5)
    SYSTEM_MANAGEMENT = 0x63  # get system charge/discharge management info (V3.5)
    MANAGEMENT = 0x92  # get charge, discharge management info
    SERIAL_NUMBER = 0x93  # get SN number of battery
    SET_MANAGEMENT = 0x94  # set charge, discharge management info (refused: limits come from the core)
    TURN_OFF = 0x95  # turn off (refused)
    FIRMWARE = 0x96  # get firmware info


ALL_MODULES: Final = 0xFF  # INFO command value: every module of the group (0x42 and 0x44 only)

ALARM_NORMAL: Final = 0x00
ALARM_LOW: Final = 0x01  # below lower limit
ALARM_HIGH: Final = 0x02  # above upper limit
ALARM_OTHER: Final = 0xF0  # other error (here: no current data for the module)


class Status1(enum.IntFlag):
    """0x44 Status 1 (protection)."""

    MODULE_OVERVOLTAGE = 1 << 0
    CELL_UNDERVOLTAGE = 1 << 1
    CHARGE_OVERCURRENT = 1 << 2
    DISCHARGE_OVERCURRENT = 1 << 4
    DISCHARGE_OVERTEMPERATURE = 1 << 5
    CHARGE_OVERTEMPERATURE = 1 << 6
    MODULE_UNDERVOLTAGE = 1 << 7


class Status2(enum.IntFlag):
    """0x44 Status 2 (switches)."""

    PRECHARGE_FET = 1 << 0
    CHARGE_FET = 1 << 1
    DISCHARGE_FET = 1 << 2
    USING_BATTERY_POWER = 1 << 3


class Status3(enum.IntFlag):
    """0x44 Status 3."""

    BUZZER = 1 << 0
    FULLY_CHARGED = 1 << 3
    HEATER = 1 << 5
    EFFECTIVE_DISCHARGE_CURRENT = 1 << 6
    EFFECTIVE_CHARGE_CURRENT = 1 << 7


@dataclass(frozen=True, slots=True)
class ModuleValues:
    """One battery record of 0x42: cells V, temperatures °C (BMS board first), current A (> 0 charging)."""

    cell_v: tuple[float, ...]
    temperatures: tuple[float, ...]
    current: float
    voltage: float
    remaining_ah: float
    capacity_ah: float
    cycles: int = 0


@dataclass(frozen=True, slots=True)
class ModuleAlarms:
    """One record of 0x44: per-item states (ALARM_*), Status 1–3 and the cell-fault bits (Status 5:4)."""

    cells: tuple[int, ...]
    temperatures: tuple[int, ...]
    charge_current: int
    module_voltage: int
    discharge_current: int
    status1: Status1
    status2: Status2
    status3: Status3
    cell_faults: int  # bit i = cell i+1 (cells 1–16)


@dataclass(frozen=True, slots=True)
class ModuleRecords(Generic[_R]):
    """0x42/0x44 response: INFOFLAG (DATAFLAG), the command value (the module's address, or the module
    count when INFO was 0xFF), then one record per module."""

    flag: int
    value: int
    modules: tuple[_R, ...]


AnalogValues: TypeAlias = ModuleRecords[ModuleValues]  # for annotations; construct ModuleRecords(...)
AlarmValues: TypeAlias = ModuleRecords[ModuleAlarms]


@dataclass(frozen=True, slots=True)
class SystemParameters:
    """0x47 after INFOFLAG: limits in V, °C and A (discharge current as a magnitude)."""

    cell_v_high: float  # cell high voltage limit
    cell_v_low: float  # cell low voltage limit
    cell_v_under: float  # cell under voltage limit
    charge_t_high: float  # charge high temperature limit
    charge_t_low: float  # charge low temperature limit
    charge_current: float  # charge current limit
    module_v_high: float  # module high voltage limit
    module_v_low: float  # module low voltage limit
    module_v_under: float  # module under voltage limit
    discharge_t_high: float  # discharge high temperature limit
    discharge_t_low: float  # discharge low temperature limit
    discharge_current: float  # discharge current limit (sent negative, like real US3000C)


@dataclass(frozen=True, slots=True)
class Management:
    """0x92 / 0x63: voltage limits V, current limits A (magnitudes) and the request bits."""

    charge_voltage: float
    discharge_voltage: float
    charge_current: float
    discharge_current: float
    charge_enable: bool
    discharge_enable: bool
    force_charge_1: bool = False  # "charge immediately 1", bit 5 (python-pylontech calls it ...2)
    force_charge_2: bool = False  # "charge immediately 2", bit 4
    full_charge_request: bool = False  # bit 3


def encode_request(command: int, adr: int, target: int | None = None, *, ver: int = VER) -> bytes:
    """A request frame; `target` (module address or 0xFF) is sent as the one-byte INFO when given."""
    info = b"" if target is None else bytes([target & 0xFF])
    return encode_frame(Rs485Frame(ver, adr, CID1_BATTERY, command, info))


def encode_analog(values: AnalogValues) -> bytes:
    """0x42 response INFO."""
    return _encode_records(values, _analog_record)


def decode_analog(info: bytes, *, all_modules: bool) -> AnalogValues:
    """Parse a 0x42 response INFO (one record, or the value-byte count of records for 0xFF)."""
    r = InfoReader(info)
    values = _decode_records(r, all_modules, _read_analog)
    r.end()
    return values


def encode_alarms(alarms: AlarmValues) -> bytes:
    """0x44 response INFO."""
    return _encode_records(alarms, _alarm_record)


def decode_alarms(info: bytes, *, all_modules: bool) -> AlarmValues:
    """Parse a 0x44 response INFO; bytes after the last record are ignored (a US3000C sends one more)."""
    return _decode_records(InfoReader(info), all_modules, _read_alarms)


def encode_system_parameters(p: SystemParameters, infoflag: int = 0) -> bytes:
    """0x47 response INFO (INFOFLAG then 12 fields)."""
    return bytes((_u8(infoflag),)) + _SYSPARAM.pack(
        _raw(p.cell_v_high, 1e-3, 0, 0xFFFF),
        _raw(p.cell_v_low, 1e-3, 0, 0xFFFF),
        _raw(p.cell_v_under, 1e-3, -0x8000, 0x7FFF),
        _kelvin(p.charge_t_high),
        _kelvin(p.charge_t_low),
        _raw(p.charge_current, 0.1, -0x8000, 0x7FFF),
        _raw(p.module_v_high, 1e-3, 0, 0xFFFF),
        _raw(p.module_v_low, 1e-3, 0, 0xFFFF),
        _raw(p.module_v_under, 1e-3, 0, 0xFFFF),
        _kelvin(p.discharge_t_high),
        _kelvin(p.discharge_t_low),
        _raw(-p.discharge_current, 0.1, -0x8000, 0x7FFF),
    )


def decode_system_parameters(info: bytes) -> SystemParameters:
    """Parse a 0x47 response INFO (INFOFLAG is skipped)."""
    if len(info) != 1 + _SYSPARAM.size:
        raise PayloadError(f"0x47 INFO needs {1 + _SYSPARAM.size} bytes, got {len(info)}")
    v = _SYSPARAM.unpack_from(info, 1)
    return SystemParameters(
        v[0] * 1e-3, v[1] * 1e-3, v[2] * 1e-3, _celsius(v[3]), _celsius(v[4]), v[5] * 0.1,
        v[6] * 1e-3, v[7] * 1e-3, v[8] * 1e-3, _celsius(v[9]), _celsius(v[10]), abs(v[11]) * 0.1,
    )  # fmt: skip


def encode_management(m: Management, address: int | None) -> bytes:
    """0x92 INFO (`address` first, discharge current negative) or, with address None, 0x63 (all positive)."""
    if address is None:
        dcl = _raw(m.discharge_current, 0.1, 0, 0x7FFF)
        head = b""
    else:
        dcl = _raw(-m.discharge_current, 0.1, -0x8000, 0)
        head = bytes((_u8(address),))
    bits = (
        m.charge_enable << 7
        | m.discharge_enable << 6
        | m.force_charge_1 << 5
        | m.force_charge_2 << 4
        | m.full_charge_request << 3
    )
    return head + _MANAGEMENT.pack(
        _raw(m.charge_voltage, 1e-3, 0, 0xFFFF),
        _raw(m.discharge_voltage, 1e-3, 0, 0xFFFF),
        _raw(m.charge_current, 0.1, 0, 0x7FFF),
        dcl,
        bits,
    )


def decode_management(info: bytes, *, address: bool = True) -> Management:
    """Parse a 0x92 INFO (`address` byte first) or a 0x63 INFO (address=False)."""
    head = 1 if address else 0
    if len(info) != head + _MANAGEMENT.size:
        raise PayloadError(f"management INFO needs {head + _MANAGEMENT.size} bytes, got {len(info)}")
    cvl, dvl, ccl, dcl, bits = _MANAGEMENT.unpack_from(info, head)
    return Management(
        cvl * 1e-3, dvl * 1e-3, abs(ccl) * 0.1, abs(dcl) * 0.1,
        bool(bits & 0x80), bool(bits & 0x40), bool(bits & 0x20), bool(bits & 0x10), bool(bits & 0x08),
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# Battery side: requests in, responses from the newest GatewayState
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Protection thresholds reported by 0x47: cell voltages V, temperatures °C, currents A per module."""

    cell_v_high: float
    cell_v_low: float
    cell_v_under: float
    charge_t_high: float
    charge_t_low: float
    discharge_t_high: float
    discharge_t_low: float
    charge_current: float
    discharge_current: float


@dataclass(frozen=True, slots=True)
class ModuleInfo:
    """What a module knows about itself: rated capacity Ah, cell and sensor counts, serial number."""

    capacity_ah: float
    cells: int
    sensors: int
    serial: str


@dataclass(frozen=True, slots=True)
class StackInfo:
    """The emulated stack: one module per pack (ADR base_address + index) and its identity."""

    modules: tuple[ModuleInfo, ...]
    thresholds: Thresholds
    base_address: int = 2
    device_name: str = "bmsgw"  # 0x51 device name, 10 ASCII characters
    manufacturer: str = "PYLON"  # 0x51 manufacturer name, 20 ASCII characters
    version: tuple[int, int, int] = (0, 1, 0)  # software/main-line version
    unknown_temperature_c: float = UNKNOWN_TEMPERATURE_C  # sent for an unknown temperature (no sensor)

    def pack_at(self, adr: int) -> int | None:
        """Pack index of module address `adr`, or None."""
        i = adr - self.base_address
        return i if 0 <= i < len(self.modules) else None


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed request: `target` is the INFO command value (module address or 0xFF), None without INFO."""

    ver: int
    adr: int
    command: Command
    target: int | None = None


class Answer(NamedTuple):
    """What `answer` made of one candidate frame: bytes to send back (or None) and the error, if any."""

    reply: bytes | None
    error: Rs485Error | None


def parse_request(frame: Rs485Frame) -> Request:
    """Typed request; CommandError (RTN 04) for a foreign CID1 or unknown CID2, FrameError for bad INFO."""
    if frame.cid1 != CID1_BATTERY:
        raise CommandError(f"CID1 {frame.cid1:02X} is not {CID1_BATTERY:02X}", frame.header)
    try:
        command = Command(frame.cid2)
    except ValueError:
        raise CommandError(f"unknown CID2 {frame.cid2:02X}", frame.header) from None
    if command not in _SYSTEM_COMMANDS and command not in _MODULE_COMMANDS:
        raise CommandError(f"{command.name} is refused: limits come from the gateway's core", frame.header)
    if len(frame.info) > 1:
        raise FrameError(f"{command.name}: INFO of {len(frame.info)} bytes (at most 1)", frame.header)
    return Request(frame.ver, frame.adr, command, frame.info[0] if frame.info else None)


def respond(req: Request, state: GatewayState, stack: StackInfo) -> Rs485Frame:
    """The response frame to `req` for `state`; raises AddressError, NoDataError or CommandError."""
    cmd = req.command
    if cmd in _SYSTEM_COMMANDS:
        if req.adr != 0 and stack.pack_at(req.adr) is None:
            raise AddressError(f"ADR {req.adr:02X} is not 00 or a module of this stack")
        info = _system(cmd, state, stack)
    elif cmd in _MODULE_COMMANDS:
        if stack.pack_at(req.adr) is None:
            raise AddressError(f"ADR {req.adr:02X} is not a module of this stack")
        target = req.adr if req.target is None else req.target
        if target == ALL_MODULES and cmd in (Command.ANALOG, Command.ALARM):
            info = _all_modules(cmd, state, stack)
        else:
            pack = stack.pack_at(target)
            if pack is None:
                raise AddressError(f"module {target:02X} is not in this stack")
            info = _module(cmd, state, stack, pack, target)
    else:
        raise CommandError(f"{cmd.name} is refused: limits come from the gateway's core")
    return Rs485Frame(VER, req.adr, CID1_BATTERY, Rtn.NORMAL, info)


def answer(raw: bytes, state: GatewayState, stack: StackInfo) -> Answer:
    """Everything a battery does with one candidate frame; never raises."""
    header: Header | None = None
    try:
        frame = decode_frame(raw)
        header = frame.header
        reply = respond(parse_request(frame), state, stack)
    except Rs485Error as exc:
        if exc.header is not None:
            header = exc.header
        if header is None or exc.rtn is None:
            return Answer(None, exc)
        return Answer(encode_frame(Rs485Frame(VER, header.adr, CID1_BATTERY, exc.rtn)), exc)
    return Answer(encode_frame(reply), None)


# --- internals -------------------------------------------------------------------------------------

_H: Final = struct.Struct(">H")
_h: Final = struct.Struct(">h")
_SYSPARAM: Final = struct.Struct(">HHhhhhHHHhhh")
_MANAGEMENT: Final = struct.Struct(">HHhhB")
_SYSANALOG: Final = struct.Struct(">HhBHHBB" + "HHHH" + "hhHhH" * 3)  # 49 bytes
_CAPACITY_16BIT_AH: Final = 65.0  # above this, 0x42 carries 24-bit capacities (V3.2)
_KELVIN_OFFSET: Final = 2731

_SYSTEM_COMMANDS: Final = frozenset(
    {
        Command.PROTOCOL_VERSION,
        Command.MANUFACTURER,
        Command.SYSTEM_BASIC,
        Command.SYSTEM_ANALOG,
        Command.SYSTEM_ALARM,
        Command.SYSTEM_MANAGEMENT,
    }
)
_MODULE_COMMANDS: Final = frozenset(
    {
        Command.ANALOG,
        Command.ALARM,
        Command.SYSTEM_PARAMETERS,
        Command.MANAGEMENT,
        Command.SERIAL_NUMBER,
        Command.FIRMWARE,
    }
)


def _raw(value: float, scale: float, lo: int, hi: int) -> int:
    """value/scale rounded half away from zero and clamped to [lo, hi]; NaN → 0 (clamped)."""
    return round_clamp(float(value) / scale, lo, hi)


def _u8(value: float) -> int:
    return _raw(value, 1, 0, 0xFF)


def _kelvin(t_c: float) -> int:
    """°C → s16 in 0.1 K (raw = round(°C·10) + 2731), clamped; NaN → raw 0."""
    if math.isnan(t_c):
        return 0
    return _raw(t_c, 0.1, -0x8000 - _KELVIN_OFFSET, 0x7FFF - _KELVIN_OFFSET) + _KELVIN_OFFSET


def _celsius(raw: int) -> float:
    return (raw - _KELVIN_OFFSET) / 10


def _ascii(text: str, n: int, pad: bytes = b"\0") -> bytes:
    return text.encode("ascii", "replace")[:n].ljust(n, pad)


class InfoReader:
    """Bounds-checked big-endian reads over INFO; PayloadError when it runs short or has bytes left."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def take(self, n: int) -> tuple[int, ...]:
        end = self._pos + n
        if end > len(self._data):
            raise PayloadError(f"INFO ends at byte {len(self._data)}, needed {end}")
        out = tuple(self._data[self._pos : end])
        self._pos = end
        return out

    def _int(self, n: int, signed: bool = False) -> int:
        return int.from_bytes(bytes(self.take(n)), "big", signed=signed)

    def u8(self) -> int:
        return self._int(1)

    def u16(self) -> int:
        return self._int(2)

    def s16(self) -> int:
        return self._int(2, signed=True)

    def u24(self) -> int:
        return self._int(3)

    def end(self) -> None:
        if self._pos != len(self._data):
            raise PayloadError(f"{len(self._data) - self._pos} bytes left after the last record")


def _encode_records(records: ModuleRecords[_R], record: Callable[[_R], bytes]) -> bytes:
    return bytes((_u8(records.flag), _u8(records.value))) + b"".join(record(m) for m in records.modules)


def _decode_records(r: InfoReader, all_modules: bool, read: Callable[[InfoReader], _R]) -> ModuleRecords[_R]:
    flag, value = r.u8(), r.u8()
    return ModuleRecords(flag, value, tuple(read(r) for _ in range(value if all_modules else 1)))


def _analog_record(m: ModuleValues) -> bytes:
    out = bytearray((_u8(len(m.cell_v)),))
    for v in m.cell_v:
        out += _H.pack(_raw(v, 1e-3, 0, 0xFFFF))  # cell voltage, mV
    out.append(_u8(len(m.temperatures)))
    for t in m.temperatures:
        out += _h.pack(_kelvin(t))
    out += _h.pack(_raw(m.current, 0.1, -0x8000, 0x7FFF))
    out += _H.pack(_raw(m.voltage, 1e-3, 0, 0xFFFF))
    remaining = _raw(m.remaining_ah, 1e-3, 0, 0xFFFFFF)
    total = _raw(m.capacity_ah, 1e-3, 0, 0xFFFFFF)
    cycles = _raw(m.cycles, 1, 0, 0xFFFF)
    if m.capacity_ah > _CAPACITY_16BIT_AH:
        # V3.2+: user-defined count 4, 16-bit fields 0xFFFF, then 24-bit remaining and total capacity
        out += struct.pack(">HBHH", 0xFFFF, 4, 0xFFFF, cycles)
        out += remaining.to_bytes(3, "big") + total.to_bytes(3, "big")
    else:
        out += struct.pack(">HBHH", min(remaining, 0xFFFF), 2, min(total, 0xFFFF), cycles)
    return bytes(out)


def _read_analog(r: InfoReader) -> ModuleValues:
    cells = tuple(r.u16() * 1e-3 for _ in range(r.u8()))
    temps = tuple(_celsius(r.s16()) for _ in range(r.u8()))
    current, voltage = r.s16() * 0.1, r.u16() * 1e-3
    remaining, items, total, cycles = r.u16(), r.u8(), r.u16(), r.u16()
    if items > 2:  # 4: capacities above 65 Ah follow as 24-bit fields
        remaining, total = r.u24(), r.u24()
    return ModuleValues(cells, temps, current, voltage, remaining * 1e-3, total * 1e-3, cycles)


def _alarm_record(m: ModuleAlarms) -> bytes:
    return bytes(
        x & 0xFF
        for x in (
            len(m.cells), *m.cells, len(m.temperatures), *m.temperatures,
            m.charge_current, m.module_voltage, m.discharge_current,
            m.status1, m.status2, m.status3, m.cell_faults, m.cell_faults >> 8,
        )
    )  # fmt: skip


def _read_alarms(r: InfoReader) -> ModuleAlarms:
    cells = r.take(r.u8())
    temps = r.take(r.u8())
    cc, mv, dc, s1, s2, s3, s4, s5 = r.take(8)
    return ModuleAlarms(cells, temps, cc, mv, dc, Status1(s1), Status2(s2), Status3(s3), s5 << 8 | s4)


def _pack_alarms(state: GatewayState, pack: int) -> list[tuple[AlarmCode, AlarmLevel]]:
    return [(a.code, a.level) for a in state.alarms if a.pack is None or a.pack == pack]


def _flag(state: GatewayState, pack: int | None) -> int:
    """INFOFLAG/DATAFLAG: bit 4 'unread alarm' while an alarm concerns the module (any module: None)."""
    return 0x10 if any(pack is None or a.pack is None or a.pack == pack for a in state.alarms) else 0x00


def _values(view: PackView | None, info: ModuleInfo, unknown_c: float) -> ModuleValues | None:
    s = view.sample if view is not None else None
    if view is None or s is None:
        return None
    temps = tuple(float(t) for t in s.cell_t)
    live = [t for t in temps if math.isfinite(t)]
    board = sum(live) / len(live) if live else math.nan  # no board sensor: the live sensors' mean
    soc = view.soc if math.isfinite(view.soc) else 0.0
    return ModuleValues(
        cell_v=tuple(float(v) for v in s.cell_v),
        temperatures=tuple(known_temperature(t, unknown_c) for t in (board, *temps)),
        # a module excluded from the core reports no current; the limits carry the fail-safe
        current=s.current if view.status is PackStatus.ONLINE else 0.0,
        voltage=s.voltage,
        remaining_ah=min(max(soc, 0.0), 1.0) * info.capacity_ah,
        capacity_ah=info.capacity_ah,
    )


def _no_values(info: ModuleInfo, unknown_c: float) -> ModuleValues:
    """A module never seen, in a 0xFF answer: cells 0 V, its temperatures unknown, no current."""
    temps = (unknown_c,) * (info.sensors + 1)
    return ModuleValues((0.0,) * info.cells, temps, 0.0, 0.0, 0.0, info.capacity_ah)


_CELL_ALARMS: Final = {AlarmCode.CELL_OVERVOLTAGE: ALARM_HIGH, AlarmCode.CELL_UNDERVOLTAGE: ALARM_LOW}
_TEMP_ALARMS: Final = {
    AlarmCode.OVERTEMPERATURE: ALARM_HIGH,
    AlarmCode.THERMAL_RUNAWAY: ALARM_HIGH,
    AlarmCode.UNDERTEMPERATURE: ALARM_LOW,
    AlarmCode.CHARGE_UNDERTEMPERATURE: ALARM_LOW,
}
_STATUS1: Final = {
    AlarmCode.PACK_OVERVOLTAGE: Status1.MODULE_OVERVOLTAGE,
    AlarmCode.CELL_OVERVOLTAGE: Status1.MODULE_OVERVOLTAGE,  # V3.3 has no cell-overvoltage bit
    AlarmCode.CELL_UNDERVOLTAGE: Status1.CELL_UNDERVOLTAGE,
    AlarmCode.CHARGE_OVERCURRENT: Status1.CHARGE_OVERCURRENT,
    AlarmCode.DISCHARGE_OVERCURRENT: Status1.DISCHARGE_OVERCURRENT,
    AlarmCode.OVERTEMPERATURE: Status1.CHARGE_OVERTEMPERATURE | Status1.DISCHARGE_OVERTEMPERATURE,
    AlarmCode.THERMAL_RUNAWAY: Status1.CHARGE_OVERTEMPERATURE | Status1.DISCHARGE_OVERTEMPERATURE,
    AlarmCode.PACK_UNDERVOLTAGE: Status1.MODULE_UNDERVOLTAGE,
}


def _alarms(state: GatewayState, view: PackView | None, info: ModuleInfo) -> ModuleAlarms | None:
    s = view.sample if view is not None else None
    if view is None or s is None:
        return None
    active = _pack_alarms(state, view.pack)
    codes = {c for c, _ in active}
    cell_v = [float(v) for v in s.cell_v]
    temps = [float(t) for t in s.cell_t]
    if view.status is not PackStatus.ONLINE:
        cells = [ALARM_OTHER] * len(cell_v)
        sensors = [ALARM_OTHER] * (len(temps) + 1)
    else:
        cells = _mark(cell_v, codes, _CELL_ALARMS)
        sensors = [ALARM_NORMAL, *_mark(temps, codes, _TEMP_ALARMS)]
    s1 = Status1(0)
    for code, level in active:
        if level >= AlarmLevel.ALARM:
            s1 |= _STATUS1.get(code, Status1(0))
    s2 = Status2(0)
    if view.status is PackStatus.ONLINE:
        s2 |= Status2.USING_BATTERY_POWER
    if s.flags & BmsFlags.CHARGE_FET:
        s2 |= Status2.CHARGE_FET
    if s.flags & BmsFlags.DISCHARGE_FET:
        s2 |= Status2.DISCHARGE_FET
    s3 = Status3(0)
    if view.status is PackStatus.ONLINE and s.current > 0.1:
        s3 |= Status3.EFFECTIVE_CHARGE_CURRENT
    if view.status is PackStatus.ONLINE and s.current < -0.1:
        s3 |= Status3.EFFECTIVE_DISCHARGE_CURRENT
    if math.isfinite(view.soc) and view.soc >= 0.995:
        s3 |= Status3.FULLY_CHARGED
    faults = sum(1 << i for i, c in enumerate(cells[:16]) if c != ALARM_NORMAL)
    module_v = ALARM_NORMAL
    if AlarmCode.PACK_OVERVOLTAGE in codes:
        module_v = ALARM_HIGH
    elif AlarmCode.PACK_UNDERVOLTAGE in codes:
        module_v = ALARM_LOW
    return ModuleAlarms(
        cells=tuple(cells),
        temperatures=tuple(sensors),
        charge_current=ALARM_HIGH if AlarmCode.CHARGE_OVERCURRENT in codes else ALARM_NORMAL,
        module_voltage=module_v,
        discharge_current=ALARM_HIGH if AlarmCode.DISCHARGE_OVERCURRENT in codes else ALARM_NORMAL,
        status1=s1,
        status2=s2,
        status3=s3,
        cell_faults=faults,
    )


def _mark(values: list[float], codes: set[AlarmCode], table: dict[AlarmCode, int]) -> list[int]:
    """Per-item states: the module's highest item(s) get ALARM_HIGH, lowest ALARM_LOW, while alarmed."""
    out = [ALARM_NORMAL] * len(values)
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return out
    for code, state in table.items():
        if code in codes:
            extreme = max(finite) if state == ALARM_HIGH else min(finite)
            for i, v in enumerate(values):
                if v == extreme:
                    out[i] = state
    return out


def _no_alarms(info: ModuleInfo) -> ModuleAlarms:
    return ModuleAlarms(
        (ALARM_OTHER,) * info.cells, (ALARM_OTHER,) * (info.sensors + 1), ALARM_NORMAL, ALARM_NORMAL,
        ALARM_NORMAL, Status1(0), Status2(0), Status3(0), 0,
    )  # fmt: skip


def _all_modules(cmd: Command, state: GatewayState, stack: StackInfo) -> bytes:
    views = _views(state, stack)
    if all(v is None or v.sample is None for v in views):
        raise NoDataError("no module has delivered a sample yet")
    n = len(stack.modules)
    if cmd is Command.ANALOG:
        unknown_c = stack.unknown_temperature_c
        records = tuple(
            _values(v, m, unknown_c) or _no_values(m, unknown_c)
            for v, m in zip(views, stack.modules, strict=True)
        )
        return encode_analog(ModuleRecords(_flag(state, None), n, records))
    alarm_records = tuple(
        _alarms(state, v, m) or _no_alarms(m) for v, m in zip(views, stack.modules, strict=True)
    )
    return encode_alarms(ModuleRecords(_flag(state, None), n, alarm_records))


def _views(state: GatewayState, stack: StackInfo) -> list[PackView | None]:
    return [state.packs[i] if i < len(state.packs) else None for i in range(len(stack.modules))]


def _module(cmd: Command, state: GatewayState, stack: StackInfo, pack: int, address: int) -> bytes:
    info = stack.modules[pack]
    view = _views(state, stack)[pack]
    if cmd is Command.ANALOG:
        values = _values(view, info, stack.unknown_temperature_c)
        if values is None:
            raise NoDataError(f"module {address:02X} has not delivered a sample")
        return encode_analog(ModuleRecords(_flag(state, pack), address, (values,)))
    if cmd is Command.ALARM:
        alarms = _alarms(state, view, info)
        if alarms is None:
            raise NoDataError(f"module {address:02X} has not delivered a sample")
        return encode_alarms(ModuleRecords(_flag(state, pack), address, (alarms,)))
    if cmd is Command.SYSTEM_PARAMETERS:
        return encode_system_parameters(_parameters(stack.thresholds, info.cells))
    if cmd is Command.MANAGEMENT:
        online = view is not None and view.in_service  # a held-out or isolated module: no current
        return encode_management(_management(state.limits, state.modules_online, online), address)
    if cmd is Command.SERIAL_NUMBER:
        return bytes((address,)) + _ascii(info.serial, 16, b" ")
    # FIRMWARE: address, manufacturer version (2 bytes), main-line version (3 bytes)
    return bytes((address, *_version(stack)[:2], *_version(stack)))


def _parameters(t: Thresholds, cells: int) -> SystemParameters:
    return SystemParameters(
        t.cell_v_high, t.cell_v_low, t.cell_v_under, t.charge_t_high, t.charge_t_low, t.charge_current,
        t.cell_v_high * cells, t.cell_v_low * cells, t.cell_v_under * cells,
        t.discharge_t_high, t.discharge_t_low, t.discharge_current,
    )  # fmt: skip


def _management(lim: Limits, share: int, online: bool) -> Management:
    """Limits for one module (`share` = modules splitting the system currents) or the system (share 1)."""
    n = max(share, 1)
    return Management(
        charge_voltage=lim.cvl.value,
        discharge_voltage=lim.dvl.value,
        charge_current=lim.ccl.value / n if online and lim.charge_enable else 0.0,
        discharge_current=lim.dcl.value / n if online and lim.discharge_enable else 0.0,
        charge_enable=online and lim.charge_enable,
        discharge_enable=online and lim.discharge_enable,
        force_charge_1=lim.force_charge_1,
        force_charge_2=lim.force_charge_2,
        full_charge_request=lim.full_charge_request,
    )


def _system(cmd: Command, state: GatewayState, stack: StackInfo) -> bytes:
    if cmd is Command.PROTOCOL_VERSION:
        return b""  # the version is the response's VER
    if cmd is Command.MANUFACTURER:
        # device name (10), software version (2), manufacturer name (20; real US3000C pads with '-')
        return _ascii(stack.device_name, 10) + _version(stack)[:2] + _ascii(stack.manufacturer, 20, b"-")
    if cmd is Command.SYSTEM_BASIC:
        # unverified layout: device name (10), manufacturer (20), software version (2), modules (1), serials
        serials = b"".join(_ascii(m.serial, 16, b" ") for m in stack.modules)
        return (
            _ascii(stack.device_name, 10)
            + _ascii(stack.manufacturer, 20, b"-")
            + _version(stack)[:2]
            + bytes((len(stack.modules),))
            + serials
        )
    if cmd is Command.SYSTEM_ANALOG:
        return _system_analog(state, stack.unknown_temperature_c)
    if cmd is Command.SYSTEM_ALARM:
        return _system_alarm(state)
    return encode_management(_management(state.limits, 1, True), None)  # SYSTEM_MANAGEMENT


def _version(stack: StackInfo) -> bytes:
    return bytes(_u8(v) for v in stack.version)


def _where(ref: tuple[int, int]) -> int:
    """0x61 location: module number << 8 | cell number, both 1-based."""
    return (ref[0] + 1 & 0xFF) << 8 | (ref[1] + 1 & 0xFF)


def _system_analog(state: GatewayState, unknown_c: float) -> bytes:
    """0x61, unverified layout (Battery-Emulator): current in 0.01 A; no MOSFET/BMS sensors, so the
    cell-temperature average/max/min are repeated in those slots (unknown: `unknown_c`)."""
    sohs = [p.soh for p in state.packs if p.status is PackStatus.ONLINE and math.isfinite(p.soh)]
    temps = (
        _kelvin(known_temperature(state.temperature, unknown_c)),
        _kelvin(known_temperature(state.cell_t_max, unknown_c)),
        _where(state.cell_t_max_at),
        _kelvin(known_temperature(state.cell_t_min, unknown_c)),
        _where(state.cell_t_min_at),
    )
    return _SYSANALOG.pack(
        _raw(state.voltage, 1e-3, 0, 0xFFFF),  # average module voltage, mV
        _raw(state.current, 0.01, -0x8000, 0x7FFF),  # total current, 0.01 A
        _raw(state.soc, 0.01, 0, 100),  # SOC, %
        0,  # average cycles
        0,  # maximum cycles
        _raw(state.soh, 0.01, 0, 100),  # average SOH, %
        _raw(min(sohs) if sohs else state.soh, 0.01, 0, 100),  # minimum SOH, %
        _raw(state.cell_v_max, 1e-3, 0, 0xFFFF),
        _where(state.cell_v_max_at),
        _raw(state.cell_v_min, 1e-3, 0, 0xFFFF),
        _where(state.cell_v_min_at),
        *temps,  # cell temperature average, max, where, min, where
        *temps,  # MOSFET
        *temps,  # BMS
    )


# 0x62 (unverified layout, as in ai-republic/bms-to-inverter): alarm 1, alarm 2 (warnings), protection 1,
# protection 2. AlarmCode → (byte, bit) for WARNING level, and for ALARM/FAULT level.
_SYS_ALARM_BITS: Final[dict[AlarmCode, tuple[tuple[int, int], tuple[int, int]]]] = {
    AlarmCode.PACK_OVERVOLTAGE: ((0, 7), (2, 7)),
    AlarmCode.PACK_UNDERVOLTAGE: ((0, 6), (2, 6)),
    AlarmCode.CELL_OVERVOLTAGE: ((0, 5), (2, 5)),
    AlarmCode.CELL_UNDERVOLTAGE: ((0, 4), (2, 4)),
    AlarmCode.OVERTEMPERATURE: ((0, 3), (2, 3)),
    AlarmCode.THERMAL_RUNAWAY: ((0, 3), (2, 3)),
    AlarmCode.UNDERTEMPERATURE: ((0, 2), (2, 2)),
    AlarmCode.CHARGE_UNDERTEMPERATURE: ((0, 2), (2, 2)),
    AlarmCode.CELL_IMBALANCE: ((0, 0), (0, 0)),
    AlarmCode.CHARGE_OVERCURRENT: ((1, 6), (3, 6)),
    AlarmCode.DISCHARGE_OVERCURRENT: ((1, 5), (3, 5)),
}
_SYS_COMM_FAIL: Final = (1, 4)  # alarm 2 bit 4: internal communication failure
_SYS_ERROR: Final = (3, 3)  # protection 2 bit 3: system error / other failure
_SYS_ERROR_CODES: Final = frozenset({AlarmCode.BMS_FAULT, AlarmCode.SENSOR_FAULT})


def _system_alarm(state: GatewayState) -> bytes:
    out = bytearray(4)
    for a in state.alarms:
        bits: list[tuple[int, int]] = []
        protection = a.level >= AlarmLevel.ALARM
        if a.code is AlarmCode.COMM_LOST:
            bits.append(_SYS_COMM_FAIL)
        if a.level >= AlarmLevel.FAULT or (protection and a.code in _SYS_ERROR_CODES):
            bits.append(_SYS_ERROR)
        pair = _SYS_ALARM_BITS.get(a.code)
        if pair is not None:
            bits.append(pair[1] if protection else pair[0])
        for byte, bit in bits:
            out[byte] |= 1 << bit
    return bytes(out)
