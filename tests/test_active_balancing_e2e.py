"""Active balancing end to end: planner → PackView.transfers → GatewayBalanceTransfer on the virtual pack
bus → the simulated pack's balancer moves charge; the link lost, the gateway sends no-transfer frames."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from bmsgw.app import Gateway
from bmsgw.bms.pack_can import BalanceTransferMsg, decode
from bmsgw.clock import SteppedClock
from bmsgw.config import load_settings
from bmsgw.model import Chemistry
from bmsgw.sim import Scenario, SimPack, SimPackConfig
from bmsgw.sources.can import CanPackSource
from bmsgw.sources.simulator import SimulatedPacks, simulation_settings
from bmsgw.transport.can_bus import AsyncCanBus

ADDRESS = 3
TRANSFER_ID = 0x400 + 0x10 * ADDRESS + 0x9
LOSS = (40.0, 160.0)  # simulated seconds without the pack's frames
END_S = 600.0


class _Rest:
    """Load profile of a resting battery: no current, so only the balancer moves charge."""

    def demand(self, t: float) -> float:
        return 0.0


async def test_transfers_reach_the_pack_shrink_its_spread_and_stop_when_the_link_is_lost(
    tmp_path: Path,
) -> None:
    base, _ = load_settings(
        None,
        {"packs": [{"id": "p", "source": "can", "cells": 4, "sensors": 1, "capacity_ah": 2.0,
                    "address": ADDRESS}],
         "balancing": {"mode": "active", "transfer_current_a": 0.5, "max_transfers": 2},
         "web.enabled": False, "gateway.state_dir": str(tmp_path)},
        env={},
    )  # fmt: skip
    settings = simulation_settings(base, from_file=True)
    clock = SteppedClock(50.0)
    gw = Gateway(settings, clock, frame_timestamps=True)
    src = next(s for s in gw.sources if isinstance(s, CanPackSource))
    sim = SimulatedPacks(settings, clock, gw.state, lambda: src.last_frame_t, seed=1)
    # The top of charge (LFP's top knee: cells tell their SOC apart by voltage), ±1.5 % SOC, equal cells.
    pack = SimPack(SimPackConfig(4, Chemistry.LFP, 2.0, sensors=1, initial_soc=0.98, capacity_spread=0.0,
                                 soc_spread=0.015, resistance_spread=0.0, self_discharge_per_day=0.0,
                                 seed=5))  # fmt: skip
    sim.packs[0] = pack
    sim.profile = _Rest()  # type: ignore[assignment]
    sim.scenario = Scenario.from_dict(
        {"faults": [{"at": LOSS[0], "kind": "link_loss", "pack": 0, "duration": LOSS[1] - LOSS[0]}]}
    )
    soc0 = pack.soc_true
    spy = AsyncCanBus("virtual", settings.can.channel)
    await spy.open()
    seen: list[tuple[float, BalanceTransferMsg]] = []
    truth: list[tuple[float, np.ndarray]] = []
    task = asyncio.create_task(gw.run(sim.run))
    try:
        async with asyncio.timeout(180):
            while clock.now() < END_S:
                while (msg := spy.recv_nowait()) is not None:
                    if msg.arbitration_id == TRANSFER_ID:
                        decoded = decode(msg.arbitration_id, bytes(msg.data))
                        assert isinstance(decoded, BalanceTransferMsg)
                        seen.append((clock.now(), decoded))  # received at or after it was sent
                truth.append((clock.now(), pack.soc_true))
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await spy.close()

    moving = [(t, m) for t, m in seen if m.transfers]
    assert moving, "no transfer reached the bus"
    first = moving[0][1]
    assert first.module == ADDRESS
    assert len(first.transfers) == 2
    tr = first.transfers[0]
    assert (tr.source, tr.sink) == (int(np.argmax(soc0)), int(np.argmin(soc0)))  # fullest gives to emptiest
    assert tr.current_a == 0.5

    # The link lost: once the gateway sees the pack stale (5 s) it sends only no-transfer frames, and the
    # pack's charge stops moving (the 35 s margin covers frames read from the spy bus late on a loaded
    # machine: 0.7 s of wall time at 50x).
    quiet = (LOSS[0] + 40.0, LOSS[1] - 2.0)
    assert [m.transfers for t, m in seen if quiet[0] <= t <= quiet[1]] != []
    assert all(m.transfers == () for t, m in seen if quiet[0] <= t <= quiet[1])
    during = [soc for t, soc in truth if quiet[0] <= t <= quiet[1]]
    assert len(during) >= 2
    np.testing.assert_allclose(during[-1], during[0], atol=1e-9)

    spread0 = float(np.ptp(soc0))
    before_loss = float(np.ptp([soc for t, soc in truth if t <= LOSS[0]][-1]))
    end = float(np.ptp(pack.soc_true))
    assert spread0 > 0.01
    assert before_loss < spread0  # shrinking before the loss ...
    assert end < 0.4 * spread0  # ... and after it, transfers resumed
    assert any(t > LOSS[1] for t, _ in moving)
    assert src.transfers_sent > 0
