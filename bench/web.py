"""Benchmark the web service's share of the gateway: its per-state listener and its per-request work.

    python bench/web.py            # table
    python bench/web.py --json     # table, then one JSON line

Per state (runs inside the pipeline's publish, on every core step): history sampling + energy meters.
Per request: /metrics exposition, /api/state JSON, /api/history (24 h, 720 points). Sizes 1×16 and 16×16,
states at 10 Hz per pack (the pack-CAN rate), each state with one new pack sample.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np

from bmsgw.config import load_settings
from bmsgw.model import GatewayState, PackSample
from bmsgw.pipeline import Pipeline
from bmsgw.telemetry.history_buffer import RingHistory
from bmsgw.telemetry.metrics import PackEnergy, exposition
from bmsgw.telemetry.snapshot import state_dict


def states(packs: int, n: int) -> list[GatewayState]:
    """n successive states of a real pipeline, one new 16-cell pack sample each, 10 Hz per pack."""
    settings, _ = load_settings(
        None, {"packs": [{"id": f"p{i}", "address": i} for i in range(packs)]}, env={}
    )
    pipe = Pipeline(settings)
    rng = np.random.default_rng(1)
    out = []
    for k in range(n):
        t = k * 0.1 / packs
        s = PackSample(k % packs, t, 3.3 + rng.normal(0, 0.005, 16), np.full(4, 25.0),
                       current=10.0, voltage=52.8, alive=(k // packs) % 16)  # fmt: skip
        pipe.submit(s)
        out.append(pipe.step(t))
    return out


def per_call_us(fn: Callable[[], object], repeat: int) -> float:
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat * 1e6


def measure(packs: int) -> dict[str, float]:
    """Listener cost per state, then the three request renderings on a full 24 h history."""
    seq = states(packs, 20_000)
    hist = RingHistory(tuple(f"p{i}" for i in range(packs)))
    energy = PackEnergy(packs, 5.0)
    t0 = time.perf_counter()
    for st in seq:
        hist.record(st.t, st)
        energy.see(st)
    listener = (time.perf_counter() - t0) / len(seq) * 1e6
    last = seq[-1]
    for k in range(8640):  # fill 24 h of buckets for the history query
        hist.record(last.t + 10.0 * (k + 1), last)
    return {
        "listener_us_per_state": listener,
        "metrics_ms": per_call_us(lambda: exposition(last, version="x", compiled=True, energy=energy), 200)
        / 1e3,
        "state_json_ms": per_call_us(lambda: json.dumps(state_dict(last)), 200) / 1e3,
        "history_720_ms": per_call_us(lambda: json.dumps(hist.query(None, None, 720).as_dict()), 20) / 1e3,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results = {f"{packs}x16": measure(packs) for packs in (1, 16)}
    head = ("listener µs/state", "/metrics ms", "/api/state ms", "/api/history ms")
    print(f"{'size':8} " + " ".join(f"{h:>17}" for h in head))
    for name, r in results.items():
        print(f"{name:8} " + " ".join(f"{v:17.2f}" for v in r.values()))
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
