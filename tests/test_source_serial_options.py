"""Per-pack options of the serial sources, end to end over real ptys: a JBD with no NTC (sensors = 0)
feeds the core and the inverter; a Daly whose firmware reports the current with the wrong sign is
corrected by `current_sign = "inverted"`; every new serial kind answers `bmsgw probe`."""

from __future__ import annotations

import math
import uuid
from typing import Any

import pytest
from fake_bms import BmsModel, FakeBms
from fakes import running
from ptys import pty_pair
from test_gateway_e2e import Inverter
from test_serial_sources import MAX_CHARGE, MAX_DISCHARGE, SPEED, serial_settings, until

from bmsgw.app import Gateway
from bmsgw.clock import ScaledClock
from bmsgw.config import ConfigError, Settings, load_settings
from bmsgw.model import PackStatus
from bmsgw.sources.serial_bms import format_probe, probe
from bmsgw.transport.can_bus import AsyncCanBus


def settings(kind: str, port: str, out_channel: str, **pack: Any) -> Settings:
    return serial_settings(kind, [port], out_channel, **pack)


async def test_jbd_without_ntc_feeds_the_core_and_the_inverter() -> None:
    out_ch = f"inv-{uuid.uuid4()}"
    model = BmsModel(temps=[], current=5.0)
    with pty_pair() as pty:
        gateway = Gateway(settings("jbd", pty.path, out_ch, sensors=0), ScaledClock(SPEED))
        async with AsyncCanBus("virtual", out_ch) as bus:
            inverter = Inverter(bus)
            async with running(gateway.run, FakeBms("jbd", pty, model).run, inverter.run):
                await until(lambda: gateway.state().packs[0].status is PackStatus.ONLINE)
                state = gateway.state()
                sample = state.packs[0].sample
                assert sample is not None
                assert sample.cell_t.shape == (0,)
                assert math.isnan(state.temperature)
                assert math.isnan(state.cell_t_max)
                f = await inverter.until(lambda f: f.ccl == MAX_CHARGE and f.dcl == MAX_DISCHARGE)
                assert f.current == pytest.approx(5.0, abs=0.1)


async def test_jbd_reporting_ntcs_the_config_does_not_expect_is_excluded() -> None:
    out_ch = f"inv-{uuid.uuid4()}"
    with pty_pair() as pty:
        gateway = Gateway(settings("jbd", pty.path, out_ch, sensors=0), ScaledClock(SPEED))
        async with running(gateway.run, FakeBms("jbd", pty, BmsModel()).run):  # 2 NTCs
            await until(lambda: gateway.state().packs[0].status is PackStatus.IMPLAUSIBLE)


@pytest.mark.parametrize("kind", ["daly", "jk", "seplos"])
async def test_inverted_current_sign_is_corrected(kind: str) -> None:
    out_ch = f"inv-{uuid.uuid4()}"
    model = BmsModel(current=12.5)  # the firmware says +12.5 A while the pack discharges
    with pty_pair() as pty:
        gateway = Gateway(settings(kind, pty.path, out_ch, current_sign="inverted"), ScaledClock(SPEED))
        async with running(gateway.run, FakeBms(kind, pty, model).run):
            await until(lambda: gateway.state().packs[0].status is PackStatus.ONLINE)
            sample = gateway.state().packs[0].sample
            assert sample is not None
            assert sample.current == pytest.approx(-12.5)
            assert gateway.state().current == pytest.approx(-12.5)


@pytest.mark.parametrize(
    ("pack", "message"),
    [
        ({"source": "daly", "port": "/dev/x", "current_sign": "backwards"}, "'normal' or 'inverted'"),
        ({"source": "can", "current_sign": "inverted"}, "current_sign = 'inverted': only for the serial"),
        ({"source": "seplos", "port": "/dev/x", "address": 16}, "the pack's DIP address 0..15"),
        ({"source": "pylontech-rs485", "port": "/dev/x", "address": 1}, "a module address 2..254"),
        ({"source": "jbd", "port": "/dev/x", "sensors": -1}, "packs[0].sensors"),
    ],
)
def test_option_errors_name_key_value_and_allowed(pack: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(None, {"packs": [{"id": "a", **pack}]}, env={})
    assert message in "\n".join(err.value.problems)


def test_two_seplos_packs_on_one_line_are_valid() -> None:
    packs = [{"id": "a", "source": "seplos", "port": "/dev/x"},
             {"id": "b", "source": "seplos", "port": "/dev/x", "address": 1}]  # fmt: skip
    s, _ = load_settings(None, {"packs": packs}, env={})
    assert [p.address for p in s.packs] == [0, 1]


@pytest.mark.parametrize(("kind", "address"), [("seplos", 3), ("pylontech-rs485", 0)])
async def test_probe_reads_the_new_kinds(kind: str, address: int) -> None:
    model = BmsModel(current=-4.0, address=address)
    with pty_pair() as pty:
        async with running(FakeBms(kind, pty, model).run):
            result = await probe(kind, pty.path, address=address)
    assert result.reading.current == pytest.approx(-4.0)
    assert list(result.reading.cell_v) == pytest.approx(model.cell_v)
    text = format_probe(result, verbose=True)
    assert f'source = "{kind}", cells = 16, sensors = 2' in text
    # telemetry/analog and alarms; Pylontech also asks for the module's limits (0x92, refused by the fake)
    assert text.count(">>") == (3 if kind == "pylontech-rs485" else 2)
