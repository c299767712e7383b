"""The simulated cell defaults to the chemistry profile's fitted model; the hysteresis drive option."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bmsgw.core.chemistry import profile
from bmsgw.model import Chemistry
from bmsgw.sim.cells import SimPack, SimPackConfig


def pack(chem: Chemistry = Chemistry.LFP, **kw: float) -> SimPack:
    return SimPack(
        SimPackConfig(
            cells=4, chemistry=chem, capacity_ah=100.0, sensors=1, capacity_spread=0.0, soc_spread=0.0,
            resistance_spread=0.0, self_discharge_per_day=0.0, thermal_mass_j_per_k=1e15, **kw,
        )
    )  # fmt: skip


@pytest.mark.parametrize("chem", list(Chemistry))
def test_default_rc_branch_is_the_profiles_fitted_one(chem: Chemistry) -> None:
    prof = profile(chem)
    cfg = pack(chem).config
    assert cfg.rc_tau_s == prof.tau1_s
    assert cfg.r1_fraction == pytest.approx(prof.r1_ohm_ah / prof.r0_ohm_ah)


def test_default_pack_settles_at_the_fitted_r0_plus_r1() -> None:
    sim = pack()
    rest = sim.reading().cell_v
    for _ in range(600):  # > 15 τ
        sim.step(1.0, 50.0)
    prof = profile(Chemistry.LFP)
    moved = 50.0 * 600.0 / 3600.0 / 100.0  # SOC moved; the OCV rise over it is taken off below
    soc_pts, ocv_pts = np.asarray(prof.soc_points), np.asarray(prof.ocv_points)
    d_ocv = np.interp(0.5 + moved, soc_pts, ocv_pts) - np.interp(0.5, soc_pts, ocv_pts)
    r_total = (prof.r0_ohm_ah + prof.r1_ohm_ah) / 100.0
    np.testing.assert_allclose(sim.reading().cell_v - rest - d_ocv, 50.0 * r_total, rtol=1e-3)


def test_explicit_rc_overrides_are_kept() -> None:
    cfg = pack(rc_tau_s=60.0, r1_fraction=0.5).config
    assert (cfg.rc_tau_s, cfg.r1_fraction) == (60.0, 0.5)


@pytest.mark.parametrize(
    ("kw", "name"), [({"r1_fraction": 0.0}, "r1_fraction"), ({"rc_tau_s": -1.0}, "rc_tau_s")]
)
def test_bad_rc_is_rejected_naming_the_field(kw: dict[str, float], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        pack(**kw)


def test_instantaneous_hysteresis_drive_follows_plett() -> None:
    sim = pack(hysteresis=1.0)
    for _ in range(60):
        sim.step(1.0, 20.0)
    rate = profile(Chemistry.LFP).hyst_gamma * 20.0 * 60.0 / (3600.0 * 100.0)
    np.testing.assert_allclose(sim.hysteresis_true, 1.0 - math.exp(-rate), rtol=1e-9)


def test_filtered_hysteresis_drive_lags_then_saturates() -> None:
    fast, slow = pack(hysteresis=1.0), pack(hysteresis=1.0, hysteresis_drive_tau_s=500.0)
    for _ in range(60):
        fast.step(1.0, 20.0)
        slow.step(1.0, 20.0)
    assert 0.0 < slow.hysteresis_true.max() < 0.2 * fast.hysteresis_true.min()
    for _ in range(7200):
        slow.step(1.0, 20.0)
    np.testing.assert_allclose(slow.hysteresis_true, 1.0, atol=1e-3)


def test_negative_hysteresis_drive_tau_is_rejected() -> None:
    with pytest.raises(ValueError, match="hysteresis_drive_tau_s"):
        pack(hysteresis_drive_tau_s=-1.0)
