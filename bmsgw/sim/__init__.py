"""Simulated battery: pure, deterministic pack physics, a solar-day load profile and fault scenarios."""

from bmsgw.sim.cells import SimPack, SimPackConfig, SimReading
from bmsgw.sim.profile import SolarDayProfile
from bmsgw.sim.scenario import Fault, FaultKind, LoadOverrides, Scenario, ScenarioError

__all__ = [
    "Fault",
    "FaultKind",
    "LoadOverrides",
    "Scenario",
    "ScenarioError",
    "SimPack",
    "SimPackConfig",
    "SimReading",
    "SolarDayProfile",
]
