"""Test peers: fakes built from our own codecs run in reverse; an inverter decoder written from the spec."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bmsgw.bms.pack_can import encode_tick
from bmsgw.model import (
    Alarm,
    AlarmCode,
    AlarmLevel,
    BmsFlags,
    CellRef,
    Frame,
    GatewayState,
    Limit,
    Limits,
    PackStatus,
    PackView,
    Reason,
)
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


@contextlib.asynccontextmanager
async def running(*coros: Callable[[], Coroutine[Any, Any, None]]) -> AsyncIterator[None]:
    """Run the coroutines as tasks while inside; cancel them on the way out (their errors surface)."""
    tasks = [asyncio.create_task(c()) for c in coros]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        errors = [r for r in await asyncio.gather(*tasks, return_exceptions=True) if isinstance(r, Exception)]
        if errors:
            raise errors[0]


# --- GatewayState builders for inverter codec tests ----------------------------------------------------


def lim(
    cvl: float = 56.0,
    ccl: float = 100.0,
    dcl: float = 150.0,
    dvl: float = 46.0,
    *,
    charge: bool = True,
    discharge: bool = True,
    force_1: bool = False,
    force_2: bool = False,
    full: bool = False,
) -> Limits:
    """Limits with reason CONFIG."""
    return Limits(
        cvl=Limit(cvl, Reason.CONFIG),
        ccl=Limit(ccl, Reason.CONFIG),
        dcl=Limit(dcl, Reason.CONFIG),
        dvl=Limit(dvl, Reason.CONFIG),
        charge_enable=charge,
        discharge_enable=discharge,
        force_charge_1=force_1,
        force_charge_2=force_2,
        full_charge_request=full,
    )


def make_state(
    limits: Limits | None = None,
    alarms: tuple[Alarm, ...] = (),
    *,
    soc: float = 0.5,
    soh: float = 1.0,
    voltage: float = 52.0,
    current: float = 0.0,
    temperature: float = 25.0,
    statuses: tuple[PackStatus, ...] = (PackStatus.ONLINE,),
    cell_v: tuple[float, float] = (3.3, 3.3),
    cell_v_at: tuple[CellRef, CellRef] = (CellRef(0, 0), CellRef(0, 0)),
    cell_t: tuple[float, float] | None = None,
    cell_t_at: tuple[CellRef, CellRef] = (CellRef(0, 0), CellRef(0, 0)),
    capacity_ah: float = 0.0,
    contactor_open: frozenset[int] = frozenset(),
) -> GatewayState:
    """A state with one pack per status; cell temperatures default to `temperature`."""
    packs = tuple(
        PackView(i, f"pack{i}", s, None, soc, soh, contactor_open_request=i in contactor_open)
        for i, s in enumerate(statuses)
    )
    t_min, t_max = cell_t if cell_t is not None else (temperature, temperature)
    return GatewayState(
        t=0.0,
        packs=packs,
        soc=soc,
        soh=soh,
        voltage=voltage,
        current=current,
        temperature=temperature,
        cell_v_min=cell_v[0],
        cell_v_max=cell_v[1],
        cell_v_min_at=cell_v_at[0],
        cell_v_max_at=cell_v_at[1],
        cell_t_min=t_min,
        cell_t_max=t_max,
        cell_t_min_at=cell_t_at[0],
        cell_t_max_at=cell_t_at[1],
        limits=limits if limits is not None else lim(),
        alarms=alarms,
        capacity_ah=capacity_ah,
    )


def alarm(code: AlarmCode, level: AlarmLevel = AlarmLevel.ALARM, pack: int | None = None) -> Alarm:
    """An alarm raised at t = 0."""
    return Alarm(code=code, level=level, since=0.0, pack=pack)


# --- independent decoder, written from the V1.2 spec tables (protocols.md §5.1) with struct only -------

DLC = {0x351: 8, 0x355: 4, 0x356: 6, 0x359: 7, 0x35C: 2, 0x35E: 8}
ORDER = [0x351, 0x355, 0x356, 0x359, 0x35C, 0x35E]


@dataclass(frozen=True)
class Common:
    """0x351, 0x355 (SOC, SOH) and 0x356 as Pylontech, SMA and Victron share them, in SI units."""

    cvl: float
    ccl: float
    dcl: float
    dvl: float
    soc: int
    soh: int
    voltage: float
    current: float
    temperature: float


@dataclass(frozen=True)
class Decoded(Common):
    """Everything the six frames say, in SI units / raw flags."""

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


def frames_by_id(frames: Sequence[Frame], dlc: dict[int, int]) -> dict[int, bytes]:
    """Payloads by id; asserts ids in the order of `dlc`, each DLC, standard ids, bytes payloads."""
    assert [f.id for f in frames] == list(dlc)
    by_id = {}
    for f in frames:
        assert not f.extended
        assert isinstance(f.data, bytes)
        assert len(f.data) == dlc[f.id], hex(f.id)
        by_id[f.id] = f.data
    return by_id


def common_fields(by_id: dict[int, bytes]) -> tuple[dict[str, Any], dict[int, tuple[int, ...]]]:
    """0x351, 0x355 bytes 0-3 and 0x356, shared by Pylontech, SMA and Victron: (SI fields, raw fields)."""
    # 0x351: charge voltage u16 0.1 V, CCL s16 0.1 A, DCL s16 0.1 A, discharge voltage u16 0.1 V
    cvl, ccl, dcl, dvl = struct.unpack("<HhhH", by_id[0x351])
    # 0x355: SOC u16 1 %, SOH u16 1 %
    soc, soh = struct.unpack_from("<HH", by_id[0x355])
    # 0x356: voltage s16 0.01 V, current s16 0.1 A, average cell temperature s16 0.1 °C
    v, i, t = struct.unpack("<hhh", by_id[0x356])
    fields = {
        "cvl": cvl / 10,
        "ccl": ccl / 10,
        "dcl": dcl / 10,
        "dvl": dvl / 10,
        "soc": soc,
        "soh": soh,
        "voltage": v / 100,
        "current": i / 10,
        "temperature": t / 10,
    }
    return fields, {0x351: (cvl, ccl, dcl, dvl), 0x355: (soc, soh), 0x356: (v, i, t)}


def spec_decode(frames: list[Frame]) -> Decoded:
    """Decode one six-frame set from the spec tables; asserts ids, order, DLC, standard ids."""
    by_id = frames_by_id(frames, DLC)
    fields, raw = common_fields(by_id)
    # 0x359: protection bytes 0-1, alarm bytes 2-3, module numbers, 'P', 'N'
    b0, b1, b2, b3, modules, p, n = struct.unpack("<7B", by_id[0x359])
    flags = frozenset(
        (byte, bit) for byte, val in enumerate((b0, b1, b2, b3)) for bit in range(8) if val >> bit & 1
    )
    # 0x35C: byte 0 request flags
    (req,) = struct.unpack_from("<B", by_id[0x35C])
    return Decoded(
        **fields,
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
        raw=raw,
    )


def check_dbc_messages(dbc: Any, lengths: dict[int, int], cycle_ms: dict[int, int]) -> None:
    """Every message: expected DLC and cycle time, standard id, commented little-endian signals."""
    assert {m.frame_id: m.length for m in dbc.messages} == lengths
    for m in dbc.messages:
        assert m.cycle_time == cycle_ms[m.frame_id], m.name
        assert not m.is_extended_frame
        assert m.comment
        for s in m.signals:
            assert s.byte_order == "little_endian"
            assert s.comment, s.name


# Spec bit of each condition, (byte, bit), from the V1.2 0x359 table.
P_OV, P_UV, P_OT, P_UT, P_DOC = (0, 1), (0, 2), (0, 3), (0, 4), (0, 7)
P_COC, P_SYS = (1, 0), (1, 3)
A_HV, A_LV, A_HT, A_LT, A_DHC = (2, 1), (2, 2), (2, 3), (2, 4), (2, 7)
A_CHC, A_COMM = (3, 0), (3, 3)


def decode_pylon(frames: dict[int, bytes]) -> Decoded:
    """Spec-decode the newest frame of each Pylontech id (as an inverter sees them on the bus)."""
    return spec_decode([Frame(i, frames[i]) for i in ORDER])
