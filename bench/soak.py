"""Soak: an accelerated 24 h simulated run of the whole gateway with its RSS sampled.

    python bench/soak.py [--hours 24] [--speed 2000] [--packs 2] [--set KEY=VALUE ...] [--json]

Runs `bmsgw simulate` as a child process (simulated packs on a virtual CAN bus, the default outputs, the
web service on a free port with its history buffer, state kept in a scratch directory) and samples the
child's resident set size from /proc every second of wall time. Reports RSS at 10 % of the run (after
warm-up), at the end, the maximum, and the growth per simulated hour fitted over the second half (a leak
shows as a positive slope beyond the noise).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--speed", type=float, default=2000.0)
    ap.add_argument("--packs", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to simulate")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    duration = args.hours * 3600.0
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable, "-m", "bmsgw", "simulate", "--quiet", "--duration", str(duration),
            "--speed", str(args.speed), "--packs", str(args.packs), "--start-hour", "0",
            "--set", "web.port=0", "--set", f"gateway.state_dir={tmp}",
            *(x for kv in args.set for x in ("--set", kv)),
        ]  # fmt: skip
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        samples: list[tuple[float, int]] = []
        while proc.poll() is None:
            kib = rss_kib(proc.pid)
            if kib is not None:
                samples.append((time.monotonic() - t0, kib))
            time.sleep(1.0)
        out = proc.stdout.read() if proc.stdout else ""
    wall = time.monotonic() - t0
    if proc.returncode != 0 or len(samples) < 10:
        print(out[-3000:])
        print(f"simulate exited {proc.returncode} after {wall:.0f} s with {len(samples)} samples")
        return 1
    t = np.array([s[0] for s in samples]) / wall * args.hours  # simulated hours (lockstep ≈ linear)
    r = np.array([s[1] for s in samples]) / 1024.0
    warm = r[len(r) // 10]
    half = len(r) // 2
    slope = float(np.polyfit(t[half:], r[half:], 1)[0])
    noise = float(np.std(r[half:] - np.polyval(np.polyfit(t[half:], r[half:], 1), t[half:])))
    result = {
        "simulated_hours": args.hours,
        "wall_s": round(wall, 1),
        "samples": len(samples),
        "rss_mib_after_warmup": round(float(warm), 1),
        "rss_mib_end": round(float(r[-1]), 1),
        "rss_mib_max": round(float(r.max()), 1),
        "growth_mib_per_sim_hour_2nd_half": round(slope, 3),
        "residual_noise_mib": round(noise, 2),
    }
    for k, v in result.items():
        print(f"{k:34s} {v}")
    print(out.strip().splitlines()[-1] if out.strip() else "")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
