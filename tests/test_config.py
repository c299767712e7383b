"""Configuration: precedence, provenance, and errors that name the key, value and what is allowed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bmsgw.cli import main
from bmsgw.config import ConfigError, Source, load_settings
from bmsgw.model import Chemistry

EXAMPLES = Path(__file__).parent.parent / "examples"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "bmsgw.toml"
    p.write_text(text)
    return p


def test_defaults_without_file() -> None:
    settings, origin = load_settings(None, env={})
    assert settings.gateway.stale_after_s == 5.0
    assert [p.id for p in settings.packs] == ["pack1"]
    assert settings.chemistry is Chemistry.LFP
    assert origin["gateway.stale_after_s"] is Source.DEFAULT


def test_precedence_file_env_cli(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[gateway]\nstale_after_s = 7\nname = "file"\n[can]\nchannel = "can3"\nbitrate = 250000\n',
    )
    env = {"BMSGW_GATEWAY__STALE_AFTER_S": "4", "BMSGW_CAN__CHANNEL": "vcan0"}
    settings, origin = load_settings(path, {"gateway.stale_after_s": 2.5}, env=env)
    assert settings.gateway.stale_after_s == 2.5
    assert origin["gateway.stale_after_s"] is Source.CLI
    assert settings.can.channel == "vcan0"
    assert origin["can.channel"] is Source.ENV
    assert settings.can.bitrate == 250000
    assert origin["can.bitrate"] is Source.FILE
    assert settings.gateway.name == "file"
    assert origin["gateway.recovery_ramp_s"] is Source.DEFAULT


def test_env_packs_as_json() -> None:
    env = {"BMSGW_PACKS": '[{"id": "a", "cells": 8, "chemistry": "nmc", "capacity_ah": 50}]'}
    settings, origin = load_settings(None, env=env)
    assert settings.packs[0].cells == 8
    assert settings.chemistry is Chemistry.NMC
    assert origin["packs[0].cells"] is Source.ENV
    assert origin["packs[0].address"] is Source.DEFAULT


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        (
            "[gateway]\nstale_after = 3\n",
            "gateway.stale_after: unknown key; allowed keys here: name, state_dir",
        ),
        (
            "[[packs]]\nid = 'a'\ncells = 40\n",
            "packs[0].cells = 40: Input should be less than or equal to 32",
        ),
        (
            "[[packs]]\nid = 'a'\nchemistry = 'lto'\n",
            "packs[0].chemistry = 'lto': Input should be 'lfp' or 'nmc'",
        ),
        ("[[packs]]\ncells = 4\n", "packs[0].id: required key is missing"),
        (
            "[[packs]]\nid = 'a'\nsource = 'ant'\n",
            "packs[0].source = 'ant': unknown source 'ant'; allowed: can, jk, jbd, daly, daly-modbus",
        ),
        (
            "[[outputs]]\nprotocol = 'sma'\n",
            "outputs[0].protocol = 'sma': unknown protocol 'sma'; allowed: pylontech-can",
        ),
        ("[limits]\ncell_v_max_warn = 3.7\ncell_v_max_alarm = 3.6\n", "cell_v_min_alarm < cell_v_min_warn"),
        ("[[packs]]\nid='a'\n[[packs]]\nid='a'\naddress=1\n", "packs: ids must be unique"),
        ("[[packs]]\nid='a'\n[[packs]]\nid='b'\n", "packs: CAN packs need distinct address values"),
        ("[gateway]\nstale_after_s = -1\n", "gateway.stale_after_s = -1: Input should be greater than 0"),
        ("not toml [", "not valid TOML"),
    ],
)
def test_errors_name_key_value_and_allowed(tmp_path: Path, toml: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, toml), env={})
    assert any(expected in line for line in err.value.problems), err.value.problems


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(tmp_path / "nope.toml", env={})


@pytest.mark.parametrize("name", ["lfp-16s.toml", "nmc-14s.toml", "replay.toml"])
def test_examples_are_valid(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(EXAMPLES / name)]) == 0
    assert "ok" in capsys.readouterr().out


def test_config_check_exit_2_lists_each_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "[gateway]\nstale_after_s = 0\n[[packs]]\nid = 'a'\ncells = 0\n")
    assert main(["config", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "gateway.stale_after_s = 0" in err
    assert "packs[0].cells = 0" in err


def test_config_show_reports_sources_and_chemistry_defaults(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BMSGW_CAN__CHANNEL", "vcan9")
    path = write(tmp_path, "[[packs]]\nid = 'n'\nchemistry = 'nmc'\ncells = 14\n")
    assert main(["config", "show", "--config", str(path), "--set", "gateway.name=edge7", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["gateway.name"] == {"value": "edge7", "source": "cli"}
    assert shown["can.channel"] == {"value": "vcan9", "source": "env"}
    assert shown["packs[0].cells"] == {"value": 14, "source": "file"}
    assert shown["limits.cell_v_max_alarm"]["value"] > 4.0  # NMC default filled in, not None
    assert main(["config", "show", "--config", str(path)]) == 0
    assert "nmc default" in capsys.readouterr().out


def test_bad_set_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "--set", "novalue"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err
