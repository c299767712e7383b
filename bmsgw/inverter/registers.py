"""16-bit Modbus register encoding shared by the SunSpec image and the bmsgw map: scaling, clamping, markers.

Big-endian word order for 32-bit values (high word first), as SunSpec and most Modbus maps do.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from typing import Final, Literal

from bmsgw.inverter.scaling import round_clamp

__all__ = ["NOT_IMPLEMENTED", "Kind", "ModbusError", "bits", "encode", "encode_string"]

Kind = Literal["u16", "s16", "u32", "s32", "b16", "b32"]
"""Unsigned/signed integers (scaled, clamped) and bitfields (b16/b32: raw bits, no scaling or clamping)."""


class ModbusError(enum.IntEnum):
    """Modbus exception codes a register write can be answered with."""

    ILLEGAL_FUNCTION = 1  # writes are off, or this client may not write
    ILLEGAL_ADDRESS = 2  # the register exists but cannot be written
    ILLEGAL_VALUE = 3  # the value is outside the register's allowed range


NOT_IMPLEMENTED: Final[dict[Kind, int]] = {
    "u16": 0xFFFF,
    "s16": 0x8000,
    "u32": 0xFFFF_FFFF,
    "s32": 0x8000_0000,
    "b16": 0xFFFF,
    "b32": 0xFFFF_FFFF,
}
"""The "no value" marker of each kind (SunSpec's not-implemented values)."""

_RANGE: Final[dict[Kind, tuple[int, int]]] = {
    "u16": (0, 0xFFFE),
    "s16": (-0x7FFF, 0x7FFF),
    "u32": (0, 0xFFFF_FFFE),
    "s32": (-0x7FFF_FFFF, 0x7FFF_FFFF),
    "b16": (0, 0xFFFF),
    "b32": (0, 0xFFFF_FFFF),
}


def encode(value: float | None, kind: Kind, exponent: int = 0) -> list[int]:
    """`value / 10**exponent` rounded half away from zero and clamped into `kind` (never onto its marker).

    None and NaN give the not-implemented marker; ±inf the range ends; bitfields pass their low bits as they
    are. One register for 16-bit kinds, two (high word first) for 32-bit ones.
    """
    lo, hi = _RANGE[kind]
    if value is None or math.isnan(value):
        raw = NOT_IMPLEMENTED[kind]
    elif kind in ("b16", "b32"):
        raw = int(value) & hi if math.isfinite(value) else NOT_IMPLEMENTED[kind]
    else:
        raw = round_clamp(value / 10.0**exponent, lo, hi)
    if kind in ("u32", "s32", "b32"):
        raw &= 0xFFFF_FFFF
        return [raw >> 16, raw & 0xFFFF]
    return [raw & 0xFFFF]


def encode_string(text: str, registers: int) -> list[int]:
    """UTF-8 text NUL-padded (or cut at a character boundary) to exactly `registers` registers."""
    data = text.encode()[: 2 * registers].decode("utf-8", "ignore").encode().ljust(2 * registers, b"\0")
    return [data[i] << 8 | data[i + 1] for i in range(0, len(data), 2)]


def bits(positions: Iterable[int]) -> int:
    """An integer with the given bit positions set."""
    out = 0
    for p in positions:
        out |= 1 << p
    return out
