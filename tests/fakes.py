"""Test peers: fakes built from our own codecs run in reverse; an inverter decoder written from the spec."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from bmsgw.bms.pack_can import encode_tick
from bmsgw.model import BmsFlags, Frame
from bmsgw.transport.can_bus import AsyncCanBus


@dataclass
class PackModel:
    """What a fake BMS reports; tests mutate it while it runs."""

    module: int = 0
    cell_v: np.ndarray = field(default_factory=lambda: np.full(16, 3.30))
    cell_t: np.ndarray = field(default_factory=lambda: np.full(4, 25.0))
    current: float = 10.0
    flags: BmsFlags = BmsFlags.CHARGE_FET | BmsFlags.DISCHARGE_FET | BmsFlags.CONTACTOR_CLOSED
    alive: int = 0
    freeze_alive: bool = False
    silent: bool = False

    def frames(self, tick: int) -> list[Frame]:
        """Frames of one 100 ms tick of docs/pack-protocol.md's schedule."""
        if self.silent:
            return []
        out = encode_tick(
            tick, self.module, self.cell_v, self.cell_t, self.current, float(np.sum(self.cell_v)),
            self.flags, self.alive,
        )  # fmt: skip
        if not self.freeze_alive:
            self.alive = (self.alive + 1) & 0xF
        return out


def pack_log_frames(
    model: PackModel, duration_s: float, t0: float = 1_700_000_000.0, dt: float = 0.1
) -> Iterator[tuple[float, Frame]]:
    """(timestamp, frame) pairs of `duration_s` of the fake pack, for writing logs."""
    for k in range(round(duration_s / dt)):
        t = t0 + k * dt
        for frame in model.frames(k):
            yield t, frame


async def run_fake_pack(bus: AsyncCanBus, model: PackModel, period_s: float) -> None:
    """Send the model's frames every `period_s` wall seconds (one 100 ms protocol tick each)."""
    tick = 0
    while True:
        for frame in model.frames(tick):
            await bus.send(frame)
        tick += 1
        await asyncio.sleep(period_s)


@dataclass(frozen=True)
class PylonFrames:
    """Pylontech LV CAN V1.2 values decoded with struct from the spec tables (not with our DBC)."""

    cvl: float
    ccl: float
    dcl: float
    dvl: float
    soc: int
    soh: int
    voltage: float
    current: float
    temperature: float
    protection: int  # bytes 0-1 of 0x359, little-endian
    alarm: int  # bytes 2-3 of 0x359
    modules: int
    request: int  # 0x35C byte 0


def decode_pylon(frames: dict[int, bytes]) -> PylonFrames:
    """Decode one set of 0x351/0x355/0x356/0x359/0x35C frames."""
    cvl, ccl, dcl, dvl = struct.unpack("<HhhH", frames[0x351])
    soc, soh = struct.unpack("<HH", frames[0x355][:4])
    v, i, t = struct.unpack("<hhh", frames[0x356])
    p0, p1, a0, a1, modules = struct.unpack("<5B", frames[0x359][:5])
    assert frames[0x359][5:7] == b"PN"
    return PylonFrames(
        cvl / 10, ccl / 10, dcl / 10, dvl / 10, soc, soh, v / 100, i / 10, t / 10,
        p0 | p1 << 8, a0 | a1 << 8, modules, frames[0x35C][0],
    )  # fmt: skip
