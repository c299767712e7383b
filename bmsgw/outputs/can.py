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
    """One configured CAN inverter output; keeps sending (the safe state too) while the gateway runs.

    Frames the inverter sends on the same bus go to the codec's decode_inverter: the newest result is
    `inverter` (and per CAN id `inverter_frames`), received at clock time `inverter_seen_t`. Optional:
    many inverters never send anything.
    """

    def __init__(
        self, cfg: OutputConfig, clock: Clock, state: Callable[[], GatewayState], *, name: str = "bmsgw"
    ) -> None:
        self.cfg = cfg
        self.codec = CAN_CODECS[cfg.protocol]
        self._opts = CodecOptions(manufacturer=cfg.manufacturer, name=name)
        self._clock = clock
        self._state = state
        self.sent = 0
        self.send_errors = 0
        self.last_frames: list[Frame] = []
        self.received = 0
        self.rx_errors = 0
        self.inverter: object | None = None
        self.inverter_frames: dict[int, object] = {}
        self.inverter_seen_t: float | None = None
        self._inverter_logged = False

    @property
    def inverter_present(self) -> bool:
        """Whether the inverter sent a frame the codec reads within the codec's inverter timeout."""
        seen = self.inverter_seen_t
        return seen is not None and self._clock.now() - seen <= self.codec.inverter_timeout_s

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
                    await self._serve(bus, log)
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

    async def _serve(self, bus: AsyncCanBus, log: FrameLog | None) -> None:
        """Transmit and receive until either side raises CanBusError (the caller then reopens the bus)."""
        tasks = {asyncio.create_task(self._transmit(bus, log)), asyncio.create_task(self._receive(bus))}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _transmit(self, bus: AsyncCanBus, log: FrameLog | None) -> None:
        gap = self.codec.frame_gap_s
        while True:
            frames = self.frames(self._state())
            for k, frame in enumerate(frames):
                if k and gap:
                    await asyncio.sleep(gap / self._clock.speed)
                stamp = self._clock.stamp()
                await bus.send(frame, stamp)
                if log is not None:
                    log.write(frame, stamp)
                self.sent += 1
            self.last_frames = frames
            self._note_inverter()
            # The set repeats every period, but never sooner than one gap per frame.
            spent = max(len(frames) - 1, 0) * gap
            await asyncio.sleep((max(self.codec.period_s, len(frames) * gap) - spent) / self._clock.speed)

    async def _receive(self, bus: AsyncCanBus) -> None:
        decode = self.codec.decode_inverter
        while True:
            msg = await bus.recv()
            self.received += 1
            if decode is None or msg.is_remote_frame:
                continue
            frame = Frame(msg.arbitration_id, bytes(msg.data), msg.is_extended_id)
            try:
                status = decode(frame)
            except Exception:  # CanCodecError: garbled; anything else: a decoder bug, never fatal here
                self.rx_errors += 1
                continue
            if status is not None:
                self.inverter = status
                self.inverter_frames[frame.id] = status
                self.inverter_seen_t = self._clock.now()
                self._note_inverter()

    def _note_inverter(self) -> None:
        """Log once when the inverter appears and once when it falls silent."""
        present = self.inverter_present
        if present == self._inverter_logged:
            return
        self._inverter_logged = present
        if present:
            _log.info("inverter seen", protocol=self.cfg.protocol, channel=self.cfg.channel)
        else:
            _log.warning(
                "inverter silent",
                protocol=self.cfg.protocol,
                channel=self.cfg.channel,
                after_s=self.codec.inverter_timeout_s,
            )
