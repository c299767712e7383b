"""Balancing on every telemetry surface: bleed masks and active transfers in /api/state, /metrics and MQTT.

End to end with a real Gateway in `[balancing] mode = "active"` and the built-in simulated pack (it runs the
transfers it receives as pack.dbc GatewayBalanceTransfer), a real HTTP client and a real mosquitto broker;
the fail-safe gate (`safe_transfers`) checked on hand-built states.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import jinja2
import numpy as np
import pytest
from mosquitto import Mosquitto
from prometheus_client.parser import text_string_to_metric_families
from test_sunspec import point

from bmsgw.app import Gateway
from bmsgw.clock import SteppedClock
from bmsgw.config import Settings, load_settings
from bmsgw.ems import Command
from bmsgw.inverter import modbus_map, sunspec
from bmsgw.inverter.sunspec import BANK, STRING
from bmsgw.model import (
    Alarm,
    AlarmCode,
    AlarmLevel,
    CellRef,
    Chemistry,
    GatewayState,
    Limit,
    Limits,
    PackSample,
    PackStatus,
    PackView,
    Reason,
    Transfer,
)
from bmsgw.sim import SimPack, SimPackConfig
from bmsgw.sources.simulator import SimulatedPacks, simulation_settings
from bmsgw.telemetry.ha_discovery import Topics, discovery_payload, state_payload
from bmsgw.telemetry.metrics import exposition
from bmsgw.telemetry.snapshot import state_dict
from bmsgw.telemetry.web import WebService

SPEED = 50.0
CURRENT_A = 0.5
ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)


class _Rest:
    """Load profile of a resting battery: only the balancer moves charge."""

    def demand(self, t: float) -> float:
        return 0.0


@dataclass
class SimRig:
    gateway: Gateway
    pack: SimPack
    soc0: np.ndarray
    states: dict[float, GatewayState]  # every published state by its t
    url: str | None


def _settings(tmp_path: Path, **extra: Any) -> Settings:
    base, _ = load_settings(
        None,
        {"gateway.name": f"gw-{uuid.uuid4().hex[:8]}", "gateway.state_dir": str(tmp_path),
         "packs": [{"id": "p", "source": "can", "cells": 4, "sensors": 1, "capacity_ah": 20.0}],
         "balancing": {"mode": "active", "transfer_current_a": CURRENT_A, "max_transfers": 1},
         "web": {"host": "127.0.0.1", "port": 0}, **extra},
        env={},
    )  # fmt: skip
    return simulation_settings(base, from_file=True)


@contextlib.asynccontextmanager
async def sim_rig(settings: Settings) -> AsyncIterator[SimRig]:
    """The gateway and its simulated pack at the top of charge, resting, cells ±1.5 % SOC apart."""
    clock = SteppedClock(SPEED)
    gw = Gateway(settings, clock)
    sim = SimulatedPacks(settings, clock, gw.state, lambda: math.inf, seed=1)
    # Seed 11: one clearly fullest cell (#2) and emptiest cell (#3), the pair stable for minutes at 0.5 A.
    pack = SimPack(SimPackConfig(4, Chemistry.LFP, 20.0, sensors=1, initial_soc=0.98, capacity_spread=0.0,
                                 soc_spread=0.015, resistance_spread=0.0, self_discharge_per_day=0.0,
                                 seed=11))  # fmt: skip
    sim.packs[0] = pack
    sim.profile = _Rest()  # type: ignore[assignment]
    states: dict[float, GatewayState] = {}
    gw.on_state(lambda s: states.__setitem__(s.t, s))
    web = next((s for s in gw.services if isinstance(s, WebService)), None)
    task = asyncio.create_task(gw.run(sim.run))
    try:
        url = await asyncio.wait_for(web.started(), 20) if web is not None else None
        yield SimRig(gw, pack, pack.soc_true, states, url)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _poll(fetch: Callable[[], Any], pred: Callable[[Any], bool], within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    last = None
    while time.monotonic() < deadline:
        last = await fetch()
        if pred(last):
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} not seen within {within}s; last: {last}")


def _metrics(text: str) -> dict[str, dict[str, float]]:
    """Metric name -> {pack label: value} for the per-pack families."""
    out: dict[str, dict[str, float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[s.labels.get("pack", "")] = s.value
    return out


async def test_api_state_and_metrics_show_the_transfers_the_gateway_commands(tmp_path: Path) -> None:
    async with sim_rig(_settings(tmp_path)) as rig, aiohttp.ClientSession() as http:

        async def api() -> dict[str, Any]:
            async with http.get(f"{rig.url}/api/state") as resp:
                assert resp.status == 200
                doc: dict[str, Any] = await resp.json()
                return doc

        async def metrics() -> dict[str, dict[str, float]]:
            async with http.get(f"{rig.url}/metrics") as resp:
                return _metrics(await resp.text())

        doc = await _poll(api, lambda d: d["packs"][0]["transfers"], 30, "a transfer in /api/state")
        pack = doc["packs"][0]
        # The fullest cell gives to the emptiest (cells from 1), at the configured current ...
        src, dst = int(np.argmax(rig.soc0)) + 1, int(np.argmin(rig.soc0)) + 1
        assert pack["transfers"] == [{"from_cell": src, "to_cell": dst, "current": CURRENT_A}]
        # ... exactly the plan on the state the document was made from; no bleeding in active mode.
        view = rig.states[doc["t"]].packs[0]
        assert [(t.source + 1, t.sink + 1, t.current_a) for t in view.transfers] == [(src, dst, CURRENT_A)]
        assert pack["balance_mask"] == 0
        assert pack["sample"]["balancing"] == [False] * 4

        m = await _poll(
            metrics, lambda m: m.get("bmsgw_pack_balancing_transfers", {}).get("p") == 1, 30, "metrics"
        )
        assert m["bmsgw_pack_balancing_transfer_current_amperes"]["p"] == CURRENT_A
        assert m["bmsgw_pack_balancing_cells"]["p"] == 0

        # The simulated pack does run it: charge leaves the from-cell and reaches the to-cell.
        async def moved() -> np.ndarray:
            return rig.pack.soc_true - rig.soc0

        delta = await _poll(moved, lambda d: d[src - 1] < -1e-6, 30, "charge leaving the from-cell")
        assert delta[dst - 1] > 0


async def test_mqtt_state_and_home_assistant_entities_show_transfers(
    tmp_path: Path, broker: Mosquitto
) -> None:
    settings = _settings(
        tmp_path,
        **{"web.enabled": False,
           "mqtt": {"enabled": True, "host": "127.0.0.1", "port": broker.port, "publish_interval_s": 1.0,
                    "discovery_prefix": f"ha-{uuid.uuid4().hex[:8]}"}},
    )  # fmt: skip
    topics = Topics.of(settings)
    docs: dict[str, list[dict[str, Any]]] = {topics.state: [], topics.discovery: []}

    async def listen(client: aiomqtt.Client) -> None:
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            docs[message.topic.value].append(json.loads(message.payload))

    async with aiomqtt.Client("127.0.0.1", broker.port, identifier=f"rec-{uuid.uuid4().hex[:8]}") as client:
        await client.subscribe(topics.state)
        await client.subscribe(topics.discovery)
        reader = asyncio.create_task(listen(client))
        try:
            async with sim_rig(settings) as rig:

                async def newest() -> dict[str, Any] | None:
                    return docs[topics.state][-1] if docs[topics.state] else None

                doc = await _poll(newest, lambda d: d and d["packs"][0]["transfers"], 30, "an MQTT transfer")
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    src, dst = int(np.argmax(rig.soc0)) + 1, int(np.argmin(rig.soc0)) + 1
    pack = doc["packs"][0]
    assert pack["transfers"] == [{"from_cell": src, "to_cell": dst, "current": CURRENT_A}]
    assert pack["transfer_current"] == CURRENT_A
    assert pack["balancing_cells"] == []
    # Home Assistant's side: the entities of the discovery config, rendered over that document.
    cmps = docs[topics.discovery][-1]["cmps"]
    on = cmps["pack_p_balancing"]
    assert on["p"] == "binary_sensor"
    assert ENV.from_string(on["value_template"]).render(value_json=doc) == "ON"
    attrs = json.loads(ENV.from_string(on["json_attributes_template"]).render(value_json=doc))
    assert attrs == {"cells": [], "transfers": pack["transfers"]}
    amps = cmps["pack_p_transfer_current"]
    assert (amps["device_class"], amps["unit_of_measurement"]) == ("current", "A")
    assert float(ENV.from_string(amps["value_template"]).render(value_json=doc)) == CURRENT_A


# --- the same vocabulary on hand-built states ------------------------------------------------------------


def _state(
    *, mask: int = 0, transfers: tuple[Transfer, ...] = (), alarms: tuple[Alarm, ...] = ()
) -> GatewayState:
    cells = np.array([3.45, 3.41, 3.40, 3.44])
    sample = PackSample(0, 9.5, cells, np.array([25.0]), current=0.0, voltage=float(cells.sum()))
    view = PackView(
        0, "p1", PackStatus.ONLINE, sample, soc=0.95, soh=1.0, balance_mask=mask, transfers=transfers
    )
    lim = Limits(Limit(14.2, Reason.CONFIG), Limit(10.0, Reason.CONFIG), Limit(10.0, Reason.CONFIG),
                 Limit(11.0, Reason.CONFIG), charge_enable=True, discharge_enable=True)  # fmt: skip
    at = CellRef(0, 0)
    return GatewayState(
        t=10.0, packs=(view,), soc=0.95, soh=1.0, voltage=13.7, current=0.0, temperature=25.0,
        cell_v_min=3.40, cell_v_max=3.45, cell_v_min_at=CellRef(0, 2), cell_v_max_at=at, cell_t_min=25.0,
        cell_t_max=25.0, cell_t_min_at=at, cell_t_max_at=at, limits=lim, alarms=alarms, capacity_ah=20.0,
    )  # fmt: skip


def _mqtt_settings(mode: str) -> Settings:
    s, _ = load_settings(
        None,
        {"packs": [{"id": "p1", "cells": 4, "sensors": 1}], "balancing.mode": mode, "mqtt.enabled": True},
        env={},
    )
    return s


TWO = (Transfer(0, 2, 2.0), Transfer(3, 1, 1.5))


def test_every_surface_shows_the_transfers_with_cells_from_1() -> None:
    state = _state(transfers=TWO)
    want = [{"from_cell": 1, "to_cell": 3, "current": 2.0}, {"from_cell": 4, "to_cell": 2, "current": 1.5}]
    assert state_dict(state)["packs"][0]["transfers"] == want
    mqtt = state_payload(state, _mqtt_settings("active"), 0.0, 0.0)["packs"][0]
    assert (mqtt["transfers"], mqtt["transfer_current"]) == (want, 3.5)
    m = _metrics(exposition(state, version="x", compiled=False))
    assert m["bmsgw_pack_balancing_transfers"]["p1"] == 2
    assert m["bmsgw_pack_balancing_transfer_current_amperes"]["p1"] == 3.5


@pytest.mark.parametrize(
    "alarm",
    [
        Alarm(AlarmCode.OVERTEMPERATURE, AlarmLevel.ALARM, 1.0, pack=0),
        Alarm(AlarmCode.COMM_LOST, AlarmLevel.ALARM, 1.0),
        Alarm(AlarmCode.CELL_UNDERVOLTAGE, AlarmLevel.FAULT, 1.0, pack=0),
    ],
)
def test_transfers_the_fail_safe_gate_stops_are_not_shown(alarm: Alarm) -> None:
    """What the CAN source would not send (safe_transfers) is not shown as running either."""
    state = _state(transfers=TWO, alarms=(alarm,))
    assert state.packs[0].transfers == TWO
    assert state_dict(state)["packs"][0]["transfers"] == []
    mqtt = state_payload(state, _mqtt_settings("active"), 0.0, 0.0)["packs"][0]
    assert (mqtt["transfers"], mqtt["transfer_current"]) == ([], 0.0)
    m = _metrics(exposition(state, version="x", compiled=False))
    assert m["bmsgw_pack_balancing_transfers"]["p1"] == 0
    assert m["bmsgw_pack_balancing_transfer_current_amperes"]["p1"] == 0


def test_warning_level_alarms_do_not_stop_transfers() -> None:
    state = _state(
        transfers=TWO[:1], alarms=(Alarm(AlarmCode.CELL_IMBALANCE, AlarmLevel.ALARM, 1.0, pack=0),)
    )
    assert state_dict(state)["packs"][0]["transfers"] == [{"from_cell": 1, "to_cell": 3, "current": 2.0}]


def _modbus_and_sunspec_balancing(state: GatewayState) -> tuple[int, int, int]:
    """(bmsgw map balance_mask, SunSpec 803 NCellBal, 804 NCellBal) as an EMS reads them."""
    block = modbus_map.encode_pack(state.packs[0], state, state.t, 20.0)
    reg = next(r for r in modbus_map.PACK if r.name == "balance_mask")
    mask = block[reg.offset] << 16 | block[reg.offset + 1]
    image = sunspec.encode(state, sunspec.Identity(), Command())
    addr = sunspec.model_addresses(1)
    return mask, point(image, addr["803"], BANK, "NCellBal"), point(image, addr["804.0"], STRING, "NCellBal")


def test_modbus_and_sunspec_count_cells_in_transfers_as_balancing() -> None:
    # cell 2 bleeds; transfers 1 -> 3 and 4 -> 2: every cell is being balanced
    assert _modbus_and_sunspec_balancing(_state(mask=0b0010, transfers=TWO)) == (0b1111, 4, 4)
    assert _modbus_and_sunspec_balancing(_state(mask=0b0010)) == (0b0010, 1, 1)
    assert _modbus_and_sunspec_balancing(_state(transfers=TWO[:1])) == (0b0101, 2, 2)
    stopped = _state(mask=0b0010, transfers=TWO, alarms=(Alarm(AlarmCode.COMM_LOST, AlarmLevel.ALARM, 1.0),))
    assert _modbus_and_sunspec_balancing(stopped) == (0b0010, 1, 1)  # the gate stops the transfers only


@pytest.mark.parametrize(
    ("mode", "keys"),
    [
        ("off", set()),
        ("passive", {"pack_p1_balancing"}),
        ("active", {"pack_p1_balancing", "pack_p1_transfer_current"}),
    ],
)
def test_balancing_entities_follow_the_mode(mode: str, keys: set[str]) -> None:
    s = _mqtt_settings(mode)
    cmps = discovery_payload(s, Topics.of(s))["cmps"]
    assert {k for k in cmps if re.fullmatch(r"pack_p1_(balancing|transfer_current)", k)} == keys


def test_passive_bleeding_in_the_mqtt_document_and_entity() -> None:
    s = _mqtt_settings("passive")
    on = discovery_payload(s, Topics.of(s))["cmps"]["pack_p1_balancing"]
    doc = json.loads(json.dumps(state_payload(_state(mask=0b1001), s, 0.0, 0.0)))
    assert doc["packs"][0]["balancing_cells"] == [1, 4]
    assert ENV.from_string(on["value_template"]).render(value_json=doc) == "ON"
    assert json.loads(ENV.from_string(on["json_attributes_template"]).render(value_json=doc)) == {
        "cells": [1, 4],
        "transfers": [],
    }
    idle = json.loads(json.dumps(state_payload(_state(), s, 0.0, 0.0)))
    assert ENV.from_string(on["value_template"]).render(value_json=idle) == "OFF"
    never = replace(_state(), packs=(replace(_state().packs[0], sample=None, status=PackStatus.NEVER_SEEN),))
    assert state_payload(never, s, 0.0, 0.0)["packs"][0]["transfer_current"] is None
