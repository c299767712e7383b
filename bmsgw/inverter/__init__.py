"""Inverter-side codecs (pure) and their registry: adding a protocol = one codec file + one entry here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bmsgw.inverter import pylontech_can
from bmsgw.model import Frame, GatewayState

__all__ = ["CAN_CODECS", "CanCodec", "CodecOptions"]


@dataclass(frozen=True, slots=True)
class CodecOptions:
    """Per-output knobs a codec may use."""

    manufacturer: str = "PYLON"


@dataclass(frozen=True, slots=True)
class CanCodec:
    """A CAN inverter protocol: how often it transmits and how a state becomes frames."""

    name: str
    period_s: float
    encode: Callable[[GatewayState, CodecOptions], list[Frame]]


def _pylontech(state: GatewayState, opts: CodecOptions) -> list[Frame]:
    return pylontech_can.encode(state, manufacturer=opts.manufacturer)


CAN_CODECS: dict[str, CanCodec] = {
    "pylontech-can": CanCodec("pylontech-can", pylontech_can.PERIOD_S, _pylontech),
}
