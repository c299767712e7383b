"""The simulator pieces the health and SOC accuracy runs rely on: OCV hysteresis and per-cell leak current."""

from __future__ import annotations

import numpy as np
import pytest

from bmsgw.core.chemistry import hysteresis_v, profile
from bmsgw.model import Chemistry
from bmsgw.sim.cells import SimPack, SimPackConfig


def lfp(**kw: object) -> SimPack:
    cfg: dict[str, object] = {
        "cells": 4, "chemistry": Chemistry.LFP, "capacity_ah": 100.0, "sensors": 1, "initial_soc": 0.5,
        "capacity_spread": 0.0, "soc_spread": 0.0, "resistance_spread": 0.0, "self_discharge_per_day": 0.0,
    }  # fmt: skip
    cfg.update(kw)
    return SimPack(SimPackConfig(**cfg))  # type: ignore[arg-type]


def rest_voltage_after(sim: SimPack, current: float, seconds: float) -> tuple[float, float]:
    """(mean cell voltage after a 2-hour rest, true SOC) after `current` for `seconds`."""
    for _ in range(int(seconds)):
        sim.step(1.0, current)
    for _ in range(7200):
        sim.step(1.0, 0.0)
    r = sim.reading()
    return float(r.cell_v.mean()), float(r.soc_true.mean())


@pytest.mark.parametrize("current", [50.0, -50.0], ids=["after charge", "after discharge"])
def test_hysteresis_puts_the_rested_voltage_on_its_branch(current: float) -> None:
    sim = lfp(hysteresis=1.0)
    v, z = rest_voltage_after(sim, current, 1800.0)
    prof = profile(Chemistry.LFP)
    temp = float(sim.temperature_true.mean())
    sign = 1.0 if current > 0 else -1.0
    assert np.allclose(sim.hysteresis_true, sign, atol=1e-6)  # a 25 % SOC move saturates h
    # the simulator's OCV is the 25 °C curve; M is taken at the cell temperature
    expected = float(np.interp(z, prof.soc_points, prof.ocv_points)) + sign * hysteresis_v(prof, z, temp)
    assert v == pytest.approx(expected, abs=2e-4)


def test_without_hysteresis_the_rested_voltage_is_the_mean_curve() -> None:
    sim = lfp()
    v, z = rest_voltage_after(sim, 50.0, 1800.0)
    prof = profile(Chemistry.LFP)
    assert v == pytest.approx(float(np.interp(z, prof.soc_points, prof.ocv_points)), abs=1e-4)
    assert not sim.hysteresis_true.any()


def test_a_leak_current_drains_only_its_cell() -> None:
    sim = lfp(cell_leak_a=(0.0, 1.0, 0.0, 0.0))
    for _ in range(3600):
        sim.step(1.0, 0.0)
    soc = sim.soc_true
    assert soc[1] == pytest.approx(0.5 - 1.0 / 100.0, abs=1e-9)  # 1 A for 1 h out of 100 Ah
    assert soc[[0, 2, 3]] == pytest.approx([0.5] * 3, abs=1e-12)


@pytest.mark.parametrize(
    "kw",
    [
        {"cell_leak_a": (0.1,)},
        {"cell_leak_a": (0.0, -0.1, 0.0, 0.0)},
        {"hysteresis": -1.0},
        {"hysteresis_gamma": -1.0},
    ],
)
def test_bad_hysteresis_or_leak_is_rejected_naming_the_field(kw: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(kw))):
        lfp(**kw)
