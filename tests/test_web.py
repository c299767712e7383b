"""The web server over real HTTP on 127.0.0.1 against a gateway fed by a fake pack on a virtual CAN bus."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from fakes import PackModel, run_fake_pack, running
from web_rig import SPEED, TOKEN, WebRig, web_rig, web_settings

from bmsgw.app import Gateway
from bmsgw.cli import main
from bmsgw.clock import ScaledClock
from bmsgw.config import Source
from bmsgw.core import IS_COMPILED
from bmsgw.model import AlarmCode, AlarmLevel, ChargeStage, PackService, PackStatus, Reason
from bmsgw.telemetry import build_services
from bmsgw.telemetry.snapshot import state_dict
from bmsgw.telemetry.web import WebService, warn_if_secrets_readable
from bmsgw.transport.can_bus import AsyncCanBus


async def settled(rig: WebRig) -> None:
    """Pack online and the recovery ramp finished (limits at their configured values)."""
    await rig.until(
        lambda s: s.usable and s.limits.ccl.value == 50.0 and s.limits.dcl.value == 80.0,
        within=15,
        what="limits at their configured values",
    )


# --- /api/state ---------------------------------------------------------------------------------------


async def test_api_state_equals_the_gateway_state() -> None:
    pack = PackModel(current=-12.5)
    pack.cell_v = np.round(np.linspace(3.280, 3.310, 16), 3)
    pack.cell_t = np.array([21.0, 22.5, 23.0, 24.5])
    async with web_rig(pack) as rig:
        await settled(rig)
        before = rig.gateway.state()
        status, doc = await rig.get_json("/api/state")
        after = rig.gateway.state()
    assert status == 200
    assert before.t <= doc["t"] <= after.t
    want = state_dict(after)
    # Everything but the moving estimates is identical to the gateway's state.
    for key in ("usable", "packs_online", "voltage", "current", "power", "temperature", "capacity_ah",
                "cell_v_min", "cell_v_max", "cell_t_min", "cell_t_max", "limits", "alarms"):  # fmt: skip
        assert doc[key] == want[key], key
    assert doc["soc"] == pytest.approx(after.soc, abs=1e-4)
    assert doc["soh"] == after.soh
    p = doc["packs"][0]
    assert p["id"] == "p1"
    assert p["status"] == "online"
    assert p["sample"]["cell_v"] == pytest.approx(pack.cell_v.tolist(), abs=1e-9)
    assert p["sample"]["cell_t"] == pytest.approx(pack.cell_t.tolist())
    assert p["sample"]["current"] == pytest.approx(-12.5)
    assert len(p["sample"]["balancing"]) == 16
    assert len(p["cell_soc"]) == 16
    assert doc["cell_v_max"] == {"value": pytest.approx(3.310), "pack": "p1", "cell": 16}
    assert doc["cell_v_min"] == {"value": pytest.approx(3.280), "pack": "p1", "cell": 1}
    assert doc["limits"]["ccl"] == {"value": 50.0, "reason": "config"}
    assert doc["limits"]["dcl"] == {"value": 80.0, "reason": "config"}
    assert doc["limits"]["charge_stage"] == after.limits.charge_stage.value
    assert doc["gateway"]["core"] == ("compiled" if IS_COMPILED else "pure")
    assert doc["gateway"]["thresholds"]["max_charge_current_a"] == 50.0


async def test_api_state_reports_alarms_and_a_silent_pack() -> None:
    pack = PackModel()
    async with web_rig(pack) as rig:
        await settled(rig)
        pack.cell_v = np.full(16, 3.30)
        pack.cell_v[4] = 3.70  # above the LFP over-voltage alarm threshold
        state = await rig.until(
            lambda s: s.alarm_level(AlarmCode.CELL_OVERVOLTAGE) is AlarmLevel.ALARM, what="over-voltage alarm"
        )
        _, doc = await rig.get_json("/api/state")
        ov = [a for a in doc["alarms"] if a["code"] == "cell_overvoltage" and a["level"] == "alarm"]
        assert ov
        assert ov[0]["pack"] == "p1"
        assert ov[0]["since"] <= doc["t"]
        assert doc["limits"]["ccl"]["value"] == 0.0
        assert doc["limits"]["ccl"]["reason"] == state.limits.ccl.reason.value
        pack.silent = True
        await rig.until(lambda s: not s.usable, what="pack stale")
        _, doc = await rig.get_json("/api/state")
    assert doc["usable"] is False
    assert doc["packs"][0]["status"] == "stale"
    assert doc["limits"]["ccl"] == {"value": 0.0, "reason": "comm_lost"}
    assert any(a["code"] == "comm_lost" for a in doc["alarms"])
    assert doc["packs"][0]["sample"]["age_s"] > 0


# --- /api/history ---------------------------------------------------------------------------------------


async def test_api_history_downsamples_the_pack_series() -> None:
    pack = PackModel(current=20.0)
    async with web_rig(pack) as rig:
        await settled(rig)
        await asyncio.sleep(3.5)  # 35 simulated seconds: a few 10 s buckets
        status, doc = await rig.get_json("/api/history")
        assert status == 200
        assert doc["resolution_s"] == 10.0
        t = doc["t"]
        assert len(t) >= 3
        assert t == sorted(t)
        assert doc["now"] >= t[-1]
        assert all(b - a >= 10.0 - 1e-9 for a, b in itertools.pairwise(t))
        p1 = doc["packs"]["p1"]
        assert p1["current"][-2] == pytest.approx(20.0)
        assert p1["voltage"][-2] == pytest.approx(16 * 3.30, abs=0.01)
        assert p1["cell_v_max"][-2] == pytest.approx(3.30)
        assert doc["system"]["ccl"][-2] == 50.0
        assert doc["system"]["power"][-2] == pytest.approx(20.0 * 16 * 3.30, rel=1e-3)

        status, part = await rig.get_json(f"/api/history?from={t[1]}&to={t[2]}")
        assert status == 200
        assert part["t"] == t[1:3]
        status, merged = await rig.get_json("/api/history?points=2")
        assert status == 200
        assert len(merged["t"]) <= 2
        assert merged["resolution_s"] > 10.0
        for bad in ("from=abc", "to=nan", "points=0", "points=x", "points=100001"):
            status, err = await rig.get_json(f"/api/history?{bad}")
            assert status == 400, bad
            assert "error" in err


# --- /healthz and `bmsgw healthcheck` -------------------------------------------------------------------


async def test_healthz_and_healthcheck_follow_the_ticker(tmp_path: Path) -> None:
    channel = f"pack-{uuid.uuid4()}"
    settings = web_settings(channel, enabled=False)
    gateway = Gateway(settings, ScaledClock(SPEED))
    assert not any(isinstance(s, WebService) for s in gateway.services)  # [web] enabled = false
    web = WebService(gateway)  # runs separately here, so the gateway can stop under it
    async with AsyncCanBus("virtual", channel) as bus, aiohttp.ClientSession() as http:
        tasks = [
            asyncio.create_task(gateway.run()),
            asyncio.create_task(run_fake_pack(bus, PackModel(), 0.1 / SPEED)),
        ]
        server = asyncio.create_task(web.run())
        try:
            url = await asyncio.wait_for(web.started(), 10)
            await asyncio.sleep(0.3)
            async with http.get(url + "/healthz") as resp:
                assert resp.status == 200
                doc = await resp.json()
            assert doc["status"] == "ok"
            assert doc["core_compiled"] is IS_COMPILED
            assert doc["packs_online"] == 1
            assert 0 <= doc["last_step_age_s"] <= 3 * 0.1

            port = int(url.rsplit(":", 1)[1])
            cfg = tmp_path / "bmsgw.toml"
            cfg.write_text(f'[web]\nhost = "127.0.0.1"\nport = {port}\n')
            assert await asyncio.to_thread(main, ["healthcheck", "--url", url]) == 0
            assert await _healthcheck_process("--config", str(cfg)) == (0, "healthy")

            for task in tasks:  # the pipeline stops stepping; the web server keeps answering
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.sleep(0.5)
            async with http.get(url + "/healthz") as resp:
                assert resp.status == 503
                doc = await resp.json()
            assert doc["status"] == "stalled"
            assert doc["last_step_age_s"] > 0.3
            assert await asyncio.to_thread(main, ["healthcheck", "--url", url]) == 1
            assert await _healthcheck_process("--config", str(cfg)) == (1, "unhealthy")
        finally:
            for task in [*tasks, server]:
                task.cancel()
            await asyncio.gather(*tasks, server, return_exceptions=True)


async def _healthcheck_process(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bmsgw", "healthcheck", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    lines = out.decode().splitlines()
    assert len(lines) == 1, lines  # one-line reason
    assert proc.returncode is not None
    return proc.returncode, lines[0].split(":")[0]


def test_healthcheck_unreachable_or_disabled_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["healthcheck", "--url", f"http://127.0.0.1:{port}", "--timeout", "2"]) == 1
    assert "unreachable" in capsys.readouterr().out
    off = tmp_path / "off.toml"
    off.write_text("[web]\nenabled = false\n")
    assert main(["healthcheck", "--config", str(off)]) == 1
    assert "disabled" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text("[web]\nport = 99999\n")
    assert main(["healthcheck", "--config", str(bad)]) == 1  # never 2: Docker reserves it
    assert "web.port" in capsys.readouterr().out


# --- Server-Sent Events ---------------------------------------------------------------------------------


async def test_events_push_state_updates_at_most_once_a_second() -> None:
    async with web_rig() as rig:
        await rig.until(lambda s: s.usable, what="pack online")
        resp = await rig.http.get(rig.url + "/api/events")
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        events: list[tuple[float, dict[str, Any]]] = []
        start = time.monotonic()
        async with asyncio.timeout(10):
            while len(events) < 4:
                line = (await resp.content.readline()).decode()
                if line.startswith("data: "):
                    events.append((time.monotonic(), json.loads(line[6:])))
        elapsed = time.monotonic() - start
        # The first event comes at once, then at most one per second (generous: 3 gaps >= 2.5 s).
        assert elapsed >= 2.5
        ts = [doc["t"] for _, doc in events]
        assert ts == sorted(ts)
        assert ts[-1] > ts[0]
        assert events[-1][1]["packs"][0]["id"] == "p1"
        assert events[-1][1]["usable"] is True
    resp.release()


async def test_shutdown_does_not_wait_for_open_event_streams() -> None:
    async with web_rig() as rig:
        resp = await rig.http.get(rig.url + "/api/events")
        await resp.content.readline()
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 5.0  # shutdown_timeout is 2 s; the hub closes the stream first
    resp.release()


# --- control --------------------------------------------------------------------------------------------


async def test_control_needs_the_token() -> None:
    async with web_rig() as rig:
        url = rig.url + "/api/control/reset-alarms"
        async with rig.http.post(url) as resp:
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        for wrong in ("Bearer nope", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", TOKEN, f"Basic {TOKEN}"):
            async with rig.http.post(url, headers={"Authorization": wrong}) as resp:
                assert resp.status == 401, wrong
        ok = {"Authorization": f"Bearer {TOKEN}"}
        async with rig.http.post(url, headers=ok) as resp:
            assert resp.status == 200  # queued: the core clears its latched faults at the next step
            assert (await resp.json())["pack"] is None
        async with rig.http.post(url, headers=ok, json={"pack": 99}) as resp:
            assert resp.status == 400
        async with rig.http.post(rig.url + "/api/control/launch", headers=ok) as resp:
            assert resp.status == 404
        rig.gateway.pipeline.ems = None  # as if no EMS command channel existed
        async with rig.http.post(
            rig.url + "/api/control/force-charge", headers=ok, json={"enable": True}
        ) as r:
            assert r.status == 501
        async with rig.http.get(url, headers=ok) as resp:
            assert resp.status == 405


async def test_control_is_disabled_without_a_configured_token() -> None:
    async with web_rig(token=None) as rig, rig.http.post(rig.url + "/api/control/reset-alarms") as resp:
        assert resp.status == 403
        assert "token" in (await resp.json())["error"]


async def test_control_writes_ems_commands() -> None:
    async with web_rig() as rig:
        await settled(rig)
        ok = {"Authorization": f"Bearer {TOKEN}"}
        url = rig.url + "/api/control/charge-current-limit"
        ems = rig.gateway.pipeline.ems
        assert ems is not None  # a [web] token gives the pipeline an EMS command channel
        async with rig.http.post(url, headers=ok, json={"amperes": 20, "timeout_s": 60}) as resp:
            assert resp.status == 200
            doc = await resp.json()
        assert doc["command"]["max_charge_a"] == 20.0
        assert 0 < doc["expires_in_s"] <= 60
        now = rig.gateway.clock.now()
        assert ems.command(now).max_charge_a == 20.0
        dis = rig.url + "/api/control/discharge-current-limit"
        async with rig.http.post(dis, headers=ok, json={"amperes": 30.5}) as resp:
            assert resp.status == 200
        fc = rig.url + "/api/control/force-charge"
        async with rig.http.post(fc, headers=ok, json={"enable": True}) as resp:
            assert resp.status == 200
        cmd = ems.command(rig.gateway.clock.now())
        assert (cmd.max_charge_a, cmd.max_discharge_a, cmd.force_charge) == (20.0, 30.5, True)
        # The pipeline applies it: CCL and DCL go down with reason "ems" (and never up: 200 A > 50 A).
        await rig.until(lambda s: s.limits.ccl.value == 20.0 and s.limits.ccl.reason is Reason.EMS)
        await rig.until(lambda s: s.limits.dcl.value == 30.5 and s.limits.dcl.reason is Reason.EMS)
        async with rig.http.post(url, headers=ok, json={"amperes": 200}) as resp:
            assert resp.status == 200
        state = await rig.until(lambda s: s.limits.ccl.reason is not Reason.EMS)
        assert state.limits.ccl.value == 50.0
        _, doc = await rig.get_json("/api/state")
        assert doc["limits"]["dcl"] == {"value": 30.5, "reason": "ems"}
        bad: list[Any] = [
            {},
            {"amperes": "lots"},
            {"amperes": -1},
            {"amperes": True},
            {"amperes": 5, "timeout_s": 0},
            [],
        ]
        for body in bad:
            async with rig.http.post(url, headers=ok, json=body) as resp:
                assert resp.status == 400, body
        async with rig.http.post(fc, headers=ok, json={"enable": "yes"}) as resp:
            assert resp.status == 400
        async with rig.http.post(url, headers=ok, data=b"{not json") as resp:
            assert resp.status == 400
        async with rig.http.post(url, headers=ok, json={"amperes": None}) as resp:
            assert resp.status == 200
        assert ems.command(rig.gateway.clock.now()).max_charge_a is None


# --- static files, errors, robustness -------------------------------------------------------------------


async def test_dashboard_files_and_headers() -> None:
    async with web_rig() as rig:
        async with rig.http.get(rig.url + "/") as resp:
            assert resp.status == 200
            html = await resp.text()
            assert "/static/app.js" in html
            assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
        for asset, kind in (("app.js", "javascript"), ("style.css", "text/css")):
            async with rig.http.get(f"{rig.url}/static/{asset}") as resp:
                assert resp.status == 200
                assert kind in resp.headers["Content-Type"]
        # No third-party resources: everything the page loads comes from this server.
        assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in html
        async with rig.http.get(rig.url + "/nope") as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]
        async with rig.http.get(rig.url + "/static/../web.py") as resp:
            assert resp.status in (403, 404)


async def test_busy_port_is_retried_and_the_gateway_keeps_running() -> None:
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    channel = f"pack-{uuid.uuid4()}"
    gateway = Gateway(web_settings(channel, port=port), ScaledClock(SPEED))
    web = next(s for s in gateway.services if isinstance(s, WebService))
    async with AsyncCanBus("virtual", channel) as bus:
        try:
            async with running(gateway.run, lambda: run_fake_pack(bus, PackModel(), 0.1 / SPEED)):
                await asyncio.sleep(0.6)
                assert web.url is None
                assert gateway.state().usable  # the pipeline did not wait for the web server
                blocker.close()
                url = await asyncio.wait_for(web.started(), 10)  # bound on the next retry
                assert url == f"http://127.0.0.1:{port}"
        finally:
            blocker.close()


def test_web_service_comes_from_the_services_registry() -> None:
    channel = f"pack-{uuid.uuid4()}"
    on = Gateway(web_settings(channel))
    assert sum(isinstance(s, WebService) for s in on.services) == 1
    off = Gateway(web_settings(channel, enabled=False))
    assert not any(isinstance(s, WebService) for s in build_services(off))


def test_listener_failure_never_breaks_publishing() -> None:
    gateway = Gateway(web_settings(f"pack-{uuid.uuid4()}"))
    web = next(s for s in gateway.services if isinstance(s, WebService))

    class Broken:
        resolution_s = 10.0

        def record(self, t: float, state: object) -> None:
            raise RuntimeError("disk on fire")

        def query(self, *_: object) -> None:
            raise AssertionError

    web.history = Broken()  # type: ignore[assignment]
    gateway.tick()
    gateway.tick()
    assert web.listener_errors == 2


def test_token_warning_for_a_world_readable_config(tmp_path: Path) -> None:
    cfg = tmp_path / "bmsgw.toml"
    cfg.write_text(f'[web]\ntoken = "{TOKEN}"\n')
    cfg.chmod(0o644)
    assert warn_if_secrets_readable(cfg, {"web.token": Source.FILE})
    assert not warn_if_secrets_readable(cfg, {"web.token": Source.ENV})  # the file does not hold it
    assert warn_if_secrets_readable(cfg, {"mqtt.password": Source.FILE})  # any secret counts
    cfg.chmod(0o640)
    assert not warn_if_secrets_readable(cfg, {"web.token": Source.FILE})


def test_pack_status_vocabulary_is_the_models() -> None:
    # The dashboard maps these statuses to labels (app.js PACK_STATUS); keep them in step.
    app_js = (Path(__file__).parent.parent / "bmsgw" / "telemetry" / "web" / "app.js").read_text()
    for status in PackStatus:
        assert f"  {status.value}: [" in app_js, status
    for reason in Reason:
        assert f"  {reason.value}: " in app_js, reason
    for stage in ChargeStage:
        assert f" {stage.value}: " in app_js, stage  # STAGE_TEXT
    for service in set(PackService) - {PackService.RUNNING}:
        assert f"  {service.value}: [" in app_js, service  # SERVICE


# --- [web] configuration --------------------------------------------------------------------------------


def test_web_config_is_validated_and_the_token_never_printed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "--set", f"web.token={TOKEN}", "--json"]) == 0
    out = capsys.readouterr().out
    assert TOKEN not in out
    shown = json.loads(out)
    assert shown["web.token"] == {"value": "**********", "source": "cli"}
    assert shown["web.host"] == {"value": "127.0.0.1", "source": "default"}
    assert shown["web.port"]["value"] == 8080
    assert shown["web.enabled"]["value"] is True
    for bad, named in (
        ("web.token=short-secret", "web.token = <secret>: token must be 16..256 characters long"),
        ("web.token=spaces are not allowed here", "web.token = <secret>: token must be printable ASCII"),
        ("web.port=70000", "web.port = 70000"),
        ("web.host=a b", "web.host = 'a b': expected an IP address or host name"),
        ("web.colour=blue", "web.colour: unknown key; allowed keys here: enabled, host, port, token"),
    ):
        assert main(["config", "show", "--set", bad]) == 2
        err = capsys.readouterr().err
        assert named in err, err
        assert "short-secret" not in err
        assert "spaces are not" not in err
