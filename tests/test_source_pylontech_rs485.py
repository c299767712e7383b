"""`pylontech-rs485` as a pack source: the gateway reads a Pylontech stack (one pack per module address)
and re-emits it. The "real stack" is our own Pylontech RS485 output serving another pipeline's state over
a pty pair; plus the real captured module records (tests/fixtures/SOURCES.md) and random bytes."""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import pytest
from fake_bms import BmsModel, FakeBms
from fakes import running
from hypothesis import given
from hypothesis import strategies as st
from ptys import pty_pair
from test_pylontech_rs485 import CAPTURES, CELLS, CURRENTS, TEMPS, live_pipeline, pack_sample, rig_settings
from test_pylontech_rs485_server import bridged
from test_serial_sources import until

from bmsgw.app import Gateway
from bmsgw.bms import pylontech
from bmsgw.clock import ScaledClock
from bmsgw.config import load_settings
from bmsgw.inverter import pylontech_rs485 as pr
from bmsgw.model import BmsFlags, GatewayState, PackStatus, Reason
from bmsgw.outputs.pylontech_rs485 import PylontechRs485Output
from bmsgw.sources.serial_bms import SerialBmsSource, probe


async def test_gateway_reads_a_stack_served_by_our_own_pylontech_output() -> None:
    upstream = rig_settings()
    pipe = live_pipeline(upstream)  # two packs: A discharging, B charging
    state: list[GatewayState] = [pipe.state]
    with pty_pair() as stack_end, pty_pair() as gateway_end, bridged(stack_end, gateway_end):
        cfg = upstream.outputs[0].model_copy(update={"port": stack_end.path, "tcp_port": None})
        stack = PylontechRs485Output(upstream, cfg, ScaledClock(20.0), lambda: state[0])
        packs = [
            {"id": f"m{a}", "source": "pylontech-rs485", "port": gateway_end.path, "address": a,
             "cells": 16, "sensors": 4, "capacity_ah": cap, "poll_interval_s": 1.0}
            for a, cap in ((2, 100), (3, 50))
        ]  # fmt: skip
        settings, _ = load_settings(None, {"packs": packs, "gateway.stale_after_s": 5.0}, env={})
        gateway = Gateway(settings, ScaledClock(10.0))
        (source,) = gateway.sources
        assert isinstance(source, SerialBmsSource)
        async with running(stack.run, gateway.run):
            await until(lambda: gateway.state().modules_online == 2, within=10.0)
            got = gateway.state()
            for i, view in enumerate(got.packs):
                s = view.sample
                assert s is not None
                np.testing.assert_allclose(s.cell_v, CELLS + 0.001 * i, atol=5e-4)
                np.testing.assert_allclose(s.cell_t, TEMPS + i, atol=0.05)
                assert s.current == pytest.approx(CURRENTS[i], abs=0.05)
                assert s.voltage == pytest.approx(float(np.sum(CELLS)) + 0.016 * i, abs=1e-3)
                assert s.soc_reported == pytest.approx(pipe.state.packs[i].soc, abs=1e-3)
                assert BmsFlags.CHARGE_FET | BmsFlags.DISCHARGE_FET in s.flags
            assert got.current == pytest.approx(sum(CURRENTS), abs=0.1)
            assert source.rejected == 0
            # module B goes stale upstream: the stack reports its items as "other error" and no current,
            # which this gateway takes as an internal BMS alarm of that pack
            pipe.submit(pack_sample(0, 10.0, 10))
            state[0] = pipe.step(10.0)
            assert state[0].packs[1].status is PackStatus.STALE

            def b_alarmed() -> bool:
                s = gateway.state().packs[1].sample
                return s is not None and BmsFlags.ALARM_INTERNAL in s.flags and s.current == 0.0

            await until(b_alarmed, within=10.0)
            a_sample = gateway.state().packs[0].sample
            assert a_sample is not None
            assert BmsFlags.ALARM_INTERNAL not in a_sample.flags


async def test_probe_reads_one_module() -> None:
    upstream = rig_settings()
    state = live_pipeline(upstream).state
    with pty_pair() as stack_end, pty_pair() as probe_end, bridged(stack_end, probe_end):
        cfg = upstream.outputs[0].model_copy(update={"port": stack_end.path, "tcp_port": None})
        stack = PylontechRs485Output(upstream, cfg, ScaledClock(20.0), lambda: state)
        async with running(stack.run):
            result = await probe("pylontech-rs485", probe_end.path, address=3)
    assert result.address == 3
    assert list(result.reading.cell_v) == pytest.approx(list(CELLS + 0.001), abs=5e-4)
    assert result.reading.current == pytest.approx(CURRENTS[1], abs=0.05)
    assert [d for d, _ in result.frames] == ["tx", "rx"] * 3  # 0x42, 0x44, 0x92
    assert result.reading.request is not None  # the stack's own limits for that module


def test_real_us3000c_records_become_a_reading() -> None:
    v = pylontech.decode_analog_answer(CAPTURES["us3000c_0x42_single"], 2)
    a = pylontech.decode_alarm_answer(CAPTURES["us3000c_0x44_single"], 2)
    assert v is not None
    assert a is not None
    r = pylontech.reading(v, a)
    assert len(r.cell_v) == 15
    assert len(r.cell_t) == 4  # five sensors, the first is the BMS board
    assert (r.current, r.voltage) == pytest.approx((2.3, 50.087))
    assert r.soc_reported == pytest.approx(50.068 / 74.0)
    assert r.extra["cycles"] == 55
    assert BmsFlags.CHARGE_FET | BmsFlags.DISCHARGE_FET in r.flags  # Status 2 = 0x0E
    assert r.flags & ~(BmsFlags.CHARGE_FET | BmsFlags.DISCHARGE_FET) == BmsFlags.NONE
    assert pylontech.decode_analog_answer(CAPTURES["us3000c_0x42_single"], 3) is None  # module 2's answer
    assert pylontech.decode_analog_answer(pylontech.request(pr.Command.ANALOG, 2), 2) is None  # our echo


def test_protection_bits_and_invalid_items_become_alarms() -> None:
    v = pylontech.decode_analog_answer(CAPTURES["us3000c_0x42_single"], 2)
    a = pylontech.decode_alarm_answer(CAPTURES["us3000c_0x44_single"], 2)
    assert v is not None
    assert a is not None
    hot = dataclasses.replace(a, status1=pr.Status1.CHARGE_OVERTEMPERATURE | pr.Status1.CELL_UNDERVOLTAGE)
    assert BmsFlags.ALARM_OVERTEMP | BmsFlags.ALARM_CELL_UV in pylontech.reading(v, hot).flags
    dead = dataclasses.replace(a, cells=(pr.ALARM_OTHER,) * len(a.cells))
    assert BmsFlags.ALARM_INTERNAL in pylontech.reading(v, dead).flags
    warn = dataclasses.replace(a, cells=(pr.ALARM_HIGH, *a.cells[1:]))  # an item state is a warning
    assert pylontech.reading(v, warn).flags == pylontech.reading(v, a).flags


def test_error_rtn_is_the_codec_error() -> None:
    refused = pr.encode_frame(pr.Rs485Frame(pr.VER, 2, pr.CID1_BATTERY, pr.Rtn.ADR_ERROR))
    with pytest.raises(pylontech.PylontechDecodeError, match="RTN 0x90"):
        pylontech.decode_answer(refused, 2)


DECODERS = (pylontech.decode_analog_answer, pylontech.decode_alarm_answer, pylontech.decode_management_answer)


@given(st.binary(max_size=300) | st.text("~0123456789ABCDEF\r", max_size=300).map(str.encode))
def test_random_frames_never_raise_anything_but_the_codec_error(data: bytes) -> None:
    for decode in DECODERS:
        with contextlib.suppress(pylontech.PylontechDecodeError):
            decode(data, 2)


@given(st.binary(max_size=200))
def test_random_info_in_a_valid_frame_is_the_codec_error(info: bytes) -> None:
    frame = pr.encode_frame(pr.Rs485Frame(pr.VER, 2, pr.CID1_BATTERY, 0, info))
    for decode in DECODERS:
        with contextlib.suppress(pylontech.PylontechDecodeError):
            decode(frame, 2)


LIMITS_0X92 = pr.Management(53.2, 47.0, 37.0, 74.0, charge_enable=True, discharge_enable=False)


def test_0x92_answer_becomes_the_modules_limits() -> None:
    def answer(info: bytes, adr: int = 2, rtn: int = pr.Rtn.NORMAL) -> bytes:
        return pr.encode_frame(pr.Rs485Frame(pr.VER, adr, pr.CID1_BATTERY, rtn, info))

    m = pylontech.decode_management_answer(answer(pr.encode_management(LIMITS_0X92, 2)), 2)
    assert m == LIMITS_0X92
    req = pylontech.limits_request(m)
    assert (req.cvl, req.ccl, req.dcl, req.dvl) == pytest.approx((53.2, 37.0, 74.0, 47.0))
    assert req.charge_enable
    assert not req.discharge_enable
    none_v = pylontech.limits_request(dataclasses.replace(m, charge_voltage=0.0, discharge_voltage=0.0))
    assert none_v.cvl is None
    assert none_v.dvl is None
    assert pylontech.decode_management_answer(answer(pr.encode_management(LIMITS_0X92, 2), adr=3), 2) is None
    with pytest.raises(pylontech.PylontechDecodeError, match="another module"):
        pylontech.decode_management_answer(answer(pr.encode_management(LIMITS_0X92, 3)), 2)
    with pytest.raises(pylontech.PylontechRefusedError, match="RTN 0x04"):
        pylontech.decode_management_answer(answer(b"", rtn=pr.Rtn.CID2_INVALID), 2)


async def test_module_limits_from_0x92_bind_the_gateway_and_refusing_firmware_is_asked_once() -> None:
    async def run(model: BmsModel) -> tuple[GatewayState, FakeBms, SerialBmsSource]:
        pack = {"id": "m2", "source": "pylontech-rs485", "address": 2, "cells": 16, "sensors": 2,
                "capacity_ah": 100, "poll_interval_s": 1.0}  # fmt: skip
        with pty_pair() as pty:
            settings, _ = load_settings(None, {"packs": [{**pack, "port": pty.path}]}, env={})
            gateway = Gateway(settings, ScaledClock(10.0))
            (source,) = gateway.sources
            assert isinstance(source, SerialBmsSource)
            fake = FakeBms("pylontech-rs485", pty, model)
            async with running(gateway.run, fake.run):
                await until(lambda: source.samples >= 4, within=15.0)
                return gateway.state(), fake, source

    state, fake, source = await run(BmsModel(address=2, management=LIMITS_0X92))
    sample = state.packs[0].sample
    assert sample is not None
    assert sample.request == pylontech.limits_request(LIMITS_0X92)
    assert state.limits.cvl.value <= 53.2
    assert state.limits.ccl.value <= 37.0
    assert state.limits.ccl.reason is Reason.BMS_REQUEST or state.limits.ccl.value < 37.0
    assert not state.limits.discharge_enable  # the module forbids discharging
    assert state.limits.dcl.value == 0.0
    assert 3 * (source.polls - 1) < fake.requests <= 3 * source.polls  # 0x42, 0x44, 0x92 every poll
    state, fake, source = await run(BmsModel(address=2))  # firmware without 0x92: refused once
    sample = state.packs[0].sample
    assert sample is not None
    assert sample.request is None
    assert state.limits.discharge_enable
    assert 2 * (source.polls - 1) + 1 < fake.requests <= 2 * source.polls + 1  # 0x92 once
