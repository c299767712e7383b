"""Inverter-side codecs (pure) and their registry: adding a protocol = one codec file + one entry here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bmsgw.inverter import pylontech_can, pylontech_can_v13, sma_can, victron_can
from bmsgw.inverter._can_common import CanCodecError
from bmsgw.inverter.scaling import UNKNOWN_TEMPERATURE_C
from bmsgw.model import Frame, GatewayState

__all__ = ["CAN_CODECS", "CanCodec", "CanCodecError", "CodecOptions"]


@dataclass(frozen=True, slots=True)
class CodecOptions:
    """Per-output knobs a codec may use."""

    manufacturer: str = "PYLON"
    name: str = "bmsgw"  # battery name where the protocol has one (Victron 0x370/0x371): gateway.name
    unknown_temperature_c: float = UNKNOWN_TEMPERATURE_C  # sent for an unknown temperature (SMA: its marker)


@dataclass(frozen=True, slots=True)
class CanCodec:
    """A CAN inverter protocol: its cadence, how a state becomes frames, how inverter frames are read.

    Frames of a set go out at least `frame_gap_s` apart, and a set repeats every `period_s` but never
    sooner than (frames × frame_gap_s). `decode_inverter` (pure) turns a received frame into an inverter
    status, None if it is not one, or raises CanCodecError if it is malformed; an inverter silent for
    `inverter_timeout_s` counts as gone.
    """

    name: str
    period_s: float
    encode: Callable[[GatewayState, CodecOptions], list[Frame]]
    frame_gap_s: float = 0.0
    decode_inverter: Callable[[Frame], object | None] | None = None
    inverter_timeout_s: float = 10.0


def _pylontech(state: GatewayState, opts: CodecOptions) -> list[Frame]:
    return pylontech_can.encode(
        state, manufacturer=opts.manufacturer, unknown_temperature_c=opts.unknown_temperature_c
    )


def _pylontech_v13(state: GatewayState, opts: CodecOptions) -> list[Frame]:
    return pylontech_can_v13.encode(
        state, manufacturer=opts.manufacturer, unknown_temperature_c=opts.unknown_temperature_c
    )


def _sma(state: GatewayState, opts: CodecOptions) -> list[Frame]:
    return sma_can.encode(state, manufacturer=opts.manufacturer)


def _victron(state: GatewayState, opts: CodecOptions) -> list[Frame]:
    return victron_can.encode(
        state,
        manufacturer=opts.manufacturer,
        name=opts.name,
        unknown_temperature_c=opts.unknown_temperature_c,
    )


CAN_CODECS: dict[str, CanCodec] = {
    "pylontech-can": CanCodec(
        "pylontech-can", pylontech_can.PERIOD_S, _pylontech, decode_inverter=pylontech_can.decode_inverter
    ),
    "pylontech-can-v13": CanCodec(
        "pylontech-can-v13",
        pylontech_can_v13.PERIOD_S,
        _pylontech_v13,
        decode_inverter=pylontech_can_v13.decode_inverter,
    ),
    "sma-can": CanCodec(
        "sma-can",
        sma_can.PERIOD_S,
        _sma,
        frame_gap_s=sma_can.FRAME_GAP_S,
        decode_inverter=sma_can.decode_inverter,
    ),
    "victron-can": CanCodec(
        "victron-can", victron_can.PERIOD_S, _victron, decode_inverter=victron_can.decode_inverter
    ),
}
