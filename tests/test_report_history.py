"""Maintenance and passport reports on simulator histories with injected weak cells and aging."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pytest
from history_rig import DAY, EPOCH0, Phase, aged, below, capacity_cycle, history_settings, run_session

from bmsgw.cli import main
from bmsgw.config import Settings
from bmsgw.model import Chemistry, PackHealth
from bmsgw.pipeline import Pipeline
from bmsgw.reports import load, maintenance, passport, render
from bmsgw.sim import SimPackConfig
from bmsgw.telemetry.history_db import HistoryDB, open_readonly
from bmsgw.telemetry.history_service import HistoryRecorder

WEAK_CAPACITY = 5  # 0-based: cell #6 has 85 % of its neighbours' capacity
WEAK_RESISTANCE = 2  # cell #3 has 4 × the resistance
BASE = SimPackConfig(
    cells=8, chemistry=Chemistry.LFP, capacity_ah=10.0, sensors=2, initial_soc=0.5, seed=3,
    cell_capacity_scale=tuple(0.85 if k == WEAK_CAPACITY else 1.0 for k in range(8)),
    cell_resistance_scale=tuple(4.0 if k == WEAK_RESISTANCE else 1.0 for k in range(8)),
)  # fmt: skip
MONTHS = 4
IDLE_HOUR = 3


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Path]:
    """Four monthly capacity cycles of an aging pack, then a deep discharge and a hot afternoon."""
    tmp = tmp_path_factory.mktemp("report")
    settings = history_settings(tmp)
    db = HistoryDB(tmp / "history.db")
    for m in range(MONTHS):
        run_session(settings, db, aged(BASE, m), EPOCH0 + m * 30 * DAY, capacity_cycle())
    late = EPOCH0 + MONTHS * 30 * DAY
    deep = dataclasses.replace(aged(BASE, MONTHS), initial_soc=0.4)
    run_session(settings, db, deep, late, [Phase(-10.0, 3600, below(2.3), obey_limits=False), Phase(0, 600)])
    hot = dataclasses.replace(aged(BASE, MONTHS), ambient_c=60.0)
    run_session(settings, db, hot, late + DAY, [Phase(0.0, 3600)])
    # A day of small loads, alternating by the hour, idle from 03:00 to 04:00 local time.
    run_session(settings, db, aged(BASE, MONTHS), late + 2 * DAY, [Phase(_day_load, DAY)], dt=10.0)
    db.close()
    return settings, tmp / "history.db"


def _day_load(epoch: float) -> float:
    hour = time.localtime(epoch).tm_hour
    return 0.0 if hour == IDLE_HOUR else (-0.4 if hour % 2 else 0.4)


def _load_reports(history: tuple[Settings, Path]) -> tuple[dict, dict]:  # type: ignore[type-arg]
    settings, path = history
    conn = open_readonly(path)
    h = load(settings, conn)
    conn.close()
    return maintenance(h), passport(h)


def test_maintenance_names_the_injected_weak_cells(history: tuple[Settings, Path]) -> None:
    doc, _ = _load_reports(history)
    (pack,) = doc["packs"]
    by_kind = {(c["kind"], c["cell"]) for c in pack["weak_cells"]}
    assert ("capacity", WEAK_CAPACITY) in by_kind
    assert ("resistance", WEAK_RESISTANCE) in by_kind
    cap = next(c for c in pack["weak_cells"] if c["kind"] == "capacity" and c["cell"] == WEAK_CAPACITY)
    assert "at the end of" in cap["evidence"]  # the end-of-discharge evidence agrees with the vectors
    others = {c["cell"] for c in pack["weak_cells"]} - {WEAK_CAPACITY, WEAK_RESISTANCE}
    assert not others, pack["weak_cells"]
    res = next(c for c in pack["weak_cells"] if c["kind"] == "resistance")
    assert res["extra_resistance_ohm"] > 3e-3  # ~3 × a 10 Ah cell's ~3 mΩ (plus its RC part)
    actions = " ".join(a["action"] for a in pack["actions"])
    assert "cell #6" in actions
    assert "cell #3" in actions
    assert doc["low_load_window"]["start_hour"] == IDLE_HOUR
    assert all(doc["low_load_window"]["text"] in a["when"] for a in pack["actions"] if a["cell"] is not None)


def test_maintenance_shows_the_fade_and_a_remaining_life_with_its_basis(
    history: tuple[Settings, Path],
) -> None:
    doc, _ = _load_reports(history)
    (pack,) = doc["packs"]
    rul = pack["remaining_useful_life"]
    assert "linear fit of capacity retention" in rul["basis"]
    assert "full-to-empty discharge" in rul["basis"]
    # Injected: -2 % of capacity per month on the weakest (85 %) cell: -20 %/year of rated capacity.
    assert -30 < rul["fade_pct_per_year"] < -14
    assert pack["capacity_retention"]["retention"] < 0.8
    text = render(doc)
    assert "weak cell #6 (capacity)" in text
    assert "weak cell #3 (resistance)" in text
    assert "remaining useful life" in text


def test_passport_fields(history: tuple[Settings, Path]) -> None:
    _, doc = _load_reports(history)
    assert doc["schema"] == "bmsgw-battery-passport/1"
    (p,) = doc["packs"]
    assert p["chemistry"] == "lfp"
    assert p["rated_capacity_ah"] == 10.0
    assert p["nominal_voltage_v"] == pytest.approx(8 * 3.2)
    retention = [m["retention_pct"] for m in p["capacity_retention"]]
    assert len(retention) >= 3
    assert retention == sorted(retention, reverse=True)  # fading month by month
    assert 15 < p["capacity_fade_pct"] < 30
    discharged = p["energy_throughput_kwh"]["discharged"]
    assert 0.7 < discharged < 1.3  # four ~80 % discharges of a 0.256 kWh pack, plus the deep one
    assert p["equivalent_full_cycles_counters"] == pytest.approx(discharged / p["rated_energy_kwh"], rel=0.1)
    events = p["negative_events"]
    assert events["deep_discharge"]["count"] == 1
    assert events["deep_discharge"]["events"][0]["cell"] == WEAK_CAPACITY
    hours = events["time_above_temperature_limit_h"]
    assert 0.8 <= hours["total"] <= 1.05  # one hour at 60 °C ambient (limit 55 °C), at 60 s resolution
    assert events["alarms_raised"].get("overtemperature", 0) >= 1
    if p["resistance"] is None:  # no PackHealth R0 in these runs: nothing invented
        assert p["equivalent_full_cycles_source"] != "health"
    else:  # the health estimator's R0 shows the injected +10 %/month over three months
        assert 15 < p["resistance"]["increase_pct"] < 45


def test_report_cli_text_and_json(history: tuple[Settings, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _, path = history
    config = path.parent / "c.toml"
    config.write_text(
        f'[gateway]\nstate_dir = "{path.parent}"\n[[packs]]\nid = "p1"\ncells = 8\nsensors = 2\n'
        "capacity_ah = 10\n[history]\nenabled = true\n"
    )
    assert main(["report", "passport", "--config", str(config), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["packs"][0]["identity"]["pack_id"] == "p1"
    assert main(["report", "maintenance", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "weak cell #6 (capacity)" in out
    assert main(["report", "maintenance", "--db", str(path.parent / "missing.db")]) == 2
    assert "no history database" in capsys.readouterr().err


def test_passport_uses_health_snapshots_without_measured_discharges(tmp_path: Path) -> None:
    settings = history_settings(tmp_path, health_period_s=3600)
    db = HistoryDB(tmp_path / "history.db")
    pipe = Pipeline(settings)
    from bmsgw.model import PackSample

    caps = np.full(8, 10.0)
    for month, (soh_c, r0) in enumerate([(1.0, 3.0e-3), (0.97, 3.3e-3), (0.94, 3.6e-3)]):
        rec = HistoryRecorder(settings, EPOCH0 + month * 30 * DAY)
        for k in range(3):
            t = float(k * 3600)
            pipe.submit(
                PackSample(0, t + month * 1e5, np.full(8, 3.3), np.full(2, 25.0), -1.0, 26.4, alive=k)
            )
            state = pipe.step(t + month * 1e5)
            health = PackHealth(
                soh=soh_c, soh_capacity=soh_c, soh_resistance=1.0, capacity_ah=10 * soh_c,
                cell_capacity_ah=caps * soh_c, r0_ohm=r0, cell_r0_ohm=np.full(8, r0),
                equivalent_full_cycles=50.0 * (month + 1), dod_histogram=(0,) * 10,
                calendar_days=30.0 * month,
                cell_self_discharge_pct_day=np.zeros(8),
            )  # fmt: skip
            view = dataclasses.replace(state.packs[0], health=health)
            rec.see(dataclasses.replace(state, t=t, packs=(view,)))
        rec.close()
        db.write(rec.take())
    assert db.conn.execute("SELECT count(*) FROM health").fetchone()[0] == 9
    conn = open_readonly(tmp_path / "history.db")
    doc = passport(load(settings, conn))
    conn.close()
    (p,) = doc["packs"]
    assert p["capacity_fade_source"] == "health"
    assert p["capacity_fade_pct"] == pytest.approx(6.0)
    assert p["resistance"]["increase_pct"] == pytest.approx(20.0)
    assert p["equivalent_full_cycles"] == 150.0
