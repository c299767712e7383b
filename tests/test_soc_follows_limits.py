"""`[[outputs]] soc_follows_limits`: SOC 0 % while discharging is forbidden, 100 % while only charging is,
for inverters that ignore zero limits and stop only on the SOC (Deye off-grid, Battery-Emulator #873)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import numpy as np
import pytest
from fakes import Decoded, PackModel, decode_pylon, lim, make_state, run_fake_pack, running

from bmsgw.app import Gateway
from bmsgw.clock import ScaledClock
from bmsgw.config import OutputConfig, load_settings
from bmsgw.inverter.scaling import soc_following_limits
from bmsgw.model import GatewayState
from bmsgw.outputs import state_for
from bmsgw.transport.can_bus import AsyncCanBus

SPEED = 10.0
SET = {0x351, 0x355, 0x356, 0x359, 0x35C, 0x35E}


@pytest.mark.parametrize(
    ("ccl", "dcl", "charge", "discharge", "soc"),
    [
        (100.0, 150.0, True, True, 0.62),  # both allowed: the real SOC
        (0.0, 150.0, True, True, 1.0),  # charging forbidden: "full"
        (100.0, 150.0, False, True, 1.0),
        (100.0, 0.0, True, True, 0.0),  # discharging forbidden: "empty"
        (100.0, 150.0, True, False, 0.0),
        (0.0, 0.0, False, False, 0.0),  # both (no usable pack): discharge wins
    ],
)
def test_soc_follows_limits(ccl: float, dcl: float, charge: bool, discharge: bool, soc: float) -> None:
    state = make_state(lim(ccl=ccl, dcl=dcl, charge=charge, discharge=discharge), soc=0.62)
    shown = soc_following_limits(state)
    assert shown.soc == soc
    assert shown.limits is state.limits  # nothing else changes
    assert shown.packs is state.packs


def test_off_by_default_and_per_output() -> None:
    state = make_state(lim(ccl=0.0), soc=0.62)
    off = state_for(OutputConfig(protocol="pylontech-can"), lambda: state)
    on = state_for(OutputConfig(protocol="pylontech-can", soc_follows_limits=True), lambda: state)
    assert off() is state
    assert on().soc == 1.0


async def _frames(latest: dict[int, bytes], pred: Callable[[Decoded], bool], within: float = 10.0) -> Decoded:
    deadline = time.monotonic() + within
    last = None
    while time.monotonic() < deadline:
        if latest.keys() >= SET:
            last = decode_pylon(latest)
            if pred(last):
                return last
        await asyncio.sleep(0.01)
    raise AssertionError(f"no frame set met the condition within {within} s; last: {last}")


async def test_cold_lockout_and_link_loss_on_a_virtual_bus() -> None:
    pack_ch, out = f"pack-{uuid.uuid4()}", {"interface": "virtual", "protocol": "pylontech-can"}
    chans = [f"inv-{uuid.uuid4()}", f"inv-{uuid.uuid4()}"]
    settings, _ = load_settings(
        None,
        {"packs": [{"id": "p1", "cells": 16, "sensors": 4, "capacity_ah": 100}],
         "can": {"interface": "virtual", "channel": pack_ch},
         "outputs": [{**out, "channel": chans[0], "soc_follows_limits": True}, {**out, "channel": chans[1]}],
         "gateway.recovery_ramp_s": 0.0, "gateway.step_period_s": 0.1, "gateway.stale_after_s": 2.0},
        env={},
    )  # fmt: skip
    gateway = Gateway(settings, ScaledClock(SPEED))
    pack = PackModel(current=0.0)
    seen: list[dict[int, bytes]] = [{}, {}]

    async def inverter(bus: AsyncCanBus, latest: dict[int, bytes]) -> None:
        while True:
            msg = await bus.recv()
            latest[msg.arbitration_id] = bytes(msg.data)

    def real(s: GatewayState) -> int:
        return round(100 * s.soc)

    async with (
        AsyncCanBus("virtual", pack_ch) as pack_bus,
        AsyncCanBus("virtual", chans[0]) as bus_on,
        AsyncCanBus("virtual", chans[1]) as bus_off,
        running(
            gateway.run,
            lambda: run_fake_pack(pack_bus, pack, 0.1 / SPEED),
            lambda: inverter(bus_on, seen[0]),
            lambda: inverter(bus_off, seen[1]),
        ),
    ):
        on = await _frames(seen[0], lambda f: f.ccl > 0 and f.dcl > 0)
        soc = real(gateway.state())
        assert 0 < soc < 100
        assert on.soc == soc  # both directions allowed: the real SOC

        pack.cell_t = np.full(4, -5.0)  # below freezing: charging locked out, discharging allowed
        on = await _frames(seen[0], lambda f: f.ccl == 0)
        off = await _frames(seen[1], lambda f: f.ccl == 0)
        assert gateway.state().limits.dcl.value > 0
        assert (on.soc, off.soc) == (100, soc)  # "full" to the inverter that needs it, real to the other

        pack.cell_t = np.full(4, 25.0)
        await _frames(seen[0], lambda f: f.ccl > 0 and f.soc == soc)

        pack.silent = True  # link lost: no usable pack, both limits 0
        on = await _frames(seen[0], lambda f: f.dcl == 0)
        off = await _frames(seen[1], lambda f: f.dcl == 0)
        assert (on.soc, off.soc) == (0, soc)  # "empty": stop draining a battery that cannot be seen
