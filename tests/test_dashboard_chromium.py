"""The dashboard in a real headless Chromium: rendered DOM after JS ran, live SSE updates, screenshots.

Chromium is driven over the DevTools protocol (aiohttp websocket) rather than `--dump-dom
--virtual-time-budget`: virtual time does not advance while a fetch is pending, and the dashboard's
Server-Sent Events stream is a fetch that never ends, so that command line never returns.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from fakes import PackModel
from web_rig import web_rig

CHROMIUM = next((p for n in ("chromium", "chromium-browser") if (p := shutil.which(n))), None)
SHOTS = Path(os.environ.get("BMSGW_SCREENSHOT_DIR", tempfile.gettempdir())) / "bmsgw-dashboard"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium; .ci/run installs it)"
)

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
)  # fmt: skip


class Browser:
    """One headless Chromium page over the DevTools protocol."""

    def __init__(self, proc: asyncio.subprocess.Process, http: aiohttp.ClientSession) -> None:
        self.proc = proc
        self.http = http
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._id = 0

    async def attach(self, profile: Path) -> None:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 20
        while not port_file.exists() or not port_file.read_text().strip():
            if time.monotonic() > deadline or self.proc.returncode is not None:
                raise AssertionError("chromium did not open its DevTools port")
            await asyncio.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        async with self.http.get(f"http://127.0.0.1:{port}/json/list") as resp:
            pages = [t for t in await resp.json() if t["type"] == "page"]
        self.ws = await self.http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=64 << 20)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        assert self.ws is not None
        self._id += 1
        await self.ws.send_json({"id": self._id, "method": method, "params": params})
        while True:
            msg = await asyncio.wait_for(self.ws.receive(), 20)
            assert msg.type is aiohttp.WSMsgType.TEXT, msg
            doc = json.loads(msg.data)
            if doc.get("id") == self._id:
                assert "error" not in doc, doc
                result: dict[str, Any] = doc["result"]
                return result

    async def evaluate(self, expression: str) -> Any:
        res = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in res, res
        return res["result"].get("value")

    async def wait_for(self, expression: str, within: float = 10.0) -> Any:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            value = await self.evaluate(expression)
            if value:
                return value
            await asyncio.sleep(0.1)
        raise AssertionError(f"{expression!r} not truthy within {within}s")

    async def screenshot(self, path: Path, width: int, height: int, *, mobile: bool = False) -> bytes:
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=mobile,
        )
        await asyncio.sleep(0.3)  # let the resize handler redraw the chart
        if height <= 0:
            full = int(await self.evaluate("document.documentElement.scrollHeight"))
            await self.send(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=full,
                deviceScaleFactor=1,
                mobile=mobile,
            )
            await asyncio.sleep(0.3)
        png = base64.b64decode((await self.send("Page.captureScreenshot", format="png"))["data"])
        await asyncio.to_thread(_save, path, png)
        return png


@contextlib.asynccontextmanager
async def browser() -> AsyncIterator[Browser]:
    assert CHROMIUM is not None
    # Chromium helper processes can still be writing the profile as the main process exits.
    with tempfile.TemporaryDirectory(prefix="bmsgw-chromium-", ignore_cleanup_errors=True) as tmp:
        profile = Path(tmp)
        proc = await asyncio.create_subprocess_exec(
            CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--window-size=1280,1600", "about:blank",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            async with aiohttp.ClientSession() as http:
                b = Browser(proc, http)
                await b.attach(profile)
                try:
                    yield b
                finally:
                    if b.ws is not None:
                        await b.ws.close()
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


def _save(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


async def test_dashboard_renders_state_and_follows_live_updates() -> None:
    pack = PackModel(current=-20.0)
    pack.cell_v = np.linspace(3.290, 3.320, 16)
    pack.cell_v[6] = 3.335  # the highest cell
    pack.cell_t = np.array([24.5, 25.0, 26.5, 25.5])
    async with web_rig(pack) as rig, browser() as b:
        await rig.until(lambda s: s.usable, what="pack online")
        await b.send("Page.navigate", url=rig.url + "/")
        soc_text = await b.wait_for(
            "(e => e && e.textContent.endsWith('%') ? e.textContent : null)"
            "(document.getElementById('soc-value'))"
        )
        state = rig.gateway.state()
        assert re.fullmatch(r"\d{1,3}\.\d%", soc_text)
        # The SOC the page shows is the state's (it moves a little while the pack discharges).
        assert float(soc_text[:-1]) == pytest.approx(state.soc * 100, abs=0.5)
        dom = await b.evaluate("document.documentElement.outerHTML")
        assert "3.335" in dom  # the highest cell's voltage, as the state holds it
        assert state.cell_v_max == pytest.approx(3.335)
        assert await b.evaluate("document.querySelectorAll('[data-pack=p1] .cellt').length") == 16
        assert (
            await b.evaluate("document.querySelector('[data-pack=p1] .cellt.max .mv').textContent") == "3.335"
        )
        assert (
            await b.evaluate("document.querySelector('[data-pack=p1] .cellt.min .mv').textContent") == "3.290"
        )
        assert "Discharging" in await b.evaluate("document.querySelector('.flow').textContent")
        health = state.packs[0].health
        assert health is not None  # the pack's equivalent full cycles, as the state holds them
        cycles = await b.evaluate("document.querySelector('[data-pack=p1] .cycles').textContent")
        assert float(cycles) == pytest.approx(health.equivalent_full_cycles, abs=0.05)
        assert await b.evaluate("document.getElementById('conn').dataset.state") == "live"

        # Live: the pack changes, the page follows through /api/events without reloading.
        await b.evaluate("window.bmsgwTestMarker = 42")
        pack.cell_v[6] = 3.301
        pack.cell_v[11] = 3.344
        await rig.until(lambda s: s.cell_v_max == pytest.approx(3.344), what="new maximum in the state")
        await b.wait_for(
            "document.querySelector('[data-pack=p1] .cellt.max .mv').textContent === '3.344'", within=10
        )
        assert await b.evaluate("window.bmsgwTestMarker") == 42  # same page: no reload

        await b.wait_for("!!document.querySelector('#history-chart svg path.series')", within=10)
        png = await b.screenshot(SHOTS / "dashboard-desktop.png", 1280, 1600)
        assert _png_size(png) == (1280, 1600)
        assert len(png) > 30_000  # a rendered page, not a blank one
        phone = await b.screenshot(SHOTS / "dashboard-phone.png", 390, 0, mobile=True)
        assert _png_size(phone)[0] == 390
        # Nothing overflows sideways on a phone.
        assert await b.evaluate("document.documentElement.scrollWidth") <= 390


async def test_dashboard_shows_active_balancing_transfers() -> None:
    pack = PackModel(current=0.0)  # resting at LFP's top knee: cell 7 highest, cell 3 lowest
    pack.cell_v = np.full(16, 3.42)
    pack.cell_v[6] = 3.46
    pack.cell_v[2] = 3.40
    async with web_rig(pack, extra={"balancing": {"mode": "active"}}) as rig, browser() as b:
        await rig.until(lambda s: s.packs[0].transfers != (), within=15, what="a planned transfer")
        await b.send("Page.navigate", url=rig.url + "/")
        text = await b.wait_for(
            "(e => e && e.textContent)(document.querySelector('[data-pack=p1] .xfers'))", within=15
        )
        assert text == "balancing cell 7 → cell 3, 2.0 A"
        tiles = "[...document.querySelectorAll('[data-pack=p1] .cellt')]"
        classes = await b.evaluate(f"{tiles}.map(e => e.className.split(' '))")
        assert [i for i, c in enumerate(classes) if "xout" in c] == [6]
        assert [i for i, c in enumerate(classes) if "xin" in c] == [2]
        assert not any("bal" in c for c in classes)  # active mode: no bleeding
        assert "giving 2.0 A to cell 3" in await b.evaluate(f"{tiles}[6].title")
        assert "receiving 2.0 A from cell 7" in await b.evaluate(f"{tiles}[2].title")
        png = await b.screenshot(SHOTS / "dashboard-transfers.png", 1280, 1600)
        assert len(png) > 30_000

        # Balanced: the plan ends and the page follows.
        pack.cell_v = np.full(16, 3.42)
        await b.wait_for(
            "!document.querySelector('[data-pack=p1] .xfers') && "
            "!document.querySelector('[data-pack=p1] .cellt.xout, [data-pack=p1] .cellt.xin')",
            within=15,
        )
        summary = await b.evaluate("document.querySelector('[data-pack=p1] .cell-summary').textContent")
        assert summary.endswith("balancing off")


async def test_dashboard_shows_the_charge_stage_and_each_packs_part() -> None:
    packs = [{"id": f"p{k + 1}", "cells": 16, "sensors": 4, "chemistry": "lfp", "capacity_ah": 100,
              "address": k} for k in range(2)]  # fmt: skip
    async with web_rig(PackModel(current=5.0), extra={"packs": packs}) as rig, browser() as b:
        await rig.until(lambda s: s.packs[0].in_service, what="p1 in service")
        await b.send("Page.navigate", url=rig.url + "/")
        stage = await b.wait_for("(e => e && e.textContent)(document.querySelector('#limits .stage'))")
        want = {"bulk": "bulk charge", "absorption": "absorption", "float": "float"}
        assert stage == f"stage: {want[rig.gateway.state().limits.charge_stage.value]}"
        share = await b.wait_for("(e => e && e.textContent)(document.querySelector('[data-pack=p1] .share'))")
        assert share == f"{round(100 * rig.gateway.state().packs[0].share)} %"  # p2 unseen: p1 carries all
        assert await b.evaluate("document.querySelector('[data-pack=p2] .share') === null")  # no data
