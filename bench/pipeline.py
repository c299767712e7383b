"""Pipeline benchmark: frames/s through decode → assemble → aggregate → core → limits, and latency.

    python bench/pipeline.py [--seconds S] [--json] [--compiled]

Two configurations: 1 pack × 16 cells and 16 packs × 16 cells. Frames are pre-encoded (the pack's
transmit schedule from docs/pack-protocol.md, with cell voltages and current varying) so only the gateway's
work is timed. For each configuration:
- throughput: every frame fed as fast as possible on one core (samples stepped exactly as the daemon does:
  one core step per accepted sample, one periodic step per step_period_s, one Pylontech encode per second);
  also per second of the thread's CPU time (cpu_frames_per_s: not skewed by other processes on the machine);
- latency: frames offered at 8,000 frames/s on a schedule; for each frame that completes a sample, the time
  from its scheduled arrival to the new limits being published (queueing included).
The last line with --json is one JSON object with at least frames_per_s and p99_latency_ms (worst case).
--compiled builds the compiled kernel and health module from the same sources (Cython + cc, cached in the
temp dir) when the installed core is pure Python, and runs the pipeline on them.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from bmsgw.bms.pack_can import encode_tick
from bmsgw.config import Settings, load_settings
from bmsgw.core import IS_COMPILED, Core
from bmsgw.core._devbuild import build_compiled_health, build_compiled_kernel
from bmsgw.inverter import CAN_CODECS, CodecOptions
from bmsgw.model import BmsFlags
from bmsgw.pipeline import Pipeline
from bmsgw.sources.can import PackFrameDecoder

TICK_S = 0.1
OFFERED_FPS = 8000.0


@dataclass
class Result:
    packs: int
    cells: int
    frames: int
    frames_per_s: float
    cpu_frames_per_s: float
    samples_per_s: float
    p50_latency_ms: float
    p99_latency_ms: float
    max_latency_ms: float


def make_settings(packs: int, cells: int) -> Settings:
    s, _ = load_settings(
        None,
        {"packs": [{"id": f"p{i}", "cells": cells, "sensors": 4, "address": i, "capacity_ah": 100}
                   for i in range(packs)]},
        env={},
    )  # fmt: skip
    return s


def make_frames(packs: int, cells: int, seconds: float) -> list[tuple[float, int, bytes]]:
    """Pre-encoded pack traffic: every pack on its 100 ms schedule, values drifting like a real pack."""
    rng = np.random.default_rng(1)
    out: list[tuple[float, int, bytes]] = []
    flags = BmsFlags.CHARGE_FET | BmsFlags.DISCHARGE_FET | BmsFlags.CONTACTOR_CLOSED
    for k in range(round(seconds / TICK_S)):
        t = k * TICK_S
        for m in range(packs):
            cell_v = 3.30 + 0.01 * math.sin(t / 60 + m) + rng.normal(0, 0.002, cells)
            cell_t = 25.0 + rng.normal(0, 0.2, 4)
            current = 20.0 * math.sin(t / 30)
            for f in encode_tick(k, m, cell_v, cell_t, current, float(cell_v.sum()), flags, k & 0xF):
                out.append((t, f.id, f.data))
    return out


class Runner:
    """The same per-frame work the daemon does (sources/can.py + app.Gateway)."""

    def __init__(self, settings: Settings, core: tuple[ModuleType, ModuleType] | None = None) -> None:
        """`core`: (kernel, health) modules to run instead of the installed ones."""
        self.decoder = PackFrameDecoder(settings)
        self.pipeline = Pipeline(settings)
        if core is not None:
            self.pipeline.core = Core(self.pipeline.params, kernel_module=core[0], health_module=core[1])
        self.codec = CAN_CODECS["pylontech-can"]
        self.opts = CodecOptions()
        self.step_period = settings.gateway.step_period_s
        self.next_step = 0.0
        self.next_out = 0.0

    def frame(self, t: float, fid: int, data: bytes) -> bool:
        """Process one frame; True when it produced new limits."""
        if t >= self.next_step:
            self.pipeline.step(t)
            self.next_step = t + self.step_period
        if t >= self.next_out:
            self.codec.encode(self.pipeline.state, self.opts)
            self.next_out = t + 1.0
        sample = self.decoder.feed(fid, data, t)
        if sample is not None and self.pipeline.submit(sample):
            self.pipeline.step(t)
            return True
        return False


def run(packs: int, cells: int, seconds: float, core: tuple[ModuleType, ModuleType] | None = None) -> Result:
    settings = make_settings(packs, cells)
    frames = make_frames(packs, cells, seconds)
    r = Runner(settings, core)
    pc = time.perf_counter
    start = pc()
    cpu0 = time.thread_time()
    for t, fid, data in frames:
        r.frame(t, fid, data)
    cpu = time.thread_time() - cpu0
    elapsed = pc() - start
    assert r.decoder.rejected == 0, "benchmark traffic must decode"
    samples = r.pipeline.samples
    # Latency at the offered rate: frame i arrives at start + i / OFFERED_FPS (cap the run at ~2 s).
    n = min(len(frames), int(OFFERED_FPS * 2))
    r = Runner(settings, core)
    lat: list[float] = []
    start = pc()
    for i in range(n):
        arrival = start + i / OFFERED_FPS
        while pc() < arrival:
            pass
        t, fid, data = frames[i]
        if r.frame(t, fid, data):
            lat.append(pc() - arrival)
    lat.sort()
    return Result(
        packs=packs,
        cells=cells,
        frames=len(frames),
        frames_per_s=len(frames) / elapsed,
        cpu_frames_per_s=len(frames) / cpu,
        samples_per_s=samples / elapsed,
        p50_latency_ms=statistics.median(lat) * 1e3,
        p99_latency_ms=lat[int(0.99 * (len(lat) - 1))] * 1e3,
        max_latency_ms=lat[-1] * 1e3,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--seconds", type=float, default=600.0, help="simulated seconds of traffic (16 packs: a quarter)"
    )
    ap.add_argument("--json", action="store_true", help="end with one JSON line")
    ap.add_argument(
        "--compiled", action="store_true", help="build the compiled core (Cython + cc) and use it"
    )
    args = ap.parse_args()
    core = (build_compiled_kernel(), build_compiled_health()) if args.compiled and not IS_COMPILED else None
    compiled = IS_COMPILED or core is not None
    print(
        f"bmsgw pipeline benchmark — core {'compiled' if compiled else 'pure'}, "
        f"Python {platform.python_version()}, one core"
    )
    results = [run(1, 16, args.seconds, core), run(16, 16, args.seconds / 4, core)]
    head = ("config", "frames", "frames/s", "CPU fr/s", "samples/s", "p50 ms", "p99 ms", "max ms")
    print(f"{head[0]:>10} " + " ".join(f"{h:>10}" for h in head[1:]))
    for x in results:
        print(
            f"{f'{x.packs}x{x.cells}':>10} {x.frames:>10} {x.frames_per_s:>10.0f} "
            f"{x.cpu_frames_per_s:>10.0f} {x.samples_per_s:>10.0f} {x.p50_latency_ms:>10.3f} "
            f"{x.p99_latency_ms:>10.3f} {x.max_latency_ms:>10.3f}"
        )
    if args.json:
        worst_fps = min(x.frames_per_s for x in results)
        worst_p99 = max(x.p99_latency_ms for x in results)
        print(json.dumps({
            "frames_per_s": round(worst_fps),
            "cpu_frames_per_s": round(min(x.cpu_frames_per_s for x in results)),
            "p99_latency_ms": round(worst_p99, 4),
            "core_compiled": compiled,
            "configs": [x.__dict__ for x in results],
        }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
