"""bench/fuzz.py stays runnable and finds nothing on a short run (the long run is the benchmark)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "fuzz.py"


def _load() -> object:
    spec = importlib.util.spec_from_file_location("bench_fuzz", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_fuzz"] = module
    spec.loader.exec_module(module)
    return module


def test_short_fuzz_run_has_no_crash_or_hang(capsys: pytest.CaptureFixture[str]) -> None:
    fuzz = _load()
    rc = fuzz.main(["--count", "4000", "--network", "600", "--seed", "7", "--json"])  # type: ignore[attr-defined]
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    names = {t["name"] for t in report["targets"]}
    assert {"jk", "jbd", "daly", "daly-modbus", "pylontech-rs485-server", "pack-can-pipeline",
            "modbus-tcp-server", "pylontech-rs485-tcp-server", "modbus-rtu-server",
            "pylontech-rs485-serial-server"} <= names  # fmt: skip
    for t in report["targets"]:
        assert t["crashes"] == 0, t
        assert t["hangs"] == 0, t
        assert t["inputs"] >= 600
    # the generators reach both sides of every decoder: some inputs pass, some are refused
    decoders = ("jk", "jbd", "daly", "daly-modbus", "pylontech-rs485-frame", "seplos",
                "pylontech-rs485-input", "lv-can-input", "pylontech-hv-can-requests")  # fmt: skip
    for name in decoders:
        t = next(t for t in report["targets"] if t["name"] == name)
        assert t["accepted"] > 0, t
        assert t["rejected"] > 0, t
    assert rc == 0
    assert report["crashes_and_hangs"] == 0


def test_a_crashing_decoder_is_reported() -> None:
    fuzz = _load()

    def fragile(data: bytes) -> object:
        return data[3]  # IndexError on short input: not the codec's error type

    target = fuzz.Target("fragile", [bytes(8)], fragile, (ValueError,))  # type: ignore[attr-defined]
    result = fuzz.fuzz(target, 500, 1, 1.0)  # type: ignore[attr-defined]
    assert result.crashes > 0
    assert result.examples
