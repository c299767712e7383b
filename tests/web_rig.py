"""A gateway with its web server on 127.0.0.1 (free port), fed by a fake pack on a python-can virtual bus."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from fakes import PackModel, run_fake_pack, running

from bmsgw.app import Gateway
from bmsgw.clock import ScaledClock
from bmsgw.config import Settings, load_settings
from bmsgw.model import GatewayState
from bmsgw.telemetry.web import WebService
from bmsgw.transport.can_bus import AsyncCanBus

SPEED = 10.0  # gateway time runs 10x wall time
TOKEN = "test-token-0123456789abcdef"


@dataclass
class WebRig:
    gateway: Gateway
    web: WebService
    pack: PackModel
    url: str
    http: aiohttp.ClientSession

    async def until(
        self, pred: Callable[[GatewayState], bool], within: float = 5.0, what: str = "condition"
    ) -> GatewayState:
        """Wait for a state satisfying `pred`."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            state = self.gateway.state()
            if pred(state):
                return state
            await asyncio.sleep(0.02)
        raise AssertionError(f"{what} not reached within {within}s")

    async def get_json(self, path: str) -> tuple[int, Any]:
        async with self.http.get(self.url + path) as resp:
            return resp.status, await resp.json()


def web_settings(
    pack_channel: str, *, token: str | None = TOKEN, extra: dict[str, Any] | None = None, **web: Any
) -> Settings:
    """The rig's settings; `extra` adds or replaces top-level keys (e.g. {"balancing": {...}})."""
    cfg: dict[str, Any] = {
        "packs": [{"id": "p1", "cells": 16, "sensors": 4, "chemistry": "lfp", "capacity_ah": 100}],
        "can": {"interface": "virtual", "channel": pack_channel},
        "gateway.step_period_s": 0.1,
        "gateway.stale_after_s": 3.0,
        "gateway.recovery_ramp_s": 5.0,
        "limits": {"max_charge_current_a": 50.0, "max_discharge_current_a": 80.0},
        "web": {"host": "127.0.0.1", "port": 0, **({"token": token} if token else {}), **web},
        **(extra or {}),
    }
    settings, _ = load_settings(None, cfg, env={})
    return settings


@contextlib.asynccontextmanager
async def web_rig(
    pack: PackModel | None = None, *, token: str | None = TOKEN, extra: dict[str, Any] | None = None
) -> AsyncIterator[WebRig]:
    """Run gateway (with its web service from the SERVICES registry) and a fake pack until exit."""
    channel = f"pack-{uuid.uuid4()}"
    gateway = Gateway(web_settings(channel, token=token, extra=extra), ScaledClock(SPEED))
    web = next(s for s in gateway.services if isinstance(s, WebService))
    pack = pack or PackModel()
    async with (
        AsyncCanBus("virtual", channel) as bus,
        aiohttp.ClientSession() as http,
        running(gateway.run, lambda: run_fake_pack(bus, pack, 0.1 / SPEED)),
    ):
        url = await asyncio.wait_for(web.started(), 10)
        yield WebRig(gateway, web, pack, url, http)
