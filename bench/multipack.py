"""Multi-pack benchmark: 16 packs × 16 cells at 10 samples/s per pack, with shares, isolation and hot-add.

    python bench/multipack.py [--seconds S] [--json] [--compiled]

Pre-encoded pack traffic (docs/pack-protocol.md schedule) where the packs carry unequal shares of a varying
current; during the run one pack goes silent and comes back (lost link → isolated → hot-add ramp) and one
reports a BMS fault for a while (isolated → rejoins). The frames go through the daemon's per-frame work
(decode → assemble → aggregate → multi-pack → core → state; Pylontech encode once per second) as fast as
possible on one core:
- cpu_pct: process CPU time / simulated time × 100 — the share of one core the gateway needs at the real
  rate of 160 samples/s;
- latency: for each frame that completes a sample, its processing time until the new limits are published;
- multipack_us_per_step: the multi-pack logic alone (update + hand-over to the core + observe), per step.
The last line with --json is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from types import ModuleType

import numpy as np
from pipeline import Runner  # bench/pipeline.py: the daemon's per-frame work

from bmsgw.bms.pack_can import encode_tick
from bmsgw.config import Settings, load_settings
from bmsgw.core import IS_COMPILED, Core
from bmsgw.core._devbuild import build_compiled_kernel
from bmsgw.model import BmsFlags, PackService

TICK_S = 0.1
PACKS = 16
CELLS = 16
CUT = (5, 30.0, 40.0)  # pack, silent from, back at (s)
FAULT = (9, 60.0, 70.0)  # pack, BMS fault from, until (s)


def make_settings() -> Settings:
    s, _ = load_settings(
        None,
        {
            "packs": [{"id": f"p{i}", "cells": CELLS, "sensors": 4, "address": i, "capacity_ah": 100}
                      for i in range(PACKS)],
            "multipack": {"hot_add_ramp_s": 20.0, "share_filter_s": 5.0},
        },
        env={},
    )  # fmt: skip
    return s


def make_frames(seconds: float) -> list[tuple[float, int, bytes]]:
    """Every pack on its 100 ms schedule; pack m carries a share ∝ 1 + 0.05 m of the total current."""
    rng = np.random.default_rng(2)
    weights = np.array([1.0 + 0.05 * m for m in range(PACKS)])
    weights /= weights.sum()
    ok = BmsFlags.CHARGE_FET | BmsFlags.DISCHARGE_FET | BmsFlags.CONTACTOR_CLOSED
    out: list[tuple[float, int, bytes]] = []
    for k in range(round(seconds / TICK_S)):
        t = k * TICK_S
        total = 400.0 * math.sin(t / 25.0)
        for m in range(PACKS):
            if m == CUT[0] and CUT[1] <= t < CUT[2]:
                continue
            flags = ok | BmsFlags.BMS_FAULT if m == FAULT[0] and FAULT[1] <= t < FAULT[2] else ok
            cell_v = 3.30 + 0.01 * math.sin(t / 60) + rng.normal(0, 0.002, CELLS)
            cell_t = 25.0 + rng.normal(0, 0.2, 4)
            cur = float(total * weights[m])
            for f in encode_tick(k, m, cell_v, cell_t, cur, float(cell_v.sum()), flags, k & 0xF):
                out.append((t, f.id, f.data))
    return out


def run(seconds: float, kernel: ModuleType | None = None) -> dict[str, float | int | bool]:
    settings = make_settings()
    frames = make_frames(seconds)
    r = Runner(settings)
    if kernel is not None:  # a freshly built compiled kernel in place of the installed pure one
        r.pipeline.core = Core(r.pipeline.params, kernel_module=kernel)
    pc = time.perf_counter
    lat: list[float] = []
    lat_cpu: list[float] = []
    tt = time.thread_time
    seen: dict[int, set[PackService]] = {CUT[0]: set(), FAULT[0]: set()}
    cpu0 = time.process_time()
    start = pc()
    for t, fid, data in frames:
        t0, c0 = pc(), tt()
        if r.frame(t, fid, data):
            lat.append(pc() - t0)
            lat_cpu.append(tt() - c0)
            for p, states in seen.items():
                states.add(r.pipeline.state.packs[p].service)
    elapsed = pc() - start
    cpu = time.process_time() - cpu0
    assert r.decoder.rejected == 0, "benchmark traffic must decode"
    for p, states in seen.items():  # the scenario really went through isolation and the hot-add ramp
        assert {PackService.ISOLATED, PackService.RAMPING, PackService.RUNNING} <= states, (p, states)
    end = r.pipeline.state
    shares = [v.share for v in end.packs]
    # the multi-pack logic alone, on the final inputs
    pl = r.pipeline
    usable, statuses, sensor = pl.aggregator.select(end.t)
    out = pl.core.step(end.t, usable)
    n = 2000
    t1 = tt()
    for k in range(n):
        pl.multipack.update(end.t + k * 0.01, usable, statuses, sensor)
        pl.multipack.apply(pl.core)
        pl.multipack.observe(out)
    mp_us = (tt() - t1) / n * 1e6
    lat.sort()
    lat_cpu.sort()
    return {
        "packs": PACKS,
        "cells": CELLS,
        "simulated_s": seconds,
        "samples": pl.samples,
        "offered_samples_per_s": PACKS / TICK_S,
        "cpu_pct": round(cpu / seconds * 100.0, 2),
        "wall_s": round(elapsed, 3),
        "p50_latency_ms": round(statistics.median(lat) * 1e3, 4),
        "p99_latency_ms": round(lat[int(0.99 * (len(lat) - 1))] * 1e3, 4),
        "max_latency_ms": round(lat[-1] * 1e3, 4),
        # the same in CPU time: what the work costs, without preemption by other processes
        "p50_latency_cpu_ms": round(statistics.median(lat_cpu) * 1e3, 4),
        "p99_latency_cpu_ms": round(lat_cpu[int(0.99 * (len(lat_cpu) - 1))] * 1e3, 4),
        "multipack_us_per_step": round(mp_us, 2),
        "share_min": round(min(shares), 4),
        "share_max": round(max(shares), 4),
        "ccl_a": round(end.limits.ccl.value, 1),
        "ccl_pack": -1 if end.ccl_pack is None else end.ccl_pack,
        "core_compiled": IS_COMPILED or kernel is not None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--seconds", type=float, default=120.0, help="simulated seconds (≥ 100: cut, fault, rejoin)"
    )
    ap.add_argument("--json", action="store_true", help="end with one JSON line")
    ap.add_argument(
        "--compiled", action="store_true", help="build the compiled kernel (Cython + cc) and use it"
    )
    args = ap.parse_args()
    kernel = build_compiled_kernel() if args.compiled and not IS_COMPILED else None
    compiled = IS_COMPILED or kernel is not None
    print(
        f"bmsgw multi-pack benchmark — {PACKS} packs × {CELLS} cells at 10 samples/s each, core "
        f"{'compiled' if compiled else 'pure'}, Python {platform.python_version()}, one core"
    )
    x = run(max(args.seconds, 100.0), kernel)
    print(f"CPU {x['cpu_pct']} % of one core at 160 samples/s")
    print(
        f"latency wall p50 {x['p50_latency_ms']} ms, p99 {x['p99_latency_ms']} ms, "
        f"max {x['max_latency_ms']} ms; CPU p50 {x['p50_latency_cpu_ms']} ms, "
        f"p99 {x['p99_latency_cpu_ms']} ms"
    )
    print(
        f"multi-pack logic {x['multipack_us_per_step']} µs CPU/step; "
        f"shares {x['share_min']}..{x['share_max']}, CCL {x['ccl_a']} A bound by pack {x['ccl_pack']}"
    )
    if args.json:
        print(json.dumps(x))
    return 0


if __name__ == "__main__":
    sys.exit(main())
