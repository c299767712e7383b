"""Pylontech HV CAN: spec-table decoder, a captured frame, byte order and current offset, alarm bits, inverter
commands, fuzzing, the request/response output on a virtual bus, config checks, and the fail-safe end to end.

The decoder below is written from the reference tables (protocols.md §5.5, anchors_bridges.md §1.7: the
"CAN-Bus-Protocol high voltage" V1.17/V1.18 layout) with struct only; it never calls our codec.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import struct
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import can
import numpy as np
import pytest
from fakes import PackModel, alarm, decode_pylon, lim, make_state, run_fake_pack, running
from hypothesis import given, settings
from hypothesis import strategies as st
from lvcan_spec import MAX_CHARGE, MAX_DISCHARGE, SPEED, rig_settings, states
from pydantic import ValidationError
from structlog.testing import capture_logs

from bmsgw import __version__
from bmsgw.app import Gateway
from bmsgw.cli import main
from bmsgw.clock import ScaledClock
from bmsgw.config import OutputConfig, load_settings
from bmsgw.inverter import pylontech_hv_can as hv
from bmsgw.model import AlarmCode, AlarmLevel, CellRef, Frame, GatewayState, PackSample, PackStatus
from bmsgw.outputs import OUTPUTS
from bmsgw.outputs.pylontech_hv_can import PylontechHvCanOutput
from bmsgw.transport.can_bus import AsyncCanBus

ENSEMBLE = [0x4210, 0x4220, 0x4230, 0x4240, 0x4250, 0x4260, 0x4270, 0x4280, 0x4290]
EQUIPMENT = [0x7310, 0x7320, 0x7330, 0x7340]
VERSION = tuple(int(x) for x in __version__.split(".")[:2])

# --- independent decoder of the battery frames ------------------------------------------------------------

# 0x4250 alarm / protection bits (bytes 4-5 / 6-7), spec order
BITS = ("BLV", "BHV", "PLV", "PHV", "CLT", "CHT", "DLT", "DHT", "COCA", "DOCA", "MLV", "MHV")
# 0x4250 error byte (byte 3)
ERRORS = (
    "volt_sensor",
    "temp_sensor",
    "internal_comm",
    "input_ov",
    "input_reversal",
    "relay",
    "damage",
    "other",
)


@dataclass(frozen=True)
class Ensemble:
    """0x4210…0x4290 in SI units."""

    voltage: float
    current: float
    bms_temperature: float
    soc: int
    soh: int
    charge_cutoff_v: float
    discharge_cutoff_v: float
    max_charge_a: float
    max_discharge_a: float  # as sent: a negative current
    cell_v_max: float
    cell_v_min: float
    cell_v_max_no: int
    cell_v_min_no: int
    cell_t_max: float
    cell_t_min: float
    cell_t_max_no: int
    cell_t_min_no: int
    status: int  # bits 0-2
    force_charge: bool
    balance_charge: bool
    cycles: int
    errors: frozenset[str]
    alarms: frozenset[str]
    protections: frozenset[str]
    module_v: tuple[float, float, int, int]
    module_t: tuple[float, float, int, int]
    charge_forbidden: int
    discharge_forbidden: int
    fault_ext: int


def decode_ensemble(
    data: dict[int, bytes], *, order: str = "<", offset_a: float = 3000.0, base: int = 0x4210
) -> Ensemble:
    """Decode the nine frames; `offset_a` 0 means s16 currents."""
    cur = "h" if offset_a == 0 else "H"

    def u(fid: int, fmt: str) -> tuple[Any, ...]:
        payload = data[fid - 0x4210 + base]
        assert len(payload) == 8, hex(fid)
        return struct.unpack(order + fmt, payload)

    def amps(raw: int) -> float:
        return round(raw * 0.1 - offset_a, 6)

    def temp(raw: int) -> float:
        return round(raw * 0.1 - 100.0, 6)

    def bits(value: int, names: tuple[str, ...]) -> frozenset[str]:
        return frozenset(n for i, n in enumerate(names) if value >> i & 1)

    v, i, t, soc, soh = u(0x4210, f"H{cur}HBB")
    cv, dv, cc, dc = u(0x4220, f"HH{cur}{cur}")
    vmax, vmin, vmax_no, vmin_no = u(0x4230, "HHHH")
    tmax, tmin, tmax_no, tmin_no = u(0x4240, "HHHH")
    basic, cycles, err, alm, prot = u(0x4250, "BHBHH")
    mv = u(0x4260, "HHHH")
    mt = u(0x4270, "HHHH")
    forbid = data[0x4280 - 0x4210 + base]
    return Ensemble(
        voltage=v / 10,
        current=amps(i),
        bms_temperature=temp(t),
        soc=soc,
        soh=soh,
        charge_cutoff_v=cv / 10,
        discharge_cutoff_v=dv / 10,
        max_charge_a=amps(cc),
        max_discharge_a=amps(dc),
        cell_v_max=vmax / 1000,
        cell_v_min=vmin / 1000,
        cell_v_max_no=vmax_no,
        cell_v_min_no=vmin_no,
        cell_t_max=temp(tmax),
        cell_t_min=temp(tmin),
        cell_t_max_no=tmax_no,
        cell_t_min_no=tmin_no,
        status=basic & 0x07,
        force_charge=bool(basic & 0x08),
        balance_charge=bool(basic & 0x10),
        cycles=cycles,
        errors=bits(err, ERRORS),
        alarms=bits(alm, BITS),
        protections=bits(prot, BITS),
        module_v=(mv[0] / 1000, mv[1] / 1000, mv[2], mv[3]),
        module_t=(temp(mt[0]), temp(mt[1]), mt[2], mt[3]),
        charge_forbidden=forbid[0],
        discharge_forbidden=forbid[1],
        fault_ext=data[0x4290 - 0x4210 + base][0],
    )


def by_id(frames: list[Frame], ids: list[int]) -> dict[int, bytes]:
    assert [f.id for f in frames] == ids
    assert all(f.extended and len(f.data) == 8 for f in frames)
    return {f.id: f.data for f in frames}


def enc(state: GatewayState, **kw: Any) -> Ensemble:
    opts = hv.HvOptions(**kw)
    base = 0x4210 + opts.address
    frames = hv.encode_ensemble(state, opts)
    order = "<" if opts.byte_order == "little" else ">"
    ids = [i + opts.address for i in ENSEMBLE]
    return decode_ensemble(by_id(frames, ids), order=order, offset_a=opts.current_offset_a, base=base)


SAFE = make_state(
    lim(400.0, 0.0, 0.0, 300.0, charge=False, discharge=False),
    (alarm(AlarmCode.COMM_LOST, AlarmLevel.FAULT),),
    statuses=(PackStatus.STALE,),
)


# --- frames out ---------------------------------------------------------------------------------------------


def test_captured_0x4220_frame_round_trips() -> None:
    """A real Pylontech HV pack's 0x4220 (Battery-Emulator#2019): 426.0 V, 336.0 V, +25 A, -25 A."""
    captured = bytes.fromhex("A4 10 20 0D 2A 76 36 74")
    frames = hv.encode_ensemble(make_state(lim(426.0, 25.0, 25.0, 336.0)), hv.HvOptions())
    assert frames[1] == Frame(0x4220, captured, True)
    cv, dv, cc, dc = struct.unpack("<HHHH", captured)
    assert (cv / 10, dv / 10, cc / 10 - 3000, dc / 10 - 3000) == (426.0, 336.0, 25.0, -25.0)


def test_ids_order_and_defaults() -> None:
    state = make_state(lim(420.0, 30.0, 40.0, 320.0), soc=0.84, soh=0.97, voltage=384.56, current=-12.34)
    d = enc(state)
    assert (d.voltage, d.current, d.bms_temperature, d.soc, d.soh) == (384.6, -12.3, 25.0, 84, 97)
    assert (d.charge_cutoff_v, d.discharge_cutoff_v, d.max_charge_a, d.max_discharge_a) == (
        420.0,
        320.0,
        30.0,
        -40.0,
    )
    assert (d.charge_forbidden, d.discharge_forbidden) == (0, 0)
    assert d.status == 2  # discharging
    assert (d.errors, d.alarms, d.protections, d.fault_ext) == (frozenset(), frozenset(), frozenset(), 0)


@pytest.mark.parametrize("order", ["little", "big"])
@pytest.mark.parametrize("offset", [3000.0, 0.0, 1000.0])
def test_byte_order_and_current_offset(order: hv.ByteOrder, offset: float) -> None:
    state = make_state(lim(420.0, 30.0, 40.0, 320.0), voltage=400.0, current=-55.5, temperature=-5.0)
    d = enc(state, byte_order=order, current_offset_a=offset)
    assert (d.voltage, d.current, d.bms_temperature) == (400.0, -55.5, -5.0)
    assert (d.max_charge_a, d.max_discharge_a) == (30.0, -40.0)
    raw = hv.encode_ensemble(state, hv.HvOptions(byte_order=order, current_offset_a=offset))[0].data
    assert raw[:2] == (4000).to_bytes(2, order)


def test_offset_zero_sends_twos_complement() -> None:
    frames = hv.encode_ensemble(make_state(current=-1.0), hv.HvOptions(current_offset_a=0.0))
    assert frames[0].data[2:4] == bytes.fromhex("F6 FF")  # -10 dA


def test_values_clamped_never_wrapped() -> None:
    huge = make_state(lim(1e9, 1e9, 1e9, -5.0), voltage=1e9, current=-1e9, temperature=1e9, soc=7.0, soh=-1.0)
    d = enc(huge)
    assert d.voltage == 6553.5
    assert d.current == -3000.0  # raw 0
    assert d.bms_temperature == 6453.5  # raw 0xFFFF
    assert (d.soc, d.soh) == (100, 0)
    assert (d.charge_cutoff_v, d.discharge_cutoff_v) == (6553.5, 0.0)
    assert (d.max_charge_a, d.max_discharge_a) == (3553.5, -3000.0)
    d0 = enc(huge, current_offset_a=0.0)
    assert (d0.current, d0.max_charge_a, d0.max_discharge_a) == (-3276.8, 3276.7, -3276.8)


def test_nan_encodes_as_physical_zero_and_unknown_temperature_as_25_c() -> None:
    nan = math.nan
    d = enc(make_state(lim(nan, nan, nan, nan), voltage=nan, current=nan, temperature=nan, soc=nan))
    assert (d.voltage, d.current, d.bms_temperature, d.soc) == (0.0, 0.0, 25.0, 0)
    assert (d.max_charge_a, d.max_discharge_a) == (0.0, 0.0)


@pytest.mark.parametrize(("charge", "discharge"), [(False, True), (True, False), (False, False)])
def test_disabled_direction_zero_current_and_forbidden_mark(charge: bool, discharge: bool) -> None:
    d = enc(make_state(lim(420.0, 30.0, 40.0, 320.0, charge=charge, discharge=discharge)))
    assert d.max_charge_a == (30.0 if charge else 0.0)
    assert d.max_discharge_a == (-40.0 if discharge else 0.0)
    assert d.charge_forbidden == (0 if charge else 0xAA)
    assert d.discharge_forbidden == (0 if discharge else 0xAA)


def test_zero_limit_is_forbidden_too() -> None:
    d = enc(make_state(lim(420.0, 0.0, 40.0, 320.0)))
    assert (d.charge_forbidden, d.discharge_forbidden) == (0xAA, 0)


def test_fail_safe_state() -> None:
    d = enc(SAFE)
    assert (d.max_charge_a, d.max_discharge_a) == (0.0, 0.0)
    assert (d.charge_forbidden, d.discharge_forbidden) == (0xAA, 0xAA)
    assert d.errors == {"internal_comm", "other"}
    assert d.charge_cutoff_v == 400.0  # never 0 V


@pytest.mark.parametrize(
    ("current", "status"), [(10.0, 1), (0.6, 1), (0.2, 3), (0.0, 3), (-0.4, 3), (-0.5, 2), (-80.0, 2)]
)
def test_basic_status(current: float, status: int) -> None:
    assert enc(make_state(current=current)).status == status


def test_request_bits() -> None:
    assert enc(make_state(lim(force_1=True))).force_charge
    assert enc(make_state(lim(force_2=True))).force_charge
    d = enc(make_state(lim(full=True)))
    assert d.balance_charge
    assert not d.force_charge


EXPECTED_BITS: dict[AlarmCode, frozenset[str]] = {
    AlarmCode.CELL_UNDERVOLTAGE: frozenset({"BLV"}),
    AlarmCode.CELL_OVERVOLTAGE: frozenset({"BHV"}),
    AlarmCode.PACK_UNDERVOLTAGE: frozenset({"PLV"}),
    AlarmCode.PACK_OVERVOLTAGE: frozenset({"PHV"}),
    AlarmCode.CHARGE_UNDERTEMPERATURE: frozenset({"CLT"}),
    AlarmCode.UNDERTEMPERATURE: frozenset({"CLT", "DLT"}),
    AlarmCode.OVERTEMPERATURE: frozenset({"CHT", "DHT"}),
    AlarmCode.THERMAL_RUNAWAY: frozenset({"CHT", "DHT"}),
    AlarmCode.CHARGE_OVERCURRENT: frozenset({"COCA"}),
    AlarmCode.DISCHARGE_OVERCURRENT: frozenset({"DOCA"}),
}


@pytest.mark.parametrize("code", list(AlarmCode))
@pytest.mark.parametrize("level", list(AlarmLevel))
def test_each_alarm_sets_exactly_its_bits(code: AlarmCode, level: AlarmLevel) -> None:
    d = enc(make_state(alarms=(alarm(code, level),)))
    bits = EXPECTED_BITS.get(code, frozenset())
    if level >= AlarmLevel.ALARM:
        assert (d.alarms, d.protections) == (frozenset(), bits)
    else:
        assert (d.alarms, d.protections) == (bits, frozenset())
    errors = set()
    if code is AlarmCode.COMM_LOST:
        errors.add("internal_comm")
    if level is AlarmLevel.FAULT or (
        level is AlarmLevel.ALARM and code in {AlarmCode.BMS_FAULT, AlarmCode.SENSOR_FAULT}
    ):
        errors.add("other")
    assert d.errors == errors


def _sample(pack: int, volts: float, temps: tuple[float, ...]) -> PackSample:
    return PackSample(pack, 0.0, np.full(16, volts / 16), np.array(temps), 0.0, volts)


def test_cell_and_module_extremes_and_numbers() -> None:
    state = make_state(
        statuses=(PackStatus.ONLINE, PackStatus.ONLINE, PackStatus.STALE),
        cell_v=(3.201, 3.456),
        cell_v_at=(CellRef(1, 4), CellRef(0, 15)),
        cell_t=(-2.5, 31.25),
        cell_t_at=(CellRef(1, 0), CellRef(0, 3)),
    )
    samples = (_sample(0, 52.0, (20.0, 31.25)), _sample(1, 51.5, (-2.5, 10.0)), _sample(2, 60.0, (99.0,)))
    state = replace(
        state, packs=tuple(replace(p, sample=s) for p, s in zip(state.packs, samples, strict=True))
    )
    d = enc(state, cells_per_pack=16, sensors_per_pack=4)
    assert (d.cell_v_min, d.cell_v_max, d.cell_v_min_no, d.cell_v_max_no) == (3.201, 3.456, 21, 16)
    assert (d.cell_t_min, d.cell_t_max, d.cell_t_min_no, d.cell_t_max_no) == (-2.5, 31.3, 5, 4)
    assert d.module_v == (52.0, 51.5, 1, 2)  # the stale pack 3 is not counted
    assert d.module_t == (31.3, -2.5, 1, 2)


def test_no_online_pack_module_frames_are_zero_and_temperatures_neutral() -> None:
    d = enc(SAFE)
    assert d.module_v == (0.0, 0.0, 0, 0)
    assert d.module_t == (25.0, 25.0, 0, 0)  # unknown: the neutral 25 °C, not 0 °C


def test_asleep_answers_sleep_with_no_current() -> None:
    state = make_state(lim(420.0, 30.0, 40.0, 320.0), current=5.0)
    opts = hv.HvOptions()
    frames = hv.encode_ensemble(state, opts, asleep=True)
    d = decode_ensemble(by_id(frames, ENSEMBLE))
    assert d.status == 0
    assert (d.max_charge_a, d.max_discharge_a, d.charge_forbidden, d.discharge_forbidden) == (
        0,
        0,
        0xAA,
        0xAA,
    )
    assert d.charge_cutoff_v == 420.0


def test_equipment_frames() -> None:
    opts = hv.HvOptions(
        manufacturer="PYLON",
        name="garage-battery",
        cells_per_pack=16,
        nominal_voltage=51.2,
        capacity_ah=300.0,
    )
    data = by_id(hv.encode_equipment(opts), EQUIPMENT)
    assert data[0x7310][4:6] == bytes(VERSION)  # software version major, minor
    assert struct.unpack("<HBBHH", data[0x7320]) == (16, 1, 16, 51, 300)
    assert data[0x7330] + data[0x7340] == b"PYLON\0\0\0garage-b"


def test_address_offset_moves_every_id() -> None:
    opts = hv.HvOptions(address=1)
    assert [f.id for f in hv.encode_ensemble(make_state(), opts)] == [i + 1 for i in ENSEMBLE]
    assert [f.id for f in hv.encode_equipment(opts)] == [i + 1 for i in EQUIPMENT]
    assert hv.encode_mask_reply(opts) == Frame(0x8251, bytes(8), True)


@settings(max_examples=300, deadline=None)
@given(state=states(), order=st.sampled_from(["little", "big"]), offset=st.sampled_from([0.0, 3000.0]))
def test_encode_fuzz_always_decodes(state: GatewayState, order: hv.ByteOrder, offset: float) -> None:
    d = enc(state, byte_order=order, current_offset_a=offset)
    assert 0 <= d.soc <= 100
    assert 0 <= d.soh <= 100
    assert d.status in (1, 2, 3)
    assert d.max_charge_a >= 0
    assert d.max_discharge_a <= 0
    if not state.limits.charge_enable:
        assert (d.max_charge_a, d.charge_forbidden) == (0, 0xAA)
    if not state.limits.discharge_enable:
        assert (d.max_discharge_a, d.discharge_forbidden) == (0, 0xAA)
    assert d.charge_forbidden == (0xAA if d.max_charge_a == 0 else 0)
    assert d.discharge_forbidden == (0xAA if d.max_discharge_a == 0 else 0)


# --- frames in ----------------------------------------------------------------------------------------------


def ext(fid: int, data: bytes) -> Frame:
    return Frame(fid, data, True)


def test_decode_requests_and_commands() -> None:
    assert hv.decode_inverter(ext(0x4200, bytes(8))) == hv.HvRequest(hv.RequestKind.ENSEMBLE)
    assert hv.decode_inverter(ext(0x4200, b"\x02" + bytes(7))) == hv.HvRequest(hv.RequestKind.EQUIPMENT)
    assert hv.decode_inverter(ext(0x8200, b"\x55" + bytes(7))) == hv.HvSleep(True)
    assert hv.decode_inverter(ext(0x8200, b"\xaa" + bytes(7))) == hv.HvSleep(False)
    assert hv.decode_inverter(ext(0x8200, b"\x01")) == hv.HvSleep(None)
    assert hv.decode_inverter(ext(0x8210, b"\xaa\x00")) == hv.HvChargeCommand(True, False)
    assert hv.decode_inverter(ext(0x8210, b"\x00\xaa" + bytes(6))) == hv.HvChargeCommand(False, True)
    assert hv.decode_inverter(ext(0x8240, b"\xaa")) == hv.HvMaskRequest(b"\xaa")


def test_commands_for_another_address_or_standard_ids_are_not_ours() -> None:
    assert hv.decode_inverter(ext(0x8201, b"\x55"), address=0) is None
    assert hv.decode_inverter(ext(0x8201, b"\x55"), address=1) == hv.HvSleep(True)
    assert hv.decode_inverter(ext(0x8200, b"\x55"), address=1) is None
    assert hv.decode_inverter(ext(0x4200, bytes(8)), address=3) == hv.HvRequest(hv.RequestKind.ENSEMBLE)
    assert hv.decode_inverter(Frame(0x4200, bytes(8))) is None  # 11-bit id
    assert hv.decode_inverter(ext(0x4210, bytes(8))) is None  # another battery's answer


@pytest.mark.parametrize(
    "frame", [ext(0x4200, b""), ext(0x4200, b"\x01"), ext(0x8200, b""), ext(0x8210, b"\xaa")]
)
def test_malformed_inverter_frames_are_codec_errors(frame: Frame) -> None:
    with pytest.raises(hv.CanCodecError):
        hv.decode_inverter(frame)


@given(
    fid=st.sampled_from([0x4200, 0x8200, 0x8201, 0x8210, 0x8240, 0x4210, 0x305, 0x1FFFFFFF]),
    data=st.binary(max_size=8),
    extended=st.booleans(),
    address=st.integers(0, 15),
)
def test_decode_inverter_random_bytes_only_codec_errors(
    fid: int, data: bytes, extended: bool, address: int
) -> None:
    try:
        got = hv.decode_inverter(Frame(fid, data, extended), address)
    except hv.CanCodecError:
        assert extended
        return
    assert got is None or isinstance(got, hv.HvRequest | hv.HvSleep | hv.HvChargeCommand | hv.HvMaskRequest)
    if not extended:
        assert got is None


# --- config -------------------------------------------------------------------------------------------------


def out_cfg(**kw: Any) -> OutputConfig:
    return OutputConfig(**{"protocol": "pylontech-hv-can", "interface": "virtual", "channel": "x", **kw})


def test_config_keys_and_registry() -> None:
    assert "pylontech-hv-can" in OUTPUTS
    cfg = out_cfg()
    assert (cfg.current_offset_a, cfg.byte_order, cfg.id_offset) == (3000.0, "little", 0)
    cfg = out_cfg(current_offset_a=0, byte_order="big", id_offset=1)
    assert (cfg.current_offset_a, cfg.byte_order, cfg.id_offset) == (0.0, "big", 1)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"byte_order": "middle"}, "'little' or 'big'"),
        ({"current_offset_a": -1}, "greater than or equal to 0"),
        ({"current_offset_a": 7000}, "less than or equal to 6553.5"),
        ({"current_offset_a": 3000.05}, "current_offset_a must be a multiple of 0.1 A"),
        ({"id_offset": 16}, "less than or equal to 15"),
        ({"protocol": "sma-can", "byte_order": "big"}, "byte_order applies to pylontech-hv-can only"),
        (
            {"protocol": "modbus-tcp", "id_offset": 0},
            "id_offset applies to pylontech-hv-can only, not modbus-tcp",
        ),
        (
            {"protocol": "modbus-rtu", "current_offset_a": 0},
            "current_offset_a applies to pylontech-hv-can only",
        ),
    ],
)
def test_config_errors_name_the_key(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as exc:
        out_cfg(**kw)
    assert message in str(exc.value)


def test_other_protocols_still_accept_their_configs() -> None:
    assert out_cfg(protocol="modbus-rtu", port="/dev/null").port == "/dev/null"
    assert out_cfg(protocol="sma-can").protocol == "sma-can"
    with pytest.raises(ValidationError, match="modbus-rtu needs port"):
        out_cfg(protocol="modbus-rtu")


# --- on a bus -----------------------------------------------------------------------------------------------


async def eventually(pred: Callable[[], bool], within: float = 5.0, why: Callable[[], str] = str) -> None:
    """Poll `pred` until it holds; fail after `within` wall seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if pred():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"condition not met within {within}s; {why()}")


@dataclass
class FakeInverter:
    """Plays the inverter: polls 0x4200 (optionally), keeps every frame it gets with its arrival time."""

    bus: AsyncCanBus
    got: list[tuple[Frame, float]] = field(default_factory=list)

    async def run(self) -> None:
        while True:
            msg = await self.bus.recv()
            frame = Frame(msg.arbitration_id, bytes(msg.data), msg.is_extended_id)
            self.got.append((frame, time.monotonic()))

    async def poll(self, period_s: float, kind: int = 0x00) -> None:
        while True:
            await self.bus.send(ext(0x4200, bytes((kind,)) + bytes(7)))
            await asyncio.sleep(period_s)

    def latest(self) -> dict[int, bytes]:
        return {f.id: f.data for f, _ in self.got}

    def last_answer(self, ids: list[int]) -> dict[int, bytes] | None:
        """The newest complete answer with exactly these ids in this order (never mixes two answers)."""
        frames = [f for f, _ in self.got]
        for end in range(len(frames) - len(ids), -1, -1):
            if [f.id for f in frames[end : end + len(ids)]] == ids:
                return {f.id: f.data for f in frames[end : end + len(ids)]}
        return None

    def ids(self) -> list[int]:
        return [f.id for f, _ in self.got]

    async def until(self, pred: Callable[[], bool], within: float = 5.0) -> None:
        await eventually(pred, within, lambda: f"got {[hex(i) for i in self.ids()[-20:]]}")

    async def ensemble(self, pred: Callable[[Ensemble], bool], within: float = 5.0, **kw: Any) -> Ensemble:
        """Newest complete ensemble answer for which `pred` holds."""
        last: list[Ensemble] = []

        def check() -> bool:
            data = self.last_answer([i + kw.get("base", 0x4210) - 0x4210 for i in ENSEMBLE])
            if data is None:
                return False
            last[:] = [decode_ensemble(data, **kw)]
            return pred(last[0])

        try:
            await self.until(check, within)
        except AssertionError:
            raise AssertionError(f"no matching answer within {within}s; last: {last}") from None
        return last[0]


@contextlib.asynccontextmanager
async def hv_on_bus(
    state: Callable[[], GatewayState], *, speed: float = SPEED, **cfg: Any
) -> AsyncIterator[tuple[PylontechHvCanOutput, FakeInverter]]:
    channel = f"hv-{uuid.uuid4()}"
    settings = rig_settings("unused", [])
    output = PylontechHvCanOutput(settings, out_cfg(channel=channel, **cfg), ScaledClock(speed), state)
    async with AsyncCanBus("virtual", channel) as bus:
        inverter = FakeInverter(bus)
        async with running(output.run, inverter.run):
            await asyncio.sleep(0.05)  # let the output open its bus
            yield output, inverter


async def test_answers_only_when_asked_with_a_gap_between_frames() -> None:
    state = make_state(lim(420.0, 30.0, 40.0, 320.0), voltage=400.0)
    async with hv_on_bus(lambda: state, speed=1.0) as (output, inverter):
        await asyncio.sleep(0.3)
        assert inverter.got == []  # nothing unasked
        await inverter.bus.send(ext(0x4200, bytes(8)))
        await inverter.until(lambda: len(inverter.got) == 9)
        await inverter.bus.send(ext(0x4200, b"\x02" + bytes(7)))
        await inverter.until(lambda: len(inverter.got) == 13)
        await asyncio.sleep(0.2)
    assert inverter.ids() == ENSEMBLE + EQUIPMENT
    assert all(f.extended and len(f.data) == 8 for f, _ in inverter.got)
    d = decode_ensemble(inverter.latest())
    assert (d.voltage, d.max_charge_a, d.max_discharge_a) == (400.0, 30.0, -40.0)
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(inverter.got)]
    assert min(gaps) >= hv.FRAME_GAP_S * 0.8, gaps  # generous for timer jitter
    assert (output.requests, output.answers, output.sent) == (2, 2, 13)


async def test_requests_during_an_answer_are_merged() -> None:
    state = make_state()
    async with hv_on_bus(lambda: state, speed=1.0) as (output, inverter):
        for _ in range(5):
            await inverter.bus.send(ext(0x4200, bytes(8)))
        await inverter.until(lambda: output.requests == 5)
        await inverter.until(lambda: len(inverter.got) >= 9)
        await asyncio.sleep(0.5)
    assert output.answers <= 2  # one in progress, at most one owed
    assert len(inverter.got) == 9 * output.answers


async def test_options_reach_the_bus_big_endian_offset_zero_address_one() -> None:
    state = make_state(lim(420.0, 30.0, 40.0, 320.0), current=-7.5)
    async with hv_on_bus(lambda: state, byte_order="big", current_offset_a=0, id_offset=1) as (_, inverter):
        await inverter.bus.send(ext(0x4200, bytes(8)))
        d = await inverter.ensemble(lambda d: True, order=">", offset_a=0.0, base=0x4211)
    assert (d.current, d.max_charge_a, d.max_discharge_a) == (-7.5, 30.0, -40.0)
    assert inverter.ids() == [i + 1 for i in ENSEMBLE]


async def test_sleep_wake_charge_command_and_mask_request() -> None:
    state = make_state(lim(420.0, 30.0, 40.0, 320.0))
    with capture_logs() as logs:
        async with hv_on_bus(lambda: state) as (output, inverter):
            await inverter.bus.send(ext(0x8200, b"\x55" + bytes(7)))
            await inverter.until(lambda: output.asleep)
            await inverter.bus.send(ext(0x4200, bytes(8)))
            asleep = await inverter.ensemble(lambda d: True)
            await inverter.bus.send(ext(0x8210, b"\xaa\xaa" + bytes(6)))  # cannot loosen anything
            await inverter.until(lambda: output.charge_command == hv.HvChargeCommand(True, True))
            await inverter.bus.send(ext(0x4200, bytes(8)))
            await inverter.until(lambda: output.answers == 2)
            await asyncio.sleep(0.05)
            still = decode_ensemble(inverter.latest())
            await inverter.bus.send(ext(0x8200, b"\xaa" + bytes(7)))
            await inverter.until(lambda: not output.asleep)
            inverter.got.clear()
            await inverter.bus.send(ext(0x4200, bytes(8)))
            awake = await inverter.ensemble(lambda d: True)
            await inverter.bus.send(ext(0x8240, b"\xaa" + bytes(7)))
            await inverter.until(lambda: 0x8250 in inverter.latest())
    assert (asleep.status, asleep.max_charge_a, asleep.max_discharge_a) == (0, 0.0, 0.0)
    assert (asleep.charge_forbidden, asleep.discharge_forbidden) == (0xAA, 0xAA)
    assert (still.status, still.max_charge_a, still.max_discharge_a) == (0, 0.0, 0.0)
    assert (awake.status, awake.max_charge_a, awake.max_discharge_a) == (3, 30.0, -40.0)
    assert inverter.latest()[0x8250] == bytes(8)  # 0x00: won't mask
    events = [e["event"] for e in logs]
    assert "inverter requested sleep: answering with zero currents" in events
    assert "inverter ended sleep" in events
    assert any(e.startswith("inverter charge/discharge command") for e in events)


async def test_garbage_counted_silence_tolerated() -> None:
    state = make_state()
    with capture_logs() as logs:
        async with hv_on_bus(lambda: state, speed=20.0) as (output, inverter):
            await inverter.bus.send(ext(0x4200, b""))
            await inverter.bus.send(ext(0x4200, b"\x07"))
            await inverter.bus.send(ext(0x8210, b"\xaa"))
            await inverter.bus.send(Frame(0x4200, bytes(8)))  # 11-bit: not ours, not an error
            await inverter.bus.send(ext(0x4200, bytes(8)))
            await inverter.until(lambda: len(inverter.got) == 9)
            assert output.inverter_present
            # The inverter stops polling: after 10 s of gateway time (0.5 s wall) it counts as gone.
            await inverter.until(lambda: not output.inverter_present, within=3.0)
            await asyncio.sleep(0.2)
            assert all(not t.done() for t in asyncio.all_tasks() if t is not asyncio.current_task())
    assert (output.rx_errors, output.received, output.requests) == (3, 5, 1)
    assert len(inverter.got) == 9
    events = [e["event"] for e in logs if e["event"].startswith("inverter")]
    assert events == ["inverter seen", "inverter silent"]


# --- end to end: fake pack → Gateway → HV output → fake inverter --------------------------------------------


@contextlib.asynccontextmanager
async def hv_rig(**out: Any) -> AsyncIterator[tuple[Gateway, PackModel, FakeInverter, FakeInverter]]:
    """Gateway with a pylontech-hv-can output (polled every gateway second) and a pylontech-can output."""
    pack_ch, hv_ch, lv_ch = (f"{k}-{uuid.uuid4()}" for k in ("pack", "hv", "lv"))
    outputs = [
        {"protocol": "pylontech-hv-can", "interface": "virtual", "channel": hv_ch, **out},
        {"protocol": "pylontech-can", "interface": "virtual", "channel": lv_ch},
    ]
    gateway = Gateway(rig_settings(pack_ch, outputs), ScaledClock(SPEED))
    pack = PackModel()
    async with contextlib.AsyncExitStack() as stack:
        pack_bus = await stack.enter_async_context(AsyncCanBus("virtual", pack_ch))
        hv_inv = FakeInverter(await stack.enter_async_context(AsyncCanBus("virtual", hv_ch)))
        lv_inv = FakeInverter(await stack.enter_async_context(AsyncCanBus("virtual", lv_ch)))
        async with running(
            gateway.run,
            lambda: run_fake_pack(pack_bus, pack, 0.1 / SPEED),
            hv_inv.run,
            lambda: hv_inv.poll(1.0 / SPEED),
            lv_inv.run,
        ):
            yield gateway, pack, hv_inv, lv_inv


async def test_e2e_fail_safe_link_loss_and_ramped_recovery() -> None:
    async with hv_rig(byte_order="big") as (gateway, pack, inverter, _):
        kw: dict[str, Any] = {"order": ">"}
        d = await inverter.ensemble(
            lambda d: d.max_charge_a == MAX_CHARGE and d.max_discharge_a == -MAX_DISCHARGE, **kw
        )
        assert d.voltage == pytest.approx(16 * 3.30, abs=0.1)
        assert d.current == pytest.approx(10.0, abs=0.1)
        assert d.status == 1
        assert (d.errors, d.protections, d.charge_forbidden, d.discharge_forbidden) == (
            frozenset(),
            frozenset(),
            0,
            0,
        )
        assert d.module_v[2:] == (1, 1)
        pack.silent = True
        lost_at = time.monotonic()
        lost = await inverter.ensemble(
            lambda d: d.max_charge_a == 0 and d.max_discharge_a == 0 and "internal_comm" in d.errors,
            within=(3.0 + 1.0) / SPEED + 2.0,
            **kw,
        )
        # Safe within stale_after_s (3 s) plus one poll period (1 s), with scheduling slack.
        assert (time.monotonic() - lost_at) * SPEED <= 3.0 + 1.0 + 2.0
        assert (lost.charge_forbidden, lost.discharge_forbidden) == (0xAA, 0xAA)
        assert lost.charge_cutoff_v > 0
        n = len(inverter.got)
        await asyncio.sleep(0.3)
        assert len(inverter.got) > n  # still answering in the safe state
        pack.silent = False
        mid = await inverter.ensemble(lambda d: 0 < d.max_charge_a < MAX_CHARGE, **kw)
        assert "internal_comm" not in mid.errors
        await inverter.ensemble(lambda d: d.max_charge_a == MAX_CHARGE, **kw)
        assert gateway.outputs[0].sent > 0


async def test_e2e_hv_and_lv_outputs_agree() -> None:
    async with hv_rig() as (_, pack, hv_inv, lv_inv):

        def agree(pred: Callable[[Ensemble], bool]) -> Callable[[Ensemble], bool]:
            def check(d: Ensemble) -> bool:
                lv = lv_inv.latest()
                if not {0x351, 0x355, 0x356, 0x359, 0x35C, 0x35E} <= lv.keys():
                    return False
                p = decode_pylon(lv)
                return pred(d) and (d.soc, d.max_charge_a, -d.max_discharge_a) == (p.soc, p.ccl, p.dcl)

            return check

        await hv_inv.ensemble(agree(lambda d: d.max_charge_a == MAX_CHARGE))
        pack.cell_v = np.full(16, 3.30)
        pack.cell_v[5] = 3.70  # cell over-voltage: charging stops on both
        await hv_inv.ensemble(agree(lambda d: d.max_charge_a == 0 and d.max_discharge_a == -MAX_DISCHARGE))
        d = await hv_inv.ensemble(lambda d: "BHV" in d.protections)
        assert d.charge_forbidden == 0xAA


def test_load_settings_with_hv_output() -> None:
    settings, _ = load_settings(
        None,
        {
            "outputs": [
                {
                    "protocol": "pylontech-hv-can",
                    "channel": "can1",
                    "current_offset_a": 0,
                    "byte_order": "big",
                }
            ]
        },
        env={},
    )
    out = settings.outputs[0]
    assert (out.protocol, out.current_offset_a, out.byte_order, out.id_offset) == (
        "pylontech-hv-can",
        0,
        "big",
        0,
    )


def test_example_is_valid_and_cli_names_bad_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    example = Path(__file__).parent.parent / "examples" / "pylontech-hv-can.toml"
    assert main(["config", "check", str(example)]) == 0
    bad = tmp_path / "bad.toml"
    bad.write_text(example.read_text().replace('byte_order = "little"', 'byte_order = "middle"'))
    assert main(["config", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "byte_order" in err
    assert "'little' or 'big'" in err


async def test_bus_that_cannot_open_is_retried_not_fatal() -> None:
    settings = rig_settings("unused", [])
    output = PylontechHvCanOutput(
        settings, out_cfg(interface="no-such-interface"), ScaledClock(20.0), make_state
    )
    with capture_logs() as logs:
        task = asyncio.create_task(output.run())
        await eventually(lambda: output.send_errors >= 2)
        assert not task.done()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert output.send_errors >= 2  # first try, then again after the 0.5 s backoff (25 ms at speed 20)
    assert sum(e["event"] == "inverter bus failed" for e in logs) == output.send_errors


async def test_answers_go_to_the_frame_log(tmp_path: Path) -> None:
    state = make_state()
    log = tmp_path / "hv.log"
    async with hv_on_bus(lambda: state, log=str(log)) as (_, inverter):
        await inverter.bus.send(ext(0x4200, b"\x02" + bytes(7)))
        await inverter.until(lambda: len(inverter.got) == 4)
    logged = [(m.arbitration_id, m.is_extended_id) for m in can.LogReader(str(log))]
    assert logged == [(i, True) for i in EQUIPMENT]
