"""MQTT service against a real mosquitto broker: a Gateway fed by a fake pack on a virtual CAN bus.

Gating discovery on first data, retained device config, state equal to the GatewayState, problem sensors on
alarms, last will on an abrupt loss, re-announce on Home Assistant's birth message, broker restarts,
credentials and TLS. HA's side is played by an aiomqtt client subscribed to `#`, reading entity values with
the very templates from the discovery config (rendered by Jinja2, as HA does).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import jinja2
import numpy as np
import pytest
from fakes import PackModel, run_fake_pack
from mosquitto import Mosquitto, Proxy, TlsFiles
from structlog.testing import capture_logs

from bmsgw.app import Gateway
from bmsgw.clock import ScaledClock
from bmsgw.config import Settings, load_settings
from bmsgw.telemetry.ha_discovery import Topics
from bmsgw.telemetry.mqtt import MqttService
from bmsgw.transport.can_bus import AsyncCanBus

SPEED = 10.0  # gateway time runs 10x wall time: publish_interval_s 1.0 = 0.1 s wall
MAX_CHARGE, MAX_DISCHARGE = 50.0, 80.0
UNREACHABLE = "mqtt broker unreachable; retrying"


class Recorder:
    """Everything the broker routes to a `#` subscriber, in arrival order."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.messages: list[aiomqtt.Message] = []

    async def run(self) -> None:
        with contextlib.suppress(aiomqtt.MqttError):  # the broker went away: stop recording
            async for message in self.client.messages:
                self.messages.append(message)

    def on(self, topic: str, after: int = 0) -> list[aiomqtt.Message]:
        return [m for m in self.messages[after:] if m.topic.value == topic]

    async def until(
        self,
        topic: str,
        payload: bytes | None = None,
        pred: Callable[[Any], bool] | None = None,
        *,
        after: int = 0,
        within: float = 5.0,
    ) -> aiomqtt.Message:
        """The first message on `topic` at index >= `after` with that payload / whose JSON satisfies pred."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for m in self.on(topic, after):
                raw = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
                if payload is not None and raw != payload:
                    continue
                if pred is not None and not pred(json.loads(raw)):
                    continue
                return m
            await asyncio.sleep(0.01)
        seen = [(m.topic.value, m.payload) for m in self.on(topic, after)][-3:]
        raise AssertionError(f"no matching message on {topic} within {within}s; last: {seen}")


@contextlib.asynccontextmanager
async def recorder(port: int, **client_kw: Any) -> AsyncIterator[Recorder]:
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"rec-{uuid.uuid4().hex[:8]}", **client_kw) as c:
        await c.subscribe("#", qos=1)
        rec = Recorder(c)
        task = asyncio.create_task(rec.run())
        try:
            yield rec
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def retained(port: int, topic: str, **client_kw: Any) -> bytes:
    """What a client connecting now receives from the broker's retained store for `topic`."""
    async with recorder(port, **client_kw) as rec:
        message = await rec.until(topic, within=3.0)
        assert message.retain
        assert isinstance(message.payload, bytes)
        return message.payload


@dataclass
class Rig:
    gateway: Gateway
    service: MqttService
    pack: PackModel
    rec: Recorder
    topics: Topics
    tasks: list[asyncio.Task[None]]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def config(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.rec.on(self.topics.discovery)[-1].payload)  # type: ignore[arg-type]
        return doc

    def entity(self, key: str, state: dict[str, Any]) -> str:
        """What HA shows for entity `key` given a state document (its value_template, rendered)."""
        template = self.config()["cmps"][key]["value_template"]
        return jinja2.Environment(autoescape=False).from_string(template).render(value_json=state)


def settings_for(pack_channel: str, mqtt: dict[str, Any]) -> Settings:
    cli: dict[str, Any] = {
        "gateway.name": f"gw-{uuid.uuid4().hex[:8]}",
        "packs": [{"id": "p1", "cells": 16, "sensors": 4, "chemistry": "lfp", "capacity_ah": 100}],
        "can": {"interface": "virtual", "channel": pack_channel},
        "gateway.stale_after_s": 3.0,
        "gateway.recovery_ramp_s": 5.0,
        "gateway.step_period_s": 0.1,
        "limits": {"max_charge_current_a": MAX_CHARGE, "max_discharge_current_a": MAX_DISCHARGE},
        "mqtt": {
            "enabled": True,
            "host": "127.0.0.1",
            "discovery_prefix": f"ha-{uuid.uuid4().hex[:8]}",  # each test its own HA
            "publish_interval_s": 1.0,
            **mqtt,
        },
    }
    if "web" in Settings.model_fields:
        cli["web.enabled"] = False  # no HTTP server on a fixed port from these tests
    settings, _ = load_settings(None, cli, env={})
    return settings


@contextlib.asynccontextmanager
async def rig(
    port: int, *, silent: bool = False, rec_port: int | None = None, rec_kw: dict[str, Any] | None = None,
    **mqtt: Any,
) -> AsyncIterator[Rig]:  # fmt: skip
    pack_ch = f"pack-{uuid.uuid4()}"
    settings = settings_for(pack_ch, {"port": port, **mqtt})
    gateway = Gateway(settings, ScaledClock(SPEED))
    service = next(s for s in gateway.services if isinstance(s, MqttService))
    pack = PackModel(silent=silent)
    async with recorder(rec_port or port, **(rec_kw or {})) as rec, AsyncCanBus("virtual", pack_ch) as bus:
        tasks = [
            asyncio.create_task(gateway.run()),
            asyncio.create_task(run_fake_pack(bus, pack, 0.1 / SPEED)),
        ]
        r = Rig(gateway, service, pack, rec, Topics.of(settings), tasks)
        try:
            yield r
        finally:
            await r.stop()


def parsed(message: aiomqtt.Message) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(message.payload)  # type: ignore[arg-type]
    return doc


def test_disabled_by_default_builds_no_service() -> None:
    settings, _ = load_settings(
        None, {"web.enabled": False} if "web" in Settings.model_fields else {}, env={}
    )
    assert not any(isinstance(s, MqttService) for s in Gateway(settings).services)


async def test_nothing_before_data_then_retained_discovery_state_and_offline_on_shutdown(
    broker: Mosquitto,
) -> None:
    async with rig(broker.port, silent=True) as r:
        t = r.topics
        await r.rec.until(t.availability, b"online")
        await asyncio.sleep(1.0)  # ten publish intervals with no pack data
        assert r.rec.on(t.discovery) == []
        assert r.rec.on(t.state) == []
        r.pack.silent = False

        first_config = await r.rec.until(t.discovery)
        first_state = await r.rec.until(t.state)
        assert r.rec.messages.index(first_config) < r.rec.messages.index(first_state)
        config = parsed(first_config)
        assert json.loads(await retained(broker.port, t.discovery)) == config
        assert await retained(broker.port, t.availability) == b"online"
        assert config["dev"]["name"] == r.gateway.settings.gateway.name
        assert config["state_topic"] == t.state
        assert config["availability"][0]["topic"] == t.availability
        cmps = config["cmps"]
        node = t.node.removeprefix("bmsgw_")
        assert {k: c["unique_id"] for k, c in cmps.items()} == {k: f"bmsgw_{node}_{k}" for k in cmps}
        for key, dc, unit, sc in [
            ("soc", "battery", "%", "measurement"),
            ("voltage", "voltage", "V", "measurement"),
            ("current", "current", "A", "measurement"),
            ("power", "power", "W", "measurement"),
            ("temperature", "temperature", "°C", "measurement"),
            ("ccl", "current", "A", "measurement"),
            ("energy_charged", "energy", "kWh", "total_increasing"),
        ]:
            c = cmps[key]
            assert (c["device_class"], c["unit_of_measurement"], c["state_class"]) == (dc, unit, sc), key
        cells = [k for k in cmps if k.startswith("pack_p1_cell_")]
        assert len(cells) == 16
        assert all(cmps[k]["enabled_by_default"] is False for k in cells)
        assert "enabled_by_default" not in cmps["soc"]

        # Once the recovery ramp is over the state is steady: compare it with the gateway's own state.
        doc = parsed(await r.rec.until(t.state, pred=lambda d: d["ccl"] == MAX_CHARGE, within=5.0))
        state = r.gateway.state()
        assert doc["usable"] is True
        assert doc["voltage"] == pytest.approx(state.voltage, abs=1e-3) == pytest.approx(16 * 3.30)
        assert doc["current"] == pytest.approx(state.current) == pytest.approx(10.0)
        assert doc["power"] == pytest.approx(state.voltage * state.current, abs=0.1)
        assert doc["temperature"] == pytest.approx(state.temperature) == pytest.approx(25.0)
        assert (
            doc["cell_v_min"] == doc["cell_v_max"] == pytest.approx(state.cell_v_max) == pytest.approx(3.30)
        )
        assert doc["soc"] == pytest.approx(state.soc * 100, abs=0.1)
        assert doc["cvl"] == pytest.approx(state.limits.cvl.value, abs=1e-3)
        assert doc["dcl"] == MAX_DISCHARGE
        assert doc["packs"][0]["cell_v"] == [3.3] * 16
        assert r.entity("alarm_comm_lost", doc) == "OFF"
        assert r.entity("charge_enable", doc) == "ON"
        assert r.entity("soc", doc) == str(doc["soc"])

        mark = len(r.rec.messages)
        await r.stop()  # clean shutdown
        await r.rec.until(t.availability, b"offline", after=mark)
    assert await retained(broker.port, r.topics.availability) == b"offline"


async def test_alarm_is_a_problem_sensor_on_then_off_published_on_change(broker: Mosquitto) -> None:
    # A 10-minute publish interval (60 s wall): anything within the test came from an alarm change.
    async with rig(broker.port, publish_interval_s=600.0) as r:
        t = r.topics
        await r.rec.until(t.state)
        r.pack.cell_v = np.full(16, 3.30)
        r.pack.cell_v[5] = 3.70
        on = parsed(await r.rec.until(t.state, pred=lambda d: d["alarms"]["cell_overvoltage"] is not None))
        assert r.entity("alarm_cell_overvoltage", on) == "ON"
        alarmed = parsed(await r.rec.until(t.state, pred=lambda d: d["alarm_level"] == "alarm"))
        assert alarmed["alarms"]["cell_overvoltage"]["level"] == "alarm"
        assert alarmed["alarms"]["cell_overvoltage"]["packs"] == ["p1"]
        assert alarmed["ccl"] == 0
        r.pack.cell_v = np.full(16, 3.30)
        off = parsed(
            await r.rec.until(
                t.state, pred=lambda d: d["alarms"]["cell_overvoltage"] is None, after=len(r.rec.messages)
            )
        )
        assert r.entity("alarm_cell_overvoltage", off) == "OFF"
        assert r.entity("alarm_level", off) == "ok"


async def test_last_will_on_abrupt_loss_then_online_and_reannounced(broker: Mosquitto) -> None:
    proxy = Proxy(broker.port)
    await proxy.start()
    try:
        async with rig(proxy.port, rec_port=broker.port) as r:
            t = r.topics
            await r.rec.until(t.state)
            mark = len(r.rec.messages)
            proxy.cut()  # the TCP connection dies without an MQTT DISCONNECT
            offline = await r.rec.until(t.availability, b"offline", after=mark)
            online = await r.rec.until(t.availability, b"online", after=mark)
            assert r.rec.messages.index(offline) < r.rec.messages.index(online)
            await r.rec.until(t.discovery, after=mark)
            await r.rec.until(t.state, after=r.rec.messages.index(online))
            assert proxy.connections == 2
            assert r.service.connects == 2
    finally:
        await proxy.close()


async def test_home_assistant_birth_message_resends_discovery(broker: Mosquitto) -> None:
    async with rig(broker.port) as r:
        t = r.topics
        await r.rec.until(t.state)
        mark = len(r.rec.messages)
        await r.rec.client.publish(t.ha_status, "offline")
        await r.rec.until(t.ha_status, b"offline", after=mark)
        states = len(r.rec.on(t.state))
        await r.rec.until(t.state, after=len(r.rec.messages))
        assert len(r.rec.on(t.state)) > states
        assert r.rec.on(t.discovery, after=mark) == []  # HA going away needs nothing
        await r.rec.client.publish(t.ha_status, "online")
        again = await r.rec.until(t.discovery, after=mark)
        assert parsed(again) == r.config()
        assert r.service.announcements == 2


async def test_broker_restart_reconnects_and_logs_the_outage_once(tmp_path: Path) -> None:
    b = Mosquitto(tmp_path / "broker")
    b.start()
    try:
        with capture_logs() as logs:
            async with rig(b.port) as r:
                t = r.topics
                await r.rec.until(t.state)
                b.stop()
                await asyncio.sleep(2.0)  # several reconnect attempts against a dead port
                b.start()
                async with recorder(b.port) as fresh:
                    # No persistence: the restarted broker knew nothing; the service re-announced.
                    await fresh.until(t.discovery, within=10.0)
                    await fresh.until(t.availability, b"online")
                    await fresh.until(t.state, pred=lambda d: d["usable"])
                assert r.service.connects == 2
        assert [e["event"] for e in logs].count(UNREACHABLE) == 1
    finally:
        b.stop()


async def test_credentials_and_no_password_in_logs(tmp_path: Path) -> None:
    b = Mosquitto(tmp_path / "broker", users={"gw": "s3cret-pw", "rec": "rec-pw"})
    b.start()
    rec_kw = {"username": "rec", "password": "rec-pw"}
    try:
        with capture_logs() as logs:
            async with rig(b.port, silent=True, rec_kw=rec_kw, username="gw", password="wrong-pw") as r:
                await asyncio.sleep(1.6)  # attempts at 0, 0.5 and 1.5 s
                assert r.service.connects == 0
                assert r.rec.on(r.topics.availability) == []
        failures = [e for e in logs if e["event"] == UNREACHABLE]
        assert len(failures) == 1
        assert "authori" in failures[0]["error"].lower()
        assert "wrong-pw" not in repr(logs)
        async with rig(b.port, silent=True, rec_kw=rec_kw, username="gw", password="s3cret-pw") as r:
            await r.rec.until(r.topics.availability, b"online")
    finally:
        b.stop()


async def test_tls_with_own_ca(tmp_path: Path) -> None:
    tls = TlsFiles.make(tmp_path / "tls")
    b = Mosquitto(tmp_path / "broker", tls=tls)
    b.start()
    rec_kw = {"tls_context": ssl.create_default_context(cafile=tls.ca)}
    try:
        async with rig(b.port, rec_kw=rec_kw, tls=True, tls_ca_file=str(tls.ca)) as r:
            await r.rec.until(r.topics.availability, b"online")
            await r.rec.until(r.topics.state, pred=lambda d: d["usable"])
    finally:
        b.stop()
