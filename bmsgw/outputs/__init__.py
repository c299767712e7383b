"""Inverter-side outputs and their registry: every CAN codec gets a CanOutput; servers register here too."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from bmsgw.clock import Clock
from bmsgw.config import OutputConfig
from bmsgw.inverter import CAN_CODECS
from bmsgw.model import GatewayState

__all__ = ["OUTPUTS", "Output", "OutputFactory"]


class Output(Protocol):
    """A running output: reads the newest state at its own cadence (or on request) and keeps serving."""

    sent: int

    async def run(self) -> None:
        """Serve until cancelled; reopen the transport on its own after failures."""
        ...


OutputFactory = Callable[[OutputConfig, Clock, Callable[[], GatewayState]], Output]
"""(output config, clock, newest state) -> Output."""


def _can(cfg: OutputConfig, clock: Clock, state: Callable[[], GatewayState]) -> Output:
    from bmsgw.outputs.can import CanOutput

    return CanOutput(cfg, clock, state)


OUTPUTS: dict[str, OutputFactory] = dict.fromkeys(CAN_CODECS, _can)
