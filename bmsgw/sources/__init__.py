"""Pack-side sources and their registry: adding a BMS kind = one codec file + one source + one entry here.

Packs that share a source kind and a `port` (one CAN bus, one RS485 line) are served by one source.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from bmsgw.clock import Clock
from bmsgw.config import Settings
from bmsgw.model import GatewayState, PackSample

if TYPE_CHECKING:
    from bmsgw.config import PackConfig

__all__ = [
    "INVERTER_CAN_KINDS",
    "SERIAL_KINDS",
    "SOURCES",
    "SerialKind",
    "Source",
    "SourceFactory",
    "check_packs",
    "group_packs",
]


class Source(Protocol):
    """A running pack source: delivers PackSamples through the callback it was built with."""

    async def run(self) -> None:
        """Run until cancelled; reconnect on its own after transport failures."""
        ...


SourceFactory = Callable[
    [Settings, list[int], Clock, Callable[[PackSample], None], Callable[[], GatewayState], bool], Source
]
"""(settings, pack indices, clock, on_sample, newest state, frame_timestamps) -> Source."""


def _can(
    settings: Settings,
    packs: list[int],
    clock: Clock,
    on_sample: Callable[[PackSample], None],
    state: Callable[[], GatewayState],
    frame_timestamps: bool,
) -> Source:
    from bmsgw.sources.can import CanPackSource

    return CanPackSource(settings, clock, on_sample, state, packs=packs, frame_timestamps=frame_timestamps)


@dataclass(frozen=True, slots=True)
class SerialKind:
    """A serial BMS kind (bms/<kind>.py + sources/serial_bms.py): line speed and bus addresses."""

    baudrate: int
    addresses: tuple[int, ...] = ()  # values of `address` that select a BMS; () = no bus address
    address_help: str = ""

    def resolve(self, address: int) -> int:
        """The bus address a pack's `address` selects (0 = the kind's default, the first allowed)."""
        return address or (self.addresses[0] if self.addresses else 0)

    def problems(self, kind: str, packs: Sequence[tuple[int, PackConfig]]) -> list[str]:
        """What is wrong with the [[packs]] (index, config) of this kind: port, address, sharing."""
        out: list[str] = []
        used: dict[tuple[str, int], int] = {}
        speed: dict[str, tuple[int, int]] = {}  # port -> (first pack, baud rate) of packs that set one
        for i, p in packs:
            if p.port is None:
                out.append(f"packs[{i}].port: required for source = {kind!r} (a serial device such as "
                           "/dev/serial/by-id/..., or socket://host:port)")  # fmt: skip
                continue
            addr = self.resolve(p.address)
            if self.addresses and addr not in self.addresses:
                out.append(f"packs[{i}].address = {p.address}: not a {kind} address; {self.address_help}")
            elif not self.addresses and p.address:
                out.append(f"packs[{i}].address = {p.address}: {kind} BMS have no bus address; leave it 0")
            elif (p.port, addr) in used:
                why = f"both at address 0x{addr:02X}" if self.addresses else f"{kind} BMS cannot share a port"
                out.append(f"packs[{i}].port = {p.port!r}: packs[{used[p.port, addr]}] is on it too; {why}")
            else:
                used[p.port, addr] = i
            if p.baudrate:
                first, baud = speed.setdefault(p.port, (i, p.baudrate))
                if baud != p.baudrate:
                    out.append(f"packs[{i}].baudrate = {p.baudrate}: packs[{first}] on that port uses {baud}")
        return out


def _serial(
    settings: Settings, packs: list[int], clock: Clock, on_sample: Callable[[PackSample], None], *_: object
) -> Source:
    from bmsgw.sources.serial_bms import SerialBmsSource

    return SerialBmsSource(settings, packs, clock, on_sample)


def _inverter_can(
    settings: Settings, packs: list[int], clock: Clock, on_sample: Callable[[PackSample], None], *_: object
) -> Source:
    from bmsgw.sources.inverter_can import InverterCanSource

    return InverterCanSource(settings, packs, clock, on_sample)


INVERTER_CAN_KINDS = ("pylontech-can", "sma-can")
"""A battery speaking an inverter protocol (bms/lv_can.py), one per CAN bus: `port` = its channel."""

SERIAL_KINDS: dict[str, SerialKind] = {
    "jk": SerialKind(115_200),
    "jbd": SerialKind(9600),
    "daly": SerialKind(
        9600, (*range(0x40, 0x50), 0x80), "0x40..0x4F = RS485 board 1..16 (0 = 0x40), 0x80 = UART port"
    ),
    "daly-modbus": SerialKind(
        9600, (0xD2, *(a for a in range(1, 248) if a != 0xD2)), "a Modbus slave id 1..247 (0 = 0xD2)"
    ),
    "seplos": SerialKind(9600, tuple(range(16)), "the pack's DIP address 0..15"),
    "pylontech-rs485": SerialKind(
        115_200, tuple(range(2, 0xFF)), "a module address 2..254 (0 = 2): master 2, then 3, 4, …"
    ),
}

SOURCES: dict[str, SourceFactory] = {
    "can": _can,
    **dict.fromkeys(SERIAL_KINDS, _serial),
    **dict.fromkeys(INVERTER_CAN_KINDS, _inverter_can),
}


def check_packs(packs: Sequence[PackConfig]) -> list[str]:
    """Per-kind problems of the [[packs]] list (config validation; one line per problem)."""
    out: list[str] = []
    owner: dict[str, tuple[int, str]] = {}  # port -> (first pack, kind): one kind per port
    for i, p in enumerate(packs):
        if p.source in SERIAL_KINDS and p.port is not None:
            first, kind = owner.setdefault(p.port, (i, p.source))
            if kind != p.source:
                out.append(f"packs[{i}].port = {p.port!r}: packs[{first}] reads it as {kind!r}")
        if p.current_sign != "normal" and p.source not in SERIAL_KINDS:
            out.append(f"packs[{i}].current_sign = {p.current_sign!r}: only for the serial BMS kinds "
                       f"({', '.join(SERIAL_KINDS)}); leave it \"normal\"")  # fmt: skip
    for kind, rule in SERIAL_KINDS.items():
        mine = [(i, p) for i, p in enumerate(packs) if p.source == kind]
        if mine:
            out += rule.problems(kind, mine)
    return out + _inverter_can_problems(packs)


def _inverter_can_problems(packs: Sequence[PackConfig]) -> list[str]:
    out: list[str] = []
    bus: dict[str | None, int] = {}  # channel (None: the [can] bus) -> the pack reading it
    if any(p.source == "can" for p in packs):
        bus[None] = -1
    for i, p in enumerate(packs):
        if p.source not in INVERTER_CAN_KINDS:
            continue
        if p.sensors > 2:
            out.append(f"packs[{i}].sensors = {p.sensors}: {p.source} batteries report at most 2 "
                       "temperatures (0 none, 1 the 0x356 average, 2 the 0x373 min/max)")  # fmt: skip
        if p.address:
            out.append(f"packs[{i}].address = {p.address}: {p.source} batteries have no address; leave it 0")
        first = bus.setdefault(p.port, i)
        if first != i:
            who = "the 'can' packs use the [can] bus" if first < 0 else f"packs[{first}] reads it"
            out.append(f"packs[{i}].port = {p.port!r}: one {p.source} battery per CAN bus; {who} "
                       "(set port to another CAN channel)")  # fmt: skip
    return out


def group_packs(settings: Settings) -> dict[tuple[str, str | None], list[int]]:
    """Pack indices grouped by (source kind, port): one source instance per group."""
    groups: dict[tuple[str, str | None], list[int]] = {}
    for i, p in enumerate(settings.packs):
        groups.setdefault((p.source, p.port), []).append(i)
    return groups
