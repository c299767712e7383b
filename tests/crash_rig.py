"""SIGKILL rig: `bmsgw run` as a real process on a fake JK BMS over a pty, killed at random moments.

Used by tests/test_crash_restore.py (50 rounds) and bench/crash.py (as many as asked).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from fake_bms import BmsModel, FakeBms
from fakes import running
from ptys import pty_pair

from bmsgw.core.chemistry import profile, soc_from_ocv
from bmsgw.model import Chemistry
from bmsgw.state import StateStore

CHARGING_A = 5.0
START_V = 3.33  # cell voltage in phase A (the SOC the state file will hold comes from here)
KILL_V = 3.20  # cell voltage while killing: OCV far from the saved SOC, so a lost state shows


@dataclass
class CrashReport:
    """What the rounds saw."""

    rounds: int = 0
    kills: int = 0
    loads_ok: int = 0  # state file loadable after a kill
    restored_logs: int = 0  # rounds whose log says the state was restored
    started_logs: int = 0  # rounds that got as far as running the gateway
    history_checked: int = 0  # history DB integrity checks that said "ok"
    soc_start: float = 0.0  # SOC saved by the clean phase-A run
    soc_end: float = 0.0  # SOC saved after the last round
    soc_ocv_kill: float = 0.0  # what a start from OCV at KILL_V would give
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0


def config(tmp: Path, port: str) -> Path:
    """A bmsgw.toml for one 16S LFP JK pack on `port`, saving its state every second."""
    path = tmp / "bmsgw.toml"
    path.write_text(
        "[gateway]\n"
        f'state_dir = "{tmp / "state"}"\n'
        "state_save_period_s = 1\n"
        "[web]\nenabled = false\n"
        "[history]\nenabled = true\nflush_period_s = 1\nseries_period_s = 1\n"
        "[[packs]]\n"
        f'id = "jk1"\nsource = "jk"\nport = "{port}"\ncells = 16\nsensors = 2\ncapacity_ah = 100\n'
    )
    path.chmod(0o600)
    return path


async def kill_rounds(tmp: Path, rounds: int, seed: int = 1) -> CrashReport:
    """Phase A: run cleanly and save; phase B: `rounds` starts each SIGKILLed after a random time."""
    rep = CrashReport(rounds=rounds)
    rep.soc_ocv_kill = soc_from_ocv(profile(Chemistry.LFP), KILL_V)
    rng = random.Random(seed)
    store = StateStore(tmp / "state")
    t0 = time.monotonic()
    with pty_pair() as pty:
        model = BmsModel(cell_v=[START_V] * 16, current=CHARGING_A)
        async with running(FakeBms("jk", pty, model).run):
            cfg = config(tmp, pty.path)
            # phase A: a clean run that saves a state (SIGTERM persists it)
            proc = await _start(cfg)
            if not await _until_saved(store, 20.0):
                rep.problems.append("phase A: no state saved within 20 s")
            proc.send_signal(signal.SIGTERM)
            await _collect(proc, 15.0)
            rep.soc_start = _soc(store)
            # phase B: the cells now sit where OCV means another SOC; kill at random moments
            model.cell_v = [KILL_V] * 16
            for k in range(rounds):
                proc = await _start(cfg)
                log = ""
                if k % 2 == 0:  # even rounds: kill while it runs (saves happen every second) …
                    log = await _read_until(proc, "gateway running", 30.0)
                    await asyncio.sleep(rng.uniform(0.0, 2.0))
                else:  # … odd rounds: at any moment from the start, start-up included
                    await asyncio.sleep(rng.uniform(0.05, 2.5))
                proc.kill()
                rep.kills += 1
                log += await _collect(proc, 10.0)
                rep.started_logs += "gateway running" in log or "estimator state restored" in log
                rep.restored_logs += "estimator state restored" in log
                if "starting from OCV" in log and "no saved" not in log:
                    rep.problems.append(f"round {k}: the daemon started from OCV: {_line(log, 'OCV')}")
                try:
                    store.load()
                    rep.loads_ok += 1
                except Exception as exc:
                    rep.problems.append(f"round {k}: state file not loadable: {exc}")
                for db in (tmp / "state").glob("*.db"):
                    if _integrity(db) == "ok":
                        rep.history_checked += 1
                    else:
                        rep.problems.append(f"round {k}: {db.name} integrity_check: {_integrity(db)}")
    rep.soc_end = _soc(store)
    rep.seconds = time.monotonic() - t0
    return rep


async def _start(cfg: Path) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("NOTIFY_SOCKET", None)
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bmsgw", "run", "--config", str(cfg), "--log-format", "json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
    )  # fmt: skip


async def _read_until(proc: asyncio.subprocess.Process, needle: str, within: float) -> str:
    """Lines of `proc`'s output up to the first holding `needle` (or all there are within `within`)."""
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), deadline - time.monotonic())
        except TimeoutError:
            break
        if not line:
            break
        seen.append(line.decode(errors="replace"))
        if needle in seen[-1]:
            break
    return "".join(seen)


async def _collect(proc: asyncio.subprocess.Process, within: float) -> str:
    assert proc.stdout is not None
    try:
        out = await asyncio.wait_for(proc.stdout.read(), within)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    return out.decode(errors="replace")


async def _until_saved(store: StateStore, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            st = store.load()
        except Exception:
            st = None
        if st is not None and all(p.soc is not None for p in st.packs):
            return True
        await asyncio.sleep(0.1)
    return False


def _soc(store: StateStore) -> float:
    st = store.load()
    return float("nan") if st is None or st.packs[0].soc is None else float(st.packs[0].soc)


def _integrity(db: Path) -> str:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return str(con.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        con.close()


def _line(log: str, needle: str) -> str:
    for line in log.splitlines():
        if needle in line:
            try:
                return str(json.loads(line).get("event", line))
            except ValueError:
                return line
    return ""
