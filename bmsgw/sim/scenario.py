"""Fault-injection scenarios for the simulator, loaded from TOML (format: docs/scenarios.md)."""

from __future__ import annotations

import dataclasses
import enum
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bmsgw.core.chemistry import profile as chemistry_profile
from bmsgw.model import Chemistry
from bmsgw.sim.cells import SimReading
from bmsgw.sim.profile import DAY_S, SolarDayProfile

__all__ = ["Fault", "FaultKind", "LoadOverrides", "Scenario", "ScenarioError"]


class ScenarioError(ValueError):
    """A scenario file or dict is invalid; the message names the entry, key, bad value and what is allowed."""


class FaultKind(enum.StrEnum):
    """What a fault does while active."""

    CELL_OVERVOLTAGE = "cell_overvoltage"
    CELL_UNDERVOLTAGE = "cell_undervoltage"
    OVERTEMPERATURE = "overtemperature"
    UNDERTEMPERATURE = "undertemperature"
    OVERCURRENT = "overcurrent"
    LINK_LOSS = "link_loss"


@dataclass(frozen=True, slots=True)
class Fault:
    """One `[[faults]]` entry with defaults resolved; active during [at, at + duration)."""

    index: int
    kind: FaultKind
    at: float
    pack: int = 0
    cell: int | None = None
    sensor: int | None = None
    duration: float = math.inf
    value: float | None = None

    @property
    def end(self) -> float:
        """First instant the fault is no longer active (inf: until the end of the run)."""
        return self.at + self.duration

    def active(self, t: float) -> bool:
        """True while t is in [at, at + duration)."""
        return self.at <= t < self.at + self.duration


@dataclass(frozen=True, slots=True)
class LoadOverrides:
    """The optional `[load]` table: SolarDayProfile parameters and the packs' initial SOC."""

    pv_peak_a: float | None = None
    base_load_a: float | None = None
    evening_load_a: float | None = None
    day_length_s: float | None = None
    start_s: float | None = None
    sunrise_h: float | None = None
    sunset_h: float | None = None
    cloudiness: float | None = None
    seed: int | None = None
    initial_soc: float | None = None


@dataclass(frozen=True)
class Scenario:
    """Faults (in file order; later entries win when several force the same value) and load overrides."""

    faults: tuple[Fault, ...] = ()
    load_overrides: LoadOverrides = LoadOverrides()
    description: str = ""
    _by_pack: dict[int, tuple[Fault, ...]] = field(init=False, repr=False, compare=False)

    @classmethod
    def load(
        cls, path: str | Path, *, chemistry: Chemistry = Chemistry.LFP, capacity_ah: float = 100.0
    ) -> Scenario:
        """Read a TOML scenario; `chemistry`/`capacity_ah` resolve the default fault values."""
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except OSError as e:
            raise ScenarioError(f"{path}: cannot read: {e.strerror or e}") from e
        except tomllib.TOMLDecodeError as e:
            raise ScenarioError(f"{path}: not valid TOML: {e}") from e
        try:
            return cls.from_dict(data, chemistry=chemistry, capacity_ah=capacity_ah)
        except ScenarioError as e:
            raise ScenarioError(f"{path}: {e}") from None

    @classmethod
    def from_dict(
        cls, d: Mapping[str, Any], *, chemistry: Chemistry = Chemistry.LFP, capacity_ah: float = 100.0
    ) -> Scenario:
        """Validate a parsed scenario; `chemistry`/`capacity_ah` resolve the default fault values."""
        _check_keys(d, "", _TOP_KEYS)
        description = d.get("description", "")
        if not isinstance(description, str):
            raise ScenarioError(f"description: {description!r} is not allowed; expected a string")
        raw_faults = d.get("faults", [])
        if not isinstance(raw_faults, list):
            raise ScenarioError(
                f"faults: {raw_faults!r} is not allowed; expected an array of [[faults]] tables"
            )
        defaults = _defaults(chemistry, capacity_ah)
        faults = tuple(_parse_fault(i, raw, defaults) for i, raw in enumerate(raw_faults))
        raw_load = d.get("load", {})
        if not isinstance(raw_load, Mapping):
            raise ScenarioError(f"load: {raw_load!r} is not allowed; expected a table [load]")
        return cls(faults=faults, load_overrides=_parse_load(raw_load), description=description)

    def check(self, packs: int, cells: int, sensors: int) -> None:
        """Raise ScenarioError if a fault names a pack, cell or sensor the simulation does not have."""
        for f in self.faults:
            where = f"faults[{f.index}]"
            if f.pack >= packs:
                raise ScenarioError(f"{where}.pack: {f.pack} is out of range; allowed 0..{packs - 1}")
            if f.cell is not None and f.cell >= cells:
                raise ScenarioError(f"{where}.cell: {f.cell} is out of range; allowed 0..{cells - 1}")
            if f.sensor is not None and f.sensor >= sensors:
                raise ScenarioError(f"{where}.sensor: {f.sensor} is out of range; allowed 0..{sensors - 1}")

    def apply(self, pack: int, t: float, reading: SimReading) -> SimReading:
        """The reading with active cell-voltage/temperature faults forced; the same object if none apply."""
        active = [f for f in self._by_pack.get(pack, ()) if f.kind in _SENSOR_KINDS and f.active(t)]
        if not active:
            return reading
        cell_v = reading.cell_v.copy()
        cell_t = reading.cell_t.copy()
        for f in active:
            if f.cell is not None:
                cell_v[f.cell] = f.value
            elif f.sensor is not None:
                cell_t[f.sensor] = f.value
        cell_v.flags.writeable = False
        cell_t.flags.writeable = False
        # The pack voltage follows the cells, so a pack-vs-sum plausibility check does not flag the fault.
        return dataclasses.replace(reading, cell_v=cell_v, cell_t=cell_t, voltage=float(np.sum(cell_v)))

    def current_override(self, pack: int, t: float) -> float | None:
        """Pack current (A, > 0 charging) an active overcurrent fault forces on the load, else None."""
        forced: float | None = None
        for f in self._by_pack.get(pack, ()):
            if f.kind is FaultKind.OVERCURRENT and f.active(t):
                forced = f.value
        return forced

    def link_lost(self, pack: int, t: float) -> bool:
        """True while a link_loss fault silences the pack's BMS link."""
        return any(f.kind is FaultKind.LINK_LOSS and f.active(t) for f in self._by_pack.get(pack, ()))

    def solar_profile(
        self, capacity_ah: float, packs: int = 1, *, seed: int = 0, day_length_s: float = DAY_S
    ) -> SolarDayProfile:
        """SolarDayProfile.for_capacity(...) with the `[load]` overrides applied."""
        base = SolarDayProfile.for_capacity(capacity_ah, packs, seed=seed, day_length_s=day_length_s)
        return dataclasses.replace(base, **_profile_overrides(self.load_overrides))

    @property
    def initial_soc(self) -> float | None:
        """`[load].initial_soc`, or None to keep the simulation's default."""
        return self.load_overrides.initial_soc

    @property
    def end_s(self) -> float:
        """Last instant at which a fault starts or (finitely) ends; 0 without faults."""
        return max((f.end if math.isfinite(f.end) else f.at for f in self.faults), default=0.0)

    def __post_init__(self) -> None:
        by_pack: dict[int, list[Fault]] = {}
        for f in self.faults:
            by_pack.setdefault(f.pack, []).append(f)
        object.__setattr__(self, "_by_pack", {k: tuple(v) for k, v in by_pack.items()})


_TOP_KEYS = ("description", "load", "faults")
_SENSOR_KINDS = frozenset(
    {
        FaultKind.CELL_OVERVOLTAGE,
        FaultKind.CELL_UNDERVOLTAGE,
        FaultKind.OVERTEMPERATURE,
        FaultKind.UNDERTEMPERATURE,
    }
)
_CELL_KINDS = frozenset({FaultKind.CELL_OVERVOLTAGE, FaultKind.CELL_UNDERVOLTAGE})
_SENSOR_T_KINDS = frozenset({FaultKind.OVERTEMPERATURE, FaultKind.UNDERTEMPERATURE})
_COMMON_KEYS = ("at", "kind", "pack", "duration")
_KIND_KEYS: dict[FaultKind, tuple[str, ...]] = {
    FaultKind.CELL_OVERVOLTAGE: (*_COMMON_KEYS, "cell", "value"),
    FaultKind.CELL_UNDERVOLTAGE: (*_COMMON_KEYS, "cell", "value"),
    FaultKind.OVERTEMPERATURE: (*_COMMON_KEYS, "sensor", "value"),
    FaultKind.UNDERTEMPERATURE: (*_COMMON_KEYS, "sensor", "value"),
    FaultKind.OVERCURRENT: (*_COMMON_KEYS, "value"),
    FaultKind.LINK_LOSS: _COMMON_KEYS,
}
_ALL_FAULT_KEYS = ("at", "kind", "pack", "cell", "sensor", "duration", "value")
_VALUE_UNITS = {
    FaultKind.CELL_OVERVOLTAGE: "V",
    FaultKind.CELL_UNDERVOLTAGE: "V",
    FaultKind.OVERTEMPERATURE: "°C",
    FaultKind.UNDERTEMPERATURE: "°C",
    FaultKind.OVERCURRENT: "A, > 0 charging",
}
OVERTEMPERATURE_DEFAULT_C = 70.0
UNDERTEMPERATURE_DEFAULT_C = -25.0
OVERCURRENT_DEFAULT_C_RATE = -2.0

# [load] key → (lower bound, inclusive?, upper bound or None, integer?)
_LOAD_KEYS: dict[str, tuple[float, bool, float | None, bool]] = {
    "pv_peak_a": (0.0, True, None, False),
    "base_load_a": (0.0, True, None, False),
    "evening_load_a": (0.0, True, None, False),
    "day_length_s": (0.0, False, None, False),
    "start_s": (0.0, True, DAY_S, False),
    "sunrise_h": (0.0, True, 24.0, False),
    "sunset_h": (0.0, True, 24.0, False),
    "cloudiness": (0.0, True, 1.0, False),
    "seed": (0.0, True, None, True),
    "initial_soc": (0.0, True, 1.0, False),
}


def _defaults(chemistry: Chemistry, capacity_ah: float) -> dict[FaultKind, float]:
    p = chemistry_profile(chemistry)
    return {
        FaultKind.CELL_OVERVOLTAGE: p.cell_v_max_alarm + 0.05,
        FaultKind.CELL_UNDERVOLTAGE: p.cell_v_min_alarm - 0.05,
        FaultKind.OVERTEMPERATURE: OVERTEMPERATURE_DEFAULT_C,
        FaultKind.UNDERTEMPERATURE: UNDERTEMPERATURE_DEFAULT_C,
        FaultKind.OVERCURRENT: OVERCURRENT_DEFAULT_C_RATE * capacity_ah,
    }


def _check_keys(d: Mapping[str, Any], where: str, allowed: tuple[str, ...], kind: str = "") -> None:
    for key in d:
        if key not in allowed:
            used_by = f" for kind {kind!r}" if kind else ""
            raise ScenarioError(
                f"{where}{key}: unknown or unused key{used_by}; allowed keys{used_by}: {', '.join(allowed)}"
            )


def _number(
    value: object,
    where: str,
    *,
    low: float | None = None,
    low_inclusive: bool = True,
    high: float | None = None,
    unit: str = "",
) -> float:
    """Validate a finite int/float within bounds; bool is rejected although it is an int."""
    bounds = []
    if low is not None:
        bounds.append(f"{'>=' if low_inclusive else '>'} {low:g}")
    if high is not None:
        bounds.append(f"<= {high:g}")
    expected = " ".join(["a finite number", " and ".join(bounds)]).strip() + (f" ({unit})" if unit else "")
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or (low is not None and (value < low or (value == low and not low_inclusive)))
        or (high is not None and value > high)
    ):
        raise ScenarioError(f"{where}: {value!r} is not allowed; expected {expected}")
    return float(value)


def _index(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ScenarioError(f"{where}: {value!r} is not allowed; expected an integer >= 0 (0-based index)")
    return value


def _parse_fault(i: int, raw: object, defaults: Mapping[FaultKind, float]) -> Fault:
    where = f"faults[{i}]"
    if not isinstance(raw, Mapping):
        raise ScenarioError(f"{where}: {raw!r} is not allowed; expected a table [[faults]]")
    _check_keys(raw, f"{where}.", _ALL_FAULT_KEYS)
    for key in ("at", "kind"):
        if key not in raw:
            raise ScenarioError(f"{where}.{key}: missing; it is required")
    raw_kind = raw["kind"]
    kinds = ", ".join(k.value for k in FaultKind)
    if not isinstance(raw_kind, str) or raw_kind not in FaultKind.__members__.values():
        raise ScenarioError(f"{where}.kind: {raw_kind!r} is not one of {kinds}")
    kind = FaultKind(raw_kind)
    _check_keys(raw, f"{where}.", _KIND_KEYS[kind], kind.value)
    at = _number(raw["at"], f"{where}.at", low=0.0, unit="simulated s")
    pack = _index(raw.get("pack", 0), f"{where}.pack")
    duration = math.inf
    if "duration" in raw:
        duration = _number(raw["duration"], f"{where}.duration", low=0.0, low_inclusive=False, unit="s")
    cell = sensor = None
    if kind in _CELL_KINDS:
        if "cell" not in raw:
            raise ScenarioError(f"{where}.cell: missing; {kind.value} needs the 0-based cell index")
        cell = _index(raw["cell"], f"{where}.cell")
    if kind in _SENSOR_T_KINDS:
        if "sensor" not in raw:
            raise ScenarioError(f"{where}.sensor: missing; {kind.value} needs the 0-based sensor index")
        sensor = _index(raw["sensor"], f"{where}.sensor")
    value: float | None = None
    if kind in defaults:
        value = defaults[kind]
        if "value" in raw:
            low = 0.0 if kind in _CELL_KINDS else None
            value = _number(raw["value"], f"{where}.value", low=low, unit=_VALUE_UNITS[kind])
    return Fault(
        index=i, kind=kind, at=at, pack=pack, cell=cell, sensor=sensor, duration=duration, value=value
    )


def _parse_load(raw: Mapping[str, Any]) -> LoadOverrides:
    _check_keys(raw, "load.", tuple(_LOAD_KEYS))
    values: dict[str, Any] = {}
    for key, v in raw.items():
        low, inclusive, high, integer = _LOAD_KEYS[key]
        if integer:
            values[key] = _index(v, f"load.{key}")
        else:
            values[key] = _number(v, f"load.{key}", low=low, low_inclusive=inclusive, high=high)
    overrides = LoadOverrides(**values)
    try:  # cross-field rules (sunrise before sunset, …) live in SolarDayProfile itself
        dataclasses.replace(SolarDayProfile(1.0, 1.0, 1.0), **_profile_overrides(overrides))
    except ValueError as e:
        raise ScenarioError(f"load: {e}") from None
    return overrides


def _profile_overrides(o: LoadOverrides) -> dict[str, Any]:
    return {
        f.name: getattr(o, f.name)
        for f in dataclasses.fields(o)
        if f.name != "initial_soc" and getattr(o, f.name) is not None
    }
