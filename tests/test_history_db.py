"""History database: written by a real gateway on the simulator, WAL, retention, export, energy, failures."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest
from history_rig import DAY, EPOCH0, history_settings
from hypothesis import given
from hypothesis import strategies as st

from bmsgw.app import Gateway
from bmsgw.cli import main
from bmsgw.clock import SteppedClock
from bmsgw.config import ConfigError, Settings, load_settings
from bmsgw.history_export import ExportError, parse_time
from bmsgw.model import AlarmCode, AlarmLevel
from bmsgw.sources.can import CanPackSource
from bmsgw.sources.simulator import SimulatedPacks, simulation_settings
from bmsgw.telemetry.energy import EnergyTotals
from bmsgw.telemetry.history_db import Batch, HistoryDB, Retention, is_full, open_readonly, unpack_vector
from bmsgw.telemetry.history_service import ALARM_KEY, DbHistory, HistoryService

SIM = ["--quiet", "--speed", "400", "--set", "web.enabled=false", "--set", "history.enabled=true",
       "--set", "history.series_period_s=10", "--set", "history.cells_period_s=60"]  # fmt: skip


def simulate(state_dir: Path, seconds: float = 600) -> Path:
    """`bmsgw simulate` with history on; the database file."""
    args = ["simulate", "--duration", str(seconds), "--set", f"gateway.state_dir={state_dir}", *SIM]
    assert main(args) == 0
    return state_dir / "history.db"


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return simulate(tmp_path_factory.mktemp("hist"))


def test_simulation_writes_a_wal_database_that_checks_ok(simulated: Path) -> None:
    conn = open_readonly(simulated)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    n = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
         for t in ("system_series", "pack_series", "cell_vectors", "energy", "events")}  # fmt: skip
    assert n["system_series"] >= 55  # 600 s at 10 s
    assert n["pack_series"] >= 55
    assert 8 <= n["cell_vectors"] <= 12  # every 60 s
    row = conn.execute("SELECT cell_v, cell_t, current FROM cell_vectors ORDER BY t DESC").fetchone()
    cells = unpack_vector(row[0])
    assert cells is not None
    assert len(cells) == 16
    assert all(2.5 < v < 3.65 for v in cells if v is not None)
    # the start-up comm_lost is recorded as raise then clear
    kinds = [(k, c) for k, c in conn.execute("SELECT kind, code FROM events ORDER BY rowid")]
    assert kinds[:2] == [("raise", "comm_lost"), ("clear", "comm_lost")]
    # series values are plausible and limits carry reasons
    soc, ccl, reason, vmin_cell = conn.execute(
        "SELECT soc, ccl, ccl_reason, (SELECT cell_v_min_cell FROM pack_series ORDER BY t DESC LIMIT 1) "
        "FROM system_series ORDER BY t DESC"
    ).fetchone()
    assert 0 < soc < 1
    assert ccl > 0
    assert reason in ("config", "recovery")
    assert 0 <= vmin_cell < 16
    conn.close()


def test_export_csv_and_json_round_trip_with_time_filter(
    simulated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conn = open_readonly(simulated)
    want = conn.execute("SELECT t, soc, current, ccl_reason FROM system_series WHERE t >= 100 AND t <= 200"
                        " ORDER BY t").fetchall()  # fmt: skip
    conn.close()
    out = tmp_path / "s.csv"
    assert (
        main(["history", "export", "--db", str(simulated), "--from", "100", "--to", "200", "-o", str(out)])
        == 0
    )
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [(float(r["t"]), float(r["soc"]), float(r["current"]), r["ccl_reason"]) for r in rows] == want
    assert rows[0]["time"] == "1970-01-01T00:01:40.000Z"

    assert main(["history", "export", "--db", str(simulated), "--format", "json", "--table", "all",
                 "--from", "0", "--to", "60"]) == 0  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    assert doc["meta"]["chemistry"] == "lfp"
    assert json.loads(doc["meta"]["packs"])[0]["cells"] == 16
    tables = doc["tables"]
    assert [r["t"] for r in tables["system_series"]] == [0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
    assert all(0 <= r["t"] <= 60 for name in tables for r in tables[name])
    vec = tables["cell_vectors"][0]
    assert len(vec["cell_v"]) == 16
    assert len(vec["cell_t"]) == 4


def test_export_rejects_bad_input(simulated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["history", "export", "--db", str(simulated), "--from", "yesterday"]) == 2
    assert "--from 'yesterday': expected ISO-8601" in capsys.readouterr().err
    assert main(["history", "export", "--db", str(simulated), "--from", "200", "--to", "100"]) == 2
    assert "is before" in capsys.readouterr().err
    assert main(["history", "export", "--db", str(simulated), "--table", "all"]) == 2
    assert "one table" in capsys.readouterr().err
    assert main(["history", "export", "--db", str(simulated.parent / "nope.db")]) == 2
    assert "no history database" in capsys.readouterr().err


def test_parse_time_forms() -> None:
    now = 1_000_000.0
    assert parse_time("now", now) == now
    assert parse_time("-24h", now) == parse_time("24h", now) == now - 86_400
    assert parse_time("-90s", now) == now - 90
    assert parse_time("-2w", now) == now - 2 * 604_800
    assert parse_time("1763600000", now) == 1_763_600_000
    assert parse_time("2026-01-01T00:00:00Z", now) == EPOCH0
    assert parse_time("2026-01-01T01:00:00+01:00", now) == EPOCH0
    for bad in ("", "-h", "tomorrow", "nan", "2026-13-01"):
        with pytest.raises(ExportError):
            parse_time(bad, now)


@given(st.text(max_size=40))
def test_parse_time_never_raises_anything_but_its_error(text: str) -> None:
    try:
        value: float | str = parse_time(text, 1e9)
    except ExportError as exc:
        value = str(exc)
    if isinstance(value, str):
        assert repr(text) in value  # the message names the input
    else:
        assert np.isfinite(value)


def test_energy_counters_survive_a_restart(tmp_path: Path) -> None:
    db = simulate(tmp_path, 300)
    with sqlite3.connect(db) as conn:
        first = conn.execute("SELECT charged_wh, discharged_wh FROM counters WHERE pack = -1").fetchone()
    assert first[0] + first[1] > 1.0  # the solar day moves energy at 11:00
    settings, _ = load_settings(cli={"gateway.state_dir": str(tmp_path), "history.enabled": True,
                                     "web.enabled": False})  # fmt: skip
    gw = Gateway(settings, SteppedClock())
    assert (gw.energy.system.charged_wh, gw.energy.system.discharged_wh) == pytest.approx(first)
    simulate(tmp_path, 300)
    with sqlite3.connect(db) as conn:
        second = conn.execute("SELECT charged_wh + discharged_wh FROM counters WHERE pack = -1").fetchone()[0]
        pack = conn.execute("SELECT charged_wh + discharged_wh FROM counters WHERE pack = 0").fetchone()[0]
    assert second > sum(first) + 1.0
    assert pack == pytest.approx(second, rel=0.02)  # the pack meter and the system meter agree


def test_retention_deletes_old_rows_and_keeps_counters(tmp_path: Path) -> None:
    db = HistoryDB(tmp_path / "h.db")
    batch = Batch()
    for day in range(10):
        t = EPOCH0 + day * DAY
        batch.rows["pack_series"].append(
            (t, 0, 1, 0.5, None, 52.0, -10.0, -520.0, 25, 26, 3.2, 1, 3.3, 2, 0.1, None)
        )
        batch.rows["cell_vectors"].append((t, 0, 0.5, -10.0, 52.0, b"", None, None))
        batch.rows["events"].append((t, "raise", "cell_imbalance", 1, 0, ""))
    batch.counters[-1] = (EPOCH0, EnergyTotals(5.0, 6.0, 0.1, 0.2))
    db.write(batch)
    now = EPOCH0 + 9 * DAY
    deleted = db.prune(now, Retention(series_s=5 * DAY, cells_s=2 * DAY, events_s=7 * DAY))
    count = {t: db.conn.execute(f"SELECT count(*), min(t) FROM {t}").fetchone()
             for t in ("pack_series", "cell_vectors", "events")}  # fmt: skip
    assert count["pack_series"] == (6, now - 5 * DAY)
    assert count["cell_vectors"] == (3, now - 2 * DAY)
    assert count["events"] == (8, now - 7 * DAY)
    assert deleted == 4 + 7 + 2
    assert db.counters()[0] == EnergyTotals(5.0, 6.0, 0.1, 0.2)
    assert db.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()


def test_size_cap_drops_the_oldest_rows_when_full(tmp_path: Path) -> None:
    db = HistoryDB(tmp_path / "h.db", max_size_mb=0.2)
    blob = bytes(2000)
    t = EPOCH0
    error: sqlite3.Error | None = None
    for _ in range(200):
        batch = Batch()
        for _ in range(10):
            t += 60
            batch.rows["cell_vectors"].append((t, 0, 0.5, 0.0, 52.0, blob, blob, None))
        try:
            db.write(batch)
        except sqlite3.Error as exc:
            error = exc
            break
    assert error is not None
    assert is_full(error)
    assert db.prune_oldest(0.5) > 0
    db.write(batch)  # room again
    newest = db.conn.execute("SELECT max(t) FROM cell_vectors").fetchone()[0]
    assert newest == t
    db.close()


def _sim_gateway(settings: Settings) -> tuple[Gateway, SimulatedPacks]:
    clock = SteppedClock(400.0)
    gw = Gateway(settings, clock, frame_timestamps=True)
    src = next(s for s in gw.sources if isinstance(s, CanPackSource))
    sim = SimulatedPacks(settings, clock, gw.state, lambda: src.last_frame_t, seed=1)
    return gw, sim


async def test_unwritable_database_raises_an_alarm_control_continues_then_recovers(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    base, _ = load_settings(cli={"gateway.state_dir": str(blocker / "state"), "history.enabled": True,
                                 "history.flush_period_s": 5, "web.enabled": False})  # fmt: skip
    settings = simulation_settings(base)
    gw, sim = _sim_gateway(settings)
    service = next(s for s in gw.services if isinstance(s, HistoryService))
    seen: list[AlarmLevel | None] = []
    gw.on_state(lambda s: seen.append(s.alarm_level(AlarmCode.HISTORY_DEGRADED)))
    task = asyncio.create_task(gw.run(sim.run))
    try:
        async with asyncio.timeout(60):
            while ALARM_KEY not in gw.pipeline.service_alarms or gw.clock.now() < 120:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        state = gw.state()
        assert state.alarm_level(AlarmCode.HISTORY_DEGRADED) is AlarmLevel.WARNING
        assert state.usable
        assert state.limits.ccl.value > 0
        assert state.limits.dcl.value > 0
        assert service.write_errors >= 1
        assert len(service.pending) > 0
        steps = gw.pipeline.steps
        blocker.unlink()  # the disk is back: the next retry writes everything and clears the alarm
        async with asyncio.timeout(60):
            # the alarm clears between steps: wait for a published state that shows it cleared
            while ALARM_KEY in gw.pipeline.service_alarms or seen[-1] is not None:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert gw.pipeline.steps > steps
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert AlarmLevel.WARNING in seen
    assert seen[-1] is None
    conn = open_readonly(blocker / "state" / "history.db")
    assert conn.execute("SELECT min(t) FROM system_series").fetchone()[0] == 0.0  # nothing lost
    assert conn.execute("SELECT count(*) FROM events WHERE code = 'history_degraded'").fetchone()[0] == 2
    conn.close()


async def test_a_flush_queued_behind_a_slow_write_survives_shutdown(tmp_path: Path) -> None:
    base, _ = load_settings(cli={"gateway.state_dir": str(tmp_path), "history.enabled": True,
                                 "web.enabled": False})  # fmt: skip
    gw, _ = _sim_gateway(simulation_settings(base))
    service = next(s for s in gw.services if isinstance(s, HistoryService))
    service.recorder.batch.rows["events"].append((7.0, "clear", "history_degraded", 1, None, ""))
    busy, release = threading.Event(), threading.Event()

    def write_slowly() -> None:
        busy.set()
        release.wait(30)

    service._executor.submit(write_slowly)  # the writer is busy: the next flush waits in its queue
    assert busy.wait(10)
    task = asyncio.create_task(service.run())
    while service._executor._work_queue.empty():  # noqa: ASYNC110
        await asyncio.sleep(0)
    task.cancel()  # shutdown while that flush has not started
    threading.Timer(0.2, release.set).start()  # the final flush blocks the loop behind both
    await asyncio.gather(task, return_exceptions=True)
    conn = open_readonly(tmp_path / "history.db")
    rows = conn.execute("SELECT t, kind FROM events WHERE code = 'history_degraded'").fetchall()
    assert rows == [(7.0, "clear")]
    conn.close()


async def test_web_history_backend_reads_the_database(tmp_path: Path) -> None:
    base, _ = load_settings(cli={"gateway.state_dir": str(tmp_path), "history.enabled": True,
                                 "history.series_period_s": 10, "web.enabled": False})  # fmt: skip
    gw, sim = _sim_gateway(simulation_settings(base))
    assert isinstance(gw.history, DbHistory)
    await gw.run(sim.run, duration=300)
    r = gw.history.query(None, None)
    assert r.resolution_s == 10
    assert r.t[0] == 0.0
    assert len(r.t) >= 29
    soc = [x for x in r.packs["pack1"]["soc"] if x is not None]
    assert len(soc) >= 28
    assert all(0 < x < 1 for x in soc)
    merged = gw.history.query(100, 200, points=3)
    assert merged.resolution_s == 40
    assert all(100 - 40 <= t <= 200 for t in merged.t)
    assert np.nanmax(np.array(merged.system["cell_v_max"], dtype=float)) >= np.nanmax(
        np.array(gw.history.query(100, 200).system["cell_v_max"], dtype=float)
    )


def test_history_section_is_validated_and_env_overridable() -> None:
    with pytest.raises(ConfigError, match=r"history\.series_period_s = 0"):
        load_settings(cli={"history.series_period_s": 0}, env={})
    with pytest.raises(ConfigError, match="cells_period_s must be >= series_period_s"):
        load_settings(cli={"history.series_period_s": 600, "history.cells_period_s": 60}, env={})
    s, origin = load_settings(env={"BMSGW_HISTORY__ENABLED": "true", "BMSGW_HISTORY__PATH": "/data/h.db"})
    assert s.history.enabled
    assert s.history.path == Path("/data/h.db")
    assert origin["history.path"].value == "env"


def test_health_rows_only_when_the_estimator_has_them(tmp_path: Path) -> None:
    settings = history_settings(tmp_path)
    assert settings.history.enabled
    from history_rig import Phase, run_session

    from bmsgw.model import Chemistry
    from bmsgw.sim import SimPackConfig

    db = HistoryDB(tmp_path / "h.db")
    cfg = SimPackConfig(cells=8, chemistry=Chemistry.LFP, capacity_ah=10, sensors=2)
    state = run_session(settings, db, cfg, EPOCH0, [Phase(-5.0, 600)])
    rows = db.conn.execute("SELECT count(*) FROM health").fetchone()[0]
    assert rows == (0 if state.packs[0].health is None else 1)
    db.close()
