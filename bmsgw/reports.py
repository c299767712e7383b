"""`bmsgw report maintenance|passport`: what the history database says about the packs (docs/reports.md).

Both reports read the database only (read-only connection) plus the configuration (rated capacity,
thresholds). Evidence comes from `PackView.health` snapshots where the estimator produced them, and from
the history's own rows otherwise: cell vectors (which cell sits lowest at low SOC, sags most under load,
drifts at rest), pack series (end-of-discharge cell, rest spread, full→empty discharges, temperatures),
events and energy counters. Every figure names its source and basis.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bmsgw.config import Settings
from bmsgw.core.chemistry import profile
from bmsgw.history_export import read_rows
from bmsgw.pipeline import core_params
from bmsgw.telemetry.history_db import open_readonly

__all__ = ["History", "load", "maintenance", "passport", "render", "run_cli"]

EOL_RETENTION = 0.80  # end of life: capacity retention 80 %
_DAY = 86_400.0
_MIN_SPAN_DAYS = 1.0  # trends need at least this much history
WEAK_CAPACITY_MV = 0.030  # a cell this far below the median at low SOC is weak
LOW_SOC = 0.25
MID_SOC = (0.3, 0.9)
MIN_PROFILE_HOURS = 20  # hours of the day with data before a low-load window is named
RESISTANCE_Z = 4.0  # robust z-score of a cell's extra sag that flags it
MIN_EXTRA_R_OHM = 0.2e-3


@dataclass
class History:
    """The tables a report needs, as row dicts, plus the configuration they are judged against."""

    settings: Settings
    packs: list[dict[str, Any]]
    system: list[dict[str, Any]]
    vectors: list[dict[str, Any]]
    events: list[dict[str, Any]]
    health: list[dict[str, Any]]
    counters: dict[int, dict[str, float]]
    period_s: float


def load(settings: Settings, conn: sqlite3.Connection) -> History:
    """Everything in the database (reports look at the whole retained history)."""
    data = read_rows(conn, ["pack_series", "system_series", "cell_vectors", "events", "health"], None, None)
    counters = {
        int(r[0]): {
            "charged_wh": r[1] or 0.0,
            "discharged_wh": r[2] or 0.0,
            "charged_ah": r[3] or 0.0,
            "discharged_ah": r[4] or 0.0,
        }
        for r in conn.execute(
            "SELECT pack, charged_wh, discharged_wh, charged_ah, discharged_ah FROM counters"
        )
    }
    row = conn.execute("SELECT value FROM meta WHERE key = 'series_period_s'").fetchone()
    period = float(row[0]) if row else settings.history.series_period_s
    return History(
        settings,
        data["pack_series"],
        data["system_series"],
        data["cell_vectors"],
        data["events"],
        data["health"],
        counters,
        period,
    )


def maintenance(h: History, now: float | None = None) -> dict[str, Any]:
    """Weak cells, imbalance growth, remaining useful life and recommended actions, per pack."""
    s = h.settings
    params = core_params(s)
    window = _low_load_window(h.system)
    packs = []
    for i, pc in enumerate(s.packs):
        rows, vecs, health = _of_pack(h, i)
        weak = _weak_cells(rows, vecs, health, s.limits.rest_current_a, params.cell_v_min_warn)
        imbalance = _imbalance(rows, vecs, s.limits.rest_current_a)
        retention = _retention(rows, health, pc.capacity_ah, params.cell_v_min_warn, h.period_s)
        rul = _rul(retention)
        packs.append(
            {
                "pack": pc.id,
                "weak_cells": weak,
                "imbalance": imbalance,
                "capacity_retention": retention[-1] if retention else None,
                "remaining_useful_life": rul,
                "actions": _actions(weak, imbalance, rul, window),
            }
        )
    return {
        "report": "maintenance",
        "generated_at": _iso(now if now is not None else time.time()),
        "history": _span(h),
        "low_load_window": window,
        "packs": packs,
    }


def passport(h: History, now: float | None = None) -> dict[str, Any]:
    """EU battery-passport-style record per pack (fields: docs/reports.md)."""
    s = h.settings
    params = core_params(s)
    prof = profile(s.chemistry)
    packs = []
    for i, pc in enumerate(s.packs):
        rows, _, health = _of_pack(h, i)
        retention = _retention(rows, health, pc.capacity_ah, params.cell_v_min_warn, h.period_s)
        last = retention[-1] if retention else None
        counters = h.counters.get(i, {})
        nominal_v = prof.nominal_v * pc.cells
        efc, efc_source = _efc(health, counters, pc.capacity_ah)
        r_first = next((r["r0_ohm"] for r in health if _finite(r["r0_ohm"])), None)
        r_last = next((r["r0_ohm"] for r in reversed(health) if _finite(r["r0_ohm"])), None)
        resistance = (
            {
                "increase_pct": round((r_last / r_first - 1) * 100, 2),
                "power_fade_pct": round((1 - r_first / r_last) * 100, 2),
                "r0_first_mohm": round(r_first * 1e3, 4),
                "r0_now_mohm": round(r_last * 1e3, 4),
                "source": "health",
            }
            if r_first and r_last
            else None
        )
        packs.append(
            {
                "identity": {
                    "pack_id": pc.id,
                    "position": i,
                    "gateway": s.gateway.name,
                    "cells_in_series": pc.cells,
                    "temperature_sensors": pc.sensors,
                    "source": pc.source,
                },
                "chemistry": s.chemistry.value,
                "rated_capacity_ah": pc.capacity_ah,
                "nominal_voltage_v": round(nominal_v, 3),
                "rated_energy_kwh": round(nominal_v * pc.capacity_ah / 1000, 3),
                "capacity_fade_pct": round((1 - last["retention"]) * 100, 2) if last else None,
                "capacity_fade_source": last["source"] if last else None,
                "resistance": resistance,
                "equivalent_full_cycles": efc,
                "equivalent_full_cycles_source": efc_source,
                "equivalent_full_cycles_counters": (
                    round(counters["discharged_ah"] / pc.capacity_ah, 2) if counters else None
                ),
                "energy_throughput_kwh": {
                    "charged": round(counters.get("charged_wh", 0.0) / 1000, 3),
                    "discharged": round(counters.get("discharged_wh", 0.0) / 1000, 3),
                },
                "capacity_retention": _monthly(retention),
                "negative_events": _negative_events(
                    rows, h.events, i, params, h.period_s, s.limits.rest_current_a
                ),
            }
        )
    return {
        "report": "passport",
        "schema": "bmsgw-battery-passport/1",
        "generated_at": _iso(now if now is not None else time.time()),
        "history": _span(h),
        "packs": packs,
    }


def render(doc: dict[str, Any]) -> str:
    """Human-readable text of either report."""
    out = [f"bmsgw {doc['report']} report, generated {doc['generated_at']}"]
    span = doc["history"]
    out.append(f"history: {span['from']} .. {span['to']} ({span['days']} days)")
    if doc["report"] == "maintenance":
        w = doc["low_load_window"]
        out.append(f"low-load window: {w['text']}" if w else "low-load window: not enough history")
        for p in doc["packs"]:
            out.append(f"\npack {p['pack']}")
            if not p["weak_cells"]:
                out.append("  weak cells: none found")
            for c in p["weak_cells"]:
                out.append(
                    f"  weak cell #{c['cell'] + 1} ({c['kind']}): {c['evidence']} [source: {c['source']}]"
                )
            im = p["imbalance"]
            out.append(f"  imbalance: {im['text']}")
            cr = p["capacity_retention"]
            if cr:
                out.append(
                    f"  capacity retention: {cr['retention'] * 100:.1f} % ({cr['source']}, {cr['date']})"
                )
            rul = p["remaining_useful_life"]
            out.append(f"  remaining useful life: {rul['text']}")
            for a in p["actions"]:
                out.append(f"  - {a['action']} (when: {a['when']})")
        return "\n".join(out) + "\n"
    for p in doc["packs"]:
        ident = p["identity"]
        out.append(
            f"\npack {ident['pack_id']}: {p['chemistry']} {ident['cells_in_series']}S, "
            f"{p['rated_capacity_ah']} Ah, {p['nominal_voltage_v']} V, {p['rated_energy_kwh']} kWh"
        )
        fade = p["capacity_fade_pct"]
        src = p["capacity_fade_source"]
        out.append(f"  capacity fade: {'n/a' if fade is None else f'{fade} % ({src})'}")
        r = p["resistance"]
        out.append(
            f"  resistance increase: {r['increase_pct']} %, power fade {r['power_fade_pct']} %"
            if r
            else "  resistance increase: n/a (no health estimates yet)"
        )
        out.append(
            f"  equivalent full cycles: {p['equivalent_full_cycles']} ({p['equivalent_full_cycles_source']})"
        )
        e = p["energy_throughput_kwh"]
        out.append(f"  energy throughput: {e['charged']} kWh charged, {e['discharged']} kWh discharged")
        for m in p["capacity_retention"]:
            out.append(f"  retention {m['month']}: {m['retention_pct']} % ({m['source']})")
        ne = p["negative_events"]
        out.append(
            f"  deep discharges: {ne['deep_discharge']['count']}; time above temperature limits: "
            f"{ne['time_above_temperature_limit_h']['total']} h"
        )
    return "\n".join(out) + "\n"


def run_cli(name: str, settings: Settings, db: Path, *, as_json: bool) -> int:
    """The command: 0, or 2 with a message when the database cannot be read."""
    try:
        conn = open_readonly(db)
    except (OSError, sqlite3.Error) as exc:
        print(f"bmsgw: {exc}", file=sys.stderr)
        return 2
    try:
        h = load(settings, conn)
    finally:
        conn.close()
    doc = maintenance(h) if name == "maintenance" else passport(h)
    print(json.dumps(_clean(doc), indent=1) if as_json else render(doc), end="" if not as_json else "\n")
    return 0


# --- evidence --------------------------------------------------------------------------------------------


def _of_pack(h: History, i: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Pack i's series rows, cell vectors (with cell voltages) and health snapshots."""
    rows = [r for r in h.packs if r["pack"] == i]
    vecs = [v for v in h.vectors if v["pack"] == i and v["cell_v"] is not None]
    return rows, vecs, [r for r in h.health if r["pack"] == i]


def _weak_cells(
    rows: list[dict[str, Any]],
    vecs: list[dict[str, Any]],
    health: list[dict[str, Any]],
    rest_a: float,
    v_low: float,
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if health:
        last = health[-1]
        caps = np.array(last["cell_capacity_ah"] or [], dtype=float)
        if caps.size and np.isfinite(caps).any():
            med = float(np.nanmedian(caps))
            for k in np.flatnonzero(caps < 0.95 * med):
                found.append(
                    _weak(
                        int(k),
                        "capacity",
                        "health",
                        f"{caps[k]:.1f} Ah vs median {med:.1f} Ah ({caps[k] / med * 100:.0f} %)",
                    )
                )
        rs = np.array(last["cell_r0_ohm"] or [], dtype=float)
        if rs.size and np.isfinite(rs).sum() >= 2:
            med = float(np.nanmedian(rs))
            for k in np.flatnonzero(rs > 1.3 * med):
                found.append(
                    _weak(
                        int(k),
                        "resistance",
                        "health",
                        f"R0 {rs[k] * 1e3:.3f} mΩ vs median {med * 1e3:.3f} mΩ",
                    )
                )
        sd = np.array(last["cell_self_discharge_pct_day"] or [], dtype=float)
        if sd.size and np.isfinite(sd).any():
            for k in np.flatnonzero(sd < -0.1):
                found.append(
                    _weak(int(k), "self_discharge", "health", f"drifts {sd[k]:.2f} %/day vs the pack")
                )
    if vecs:
        found += _weak_from_vectors(vecs, rest_a)
    found += _end_of_discharge(rows, rest_a, v_low)
    merged: dict[tuple[int, str], dict[str, Any]] = {}
    for c in found:  # one entry per cell and kind, with every source's evidence
        same = merged.get((c["cell"], c["kind"]))
        if same is None:
            merged[(c["cell"], c["kind"])] = c
        else:
            same["evidence"] += f"; {c['evidence']}"
            if c["source"] not in same["source"]:
                same["source"] += f", {c['source']}"
            same.update({k: v for k, v in c.items() if k not in same})
    return list(merged.values())


def _weak(cell: int, kind: str, source: str, evidence: str, **extra: Any) -> dict[str, Any]:
    return {"cell": cell, "kind": kind, "source": source, "evidence": evidence, **extra}


def _weak_from_vectors(vecs: list[dict[str, Any]], rest_a: float) -> list[dict[str, Any]]:
    found = []
    v = np.array([x["cell_v"] for x in vecs], dtype=float)
    i = np.array([x["current"] for x in vecs], dtype=float)
    soc = np.array([np.nan if x["soc"] is None else x["soc"] for x in vecs], dtype=float)
    dev = v - np.median(v, axis=1, keepdims=True)
    low = (soc < LOW_SOC) & (i <= rest_a)
    if low.sum() >= 2:
        mean_low = dev[low].mean(axis=0)
        med = float(np.median(mean_low))
        mad = float(np.median(np.abs(mean_low - med))) * 1.4826 + 1e-4
        for k in np.flatnonzero((mean_low < -WEAK_CAPACITY_MV) & ((med - mean_low) / mad > RESISTANCE_Z)):
            found.append(
                _weak(
                    int(k),
                    "capacity",
                    "history",
                    f"{mean_low[k] * 1e3:.0f} mV below the median cell in {int(low.sum())} vectors "
                    "at low SOC",
                    deviation_v=round(float(mean_low[k]), 4),
                )
            )
    mid = (soc >= MID_SOC[0]) & (soc <= MID_SOC[1])
    if mid.sum() >= 4 and np.ptp(i[mid]) > 2 * rest_a:
        x = i[mid] - i[mid].mean()
        slope = (x @ (dev[mid] - dev[mid].mean(axis=0))) / (x @ x)  # Ω: extra resistance vs the median
        # The median cell's own sag (the LFP plateau is flat, so mid-SOC voltage vs current is resistance).
        vm = np.median(v[mid], axis=1)
        r_med = float(x @ (vm - vm.mean()) / (x @ x))
        med = float(np.median(slope))
        mad = float(np.median(np.abs(slope - med))) * 1.4826 + 1e-6
        floor = max(MIN_EXTRA_R_OHM, 0.5 * r_med)
        for k in np.flatnonzero(((slope - med) / mad > RESISTANCE_Z) & (slope - med > floor)):
            found.append(
                _weak(
                    int(k),
                    "resistance",
                    "history",
                    f"sags {(slope[k] - med) * 1e3:.2f} mΩ more than the median cell under load "
                    f"({int(mid.sum())} vectors)",
                    extra_resistance_ohm=round(float(slope[k] - med), 6),
                )
            )
    rest = np.abs(i) <= rest_a
    cs = [x["cell_soc"] for x in vecs]
    if rest.sum() >= 3 and all(c is not None for c in cs):
        t = np.array([x["t"] for x in vecs], dtype=float)[rest]
        if t[-1] - t[0] >= _MIN_SPAN_DAYS * _DAY:
            c = np.array(cs, dtype=float)[rest]
            d = (c - c.mean(axis=1, keepdims=True)) * 100
            days = (t - t[0]) / _DAY
            slope = np.polyfit(days, d, 1)[0]
            for k in np.flatnonzero(slope < -0.1):
                found.append(
                    _weak(
                        int(k),
                        "self_discharge",
                        "history",
                        f"drifts {slope[k]:.2f} %/day below the pack mean at rest",
                    )
                )
    return found


def _end_of_discharge(rows: list[dict[str, Any]], rest_a: float, v_low: float) -> list[dict[str, Any]]:
    """The cell lowest at the end of discharges (last discharging interval of each, at low SOC or voltage)."""
    ends: list[int] = []
    for prev, row in zip(rows, [*rows[1:], None], strict=True):
        if prev["current"] is None or prev["current"] >= -rest_a:
            continue
        if row is not None and row["current"] is not None and row["current"] < -rest_a:
            continue
        low = (prev["soc"] is not None and prev["soc"] < LOW_SOC) or (prev["cell_v_min"] or 9) <= v_low
        if low and prev["cell_v_min_cell"] is not None:
            ends.append(int(prev["cell_v_min_cell"]))
    if len(ends) < 2:
        return []
    cells, counts = np.unique(ends, return_counts=True)
    k = int(cells[np.argmax(counts)])
    share = counts.max() / len(ends)
    if share < 0.6:
        return []
    return [
        _weak(k, "capacity", "history", f"lowest cell at the end of {counts.max()} of {len(ends)} discharges")
    ]


def _imbalance(rows: list[dict[str, Any]], vecs: list[dict[str, Any]], rest_a: float) -> dict[str, Any]:
    pts = [
        (r["t"], r["cell_v_spread_rest"])
        for r in rows
        if r["cell_v_spread_rest"] is not None
        and r["soc"] is not None
        and MID_SOC[0] <= r["soc"] <= MID_SOC[1]
    ]  # mid-SOC rests only: where rests happen must not look like imbalance growth
    if len(pts) < 2:
        return {"rest_spread_mv": None, "growth_mv_per_30d": None, "text": "no mid-SOC rest recorded yet"}
    t = np.array([p[0] for p in pts])
    y = np.array([p[1] for p in pts]) * 1e3
    now_mv = float(np.median(y[t >= t[-1] - _DAY]))
    if t[-1] - t[0] < _MIN_SPAN_DAYS * _DAY:
        return {
            "rest_spread_mv": round(now_mv, 1),
            "growth_mv_per_30d": None,
            "text": f"{now_mv:.1f} mV at rest; trend needs >= {_MIN_SPAN_DAYS:g} day of history",
        }
    slope = float(np.polyfit((t - t[0]) / _DAY, y, 1)[0]) * 30
    return {
        "rest_spread_mv": round(now_mv, 1),
        "growth_mv_per_30d": round(slope, 2),
        "text": f"{now_mv:.1f} mV at mid-SOC rest, {slope:+.2f} mV per 30 days (linear fit of rest spread, "
        f"{len(pts)} intervals over {(t[-1] - t[0]) / _DAY:.0f} days)",
    }


def _retention(
    rows: list[dict[str, Any]], health: list[dict[str, Any]], rated_ah: float, v_empty: float, period: float
) -> list[dict[str, Any]]:
    """Capacity retention points, oldest first: measured full→empty discharges, else health snapshots.

    A measured discharge is direct evidence; the estimator's soh_capacity stays at its prior until it has
    learned a capacity, so it is the fallback.
    """
    measured = _measured_capacity(rows, rated_ah, v_empty, period)
    if measured:
        return measured
    return [
        {"t": r["t"], "date": _iso(r["t"])[:10], "retention": float(r["soh_capacity"]), "source": "health"}
        for r in health
        if _finite(r["soh_capacity"])
    ]


def _measured_capacity(
    rows: list[dict[str, Any]], rated_ah: float, v_empty: float, period: float
) -> list[dict[str, Any]]:
    """Retention of each full-to-empty discharge in the pack series (Ah out / rated Ah)."""
    out = []
    start: float | None = None
    ah = 0.0
    for r in rows:
        cur, soc = r["current"], r["soc"]
        if cur is None:
            start = None
            continue
        if soc is not None and soc >= 0.98 and cur >= -0.5:
            start, ah = r["t"], 0.0  # full (again): a measured discharge starts here
            continue
        if start is None:
            continue
        if cur > 0.5:
            start = None  # charged in between: not one discharge
            continue
        ah += -cur * period / 3600
        if (r["cell_v_min"] or 9) <= v_empty:
            out.append(
                {
                    "t": r["t"],
                    "date": _iso(r["t"])[:10],
                    "retention": ah / rated_ah,
                    "capacity_ah": round(ah, 2),
                    "source": "history: full-to-empty discharge",
                }
            )
            start = None
    return out


def _rul(retention: list[dict[str, Any]]) -> dict[str, Any]:
    if len(retention) < 2:
        return {
            "years": None,
            "text": "not enough capacity measurements yet (need two, days apart)",
            "basis": None,
        }
    t = np.array([p["t"] for p in retention])
    y = np.array([p["retention"] for p in retention])
    span = (t[-1] - t[0]) / _DAY
    if span < _MIN_SPAN_DAYS:
        return {
            "years": None,
            "text": f"capacity measurements span {span:.1f} days; need more",
            "basis": None,
        }
    slope, icpt = np.polyfit(t / _DAY, y, 1)
    basis = (
        f"linear fit of capacity retention ({retention[-1]['source']}, {len(t)} points over "
        f"{span:.0f} days) to {EOL_RETENTION * 100:.0f} %: {slope * 365 * 100:+.2f} %/year"
    )
    now_y = slope * t[-1] / _DAY + icpt
    if slope >= 0 or (EOL_RETENTION - now_y) / slope > 100 * 365:  # no fade measurable (or > a century)
        return {
            "years": None,
            "fade_pct_per_year": round(slope * 36500, 2),
            "basis": basis,
            "text": "no fade measurable yet",
        }
    days = (EOL_RETENTION - now_y) / slope
    if days <= 0:
        return {
            "years": 0.0,
            "fade_pct_per_year": round(slope * 36500, 2),
            "basis": basis,
            "text": f"end of life ({EOL_RETENTION * 100:.0f} % retention) already reached ({basis})",
        }
    years = days / 365
    return {
        "years": round(years, 1),
        "fade_pct_per_year": round(slope * 36500, 2),
        "basis": basis,
        "end_of_life_date": _iso(t[-1] + days * _DAY)[:10],
        "text": f"{years:.1f} years ({basis})",
    }


def _low_load_window(system: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not system:
        return None
    hours: list[list[float]] = [[] for _ in range(24)]
    for r in system:
        if r["power"] is not None:
            hours[time.localtime(r["t"]).tm_hour].append(abs(r["power"]))
    if sum(1 for h in hours if h) < MIN_PROFILE_HOURS:
        return None  # a load profile needs most hours of the day
    means = [float(np.mean(h)) if h else math.inf for h in hours]
    best = int(np.argmin(means))
    if not math.isfinite(means[best]):
        return None
    return {
        "start_hour": best,
        "end_hour": (best + 1) % 24,
        "mean_abs_power_w": round(means[best], 1),
        "text": f"{best:02d}:00-{(best + 1) % 24:02d}:00 local time (mean |P| {means[best]:.0f} W, "
        "from the history's load profile)",
    }


def _actions(
    weak: list[dict[str, Any]], imbalance: dict[str, Any], rul: dict[str, Any], window: dict[str, Any] | None
) -> list[dict[str, Any]]:
    when = window["text"] if window else "at the next low-load period"
    out = []
    for c in weak:
        n = c["cell"] + 1
        if c["kind"].startswith("capacity"):
            out.append(
                {
                    "cell": c["cell"],
                    "when": when,
                    "action": f"capacity-test cell #{n} and top-balance the pack; replace cell #{n} if "
                    "it stays below 80 % of its neighbours",
                }
            )
        elif c["kind"] == "resistance":
            out.append(
                {
                    "cell": c["cell"],
                    "when": when,
                    "action": f"check the busbar/terminal torque of cell #{n}, then re-measure its "
                    "internal resistance",
                }
            )
        else:
            out.append(
                {
                    "cell": c["cell"],
                    "when": when,
                    "action": f"check cell #{n} for a leak path (self-discharge); watch its drift",
                }
            )
    growth = imbalance.get("growth_mv_per_30d")
    if growth is not None and growth > 5:
        out.append(
            {
                "cell": None,
                "when": when,
                "action": "top-balance: charge to full and hold at the charge voltage until the cells meet",
            }
        )
    years = rul.get("years")
    if years is not None and years < 1:
        out.append({"cell": None, "when": "within 3 months", "action": "plan the pack's replacement"})
    return out


def _efc(
    health: list[dict[str, Any]], counters: dict[str, float], rated_ah: float
) -> tuple[float | None, str]:
    for r in reversed(health):
        if _finite(r["equivalent_full_cycles"]):
            return round(float(r["equivalent_full_cycles"]), 2), "health"
    if counters:
        return round(
            counters.get("discharged_ah", 0.0) / rated_ah, 2
        ), "energy counters: discharged Ah / rated Ah"
    return None, "no data"


def _negative_events(
    rows: list[dict[str, Any]],
    events: list[dict[str, Any]],
    pack: int,
    params: Any,
    period: float,
    rest_a: float,
) -> dict[str, Any]:
    deep = []
    below = False
    for r in rows:
        low = r["cell_v_min"] is not None and r["cell_v_min"] < params.cell_v_min_alarm
        if low and not below:
            deep.append(
                {"time": _iso(r["t"]), "cell": r["cell_v_min_cell"], "cell_v_min": round(r["cell_v_min"], 4)}
            )
        below = low
    above_c = above_d = 0.0
    for r in rows:
        tmax, cur = r["temp_max"], r["current"] or 0.0
        if tmax is None:
            continue
        if cur > rest_a and tmax > params.charge_temp_max_c:
            above_c += period
        elif tmax > params.discharge_temp_max_c:
            above_d += period
    counts: dict[str, int] = {}
    for e in events:
        if e["kind"] == "raise" and (e["pack"] is None or e["pack"] == pack):
            counts[e["code"]] = counts.get(e["code"], 0) + 1
    return {
        "deep_discharge": {"count": len(deep), "threshold_cell_v": params.cell_v_min_alarm, "events": deep},
        "time_above_temperature_limit_h": {
            "charging": round(above_c / 3600, 3),
            "other": round(above_d / 3600, 3),
            "total": round((above_c + above_d) / 3600, 3),
            "limits_c": {"charge": params.charge_temp_max_c, "discharge": params.discharge_temp_max_c},
        },
        "alarms_raised": counts,
    }


def _monthly(retention: list[dict[str, Any]]) -> list[dict[str, Any]]:
    months: dict[str, list[dict[str, Any]]] = {}
    for p in retention:
        months.setdefault(p["date"][:7], []).append(p)
    return [
        {
            "month": m,
            "retention_pct": round(float(np.mean([p["retention"] for p in ps])) * 100, 2),
            "points": len(ps),
            "source": ps[-1]["source"],
        }
        for m, ps in sorted(months.items())
    ]


def _span(h: History) -> dict[str, Any]:
    ts = [r["t"] for r in h.system] or [r["t"] for r in h.packs]
    if not ts:
        return {"from": None, "to": None, "days": 0.0}
    return {"from": _iso(ts[0]), "to": _iso(ts[-1]), "days": round((ts[-1] - ts[0]) / _DAY, 2)}


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _clean(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, np.generic):
        return _clean(obj.item())
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj
