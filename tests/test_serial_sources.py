"""Serial BMS sources end to end over real pty pairs: fake JK/JBD/Daly (our encoders) -> Gateway ->
GatewayState and Pylontech CAN frames; garbage, silence, a vanishing port, a shared RS485 line, config."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fake_bms import BmsModel, FakeBms
from fakes import A_COMM, running
from ptys import PtyPair, pty_pair
from test_gateway_e2e import Inverter

from bmsgw.app import Gateway
from bmsgw.clock import ScaledClock
from bmsgw.config import ConfigError, Settings, load_settings
from bmsgw.model import BmsFlags, GatewayState, PackStatus
from bmsgw.sources.serial_bms import SerialBmsSource
from bmsgw.transport.can_bus import AsyncCanBus

SPEED = 10.0  # gateway time runs 10x wall time: a 1 s poll interval is 0.1 s wall
MAX_CHARGE = 50.0
MAX_DISCHARGE = 80.0
KINDS = ["jk", "jbd", "daly", "daly-modbus", "seplos", "pylontech-rs485"]


def serial_settings(
    kind: str, ports: list[str], out_channel: str, addresses: tuple[int, ...] = (), **pack: Any
) -> Settings:
    """One pack of `kind` per port (16 cells, 2 sensors unless `pack` says otherwise), Pylontech CAN out."""
    packs = [
        {"id": f"p{i + 1}", "source": kind, "port": port, "cells": 16, "sensors": 2, "chemistry": "lfp",
         "capacity_ah": 100, "poll_interval_s": 1.0, "address": addresses[i] if addresses else 0, **pack}
        for i, port in enumerate(ports)
    ]  # fmt: skip
    settings, _ = load_settings(
        None,
        {
            "packs": packs,
            "outputs": [{"protocol": "pylontech-can", "interface": "virtual", "channel": out_channel}],
            "gateway.stale_after_s": 3.0,
            "gateway.recovery_ramp_s": 2.0,
            "gateway.step_period_s": 0.1,
            "limits": {"max_charge_current_a": MAX_CHARGE, "max_discharge_current_a": MAX_DISCHARGE},
        },
        env={},
    )
    return settings


@dataclass
class Rig:
    gateway: Gateway
    source: SerialBmsSource
    fake: FakeBms
    inverter: Inverter

    async def until(self, pred: Callable[[GatewayState], bool], within: float = 5.0) -> GatewayState:
        await until(lambda: pred(self.gateway.state()), within)
        return self.gateway.state()


@contextlib.asynccontextmanager
async def rig(kind: str, model: BmsModel | None = None, port: str | None = None) -> AsyncIterator[Rig]:
    out_ch = f"inv-{uuid.uuid4()}"
    with pty_pair() as pty:
        fake = FakeBms(kind, pty, model or BmsModel())
        gateway = Gateway(serial_settings(kind, [port or pty.path], out_ch), ScaledClock(SPEED))
        (source,) = gateway.sources
        assert isinstance(source, SerialBmsSource)
        async with AsyncCanBus("virtual", out_ch) as inv_bus:
            inverter = Inverter(inv_bus)
            async with running(gateway.run, fake.run, inverter.run):
                yield Rig(gateway, source, fake, inverter)


def online(state: GatewayState) -> bool:
    return state.packs[0].status is PackStatus.ONLINE


@pytest.mark.parametrize("kind", KINDS)
async def test_fake_bms_to_gateway_state_and_pylontech_frames(kind: str) -> None:
    model = BmsModel(current=-20.0, soc=64.0)  # discharging
    model.cell_v[4], model.cell_v[11] = 3.25, 3.35
    async with rig(kind, model) as r:
        state = await r.until(online)
        sample = state.packs[0].sample
        assert sample is not None
        assert list(sample.cell_v) == pytest.approx(model.cell_v)
        assert list(sample.cell_t) == [25.0, 26.0]
        assert sample.current == pytest.approx(-20.0)
        assert sample.voltage == pytest.approx(model.voltage)
        assert sample.soc_reported == pytest.approx(0.64)
        assert BmsFlags.CHARGE_FET in sample.flags
        assert BmsFlags.DISCHARGE_FET in sample.flags
        assert (state.cell_v_min, state.cell_v_min_at.cell) == (pytest.approx(3.25), 4)
        assert (state.cell_v_max, state.cell_v_max_at.cell) == (pytest.approx(3.35), 11)
        f = await r.inverter.until(lambda f: f.ccl == MAX_CHARGE and f.dcl == MAX_DISCHARGE)
        assert f.current == pytest.approx(-20.0, abs=0.1)  # sign survives both codecs
        assert f.voltage == pytest.approx(model.voltage, abs=0.01)
        assert f.temperature == pytest.approx(25.5, abs=0.1)
        assert r.source.rejected == 0
        samples = r.source.samples
        await r.until(lambda s: r.source.samples >= samples + 3)  # polling continues, alive moves
        assert r.gateway.state().packs[0].status is PackStatus.ONLINE


@pytest.mark.parametrize("kind", KINDS)
async def test_garbage_and_garbled_frames_are_counted_and_skipped(kind: str) -> None:
    async with rig(kind) as r:
        await r.until(online)
        r.fake.model.garbage = b"\x00\x13noise\xff"
        r.fake.model.corrupt = 2
        before = r.source.samples
        await r.until(lambda s: r.source.samples >= before + 4)
        assert r.source.garbage_bytes >= 10
        assert r.source.rejected >= 1
        r.fake.model.current = 7.5
        state = await r.until(lambda s: s.packs[0].sample is not None and s.packs[0].sample.current == 7.5)
        assert online(state)


@pytest.mark.parametrize("kind", KINDS)
async def test_echoing_rs485_adapter_is_not_garbage(kind: str) -> None:
    async with rig(kind, BmsModel(echo=True, current=-2.0)) as r:
        state = await r.until(online)
        assert _current(state) == -2.0
        before = r.source.samples
        await r.until(lambda s: r.source.samples >= before + 3)
        assert (r.source.rejected, r.source.garbage_bytes) == (0, 0)


@pytest.mark.parametrize("kind", KINDS)
async def test_silent_bms_goes_stale_and_outputs_go_safe(kind: str) -> None:
    async with rig(kind) as r:
        await r.inverter.until(lambda f: f.ccl == MAX_CHARGE)
        r.fake.model.silent = True
        await r.until(lambda s: s.packs[0].status is PackStatus.STALE, within=10.0)
        f = await r.inverter.until(lambda f: f.ccl == 0 and f.dcl == 0)
        assert A_COMM in f.flags
        assert not f.charge_enable
        assert not f.discharge_enable
        await r.until(lambda s: r.source.no_answer >= 1, within=20.0)  # every attempt timed out
        r.fake.model.silent = False
        await r.until(online, within=10.0)


async def test_port_that_vanishes_is_reopened_with_backoff(tmp_path: Path) -> None:
    link = tmp_path / "usb-JK_BMS-if00"  # like /dev/serial/by-id: a symlink to the tty
    model = BmsModel()
    out_ch = f"inv-{uuid.uuid4()}"
    gateway = Gateway(serial_settings("jk", [str(link)], out_ch), ScaledClock(SPEED))
    (source,) = gateway.sources
    assert isinstance(source, SerialBmsSource)

    async def serve(pty: PtyPair) -> None:
        os.symlink(pty.path, link)
        await FakeBms("jk", pty, model).run()

    async with running(gateway.run):
        with pty_pair() as first:
            async with running(lambda: serve(first)):
                await until(lambda: online(gateway.state()))
            link.unlink()  # unplugged: the tty and the by-id link disappear
        await until(lambda: gateway.state().packs[0].status is PackStatus.STALE, within=10.0)
        assert not source.connected
        reconnects = source.reconnects
        await asyncio.sleep(1.0)
        assert source.reconnects >= reconnects + 1  # it keeps trying, with backoff
        assert source.reconnects <= reconnects + 3  # 0.5 s, 1 s, 2 s ... not a busy loop
        model.current = -3.0
        with pty_pair() as second:
            async with running(lambda: serve(second)):
                await until(
                    lambda: online(gateway.state()) and _current(gateway.state()) == -3.0, within=40.0
                )
                assert source.connected


async def test_shared_rs485_line_polls_each_daly_board() -> None:
    out_ch = f"inv-{uuid.uuid4()}"
    a, b = BmsModel(daly_address=0x40, current=5.0), BmsModel(daly_address=0x41, current=-6.0)
    with pty_pair() as pty:
        settings = serial_settings("daly", [pty.path, pty.path], out_ch, addresses=(0x40, 0x41))
        gateway = Gateway(settings, ScaledClock(SPEED))
        assert len(gateway.sources) == 1  # one source serves the line
        async with running(gateway.run, FakeBms("daly", pty, a, b).run):
            await until(lambda: gateway.state().modules_online == 2)
            s = gateway.state()
            assert [_current(s, k) for k in (0, 1)] == [5.0, -6.0]


def test_serial_kinds_need_a_port_named_in_the_error() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(None, {"packs": [{"id": "a", "source": "jbd"}]}, env={})
    assert err.value.problems[0].startswith("packs[0].port: required for source = 'jbd'")


@pytest.mark.parametrize(
    ("packs", "message"),
    [
        (
            [{"source": "jk", "port": "/dev/x"}, {"source": "jk", "port": "/dev/x"}],
            "jk BMS cannot share a port",
        ),
        (
            [{"source": "daly", "port": "/dev/x"}, {"source": "daly", "port": "/dev/x"}],
            "both at address 0x40",
        ),
        ([{"source": "daly", "port": "/dev/x", "address": 7}], "packs[0].address = 7: not a daly address"),
        ([{"source": "jbd", "port": "/dev/x", "address": 1}], "jbd BMS have no bus address"),
        ([{"source": "jk", "port": "/dev/x"}, {"source": "daly", "port": "/dev/x"}], "reads it as 'jk'"),
        ([{"source": "daly-modbus", "port": "/dev/x", "address": 250}], "a Modbus slave id 1..247"),
    ],
)
def test_serial_pack_rules(packs: list[dict[str, object]], message: str) -> None:
    entries = [{"id": f"p{i}", **p} for i, p in enumerate(packs)]
    with pytest.raises(ConfigError) as err:
        load_settings(None, {"packs": entries}, env={})
    assert message in "\n".join(err.value.problems)


def test_two_daly_boards_on_one_port_are_valid() -> None:
    packs = [{"id": "a", "source": "daly", "port": "/dev/x"}, {"id": "b", "source": "daly", "port": "/dev/x",
             "address": 0x41}]  # fmt: skip
    settings, _ = load_settings(None, {"packs": packs}, env={})
    assert [p.address for p in settings.packs] == [0, 0x41]


async def until(pred: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(0.01)


def _current(state: GatewayState, pack: int = 0) -> float | None:
    sample = state.packs[pack].sample
    return None if sample is None else sample.current
