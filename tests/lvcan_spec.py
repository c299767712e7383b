"""Test peers for the SMA-style LV CAN frame sets (Pylontech V1.3, SMA Sunny Island, Victron).

The decoders are written from the spec tables (reference protocols.md §5.2-5.4, anchors_bridges.md §1.5
and §3, the Pytes/Victron capture) with struct only; they never read our DBCs or codecs. Also: a bus
listener that plays the inverter, and an end-to-end rig (fake pack → Gateway → outputs on virtual buses).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fakes import (
    Common,
    PackModel,
    alarm,
    check_dbc_messages,
    common_fields,
    frames_by_id,
    lim,
    make_state,
    run_fake_pack,
    running,
)
from hypothesis import strategies as st

from bmsgw.app import Gateway
from bmsgw.clock import ScaledClock
from bmsgw.config import OutputConfig, Settings, load_settings
from bmsgw.model import Alarm, AlarmCode, AlarmLevel, CellRef, Frame, GatewayState, PackStatus
from bmsgw.outputs.can import CanOutput
from bmsgw.transport.can_bus import AsyncCanBus

T = TypeVar("T")

# 0x35A, SMA order: pair n = bits 2n (arrive) and 2n+1 (leave) of the alarm bytes 0-3; warnings the same
# in bytes 4-7. Value 1 = active, 2 = cleared, 0 = not supported.
PAIRS = (
    "general",
    "high_voltage",
    "low_voltage",
    "high_temperature",
    "low_temperature",
    "high_temperature_charge",
    "low_temperature_charge",
    "high_current",
    "high_charge_current",
    "contactor",
    "short_circuit",
    "bms_internal",
    "cell_imbalance",
    "reserved_13",
    "reserved_14",
    "generator",
)
ACTIVE, CLEARED, UNSUPPORTED = 1, 2, 0

CORE_DLC = {0x351: 8, 0x355: 6, 0x356: 6, 0x35A: 8, 0x35E: 8, 0x35F: 8}
VICTRON_DLC = {
    **CORE_DLC,
    0x370: 8,
    0x371: 8,
    0x372: 8,
    0x373: 8,
    0x374: 8,
    0x375: 8,
    0x376: 8,
    0x377: 8,
    0x379: 2,
}
U16_INVALID, S16_INVALID = 0xFFFF, -0x8000


@dataclass(frozen=True)
class Core(Common):
    """The SMA-style core frames, in SI units / raw fields."""

    soc_hires: float  # %
    alarms: dict[str, int]  # pair name → 2-bit value
    warnings: dict[str, int]
    manufacturer: bytes
    battery_type: int
    version: tuple[int, int]
    capacity: int
    manufacturer_id: int
    raw: dict[int, tuple[int, ...]]

    def active(self) -> set[tuple[str, str]]:
        """("alarm"|"warning", pair) of every active pair."""
        return {("alarm", n) for n, v in self.alarms.items() if v == ACTIVE} | {
            ("warning", n) for n, v in self.warnings.items() if v == ACTIVE
        }


def by_id(frames: Sequence[Frame], dlc: dict[int, int]) -> dict[int, bytes]:
    """Payloads by id; asserts the order of `dlc`, each DLC, standard ids, bytes payloads."""
    return frames_by_id(frames, dlc)


def decode_core(data: dict[int, bytes]) -> Core:
    """Decode 0x351, 0x355, 0x356, 0x35A, 0x35E, 0x35F from the spec tables."""
    fields, raw = common_fields(data)  # 0x351, 0x355 SOC/SOH, 0x356: as Pylontech V1.2
    # 0x355 bytes 4-5: HiResSOC u16 0.01 %
    (hires,) = struct.unpack_from("<H", data[0x355], 4)
    # 0x35A: 2-bit pairs, alarms from bit 0, warnings from bit 32
    bits = int.from_bytes(data[0x35A], "little")
    # 0x35F: Bat-Type u16, BMS version (2 bytes), capacity u16 Ah, manufacturer id u16
    btype, major, minor, cap, mid = struct.unpack("<HBBHH", data[0x35F])
    return Core(
        **fields,
        soc_hires=hires / 100,
        alarms={name: bits >> (2 * n) & 3 for n, name in enumerate(PAIRS)},
        warnings={name: bits >> (32 + 2 * n) & 3 for n, name in enumerate(PAIRS)},
        manufacturer=data[0x35E],
        battery_type=btype,
        version=(major, minor),
        capacity=cap,
        manufacturer_id=mid,
        raw={**raw, 0x355: (*raw[0x355], hires), 0x35F: (btype, major, minor, cap, mid)},
    )


@dataclass(frozen=True)
class VictronExtra:
    """0x370-0x379 as a GX reads them."""

    name: bytes  # 0x370 + 0x371, 16 ASCII bytes
    online: int
    blocking_charge: int
    blocking_discharge: int
    offline: int
    cell_mv: tuple[int, int]  # min, max
    temp_k: tuple[int, int]  # min, max
    ids: tuple[bytes, bytes, bytes, bytes]  # min V, max V, min T, max T (NUL padding stripped)
    installed_ah: int


def decode_victron(data: dict[int, bytes]) -> tuple[Core, VictronExtra]:
    """Decode the Victron set: the core frames plus 0x370-0x379."""
    # 0x372: modules online, blocking charge, blocking discharge, offline, u16 each
    online, bc, bd, offline = struct.unpack("<4H", data[0x372])
    # 0x373: min cell V mV, max cell V mV, min T K, max T K, u16 each
    vmin, vmax, tmin, tmax = struct.unpack("<4H", data[0x373])
    (installed,) = struct.unpack("<H", data[0x379])
    ids = tuple(data[i].rstrip(b"\0") for i in (0x374, 0x375, 0x376, 0x377))
    extra = VictronExtra(
        name=data[0x370] + data[0x371],
        online=online,
        blocking_charge=bc,
        blocking_discharge=bd,
        offline=offline,
        cell_mv=(vmin, vmax),
        temp_k=(tmin, tmax),
        ids=(ids[0], ids[1], ids[2], ids[3]),
        installed_ah=installed,
    )
    return decode_core(data), extra


# --- the inverter side of a bus ---------------------------------------------------------------------------


@dataclass
class Listener:
    """Plays the inverter on one bus: keeps the newest payload per id and every arrival time."""

    bus: AsyncCanBus
    latest: dict[int, bytes] = field(default_factory=dict)
    stamps: list[tuple[int, float]] = field(default_factory=list)  # (id, sender timestamp)

    async def run(self) -> None:
        """Receive until cancelled."""
        while True:
            msg = await self.bus.recv()
            self.latest[msg.arbitration_id] = bytes(msg.data)
            self.stamps.append((msg.arbitration_id, msg.timestamp))

    def count(self, frame_id: int) -> int:
        """How often `frame_id` arrived."""
        return sum(1 for i, _ in self.stamps if i == frame_id)

    async def until(
        self,
        decode: Callable[[dict[int, bytes]], T],
        ids: Sequence[int],
        pred: Callable[[T], bool],
        within: float = 5.0,
    ) -> T:
        """Poll the newest frames until `pred(decode(...))` holds; fail after `within` wall seconds."""
        deadline = time.monotonic() + within
        last: T | None = None
        while time.monotonic() < deadline:
            if set(ids) <= self.latest.keys():
                last = decode(self.latest)
                if pred(last):
                    return last
            await asyncio.sleep(0.01)
        raise AssertionError(f"condition not met within {within}s; last: {last}")


# --- end to end -------------------------------------------------------------------------------------------

SPEED = 10.0  # gateway time runs 10x wall time
MAX_CHARGE = 50.0
MAX_DISCHARGE = 80.0


@dataclass
class Rig:
    """A running gateway with one fake pack and a listener on each output bus."""

    gateway: Gateway
    pack: PackModel
    inverters: list[Listener]
    buses: list[AsyncCanBus]


def rig_settings(pack_channel: str, outputs: list[dict[str, Any]], name: str = "bmsgw") -> Settings:
    """One 16S LFP pack on `pack_channel`, the given [[outputs]], quick staleness and recovery."""
    cfg: dict[str, Any] = {
        "gateway": {"name": name, "stale_after_s": 3.0, "recovery_ramp_s": 5.0, "step_period_s": 0.1},
        "packs": [{"id": "p1", "cells": 16, "sensors": 4, "chemistry": "lfp", "capacity_ah": 100}],
        "can": {"interface": "virtual", "channel": pack_channel},
        "outputs": outputs,
        "limits": {"max_charge_current_a": MAX_CHARGE, "max_discharge_current_a": MAX_DISCHARGE},
    }
    if "web" in Settings.model_fields:  # no dashboard in these tests
        cfg["web"] = {"enabled": False}
    settings, _ = load_settings(None, cfg, env={})
    return settings


@contextlib.asynccontextmanager
async def gateway_rig(protocols: Sequence[str], name: str = "bmsgw") -> AsyncIterator[Rig]:
    """Gateway with one output per protocol, each on its own virtual bus with a Listener."""
    pack_ch = f"pack-{uuid.uuid4()}"
    channels = [f"inv-{uuid.uuid4()}" for _ in protocols]
    outputs = [
        {"protocol": p, "interface": "virtual", "channel": ch}
        for p, ch in zip(protocols, channels, strict=True)
    ]
    gateway = Gateway(rig_settings(pack_ch, outputs, name), ScaledClock(SPEED))
    pack = PackModel()
    async with contextlib.AsyncExitStack() as stack:
        pack_bus = await stack.enter_async_context(AsyncCanBus("virtual", pack_ch))
        buses = [await stack.enter_async_context(AsyncCanBus("virtual", ch)) for ch in channels]
        listeners = [Listener(b) for b in buses]
        fake_pack = lambda: run_fake_pack(pack_bus, pack, 0.1 / SPEED)  # noqa: E731
        async with running(gateway.run, fake_pack, *(li.run for li in listeners)):
            yield Rig(gateway, pack, listeners, buses)


@contextlib.asynccontextmanager
async def output_on_bus(
    protocol: str, state: Callable[[], GatewayState], *, speed: float = SPEED, name: str = "bmsgw"
) -> AsyncIterator[tuple[CanOutput, Listener]]:
    """A CanOutput for `protocol` serving `state()` on a fresh virtual bus, and the inverter on that bus."""
    channel = f"out-{uuid.uuid4()}"
    cfg = OutputConfig(protocol=protocol, interface="virtual", channel=channel)
    output = CanOutput(cfg, ScaledClock(speed), state, name=name)
    async with AsyncCanBus("virtual", channel) as bus:
        listener = Listener(bus)
        async with running(output.run, listener.run):
            yield output, listener


# --- what 0x35A must say ------------------------------------------------------------------------------------

EXPECTED_PAIRS: dict[AlarmCode, frozenset[str]] = {
    AlarmCode.COMM_LOST: frozenset({"general", "bms_internal"}),
    AlarmCode.SENSOR_FAULT: frozenset({"bms_internal"}),
    AlarmCode.BMS_FAULT: frozenset({"bms_internal"}),
    AlarmCode.CELL_OVERVOLTAGE: frozenset({"high_voltage"}),
    AlarmCode.PACK_OVERVOLTAGE: frozenset({"high_voltage"}),
    AlarmCode.CELL_UNDERVOLTAGE: frozenset({"low_voltage"}),
    AlarmCode.PACK_UNDERVOLTAGE: frozenset({"low_voltage"}),
    AlarmCode.OVERTEMPERATURE: frozenset({"high_temperature"}),
    AlarmCode.THERMAL_RUNAWAY: frozenset({"high_temperature"}),
    AlarmCode.UNDERTEMPERATURE: frozenset({"low_temperature"}),
    AlarmCode.CHARGE_UNDERTEMPERATURE: frozenset({"low_temperature_charge"}),
    AlarmCode.DISCHARGE_OVERCURRENT: frozenset({"high_current"}),
    AlarmCode.CHARGE_OVERCURRENT: frozenset({"high_charge_current"}),
    AlarmCode.CELL_IMBALANCE: frozenset({"cell_imbalance"}),
    AlarmCode.PACK_ISOLATED: frozenset(),  # the rest keep running; the pack's own alarms say why
    AlarmCode.HISTORY_DEGRADED: frozenset(),  # an operations warning: nothing for the inverter
    AlarmCode.STATE_RESET: frozenset(),  # an operations warning: nothing for the inverter
}
MAPPED_PAIRS = frozenset().union(*EXPECTED_PAIRS.values())


def expected_active(alarms: Sequence[Alarm]) -> set[tuple[str, str]]:
    """ALARM/FAULT → alarm pairs, WARNING → warning pairs; FAULT also raises the general alarm."""
    out = set()
    for a in alarms:
        kind = "alarm" if a.level >= AlarmLevel.ALARM else "warning"
        pairs = EXPECTED_PAIRS[a.code] | ({"general"} if a.level is AlarmLevel.FAULT else set())
        out |= {(kind, p) for p in pairs}
    return out


def check_pairs(d: Core, alarms: Sequence[Alarm], *, cleared: int) -> None:
    """Active pairs exactly as expected; every other mapped pair `cleared`, unmapped pairs 00."""
    active = expected_active(alarms)
    assert d.active() == active
    for kind, values in (("alarm", d.alarms), ("warning", d.warnings)):
        for pair, v in values.items():
            if (kind, pair) not in active:
                assert v == (cleared if pair in MAPPED_PAIRS else UNSUPPORTED), (kind, pair, v)


def pair_signal(name: str) -> tuple[int, int]:
    """(alarm=0 | warning=1, pair index) of a DBC signal name such as AlarmHighVoltage."""
    kind, rest = ("alarm", name[5:]) if name.startswith("Alarm") else ("warning", name[7:])
    snake = "".join("_" + c.lower() if c.isupper() else c for c in rest).lstrip("_")
    return (0 if kind == "alarm" else 1), PAIRS.index(snake)


def check_lv_dbc(dbc: Any, lengths: dict[int, int], cycle_ms: dict[int, int]) -> None:
    """The common DBC checks plus the 0x35A pair layout."""
    check_dbc_messages(dbc, lengths, cycle_ms)
    check_35a_dbc(dbc.get_message_by_frame_id(0x35A))


def check_35a_dbc(msg: Any) -> None:
    """Every 0x35A signal sits on its spec pair; every named spec pair has its two signals."""
    base = {s.name: 0 for s in msg.signals}
    seen = set()
    for s in msg.signals:
        kind, n = pair_signal(s.name)
        seen.add((kind, n))
        bit = 32 * kind + 2 * n
        assert (s.start, s.length, s.byte_order) == (bit, 2, "little_endian"), s.name
        assert msg.encode({**base, s.name: ACTIVE}) == (1 << bit).to_bytes(8, "little"), s.name
    named = {(k, n) for k in (0, 1) for n, p in enumerate(PAIRS) if not p.startswith("reserved")}
    assert seen == named


# --- random states ----------------------------------------------------------------------------------------

wide = st.floats(allow_nan=True, allow_infinity=True, width=64)
any_float = st.one_of(wide, st.floats(-1e6, 1e6, allow_nan=False))


@st.composite
def states(draw: st.DrawFn) -> GatewayState:
    """Any GatewayState the codecs might meet, including NaN, ±inf and absurd values."""
    statuses = tuple(draw(st.lists(st.sampled_from(list(PackStatus)), max_size=20)))
    packs = st.one_of(st.none(), st.integers(0, 25))
    alarms = draw(
        st.lists(
            st.builds(alarm, st.sampled_from(list(AlarmCode)), st.sampled_from(list(AlarmLevel)), packs),
            max_size=8,
        )
    )
    refs = st.builds(CellRef, st.integers(0, 20), st.integers(0, 40))
    return make_state(
        lim(
            draw(any_float),
            draw(any_float),
            draw(any_float),
            draw(any_float),
            charge=draw(st.booleans()),
            discharge=draw(st.booleans()),
        ),
        tuple(alarms),
        soc=draw(any_float),
        soh=draw(any_float),
        voltage=draw(any_float),
        current=draw(any_float),
        temperature=draw(any_float),
        statuses=statuses,
        cell_v=(draw(any_float), draw(any_float)),
        cell_v_at=(draw(refs), draw(refs)),
        cell_t=(draw(any_float), draw(any_float)),
        cell_t_at=(draw(refs), draw(refs)),
        capacity_ah=draw(any_float),
        contactor_open=frozenset(draw(st.sets(st.integers(0, 20), max_size=4))),
    )
