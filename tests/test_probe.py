"""`bmsgw probe` against the fake BMS of every serial kind over a real pty, and the exit-2 paths."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import pytest
from fake_bms import BmsModel, FakeBms
from fakes import running
from ptys import PtyPair, pty_pair

from bmsgw import cli

KINDS = ["jk", "jbd", "daly", "daly-modbus", "seplos", "pylontech-rs485"]


@contextlib.asynccontextmanager
async def fake(kind: str, model: BmsModel) -> AsyncIterator[tuple[PtyPair, FakeBms]]:
    with pty_pair() as pty:
        bms = FakeBms(kind, pty, model)
        async with running(bms.run):
            yield pty, bms


async def probe(*argv: str) -> int:
    """Run the real CLI entry point in a worker thread (it runs its own event loop)."""
    return await asyncio.to_thread(cli.main, ["probe", *argv])


@pytest.mark.parametrize("kind", KINDS)
async def test_probe_prints_what_the_bms_reports(kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    model = BmsModel(current=-4.5, soc=71.0)
    model.cell_v[2], model.cell_v[9] = 3.21, 3.41
    async with fake(kind, model) as (pty, _):
        assert await probe("--source", kind, "--port", pty.path, "--verbose") == 0
    out = capsys.readouterr().out
    assert f"{kind} BMS on {pty.path}" in out
    assert "   3  3.210 V  min" in out
    assert "  10  3.410 V  max" in out
    assert "delta 200 mV" in out
    assert "temperatures (2): 25.0 °C, 26.0 °C" in out
    assert "-4.50 A (discharging)" in out
    assert "SOC reported  71.0 %" in out
    assert "CHARGE_FET DISCHARGE_FET" in out
    assert f'source = "{kind}", cells = 16, sensors = 2' in out
    assert "\n  >> " in out
    assert "\n  << " in out


@pytest.mark.parametrize("kind", KINDS)
async def test_probe_json(kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    async with fake(kind, BmsModel()) as (pty, bms):
        assert await probe("--source", kind, "--port", pty.path, "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["cells_v"] == [3.3] * 16
    assert doc["current_a"] == 10.0
    assert doc["soc_reported"] == 0.5
    assert doc["flags"] == ["CHARGE_FET", "DISCHARGE_FET"]
    assert "frames" not in doc
    assert bms.requests >= 1


async def test_probe_daly_board_address(capsys: pytest.CaptureFixture[str]) -> None:
    async with fake("daly", BmsModel(daly_address=0x41)) as (pty, _):
        assert await probe("--source", "daly", "--port", pty.path, "--address", "0x41", "--json") == 0
    assert json.loads(capsys.readouterr().out)["address"] == 0x41


async def test_no_answer_exits_2_with_what_to_check(capsys: pytest.CaptureFixture[str]) -> None:
    async with fake("jk", BmsModel(silent=True)) as (pty, bms):
        assert await probe("--source", "jk", "--port", pty.path) == 2
    err = capsys.readouterr().err
    assert (
        f"no answer from jk BMS on {pty.path} at 115200 baud within 2 s: check wiring A/B, baud rate, address"
    ) in err
    assert bms.requests == 1


async def test_garbled_answers_exit_2_and_say_so(capsys: pytest.CaptureFixture[str]) -> None:
    model = BmsModel(corrupt=10)
    async with fake("jbd", model) as (pty, _):
        assert await probe("--source", "jbd", "--port", pty.path, "--baudrate", "19200") == 2
    err = capsys.readouterr().err
    assert "no answer from jbd BMS" in err
    assert "at 19200 baud" in err
    assert "(1 garbled frame, last: checksum" in err


def test_missing_port_and_bad_address_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["probe", "--source", "daly", "--port", "/dev/ttyNOPE"]) == 2
    assert "cannot open serial port /dev/ttyNOPE" in capsys.readouterr().err
    assert cli.main(["probe", "--source", "daly", "--port", "/dev/ttyNOPE", "--address", "7"]) == 2
    assert "address 0x7 is not a daly address" in capsys.readouterr().err


def test_can_is_not_a_probe_source(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["probe", "--source", "can", "--port", "/dev/x"])
    assert exc.value.code == 2
    assert "invalid choice: 'can'" in capsys.readouterr().err
