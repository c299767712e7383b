"""Helpers for the Modbus/SunSpec tests: gateway states from real pipeline runs, bridged ptys, servers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import numpy as np
from ptys import PtyPair, pty_pair
from pymodbus.client import AsyncModbusTcpClient

from bmsgw.clock import Clock, SteppedClock
from bmsgw.config import Settings, load_settings
from bmsgw.model import BmsFlags, GatewayState, PackSample
from bmsgw.outputs.modbus import ModbusOutput
from bmsgw.pipeline import Pipeline

OK_FLAGS = BmsFlags.CHARGE_FET | BmsFlags.DISCHARGE_FET | BmsFlags.CONTACTOR_CLOSED


def settings_for(packs: int = 2, output: dict[str, Any] | None = None, **extra: Any) -> Settings:
    """`packs` 16S LFP CAN packs of 100 Ah (50/80 A per pack) and one Modbus output."""
    out = {"protocol": "modbus-tcp", "tcp_port": 0, **(output or {})}
    settings, _ = load_settings(
        None,
        {
            "packs": [{"id": f"p{i}", "address": i, "capacity_ah": 100 + 10 * i} for i in range(packs)],
            "outputs": [out],
            "limits": {"max_charge_current_a": 50, "max_discharge_current_a": 80},
            "gateway.recovery_ramp_s": 0.0,
            **extra,
        },
        env={},
    )
    return settings


def run_pipeline(
    settings: Settings, seconds: int = 5, *, cell_v: float = 3.30, current: float = 10.0, start: float = 0.0
) -> Pipeline:
    """A pipeline fed `seconds` of one sample per pack per second (pack i's cells i mV higher)."""
    pipeline = Pipeline(settings)
    feed(pipeline, range(seconds), cell_v=cell_v, current=current, start=start)
    return pipeline


def feed(
    pipeline: Pipeline, seconds: range, *, cell_v: float = 3.30, current: float = 10.0, start: float = 0.0
) -> GatewayState:
    """Submit one sample per pack per second over `seconds` and step after each; the newest state."""
    n = len(pipeline.settings.packs)
    for k in seconds:
        t = start + k
        for i in range(n):
            v = np.full(16, cell_v + 0.001 * i)
            v[(3 + i) % 16] += 0.010  # a distinct highest cell per pack
            temps = np.array([24.0, 25.0, 26.0 + i, 25.0])
            pipeline.submit(PackSample(i, t, v, temps, current, float(v.sum()), OK_FLAGS, alive=k & 0xF))
        pipeline.step(t)
    return pipeline.state


def comm_lost(pipeline: Pipeline) -> GatewayState:
    """Step the pipeline well past `stale_after_s` without samples: the fail-safe state."""
    return pipeline.step(pipeline.state.t + pipeline.settings.gateway.stale_after_s + 5.0)


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Poll `condition` until it holds; AssertionError after `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"condition not met within {within} s")


@contextlib.asynccontextmanager
async def serving(
    settings: Settings,
    state: Callable[[], GatewayState],
    clock: Clock | None = None,
    pipeline: Pipeline | None = None,
) -> AsyncIterator[ModbusOutput]:
    """A running ModbusOutput for the first [[outputs]] entry (TCP: until it listens)."""
    out = ModbusOutput(
        settings,
        settings.outputs[0],
        clock or SteppedClock(),
        state,
        ems=pipeline.ems if pipeline is not None else None,
    )
    task = asyncio.create_task(out.run())
    try:
        await until(lambda: out.listening)
        yield out
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def tcp_client(out: ModbusOutput, source: str | None = None) -> AsyncIterator[AsyncModbusTcpClient]:
    """A connected pymodbus client of `out` (optionally from another loopback address), closed on exit."""
    assert out.bound_port is not None
    client = AsyncModbusTcpClient(
        "127.0.0.1", port=out.bound_port, source_address=(source, 0) if source else None, retries=0
    )
    assert await client.connect()
    try:
        yield client
    finally:
        client.close()


@contextlib.contextmanager
def bridged_ptys() -> Iterator[tuple[str, str]]:
    """Two pty pairs joined at their master ends: bytes written to one slave path come out of the other.

    Both the server and the client open a device path, like two RS485 adapters on one bus. Pumped by the
    running event loop (call inside a coroutine).
    """
    loop = asyncio.get_running_loop()
    with pty_pair() as a, pty_pair() as b:

        def pump(src: PtyPair, dst: PtyPair) -> None:
            data = src.read_available()
            while data:
                try:
                    n = os.write(dst.fd, data)
                except BlockingIOError:
                    return  # the far side is not reading: drop, as a real line would
                data = data[n:]

        loop.add_reader(a.fd, pump, a, b)
        loop.add_reader(b.fd, pump, b, a)
        try:
            yield a.path, b.path
        finally:
            loop.remove_reader(a.fd)
            loop.remove_reader(b.fd)
