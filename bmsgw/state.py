"""Estimator state across restarts: the SOC of every cell, saved atomically as JSON in gateway.state_dir.

Restored only when the configuration still has the same chemistry, pack ids (in order) and cell counts,
and every pack's SOC was known when it was saved; otherwise the core starts from OCV as without a file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bmsgw.config import ConfigError, Settings
from bmsgw.model import GatewayState, PackStatus

__all__ = [
    "FILE_NAME",
    "EstimatorState",
    "PackSoc",
    "SocTracker",
    "StateFileError",
    "StateStore",
    "atomic_write",
    "capture",
    "restore",
]

FILE_NAME = "estimator.json"
VERSION = 1

_Soc = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class StateFileError(Exception):
    """The state file exists but cannot be read or is not a valid estimator state."""


class PackSoc(BaseModel):
    """One pack's SOC and its cells' SOC; both None when it was never estimated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    cells: int = Field(ge=1)
    soc: _Soc | None
    cell_soc: tuple[_Soc, ...] | None


class EstimatorState(BaseModel):
    """The file's content (version 1)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = VERSION
    saved_at: float  # epoch seconds
    chemistry: str
    packs: tuple[PackSoc, ...]


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
    settings: Settings, state: GatewayState, known: Sequence[bool], saved_at: float
) -> EstimatorState:
    """The estimator state in `state`; packs whose SOC is not known are stored as None."""
    packs = []
    for view, cfg in zip(state.packs, settings.packs, strict=True):
        cells = view.cell_soc if known[view.pack] else None
        packs.append(
            PackSoc(
                id=cfg.id,
                cells=cfg.cells,
                soc=float(view.soc) if cells is not None else None,
                cell_soc=tuple(float(x) for x in cells) if cells is not None else None,
            )
        )
    return EstimatorState(saved_at=saved_at, chemistry=settings.chemistry.value, packs=tuple(packs))


def restore(settings: Settings, saved: EstimatorState) -> tuple[list[float], list[list[float]]]:
    """(initial_soc, initial_cell_soc) for the core; ValueError saying why when `saved` does not fit."""
    if saved.chemistry != settings.chemistry.value:
        raise ValueError(f"saved for chemistry {saved.chemistry}, configured {settings.chemistry.value}")
    have = [(p.id, p.cells) for p in saved.packs]
    want = [(p.id, p.cells) for p in settings.packs]
    if have != want:
        raise ValueError(f"saved packs (id, cells) {have}, configured {want}")
    soc: list[float] = []
    cells: list[list[float]] = []
    for p in saved.packs:
        if p.soc is None or p.cell_soc is None or len(p.cell_soc) != p.cells:
            raise ValueError(f"no saved SOC for pack {p.id!r}")
        soc.append(p.soc)
        cells.append(list(p.cell_soc))
    return soc, cells


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
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateFileError(f"{self.path}: cannot read: {exc.strerror or exc}") from None
        try:
            state = EstimatorState.model_validate_json(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"]) or "(top level)"
            raise StateFileError(
                f"{self.path}: not a valid estimator state: {where}: {first['msg']}"
            ) from None
        if state.version != VERSION:
            raise StateFileError(f"{self.path}: version {state.version}, expected {VERSION}")
        return state


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
