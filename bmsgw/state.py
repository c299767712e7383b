"""Estimator state across restarts: the SOC of every cell and each pack's health filters (capacity, R0,
self-discharge per cell, cycles, calendar time), saved atomically as JSON in gateway.state_dir.

SOC is restored only when the configuration still has the same chemistry, pack ids (in order) and cell
counts, and every pack's SOC was known when it was saved; otherwise the core starts from OCV as without a
file. Health is restored per pack under the same pack match; a file without it (older versions) restores
health as new.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bmsgw.config import ConfigError, Settings
from bmsgw.model import GatewayState, PackStatus

__all__ = [
    "FILE_NAME",
    "EstimatorState",
    "PackHealthState",
    "PackSoc",
    "SocTracker",
    "StateFileError",
    "StateStore",
    "atomic_write",
    "capture",
    "restore",
    "restore_health",
    "restore_latched",
]

FILE_NAME = "estimator.json"
VERSION = 1
_M = TypeVar("_M", bound=BaseModel)

_Soc = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
_Finite = Annotated[float, Field(allow_inf_nan=False)]
_Cells = tuple[_Finite | None, ...]  # one value per cell; None = not estimated yet


class StateFileError(Exception):
    """The state file exists but cannot be read or is not a valid estimator state."""


class PackHealthState(BaseModel):
    """One pack's health filters (Core.export_health): per cell capacity (Ah) and its variance, R0 at 25 °C
    (Ω), its variance, step count and baseline, self-discharge rate (SOC fraction/day) and its variance."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    throughput_ah: float = Field(ge=0.0, allow_inf_nan=False)
    calendar_days: float = Field(ge=0.0, allow_inf_nan=False)
    dod_histogram: tuple[Annotated[int, Field(ge=0)], ...]
    cap: _Cells
    cap_var: _Cells
    r0: _Cells
    r0_var: _Cells
    r0_n: _Cells
    r0_base: _Cells
    sd: _Cells
    sd_var: _Cells


class PackSoc(BaseModel):
    """One pack's SOC and its cells' SOC; both None when it was never estimated. `health` is None in files
    written before health was persisted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    cells: int = Field(ge=1)
    soc: _Soc | None
    cell_soc: tuple[_Soc, ...] | None
    health: PackHealthState | None = None


class LatchedFault(BaseModel):
    """A tier-3 protection fault latched in the core (Core.latched): it stays latched across a restart."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pack: str  # pack id
    key: str  # latch key (core/_kernel.py LATCH_KEYS)


class EstimatorState(BaseModel):
    """The file's content (version 1; `latched` absent in files written before it was persisted)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = VERSION
    saved_at: float  # epoch seconds
    chemistry: str
    packs: tuple[PackSoc, ...]
    latched: tuple[LatchedFault, ...] = ()


class SocTracker:
    """Which packs have a known SOC: restored at start, or online at least once since (state listener)."""

    def __init__(self, packs: int, *, restored: bool) -> None:
        self.known = [restored] * packs

    def see(self, state: GatewayState) -> None:
        """Gateway state listener."""
        for view in state.packs:
            if view.status is PackStatus.ONLINE:
                self.known[view.pack] = True


def capture(
    settings: Settings,
    state: GatewayState,
    known: Sequence[bool],
    saved_at: float,
    health: Sequence[dict[str, Any]] | None = None,
    latched: Sequence[tuple[int, str, float]] = (),
) -> EstimatorState:
    """The estimator state in `state` plus the core's `health` export and `latched` faults; packs whose SOC
    is not known are stored as None."""
    packs = []
    for view, cfg in zip(state.packs, settings.packs, strict=True):
        cells = view.cell_soc if known[view.pack] else None
        packs.append(
            PackSoc(
                id=cfg.id,
                cells=cfg.cells,
                soc=float(view.soc) if cells is not None else None,
                cell_soc=tuple(float(x) for x in cells) if cells is not None else None,
                health=PackHealthState.model_validate(health[view.pack]) if health is not None else None,
            )
        )
    faults = tuple(LatchedFault(pack=settings.packs[p].id, key=key) for p, key, _ in latched)
    return EstimatorState(
        saved_at=saved_at, chemistry=settings.chemistry.value, packs=tuple(packs), latched=faults
    )


def restore_latched(settings: Settings, saved: EstimatorState, now: float) -> list[tuple[int, str, float]]:
    """The saved latched faults as Core.restore_latched items (latched again at `now`); faults of packs
    no longer configured are dropped."""
    index = {p.id: i for i, p in enumerate(settings.packs)}
    return [(index[f.pack], f.key, now) for f in saved.latched if f.pack in index]


def _check_fits(settings: Settings, saved: EstimatorState) -> None:
    if saved.chemistry != settings.chemistry.value:
        raise ValueError(f"saved for chemistry {saved.chemistry}, configured {settings.chemistry.value}")
    have = [(p.id, p.cells) for p in saved.packs]
    want = [(p.id, p.cells) for p in settings.packs]
    if have != want:
        raise ValueError(f"saved packs (id, cells) {have}, configured {want}")


def restore(settings: Settings, saved: EstimatorState) -> tuple[list[float], list[list[float]]]:
    """(initial_soc, initial_cell_soc) for the core; ValueError saying why when `saved` does not fit."""
    _check_fits(settings, saved)
    soc: list[float] = []
    cells: list[list[float]] = []
    for p in saved.packs:
        if p.soc is None or p.cell_soc is None or len(p.cell_soc) != p.cells:
            raise ValueError(f"no saved SOC for pack {p.id!r}")
        soc.append(p.soc)
        cells.append(list(p.cell_soc))
    return soc, cells


def restore_health(settings: Settings, saved: EstimatorState, now: float) -> list[dict[str, Any] | None]:
    """Per pack, the health to give Core.restore_health (None: start as new), calendar time advanced by the
    time since the save (`now`, epoch s); ValueError saying why when `saved` does not fit."""
    _check_fits(settings, saved)
    out: list[dict[str, Any] | None] = []
    for p in saved.packs:
        if p.health is None:
            out.append(None)
            continue
        d = p.health.model_dump()
        d["calendar_days"] += max(0.0, now - saved.saved_at) / 86400.0
        out.append(d)
    return out


class StateStore:
    """The estimator state file in one directory; saves are atomic and the newest snapshot wins."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / FILE_NAME
        self._lock = threading.Lock()
        self._written = -1

    def prepare(self) -> None:
        """Create the directory and prove it is writable; ConfigError naming gateway.state_dir if not."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=self.directory, prefix=".probe-")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise ConfigError(
                [
                    f"gateway.state_dir = '{self.directory}': cannot write there ({exc.strerror or exc}); "
                    "point it at a writable directory (systemd: StateDirectory=bmsgw, Docker: a volume)"
                ]
            ) from None

    def save(self, state: EstimatorState, seq: int = 0) -> bool:
        """Write `state` atomically (thread-safe); skipped (False) if a newer `seq` was already written."""
        data = state.model_dump_json(indent=1).encode()
        with self._lock:
            if seq < self._written:
                return False
            atomic_write(self.path, data)
            self._written = seq
        return True

    def load(self) -> EstimatorState | None:
        """The saved state, None if there is no file; StateFileError if it is unreadable or invalid."""
        return load_versioned(self.path, EstimatorState, "estimator state", StateFileError)


def load_versioned(path: Path, model: type[_M], what: str, error: type[Exception]) -> _M | None:
    """`model` from the JSON file at `path` (its `version` must be the model's default); None without a
    file; `error` naming the file and the first problem when it is unreadable or invalid."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        loaded = model.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "(top level)"
        raise error(f"{path}: not a valid {what}: {where}: {first['msg']}") from None
    expected = model.model_fields["version"].default
    if getattr(loaded, "version", None) != expected:
        raise error(f"{path}: version {getattr(loaded, 'version', None)}, expected {expected}")
    return loaded


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so a crash leaves the old or the new file, never a torn one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)
