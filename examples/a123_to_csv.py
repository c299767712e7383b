"""Convert an A123 dynamic test (Plett's ESCtoolbox data, MIT) into ``bmsgw estimate``'s input format.

    python examples/a123_to_csv.py /work/shared/data/a123/A123_DYN_50_P25_s1.csv.gz a123_p25.csv
    bmsgw estimate a123_p25.csv --chemistry lfp --capacity-ah 2.0726 -o a123_p25_soc.csv

Input columns ``time, step, current, voltage, chgAh, disAh`` (1 s, current > 0 = discharge). Output
``t_s,current_a,voltage_v,temp_c,soc_ref`` with current > 0 = charge (bmsgw's convention), the chamber
temperature from the file name (P25 → 25 °C) and the reference SOC from the cycler's Ah counters:
soc_ref = soc0 − (disAh − η·chgAh)/Q, with η and Q from the slow OCV tests at that temperature
(bench/tools/make_ocv_tables.py) and soc0 = 1 for script 1, which starts full.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import re
import sys
from pathlib import Path

# η and Q (Ah) per chamber temperature, from the A123 OCV tests (bench/tools/make_ocv_tables.py)
ETA_Q: dict[int, tuple[float, float]] = {5: (0.9974, 2.0702), 25: (0.9962, 2.0726), 45: (0.9940, 2.0718)}


def convert(
    src: Path, dest: Path, *, soc0: float = 1.0, q: float | None = None, eta: float | None = None
) -> float:
    """Write `src` (an A123 dynamic test) to `dest` in ``bmsgw estimate``'s format; returns the chamber °C."""
    m = re.search(r"_([PN])(\d\d)_", src.name)
    if m is None:
        raise ValueError(f"{src}: cannot read the temperature from the file name")
    temp = int(m.group(2)) * (1 if m.group(1) == "P" else -1)
    eta0, q0 = ETA_Q.get(temp, ETA_Q[25])
    eta = eta0 if eta is None else eta
    q = q0 if q is None else q
    opener = gzip.open if src.suffix == ".gz" else open
    with opener(src, "rt", newline="") as f, open(dest, "w", newline="") as out:
        rows = csv.DictReader(f, skipinitialspace=True)
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["t_s", "current_a", "voltage_v", "temp_c", "soc_ref"])
        t0 = None
        for r in rows:
            t = float(r["time"])
            t0 = t if t0 is None else t0
            soc = soc0 - (float(r["disAh"]) - eta * float(r["chgAh"])) / q
            current = -float(r["current"])  # discharge-positive in, charge-positive out
            w.writerow([f"{t - t0:.3f}", f"{current:.4f}", r["voltage"].strip(), temp, f"{soc:.6f}"])
    return float(temp)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("input", type=Path, help="A123_DYN_<mag>_<P|N><T>_s<n>.csv[.gz]")
    ap.add_argument("output", type=Path)
    ap.add_argument("--soc0", type=float, default=1.0, help="reference SOC at the first row (default 1)")
    ap.add_argument("--q", type=float, help="capacity Ah (default: the OCV tests' at that temperature)")
    ap.add_argument("--eta", type=float, help="coulombic efficiency (default: from the OCV tests)")
    args = ap.parse_args(argv)
    try:
        convert(args.input, args.output, soc0=args.soc0, q=args.q, eta=args.eta)
    except (ValueError, OSError) as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
