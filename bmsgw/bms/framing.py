"""Shared by the serial BMS codecs (jk, jbd, daly): error base, decoded reading, byte-stream resync.

Pure: no asyncio, no logging, no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from bmsgw.model import BmsFlags, BmsRequest, PackSample

__all__ = ["BmsDecodeError", "BmsReading", "FrameBuffer", "Framing", "bit_flags", "resync"]


class BmsDecodeError(ValueError):
    """Bytes that are not a valid frame of a BMS protocol; each codec raises its own subclass."""


@dataclass(frozen=True, slots=True)
class BmsReading:
    """One complete reading of a serial BMS in SI units (current > 0 = charging, SOC as a fraction)."""

    cell_v: tuple[float, ...]
    cell_t: tuple[float, ...]
    current: float
    voltage: float
    flags: BmsFlags
    soc_reported: float | None
    extra: Mapping[str, float | int | str] = field(default_factory=dict)  # vendor values, e.g. cycles
    request: BmsRequest | None = None  # the BMS's own limits, where its protocol carries them

    def sample(self, pack: int, t: float, alive: int) -> PackSample:
        """This reading as pack `pack`'s PackSample taken at t (s) with alive counter `alive`."""
        cell_v, cell_t = (np.array(v, dtype=np.float64) for v in (self.cell_v, self.cell_t))
        cell_v.flags.writeable = cell_t.flags.writeable = False
        return PackSample(
            pack,
            t,
            cell_v,
            cell_t,
            self.current,
            self.voltage,
            self.flags,
            alive,
            self.soc_reported,
            self.request,
        )


def bit_flags(word: int, table: Iterable[tuple[int, BmsFlags]]) -> BmsFlags:
    """The flags of `table`'s (bit number, flag) rows whose bit is set in `word`."""
    flags = BmsFlags.NONE
    for bit, flag in table:
        if word >> bit & 1:
            flags |= flag
    return flags


@dataclass(frozen=True, slots=True)
class Framing:
    """Where a protocol's frames sit in a byte stream.

    `length(header)` gets the first `header_len` bytes of a candidate (starting with `start`) and
    returns the whole frame's length, or 0 when that start cannot begin a frame.
    """

    start: bytes
    header_len: int
    length: Callable[[bytes], int]


def resync(buf: bytes | bytearray, start: bytes, pos: int = 0) -> int:
    """Index of the next possible frame start in buf at or after pos: a whole `start` marker, or
    a prefix of one cut off by the end of buf; len(buf) when there is none."""
    n = len(buf)
    pos = max(pos, 0)
    found = bytes(buf).find(start, pos)
    if found >= 0:
        return found
    for k in range(min(len(start) - 1, n - pos), 0, -1):
        if buf[n - k :] == start[:k]:
            return n - k
    return n


class FrameBuffer:
    """Collects bytes from a line and cuts whole candidate frames out of it.

    Bytes before a frame start are garbage (counted in `garbage`). A candidate the codec then refuses
    goes back through `reject`, which rescans from its second byte: a real frame may begin inside it.
    """

    __slots__ = ("_buf", "framing", "garbage", "max_bytes", "rejected")

    def __init__(self, framing: Framing, max_bytes: int = 8192) -> None:
        self.framing = framing
        self.max_bytes = max_bytes
        self.garbage = 0  # bytes skipped while looking for a frame start
        self.rejected = 0  # candidate frames the codec refused
        self._buf = bytearray()

    def __len__(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        """Append bytes read from the line (the oldest are dropped past max_bytes)."""
        self._buf += data
        excess = len(self._buf) - self.max_bytes
        if excess > 0:
            self.garbage += excess
            del self._buf[:excess]

    def next(self) -> bytes | None:
        """The next whole candidate frame (removed from the buffer), or None until more bytes arrive."""
        fr = self.framing
        buf = self._buf
        while True:
            at = resync(buf, fr.start)
            if at:
                self.garbage += at
                del buf[:at]
            if len(buf) < max(fr.header_len, len(fr.start)):
                return None
            n = fr.length(bytes(buf[: fr.header_len]))
            if n < max(fr.header_len, 1):
                self.garbage += 1
                del buf[:1]
                continue
            if len(buf) < n:
                return None
            frame = bytes(buf[:n])
            del buf[:n]
            return frame

    def skip(self, prefix: bytes) -> None:
        """Drop `prefix` if the buffer starts with it (an adapter's echo of what we sent; not garbage)."""
        if prefix and self._buf.startswith(prefix):
            del self._buf[: len(prefix)]

    def reject(self, frame: bytes) -> None:
        """`frame` (from next()) is not valid: count it and rescan from its second byte."""
        self.rejected += 1
        self._buf[:0] = frame[1:]

    def clear(self) -> None:
        """Drop everything buffered (counted as garbage), e.g. after a request timed out."""
        self.garbage += len(self._buf)
        self._buf.clear()
