"""Seplos V2 BMS protocol (RS485, 9600 8N1): Pylontech-style ASCII frames, telemetry (CID2 0x42) and
telecommand/alarm (CID2 0x44) answers <-> SeplosTelemetry / SeplosAlarms -> BmsReading.

Spec: SEPLOS BMS Communication Protocol V2.0 (2019-10-15) §4.1-4.2. The frame (``~ VER ADR CID1 CID2
LENGTH INFO CHKSUM CR``) is Pylontech's; its encoder, decoder and request builder are reused from
bmsgw.inverter.pylontech_rs485 (through bmsgw.bms.pylontech). A request's INFO is the one-byte
COMMAND GROUP (= the DIP address on RS485).
Scaling differs from Pylontech: current 0.01 A (> 0 charging), voltages 0.01 V, capacities 0.01 Ah,
SOC and SOH in ‰, temperatures 0.1 K (raw = °C·10 + 2731).
Pure: no asyncio, no logging, no clock.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from bmsgw.bms import pylontech
from bmsgw.bms.framing import BmsDecodeError, BmsReading, bit_flags
from bmsgw.inverter.pylontech_rs485 import (
    CID1_BATTERY,
    VER,
    InfoReader,  # the INFO reader of the same frame family
    Rs485Error,
    Rs485Frame,
    decode_frame,
    encode_frame,
)
from bmsgw.model import BmsFlags

__all__ = [
    "CMD_ALARMS",
    "CMD_TELEMETRY",
    "FRAMING",
    "SeplosAlarms",
    "SeplosDecodeError",
    "SeplosTelemetry",
    "decode_alarms",
    "decode_request",
    "decode_response",
    "decode_telemetry",
    "encode_alarms",
    "encode_telemetry",
    "reading",
    "request",
]

CMD_TELEMETRY = 0x42  # acquisition of telemetering information
CMD_ALARMS = 0x44  # acquisition of telecommand information (alarms, switches, balancing)


FRAMING = pylontech.FRAMING  # the same ASCII frame


class SeplosDecodeError(BmsDecodeError):
    """Not a valid Seplos V2 frame or payload, or the BMS answered with an error RTN."""


@dataclass(frozen=True, slots=True)
class SeplosTelemetry:
    """CID2 0x42 answer (Table 8), SI units; `temps` as sent: cells 1-4, environment, power (MOSFET)."""

    cell_v: tuple[float, ...]  # cell voltages (mV)
    temps: tuple[float, ...]  # temperatures, °C (0.1 K, offset 2731)
    current: float  # charge/discharge current (s16, 0.01 A, > 0 charging)
    voltage: float  # total battery voltage (0.01 V)
    residual_ah: float  # residual capacity (0.01 Ah)
    capacity_ah: float  # battery capacity (0.01 Ah)
    soc: float  # SOC (‰) as a fraction
    rated_ah: float = 0.0  # rated capacity (0.01 Ah)
    cycles: int = 0  # number of cycles
    soh: float = 1.0  # SOH (‰) as a fraction
    port_voltage: float = 0.0  # port voltage (0.01 V)
    command_group: int = 0  # COMMAND GROUP (pack address) the BMS answered for


@dataclass(frozen=True, slots=True)
class SeplosAlarms:
    """CID2 0x44 answer (Tables 11-13): byte alarms per item (0 normal, 1 low, 2 high, 0xF0 other), then
    the 20 bit-alarm bytes P: alarm events 1-6, on-off state, equilibrium 1-2, system state, disconnection
    1-2, alarm events 7-8, reserved."""

    cells: tuple[int, ...]  # cell alarm per cell
    temps: tuple[int, ...]  # temperature alarm per sensor
    current: int  # charge/discharge current alarm
    voltage: int  # total battery voltage alarm
    events: tuple[int, ...] = (0,) * 8  # alarm events 1-8 (bits: Table 13)
    switches: int = 0  # on-off state: b0 discharge, b1 charge, b2 current limit, b3 heating
    balancing: int = 0  # equilibrium state: bit n = cell n+1 (cells 1-16)
    system: int = 0  # system state: b0 discharge, b1 charge, b2 floating charge, b4 standby, b5 shutdown
    disconnected: int = 0  # disconnection state: bit n = cell n+1
    command_group: int = 0


def request(command: int, address: int) -> bytes:
    """Request frame for `command` (0x42/0x44) to the pack at DIP `address` (e.g. ~20004642E00200FD37)."""
    return pylontech.request(command, address)


def decode_request(frame: bytes) -> tuple[int, int]:
    """(command, address) of a request frame; SeplosDecodeError if it is not one."""
    try:
        f = decode_frame(frame)
    except Rs485Error as exc:
        raise SeplosDecodeError(str(exc)) from None
    if f.cid1 != CID1_BATTERY or f.cid2 not in (CMD_TELEMETRY, CMD_ALARMS) or len(f.info) != 1:
        raise SeplosDecodeError(f"not a 0x42/0x44 request: CID2 {f.cid2:02X}, INFO {f.info.hex()}")
    return f.cid2, f.adr


def decode_response(frame: bytes, address: int) -> bytes | None:
    """INFO of the answer from the pack at `address`; None for a valid frame that is not one (another
    pack's answer, or a request such as our own echo). SeplosDecodeError if garbled or an error RTN."""
    return pylontech.decode_answer(frame, address, SeplosDecodeError)


def decode_telemetry(info: bytes) -> SeplosTelemetry:
    """Telemetry INFO: DATA FLAG, COMMAND GROUP, M cells, N temperatures, current, voltage, residual
    capacity, P custom words (P >= 2: capacity and SOC; then rated capacity, cycles, SOH, port voltage)."""
    try:
        r = InfoReader(info)
        r.u8()  # DATA FLAG
        group = r.u8()
        cells = tuple(r.u16() / 1000.0 for _ in range(r.u8()))
        temps = tuple((r.u16() - _KELVIN) / 10.0 for _ in range(r.u8()))
        current = r.s16() / 100.0
        voltage, residual = r.u16() / 100.0, r.u16() / 100.0
        custom = tuple(r.u16() for _ in range(r.u8()))
        r.end()
    except Rs485Error as exc:
        raise SeplosDecodeError(f"telemetry: {exc}") from None
    if len(custom) < 2:
        raise SeplosDecodeError(f"telemetry has {len(custom)} custom words, at least 2 (capacity, SOC)")
    if not cells:
        raise SeplosDecodeError("telemetry reports no cells")
    rated, cycles, soh, port = [*custom[2:6], *[0] * max(0, 6 - len(custom))]
    return SeplosTelemetry(
        cell_v=cells,
        temps=temps,
        current=current,
        voltage=voltage,
        residual_ah=residual,
        capacity_ah=custom[0] / 100.0,
        soc=custom[1] / 1000.0,
        rated_ah=rated / 100.0,
        cycles=cycles,
        soh=soh / 1000.0 if len(custom) > 4 else 1.0,
        port_voltage=port / 100.0,
        command_group=group,
    )


def decode_alarms(info: bytes) -> SeplosAlarms:
    """Telecommand INFO: DATA FLAG, COMMAND GROUP, M cell alarms, N temperature alarms, current and voltage
    alarms, P bit-alarm bytes (P >= 7 so that the on-off state is there; missing ones read 0)."""
    try:
        r = InfoReader(info)
        r.u8()  # DATA FLAG
        group = r.u8()
        cells = r.take(r.u8())
        temps = r.take(r.u8())
        current, voltage = r.take(2)
        bits = r.take(r.u8())
        r.end()
    except Rs485Error as exc:
        raise SeplosDecodeError(f"alarm answer: {exc}") from None
    if len(bits) < 7:
        raise SeplosDecodeError(f"alarm answer has {len(bits)} bit-alarm bytes, at least 7 expected")
    b = (*bits, *(0,) * max(0, 20 - len(bits)))
    return SeplosAlarms(
        cells=cells, temps=temps, current=current, voltage=voltage,
        events=(*b[0:6], b[12], b[13]), switches=b[6], balancing=b[7] | b[8] << 8, system=b[9],
        disconnected=b[10] | b[11] << 8, command_group=group,
    )  # fmt: skip


def encode_telemetry(t: SeplosTelemetry, address: int) -> bytes:
    """The 0x42 answer frame of the pack at `address` reporting `t` (P = 10, reserved words 0)."""
    custom = (
        round(t.capacity_ah * 100), round(t.soc * 1000), round(t.rated_ah * 100), t.cycles,
        round(t.soh * 1000), round(t.port_voltage * 100), 0, 0, 0, 0,
    )  # fmt: skip
    info = (
        bytes((0, t.command_group or address, len(t.cell_v)))
        + _words(round(v * 1000) for v in t.cell_v)
        + bytes((len(t.temps),))
        + _words(round(x * 10) + _KELVIN for x in t.temps)
        + _S16.pack(max(-0x8000, min(0x7FFF, round(t.current * 100))))
        + _words((round(t.voltage * 100), round(t.residual_ah * 100)))
        + bytes((len(custom),))
        + _words(custom)
    )
    return _response(address, info)


def encode_alarms(a: SeplosAlarms, address: int) -> bytes:
    """The 0x44 answer frame of the pack at `address` reporting `a` (P = 20)."""
    e = a.events
    bits = (
        *e[:6], a.switches, a.balancing & 0xFF, a.balancing >> 8 & 0xFF, a.system,
        a.disconnected & 0xFF, a.disconnected >> 8 & 0xFF, e[6], e[7], *(0,) * 6,
    )  # fmt: skip
    info = bytes(
        x & 0xFF
        for x in (
            0, a.command_group or address, len(a.cells), *a.cells, len(a.temps), *a.temps,
            a.current, a.voltage, len(bits), *bits,
        )
    )  # fmt: skip
    return _response(address, info)


def reading(t: SeplosTelemetry, a: SeplosAlarms) -> BmsReading:
    """Our model of one poll. With more than two sensors the last two (environment, power/MOSFET) go to
    `extra` and the rest are the cell temperatures; protection bits (not the warning bits) become alarms."""
    n = len(t.temps)
    cell_t, board = (t.temps[: n - 2], t.temps[n - 2 :]) if n > 2 else (t.temps, ())
    flags = BmsFlags.NONE
    if a.switches & 1:
        flags |= BmsFlags.DISCHARGE_FET
    if a.switches & 2:
        flags |= BmsFlags.CHARGE_FET
    if a.balancing:
        flags |= BmsFlags.BALANCING
    for event, table in zip(a.events, _EVENT_FLAGS, strict=False):
        flags |= bit_flags(event, table)
    extra: dict[str, float | int | str] = {
        "cycles": t.cycles,
        "residual_ah": t.residual_ah,
        "capacity_ah": t.capacity_ah,
        "rated_ah": t.rated_ah,
        "soh": t.soh,
        "port_voltage": t.port_voltage,
        "system_state": a.system,
        "alarm_events": " ".join(f"{e:02X}" for e in a.events),
    }
    if board:
        extra["environment_temp_c"], extra["power_temp_c"] = board
    return BmsReading(t.cell_v, cell_t, t.current, t.voltage, flags, t.soc, extra)


# ---------------------------------------------------------------------------------------------------

_KELVIN = 2731
_S16 = struct.Struct(">h")

# Table 13: protection bits of alarm events 1-6 (warning-level bits are left to the core's own thresholds).
_EVENT_FLAGS: tuple[tuple[tuple[int, BmsFlags], ...], ...] = (
    tuple((bit, BmsFlags.ALARM_INTERNAL) for bit in range(8)),  # event 1: sensor and switch faults
    (
        (1, BmsFlags.ALARM_CELL_OV),  # monomer overvoltage protection
        (3, BmsFlags.ALARM_CELL_UV),  # monomer under voltage protection
        (5, BmsFlags.ALARM_CELL_OV),  # overvoltage protection for total voltage
        (7, BmsFlags.ALARM_CELL_UV),  # under voltage protection for total voltage
    ),
    (
        (1, BmsFlags.ALARM_OVERTEMP),  # charge over temperature protection
        (3, BmsFlags.ALARM_UNDERTEMP),  # charge under temperature protection
        (5, BmsFlags.ALARM_OVERTEMP),  # discharge over temperature protection
        (7, BmsFlags.ALARM_UNDERTEMP),  # discharge under temperature protection
    ),
    (
        (1, BmsFlags.ALARM_OVERTEMP),  # environment over temperature protection
        (3, BmsFlags.ALARM_UNDERTEMP),  # environment under temperature protection
        (4, BmsFlags.ALARM_OVERTEMP),  # power over temperature protection
    ),
    (
        (1, BmsFlags.ALARM_CHARGE_OC),  # charge over current protection
        (3, BmsFlags.ALARM_DISCHARGE_OC),  # discharge over current protection
        (4, BmsFlags.ALARM_DISCHARGE_OC),  # transient over current protection
        (5, BmsFlags.ALARM_SHORT_CIRCUIT),  # output short circuit protection
        (6, BmsFlags.ALARM_DISCHARGE_OC),  # transient over current lockout
        (7, BmsFlags.ALARM_SHORT_CIRCUIT),  # output short circuit lockout
    ),
    (
        (0, BmsFlags.ALARM_CELL_OV),  # charge high voltage protection
        (5, BmsFlags.ALARM_INTERNAL),  # output reverse polarity protection
        (6, BmsFlags.ALARM_INTERNAL),  # output connection fault
    ),
)


def _response(address: int, info: bytes) -> bytes:
    return encode_frame(Rs485Frame(VER, address, CID1_BATTERY, 0, info))


def _words(values: Iterable[int]) -> bytes:
    """u16 big-endian words, each clamped to 0..0xFFFF."""
    return b"".join(max(0, min(0xFFFF, v)).to_bytes(2, "big") for v in values)
