"""HTTP server of the daemon (aiohttp): dashboard, JSON API, Server-Sent Events, /healthz, /metrics, control.

Routes (docs/web.md):
    GET  /                   dashboard (static files in telemetry/web/)
    GET  /api/state          newest GatewayState as JSON (telemetry/snapshot.py vocabulary)
    GET  /api/history        ?from=&to= (clock stamp seconds) &points= : downsampled series
    GET  /api/events         Server-Sent Events: `state` events, at most one per second
    GET  /healthz            200 while the pipeline steps (within 3 x step_period_s), else 503
    GET  /metrics            Prometheus text exposition
    POST /api/control/<name> needs `Authorization: Bearer <[web] token>`
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import stat
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bmsgw import __version__
from bmsgw.config import Source
from bmsgw.core import IS_COMPILED
from bmsgw.ems import Command
from bmsgw.log import get_logger
from bmsgw.model import GatewayState
from bmsgw.sources import group_packs
from bmsgw.telemetry.health import base_url
from bmsgw.telemetry.history_buffer import HistoryBackend, RingHistory
from bmsgw.telemetry.metrics import CONTENT_TYPE, IoCounter, exposition
from bmsgw.telemetry.snapshot import state_dict

if TYPE_CHECKING:
    from bmsgw.app import Gateway

__all__ = ["STATIC_DIR", "WebService", "warn_if_secrets_readable", "web_service"]

STATIC_DIR = Path(__file__).with_name("web")
EVENT_PERIOD_S = 1.0  # at most one SSE state event per second and client
KEEPALIVE_S = 15.0  # SSE comment line so proxies and dead clients are noticed
HEALTH_PERIODS = 3  # healthy while the last step is younger than this many step periods
MAX_POINTS = 10_000

_log = get_logger(__name__)

_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def web_service(gateway: Gateway) -> WebService | None:
    """SERVICES factory: the web server, unless [web] enabled = false."""
    return WebService(gateway) if gateway.settings.web.enabled else None


SECRET_KEYS = ("web.token", "mqtt.password")


def warn_if_secrets_readable(config: Path | None, origin: Mapping[str, Source]) -> bool:
    """Warn (and return True) when a secret ([web] token, [mqtt] password) is in a world-readable file."""
    held = [key for key in SECRET_KEYS if origin.get(key) is Source.FILE]
    if config is None or not held:
        return False
    try:
        mode = config.stat().st_mode
    except OSError:
        return False
    if not mode & stat.S_IROTH:
        return False
    _log.warning(
        "the configuration file holding secrets is world-readable; restrict it (chmod 600 or 640)",
        path=str(config),
        keys=",".join(held),
        mode=oct(stat.S_IMODE(mode)),
    )
    return True


class WebService:
    """The web server: keeps history and energy from every state, serves until cancelled."""

    def __init__(self, gateway: Gateway, history: HistoryBackend | None = None) -> None:
        settings = gateway.settings
        self.gateway = gateway
        self.cfg = settings.web
        ids = tuple(p.id for p in settings.packs)
        history = history if history is not None else gateway.history  # the database when [history] is on
        self.history: HistoryBackend = history if history is not None else RingHistory(ids)
        self.energy = gateway.energy
        self.url: str | None = None  # base URL once listening
        self.listener_errors = 0
        self.bad_requests = 0
        self._token = self.cfg.token.get_secret_value().encode() if self.cfg.token else None
        self._last_step = -math.inf  # time.monotonic() of the newest state
        self._listening = asyncio.Event()
        self._hub = _Hub()
        self._subscribers = 0
        self._info = self._static_info()
        self.app = self._make_app()
        gateway.on_state(self._on_state)

    async def started(self) -> str:
        """Wait until the server listens; its base URL (with the bound port when [web] port = 0)."""
        await self._listening.wait()
        assert self.url is not None
        return self.url

    async def run(self) -> None:
        """Listen (retrying with backoff while the address is taken) and serve until cancelled."""
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        try:
            backoff = 1.0
            while True:
                site = web.TCPSite(runner, self.cfg.host, self.cfg.port)
                try:
                    await site.start()
                    break
                except OSError as exc:
                    await site.stop()  # unregister the failed site from the runner
                    _log.error(
                        "web server cannot listen", host=self.cfg.host, port=self.cfg.port,
                        error=exc.strerror or str(exc), retry_in_s=backoff,
                    )  # fmt: skip
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 60.0)
            port = _bound_port(runner, self.cfg.port)
            self.url = base_url(self.cfg, port)
            self._listening.set()
            _log.info("dashboard listening", url=self.url + "/", control=self._token is not None)
            await self._broadcast()
        finally:
            self._hub.close()
            await runner.cleanup()

    # --- state listener (runs inside Gateway._publish: quick, never raises) --------------------------

    def _on_state(self, state: GatewayState) -> None:
        self._last_step = time.monotonic()
        try:
            self.history.record(state.t, state)
        except Exception as exc:  # the dashboard must never break the pipeline's publishing
            self.listener_errors += 1
            if self.listener_errors == 1:
                _log.exception("web state listener failed", error=str(exc))

    # --- application ---------------------------------------------------------------------------------

    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[_error_middleware])
        app.router.add_get("/", self._index)
        app.router.add_static("/static/", STATIC_DIR, append_version=False)
        app.router.add_get("/api/state", self._state)
        app.router.add_get("/api/history", self._history)
        app.router.add_get("/api/events", self._events)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_post("/api/control/{action}", self._control)
        app.on_response_prepare.append(_security_headers)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _index(self, _: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html")

    async def _state(self, _: web.Request) -> web.StreamResponse:
        return _json(self._state_doc(self.gateway.state()))

    async def _history(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        try:
            start = _float_param(q, "from")
            end = _float_param(q, "to")
            points = _int_param(q, "points", 1, MAX_POINTS)
        except ValueError as exc:
            self.bad_requests += 1
            return _json({"error": str(exc)}, 400)
        # History runs on the gateway clock (monotonic live); the API speaks clock stamps (epoch live).
        clock = self.gateway.clock
        offset = round(clock.stamp() - clock.now(), 3)  # ms: two clock reads are never simultaneous
        result = self.history.query(
            None if start is None else start - offset, None if end is None else end - offset, points
        )
        return _json({"now": clock.stamp(), **result.shifted(offset).as_dict()})

    async def _healthz(self, _: web.Request) -> web.StreamResponse:
        age = time.monotonic() - self._last_step
        healthy = age <= HEALTH_PERIODS * self.gateway.settings.gateway.step_period_s
        state = self.gateway.state()
        doc = {
            "status": "ok" if healthy else "stalled",
            "core_compiled": IS_COMPILED,
            "packs_online": state.modules_online,
            "packs": len(state.packs),
            "last_step_age_s": round(age, 3) if math.isfinite(age) else None,
        }
        return _json(doc, 200 if healthy else 503)

    async def _metrics(self, _: web.Request) -> web.StreamResponse:
        age = time.monotonic() - self._last_step
        text = exposition(
            self.gateway.state(),
            version=__version__,
            compiled=IS_COMPILED,
            energy=self.energy,
            counters=self._io_counters(),
            last_step_age_s=age if math.isfinite(age) else None,
        )
        return web.Response(text=text, headers={"Content-Type": CONTENT_TYPE})

    async def _events(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await resp.prepare(request)
        self._subscribers += 1
        try:
            await resp.write(b"retry: 3000\n\n" + _event(json.dumps(self._state_doc(self.gateway.state()))))
            seq = self._hub.seq
            sent = time.monotonic()
            while not self._hub.closed:
                if not await self._hub.wait(seq, KEEPALIVE_S):
                    await resp.write(b": keepalive\n\n")
                    continue
                if self._hub.closed:
                    break
                await asyncio.sleep(max(0.0, sent + EVENT_PERIOD_S - time.monotonic()))
                seq = self._hub.seq
                sent = time.monotonic()
                await resp.write(_event(self._hub.payload))
        except ConnectionError:
            pass  # the client went away
        finally:
            self._subscribers -= 1
        return resp

    async def _control(self, request: web.Request) -> web.StreamResponse:
        if self._token is None:
            return _json({"error": "control is disabled: set [web] token to enable it"}, 403)
        given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, b"Bearer " + self._token):
            return _json(
                {"error": "missing or wrong bearer token"}, 401, {"WWW-Authenticate": 'Bearer realm="bmsgw"'}
            )
        action = request.match_info["action"]
        if action not in _CONTROL_ACTIONS:
            return _json({"error": f"unknown action {action!r}; known: {', '.join(_CONTROL_ACTIONS)}"}, 404)
        _log.info("control request", action=action, peer=request.remote)
        ems = self.gateway.pipeline.ems
        if ems is None:
            return _json({"error": _CONTROL_ACTIONS[action], "action": action}, 501)
        try:
            body = await request.json() if request.can_read_body else {}
            if action == "reset-alarms":
                pack = _reset_pack(body, len(self.gateway.settings.packs))
                ems.request_reset(pack)
                return _json({"action": action, "pack": pack, "applied": "at the next gateway step"})
            t = self.gateway.clock.now()
            command, timeout_s = _ems_command(action, body, ems.command(t))
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            self.bad_requests += 1
            return _json({"error": f"{action}: {exc}"}, 400)
        ems.write(command, t, timeout_s)
        doc = {"action": action, "command": _command_dict(command), "expires_in_s": ems.remaining(t)}
        return _json(doc)

    async def _on_shutdown(self, _: web.Application) -> None:
        self._hub.close()  # SSE handlers return, so the server's shutdown does not wait for them

    # --- helpers -------------------------------------------------------------------------------------

    async def _broadcast(self) -> None:
        """Once per second, serialise the newest state for the SSE clients if it changed."""
        last: GatewayState | None = None
        while True:
            await asyncio.sleep(EVENT_PERIOD_S)
            state = self.gateway.state()
            if self._subscribers and state is not last:
                last = state
                self._hub.publish(json.dumps(self._state_doc(state), allow_nan=False))

    def _state_doc(self, state: GatewayState) -> dict[str, Any]:
        return {"gateway": self._info, "stamp": self.gateway.clock.stamp(), **state_dict(state)}

    def _static_info(self) -> dict[str, Any]:
        s = self.gateway.settings
        p = self.gateway.pipeline.params
        return {
            "name": s.gateway.name,
            "version": __version__,
            "core": "compiled" if IS_COMPILED else "pure",
            "chemistry": s.chemistry.value,
            "packs": [
                {"id": pc.id, "cells": pc.cells, "sensors": pc.sensors, "capacity_ah": pc.capacity_ah}
                for pc in s.packs
            ],
            "thresholds": {
                "cell_v_min_alarm": p.cell_v_min_alarm,
                "cell_v_min_warn": p.cell_v_min_warn,
                "cell_v_max_warn": p.cell_v_max_warn,
                "cell_v_max_alarm": p.cell_v_max_alarm,
                "charge_temp_min_c": p.charge_temp_min_c,
                "charge_temp_max_c": p.charge_temp_max_c,
                "discharge_temp_min_c": p.discharge_temp_min_c,
                "discharge_temp_max_c": p.discharge_temp_max_c,
                "temp_warn_margin_c": p.temp_warn_margin_c,
                "max_charge_current_a": p.max_charge_current_a * len(s.packs),
                "max_discharge_current_a": p.max_discharge_current_a * len(s.packs),
            },
            "history_resolution_s": self.history.resolution_s,
        }

    def _io_counters(self) -> list[IoCounter]:
        """Counters the pipeline, sources (or their `decoder`) and outputs keep as int attributes."""
        gw = self.gateway
        out = [
            IoCounter("bmsgw_samples_total", "Complete pack samples offered to the pipeline.", (),
                      gw.pipeline.samples),
            IoCounter("bmsgw_core_steps_total", "Core steps run.", (), gw.pipeline.steps),
        ]  # fmt: skip
        for (kind, port), src in zip(group_packs(gw.settings), gw.sources, strict=False):
            labels = (("source", kind), ("port", port or ""))
            holders = (getattr(src, "decoder", None), src)
            for attr, name, help_ in _SOURCE_COUNTERS:
                value = next((v for h in holders if isinstance(v := getattr(h, attr, None), int)), None)
                if value is not None:
                    out.append(IoCounter(name, help_, labels, value))
        for i, (cfg, o) in enumerate(zip(gw.settings.outputs, gw.outputs, strict=False)):
            labels = (("output", str(i)), ("protocol", cfg.protocol))
            out.append(
                IoCounter("bmsgw_output_frames_sent_total", "Frames or responses sent.", labels, o.sent)
            )
            errors = getattr(o, "send_errors", None)
            if isinstance(errors, int):
                out.append(IoCounter("bmsgw_output_errors_total", "Transport failures.", labels, errors))
        out.append(
            IoCounter("bmsgw_web_bad_requests_total", "Malformed web API requests.", (), self.bad_requests)
        )
        return out


_SOURCE_COUNTERS = (
    ("frames", "bmsgw_source_frames_received_total", "Frames or messages read from the pack side."),
    ("decoded", "bmsgw_source_frames_decoded_total", "Frames decoded."),
    ("rejected", "bmsgw_source_frames_rejected_total", "Garbled frames counted and dropped."),
    ("ignored", "bmsgw_source_frames_ignored_total", "Valid frames not for a configured pack."),
    ("reconnects", "bmsgw_source_reconnects_total", "Transport reopenings after failures."),
)

_NO_EMS = "not available: the pipeline has no EMS command channel (needs [web] token or Modbus writes)"
_CONTROL_ACTIONS = {
    "reset-alarms": _NO_EMS,
    "charge-current-limit": _NO_EMS,
    "discharge-current-limit": _NO_EMS,
    "force-charge": _NO_EMS,
}
DEFAULT_COMMAND_TIMEOUT_S = 300.0
MAX_COMMAND_TIMEOUT_S = 86_400.0
MAX_CURRENT_A = 10_000.0


def _reset_pack(body: Any, n_packs: int) -> int | None:
    """The pack whose latched faults `body` asks to clear ({"pack": i} or {} / null for every pack)."""
    if not isinstance(body, dict):
        raise ValueError("expected a JSON object")
    pack = body.get("pack")
    if pack is not None and (isinstance(pack, bool) or not isinstance(pack, int) or not 0 <= pack < n_packs):
        raise ValueError(f"pack={pack!r}: expected a pack index 0..{n_packs - 1}, or null for every pack")
    return pack


def _ems_command(action: str, body: Any, current: Command) -> tuple[Command, float]:
    """The EMS command after `action` with JSON `body`, and how long it holds; ValueError names bad input."""
    if not isinstance(body, dict):
        raise ValueError("expected a JSON object")
    timeout = body.get("timeout_s", DEFAULT_COMMAND_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise ValueError(f"timeout_s={timeout!r}: expected seconds")
    if not 1 <= timeout <= MAX_COMMAND_TIMEOUT_S:
        raise ValueError(f"timeout_s={timeout!r}: must be within 1..{MAX_COMMAND_TIMEOUT_S:.0f}")
    if action == "force-charge":
        enable = body.get("enable")
        if not isinstance(enable, bool):
            raise ValueError(f"enable={enable!r}: expected true or false")
        return replace(current, force_charge=enable), float(timeout)
    if "amperes" not in body:
        raise ValueError("amperes: required (a number of amperes, or null to remove the cap)")
    amps = body["amperes"]
    if amps is not None and (isinstance(amps, bool) or not isinstance(amps, int | float)):
        raise ValueError(f"amperes={amps!r}: expected a number of amperes, or null to remove the cap")
    if amps is not None and not 0 <= amps <= MAX_CURRENT_A:
        raise ValueError(f"amperes={amps!r}: must be within 0..{MAX_CURRENT_A:.0f}")
    cap = None if amps is None else float(amps)
    if action == "charge-current-limit":
        return replace(current, max_charge_a=cap), float(timeout)
    return replace(current, max_discharge_a=cap), float(timeout)


def _command_dict(cmd: Command) -> dict[str, Any]:
    return {
        "max_charge_a": cmd.max_charge_a,
        "max_discharge_a": cmd.max_discharge_a,
        "force_charge": cmd.force_charge,
        "reserve_soc": cmd.reserve_soc,
        "disconnect": cmd.disconnect,
    }


class _Hub:
    """Latest-value broadcast to SSE handlers: `publish` wakes every waiter, nothing queues."""

    def __init__(self) -> None:
        self.seq = 0
        self.payload = ""
        self.closed = False
        self._event = asyncio.Event()

    def publish(self, payload: str) -> None:
        self.seq += 1
        self.payload = payload
        event, self._event = self._event, asyncio.Event()
        event.set()

    def close(self) -> None:
        self.closed = True
        self._event.set()

    async def wait(self, seq: int, wait_s: float) -> bool:
        """True once something newer than `seq` was published (or the hub closed); False on timeout."""
        if self.seq != seq or self.closed:
            return True
        try:
            async with asyncio.timeout(wait_s):
                await self._event.wait()
        except TimeoutError:
            return False
        return True


@web.middleware
async def _error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors as one-line JSON bodies (404, 405, ...) instead of HTML pages."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _json({"error": exc.reason}, exc.status)


async def _security_headers(_: web.Request, response: web.StreamResponse) -> None:
    for key, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(key, value)


def _json(
    doc: Mapping[str, Any], status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        text=json.dumps(doc, allow_nan=False), status=status, content_type="application/json", headers=headers
    )


def _event(payload: str) -> bytes:
    return b"event: state\ndata: " + payload.encode() + b"\n\n"


def _float_param(q: Mapping[str, str], key: str) -> float | None:
    raw = q.get(key)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{key}={raw!r}: expected seconds (a number)") from None
    if not math.isfinite(value):
        raise ValueError(f"{key}={raw!r}: must be finite")
    return value


def _int_param(q: Mapping[str, str], key: str, lo: int, hi: int) -> int | None:
    raw = q.get(key)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{key}={raw!r}: expected an integer") from None
    if not lo <= value <= hi:
        raise ValueError(f"{key}={raw!r}: must be within {lo}..{hi}")
    return value


def _bound_port(runner: web.AppRunner, configured: int) -> int:
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2 and isinstance(addr[1], int):
            return addr[1]
    return configured
