"""Telemetry and operations services (web, MQTT, metrics, history) and their registry.

Each entry builds zero or more services from the settings; a service runs beside the pipeline and reads
the newest state (or subscribes with `gateway.on_state`). Adding a service = one module + one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from bmsgw.app import Gateway

__all__ = ["SERVICES", "Service", "ServiceFactory", "build_services"]


class Service(Protocol):
    """A long-running task beside the gateway."""

    async def run(self) -> None:
        """Serve until cancelled."""
        ...


ServiceFactory = Callable[["Gateway"], "Service | None"]
"""gateway -> a service, or None when its configuration section disables it."""

SERVICES: list[ServiceFactory] = []


def _history(gateway: Gateway) -> Service | None:
    from bmsgw.telemetry.history_service import history_service  # first: the web serves its database

    return history_service(gateway)


SERVICES.append(_history)


def _mqtt(gateway: Gateway) -> Service | None:
    if not gateway.settings.mqtt.enabled:
        return None
    from bmsgw.telemetry.mqtt import MqttService  # aiomqtt is imported only by a gateway that publishes

    return MqttService(gateway)


SERVICES.append(_mqtt)


def _web(gateway: Gateway) -> Service | None:
    from bmsgw.telemetry.web import web_service  # aiohttp is imported only by a gateway that serves

    return web_service(gateway)


SERVICES.append(_web)


def build_services(gateway: Gateway) -> list[Service]:
    """Every enabled service for this gateway."""
    return [s for factory in SERVICES if (s := factory(gateway)) is not None]
