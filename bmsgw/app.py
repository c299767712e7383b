"""Gateway: wires sources, the pipeline and outputs into one asyncio.TaskGroup."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from bmsgw.clock import Clock, MonotonicClock
from bmsgw.config import Settings
from bmsgw.energy_management import EnergySaved
from bmsgw.log import get_logger
from bmsgw.model import GatewayState, PackSample
from bmsgw.outputs import OUTPUTS, Output, TakesCommands, state_for
from bmsgw.pipeline import Pipeline
from bmsgw.sources import SOURCES, Source, group_packs
from bmsgw.telemetry import Service, build_services
from bmsgw.telemetry.energy import EnergyCounters
from bmsgw.telemetry.history_buffer import HistoryBackend

__all__ = ["Gateway"]

_log = get_logger(__name__)


class Gateway:
    """The running daemon: pack sources → pipeline → outputs, all on one event loop."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock | None = None,
        *,
        frame_timestamps: bool = False,
        initial_soc: Sequence[float] | None = None,
        initial_cell_soc: Sequence[Sequence[float]] | None = None,
        energy_state: EnergySaved | None = None,
    ) -> None:
        """`initial_soc`/`initial_cell_soc`: the core's starting SOC (restored state); None = from OCV.

        `energy_state`: restored energy management (learned load profile, full-charge timer).
        """
        self.settings = settings
        self.clock: Clock = clock or MonotonicClock()
        self.pipeline = Pipeline(
            settings,
            initial_soc,
            initial_cell_soc=initial_cell_soc,
            wall=self.clock.wall,
            energy=energy_state,
        )
        self.sources: list[Source] = [
            SOURCES[kind](settings, packs, self.clock, self.on_sample, self.state, frame_timestamps)
            for (kind, _), packs in group_packs(settings).items()
        ]
        self.outputs: list[Output] = [
            OUTPUTS[o.protocol](settings, o, self.clock, state_for(o, self.state)) for o in settings.outputs
        ]
        for out in self.outputs:  # EMS commands written to an output tighten the limits of every output
            if isinstance(out, TakesCommands) and self.pipeline.ems is not None:
                out.ems = self.pipeline.ems
        # The one set of energy totals (MQTT, /metrics, history read it; the history service restores it).
        self.energy = EnergyCounters(len(settings.packs), settings.gateway.stale_after_s)
        self._listeners: list[Callable[[GatewayState], None]] = [self.energy.see]
        self.tasks: list[asyncio.Task[None]] = []  # sources, outputs and the ticker while run() runs
        self.history: HistoryBackend | None = None  # set by the history service when [history] is enabled
        self.services: list[Service] = build_services(self)

    def state(self) -> GatewayState:
        """The newest published state."""
        return self.pipeline.state

    def on_state(self, listener: Callable[[GatewayState], None]) -> None:
        """Call `listener` with every new state (must be quick and never raise)."""
        self._listeners.append(listener)

    def on_sample(self, sample: PackSample) -> None:
        """A source completed a sample: run the core on it right away."""
        if self.pipeline.submit(sample):
            self._publish(self.pipeline.step(sample.t))

    def tick(self) -> None:
        """Periodic core step so staleness is noticed without new samples."""
        self._publish(self.pipeline.step(self.clock.now()))

    async def run(
        self, *extra: Callable[[], Coroutine[Any, Any, None]], duration: float | None = None
    ) -> None:
        """Run until cancelled, or for `duration` clock seconds; `extra` coroutines run alongside."""
        self.tick()
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(s.run()) for s in self.sources]
            tasks += [tg.create_task(o.run()) for o in self.outputs]
            tasks += [tg.create_task(s.run()) for s in self.services]
            tasks += [tg.create_task(fn()) for fn in extra]
            tasks.append(tg.create_task(self._ticker()))
            self.tasks = tasks[: len(self.sources) + len(self.outputs)] + tasks[-1:]
            if duration is not None:
                await self._wait_until(self.clock.now() + duration)
                for task in tasks:
                    task.cancel()

    async def _wait_until(self, end: float) -> None:
        """Sleep until the clock reaches `end` (a simulated clock may run slower than requested)."""
        while (left := end - self.clock.now()) > 0:  # noqa: ASYNC110 (polls a clock, not a flag)
            await asyncio.sleep(min(left / self.clock.speed, 0.5))

    async def _ticker(self) -> None:
        period = self.settings.gateway.step_period_s
        while True:
            await asyncio.sleep(period / self.clock.speed)
            self.tick()

    def _publish(self, state: GatewayState) -> None:
        for listener in self._listeners:
            listener(state)
