"""Inverter side over CAN: encode the newest state at the protocol's cadence, send it, log it.

Also the pieces every CAN output shares: the bus loop that reopens with backoff (serve_bus), sending with
the optional frame log (send_frame) and the inverter presence log (Presence).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import can

from bmsgw.clock import Clock
from bmsgw.config import OutputConfig
from bmsgw.inverter import CAN_CODECS, CodecOptions
from bmsgw.log import get_logger
from bmsgw.model import Frame, GatewayState
from bmsgw.transport.can_bus import AsyncCanBus, CanBusError

__all__ = ["CanOutput", "FrameLog", "Presence", "send_frame", "serve_bus"]

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


Workers = Callable[[AsyncCanBus, FrameLog | None], list[Coroutine[Any, Any, None]]]
"""(open bus, frame log) -> the coroutines that serve it together."""


async def serve_bus(cfg: OutputConfig, clock: Clock, workers: Workers, on_error: Callable[[], None]) -> None:
    """Open cfg's bus and run `workers` on it until cancelled; on CanBusError call `on_error`, log and
    reopen the bus with backoff (0.5 s doubling to 30 s)."""
    log = FrameLog(cfg.log, cfg.channel) if cfg.log else None
    backoff = 0.5
    try:
        while True:
            bus = AsyncCanBus(cfg.interface, cfg.channel, cfg.bitrate)
            try:
                await bus.open()
                backoff = 0.5
                await _run_together(workers(bus, log))
            except CanBusError as exc:
                on_error()
                _log.error("inverter bus failed", protocol=cfg.protocol, error=str(exc))
            finally:
                await bus.close()
            await asyncio.sleep(backoff / clock.speed)
            backoff = min(backoff * 2, 30.0)
    finally:
        if log is not None:
            log.close()


async def send_frame(bus: AsyncCanBus, log: FrameLog | None, frame: Frame, clock: Clock) -> None:
    """Send one frame stamped with the gateway clock, and record it in the frame log if there is one."""
    stamp = clock.stamp()
    await bus.send(frame, stamp)
    if log is not None:
        log.write(frame, stamp)


class Presence:
    """Whether the inverter was heard within `timeout_s`; logs once when it appears, once when it goes."""

    def __init__(self, clock: Clock, timeout_s: float, protocol: str, channel: str) -> None:
        self.seen_t: float | None = None
        self._clock = clock
        self._timeout_s = timeout_s
        self._where = {"protocol": protocol, "channel": channel}
        self._logged = False

    @property
    def present(self) -> bool:
        """Heard within the timeout."""
        return self.seen_t is not None and self._clock.now() - self.seen_t <= self._timeout_s

    def heard(self) -> None:
        """The inverter just sent something we read."""
        self.seen_t = self._clock.now()
        self.check()

    def check(self) -> None:
        """Log a change of presence (call now and then: silence is only noticed here)."""
        present = self.present
        if present == self._logged:
            return
        self._logged = present
        if present:
            _log.info("inverter seen", **self._where)
        else:
            _log.warning("inverter silent", after_s=self._timeout_s, **self._where)


async def _run_together(coros: list[Coroutine[Any, Any, None]]) -> None:
    """Run until the first one ends or raises (its exception propagates); cancel the others."""
    tasks = {asyncio.create_task(c) for c in coros}
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


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
        self._opts = CodecOptions(
            manufacturer=cfg.manufacturer, name=name, unknown_temperature_c=cfg.unknown_temperature_c
        )
        self._clock = clock
        self._state = state
        self.sent = 0
        self.send_errors = 0
        self.last_frames: list[Frame] = []
        self.received = 0
        self.rx_errors = 0
        self.inverter: object | None = None
        self.inverter_frames: dict[int, object] = {}
        self._presence = Presence(clock, self.codec.inverter_timeout_s, cfg.protocol, cfg.channel)

    @property
    def inverter_present(self) -> bool:
        """Whether the inverter sent a frame the codec reads within the codec's inverter timeout."""
        return self._presence.present

    @property
    def inverter_seen_t(self) -> float | None:
        """Clock time of the newest frame the codec read, None before the first."""
        return self._presence.seen_t

    def frames(self, state: GatewayState) -> list[Frame]:
        """The frames this output sends for `state`."""
        return self.codec.encode(state, self._opts)

    async def run(self) -> None:
        """Transmit every period until cancelled; reopen the bus with backoff on failure."""
        await serve_bus(
            self.cfg,
            self._clock,
            lambda bus, log: [self._transmit(bus, log), self._receive(bus)],
            self._failed,
        )

    def _failed(self) -> None:
        self.send_errors += 1

    async def _transmit(self, bus: AsyncCanBus, log: FrameLog | None) -> None:
        gap = self.codec.frame_gap_s
        while True:
            frames = self.frames(self._state())
            for k, frame in enumerate(frames):
                if k and gap:
                    await self._clock.sleep(gap)
                await send_frame(bus, log, frame, self._clock)
                self.sent += 1
            self.last_frames = frames
            self._presence.check()
            # The set repeats every period (of clock time: simulated time in a simulation), but never
            # sooner than one gap per frame.
            spent = max(len(frames) - 1, 0) * gap
            await self._clock.sleep(max(self.codec.period_s, len(frames) * gap) - spent)

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
                self._presence.heard()
