"""`pylontech-can` / `sma-can` as pack sources: a battery that already speaks an inverter protocol, read on
its own python-can `virtual` bus by a real Gateway that re-emits it as Victron CAN. Real US5000 frames
(tests/fixtures/bms/SOURCES.md), the pack representation without cell vectors, the battery's own limits
binding the gateway's (never exceeded), staleness, config rules and random frames."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fakes import alarm, lim, make_state, running
from hypothesis import given
from hypothesis import strategies as st
from lvcan_spec import VICTRON_DLC, Core, VictronExtra, decode_victron
from test_serial_sources import until

from bmsgw.app import Gateway
from bmsgw.bms import lv_can
from bmsgw.bms_request import bind_requests
from bmsgw.clock import ScaledClock
from bmsgw.config import ConfigError, Settings, load_settings
from bmsgw.inverter import pylontech_can, sma_can, victron_can
from bmsgw.model import AlarmCode, BmsFlags, BmsRequest, Frame, GatewayState, PackSample, PackStatus, Reason
from bmsgw.sources.inverter_can import KEEPALIVE, InverterCanSource
from bmsgw.transport.can_bus import AsyncCanBus

SPEED = 10.0
FIXTURES = Path(__file__).parent / "fixtures" / "bms" / "lv_can.txt"


def golden() -> dict[str, Frame]:
    out = {}
    for line in FIXTURES.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            label, _, hexed = line.partition("=")
            label = label.strip()
            out[label] = Frame(int(label.rsplit("_", 1)[1], 16), bytes.fromhex(hexed))
    return out


GOLDEN = golden()


def battery_from(protocol: str, frames: list[Frame]) -> lv_can.LvBattery:
    b = lv_can.LvBattery()
    for f in frames:
        fields = lv_can.decode(protocol, f)
        assert fields is not None, hex(f.id)
        b = dataclasses.replace(b, **fields)
    return b


def test_real_us5000_v12_frames() -> None:
    b = battery_from("pylontech-can", [f for k, f in GOLDEN.items() if k.startswith("us5000_v12")])
    assert (b.cvl, b.ccl, b.dcl, b.dvl) == (53.2, 480.0, 480.0, 45.0)
    assert (b.soc, b.soh) == (0.88, 0.94)
    assert (b.voltage, b.current, b.temperature) == (49.86, -27.0, 36.3)
    assert (b.flags, b.modules, b.manufacturer) == (BmsFlags.NONE, 6, "PYLON")
    assert (b.charge_enable, b.discharge_enable) == (True, True)
    r = lv_can.reading(b, 15, 1)
    assert r.cell_v == pytest.approx((49.86 / 15,) * 15)
    assert (r.cell_t, r.current, r.voltage, r.soc_reported) == ((36.3,), -27.0, 49.86, 0.88)
    assert lv_can.request(b) == BmsRequest(53.2, 480.0, 480.0, 45.0, True, True)


def test_real_us5000_v13_frames() -> None:
    b = battery_from("pylontech-can", [f for k, f in GOLDEN.items() if k.startswith("us5000_v13")])
    assert (b.cvl, b.ccl, b.dcl, b.dvl) == (52.8, 480.0, 480.0, 45.0)
    assert (b.soc, b.soh) == (0.84, 0.96)  # 0x355 of 6 bytes: the V1.2 fields
    assert (b.voltage, b.current, b.temperature) == (49.87, -27.9, 36.3)
    assert b.flags == BmsFlags.NONE  # 0x35A: nothing supported, nothing active


def test_short_v12_frames_carry_what_fits() -> None:
    six = Frame(0x351, GOLDEN["us5000_v12_351"].data[:6])  # Pylontech V1.2 defines bytes 0-5 only
    assert lv_can.decode("pylontech-can", six) == {"cvl": 53.2, "ccl": 480.0, "dcl": 480.0, "dvl": None}
    with pytest.raises(lv_can.LvCanError):
        lv_can.decode("pylontech-can", Frame(0x351, b"\x14"))
    assert lv_can.decode("pylontech-can", Frame(0x305, bytes(8))) is None  # the inverter's keepalive
    assert lv_can.decode("sma-can", Frame(0x351, bytes(8), extended=True)) is None


def test_protection_flags_and_alarm_pairs() -> None:
    state = make_state(lim())
    hot = dataclasses.replace(
        state, alarms=(alarm(AlarmCode.OVERTEMPERATURE), alarm(AlarmCode.CELL_UNDERVOLTAGE))
    )
    for protocol, encode in (("pylontech-can", pylontech_can.encode), ("sma-can", sma_can.encode)):
        b = battery_from(protocol, [f for f in encode(hot) if lv_can.decode(protocol, f) is not None])
        assert BmsFlags.ALARM_OVERTEMP | BmsFlags.ALARM_CELL_UV in b.flags, protocol
        b = battery_from(protocol, [f for f in encode(state) if lv_can.decode(protocol, f) is not None])
        assert b.flags == BmsFlags.NONE, protocol


def test_cells_from_min_max_add_up_to_the_pack_voltage() -> None:
    b = lv_can.LvBattery(voltage=52.8, current=0.0, cell_v_min=3.25, cell_v_max=3.40)
    cells = lv_can.cells_for(b, 16)
    assert (min(cells), max(cells)) == (3.25, 3.40)
    assert sum(cells) == pytest.approx(52.8)
    assert lv_can.cells_for(b, 1) == (52.8,)
    odd = dataclasses.replace(b, voltage=60.0)  # implausible sum: the rest stays within min..max
    assert max(lv_can.cells_for(odd, 16)) == 3.40


@given(st.integers(0, 0x7FF), st.binary(max_size=8), st.sampled_from(lv_can.PROTOCOLS))
def test_random_frames_never_raise_anything_but_the_codec_error(fid: int, data: bytes, protocol: str) -> None:
    with contextlib.suppress(lv_can.LvCanError):
        lv_can.decode(protocol, Frame(fid, data))


# --- the battery's own limits bind -----------------------------------------------------------------------


def sample(pack: int, current: float, request: BmsRequest | None) -> PackSample:
    z = np.zeros(1)
    return PackSample(pack, 0.0, z + 3.3, z, current, 3.3, request=request)


def test_requests_bind_with_reason_and_never_loosen() -> None:
    base = lim(cvl=56.0, ccl=100.0, dcl=150.0, dvl=46.0)
    got = bind_requests(base, [sample(0, 0.0, BmsRequest(cvl=55.2, ccl=40.0, dcl=200.0, dvl=48.0))])
    assert (got.cvl.value, got.ccl.value, got.dcl.value, got.dvl.value) == (55.2, 40.0, 150.0, 48.0)
    assert got.cvl.reason is got.ccl.reason is got.dvl.reason is Reason.BMS_REQUEST
    assert got.dcl.reason is Reason.CONFIG  # 200 A allowed by the battery: the gateway's 150 A stays
    off = bind_requests(base, [sample(0, 0.0, BmsRequest(ccl=40.0, charge_enable=False))])
    assert (off.ccl.value, off.charge_enable, off.discharge_enable) == (0.0, False, True)
    assert bind_requests(base, [sample(0, 0.0, None)]) is base


def test_parallel_requests_divide_by_the_share() -> None:
    base = lim(ccl=500.0, dcl=500.0)
    packs = [sample(0, 0.0, BmsRequest(ccl=40.0)), sample(1, 0.0, BmsRequest(ccl=100.0))]
    assert bind_requests(base, packs).ccl.value == pytest.approx(80.0)  # equal shares: 2 × weakest
    measured = bind_requests(base, packs, [0.25, 0.75])  # pack 0 carries a quarter
    assert measured.ccl.value == pytest.approx(min(40.0 / 0.25, 100.0 / 0.75))


# --- end to end: battery on one bus, gateway re-emitting Victron CAN on another ---------------------------


@dataclasses.dataclass
class Battery:
    """Plays a battery speaking `protocol` on its bus: one frame set every 0.1 s wall (1 s gateway)."""

    bus: AsyncCanBus
    encode: Callable[[GatewayState], list[Frame]]
    state: GatewayState
    send_limits: bool = True
    keepalives: int = 0

    async def run(self) -> None:
        while True:
            for f in self.encode(self.state):
                if f.id != 0x351 or self.send_limits:
                    await self.bus.send(f)
            while (msg := self.bus.recv_nowait()) is not None:
                self.keepalives += msg.arbitration_id == KEEPALIVE.id and bytes(msg.data) == KEEPALIVE.data
            await asyncio.sleep(0.1)


@dataclasses.dataclass
class Rig:
    gateway: Gateway
    battery: Battery
    out: AsyncCanBus
    latest: dict[int, bytes]

    def victron(self) -> tuple[Core, VictronExtra] | None:
        if not set(VICTRON_DLC) <= self.latest.keys():
            return None
        return decode_victron(self.latest)


def settings(protocol: str, channel: str, out_channel: str, **pack: Any) -> Settings:
    s, _ = load_settings(
        None,
        {
            "packs": [{"id": "bat", "source": protocol, "port": channel, "cells": 16, "sensors": 1,
                       "capacity_ah": 100, **pack}],
            "can": {"interface": "virtual", "channel": f"unused-{uuid.uuid4()}"},
            "outputs": [{"protocol": "victron-can", "interface": "virtual", "channel": out_channel}],
            "gateway.stale_after_s": 3.0,
            "gateway.recovery_ramp_s": 0.0,
            "gateway.step_period_s": 0.1,
            "web": {"enabled": False},
            "limits": {"max_charge_current_a": 200.0, "max_discharge_current_a": 200.0},
        },
        env={},
    )  # fmt: skip
    return s


@contextlib.asynccontextmanager
async def rig(protocol: str, encode: Callable[[GatewayState], list[Frame]], state: GatewayState,
              **pack: Any) -> AsyncIterator[Rig]:  # fmt: skip
    bat_ch, out_ch = f"bat-{uuid.uuid4()}", f"inv-{uuid.uuid4()}"
    gateway = Gateway(settings(protocol, bat_ch, out_ch, **pack), ScaledClock(SPEED))
    (source,) = gateway.sources
    assert isinstance(source, InverterCanSource)
    async with AsyncCanBus("virtual", bat_ch) as bat_bus, AsyncCanBus("virtual", out_ch) as out_bus:
        battery = Battery(bat_bus, encode, state)
        latest: dict[int, bytes] = {}

        async def listen() -> None:
            while True:
                msg = await out_bus.recv()
                latest[msg.arbitration_id] = bytes(msg.data)

        async with running(gateway.run, battery.run, listen):
            yield Rig(gateway, battery, out_bus, latest)


def battery_state(**kw: Any) -> GatewayState:
    limits = kw.pop("limits", lim(cvl=55.2, ccl=45.0, dcl=90.0, dvl=47.0))
    return make_state(limits, voltage=52.8, current=-12.3, temperature=23.0, soc=0.66, **kw)


async def test_pylontech_battery_re_emitted_as_victron_within_its_own_limits() -> None:
    async with rig("pylontech-can", pylontech_can.encode, battery_state()) as r:
        await until(lambda: r.gateway.state().packs[0].status is PackStatus.ONLINE, within=10.0)
        s = r.gateway.state()
        pack = s.packs[0].sample
        assert pack is not None
        assert list(pack.cell_v) == pytest.approx([52.8 / 16] * 16)  # no cell vector: pack V / cells
        assert list(pack.cell_t) == pytest.approx([23.0])
        assert (pack.current, pack.voltage, pack.soc_reported) == pytest.approx((-12.3, 52.8, 0.66))
        assert pack.request == BmsRequest(55.2, 45.0, 90.0, 47.0, True, True)
        await until(lambda: r.gateway.state().limits.ccl.reason is Reason.BMS_REQUEST, within=10.0)
        lim_ = r.gateway.state().limits
        assert (lim_.ccl.value, lim_.dcl.value) == (45.0, 90.0)
        assert lim_.cvl.value <= 55.2
        assert lim_.dvl.value >= 47.0

        def out_within(ccl: float, dcl: float) -> bool:
            v = r.victron()
            return v is not None and v[0].ccl == pytest.approx(ccl) and v[0].dcl == pytest.approx(dcl)

        await until(lambda: out_within(45.0, 90.0), within=10.0)
        core, _ = r.victron() or (None, None)
        assert core is not None
        assert core.cvl <= 55.2 + 1e-6
        assert core.current == pytest.approx(-12.3, abs=0.1)
        assert r.battery.keepalives >= 1  # the gateway plays the inverter's 0x305 towards the battery

        # the battery tightens, then stops charging: the re-emitted limits follow
        r.battery.state = battery_state(limits=lim(cvl=55.2, ccl=10.0, dcl=90.0, dvl=47.0))
        await until(lambda: out_within(10.0, 90.0), within=10.0)
        r.battery.state = battery_state(limits=lim(cvl=55.2, ccl=10.0, dcl=90.0, dvl=47.0, charge=False))
        await until(lambda: out_within(0.0, 90.0), within=10.0)

        # the battery stops sending its limits: no sample, the pack goes stale, everything to zero
        r.battery.send_limits = False
        await until(lambda: r.gateway.state().packs[0].status is PackStatus.STALE, within=10.0)
        await until(lambda: out_within(0.0, 0.0), within=10.0)


async def test_victron_style_battery_with_cell_extremes_over_sma_can() -> None:
    def encode(state: GatewayState) -> list[Frame]:  # SMA frames plus Victron's 0x373 min/max
        return [*sma_can.encode(state), *(f for f in victron_can.encode(state) if f.id == 0x373)]

    state = battery_state(cell_v=(3.28, 3.36), cell_t=(21.0, 26.0))
    async with rig("sma-can", encode, state, sensors=2) as r:

        def extremes_seen() -> bool:  # the first 0x356 may come before the first 0x373
            s = r.gateway.state().packs[0].sample
            return s is not None and float(max(s.cell_v)) == pytest.approx(3.36)

        await until(extremes_seen, within=10.0)
        pack = r.gateway.state().packs[0].sample
        assert pack is not None
        assert (min(pack.cell_v), max(pack.cell_v)) == pytest.approx((3.28, 3.36))
        assert float(sum(pack.cell_v)) == pytest.approx(52.8)
        assert list(pack.cell_t) == pytest.approx([20.85, 25.85])  # 0x373 carries whole kelvin
        s = r.gateway.state()
        assert (s.cell_v_min, s.cell_v_max) == pytest.approx((3.28, 3.36))
        await until(lambda: r.gateway.state().limits.ccl.value == 45.0, within=10.0)
        assert r.battery.keepalives == 0  # SMA batteries get no Pylontech keepalive


@pytest.mark.parametrize(
    ("packs", "message"),
    [
        ([{"source": "pylontech-can", "sensors": 4}], "report at most 2 temperatures"),
        ([{"source": "sma-can", "address": 3}], "batteries have no address"),
        ([{"source": "sma-can", "port": "can1"}, {"source": "pylontech-can", "port": "can1"}],
         "one pylontech-can battery per CAN bus; packs[0] reads it"),
        ([{"source": "can"}, {"source": "pylontech-can"}], "the 'can' packs use the [can] bus"),
    ],
)  # fmt: skip
def test_config_rules(packs: list[dict[str, Any]], message: str) -> None:
    entries = [{"id": f"p{i}", **p} for i, p in enumerate(packs)]
    with pytest.raises(ConfigError) as err:
        load_settings(None, {"packs": entries}, env={})
    assert message in "\n".join(err.value.problems)
