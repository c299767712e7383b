"""Replay: deterministic dry-run of recorded logs in every supported format, with a useful summary."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import can
import numpy as np
import pytest
from fakes import A_COMM, P_OV, PackModel, decode_pylon, pack_log_frames

from bmsgw.cli import main
from bmsgw.config import Settings, load_settings
from bmsgw.model import AlarmCode, Frame, Reason
from bmsgw.replay import ReplayError, play_to_bus, replay

T0 = 1_700_000_000.0


def settings() -> Settings:
    s, _ = load_settings(
        None,
        {
            "packs": [{"id": "rack", "cells": 16, "sensors": 4, "capacity_ah": 100}],
            "gateway.recovery_ramp_s": 10.0,
            "limits": {"max_charge_current_a": 60.0, "max_discharge_current_a": 90.0},
        },
        env={},
    )
    return s


def write_log(path: Path) -> None:
    """120 s of a pack: normal, a cell over-voltage from 30-50 s, silence from 70-85 s, normal again."""
    model = PackModel()
    frames = list(pack_log_frames(model, 30.0, T0))
    model.cell_v = np.full(16, 3.30)
    model.cell_v[3] = 3.72
    frames += pack_log_frames(model, 20.0, T0 + 30.0)
    model.cell_v = np.full(16, 3.30)
    frames += pack_log_frames(model, 20.0, T0 + 50.0)
    frames += pack_log_frames(model, 35.0, T0 + 85.0)
    frames.append((T0 + 60.0, _garbage()))
    frames.sort(key=lambda x: x[0])
    with can.Logger(str(path)) as writer:
        for t, f in frames:
            writer.on_message_received(
                can.Message(
                    timestamp=t, arbitration_id=f.id, data=f.data, is_extended_id=f.extended, channel="can0"
                )
            )


def _garbage() -> Frame:
    return Frame(0x400, b"\x01")  # a PackStatus id with a 1-byte payload: rejected, counted


@pytest.fixture
def log(tmp_path: Path) -> Path:
    p = tmp_path / "pack.log"
    write_log(p)
    return p


def test_summary_reports_the_story(log: Path, tmp_path: Path) -> None:
    out = tmp_path / "inv.log"
    s = replay(log, settings(), out)
    assert s.frames_rejected == 1
    assert s.frames_decoded == s.frames_read - 1
    assert s.duration == pytest.approx(119.9, abs=0.2)
    assert s.cell_v_max[0] == pytest.approx(3.72, abs=0.001)
    assert s.cell_v_max[1].cell == 3
    raised = {(e.alarm.code, e.raised) for e in s.alarm_events}
    assert (AlarmCode.CELL_OVERVOLTAGE, True) in raised
    assert (AlarmCode.CELL_OVERVOLTAGE, False) in raised
    assert (AlarmCode.COMM_LOST, True) in raised
    assert (AlarmCode.COMM_LOST, False) in raised
    ccl_reasons = [c.reason for c in s.limit_changes if c.name == "CCL"]
    assert Reason.CELL_OVERVOLTAGE in ccl_reasons
    assert Reason.COMM_LOST in ccl_reasons
    assert Reason.RECOVERY in ccl_reasons
    dcl_reasons = [c.reason for c in s.limit_changes if c.name == "DCL"]
    assert Reason.CELL_OVERVOLTAGE not in dcl_reasons
    text = s.render()
    assert "1 rejected" in text
    assert "cell max: 3.720 V at rack cell 4" in text
    # every inverter frame is in the output log, one Pylontech set per second of log time
    msgs = list(can.LogReader(str(out)))
    assert len(msgs) == s.frames_out
    assert len([m for m in msgs if m.arbitration_id == 0x351]) == pytest.approx(120, abs=1)


def test_inverter_log_shows_the_safe_state_during_silence(log: Path, tmp_path: Path) -> None:
    out = tmp_path / "inv.log"
    replay(log, settings(), out)
    by_t: dict[float, dict[int, bytes]] = {}
    for m in can.LogReader(str(out)):
        by_t.setdefault(round(m.timestamp - T0, 3), {})[m.arbitration_id] = bytes(m.data)
    silent = decode_pylon(by_t[80.0])  # silence began at 70 s; stale after 5 s
    assert silent.ccl == 0
    assert silent.dcl == 0
    assert A_COMM in silent.flags
    normal = decode_pylon(by_t[25.0])
    assert normal.ccl == 60.0
    assert normal.dcl == 90.0
    tripped = decode_pylon(by_t[40.0])
    assert tripped.ccl == 0
    assert tripped.dcl == 90.0
    assert P_OV in tripped.flags


@pytest.mark.parametrize("suffix", [".asc", ".blf", ".log.gz"])
def test_formats_give_the_same_result(log: Path, tmp_path: Path, suffix: str) -> None:
    other = tmp_path / f"pack{suffix}"
    with can.Logger(str(other)) as writer:
        for m in can.LogReader(str(log)):
            writer.on_message_received(m)
    a = replay(log, settings()).as_dict()
    b = replay(other, settings()).as_dict()
    if suffix == ".asc":
        # ASC stores times relative to the start, so float rounding may move an event by one core step.
        ra, rb = rounded(a), rounded(b)
        assert isinstance(ra, dict)
        assert isinstance(rb, dict)
        for key in ("frames", "samples", "alarms", "soc_end", "cell_v_max"):
            assert ra[key] == rb[key], key
        la, lb = ra["limit_changes"], rb["limit_changes"]
        assert [(c["limit"], c["reason"], c["to"]) for c in la] == [
            (c["limit"], c["reason"], c["to"]) for c in lb
        ]
        assert all(abs(x["t"] - y["t"]) <= 0.1 + 1e-6 for x, y in zip(la, lb, strict=True))
    else:
        assert a == b


def rounded(x: object) -> object:
    """Floats rounded to 1e-4 (time in s, current in A), recursively."""
    if isinstance(x, float):
        return round(x, 4)
    if isinstance(x, dict):
        return {k: rounded(v) for k, v in x.items()}
    if isinstance(x, list):
        return [rounded(v) for v in x]
    return x


def test_replay_is_deterministic(log: Path, tmp_path: Path) -> None:
    out1, out2 = tmp_path / "a.log", tmp_path / "b.log"
    s1 = replay(log, settings(), out1)
    s2 = replay(log, settings(), out2)
    assert out1.read_bytes() == out2.read_bytes()
    assert s1.as_dict() == s2.as_dict()


def test_cli_replay_json_and_exit_codes(
    log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", str(log), "--json", "--log-level", "warning"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["frames"]["rejected"] == 1
    empty = tmp_path / "empty.log"
    empty.write_text("")
    assert main(["replay", str(empty)]) == 2
    assert "holds no frames" in capsys.readouterr().err
    junk = tmp_path / "junk.blf"
    junk.write_bytes(b"\x00not a blf file" * 10)
    assert main(["replay", str(junk)]) == 2
    assert "junk.blf" in capsys.readouterr().err
    assert main(["replay", str(tmp_path / "missing.log")]) == 2
    assert "no such file" in capsys.readouterr().err
    other = tmp_path / "x.txt"
    other.write_text("x")
    assert main(["replay", str(other)]) == 2
    assert "unknown log format" in capsys.readouterr().err


def test_replay_error_type(tmp_path: Path) -> None:
    p = tmp_path / "e.log"
    p.write_text("")
    with pytest.raises(ReplayError):
        replay(p, settings())


def test_to_bus_plays_frames_with_their_timing(tmp_path: Path) -> None:
    short = tmp_path / "short.log"
    with can.Logger(str(short)) as writer:
        for t, f in pack_log_frames(PackModel(), 1.0, T0):
            writer.on_message_received(can.Message(timestamp=t, arbitration_id=f.id, data=f.data))
    sent_frames = list(can.LogReader(str(short)))
    channel = f"dry-run-{uuid.uuid4()}"
    with can.Bus(interface="virtual", channel=channel) as listener:
        result: list[int] = []
        player = threading.Thread(target=lambda: result.append(play_to_bus(short, "virtual", channel)))
        start = time.monotonic()
        player.start()
        got = []
        while len(got) < len(sent_frames) and time.monotonic() - start < 5:
            msg = listener.recv(timeout=0.5)
            if msg is not None:
                got.append(msg)
        player.join()
    assert result == [len(sent_frames)]
    assert [(m.arbitration_id, bytes(m.data)) for m in got] == [
        (m.arbitration_id, bytes(m.data)) for m in sent_frames
    ]
    # original timing: the last frame arrives ~0.9 s after the first
    assert got[-1].timestamp - got[0].timestamp == pytest.approx(0.9, abs=0.15)


def test_cli_to_bus_needs_interface_and_channel(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(log), "--to-bus", "vcan0"]) == 2
    assert "INTERFACE:CHANNEL" in capsys.readouterr().err
