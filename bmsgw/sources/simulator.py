"""Simulated packs on an in-process virtual CAN bus, closed-loop with a simulated inverter."""

from __future__ import annotations

import asyncio
import dataclasses
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bmsgw.bms.pack_can import (
    TICK_S,
    BalanceTransferMsg,
    ContactorRequest,
    GatewayCommandMsg,
    PackCanError,
    decode,
    encode_tick,
)
from bmsgw.clock import SteppedClock
from bmsgw.config import Settings
from bmsgw.model import BmsFlags, Chemistry, Frame, GatewayState
from bmsgw.outputs.can import FrameLog
from bmsgw.sim import Scenario, ScenarioError, SimPack, SimPackConfig, SolarDayProfile
from bmsgw.transport.can_bus import AsyncCanBus

__all__ = ["SimulatedPacks", "SimulationError", "simulation_settings"]

PACK_CHANNEL = "bmsgw-sim-pack"
INVERTER_CHANNEL = "bmsgw-sim-inverter"
DT_S = TICK_S  # one physics step per pack transmit tick
LIMITS_TIMEOUT_S = 10.0
# The simulated packs' active balancer (pack.dbc GatewayBalanceTransfer): the sink cell gains
# [balancing] transfer_efficiency of what the source gives; transfers stop when no frame with a new alive
# counter came for the timeout.
TRANSFER_TIMEOUT_S = 3.0
# Lockstep: simulated time only runs ahead of what the gateway has received by this much, so a slow
# machine slows the simulation down instead of making the gateway see stale data.
MAX_LAG_S = 0.5  # the simulated inverter stops using limits it has not heard for this long


class SimulationError(Exception):
    """The simulation cannot start (bad scenario, scenario outside the simulated system)."""


def simulation_settings(
    base: Settings,
    *,
    packs: int | None = None,
    cells: int | None = None,
    chemistry: str | None = None,
    from_file: bool = False,
) -> Settings:
    """Settings for `simulate`: built-in packs unless a file gave them, pack bus on virtual CAN."""
    data: dict[str, Any] = base.model_dump()
    if not from_file or packs is not None or cells is not None or chemistry is not None:
        template = base.packs[0] if from_file else None
        n = packs if packs is not None else (len(base.packs) if from_file else 1)
        data["packs"] = [
            {
                "id": f"pack{i + 1}",
                "source": "can",
                "cells": cells or (template.cells if template else 16),
                "sensors": template.sensors if template else 4,
                "chemistry": chemistry or (template.chemistry if template else Chemistry.LFP),
                "capacity_ah": template.capacity_ah if template else 100.0,
                "address": i,
            }
            for i in range(n)
        ]
    data["can"] = {"interface": "virtual", "channel": PACK_CHANNEL, "bitrate": 500_000}
    if not data["outputs"]:
        data["outputs"] = [{"protocol": "pylontech-can", "interface": "virtual", "channel": INVERTER_CHANNEL}]
    return Settings.model_validate(data)


class SimulatedPacks:
    """Steps the pack physics, sends pack.dbc frames, obeys gateway commands and the inverter limits."""

    def __init__(
        self,
        settings: Settings,
        clock: SteppedClock,
        state: Callable[[], GatewayState],
        consumed: Callable[[], float],
        *,
        scenario: Path | None = None,
        record: Path | None = None,
        initial_soc: float | None = None,
        seed: int = 1,
        start_hour: float = 11.0,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._state = state
        self._consumed = consumed
        self._sent_t = -float("inf")
        packs = settings.packs
        try:
            self.scenario = (
                Scenario.load(scenario, chemistry=settings.chemistry, capacity_ah=packs[0].capacity_ah)
                if scenario is not None
                else Scenario()
            )
            self.scenario.check(len(packs), min(p.cells for p in packs), min(p.sensors for p in packs))
        except ScenarioError as exc:
            raise SimulationError(f"scenario: {exc}") from None
        soc0 = initial_soc if initial_soc is not None else self.scenario.initial_soc
        self.packs = [
            SimPack(
                SimPackConfig(
                    cells=p.cells,
                    chemistry=p.chemistry,
                    capacity_ah=p.capacity_ah,
                    sensors=p.sensors,
                    initial_soc=0.5 if soc0 is None else soc0,
                    seed=seed + i,
                    hysteresis=1.0,  # the chemistry's own OCV hysteresis (LFP: what the estimator models)
                )
            )
            for i, p in enumerate(packs)
        ]
        profile = self.scenario.solar_profile(packs[0].capacity_ah, len(packs), seed=seed)
        if self.scenario.load_overrides.start_s is None:
            profile = dataclasses.replace(profile, start_s=start_hour * 3600.0)
        self.profile: SolarDayProfile = profile
        self._record = record
        self._alive = [0] * len(packs)
        self._contactor_open = [False] * len(packs)
        self._transfers: list[BalanceTransferMsg | None] = [None] * len(packs)  # running, with its arrival
        self._transfer_at = [0.0] * len(packs)
        self._ccl = 0.0
        self._dcl = 0.0
        self._cvl = 0.0
        self._limits_at = -float("inf")
        self.ticks = 0
        self.frames_sent = 0
        self.charge_ah = 0.0
        self.discharge_ah = 0.0
        self._wall_start = 0.0
        self._wall_end = 0.0

    def describe(self) -> str:
        """Summary of the simulated system and what it did."""
        end = self._wall_end or time.monotonic()
        wall = end - self._wall_start if self._wall_start else 0.0
        t = self._clock.now()
        speed = f"{t / wall:.0f}x" if wall > 0 else "n/a"
        truth = ", ".join(f"{float(p.reading().soc_true.mean()) * 100:.1f} %" for p in self.packs)
        return (
            f"simulated {t:.0f} s in {wall:.1f} s wall ({speed}); {len(self.packs)} pack(s) × "
            f"{self.packs[0].config.cells} cells {self._settings.chemistry}; frames sent {self.frames_sent}\n"
            f"charge throughput {self.charge_ah:.2f} Ah in, {self.discharge_ah:.2f} Ah out; "
            f"true mean cell SOC at end: {truth}"
        )

    async def run(self) -> None:
        """Run until cancelled."""
        log = FrameLog(self._record, "can0") if self._record else None
        pack_bus = AsyncCanBus("virtual", self._settings.can.channel, preserve_timestamps=True)
        inverter = self._inverter_channel()
        inv_bus = AsyncCanBus("virtual", inverter) if inverter else None
        await pack_bus.open()
        if inv_bus is not None:
            await inv_bus.open()
        self._wall_start = time.monotonic()
        t0 = self._clock.now()
        try:
            while True:
                target = t0 + (time.monotonic() - self._wall_start) * self._clock.speed
                budget = time.monotonic() + 0.01
                while (
                    self._clock.now() + DT_S <= target
                    and time.monotonic() < budget
                    and self._consumed() >= self._sent_t - MAX_LAG_S
                ):
                    self._listen(pack_bus, inv_bus)
                    now = self._clock.now() + DT_S
                    for frame in self._tick(now):
                        await pack_bus.send(frame, now)
                        self._sent_t = now
                        if log is not None:
                            log.write(frame, now)
                await asyncio.sleep(min(DT_S / self._clock.speed, 0.01))
        finally:
            self._wall_end = time.monotonic()
            await pack_bus.close()
            if inv_bus is not None:
                await inv_bus.close()
            if log is not None:
                log.close()

    def _inverter_channel(self) -> str | None:
        for o in self._settings.outputs:
            if o.interface == "virtual" and o.protocol in ("pylontech-can",):
                return o.channel
        return None

    def _listen(self, pack_bus: AsyncCanBus, inv_bus: AsyncCanBus | None) -> None:
        """Apply gateway commands from the pack bus and limits (0x351) from the inverter bus."""
        while (msg := pack_bus.recv_nowait()) is not None:
            try:
                cmd = decode(msg.arbitration_id, bytes(msg.data))
            except PackCanError:
                continue
            if isinstance(cmd, GatewayCommandMsg) and cmd.module < len(self.packs):
                i = self._index_of(cmd.module)
                if i is not None:
                    self.packs[i].set_balance(cmd.balance_mask, self._settings.balancing.bleed_current_a)
                    self._contactor_open[i] = cmd.contactor is ContactorRequest.OPEN
            elif isinstance(cmd, BalanceTransferMsg):
                i = self._index_of(cmd.module)
                if i is not None:
                    self._run_transfers(i, cmd)
        for i, running in enumerate(self._transfers):
            if running is not None and self._clock.now() - self._transfer_at[i] > TRANSFER_TIMEOUT_S:
                self._run_transfers(i, None)
        if inv_bus is None:
            lim = self._state().limits
            self._ccl, self._dcl, self._limits_at = lim.ccl.value, lim.dcl.value, self._clock.now()
            self._cvl = lim.cvl.value
            return
        while (msg := inv_bus.recv_nowait()) is not None:
            if msg.arbitration_id == 0x351 and len(msg.data) >= 6:
                # The simulated inverter reads limits the way a real one does: 0x351 CVL, CCL/DCL in 0.1 V/A;
                # it charges at constant voltage up to CVL.
                cvl, ccl, dcl = struct.unpack_from("<Hhh", bytes(msg.data))
                self._ccl, self._dcl, self._limits_at = ccl / 10, dcl / 10, self._clock.now()
                self._cvl = cvl / 10

    def _run_transfers(self, i: int, cmd: BalanceTransferMsg | None) -> None:
        """Pack i's balancer obeys `cmd` (None: timed out, stop); cells beyond the pack are ignored."""
        prev = self._transfers[i]
        moves = cmd.transfers if cmd is not None else ()
        if cmd is not None and (prev is None or cmd.alive != prev.alive):
            self._transfer_at[i] = self._clock.now()
        if moves != (prev.transfers if prev is not None else ()):
            pack = self.packs[i]
            extra = np.zeros(pack.config.cells)
            for tr in moves:
                if tr.source < len(extra) and tr.sink < len(extra):
                    extra[tr.source] -= tr.current_a
                    extra[tr.sink] += self._settings.balancing.transfer_efficiency * tr.current_a
            pack.set_cell_currents(extra)
        self._transfers[i] = cmd if moves else None  # the running command (its alive) or nothing

    def _index_of(self, module: int) -> int | None:
        for i, p in enumerate(self._settings.packs):
            if p.address == module:
                return i
        return None

    def _tick(self, t: float) -> list[Frame]:
        """Advance the physics by one DT to time t and return the frames due."""
        n = len(self.packs)
        fresh = t - self._limits_at <= LIMITS_TIMEOUT_S
        ccl = max(self._ccl, 0.0) / n if fresh else 0.0
        dcl = max(self._dcl, 0.0) / n if fresh else 0.0
        want = self.profile.demand(t) / n
        frames: list[Frame] = []
        k = self.ticks
        for i, (pack, cfg) in enumerate(zip(self.packs, self._settings.packs, strict=True)):
            forced = self.scenario.current_override(i, t)
            if self._contactor_open[i]:
                current = 0.0
            elif forced is not None:
                current = forced
            else:
                current = min(max(want, -dcl), ccl)
                if current > 0.0:  # the charger regulates at CVL (constant voltage), never discharges
                    current = max(min(current, pack.cv_current(self._cvl, DT_S)), 0.0)
            pack.step(DT_S, current)
            if current > 0:
                self.charge_ah += current * DT_S / 3600
            else:
                self.discharge_ah -= current * DT_S / 3600
            if self.scenario.link_lost(i, t):
                continue
            r = self.scenario.apply(i, t, pack.reading())
            m = cfg.address
            flags = BmsFlags.CHARGE_FET | BmsFlags.DISCHARGE_FET
            if not self._contactor_open[i]:
                flags |= BmsFlags.CONTACTOR_CLOSED
            if pack.balance_mask or self._transfers[i] is not None:
                flags |= BmsFlags.BALANCING
            frames += encode_tick(k, m, r.cell_v, r.cell_t, r.current, r.voltage, flags, self._alive[i])
            self._alive[i] = (self._alive[i] + 1) & 0xF
        self.ticks += 1
        self._clock.advance(t)
        self.frames_sent += len(frames)
        return frames
