"""The EKF's current-bias estimate over a long rest at the top of charge."""

from __future__ import annotations

import pytest

from bmsgw.core import Core, CoreParams
from bmsgw.core.chemistry import profile
from bmsgw.model import Chemistry, PackSample
from bmsgw.sim.cells import SimPack, SimPackConfig

CAP = 50.0


def _top_rest_bias(offset_a: float, hours: float = 3.0, dt: float = 2.0) -> float:
    """4 LFP cells charged to 99.5 % and rested 30 min (on their charge branch, above the filter's start
    assumption h = 0, so the first reading puts the SOC at the top of the OCV table), then `hours` of rest
    read with a current sensor `offset_a` off (inside the rest deadband). Returns the final bias estimate."""
    prof = profile(Chemistry.LFP)
    sim = SimPack(
        SimPackConfig(
            cells=4, chemistry=Chemistry.LFP, capacity_ah=CAP, sensors=1, initial_soc=0.985, soc_spread=0.0,
            capacity_spread=0.0, resistance_spread=0.0, rc_tau_s=prof.tau1_s,
            r1_fraction=prof.r1_ohm_ah / prof.r0_ohm_ah, hysteresis=1.0, seed=1,
        )
    )  # fmt: skip
    for _ in range(72):  # 1 % in at C/2
        sim.step(1.0, 25.0)
    sim.step(1800.0, 0.0)
    core = Core(CoreParams.defaults(Chemistry.LFP, (4,), (1,), (CAP,), estimator="ekf"))
    bias = 0.0
    for k in range(int(hours * 3600.0 / dt)):
        t = (k + 1) * dt
        sim.step(dt, 0.0)
        r = sim.reading()
        out = core.step(
            t, [PackSample(0, t, r.cell_v, r.cell_t, r.current + offset_a, float(r.cell_v.sum()))]
        )
        bias = out.packs[0].current_bias_a
    assert out.packs[0].anchors >= 5  # the rest anchors and their repeats did happen
    return bias


def test_a_rest_at_the_top_does_not_invent_a_bias() -> None:
    """A true sensor: the SOC state may sit above the OCV table's 100 % (the start read the charge branch's
    voltage as full); the voltage it predicts there must follow its slope, or the flat prediction leaves the
    predicted drift of the state unopposed and the filter explains it by a bias (the kernel that clamped the
    lookup at 100 %: −100 mA after 3 h on this 50 Ah pack, and growing)."""
    assert abs(_top_rest_bias(0.0)) < 0.03


@pytest.mark.parametrize("offset", [0.25, -0.25])
def test_a_rest_at_the_top_learns_a_real_offset(offset: float) -> None:
    """A real offset within the rest deadband does make the counted SOC drift on the steep top of the OCV,
    so the rest's voltage updates learn it (the old kernel learnt −0.05 A for +0.25 A, the wrong sign; a
    filter that held the bias at rest would learn nothing)."""
    assert offset * _top_rest_bias(offset) > 0.4 * offset * offset
