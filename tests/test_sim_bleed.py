"""The simulated pack bleeds `[balancing] bleed_current_a` from the cells a GatewayCommand names, and its
active balancer delivers `[balancing] transfer_efficiency` of what a GatewayBalanceTransfer takes."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from bmsgw.bms.pack_can import ContactorRequest, encode_command, encode_transfer
from bmsgw.clock import SteppedClock
from bmsgw.config import Settings, load_settings
from bmsgw.model import Chemistry, GatewayState, Transfer
from bmsgw.sim import SimPack, SimPackConfig
from bmsgw.sources.simulator import SimulatedPacks, simulation_settings
from bmsgw.transport.can_bus import AsyncCanBus

CAPACITY_AH = 10.0
BLED = 0b0101  # cells 1 and 3
RUN_S = 600.0


class _Rest:
    """No load: only the bleed moves charge."""

    def demand(self, t: float) -> float:
        return 0.0


async def _until(pred: Callable[[], bool]) -> None:
    while True:
        if pred():
            return
        await asyncio.sleep(0.005)


def _no_state() -> GatewayState:
    raise AssertionError("the simulated inverter reads its limits from its own bus here")


def _rig(
    tmp_path: Path, balancing: dict[str, object]
) -> tuple[SimulatedPacks, SimPack, SteppedClock, Settings]:
    base, _ = load_settings(
        None,
        {"packs": [{"id": "p", "source": "can", "cells": 4, "sensors": 1, "capacity_ah": CAPACITY_AH}],
         "balancing": balancing, "web.enabled": False, "gateway.state_dir": str(tmp_path)},
        env={},
    )  # fmt: skip
    clock = SteppedClock(200.0)
    settings = simulation_settings(base, from_file=True)
    sim = SimulatedPacks(settings, clock, _no_state, lambda: math.inf)
    pack = SimPack(
        SimPackConfig(
            4,
            Chemistry.LFP,
            CAPACITY_AH,
            sensors=1,
            initial_soc=0.9,
            capacity_spread=0.0,
            soc_spread=0.0,
            self_discharge_per_day=0.0,
        )
    )
    sim.packs[0] = pack
    sim.profile = _Rest()  # type: ignore[assignment]
    return sim, pack, clock, settings


@pytest.mark.parametrize("bleed_a", [0.2, 1.5])
async def test_bled_cells_lose_bleed_current_times_time(tmp_path: Path, bleed_a: float) -> None:
    sim, pack, clock, settings = _rig(tmp_path, {"mode": "passive", "bleed_current_a": bleed_a})
    task = asyncio.create_task(sim.run())
    try:
        async with AsyncCanBus("virtual", settings.can.channel) as gateway_side, asyncio.timeout(60):
            frame = encode_command(settings.packs[0].address, BLED, ContactorRequest.CLOSE, 0)
            while True:  # again until the simulation's bus is open and has read it
                await gateway_side.send(frame, clock.now())
                await asyncio.sleep(0.02)
                if pack.balance_mask == BLED:
                    break
            t0, soc0 = clock.now(), pack.soc_true
            await _until(lambda: clock.now() >= t0 + RUN_S)
            t1, soc1 = clock.now(), pack.soc_true  # read together: the simulation steps between awaits
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    drop = soc0 - soc1
    expected = bleed_a * (t1 - t0) / 3600.0 / pack.capacity_true
    bled = (BLED >> np.arange(4)) & 1 == 1
    # SOC is committed once a simulated second: up to 1 s of bleed may be outside the window at either end.
    np.testing.assert_allclose(drop[bled], expected[bled], rtol=0.01)
    np.testing.assert_allclose(drop[~bled], 0.0, atol=1e-12)


async def test_the_balancer_delivers_transfer_efficiency_of_what_it_takes(tmp_path: Path) -> None:
    sim, pack, clock, settings = _rig(tmp_path, {"mode": "active", "transfer_efficiency": 0.6})
    move = (Transfer(0, 2, 1.0),)  # cell 1 → cell 3, 1 A
    task = asyncio.create_task(sim.run())
    try:
        async with AsyncCanBus("virtual", settings.can.channel) as gateway_side, asyncio.timeout(60):
            alive = 0
            soc0 = pack.soc_true
            t_end = clock.now() + RUN_S
            while clock.now() < t_end:  # a fresh alive counter every simulated second keeps it running
                await gateway_side.send(encode_transfer(settings.packs[0].address, move, alive), clock.now())
                alive += 1
                await clock.sleep(1.0)
            soc1 = pack.soc_true
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    gained_ah = (soc1 - soc0) * pack.capacity_true
    assert gained_ah[0] < -0.1  # it ran for most of the window
    assert gained_ah[2] == pytest.approx(-0.6 * gained_ah[0], rel=1e-6)
    np.testing.assert_allclose(gained_ah[[1, 3]], 0.0, atol=1e-12)
