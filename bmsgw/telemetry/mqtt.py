"""MQTT service: the gateway's state on a broker, with Home Assistant device discovery (docs/mqtt.md).

Connects with a retained last will `offline` on `<prefix>/availability` and publishes `online`; announces
nothing until the first usable state, then the retained discovery config and the JSON state every
`publish_interval_s` and on every alarm change; re-announces on each (re)connect and whenever Home
Assistant says `online` on `<discovery_prefix>/status`; reconnects with backoff, logging once per outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from typing import TYPE_CHECKING

import aiomqtt

from bmsgw.log import get_logger
from bmsgw.model import GatewayState
from bmsgw.telemetry.ha_discovery import (
    AVAILABLE,
    NOT_AVAILABLE,
    Topics,
    discovery_payload,
    slug,
    state_payload,
)

if TYPE_CHECKING:
    from bmsgw.app import Gateway

__all__ = ["MqttService"]

_log = get_logger(__name__)

BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 30.0


class MqttService:
    """Publishes the newest GatewayState to MQTT until cancelled; says `offline` on a clean shutdown."""

    def __init__(self, gateway: Gateway) -> None:
        self.settings = gateway.settings
        self.cfg = gateway.settings.mqtt
        self.topics = Topics.of(gateway.settings)
        self.energy = gateway.energy.system  # the gateway's totals (restored from the history database)
        self.connected = False
        self.connects = 0
        self.states_sent = 0
        self.announcements = 0
        self._state = gateway.state
        self._interval_s = self.cfg.publish_interval_s / gateway.clock.speed
        self._discovery = json.dumps(discovery_payload(self.settings, self.topics)).encode()
        self._seen_data = False
        self._alarms: frozenset[tuple[str, int, int | None]] = frozenset()
        self._announce = True
        self._wake = asyncio.Event()
        gateway.on_state(self._on_state)

    async def run(self) -> None:
        """Connect, publish, reconnect with backoff when the broker goes away; cancel to stop."""
        backoff, outage = BACKOFF_MIN_S, False
        while True:
            failure: str | None = None
            try:
                async with self._client() as client:
                    self.connects += 1
                    _log.info("mqtt connected", host=self.cfg.host, port=self.cfg.port, after_outage=outage)
                    backoff, outage = BACKOFF_MIN_S, False
                    await self._session(client)
            except* aiomqtt.MqttError as group:
                failure = "; ".join(str(e) for e in group.exceptions)
            except* Exception as group:  # a telemetry bug must never take the gateway down
                _log.error("mqtt service failed; restarting it", exc_info=group)
                failure = "; ".join(repr(e) for e in group.exceptions)
            finally:
                self.connected = False
            if not outage:  # once per outage, not per attempt
                _log.warning("mqtt broker unreachable; retrying", host=self.cfg.host, port=self.cfg.port,
                             error=failure)  # fmt: skip
                outage = True
            else:
                _log.debug("mqtt reconnect failed", error=failure)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    def _on_state(self, state: GatewayState) -> None:
        usable = state.usable
        alarms = frozenset((a.code.value, int(a.level), a.pack) for a in state.alarms)
        if usable and not self._seen_data:
            self._seen_data = True
            self._wake.set()
        if alarms != self._alarms:
            self._alarms = alarms
            self._wake.set()

    def _client(self) -> aiomqtt.Client:
        cfg = self.cfg
        tls = ssl.create_default_context(cafile=cfg.tls_ca_file) if cfg.tls else None
        return aiomqtt.Client(
            cfg.host,
            cfg.port,
            username=cfg.username,
            password=cfg.password.get_secret_value() if cfg.password is not None else None,
            identifier=cfg.client_id or f"bmsgw-{slug(self.settings.gateway.name)}",
            will=aiomqtt.Will(self.topics.availability, NOT_AVAILABLE, qos=1, retain=True),
            keepalive=cfg.keepalive_s,
            tls_context=tls,
            timeout=10,
        )

    async def _session(self, client: aiomqtt.Client) -> None:
        """One connection: availability, then announcements and state until the connection fails."""
        try:
            await client.publish(self.topics.availability, AVAILABLE, qos=1, retain=True)
            self.connected = True
            self._announce = True  # the broker may have lost retained messages (restart without persistence)
            if self.cfg.discovery:
                await client.subscribe(self.topics.ha_status, qos=1)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._listen(client))
                tg.create_task(self._publish(client))
        except asyncio.CancelledError:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.publish(self.topics.availability, NOT_AVAILABLE, qos=1, retain=True, timeout=2)
            raise

    async def _listen(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            if message.topic.matches(self.topics.ha_status) and message.payload == AVAILABLE.encode():
                _log.info("home assistant online; re-sending discovery")
                self._announce = True
                self._wake.set()

    async def _publish(self, client: aiomqtt.Client) -> None:
        self._wake.set()  # first pass right away
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval_s):
                    await self._wake.wait()
            self._wake.clear()
            if not self._seen_data:
                continue  # never announce defaults as if they were measurements
            if self._announce and self.cfg.discovery:
                await client.publish(self.topics.discovery, self._discovery, qos=1, retain=True)
                self.announcements += 1
            self._announce = False
            doc = state_payload(
                self._state(), self.settings, self.energy.charged_wh, self.energy.discharged_wh
            )
            await client.publish(self.topics.state, json.dumps(doc), qos=0)
            self.states_sent += 1
