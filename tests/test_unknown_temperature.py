"""Packs without temperature sensors: every inverter-side codec sends the configured neutral temperature, or
the protocol's own "no value" marker where it has one, never 0 °C (or 0 K); known temperatures unchanged."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import struct
import time
import uuid
from typing import Any

import numpy as np
import pytest
from fakes import Decoded, PackModel, decode_pylon, make_state, run_fake_pack, running
from modbus_support import OK_FLAGS, serving, tcp_client

from bmsgw.app import Gateway
from bmsgw.clock import ScaledClock
from bmsgw.config import ConfigError, OutputConfig, Settings, load_settings
from bmsgw.ems import Command
from bmsgw.inverter import (
    CAN_CODECS,
    CodecOptions,
    modbus_map,
    pylontech_can,
    pylontech_can_v13,
    sma_can,
    sunspec,
    victron_can,
)
from bmsgw.inverter import pylontech_hv_can as hv
from bmsgw.inverter import pylontech_rs485 as pr
from bmsgw.inverter.scaling import UNKNOWN_TEMPERATURE_C, known_temperature
from bmsgw.model import GatewayState, PackSample
from bmsgw.outputs.pylontech_hv_can import hv_options
from bmsgw.outputs.pylontech_rs485 import stack_info
from bmsgw.pipeline import Pipeline
from bmsgw.transport.can_bus import AsyncCanBus

NAN = math.nan
NO_SENSORS = make_state(temperature=NAN, cell_t=(NAN, NAN))


def by_id(frames: list[Any]) -> dict[int, bytes]:
    return {f.id: bytes(f.data) for f in frames}


def t356(frames: list[Any]) -> float:
    """0x356 bytes 4-5: battery temperature s16 0.1 °C, little endian (Pylontech V1.2/V1.3, SMA, Victron)."""
    (raw,) = struct.unpack_from("<h", by_id(frames)[0x356], 4)
    return raw / 10


# --- the helper --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("t", "unknown", "sent"),
    [
        (NAN, 25.0, 25.0),
        (math.inf, 25.0, 25.0),
        (-math.inf, 10.0, 10.0),
        (0.0, 25.0, 0.0),
        (-12.5, 25.0, -12.5),
    ],
)
def test_known_temperature(t: float, unknown: float, sent: float) -> None:
    assert known_temperature(t, unknown) == sent


def test_default_is_25_c() -> None:
    assert UNKNOWN_TEMPERATURE_C == 25.0
    assert OutputConfig.model_fields["unknown_temperature_c"].default == UNKNOWN_TEMPERATURE_C
    assert known_temperature(NAN) == 25.0


# --- LV CAN codecs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("encode", [pylontech_can.encode, pylontech_can_v13.encode])
def test_pylontech_lv_sends_the_configured_temperature(encode: Any) -> None:
    assert t356(encode(NO_SENSORS)) == 25.0
    assert t356(encode(NO_SENSORS, unknown_temperature_c=-5.5)) == -5.5
    assert t356(encode(make_state(temperature=0.0), unknown_temperature_c=30.0)) == 0.0  # known: unchanged
    assert t356(encode(make_state(temperature=36.3))) == 36.3


def test_sma_sends_its_invalid_marker_so_the_si_uses_its_own_sensor() -> None:
    for unknown in (NAN, math.inf):
        (raw,) = struct.unpack_from("<h", by_id(sma_can.encode(make_state(temperature=unknown)))[0x356], 4)
        assert raw == -0x8000  # 0x8000: "invalid", the SI reverts to its default
    assert t356(sma_can.encode(make_state(temperature=21.7))) == 21.7


def test_victron_sends_the_configured_temperature_in_0x356_and_0x373() -> None:
    frames = by_id(victron_can.encode(NO_SENSORS, unknown_temperature_c=20.0))
    assert struct.unpack_from("<h", frames[0x356], 4) == (200,)
    # 0x373 bytes 4-7: lowest / highest temperature u16 in K (not 0 K = -273 °C)
    assert struct.unpack_from("<HH", frames[0x373], 4) == (293, 293)
    assert frames[0x376] == bytes(8)  # where: still empty, no sensor to name
    assert frames[0x377] == bytes(8)
    frames = by_id(victron_can.encode(NO_SENSORS))
    assert struct.unpack_from("<HH", frames[0x373], 4) == (298, 298)  # 25 °C + 273.15, rounded


@pytest.mark.parametrize("protocol", sorted(CAN_CODECS))
def test_can_registry_passes_the_option(protocol: str) -> None:
    frames = CAN_CODECS[protocol].encode(NO_SENSORS, CodecOptions(unknown_temperature_c=12.3))
    (raw,) = struct.unpack_from("<h", by_id(frames)[0x356], 4)
    assert raw == (-0x8000 if protocol == "sma-can" else 123)  # SMA: its invalid marker, the option unused


# --- Pylontech HV CAN --------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["little", "big"])
def test_pylontech_hv_sends_the_configured_temperature(order: hv.ByteOrder) -> None:
    e = "<" if order == "little" else ">"
    for unknown, raw in ((25.0, 1250), (-10.0, 900)):
        frames = by_id(
            hv.encode_ensemble(NO_SENSORS, hv.HvOptions(byte_order=order, unknown_temperature_c=unknown))
        )
        # 0x4210 bytes 4-5: BMS temperature u16 0.1 °C, offset 100 °C
        assert struct.unpack_from(e + "H", frames[0x4210], 4) == (raw,)
        # 0x4240 bytes 0-3: max / min cell temperature; 0x4270 bytes 0-3: max / min module temperature
        assert struct.unpack_from(e + "HH", frames[0x4240]) == (raw, raw)
        assert struct.unpack_from(e + "HH", frames[0x4270]) == (raw, raw)
    known = by_id(hv.encode_ensemble(make_state(temperature=-3.0, cell_t=(-4.0, -2.0)), hv.HvOptions()))
    assert struct.unpack_from("<H", known[0x4210], 4) == (970,)
    assert struct.unpack_from("<HH", known[0x4240]) == (980, 960)


# --- Pylontech RS485 ---------------------------------------------------------------------------------------


def sensorless(protocol: str = "pylontech-rs485", **output: Any) -> Settings:
    settings, _ = load_settings(
        None,
        {
            "packs": [{"id": "p0", "cells": 16, "sensors": 0, "capacity_ah": 50}],
            "outputs": [{"protocol": protocol, "tcp_port": 0, **output}],
            "gateway.recovery_ramp_s": 0.0,
        },
        env={},
    )
    return settings


def sensorless_state(settings: Settings, seconds: int = 4) -> GatewayState:
    p = Pipeline(settings)
    for k in range(seconds):
        cells = np.full(16, 3.30)
        p.submit(PackSample(0, float(k), cells, np.empty(0), 10.0, float(cells.sum()), OK_FLAGS, alive=k))
        p.step(float(k))
    assert math.isnan(p.state.temperature)
    assert p.state.usable
    return p.state


def rs485_info(state: GatewayState, stack: pr.StackInfo, command: int, adr: int, target: int | None) -> bytes:
    reply = pr.answer(pr.encode_request(command, adr, target), state, stack).reply
    assert reply is not None
    return pr.decode_frame(reply).info


def analog_temps(info: bytes) -> list[float]:
    """0x42 INFO, one module: DATAFLAG, address, cell count, cells u16 mV, sensor count, sensors s16 0.1 K."""
    cells = info[2]
    n = info[3 + 2 * cells]
    raw = struct.unpack_from(f">{n}h", info, 4 + 2 * cells)
    return [(r - 2731) / 10 for r in raw]


@pytest.mark.parametrize("unknown", [25.0, 15.0])
def test_pylontech_rs485_sends_the_configured_temperature(unknown: float) -> None:
    s = sensorless(unknown_temperature_c=unknown)
    stack = stack_info(s, s.outputs[0])
    assert stack.unknown_temperature_c == unknown
    state = sensorless_state(s)
    assert analog_temps(rs485_info(state, stack, pr.Command.ANALOG, 2, 2)) == [unknown]  # the board slot
    # 0x61 bytes 19-28: cell temperature average, max, where, min, where (0.1 K), repeated for MOSFET and BMS
    info = rs485_info(state, stack, pr.Command.SYSTEM_ANALOG, 0, None)
    raw = round(unknown * 10) + 2731
    for block in range(3):
        avg, hi, _, lo, _ = struct.unpack_from(">hhHhH", info, 19 + 10 * block)
        assert (avg, hi, lo) == (raw, raw, raw)


def test_pylontech_rs485_one_dead_sensor_among_live_ones() -> None:
    s = sensorless()
    stack = dataclasses.replace(stack_info(s, s.outputs[0]), unknown_temperature_c=20.0)
    state = sensorless_state(s)
    view = state.packs[0]
    assert view.sample is not None
    sample = dataclasses.replace(view.sample, cell_t=np.array([24.0, NAN, 26.0]))
    state = dataclasses.replace(state, packs=(dataclasses.replace(view, sample=sample),))
    # board = mean of the live sensors; the dead one reads the neutral value, not -273.1 °C
    assert analog_temps(rs485_info(state, stack, pr.Command.ANALOG, 2, 2)) == [25.0, 24.0, 20.0, 26.0]


def test_pylontech_rs485_module_never_seen_reads_the_configured_temperature_in_0xff() -> None:
    settings, _ = load_settings(
        None,
        {
            "packs": [
                {"id": f"p{i}", "address": i, "cells": 16, "sensors": 2, "capacity_ah": 50} for i in range(2)
            ],
            "outputs": [{"protocol": "pylontech-rs485", "tcp_port": 0, "unknown_temperature_c": 18.0}],
        },
        env={},
    )
    p = Pipeline(settings)
    cells = np.full(16, 3.30)
    for k in range(3):  # only the first pack reports
        p.submit(PackSample(0, float(k), cells, np.array([21.0, 23.0]), 5.0, 52.8, OK_FLAGS, alive=k))
        p.step(float(k))
    stack = stack_info(settings, settings.outputs[0])
    records = pr.decode_analog(rs485_info(p.state, stack, pr.Command.ANALOG, 2, 0xFF), all_modules=True)
    seen, never = records.modules
    assert seen.temperatures == (22.0, 21.0, 23.0)
    assert never.temperatures == (18.0, 18.0, 18.0)  # not -273.1 °C: an inverter would see a frozen pack
    assert never.cell_v == (0.0,) * 16
    assert never.current == 0.0


# --- Modbus map and SunSpec: the not-implemented marker ----------------------------------------------------


def test_modbus_map_reads_not_implemented_for_unknown_temperatures() -> None:
    s = sensorless("modbus-tcp")
    state = sensorless_state(s)
    status = modbus_map.encode_status(state, Command(), 0.0, False)
    off = {r.name: r.offset for r in modbus_map.STATUS}
    assert [status[off[n]] for n in ("temperature", "cell_t_min", "cell_t_max")] == [0x8000] * 3
    pack = modbus_map.encode_pack(state.packs[0], state, state.t, 50.0)
    poff = {r.name: r.offset for r in modbus_map.PACK}
    assert [pack[poff[n]] for n in ("cell_t_min", "cell_t_max")] == [0x8000] * 2
    # the cells are still known without sensors
    assert [pack[poff[n]] for n in ("cell_v_min", "cell_v_max")] == [3300, 3300]
    assert pack[poff["cell_v_max_cell"]] == 1


def offsets(points: Any) -> dict[str, int]:
    """Register offset of each SunSpec point (from the model's ID register, or the group's start)."""
    out, off = {}, 0
    for p in points:
        out[p.name] = off
        off += p.size
    return out


def test_sunspec_reads_not_implemented_for_unknown_temperatures() -> None:
    s = sensorless("modbus-tcp")
    state = sensorless_state(s)
    image = sunspec.encode(state, sunspec.Identity(), Command())
    addr = sunspec.model_addresses(1)
    bank = addr["803"] - sunspec.BASE
    string = addr["804.0"] - sunspec.BASE
    module = string + sum(p.size for p in sunspec.STRING)  # the one module group follows the string
    b, st_, m = offsets(sunspec.BANK), offsets(sunspec.STRING), offsets(sunspec.STRING_MODULE)
    assert [image[bank + b[n]] for n in ("ModTmpMax", "ModTmpMin", "ModTmpAvg")] == [0x8000] * 3
    assert image[bank + b["ModTmpMaxStr"]] == 0xFFFF  # no sensor to point at
    assert [image[string + st_[n]] for n in ("ModTmpMax", "ModTmpMin", "ModTmpAvg")] == [0x8000] * 3
    assert image[module + m["ModCellTmpAvg"]] == 0x8000
    assert image[module + m["ModCellTmpMaxCell"]] == 0xFFFF
    assert image[string + st_["CellVMax"]] == 3300  # cells still known (CellV_SF -3)
    assert image[module + m["ModCellVMax"]] == 3300


# --- configuration -----------------------------------------------------------------------------------------


def test_config_default_and_value() -> None:
    assert sensorless().outputs[0].unknown_temperature_c == 25.0
    assert sensorless(unknown_temperature_c=-7.5).outputs[0].unknown_temperature_c == -7.5


@pytest.mark.parametrize("bad", [-40.5, 80.5, "nan", "inf", "warm"])
def test_config_rejects_bad_values_naming_the_key(bad: Any) -> None:
    with pytest.raises(ConfigError) as exc:
        sensorless(unknown_temperature_c=bad)
    (problem,) = exc.value.problems
    assert problem.startswith("outputs[0].unknown_temperature_c = ")
    if isinstance(bad, float):
        assert ("-40" if bad < 0 else "80") in problem


@pytest.mark.parametrize("protocol", ["sma-can", "modbus-tcp"])
def test_config_refuses_the_key_where_the_protocol_has_a_marker(protocol: str) -> None:
    with pytest.raises(ConfigError, match="unknown_temperature_c") as exc:
        sensorless(protocol, unknown_temperature_c=25.0, channel="can1")
    assert "0x8000" in str(exc.value)


def test_hv_output_options_carry_the_key() -> None:
    s = sensorless("pylontech-hv-can", unknown_temperature_c=31.0)
    assert hv_options(s, s.outputs[0]).unknown_temperature_c == 31.0


# --- end to end --------------------------------------------------------------------------------------------

SPEED = 10.0


async def live_frames(latest: dict[int, bytes], within: float = 10.0) -> Decoded:
    """The inverter's view once the gateway sends live values (limits up, pack voltage known)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if {0x351, 0x355, 0x356, 0x359, 0x35C, 0x35E} <= latest.keys():
            f = decode_pylon(latest)
            if f.ccl > 0 and f.voltage > 50:
                return f
        await asyncio.sleep(0.01)
    raise AssertionError(f"no live frames from the gateway within {within} s: {latest}")


async def test_pylontech_lv_can_on_a_virtual_bus_with_a_sensorless_pack() -> None:
    pack_ch, out_ch = f"pack-{uuid.uuid4()}", f"inv-{uuid.uuid4()}"
    settings, _ = load_settings(
        None,
        {
            "packs": [{"id": "p1", "cells": 16, "sensors": 0, "capacity_ah": 100}],
            "can": {"interface": "virtual", "channel": pack_ch},
            "outputs": [
                {
                    "protocol": "pylontech-can",
                    "interface": "virtual",
                    "channel": out_ch,
                    "unknown_temperature_c": 22.5,
                }
            ],
            "gateway.recovery_ramp_s": 0.0,
            "gateway.step_period_s": 0.1,
        },
        env={},
    )
    gateway = Gateway(settings, ScaledClock(SPEED))
    pack = PackModel(cell_t=np.empty(0))
    latest: dict[int, bytes] = {}

    async def inverter(bus: AsyncCanBus) -> None:
        while True:
            msg = await bus.recv()
            latest[msg.arbitration_id] = bytes(msg.data)

    async with (
        AsyncCanBus("virtual", pack_ch) as pack_bus,
        AsyncCanBus("virtual", out_ch) as inv_bus,
        running(gateway.run, lambda: run_fake_pack(pack_bus, pack, 0.1 / SPEED), lambda: inverter(inv_bus)),
    ):
        f = await live_frames(latest)
    assert math.isnan(gateway.state().temperature)  # the core still says "unknown"
    assert f.temperature == 22.5  # the inverter sees the neutral value, not 0.0 °C
    assert f.voltage == pytest.approx(16 * 3.30, abs=0.01)
    assert f.flags == frozenset()  # no alarm invented for a pack without sensors


async def test_modbus_tcp_with_a_real_client_reads_the_marker() -> None:
    s = sensorless("modbus-tcp")
    state = sensorless_state(s)
    async with serving(s, lambda: state) as out, tcp_client(out) as client:
        rr = await client.read_holding_registers(0, count=31, device_id=s.outputs[0].unit_id)
    assert not rr.isError()
    off = {r.name: r.offset for r in modbus_map.STATUS}
    assert [rr.registers[off[n]] for n in ("temperature", "cell_t_min", "cell_t_max")] == [0x8000] * 3
    assert rr.registers[off["voltage"]] == 5280  # 52.80 V: the rest of the block is live
