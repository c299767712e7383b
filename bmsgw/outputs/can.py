"""Inverter side over CAN: encode the newest state at the protocol's cadence, send it, log it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import can

from bmsgw.clock import Clock
from bmsgw.config import OutputConfig
from bmsgw.inverter import CAN_CODECS, CodecOptions
from bmsgw.log import get_logger
from bmsgw.model import Frame, GatewayState
from bmsgw.transport.can_bus import AsyncCanBus, CanBusError

__all__ = ["CanOutput", "FrameLog"]

_log = get_logger(__name__)


class FrameLog:
    """Writes frames to a log whose format follows the suffix (.log candump, .asc, .blf; optional .gz)."""

    def __init__(self, path: Path, channel: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = can.Logger(str(path))
        self._channel = channel

    def write(self, frame: Frame, timestamp: float) -> None:
        """Record one frame."""
        self._writer.on_message_received(
            can.Message(
                timestamp=timestamp,
                arbitration_id=frame.id,
                data=frame.data,
                is_extended_id=frame.extended,
                is_rx=False,
                channel=self._channel,
            )
        )

    def close(self) -> None:
        """Flush and close the file."""
        self._writer.stop()


class CanOutput:
    """One configured CAN inverter output; keeps sending (the safe state too) while the gateway runs."""

    def __init__(self, cfg: OutputConfig, clock: Clock, state: Callable[[], GatewayState]) -> None:
        self.cfg = cfg
        self.codec = CAN_CODECS[cfg.protocol]
        self._opts = CodecOptions(manufacturer=cfg.manufacturer)
        self._clock = clock
        self._state = state
        self.sent = 0
        self.send_errors = 0
        self.last_frames: list[Frame] = []

    def frames(self, state: GatewayState) -> list[Frame]:
        """The frames this output sends for `state`."""
        return self.codec.encode(state, self._opts)

    async def run(self) -> None:
        """Transmit every period until cancelled; reopen the bus with backoff on failure."""
        log = FrameLog(self.cfg.log, self.cfg.channel) if self.cfg.log else None
        backoff = 0.5
        try:
            while True:
                bus = AsyncCanBus(self.cfg.interface, self.cfg.channel, self.cfg.bitrate)
                try:
                    await bus.open()
                    backoff = 0.5
                    await self._transmit(bus, log)
                except CanBusError as exc:
                    self.send_errors += 1
                    _log.error("inverter bus failed", protocol=self.cfg.protocol, error=str(exc))
                finally:
                    await bus.close()
                await asyncio.sleep(backoff / self._clock.speed)
                backoff = min(backoff * 2, 30.0)
        finally:
            if log is not None:
                log.close()

    async def _transmit(self, bus: AsyncCanBus, log: FrameLog | None) -> None:
        period = self.codec.period_s
        while True:
            frames = self.frames(self._state())
            stamp = self._clock.stamp()
            for frame in frames:
                await bus.send(frame, stamp)
                if log is not None:
                    log.write(frame, stamp)
            self.sent += len(frames)
            self.last_frames = frames
            await asyncio.sleep(period / self._clock.speed)
