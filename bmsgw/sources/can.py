"""Pack side over CAN (dbc/pack.dbc): frames → complete PackSamples, plus gateway → pack commands."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

from bmsgw.bms.pack_can import (
    ContactorRequest,
    PackAssembler,
    PackCanError,
    decode,
    encode_command,
    encode_transfer,
)
from bmsgw.clock import Clock
from bmsgw.config import Settings
from bmsgw.core.balancing import safe_transfers
from bmsgw.log import get_logger
from bmsgw.model import Frame, GatewayState, PackSample
from bmsgw.transport.can_bus import AsyncCanBus, CanBusError

__all__ = ["CanPackSource", "PackFrameDecoder"]

_log = get_logger(__name__)

COMMAND_PERIOD_S = 1.0
# Transfers run only on a state at most this old (the pack's own GatewayBalanceTransfer timeout).
TRANSFER_STATE_MAX_AGE_S = 3.0


class PackFrameDecoder:
    """Turns pack-bus frames into PackSamples for the packs configured with source = "can"."""

    def __init__(self, settings: Settings, packs: list[int] | None = None) -> None:
        window = settings.gateway.sample_window_s
        chosen = (
            packs if packs is not None else [i for i, p in enumerate(settings.packs) if p.source == "can"]
        )
        self._by_module = {
            (p := settings.packs[i]).address: PackAssembler(i, p.address, p.cells, p.sensors, window)
            for i in chosen
        }
        self.frames = 0
        self.decoded = 0
        self.rejected = 0
        self.ignored = 0
        self.last_error = ""

    def feed(self, frame_id: int, data: bytes, t: float, extended: bool = False) -> PackSample | None:
        """Decode one frame received at t; a completed sample, or None. Bad frames are counted."""
        self.frames += 1
        try:
            msg = decode(frame_id, data, extended=extended)
        except PackCanError as exc:
            self.rejected += 1
            self.last_error = str(exc)
            return None
        if msg is None:
            self.ignored += 1
            return None
        asm = self._by_module.get(msg.module)
        if asm is None:
            self.ignored += 1
            return None
        self.decoded += 1
        return asm.feed(msg, t)

    @property
    def modules(self) -> list[int]:
        """Module addresses this decoder assembles."""
        return list(self._by_module)


class CanPackSource:
    """Reads the pack bus into the pipeline; reopens the bus with backoff when it fails.

    Live, frames are stamped with the gateway clock on arrival (adapter timestamps use other time
    bases); a simulation stamps frames itself and sets `frame_timestamps`.
    """

    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        on_sample: Callable[[PackSample], None],
        state: Callable[[], GatewayState],
        *,
        packs: list[int] | None = None,
        frame_timestamps: bool = False,
    ) -> None:
        self._settings = settings
        self._frame_timestamps = frame_timestamps
        self._clock = clock
        self._on_sample = on_sample
        self._state = state
        self.decoder = PackFrameDecoder(settings, packs)
        self._packs = set(packs if packs is not None else range(len(settings.packs)))
        self.bus: AsyncCanBus | None = None
        self.reconnects = 0
        self.transfers_sent = 0  # GatewayBalanceTransfer frames that carried at least one transfer
        self.last_frame_t = -math.inf

    async def run(self) -> None:
        """Receive forever (cancel to stop)."""
        backoff = 0.5
        cfg = self._settings.can
        while True:
            bus = AsyncCanBus(cfg.interface, cfg.channel, cfg.bitrate)
            try:
                await bus.open()
                self.bus = bus
                backoff = 0.5
                _log.info("pack bus open", interface=cfg.interface, channel=cfg.channel)
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._receive(bus))
                    tg.create_task(self._command(bus))
            except* CanBusError as eg:
                _log.error("pack bus failed", error=str(eg.exceptions[0]), retry_in_s=backoff)
            finally:
                self.bus = None
                await bus.close()
            self.reconnects += 1
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)

    async def _receive(self, bus: AsyncCanBus) -> None:
        dec = self.decoder
        rejected = 0
        while True:
            msg = await bus.recv()
            t = msg.timestamp if self._frame_timestamps else self._clock.now()
            self.last_frame_t = t
            sample = dec.feed(msg.arbitration_id, bytes(msg.data), t, msg.is_extended_id)
            if sample is not None:
                self._on_sample(sample)
            if dec.rejected != rejected and dec.rejected % 1000 == 1:
                _log.warning("rejected pack frame", total=dec.rejected, last=dec.last_error)
            rejected = dec.rejected

    async def _command(self, bus: AsyncCanBus) -> None:
        """Every COMMAND_PERIOD_S: GatewayCommand per pack, and with active balancing its
        GatewayBalanceTransfer (no transfers unless `safe_transfers` allows them)."""
        alive = 0
        active = self._settings.balancing.mode == "active"
        while True:
            await asyncio.sleep(COMMAND_PERIOD_S / self._clock.speed)
            state = self._state()
            now = self._clock.now()
            for view in state.packs:
                cfg = self._settings.packs[view.pack]
                if view.pack not in self._packs:
                    continue
                contactor = ContactorRequest.OPEN if view.contactor_open_request else ContactorRequest.NONE
                frame: Frame = encode_command(cfg.address, view.balance_mask, contactor, alive)
                await bus.send(frame, self._clock.stamp())
                if active:
                    moves = safe_transfers(state, view, now, TRANSFER_STATE_MAX_AGE_S)
                    self.transfers_sent += bool(moves)
                    await bus.send(encode_transfer(cfg.address, moves, alive), self._clock.stamp())
            alive = (alive + 1) & 0xF
