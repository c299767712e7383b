"""Inverter-protocol CAN source (kinds `pylontech-can`, `sma-can`): a battery that already speaks an
inverter protocol, read as one pack on its own CAN bus and re-emitted by the outputs in any protocol.

The pack's `port` names the CAN channel (default: the [can] channel) on the [can] interface. A sample is
delivered on every 0x356 (voltage, current) while a 0x351 (the battery's limits) is fresh (younger than
`gateway.stale_after_s`); without fresh limits nothing is delivered and the pack goes stale, so the
gateway's limits fall to the safe state. Each sample carries the battery's own limits as a BmsRequest,
which bind the gateway's limits (bmsgw/bms_request.py). On `pylontech-can` the inverter's 0x305 keepalive
(all zero) is sent every second, as Pylontech batteries expect. The bus is reopened with backoff.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Callable

from bmsgw.bms import lv_can
from bmsgw.clock import Clock
from bmsgw.config import Settings
from bmsgw.log import get_logger
from bmsgw.model import Frame, PackSample
from bmsgw.transport.can_bus import AsyncCanBus, CanBusError

__all__ = ["KEEPALIVE", "InverterCanSource"]

_log = get_logger(__name__)

KEEPALIVE = Frame(0x305, bytes(8))  # Pylontech LV V1.2: "inverter reply every second: 00-00-…"
KEEPALIVE_PERIOD_S = 1.0
_LIMITS, _MEASUREMENTS, _EXTREMES = 0x351, 0x356, 0x373


class InverterCanSource:
    """Reads one battery speaking `kind` (a protocol of lv_can.PROTOCOLS) into PackSamples of one pack."""

    def __init__(
        self, settings: Settings, packs: list[int], clock: Clock, on_sample: Callable[[PackSample], None]
    ) -> None:
        (self.pack,) = packs  # config validation allows one such pack per bus
        cfg = settings.packs[self.pack]
        self.kind = cfg.source
        self.interface = settings.can.interface
        self.channel = cfg.port or settings.can.channel
        self.bitrate = settings.can.bitrate
        self._cells, self._sensors = cfg.cells, cfg.sensors
        self._fresh_s = settings.gateway.stale_after_s
        self._clock = clock
        self._on_sample = on_sample
        self.battery = lv_can.LvBattery()
        self._last: dict[int, float] = {}  # frame id -> when it last arrived
        self.alive = 0
        self.frames = 0
        self.samples = 0
        self.rejected = 0  # frames of a known id too short to decode
        self.ignored = 0  # other ids (the inverter's own, other protocols)
        self.unlimited = 0  # 0x356 without fresh 0x351 limits: no sample
        self.reconnects = 0
        self.last_error = ""

    def feed(self, frame: Frame, t: float) -> PackSample | None:
        """Take one frame received at t; the pack's sample when it was a 0x356 with fresh limits."""
        self.frames += 1
        try:
            fields = lv_can.decode(self.kind, frame)
        except lv_can.LvCanError as exc:
            self.rejected += 1
            self.last_error = str(exc)
            return None
        if fields is None:
            self.ignored += 1
            return None
        self.battery = dataclasses.replace(self.battery, **fields)
        self._last[frame.id] = t
        if frame.id != _MEASUREMENTS:
            return None
        if not self._fresh(_LIMITS, t):
            self.unlimited += 1
            return None
        b = self.battery
        if not self._fresh(_EXTREMES, t):  # min/max cell data stopped: fall back to the pack average
            b = dataclasses.replace(b, cell_v_min=None, cell_v_max=None, cell_t_min=None, cell_t_max=None)
        reading = lv_can.reading(b, self._cells, self._sensors)
        self.alive = (self.alive + 1) & 0xFFFF
        self.samples += 1
        sample = reading.sample(self.pack, t, self.alive)
        return dataclasses.replace(sample, request=lv_can.request(b))

    async def run(self) -> None:
        """Receive (and send the keepalive) until cancelled; reopen the bus with backoff after failures."""
        backoff = 0.5
        while True:
            bus = AsyncCanBus(self.interface, self.channel, self.bitrate)
            try:
                await bus.open()
                backoff = 0.5
                _log.info(
                    "battery CAN bus open", kind=self.kind, interface=self.interface, channel=self.channel
                )
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._receive(bus))
                    if self.kind == "pylontech-can":
                        tg.create_task(self._keepalive(bus))
            except* CanBusError as eg:
                self.last_error = str(eg.exceptions[0])
                _log.error(
                    "battery CAN bus failed", kind=self.kind, error=self.last_error, retry_in_s=backoff
                )
            finally:
                await bus.close()
            self.reconnects += 1
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)

    def _fresh(self, frame_id: int, t: float) -> bool:
        return t - self._last.get(frame_id, -math.inf) <= self._fresh_s

    async def _receive(self, bus: AsyncCanBus) -> None:
        while True:
            msg = await bus.recv()
            frame = Frame(msg.arbitration_id, bytes(msg.data), msg.is_extended_id)
            sample = self.feed(frame, self._clock.now())
            if sample is not None:
                self._on_sample(sample)

    async def _keepalive(self, bus: AsyncCanBus) -> None:
        while True:
            await bus.send(KEEPALIVE, self._clock.stamp())
            await asyncio.sleep(KEEPALIVE_PERIOD_S / self._clock.speed)
