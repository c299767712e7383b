"""SIGKILL at random moments (>= 50 times): the state file loads, the SOC survives, the DB stays intact."""

from __future__ import annotations

import math
import os
from pathlib import Path

from crash_rig import kill_rounds

ROUNDS = int(os.environ.get("BMSGW_SIGKILL_ROUNDS", "50"))


async def test_sigkill_at_random_moments_loses_nothing(tmp_path: Path) -> None:
    rep = await kill_rounds(tmp_path, ROUNDS, seed=20261121)
    assert rep.problems == []
    assert rep.kills == ROUNDS
    assert rep.loads_ok == ROUNDS  # never a torn or invalid state file
    assert rep.history_checked >= ROUNDS // 2  # the history DB existed and passed integrity_check
    # half the rounds were killed only once running; every round that started restored the saved state
    assert rep.restored_logs >= ROUNDS // 2
    assert rep.restored_logs == rep.started_logs
    # the SOC carried through all kills: counting on from phase A (charging), nowhere near a fresh
    # start from OCV at the cells' new voltage
    assert not math.isnan(rep.soc_start)
    assert not math.isnan(rep.soc_end)
    assert abs(rep.soc_start - rep.soc_ocv_kill) > 0.3
    assert rep.soc_start - 0.01 <= rep.soc_end <= rep.soc_start + 0.05
