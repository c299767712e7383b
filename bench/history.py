"""Benchmark the history database at default [history] settings: listener cost, write cost, size per day.

    python bench/history.py            # table
    python bench/history.py --json     # table, then one JSON line

One simulated hour of a real pipeline (16-cell packs, one new sample per pack every 0.1 s) goes through
`HistoryRecorder.see` (timed per state) and is written to a fresh database every flush_period_s (each
`HistoryDB.write` timed); the growth of the file over the second half hour (pages in use after a WAL
checkpoint, so the schema's fixed pages do not count) × 48 is the size per day. Sizes 1×16 and 4×16.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from bmsgw.config import load_settings
from bmsgw.model import PackSample
from bmsgw.pipeline import Pipeline
from bmsgw.telemetry.energy import EnergyCounters
from bmsgw.telemetry.history_db import HistoryDB
from bmsgw.telemetry.history_service import HistoryRecorder

HOUR_S = 3600.0


def run(packs: int) -> dict[str, float]:
    """Figures for `packs` packs of 16 cells."""
    with tempfile.TemporaryDirectory() as tmp:
        settings, _ = load_settings(
            None,
            {"packs": [{"id": f"p{i}", "address": i} for i in range(packs)], "gateway.state_dir": tmp,
             "history.enabled": True},
            env={},
        )  # fmt: skip
        flush = settings.history.flush_period_s
        pipe = Pipeline(settings)
        energy = EnergyCounters(packs, settings.gateway.stale_after_s)
        rec = HistoryRecorder(settings, offset=1.767e9, energy=energy)
        db = HistoryDB(Path(tmp) / "history.db")
        rng = np.random.default_rng(1)
        see_s = write_s = 0.0
        states = writes = 0
        write_max = 0.0
        next_flush = flush
        half_pages = 0
        t = 0.0
        k = 0
        while t < HOUR_S:
            k += 1
            t = k * 0.1 / packs
            v = 3.3 + rng.normal(0, 0.005, 16)
            i = float(rng.normal(0, 20))
            s = PackSample(
                k % packs, t, v, np.full(4, 25.0), current=i, voltage=52.8, alive=(k // packs) % 16
            )
            pipe.submit(s)
            state = pipe.step(t)
            energy.see(state)
            t0 = time.perf_counter()
            rec.see(state)
            see_s += time.perf_counter() - t0
            states += 1
            if t >= next_flush:
                next_flush += flush
                batch = rec.take()
                t0 = time.perf_counter()
                db.write(batch)
                dt = time.perf_counter() - t0
                write_s += dt
                write_max = max(write_max, dt)
                writes += 1
                if not half_pages and t >= HOUR_S / 2:
                    db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                    half_pages = db.conn.execute("PRAGMA page_count").fetchone()[0]
        db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages, size = (db.conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "page_size"))
        db.close()
    return {
        "packs": packs,
        "listener_us_per_state": see_s / states * 1e6,
        "write_ms_mean": write_s / writes * 1e3,
        "write_ms_max": write_max * 1e3,
        "mb_per_day": (pages - half_pages) * size * 48 / 1e6,
    }


def main() -> None:
    """Print the table (and JSON with --json)."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = [run(1), run(4)]
    print(f"{'packs':>5} {'listener µs/state':>18} {'write ms mean':>14} {'write ms max':>13} {'MB/day':>7}")
    for r in rows:
        print(f"{r['packs']:>5} {r['listener_us_per_state']:>18.1f} {r['write_ms_mean']:>14.2f} "
              f"{r['write_ms_max']:>13.2f} {r['mb_per_day']:>7.2f}")  # fmt: skip
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
