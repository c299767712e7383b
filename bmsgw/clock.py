"""Clocks: the only place the live daemon reads time; the core and codecs never do.

Gateway time `t` is monotonic (live) or simulated; `wall(t)` maps it to POSIX epoch seconds for what needs the
calendar (time-of-use schedules, the hour-of-week load profile). Live, the mapping is re-read on every call,
so an NTP step or a manual clock change shows at the next call while `t` itself never jumps.

Periodic work paces itself with `await clock.sleep(seconds)` in clock time: a simulation that runs slower than
its requested speed then also slows what is paced by it (an output sends its protocol's frames per
*simulated* second, never more).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
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

    async def sleep(self, seconds: float) -> None:
        """Return once `seconds` of clock time have passed."""
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

    async def sleep(self, seconds: float) -> None:
        """asyncio.sleep(seconds)."""
        await asyncio.sleep(seconds)


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

    async def sleep(self, seconds: float) -> None:
        """asyncio.sleep(seconds / speed)."""
        await asyncio.sleep(seconds / self.speed)


class SteppedClock:
    """Simulated time advanced by its owner (the simulator); `speed` is the wall-time pace it aims for.

    `sleep` returns when advance() reaches the deadline, so a clock nobody advances never wakes sleepers;
    code that must also run without a simulator (reconnect backoff) sleeps `seconds / speed` of wall time.
    """

    def __init__(self, speed: float = 1.0, start: float = 0.0, *, epoch: float | None = None) -> None:
        """`epoch`: wall-clock time (epoch seconds) at simulated time `start`; None = now."""
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.speed = speed
        self._t = start
        self._epoch = (time.time() if epoch is None else epoch) - start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []  # heap by deadline
        self._seq = itertools.count()

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
        """Move simulated time forward to t (never backwards) and wake the sleepers it reaches."""
        self._t = max(self._t, t)
        while self._sleepers and self._sleepers[0][0] <= self._t:
            fut = heapq.heappop(self._sleepers)[2]
            if not fut.done():  # a cancelled sleeper leaves its entry until its deadline
                fut.set_result(None)

    async def sleep(self, seconds: float) -> None:
        """Return once advance() has moved simulated time `seconds` past now (at once if not positive)."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._t + seconds, next(self._seq), fut))
        await fut

    @property
    def sleeping(self) -> int:
        """Sleep entries not yet reached by advance() (cancelled ones included until their deadline)."""
        return len(self._sleepers)
