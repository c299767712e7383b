"""Fault-injection rig: a real Gateway reading one pack of any source kind from a fake peer (CAN pack,
serial BMS over a pty, or a battery speaking an inverter CAN protocol), with a Pylontech CAN inverter
listening on the output bus and every received frame set stamped in gateway time."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from fake_bms import BmsModel, FakeBms
from fakes import Decoded, PackModel, decode_pylon, lim, make_state, run_fake_pack, running
from ptys import PtyPair, pty_pair
from test_gateway_e2e import Inverter
from test_serial_sources import until
from test_source_inverter_can import Battery

from bmsgw.app import Gateway
from bmsgw.clock import ScaledClock
from bmsgw.config import Settings, load_settings
from bmsgw.inverter import pylontech_can, sma_can
from bmsgw.model import Frame, GatewayState
from bmsgw.sources import INVERTER_CAN_KINDS, SERIAL_KINDS, SOURCES, serial_bms
from bmsgw.transport.can_bus import AsyncCanBus

SPEED = 10.0  # gateway time runs 10x wall time
STALE_S = 2.0  # gateway.stale_after_s
RAMP_S = 3.0  # gateway.recovery_ramp_s
STEP_S = 0.1  # gateway.step_period_s
POLL_S = 0.5  # packs[].poll_interval_s of the serial kinds
OUTPUT_PERIOD_S = pylontech_can.PERIOD_S  # the inverter-side frame set period
MARGIN_S = 2.0  # gateway seconds (0.2 s wall) of event-loop scheduling slack on a loaded machine
MAX_CHARGE, MAX_DISCHARGE = 50.0, 80.0
KINDS = list(SOURCES)  # every source kind that exists: a new kind joins the matrix on its own
REQUEST_TIMEOUT_S = 0.1  # wall seconds per serial request attempt in the rig (live default: 1 s)
SYMLINK = "usb-BMS-if00-port0"  # like a /dev/serial/by-id name

SET_IDS = frozenset({0x351, 0x355, 0x356, 0x359, 0x35C, 0x35E})


def sample_period(kind: str) -> float:
    """Gateway seconds between samples of the kind's fake: a pack tick of 0.1 s, a serial poll, or the
    inverter-protocol battery's frame set every 0.1 s wall."""
    if kind == "can":
        return 0.1
    return POLL_S if kind in SERIAL_KINDS else 0.1 * SPEED


def safe_after_loss_bound(kind: str) -> float:
    """Gateway seconds from link loss to CCL = DCL = 0 with the comm-fail flag on the inverter bus."""
    poll = POLL_S if kind in SERIAL_KINDS else 0.0
    return STALE_S + OUTPUT_PERIOD_S + STEP_S + poll + MARGIN_S


class Recorder(Inverter):
    """The inverter: besides the newest frames, every complete frame set with the gateway time it arrived."""

    def __init__(self, bus: AsyncCanBus, clock: ScaledClock) -> None:
        super().__init__(bus)
        self.clock = clock
        self.seen: list[tuple[float, Decoded]] = []

    async def run(self) -> None:
        while True:
            msg = await self.bus.recv()
            self.latest[msg.arbitration_id] = bytes(msg.data)
            if msg.arbitration_id == 0x35E:  # the last frame of a set
                self.sets += 1
                if self.latest.keys() >= SET_IDS:
                    self.seen.append((self.clock.now(), decode_pylon(self.latest)))

    async def first(
        self, pred: Callable[[Decoded], bool], since: float = -1.0, within: float = 10.0
    ) -> tuple[float, Decoded]:
        """The first set received at gateway time >= `since` that satisfies `pred` (waits `within` wall s)."""
        deadline = time.monotonic() + within
        k = 0
        while True:
            for t, f in self.seen[k:]:
                if t >= since and pred(f):
                    return t, f
            k = len(self.seen)
            if time.monotonic() > deadline:
                last = self.seen[-1] if self.seen else None
                raise AssertionError(f"no frame set met the condition within {within}s; last: {last}")
            await asyncio.sleep(0.01)


class Peer:
    """The fake on the pack side, whatever its kind: the knobs a fault test turns."""

    def silence(self, on: bool) -> None:
        raise NotImplementedError

    def cell(self, volts: float) -> None:
        """Cell 1's voltage (batteries without cell data: every cell, through the pack voltage)."""
        raise NotImplementedError

    def temperature(self, celsius: float) -> None:
        raise NotImplementedError


@dataclasses.dataclass
class CanPeer(Peer):
    model: PackModel

    def silence(self, on: bool) -> None:
        self.model.silent = on

    def cell(self, volts: float) -> None:
        self.model.cell_v[0] = volts

    def temperature(self, celsius: float) -> None:
        self.model.cell_t[0] = celsius


@dataclasses.dataclass
class SerialPeer(Peer):
    model: BmsModel

    def silence(self, on: bool) -> None:
        self.model.silent = on

    def cell(self, volts: float) -> None:
        self.model.cell_v[0] = volts

    def temperature(self, celsius: float) -> None:
        self.model.temps[0] = celsius


@dataclasses.dataclass
class LvPeer(Peer):
    battery: Battery
    encode: Callable[[GatewayState], list[Frame]]

    def silence(self, on: bool) -> None:
        self.battery.encode = (lambda s: []) if on else self.encode

    def cell(self, volts: float) -> None:
        self.battery.state = dataclasses.replace(self.battery.state, voltage=16 * volts)

    def temperature(self, celsius: float) -> None:
        self.battery.state = dataclasses.replace(self.battery.state, temperature=celsius)


@dataclasses.dataclass
class FaultRig:
    kind: str
    gateway: Gateway
    clock: ScaledClock
    peer: Peer
    inverter: Recorder

    @property
    def source(self) -> Any:
        (source,) = self.gateway.sources
        return source

    async def state_until(self, pred: Callable[[GatewayState], bool], within: float = 10.0) -> GatewayState:
        """The gateway state once `pred` holds (AssertionError after `within` wall seconds)."""
        await until(lambda: pred(self.gateway.state()), within)
        return self.gateway.state()


def fault_settings(
    kind: str, pack: dict[str, Any], out_channel: str, pack_bus: str, outputs: Sequence[dict[str, Any]] = ()
) -> Settings:
    """One 16S LFP pack of `kind`, Pylontech CAN out (+ `outputs`); the rig's staleness, ramp and step."""
    settings, _ = load_settings(
        None,
        {
            "packs": [{"id": "p1", "source": kind, "cells": 16, "chemistry": "lfp", "capacity_ah": 100,
                       **pack}],
            "can": {"interface": "virtual", "channel": pack_bus},
            "outputs": [{"protocol": "pylontech-can", "interface": "virtual", "channel": out_channel},
                        *outputs],
            "gateway.stale_after_s": STALE_S,
            "gateway.recovery_ramp_s": RAMP_S,
            "gateway.step_period_s": STEP_S,
            "web": {"enabled": False},
            "limits": {"max_charge_current_a": MAX_CHARGE, "max_discharge_current_a": MAX_DISCHARGE},
        },
        env={},
    )  # fmt: skip
    return settings


def fast_serial_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Serial request timeouts are wall seconds (not scaled by the clock): shorten them for the rig."""
    monkeypatch.setattr(serial_bms, "Link", functools.partial(serial_bms.Link, timeout_s=REQUEST_TIMEOUT_S))


@contextlib.asynccontextmanager
async def fault_rig(
    kind: str,
    *,
    port: str | None = None,
    outputs: Sequence[dict[str, Any]] = (),
    clock: ScaledClock | None = None,
) -> AsyncIterator[FaultRig]:
    """A running Gateway with one pack of `kind` fed by its fake. Serial kinds: `port` (a path that the
    test makes point at a pty itself, e.g. a by-id symlink) replaces the rig's own pty. `outputs` go
    beside the Pylontech CAN one; `clock` replaces the ScaledClock(SPEED)."""
    out_ch, pack_ch = f"inv-{uuid.uuid4()}", f"pack-{uuid.uuid4()}"
    clock = clock or ScaledClock(SPEED)
    async with contextlib.AsyncExitStack() as stack:
        inv_bus = await stack.enter_async_context(AsyncCanBus("virtual", out_ch))
        inverter = Recorder(inv_bus, clock)
        peer: Peer
        if kind == "can":
            model = PackModel()
            settings = fault_settings(kind, {"sensors": 4}, out_ch, pack_ch, outputs)
            pack_bus = await stack.enter_async_context(AsyncCanBus("virtual", pack_ch))
            peer, fake = CanPeer(model), functools.partial(run_fake_pack, pack_bus, model, 0.1 / SPEED)
        elif kind in SERIAL_KINDS:
            pty = stack.enter_context(pty_pair())
            bms = BmsModel()
            pack = {"port": port or pty.path, "sensors": 2, "poll_interval_s": POLL_S}
            settings = fault_settings(kind, pack, out_ch, pack_ch, outputs)
            peer, fake = SerialPeer(bms), FakeBms(kind, pty, bms).run
            if port is not None:  # the test plugs the port in itself
                fake = _idle
        else:
            assert kind in INVERTER_CAN_KINDS
            pack = {"port": pack_ch, "sensors": 1}
            settings = fault_settings(kind, pack, out_ch, f"unused-{uuid.uuid4()}", outputs)
            bat_bus = await stack.enter_async_context(AsyncCanBus("virtual", pack_ch))
            encode = pylontech_can.encode if kind == "pylontech-can" else sma_can.encode
            # The battery's own limits above the gateway's, so the gateway's bind.
            state = make_state(lim(cvl=56.0, ccl=200.0, dcl=200.0, dvl=46.0), voltage=52.8, soc=0.6)
            battery = Battery(bat_bus, encode, state)
            peer, fake = LvPeer(battery, encode), battery.run
        gateway = Gateway(settings, clock)
        await stack.enter_async_context(running(gateway.run, fake, inverter.run))
        yield FaultRig(kind, gateway, clock, peer, inverter)


async def _idle() -> None:
    await asyncio.Event().wait()


@contextlib.contextmanager
def plugged(link: Path, pty: PtyPair) -> Iterator[None]:
    """The by-id symlink points at the pty while inside; removed (unplugged) on the way out."""
    os.symlink(pty.path, link)
    try:
        yield
    finally:
        link.unlink()
