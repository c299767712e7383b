"""Pylontech HV CAN output: answers the inverter's 0x4200 requests from the newest state, reads its commands.

Request/response only, as real HV packs do: nothing is sent unasked, so an inverter that stops polling just
gets no frames (and "inverter silent" in the log). Requests that arrive while an answer is going out are
merged (one pending answer per kind); frames of answers are at least FRAME_GAP_S apart.

Inverter commands never loosen anything: sleep (0x8200 0x55) makes every answer say "sleep" with
CCL = DCL = 0 and both forbidden marks until it sends quit-sleep (0xAA); charge/discharge commands (0x8210,
"close the relay after protection") are recorded and logged only, bmsgw has no relay; the request to mask
the external communication fault (0x8240) is refused on 0x8250.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final, Literal

from bmsgw.clock import Clock
from bmsgw.config import OutputConfig, Settings
from bmsgw.core.chemistry import profile
from bmsgw.inverter.pylontech_hv_can import (
    FRAME_GAP_S,
    CanCodecError,
    HvChargeCommand,
    HvInverterFrame,
    HvMaskRequest,
    HvOptions,
    HvRequest,
    HvSleep,
    RequestKind,
    answer,
    decode_inverter,
    encode_mask_reply,
)
from bmsgw.log import get_logger
from bmsgw.model import Frame, GatewayState
from bmsgw.outputs.can import FrameLog, Presence, send_frame, serve_bus
from bmsgw.transport.can_bus import AsyncCanBus

__all__ = ["INVERTER_TIMEOUT_S", "PylontechHvCanOutput", "hv_options"]

INVERTER_TIMEOUT_S: Final = 10.0
"""No request or command for this long: the inverter counts as gone (logged, nothing else changes)."""

_log = get_logger(__name__)
_Reply = RequestKind | Literal["mask"]


def hv_options(settings: Settings, cfg: OutputConfig) -> HvOptions:
    """Codec options from an [[outputs]] entry and the installed packs (all in parallel)."""
    packs = settings.packs
    cells = max(p.cells for p in packs)
    return HvOptions(
        current_offset_a=cfg.current_offset_a,
        byte_order=cfg.byte_order,
        address=cfg.id_offset,
        manufacturer=cfg.manufacturer,
        name=settings.gateway.name,
        cells_per_pack=cells,
        sensors_per_pack=max(p.sensors for p in packs),
        packs_in_series=1,
        nominal_voltage=profile(packs[0].chemistry).nominal_v * cells,
        capacity_ah=sum(p.capacity_ah for p in packs),
        unknown_temperature_c=cfg.unknown_temperature_c,
    )


class PylontechHvCanOutput:
    """One `pylontech-hv-can` output: answers requests while the gateway runs, reopens the bus on failure.

    `inverter` is the newest decoded inverter frame, `asleep` whether the inverter asked the battery to
    sleep, `charge_command` its newest 0x8210; counters: `requests`, `answers`, `sent`, `received`,
    `rx_errors` (garbled frames, dropped), `send_errors` (bus failures).
    """

    def __init__(
        self, settings: Settings, cfg: OutputConfig, clock: Clock, state: Callable[[], GatewayState]
    ) -> None:
        self.cfg = cfg
        self.opts = hv_options(settings, cfg)
        self._clock = clock
        self._state = state
        self.sent = 0
        self.send_errors = 0
        self.received = 0
        self.rx_errors = 0
        self.requests = 0
        self.answers = 0
        self.last_frames: list[Frame] = []
        self.inverter: HvInverterFrame | None = None
        self.asleep = False
        self.charge_command: HvChargeCommand | None = None
        self._presence = Presence(clock, INVERTER_TIMEOUT_S, cfg.protocol, cfg.channel)
        self._pending: dict[_Reply, None] = {}  # ordered set of answers owed
        self._wake = asyncio.Event()

    @property
    def inverter_present(self) -> bool:
        """Whether the inverter sent a request or command within INVERTER_TIMEOUT_S."""
        return self._presence.present

    def frames(self, request: HvRequest, state: GatewayState) -> list[Frame]:
        """The answer to `request` for `state` as this output sends it (sleep included)."""
        return answer(request, state, self.opts, asleep=self.asleep)

    async def run(self) -> None:
        """Serve until cancelled; reopen the bus with backoff on failure."""
        await serve_bus(
            self.cfg, self._clock, lambda bus, log: [self._answer(bus, log), self._receive(bus)], self._failed
        )

    def _failed(self) -> None:
        self.send_errors += 1

    async def _answer(self, bus: AsyncCanBus, log: FrameLog | None) -> None:
        gap = FRAME_GAP_S / self._clock.speed
        while True:
            try:  # wake now and then to notice a silent inverter
                async with asyncio.timeout(1.0 / self._clock.speed):
                    await self._wake.wait()
            except TimeoutError:
                self._presence.check()
                continue
            self._wake.clear()
            while self._pending:
                reply = next(iter(self._pending))
                del self._pending[reply]
                if reply == "mask":
                    frames = [encode_mask_reply(self.opts)]
                else:
                    frames = self.frames(HvRequest(reply), self._state())
                for frame in frames:
                    await send_frame(bus, log, frame, self._clock)
                    self.sent += 1
                    await asyncio.sleep(gap)
                if reply != "mask":
                    self.last_frames = frames
                    self.answers += 1

    async def _receive(self, bus: AsyncCanBus) -> None:
        while True:
            msg = await bus.recv()
            self.received += 1
            if msg.is_remote_frame:
                continue
            try:
                cmd = decode_inverter(
                    Frame(msg.arbitration_id, bytes(msg.data), msg.is_extended_id), self.opts.address
                )
            except CanCodecError:
                self.rx_errors += 1
                continue
            if cmd is not None:
                self.inverter = cmd
                self._presence.heard()
                self._apply(cmd)

    def _apply(self, cmd: HvInverterFrame) -> None:
        where = {"protocol": self.cfg.protocol, "channel": self.cfg.channel}
        if isinstance(cmd, HvRequest):
            self.requests += 1
            self._owe(cmd.kind)
        elif isinstance(cmd, HvSleep):
            if cmd.sleep is not None and cmd.sleep != self.asleep:
                self.asleep = cmd.sleep
                if cmd.sleep:
                    _log.warning("inverter requested sleep: answering with zero currents", **where)
                else:
                    _log.info("inverter ended sleep", **where)
        elif isinstance(cmd, HvChargeCommand):
            if cmd != self.charge_command:
                _log.info(
                    "inverter charge/discharge command (no relay here: recorded only)",
                    charge=cmd.charge,
                    discharge=cmd.discharge,
                    **where,
                )
            self.charge_command = cmd
        elif isinstance(cmd, HvMaskRequest):
            _log.info("inverter asked to mask the communication fault: refused", **where)
            self._owe("mask")

    def _owe(self, reply: _Reply) -> None:
        self._pending[reply] = None
        self._wake.set()
