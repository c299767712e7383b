"""Clock.sleep paces by clock time: a lagging simulation never makes outputs outpace their protocol."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from fakes import make_state, running

from bmsgw.clock import MonotonicClock, ScaledClock, SteppedClock
from bmsgw.config import OutputConfig
from bmsgw.outputs.can import CanOutput
from bmsgw.transport.can_bus import AsyncCanBus


async def test_stepped_sleep_wakes_when_advance_reaches_the_deadline() -> None:
    clock = SteppedClock(start=10.0)
    task = asyncio.create_task(clock.sleep(1.0))
    await asyncio.sleep(0.01)
    clock.advance(10.9)
    await asyncio.sleep(0.01)
    assert not task.done()  # wall time passing changes nothing; 0.9 s of simulated time is not enough
    clock.advance(11.0)
    await asyncio.wait_for(task, 1.0)
    assert clock.sleeping == 0


async def test_stepped_sleep_wakes_in_deadline_order_and_at_once_when_not_positive() -> None:
    clock = SteppedClock()
    woke: list[float] = []

    async def sleeper(s: float) -> None:
        await clock.sleep(s)
        woke.append(s)

    async with running(*(lambda s=s: sleeper(s) for s in (3.0, 1.0, 2.0))):
        await asyncio.wait_for(clock.sleep(0.0), 1.0)
        await asyncio.wait_for(clock.sleep(-1.0), 1.0)
        await asyncio.sleep(0.01)
        for t in (1.5, 2.5, 3.5):
            clock.advance(t)
            await asyncio.sleep(0.01)
    assert woke == [1.0, 2.0, 3.0]


async def test_cancelled_stepped_sleepers_do_not_accumulate() -> None:
    clock = SteppedClock()
    for k in range(1000):
        task = asyncio.create_task(clock.sleep(1.0))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        clock.advance(k + 1.0)  # each step passes the previous deadlines
    assert clock.sleeping <= 1


async def test_scaled_and_monotonic_sleep_by_wall_time() -> None:
    await asyncio.wait_for(ScaledClock(1000.0).sleep(10.0), 2.0)  # 10 ms of wall time
    await asyncio.wait_for(MonotonicClock().sleep(0.001), 2.0)


async def test_can_output_sends_at_most_its_protocol_rate_per_simulated_second() -> None:
    """The simulation asks for 10⁶x but manages far less: sets per *simulated* second stay at 1/period."""
    clock = SteppedClock(speed=1e6)
    channel = f"pace-{uuid.uuid4()}"
    cfg = OutputConfig(protocol="pylontech-can", interface="virtual", channel=channel)
    state = make_state()
    out = CanOutput(cfg, clock, lambda: state)
    per_set = len(out.frames(state))
    simulated_s = 10.0
    async with AsyncCanBus("virtual", channel) as inverter, running(out.run):
        while clock.now() < simulated_s:
            await asyncio.sleep(0.005)  # the machine: 5 ms of wall time per 0.1 s of simulated time
            clock.advance(clock.now() + 0.1)
        received = 0
        for _ in range(500):  # the clock stands still now: what was sent arrives, nothing more is sent
            while inverter.recv_nowait() is not None:
                received += 1
            if received >= out.sent:
                break
            await asyncio.sleep(0.01)
    period = out.codec.period_s
    assert out.sent >= per_set * 5  # it does run
    assert out.sent <= per_set * (simulated_s / period + 1), out.sent
    assert received == out.sent
