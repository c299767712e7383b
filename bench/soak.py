"""Soak: an accelerated 24 h simulated run of the whole gateway with its RSS sampled.

    python bench/soak.py [--hours 24] [--speed 2000] [--packs 2] [--set KEY=VALUE ...] [--json]

Runs `bmsgw simulate` as a child process (simulated packs on a virtual CAN bus, the default outputs, the
web service on a free port with its history buffer, state kept in a scratch directory) and samples the
child's resident set size from /proc every second of wall time. Simulated time comes from the child's status
lines (every 10 s of wall time), so a simulation that runs slower than --speed is still placed right.
Reports RSS at 10 % of the run (after warm-up), at the end, the maximum, the growth per simulated hour fitted
over the second half (a leak shows as a positive slope beyond the residual noise), and the CAN output's
frames per simulated second. `--timeline FILE` writes the samples (simulated hours, RSS MiB) as CSV.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

import numpy as np


def rss_kib(pid: int) -> int | None:
    """VmRSS of `pid` in KiB, None once it has exited."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


STATUS = re.compile(r"^(\d+):(\d\d):(\d\d) SOC")
OUT_FRAMES = re.compile(r"^inverter frames written: (\d+)")


def read_child(
    stream: IO[str], tail: collections.deque[str], times: list[tuple[float, float]], t0: float
) -> None:
    """Keep the child's last lines and (wall s, simulated s) of each status line; drains the pipe."""
    for line in stream:
        tail.append(line)
        m = STATUS.match(line)
        if m:
            h, mi, se = (int(g) for g in m.groups())
            times.append((time.monotonic() - t0, h * 3600.0 + mi * 60.0 + se))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--speed", type=float, default=2000.0)
    ap.add_argument("--packs", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to simulate")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--timeline", type=Path, metavar="CSV", help="write (simulated h, RSS MiB) samples here")
    args = ap.parse_args()
    duration = args.hours * 3600.0
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable, "-m", "bmsgw", "simulate", "--duration", str(duration),
            "--speed", str(args.speed), "--packs", str(args.packs), "--start-hour", "0",
            "--set", "web.port=0", "--set", f"gateway.state_dir={tmp}",
            *(x for kv in args.set for x in ("--set", kv)),
        ]  # fmt: skip
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        tail: collections.deque[str] = collections.deque(maxlen=400)
        times: list[tuple[float, float]] = [(0.0, 0.0)]
        reader = threading.Thread(target=read_child, args=(proc.stdout, tail, times, t0), daemon=True)
        reader.start()
        samples: list[tuple[float, int]] = []
        while proc.poll() is None:
            kib = rss_kib(proc.pid)
            if kib is not None:
                samples.append((time.monotonic() - t0, kib))
            time.sleep(1.0)
        reader.join(5.0)
    wall = time.monotonic() - t0
    out = "".join(tail)
    if proc.returncode != 0 or len(samples) < 10:
        print(out[-3000:])
        print(f"simulate exited {proc.returncode} after {wall:.0f} s with {len(samples)} samples")
        return 1
    times.append((wall, duration))
    tw, ts = np.array(times).T
    t = np.interp([s[0] for s in samples], tw, ts) / 3600.0  # simulated hours
    r = np.array([s[1] for s in samples]) / 1024.0
    warm = r[len(r) // 10]
    half = len(r) // 2
    fit = np.polyfit(t[half:], r[half:], 1)
    slope = float(fit[0])
    noise = float(np.std(r[half:] - np.polyval(fit, t[half:])))
    frames = next((int(m.group(1)) for line in tail if (m := OUT_FRAMES.match(line))), None)
    if args.timeline:
        args.timeline.write_text(
            "sim_h,rss_mib\n" + "".join(f"{a:.4f},{b:.2f}\n" for a, b in zip(t, r, strict=True))
        )
    result = {
        "simulated_hours": args.hours,
        "wall_s": round(wall, 1),
        "samples": len(samples),
        "rss_mib_after_warmup": round(float(warm), 1),
        "rss_mib_end": round(float(r[-1]), 1),
        "rss_mib_max": round(float(r.max()), 1),
        "growth_mib_per_sim_hour_2nd_half": round(slope, 3),
        "residual_noise_mib": round(noise, 2),
        "growth_mib_2nd_half": round(slope * (t[-1] - t[half]), 2),
        "output_frames_per_sim_s": round(frames / duration, 2) if frames is not None else None,
    }
    for k, v in result.items():
        print(f"{k:34s} {v}")
    print(next((line.strip() for line in tail if line.startswith("simulated ")), ""))
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
