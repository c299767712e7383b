"""Charge-voltage stages: bulk → absorption → float → re-bulk, cell-overshoot pull-down, never CVL 0.

One LFP pack of 4 cells (CVL 13.8 V in bulk/absorption, 13.5 V in float), counting estimator, no ramps
unless a test says so. Deterministic: every step has an explicit t.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_core import DT, Rig, params

from bmsgw.core import Core, CoreOutput
from bmsgw.model import ChargeStage, Reason

BULK, ABSORPTION, FLOAT = ChargeStage.BULK, ChargeStage.ABSORPTION, ChargeStage.FLOAT


def rig(soc: float = 0.5, **overrides: Any) -> Rig:
    kw: dict[str, Any] = {"estimator": "counting", "recovery_ramp_s": 0.0, **overrides}
    return Rig(Core(params(**kw), initial_soc=[soc]))


def stage(out: CoreOutput) -> ChargeStage:
    return out.limits.charge_stage


def test_bulk_absorption_tail_current_float() -> None:
    r = rig()
    out = r.run(5.0, v=3.30, i=40.0)
    assert stage(out) is BULK
    assert out.limits.cvl.value == pytest.approx(4 * 3.45)
    out = r.run(5.0, v=3.42, i=20.0)  # mean cell within 50 mV of the charge voltage
    assert stage(out) is ABSORPTION
    assert out.limits.cvl.value == pytest.approx(4 * 3.45)
    out = r.run(30.0, v=3.44, i=8.0)  # still above the 5 A tail current (0.05 C)
    assert stage(out) is ABSORPTION
    t_tail = r.t + DT
    out = r.run(60.0, v=3.45, i=2.0)  # below the tail, not yet for full_hold_s …
    assert stage(out) is ABSORPTION
    out = r.at(v=3.45, i=2.0)  # … now
    assert r.t == pytest.approx(t_tail + 60.0)
    assert stage(out) is FLOAT
    assert out.limits.cvl.value == pytest.approx(4 * 3.375)
    assert out.limits.cvl.reason is Reason.CONFIG
    assert out.packs[0].soc == 1.0  # the same moment is the full-charge anchor


def test_absorption_ends_after_its_maximum_time_spent_at_the_voltage() -> None:
    r = rig(absorption_time_max_s=30.0)
    r.run(1.0, v=3.42, i=20.0)
    out = r.run(10.0, v=3.30, i=20.0)  # voltage sags: the absorption clock pauses
    assert stage(out) is ABSORPTION
    out = r.run(28.0, v=3.42, i=20.0)
    assert stage(out) is ABSORPTION  # 1 − DT + 28 s at the voltage
    out = r.run(1.25, v=3.42, i=20.0)
    assert stage(out) is FLOAT  # tail current never reached: the time limit ended it


def _to_float(r: Rig, c_rate: float = 100.0) -> CoreOutput:
    r.run(1.0, v=3.42, i=0.2 * c_rate)
    out = r.run(60.5, v=3.45, i=0.01 * c_rate)
    assert stage(out) is FLOAT
    return out


def test_rebulk_on_soc_drop() -> None:
    r = rig(capacity_ah=(10.0,))  # 5 A charge / 10 A discharge
    _to_float(r, 10.0)
    out = r.run(600.0, v=3.30, i=-10.0)  # 1 C for ten minutes: SOC 1.0 → 0.83
    assert stage(out) is BULK
    assert out.soc < 0.85
    assert out.limits.cvl.value == pytest.approx(4 * 3.45)
    # …but float holds while the SOC stays above the threshold
    r2 = rig(capacity_ah=(10.0,))
    _to_float(r2, 10.0)
    out = r2.run(300.0, v=3.30, i=-10.0)  # SOC 0.917
    assert stage(out) is FLOAT


def test_rebulk_on_imbalance() -> None:
    r = rig()
    _to_float(r)
    out = r.run(2.0, v=[3.37, 3.30, 3.30, 3.30])  # 70 mV spread: stays in float
    assert stage(out) is FLOAT
    out = r.at(v=[3.38, 3.30, 3.30, 3.30])  # 80 mV: back to bulk to balance at the top
    assert stage(out) is BULK


def test_a_pack_unbalanced_when_absorption_ends_stays_in_float() -> None:
    r = rig()
    r.run(1.0, v=[3.50, 3.40, 3.40, 3.40], i=20.0)
    out = r.run(60.5, v=[3.56, 3.43, 3.43, 3.43], i=1.0)  # tail current with a 130 mV spread
    assert stage(out) is FLOAT
    out = r.run(600.0, v=[3.50, 3.40, 3.40, 3.40])  # still unbalanced: no absorption ↔ float cycle
    assert stage(out) is FLOAT
    out = r.run(5.0, v=[3.40, 3.38, 3.38, 3.38])  # the spread falls below 80 mV …
    assert stage(out) is FLOAT
    out = r.at(v=[3.46, 3.38, 3.38, 3.38])  # … and when it reaches it again: back to bulk
    assert stage(out) is BULK


def test_overshoot_pulls_cvl_down_in_bulk_and_in_float() -> None:
    r = rig()
    out = r.run(2.0, v=[3.60, 3.40, 3.40, 3.40], i=10.0)  # bulk: 70 mV over the cell target 3.53 V
    assert stage(out) is ABSORPTION  # (mean 3.45)
    assert out.limits.cvl.value == pytest.approx(4 * 3.45 - 0.07)
    assert out.limits.cvl.reason is Reason.CELL_VOLTAGE_HIGH
    r = rig()
    _to_float(r)
    out = r.at(v=[3.50, 3.43, 3.43, 3.43])  # float target 3.375 + 0.08 = 3.455: 45 mV over
    assert stage(out) is FLOAT
    assert out.limits.cvl.value == pytest.approx(4 * 3.375 - 0.045)
    assert out.limits.cvl.reason is Reason.CELL_VOLTAGE_HIGH


def test_cvl_rises_from_float_to_bulk_under_the_ramp_and_never_reaches_zero() -> None:
    r = rig(recovery_ramp_s=60.0)
    out = r.run(70.0)
    _to_float(r)
    out = r.at(v=[3.38, 3.30, 3.30, 3.30])
    assert stage(out) is BULK
    assert out.limits.cvl.reason is Reason.RECOVERY  # a rise is rate-limited …
    assert 4 * 3.375 < out.limits.cvl.value < 4 * 3.45
    out = r.run(20.0)
    assert out.limits.cvl.value == pytest.approx(4 * 3.45)
    cvls = [r.at(v=[3.64, 3.64, 3.64, 3.64]).limits.cvl.value]  # … a fall is immediate, floored at DVL
    assert cvls[0] == pytest.approx(4 * 3.45 - 4 * 0.11)  # 110 mV over the 3.53 V target each
    for v in (3.70, 3.80, 4.2):
        cvls.append(r.at(v=[v] * 4).limits.cvl.value)
    assert min(cvls) >= 4 * 2.90 > 0.0  # Victron reads CVL 0 as "no limit": never sent
    out = r.core.step(r.t + 1.0, [None])  # comm lost: CVL held, never 0
    assert out.limits.cvl.value == cvls[-1] > 0.0
