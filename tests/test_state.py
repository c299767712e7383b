"""Estimator state persistence: atomic JSON file, strict parsing, restore only when the packs match."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmsgw.cli import main
from bmsgw.config import ConfigError, Settings, load_settings
from bmsgw.core import Core, CoreParams
from bmsgw.core._devbuild import BuildUnavailableError, build_compiled_kernel, load_pure_kernel
from bmsgw.daemon import Daemon
from bmsgw.energy_management import EnergySaved, EnergyStore
from bmsgw.model import AlarmCode, AlarmLevel, Chemistry, PackSample, PackStatus
from bmsgw.pipeline import Pipeline
from bmsgw.state import (
    FILE_NAME,
    EstimatorState,
    PackSoc,
    SocTracker,
    StateFileError,
    StateStore,
    atomic_write,
    capture,
    restore,
)


def two_packs(state_dir: Path | None = None, **gateway: Any) -> Settings:
    cfg: dict[str, Any] = {
        "packs": [
            {"id": "a", "cells": 4, "sensors": 1, "address": 0},
            {"id": "b", "cells": 3, "sensors": 1, "address": 1},
        ],
        "can": {"interface": "virtual", "channel": "state-tests"},
    }
    if state_dir is not None:
        cfg["gateway.state_dir"] = str(state_dir)
    cfg.update({f"gateway.{k}": v for k, v in gateway.items()})
    settings, _ = load_settings(None, cfg, env={})
    return settings


def saved(a: list[float] | None, b: list[float] | None, chemistry: str = "lfp") -> EstimatorState:
    def pack(pid: str, cells: int, soc: list[float] | None) -> PackSoc:
        return PackSoc(
            id=pid, cells=cells, soc=None if soc is None else min(soc), cell_soc=None if soc is None else soc
        )

    return EstimatorState(saved_at=1.0, chemistry=chemistry, packs=(pack("a", 4, a), pack("b", 3, b)))


def sample(pack: int, cells: int, t: float = 1.0) -> PackSample:
    return PackSample(pack, t, np.full(cells, 3.30), np.full(1, 25.0), 0.0, 3.30 * cells)


# --- file -------------------------------------------------------------------------------------------


def test_save_then_load_round_trips(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    store.prepare()
    state = saved([0.5, 0.51, 0.52, 0.53], [0.9, 0.91, 0.92])
    assert store.save(state)
    assert store.load() == state
    doc = json.loads((tmp_path / "state" / FILE_NAME).read_text())
    assert doc["version"] == 1
    assert doc["packs"][1]["cell_soc"] == [0.9, 0.91, 0.92]
    assert [p.name for p in (tmp_path / "state").iterdir()] == [FILE_NAME]  # no temp files left


def test_no_file_is_none(tmp_path: Path) -> None:
    assert StateStore(tmp_path).load() is None


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("{not json", "not a valid estimator state"),
        ('{"version": 1, "saved_at": 1, "chemistry": "lfp"}', "packs"),
        (
            '{"version": 1, "saved_at": 1, "chemistry": "lfp", "packs": '
            '[{"id": "a", "cells": 1, "soc": 1.5, "cell_soc": [0.5]}]}',
            "packs.0.soc",
        ),
        (
            '{"version": 1, "saved_at": 1, "chemistry": "lfp", "packs": '
            '[{"id": "a", "cells": 1, "soc": 0.5, "cell_soc": [NaN]}]}',
            "cell_soc",
        ),
        ('{"version": 2, "saved_at": 1, "chemistry": "lfp", "packs": []}', "version 2"),
    ],
)
def test_corrupt_file_is_a_state_file_error(tmp_path: Path, text: str, why: str) -> None:
    (tmp_path / FILE_NAME).write_text(text)
    with pytest.raises(StateFileError, match=why):
        StateStore(tmp_path).load()


@given(st.binary(max_size=300))
@settings(max_examples=200, deadline=None)
def test_random_bytes_never_raise_anything_else(data: bytes) -> None:
    with contextlib.suppress(ValueError):  # pydantic's ValidationError (load makes it StateFileError)
        EstimatorState.model_validate_json(data)


@given(st.binary(max_size=200))
@settings(max_examples=50, deadline=None)
def test_load_of_random_bytes_is_none_or_state_file_error(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / FILE_NAME).write_bytes(data)
        with contextlib.suppress(StateFileError):
            StateStore(Path(d)).load()


def test_older_snapshot_never_overwrites_a_newer_one(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    new, old = saved([0.2] * 4, [0.2] * 3), saved([0.1] * 4, [0.1] * 3)
    assert store.save(new, seq=2)
    assert not store.save(old, seq=1)  # a late periodic save after the shutdown save
    assert store.load() == new


def test_unwritable_state_dir_names_the_key(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError) as err:
        StateStore(blocker / "state").prepare()
    (line,) = err.value.problems
    assert line.startswith(f"gateway.state_dir = '{blocker / 'state'}': cannot write there")


def test_atomic_write_replaces_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    atomic_write(path, b"first version, longer")
    atomic_write(path, b"second")
    assert path.read_bytes() == b"second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


# --- capture / restore ------------------------------------------------------------------------------


def test_restore_gives_the_core_its_arguments() -> None:
    soc, cells = restore(two_packs(), saved([0.5, 0.6, 0.7, 0.8], [0.1, 0.2, 0.3]))
    assert soc == [0.5, 0.1]
    assert cells == [[0.5, 0.6, 0.7, 0.8], [0.1, 0.2, 0.3]]


@pytest.mark.parametrize(
    ("state", "why"),
    [
        (saved([0.5] * 4, [0.5] * 3, chemistry="nmc"), "chemistry nmc"),
        (saved([0.5] * 4, None), "no saved SOC for pack 'b'"),
        (
            EstimatorState(
                saved_at=0, chemistry="lfp", packs=(PackSoc(id="a", cells=4, soc=0.5, cell_soc=(0.5,) * 4),)
            ),
            "saved packs",
        ),
        (
            EstimatorState(
                saved_at=0,
                chemistry="lfp",
                packs=(
                    PackSoc(id="a", cells=4, soc=0.5, cell_soc=(0.5,) * 4),
                    PackSoc(id="b", cells=2, soc=0.5, cell_soc=(0.5,) * 2),
                ),
            ),
            r"\('b', 2\)",
        ),
    ],
)
def test_restore_refuses_a_state_that_does_not_fit(state: EstimatorState, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        restore(two_packs(), state)


def test_capture_stores_only_known_packs() -> None:
    settings = two_packs()
    pipe = Pipeline(settings)
    tracker = SocTracker(2, restored=False)
    pipe.submit(sample(0, 4))
    state = pipe.step(1.0)
    tracker.see(state)
    assert state.packs[0].status is PackStatus.ONLINE
    assert state.packs[1].cell_soc is not None  # the core reports zeros for a pack it never saw...
    snap = capture(settings, state, tracker.known, saved_at=123.0)
    assert snap.packs[1].soc is None  # ...which must not be saved as a SOC
    assert snap.packs[0].cell_soc is not None
    assert len(snap.packs[0].cell_soc) == 4
    assert snap.packs[0].soc == pytest.approx(state.packs[0].soc)
    assert snap.saved_at == 123.0


# --- the core's per-cell start ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def kernels() -> dict[str, Any]:
    out: dict[str, Any] = {"pure": load_pure_kernel()}
    with contextlib.suppress(BuildUnavailableError):
        out["compiled"] = build_compiled_kernel()
    return out


@pytest.mark.parametrize("variant", ["pure", "compiled"])
def test_core_starts_from_the_given_cell_soc(kernels: dict[str, Any], variant: str) -> None:
    if variant not in kernels:
        pytest.skip("cannot build the compiled kernel here")
    params = CoreParams.defaults(Chemistry.LFP, (4, 3), (1, 1), (100, 100))
    cells = [[0.40, 0.45, 0.50, 0.55], [0.80, 0.81, 0.82]]
    core = Core(params, [0.42, 0.81], initial_cell_soc=cells, kernel_module=kernels[variant])
    out = core.step(1.0, [sample(0, 4), sample(1, 3)])  # from OCV, 3.30 V would give one value for all
    assert out.packs[0].cell_soc.tolist() == pytest.approx(cells[0], abs=0.02)
    assert out.packs[1].cell_soc.tolist() == pytest.approx(cells[1], abs=0.02)
    assert 0.40 - 0.02 <= out.packs[0].soc <= 0.55 + 0.02
    before = Core(params, [0.42, 0.81], initial_cell_soc=cells, kernel_module=kernels[variant])
    assert before.step(0.0, [None, None]).soc == pytest.approx((0.42 + 0.81) / 2)  # until data arrives


@pytest.mark.parametrize(
    "cells",
    [[[0.5] * 4, [0.5] * 2], [[0.5] * 4], [[0.5] * 4, [0.5, 0.5, 1.5]], [[0.5] * 4, [0.5, math.nan, 0.5]]],
)
def test_core_rejects_bad_cell_soc(cells: list[list[float]]) -> None:
    params = CoreParams.defaults(Chemistry.LFP, (4, 3), (1, 1), (100, 100))
    with pytest.raises(ValueError, match="initial_cell_soc"):
        Core(params, [0.5, 0.5], initial_cell_soc=cells)
    with pytest.raises(ValueError, match="initial_cell_soc"):
        Core(params, None, initial_cell_soc=[[0.5] * 4, [0.5] * 3])


# --- the daemon's start ---------------------------------------------------------------------------


def test_daemon_restores_a_matching_state(tmp_path: Path) -> None:
    state = saved([0.30, 0.31, 0.32, 0.33], [0.70, 0.71, 0.72])
    StateStore(tmp_path).save(state)
    daemon = Daemon(two_packs(tmp_path), env={})
    out = daemon.gateway.pipeline.step(1.0)  # before any pack reports: the estimate is the restored one
    assert out.packs[0].cell_soc is not None
    assert out.packs[0].cell_soc.tolist() == pytest.approx([0.30, 0.31, 0.32, 0.33])
    assert out.packs[1].cell_soc is not None
    assert out.packs[1].cell_soc.tolist() == pytest.approx([0.70, 0.71, 0.72])
    snap = daemon.capture()
    assert [p.cell_soc for p in snap.packs] == [p.cell_soc for p in state.packs]


def test_restored_pack_stays_known_while_offline(tmp_path: Path) -> None:
    StateStore(tmp_path).save(saved([0.30, 0.31, 0.32, 0.33], [0.70, 0.71, 0.72]))
    daemon = Daemon(two_packs(tmp_path), env={})
    daemon.gateway.tick()  # what Gateway.run does first; no pack has reported yet
    snap = daemon.capture()
    assert snap.packs[1].cell_soc == (0.70, 0.71, 0.72)  # saved again as it was, not lost


@pytest.mark.parametrize("content", ["{torn", "mismatch"])
def test_daemon_starts_from_ocv_on_a_bad_state(tmp_path: Path, content: str) -> None:
    if content == "mismatch":
        StateStore(tmp_path).save(saved([0.3] * 4, [0.7] * 3, chemistry="nmc"))
    else:
        (tmp_path / FILE_NAME).write_text(content)
    daemon = Daemon(two_packs(tmp_path), env={})
    pipe = daemon.gateway.pipeline
    pipe.submit(sample(0, 4))
    out = pipe.step(1.0)
    assert out.packs[0].cell_soc is not None
    assert all(abs(x - 0.3) > 0.05 for x in out.packs[0].cell_soc)  # from the 3.30 V OCV (~0.39), not 0.3
    assert daemon.capture().packs[1].soc is None
    reset = out.alarm_level(AlarmCode.STATE_RESET)
    if content == "mismatch":  # a valid file for another system is not a fault of the file
        assert reset is None
    else:
        assert reset is AlarmLevel.WARNING
        (alarm,) = [a for a in out.alarms if a.code is AlarmCode.STATE_RESET]
        assert "OCV" in alarm.detail


def test_latched_faults_survive_a_restart(tmp_path: Path) -> None:
    daemon = Daemon(two_packs(tmp_path), env={})
    daemon.gateway.pipeline.core.restore_latched([(1, "cell_ov_fault", 5.0)])
    assert daemon.gateway.pipeline.core.latched() == ((1, "cell_ov_fault", 5.0),)
    daemon.save()
    saved_file = StateStore(tmp_path).load()
    assert saved_file is not None
    assert [(f.pack, f.key) for f in saved_file.latched] == [("b", "cell_ov_fault")]
    again = Daemon(two_packs(tmp_path), env={})
    core = again.gateway.pipeline.core
    assert [(p, k) for p, k, _ in core.latched()] == [(1, "cell_ov_fault")]
    core.reset_latched(1)
    assert core.latched() == ()
    # a pack that is no longer configured takes its faults with it
    StateStore(tmp_path).save(saved_file)
    settings, _ = load_settings(None, {"packs": [{"id": "a", "cells": 4, "sensors": 1}],
                                       "gateway.state_dir": str(tmp_path)}, env={})  # fmt: skip
    assert Daemon(settings, env={}).gateway.pipeline.core.latched() == ()


async def test_the_final_save_lands_after_an_autosave_under_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = Daemon(two_packs(tmp_path, state_save_period_s=1), env={})
    written: list[EnergySaved] = []  # in the order the writes began
    done: list[EnergySaved] = []
    started, release, finished = threading.Event(), threading.Event(), threading.Event()
    write_energy = daemon._write_energy

    def slow_disk(saved: EnergySaved) -> None:
        written.append(saved)
        if len(written) == 1:  # the autosave: its disk is slow
            started.set()
            release.wait(30)
        write_energy(saved)
        done.append(saved)
        if len(done) == 2:
            finished.set()

    monkeypatch.setattr(daemon, "_write_energy", slow_disk)
    task = asyncio.create_task(daemon.run())
    async with asyncio.timeout(30):
        while not started.is_set():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    daemon.stop()  # while the autosave's write is under way
    threading.Timer(0.3, release.set).start()
    async with asyncio.timeout(30):
        await task
    assert await asyncio.to_thread(finished.wait, 30)  # both writes are done (a late one would be too)
    assert len(written) == 2
    assert written[0].saved_at != written[1].saved_at
    assert EnergyStore(tmp_path).load() == written[1]  # the newer state, not the autosave's


def test_daemon_refuses_an_unwritable_state_dir(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(ConfigError, match=r"gateway\.state_dir"):
        Daemon(two_packs(tmp_path / "f" / "state"), env={})


def test_bmsgw_run_exits_2_naming_the_state_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "f").write_text("")
    config = tmp_path / "bmsgw.toml"
    config.write_text(f'[gateway]\nstate_dir = "{tmp_path / "f" / "state"}"\n')
    assert main(["run", "--config", str(config)]) == 2
    assert "gateway.state_dir = " in capsys.readouterr().err
