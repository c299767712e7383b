"""The run summary holds bounded memory: `simulate` keeps the first N limit changes and alarm events.

Regression for the soak's RSS growth: at full charge the binding reason of CVL/CCL flips every few seconds
(recovery <-> cell_voltage_high), and the summary used to keep every flip, ~20 000 per simulated hour.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from fakes import alarm, lim, make_state

import bmsgw.cli
import bmsgw.replay
from bmsgw.cli import main
from bmsgw.model import AlarmCode, Limit, Reason
from bmsgw.replay import ReplaySummary, Tracker

FLIPS = 1000


def _flapping(summary: ReplaySummary) -> None:
    """Feed FLIPS states whose CCL reason alternates and whose one alarm comes and goes."""
    tracker = Tracker(summary)
    base = lim()
    for k in range(FLIPS):
        reason = Reason.RECOVERY if k % 2 else Reason.CELL_VOLTAGE_HIGH
        limits = dataclasses.replace(base, ccl=Limit(10.0, reason))
        alarms = (alarm(AlarmCode.CELL_IMBALANCE),) if k % 2 else ()
        tracker.see(dataclasses.replace(make_state(limits, alarms), t=float(k)))


def test_a_bounded_summary_keeps_the_first_events_and_counts_all() -> None:
    summary = ReplaySummary(pack_ids=("pack0",), keep=10)
    _flapping(summary)
    assert len(summary.limit_changes) == 10
    assert summary.limit_changes_total == 4 + FLIPS - 1  # all four limits once, then every CCL flip
    assert len(summary.alarm_events) == 10
    assert summary.alarm_events_total == FLIPS - 1  # raised on odd k, cleared on even k > 0
    assert summary.alarms_raised == FLIPS // 2
    text = summary.render()
    assert f"limit changes ({4 + FLIPS - 1}):" in text
    assert f"alarms ({FLIPS // 2} raised):" in text
    assert "(the first 10 are kept)" in text


def test_an_unbounded_summary_keeps_everything_for_replay_json() -> None:
    summary = ReplaySummary(pack_ids=("pack0",))
    _flapping(summary)
    assert len(summary.limit_changes) == summary.limit_changes_total == 4 + FLIPS - 1
    assert len(summary.alarm_events) == summary.alarm_events_total == FLIPS - 1
    assert len(summary.as_dict()["limit_changes"]) == 4 + FLIPS - 1  # type: ignore[arg-type]
    assert "(--json lists all)" in summary.render()


def test_simulate_keeps_a_bounded_summary(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[ReplaySummary] = []
    real = Tracker.__init__

    def spy(self: Tracker, summary: ReplaySummary) -> None:
        seen.append(summary)
        real(self, summary)

    monkeypatch.setattr(bmsgw.replay.Tracker, "__init__", spy)
    monkeypatch.setattr(bmsgw.cli, "SIMULATE_KEEP_EVENTS", 3)
    scenario = tmp_path / "ov.toml"
    scenario.write_text('[[faults]]\nat = 30\nkind = "cell_overvoltage"\npack = 0\ncell = 3\nduration = 20\n')
    code = main(
        ["simulate", "--cells", "8", "--duration", "90", "--speed", "400", "--scenario", str(scenario),
         "--quiet", "--log-level", "warning", "--set", "web.enabled=false",
         "--set", f"gateway.state_dir={tmp_path}"]
    )  # fmt: skip
    assert code == 0
    (summary,) = seen
    assert summary.keep == 3
    assert summary.limit_changes_total > 3
    assert len(summary.limit_changes) == 3
    assert summary.alarm_events_total > 3
    assert len(summary.alarm_events) == 3
    assert f"limit changes ({summary.limit_changes_total}):" in capsys.readouterr().out
