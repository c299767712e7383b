"""A full charge of an unbalanced pack on the built-in simulator: the charger regulates at CVL, the gateway's
cell-overshoot control holds the high cell at its target, the charge ends in float without an alarm.

Before, the simulated inverter ignored CVL and the same charge pushed the highest cell to 3.65 V (a tier-2
cell_overvoltage ALARM at the end of every full charge; the stage cycled absorption → float → bulk every
minute); with a CV charger but CVL only "target × cells − excess" the cell overshot to 3.569 V; with the
target at the 3.55 V warning level itself every such charge raised the over-voltage warning.
"""

from __future__ import annotations

import numpy as np
import pytest

from bmsgw.app import Gateway
from bmsgw.clock import SteppedClock
from bmsgw.config import load_settings
from bmsgw.model import AlarmCode, AlarmLevel, ChargeStage, GatewayState
from bmsgw.sim.cells import SimPack, SimPackConfig
from bmsgw.sources.can import CanPackSource
from bmsgw.sources.simulator import SimulatedPacks, simulation_settings


@pytest.mark.parametrize("volts", [52.0, 54.0, 55.2])
def test_cv_current_brings_the_terminal_voltage_to_the_set_point(volts: float) -> None:
    pack = SimPack(SimPackConfig(cells=16, chemistry="lfp", capacity_ah=100.0, initial_soc=0.6, seed=3))
    pack.step(1.0, 20.0)
    i = pack.cv_current(volts, 0.1)
    pack.step(0.1, i)
    assert pack.reading().voltage == pytest.approx(volts, abs=2e-3)  # the step's own charge moves the OCV


async def test_an_unbalanced_full_charge_ends_in_float_without_an_alarm() -> None:
    base, _ = load_settings(cli={"web.enabled": False})
    settings = simulation_settings(base)
    clock = SteppedClock(1000.0)
    gw = Gateway(settings, clock, frame_timestamps=True)
    src = next(s for s in gw.sources if isinstance(s, CanPackSource))
    sim = SimulatedPacks(settings, clock, gw.state, lambda: src.last_frame_t, seed=1, initial_soc=0.96,
                         start_hour=10)  # fmt: skip
    seen: list[GatewayState] = []
    gw.on_state(seen.append)
    await gw.run(sim.run, duration=1500)
    spread = [s.cell_v_max - s.cell_v_min for s in seen if s.t > 60]
    assert max(spread) > 0.12  # the pack is unbalanced at the top (the case that went wrong)
    alarms = {(a.code, a.level) for s in seen for a in s.alarms if a.level >= AlarmLevel.ALARM}
    assert alarms <= {(a.code, a.level) for a in seen[0].alarms}  # only the start-up comm_lost
    v_max = max(s.cell_v_max for s in seen if np.isfinite(s.cell_v_max))
    assert v_max < 3.545  # held at the 3.53 V target (3.569 V with only "target × cells − excess")
    over = [a for s in seen for a in s.alarms if a.code is AlarmCode.CELL_OVERVOLTAGE]
    assert over == []  # not even the warning at 3.55 V
    stages = [s.limits.charge_stage for s in seen]
    assert stages[-1] is ChargeStage.FLOAT
    entered = [
        i for i in range(1, len(stages)) if stages[i] is ChargeStage.FLOAT and stages[i - 1] is not stages[i]
    ]
    assert len(entered) == 1  # no absorption ↔ float cycling
    assert seen[-1].soc == pytest.approx(1.0, abs=0.005)
