"""The command line: --version reports the core build, python -m works, simulate runs end to end."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import can
import pytest

from bmsgw import __version__
from bmsgw.cli import main
from bmsgw.core import IS_COMPILED

EXAMPLES = Path(__file__).parent.parent / "examples"


def test_version_says_which_core(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    out = capsys.readouterr().out.strip()
    assert out == f"bmsgw {__version__} (core: {'compiled' if IS_COMPILED else 'pure'})"


@pytest.mark.skipif(
    os.environ.get("BMSGW_EXPECT_COMPILED") != "1", reason="set by .ci/run after pip install ."
)
def test_ci_runs_the_compiled_core() -> None:
    assert IS_COMPILED, "pip install . should have compiled the core (is a C compiler missing?)"


def test_python_dash_m_is_the_same_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bmsgw", "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith(f"bmsgw {__version__} (core: ")


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "simulate" in capsys.readouterr().out


def test_simulate_with_scenario_records_a_replayable_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "ov.toml"
    scenario.write_text(
        '[[faults]]\nat = 60\nkind = "cell_overvoltage"\npack = 1\ncell = 3\nduration = 30\n'
        '[[faults]]\nat = 150\nkind = "link_loss"\npack = 0\nduration = 20\n'
    )
    record = tmp_path / "pack.log"
    code = main(
        ["simulate", "--packs", "2", "--cells", "8", "--duration", "240", "--speed", "400",
         "--scenario", str(scenario), "--record", str(record), "--quiet", "--log-level", "warning"]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "2 pack(s) × 8 cells lfp" in out
    assert "raised  ALARM cell_overvoltage pack2" in out
    assert "cleared ALARM cell_overvoltage pack2" in out
    assert "0 rejected" in out
    msgs = list(can.LogReader(str(record)))
    modules = {(m.arbitration_id >> 4) & 0xF for m in msgs}
    assert modules == {0, 1}
    # the link loss of pack 1 (module 0) leaves a 20 s hole in its frames
    t0 = [m.timestamp for m in msgs if (m.arbitration_id >> 4) & 0xF == 0]
    gaps = [b - a for a, b in itertools.pairwise(t0)]
    assert max(gaps) == pytest.approx(20.0, abs=0.3)


def test_simulate_rejects_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--speed", "0"]) == 2
    assert "--speed" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text('[[faults]]\nat = 1\nkind = "meltdown"\n')
    assert main(["simulate", "--scenario", str(bad), "--duration", "1"]) == 2
    assert "faults[0].kind" in capsys.readouterr().err
    far = tmp_path / "far.toml"
    far.write_text('[[faults]]\nat = 1\nkind = "link_loss"\npack = 5\n')
    assert main(["simulate", "--scenario", str(far), "--duration", "1"]) == 2
    assert "faults[0].pack" in capsys.readouterr().err


def test_example_log_replays_with_its_overvoltage_event(capsys: pytest.CaptureFixture[str]) -> None:
    log = EXAMPLES / "pack-16s-lfp.log.gz"
    assert (
        main(["replay", str(log), "--config", str(EXAMPLES / "replay.toml"), "--log-level", "warning"]) == 0
    )
    out = capsys.readouterr().out
    assert "0 rejected" in out
    assert "raised  ALARM cell_overvoltage pack1" in out
    assert "duration: 3600.0 s" in out
