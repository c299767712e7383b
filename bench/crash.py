"""SIGKILL `bmsgw run` at random moments many times; print what survived.

    python bench/crash.py [--rounds 500] [--seed 1] [--json]

The same rig as tests/test_crash_restore.py (50 rounds in CI): a real daemon process polling a fake JK
BMS over a pty, killed after 0.05–2.5 s, restarted; after every kill the state file must load and the
history database (when present) must pass `PRAGMA integrity_check`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from crash_rig import kill_rounds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rep = asyncio.run(kill_rounds(Path(tmp), args.rounds, args.seed))
    d = dataclasses.asdict(rep)
    for k, v in d.items():
        if k != "problems":
            print(f"{k:16s} {v}")
    for p in rep.problems:
        print(f"PROBLEM {p}")
    if args.json:
        print(json.dumps(d))
    return 1 if rep.problems else 0


if __name__ == "__main__":
    sys.exit(main())
