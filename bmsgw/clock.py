"""Clocks: the only place the live daemon reads time; the core and codecs never do.

Gateway time `t` is monotonic (live) or simulated; `wall(t)` maps it to POSIX epoch seconds for what needs the
calendar (time-of-use schedules, the hour-of-week load profile). Live, the mapping is re-read on every call,
so an NTP step or a manual clock change shows at the next call while `t` itself never jumps.
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "MonotonicClock", "ScaledClock", "SteppedClock"]


class Clock(Protocol):
    """Seconds on a monotonic time base, and how fast it runs relative to wall time."""

    speed: float

    def now(self) -> float:
        """Current time in seconds."""
        ...

    def stamp(self) -> float:
        """Timestamp for logs: epoch seconds live, simulated seconds in a simulation."""
        ...

    def wall(self, t: float) -> float:
        """Epoch seconds (wall-clock time) of clock time `t`."""
        ...


class MonotonicClock:
    """The system monotonic clock (live operation)."""

    speed = 1.0

    def now(self) -> float:
        """Current monotonic time in seconds."""
        return time.monotonic()

    def stamp(self) -> float:
        """Epoch seconds."""
        return time.time()

    def wall(self, t: float) -> float:
        """Epoch seconds of monotonic time `t`, by today's offset between the two clocks."""
        return t + (time.time() - time.monotonic())


class ScaledClock:
    """Simulated time starting at `start` that runs `speed` times faster than the monotonic clock."""

    def __init__(self, speed: float = 1.0, start: float = 0.0, *, epoch: float | None = None) -> None:
        """`epoch`: wall-clock time (epoch seconds) at simulated time `start`; None = now."""
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.speed = speed
        self._start = start
        self._origin = time.monotonic()
        self._epoch = (time.time() if epoch is None else epoch) - start

    def now(self) -> float:
        """Current simulated time in seconds."""
        return self._start + (time.monotonic() - self._origin) * self.speed

    def stamp(self) -> float:
        """Simulated seconds (same as now())."""
        return self.now()

    def wall(self, t: float) -> float:
        """Epoch seconds of simulated time `t` (simulated time runs from `epoch` at `start`)."""
        return self._epoch + t


class SteppedClock:
    """Simulated time advanced by its owner (the simulator); `speed` paces sleeps against wall time."""

    def __init__(self, speed: float = 1.0, start: float = 0.0, *, epoch: float | None = None) -> None:
        """`epoch`: wall-clock time (epoch seconds) at simulated time `start`; None = now."""
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.speed = speed
        self._t = start
        self._epoch = (time.time() if epoch is None else epoch) - start

    def now(self) -> float:
        """Current simulated time in seconds."""
        return self._t

    def stamp(self) -> float:
        """Simulated seconds (same as now())."""
        return self._t

    def wall(self, t: float) -> float:
        """Epoch seconds of simulated time `t` (simulated time runs from `epoch` at `start`)."""
        return self._epoch + t

    def advance(self, t: float) -> None:
        """Move simulated time forward to t (never backwards)."""
        self._t = max(self._t, t)
