"""Downsampled history of the system and per-pack series, behind a small backend interface.

`RingHistory` keeps the last `span_s` (24 h) in memory at `resolution_s` (10 s) buckets: each bucket holds
the mean of SOC, voltage, current, power and temperature, the minimum of the limits and of the lowest
cell, the maximum of the highest cell and sensor, over states sampled at most every `resolution_s / 10`
(the core may publish thousands of states per second in a fast simulation). Times are the gateway
clock's (`state.t`: monotonic live, never backwards). A history database can replace it by implementing
`HistoryBackend`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from bmsgw.model import GatewayState, PackSample, PackStatus

__all__ = [
    "PACK_SERIES",
    "SYSTEM_SERIES",
    "HistoryBackend",
    "HistoryResult",
    "RingHistory",
    "merge_rows",
    "result_of",
]

Agg = Literal["mean", "min", "max"]

SYSTEM_SERIES: tuple[tuple[str, Agg], ...] = (
    ("soc", "mean"),
    ("voltage", "mean"),
    ("current", "mean"),
    ("power", "mean"),
    ("temperature", "mean"),
    ("ccl", "min"),
    ("dcl", "min"),
    ("cell_v_min", "min"),
    ("cell_v_max", "max"),
)
"""System-wide series: (name, how a bucket aggregates it)."""

PACK_SERIES: tuple[tuple[str, Agg], ...] = (
    ("soc", "mean"),
    ("voltage", "mean"),
    ("current", "mean"),
    ("power", "mean"),
    ("cell_v_min", "min"),
    ("cell_v_max", "max"),
    ("temp_max", "max"),
)
"""Per-pack series (only while the pack is online)."""


@dataclass(frozen=True)
class HistoryResult:
    """Bucket start times (s) and one value list per series (None: no data)."""

    resolution_s: float
    t: list[float]
    system: dict[str, list[float | None]]
    packs: dict[str, dict[str, list[float | None]]] = field(default_factory=dict)

    def shifted(self, offset: float) -> HistoryResult:
        """The same buckets with `offset` added to every time (e.g. monotonic → epoch seconds)."""
        return HistoryResult(self.resolution_s, [x + offset for x in self.t], self.system, self.packs)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"resolution_s": self.resolution_s, "t": self.t, "system": self.system, "packs": self.packs}


class HistoryBackend(Protocol):
    """Where the web service keeps history: fed every state, queried by time range."""

    resolution_s: float  # finest bucket width (s)

    def record(self, t: float, state: GatewayState) -> None:
        """Account `state` at gateway clock time t (s, never decreasing); must be quick and never raise."""
        ...

    def query(self, start: float | None, end: float | None, points: int | None = None) -> HistoryResult:
        """Buckets with start <= t <= end (None: unbounded), merged to at most `points` if given."""
        ...


class RingHistory:
    """In-memory ring buffer of aggregated buckets (numpy, one row per bucket)."""

    def __init__(
        self, pack_ids: tuple[str, ...], resolution_s: float = 10.0, span_s: float = 86_400.0
    ) -> None:
        if resolution_s <= 0 or span_s < resolution_s:
            raise ValueError("need resolution_s > 0 and span_s >= resolution_s")
        self.resolution_s = resolution_s
        self.pack_ids = pack_ids
        self._mean, self._min = _aggs(len(pack_ids))
        cols = len(self._mean)
        self._capacity = math.ceil(span_s / resolution_s)
        self._rows = np.full((self._capacity, cols), np.nan)
        self._t = np.full(self._capacity, np.nan)
        self._head = 0  # next row to write
        self._count = 0
        self._bucket: float | None = None  # index (stamp // resolution) of the open bucket
        self._every = resolution_s / 10
        self._next = -math.inf  # stamp of the next state to sample
        self._sum = np.zeros(cols)
        self._n = np.zeros(cols)
        self._lo = np.full(cols, np.inf)
        self._hi = np.full(cols, -np.inf)
        self._seen: list[tuple[PackSample, float, float, float] | None] = [None] * len(pack_ids)

    def record(self, t: float, state: GatewayState) -> None:
        """Add `state` to the bucket of t; closes the open bucket when t leaves it."""
        if t < self._next:
            return
        self._next = t + self._every
        bucket = t // self.resolution_s
        if self._bucket is not None and bucket != self._bucket:
            if bucket < self._bucket:
                return  # time running backwards (not from the pipeline): ignore rather than reorder
            self._close()
        self._bucket = bucket
        row = np.array(self._row(state))
        ok = ~np.isnan(row)
        self._sum[ok] += row[ok]
        self._n[ok] += 1
        np.minimum(self._lo, row, out=self._lo, where=ok)
        np.maximum(self._hi, row, out=self._hi, where=ok)

    def query(self, start: float | None, end: float | None, points: int | None = None) -> HistoryResult:
        """Closed buckets plus the open one, oldest first, within [start, end]."""
        order = (np.arange(self._count) + self._head - self._count) % self._capacity
        t, rows = self._t[order], self._rows[order]
        if self._bucket is not None:
            t = np.append(t, self._bucket * self.resolution_s)
            rows = np.vstack([rows, self._aggregate()])
        keep = np.ones(len(t), dtype=bool)
        if start is not None:
            keep &= t >= start
        if end is not None:
            keep &= t <= end
        t, rows = t[keep], rows[keep]
        resolution = self.resolution_s
        if points is not None and len(t) > points > 0:
            span = float(t[-1] - t[0]) + self.resolution_s
            resolution = math.ceil(span / points / self.resolution_s) * self.resolution_s
            t, rows = merge_rows(t, rows, resolution, len(self.pack_ids))
        return result_of(resolution, t, rows, self.pack_ids)

    def _row(self, state: GatewayState) -> list[float]:
        lim = state.limits
        row = [
            state.soc,
            state.voltage if state.usable else math.nan,
            state.current if state.usable else math.nan,
            state.voltage * state.current if state.usable else math.nan,
            state.temperature if state.usable else math.nan,
            lim.ccl.value,
            lim.dcl.value,
            state.cell_v_min if state.usable else math.nan,
            state.cell_v_max if state.usable else math.nan,
        ]
        for i, view in enumerate(state.packs):
            s = view.sample
            if view.status is not PackStatus.ONLINE or s is None:
                row += [math.nan] * len(PACK_SERIES)
                continue
            seen = self._seen[i]
            if seen is None or seen[0] is not s:  # cell extremes once per new sample, not per state
                seen = (s, float(np.min(s.cell_v)), float(np.max(s.cell_v)), float(np.max(s.cell_t)))
                self._seen[i] = seen
            row += [view.soc, s.voltage, s.current, s.voltage * s.current, seen[1], seen[2], seen[3]]
        return row

    def _aggregate(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(self._n > 0, self._sum / self._n, np.nan)
        lo = np.where(np.isfinite(self._lo), self._lo, np.nan)
        hi = np.where(np.isfinite(self._hi), self._hi, np.nan)
        return np.where(self._mean, mean, np.where(self._min, lo, hi))

    def _close(self) -> None:
        assert self._bucket is not None
        self._rows[self._head] = self._aggregate()
        self._t[self._head] = self._bucket * self.resolution_s
        self._head = (self._head + 1) % self._capacity
        self._count = min(self._count + 1, self._capacity)
        self._sum[:] = 0
        self._n[:] = 0
        self._lo[:] = np.inf
        self._hi[:] = -np.inf


def _aggs(packs: int) -> tuple[np.ndarray, np.ndarray]:
    """(is mean, is min) masks over the columns of a row: system series, then each pack's series."""
    aggs = [a for _, a in SYSTEM_SERIES] + [a for _ in range(packs) for _, a in PACK_SERIES]
    return np.array([a == "mean" for a in aggs]), np.array([a == "min" for a in aggs])


def merge_rows(
    t: np.ndarray, rows: np.ndarray, resolution: float, packs: int
) -> tuple[np.ndarray, np.ndarray]:
    """Re-bucket rows to `resolution`: mean of means (buckets with data), min of mins, max of maxes."""
    is_mean, is_min = _aggs(packs)
    keys = t // resolution
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    have = ~np.isnan(rows)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.add.reduceat(np.where(have, rows, 0.0), starts) / np.add.reduceat(have, starts)
    lo = np.fmin.reduceat(rows, starts)
    hi = np.fmax.reduceat(rows, starts)
    merged = np.where(is_mean, mean, np.where(is_min, lo, hi))
    return keys[starts] * resolution, merged


def result_of(resolution: float, t: np.ndarray, rows: np.ndarray, pack_ids: tuple[str, ...]) -> HistoryResult:
    """The HistoryResult of rows laid out as system series then each pack's series (NaN: no data)."""
    ns = len(SYSTEM_SERIES)
    np_ = len(PACK_SERIES)

    rows = np.round(rows, 4)  # 0.1 mV, 0.01 % SOC: plenty for charts, and a third of the JSON

    def col(j: int) -> list[float | None]:
        values = rows[:, j]
        out: list[float | None] = values.tolist()
        if not np.isfinite(values).all():
            out = [x if x is not None and math.isfinite(x) else None for x in out]
        return out

    system = {name: col(j) for j, (name, _) in enumerate(SYSTEM_SERIES)}
    packs = {
        pid: {name: col(ns + k * np_ + j) for j, (name, _) in enumerate(PACK_SERIES)}
        for k, pid in enumerate(pack_ids)
    }
    return HistoryResult(resolution, [float(x) for x in t.tolist()], system, packs)
