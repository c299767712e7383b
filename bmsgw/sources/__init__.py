"""Pack-side sources and their registry: adding a BMS kind = one codec file + one source + one entry here.

Packs that share a source kind and a `port` (one CAN bus, one RS485 line) are served by one source.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from bmsgw.clock import Clock
from bmsgw.config import Settings
from bmsgw.model import GatewayState, PackSample

__all__ = ["SOURCES", "Source", "SourceFactory", "group_packs"]


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


SOURCES: dict[str, SourceFactory] = {
    "can": _can,
}


def group_packs(settings: Settings) -> dict[tuple[str, str | None], list[int]]:
    """Pack indices grouped by (source kind, port): one source instance per group."""
    groups: dict[tuple[str, str | None], list[int]] = {}
    for i, p in enumerate(settings.packs):
        groups.setdefault((p.source, p.port), []).append(i)
    return groups
