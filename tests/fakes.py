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


# --- independent decoder, written from the V1.2 spec tables (protocols.md §5.1) with struct only -------

DLC = {0x351: 8, 0x355: 4, 0x356: 6, 0x359: 7, 0x35C: 2, 0x35E: 8}
ORDER = [0x351, 0x355, 0x356, 0x359, 0x35C, 0x35E]


@dataclass(frozen=True)
class Decoded:
    """Everything the six frames say, in SI units / raw flags."""

    cvl: float
    ccl: float
    dcl: float
    dvl: float
    soc: int
    soh: int
    voltage: float
    current: float
    temperature: float
    flags: frozenset[tuple[int, int]]  # (byte, bit) set in 0x359 bytes 0-3
    modules: int
    pn: bytes
    charge_enable: bool
    discharge_enable: bool
    force_1: bool
    force_2: bool
    full_charge: bool
    request_raw: bytes
    manufacturer: bytes
    raw: dict[int, tuple[int, ...]]  # integer fields as sent


def spec_decode(frames: list[Frame]) -> Decoded:
    """Decode one six-frame set from the spec tables; asserts ids, order, DLC, standard ids."""
    assert [f.id for f in frames] == ORDER
    by_id = {}
    for f in frames:
        assert not f.extended
        assert isinstance(f.data, bytes)
        assert len(f.data) == DLC[f.id], hex(f.id)
        by_id[f.id] = f.data
    # 0x351: charge voltage u16 0.1 V, CCL s16 0.1 A, DCL s16 0.1 A, discharge voltage u16 0.1 V
    cvl, ccl, dcl, dvl = struct.unpack("<HhhH", by_id[0x351])
    # 0x355: SOC u16 1 %, SOH u16 1 %
    soc, soh = struct.unpack("<HH", by_id[0x355])
    # 0x356: voltage s16 0.01 V, current s16 0.1 A, average cell temperature s16 0.1 °C
    v, i, t = struct.unpack("<hhh", by_id[0x356])
    # 0x359: protection bytes 0-1, alarm bytes 2-3, module numbers, 'P', 'N'
    b0, b1, b2, b3, modules, p, n = struct.unpack("<7B", by_id[0x359])
    flags = frozenset(
        (byte, bit) for byte, val in enumerate((b0, b1, b2, b3)) for bit in range(8) if val >> bit & 1
    )
    # 0x35C: byte 0 request flags
    (req,) = struct.unpack_from("<B", by_id[0x35C])
    return Decoded(
        cvl=cvl / 10,
        ccl=ccl / 10,
        dcl=dcl / 10,
        dvl=dvl / 10,
        soc=soc,
        soh=soh,
        voltage=v / 100,
        current=i / 10,
        temperature=t / 10,
        flags=flags,
        modules=modules,
        pn=bytes((p, n)),
        charge_enable=bool(req & 0x80),
        discharge_enable=bool(req & 0x40),
        force_1=bool(req & 0x20),
        force_2=bool(req & 0x10),
        full_charge=bool(req & 0x08),
        request_raw=by_id[0x35C],
        manufacturer=by_id[0x35E],
        raw={
            0x351: (cvl, ccl, dcl, dvl),
            0x355: (soc, soh),
            0x356: (v, i, t),
        },
    )


# Spec bit of each condition, (byte, bit), from the V1.2 0x359 table.
P_OV, P_UV, P_OT, P_UT, P_DOC = (0, 1), (0, 2), (0, 3), (0, 4), (0, 7)
P_COC, P_SYS = (1, 0), (1, 3)
A_HV, A_LV, A_HT, A_LT, A_DHC = (2, 1), (2, 2), (2, 3), (2, 4), (2, 7)
A_CHC, A_COMM = (3, 0), (3, 3)


def decode_pylon(frames: dict[int, bytes]) -> Decoded:
    """Spec-decode the newest frame of each Pylontech id (as an inverter sees them on the bus)."""
    return spec_decode([Frame(i, frames[i]) for i in ORDER])
