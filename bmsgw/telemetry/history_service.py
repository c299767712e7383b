"""History service: downsamples every GatewayState into rows and writes them to the history database.

The state listener (`HistoryRecorder.see`) only does arithmetic on a few floats, at most once per gateway
second (alarm transitions on every state), and never raises; closed rows pile up in a `Batch` that the
service hands to one writer thread every `flush_period_s`. A write error (disk full, read-only file
system, locked or corrupt file) never reaches control: the batch is kept (bounded), `HISTORY_DEGRADED`
(WARNING) is raised in the state, and the write is retried with backoff until it succeeds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import math
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bmsgw.config import Settings
from bmsgw.log import get_logger
from bmsgw.model import Alarm, AlarmCode, AlarmLevel, GatewayState, Limit, PackSample, PackStatus
from bmsgw.telemetry.energy import EnergyCounters
from bmsgw.telemetry.history_buffer import PACK_SERIES, SYSTEM_SERIES, HistoryResult, merge_rows, result_of
from bmsgw.telemetry.history_db import Batch, HistoryDB, Retention, is_full, pack_vector

if TYPE_CHECKING:
    from bmsgw.app import Gateway
    from bmsgw.pipeline import Pipeline

__all__ = ["ALARM_KEY", "DbHistory", "HistoryRecorder", "HistoryService", "db_path", "history_service"]

_log = get_logger(__name__)

ALARM_KEY = "history"
"""Key of the service's alarm in `Pipeline.service_alarms`."""
MAX_PENDING_ROWS = 200_000  # rows kept in memory while the database cannot be written (~ days at defaults)
RETRY_MIN_S = 5.0
RETRY_MAX_S = 300.0
PRUNE_PERIOD_S = 3600.0
_DAY = 86_400.0


def db_path(settings: Settings) -> Path:
    """The database file: [history] path, relative to gateway.state_dir unless absolute."""
    return settings.gateway.state_dir / settings.history.path


def history_service(gateway: Gateway) -> HistoryService | None:
    """SERVICES factory: the history service when [history] is enabled; also the web's history backend."""
    if not gateway.settings.history.enabled:
        return None
    service = HistoryService(gateway)
    gateway.history = service.backend
    return service


class HistoryRecorder:
    """Turns states into rows: per-interval series, periodic cell vectors and health, alarm transitions.

    `offset` converts gateway clock time to the stored time (epoch seconds live). Pure: no I/O, no clock.
    """

    def __init__(self, settings: Settings, offset: float, energy: EnergyCounters | None = None) -> None:
        cfg = settings.history
        self.offset = offset
        self.energy = energy
        self.period = cfg.series_period_s
        self.cells_period = cfg.cells_period_s
        self.health_period = cfg.health_period_s
        self.rest_current_a = settings.limits.rest_current_a
        self.batch = Batch()
        self.errors = 0
        self._every = min(1.0, self.period / 10)  # sample states at most this often (gateway seconds)
        self._next = -math.inf
        self._bucket: float | None = None
        self._sys = _Acc()
        self._packs = [_Acc() for _ in settings.packs]
        self._next_cells = [-math.inf] * len(settings.packs)
        self._next_health = [-math.inf] * len(settings.packs)
        self._alarms: dict[tuple[str, int | None], int] = {}
        self._alarm_tuple: tuple[Alarm, ...] = ()

    def see(self, state: GatewayState) -> None:
        """Gateway state listener: cheap, never raises."""
        try:
            if state.alarms != self._alarm_tuple:
                self._alarm_tuple = state.alarms
                self._transitions(state)
            if state.t < self._next:
                return
            self._next = state.t + self._every
            self._sample(state)
        except Exception as exc:  # a history bug must never break the pipeline's publishing
            self.errors += 1
            if self.errors == 1:
                _log.exception("history recorder failed", error=str(exc))

    def close(self) -> None:
        """Close the open interval (at shutdown) so its rows join the batch."""
        if self._bucket is not None:
            self._close()
            self._bucket = None

    def take(self) -> Batch:
        """The rows recorded since the previous take."""
        batch, self.batch = self.batch, Batch()
        return batch

    # --- internals -----------------------------------------------------------------------------------

    def _sample(self, state: GatewayState) -> None:
        t = state.t + self.offset
        bucket = math.floor(t / self.period)
        if self._bucket is not None and bucket != self._bucket:
            if bucket < self._bucket:
                return
            self._close()
        self._bucket = bucket
        usable = state.usable
        sys = self._sys
        sys.n += 1
        lim = state.limits
        sys.limit("cvl", lim.cvl, min)
        sys.limit("ccl", lim.ccl, min)
        sys.limit("dcl", lim.dcl, min)
        sys.limit("dvl", lim.dvl, max)
        sys.hi("alarm_level", float(max((a.level for a in state.alarms), default=0)))
        sys.lo("packs_online", float(state.modules_online))
        if usable:
            sys.mean("soc", state.soc)
            sys.mean("voltage", state.voltage)
            sys.mean("current", state.current)
            sys.mean("power", state.voltage * state.current)
            sys.mean("temp_mean", state.temperature)
            sys.lo("temp_min", state.cell_t_min)
            sys.hi("temp_max", state.cell_t_max)
            sys.lo("cell_v_min", state.cell_v_min)
            sys.hi("cell_v_max", state.cell_v_max)
        for view in state.packs:
            s = view.sample
            if view.status is not PackStatus.ONLINE or s is None:
                continue
            acc = self._packs[view.pack]
            acc.n += 1
            acc.mean("soc", view.soc)
            acc.mean("soh", view.soh)
            acc.mean("voltage", s.voltage)
            acc.mean("current", s.current)
            acc.mean("power", s.voltage * s.current)
            cells = s.cell_v
            i_lo, i_hi = int(np.argmin(cells)), int(np.argmax(cells))
            v_lo, v_hi = float(cells[i_lo]), float(cells[i_hi])
            acc.lo("cell_v_min", v_lo, i_lo)
            acc.hi("cell_v_max", v_hi, i_hi)
            acc.hi("cell_v_spread_max", v_hi - v_lo)
            if abs(s.current) <= self.rest_current_a:
                acc.hi("cell_v_spread_rest", v_hi - v_lo)
            acc.lo("temp_min", float(np.min(s.cell_t)))
            acc.hi("temp_max", float(np.max(s.cell_t)))
            if t >= self._next_cells[view.pack]:
                self._next_cells[view.pack] = (math.floor(t / self.cells_period) + 1) * self.cells_period
                self.batch.rows["cell_vectors"].append(_vector_row(t, view.pack, view.soc, s, view.cell_soc))
            if view.health is not None and t >= self._next_health[view.pack]:
                self._next_health[view.pack] = t + self.health_period
                self.batch.rows["health"].append(_health_row(t, view.pack, view.health))

    def _close(self) -> None:
        assert self._bucket is not None
        t = self._bucket * self.period
        sys = self._sys
        self.batch.rows["system_series"].append((t, sys.n, *(sys.get(c) for c in _SYSTEM_COLS)))
        for i, acc in enumerate(self._packs):
            if acc.n:
                self.batch.rows["pack_series"].append((t, i, acc.n, *(acc.get(c) for c in _PACK_COLS)))
            acc.reset()
        sys.reset()
        if self.energy is not None:
            system, packs = self.energy.totals()
            stamp = t + self.period
            for pack, totals in ((-1, system), *enumerate(packs)):
                self.batch.rows["energy"].append(
                    (stamp, pack, totals.charged_wh, totals.discharged_wh, totals.charged_ah,
                     totals.discharged_ah)
                )  # fmt: skip
                self.batch.counters[pack] = (stamp, totals)

    def _transitions(self, state: GatewayState) -> None:
        t = state.t + self.offset
        now: dict[tuple[str, int | None], tuple[int, str]] = {}
        for a in state.alarms:
            key = (a.code.value, a.pack)
            if key not in now or int(a.level) > now[key][0]:
                now[key] = (int(a.level), a.detail)
        rows = self.batch.rows["events"]
        for key, (level, detail) in now.items():
            before = self._alarms.get(key)
            if before is None:
                rows.append((t, "raise", key[0], level, key[1], detail))
            elif before != level:
                rows.append((t, "change", key[0], level, key[1], detail))
        for key, level in self._alarms.items():
            if key not in now:
                rows.append((t, "clear", key[0], level, key[1], ""))
        self._alarms = {k: v[0] for k, v in now.items()}


_SYSTEM_COLS = (
    "soc", "voltage", "current", "power", "temp_mean", "temp_min", "temp_max", "cell_v_min", "cell_v_max",
    "cvl", "cvl_reason", "ccl", "ccl_reason", "dcl", "dcl_reason", "dvl", "dvl_reason", "alarm_level",
    "packs_online",
)  # fmt: skip
_PACK_COLS = (
    "soc", "soh", "voltage", "current", "power", "temp_min", "temp_max", "cell_v_min", "cell_v_min_cell",
    "cell_v_max", "cell_v_max_cell", "cell_v_spread_max", "cell_v_spread_rest",
)  # fmt: skip


class _Acc:
    """Aggregates of one interval: sums for means, extremes with an optional tag (cell index, reason)."""

    __slots__ = ("counts", "ext", "n", "sums", "tags")

    def __init__(self) -> None:
        self.n = 0
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.ext: dict[str, float] = {}
        self.tags: dict[str, Any] = {}

    def reset(self) -> None:
        self.n = 0
        self.sums.clear()
        self.counts.clear()
        self.ext.clear()
        self.tags.clear()

    def mean(self, key: str, value: float) -> None:
        if math.isfinite(value):
            self.sums[key] = self.sums.get(key, 0.0) + value
            self.counts[key] = self.counts.get(key, 0) + 1

    def lo(self, key: str, value: float, tag: Any = None) -> None:
        if math.isfinite(value) and (key not in self.ext or value < self.ext[key]):
            self.ext[key] = value
            self.tags[key] = tag

    def hi(self, key: str, value: float, tag: Any = None) -> None:
        if math.isfinite(value) and (key not in self.ext or value > self.ext[key]):
            self.ext[key] = value
            self.tags[key] = tag

    def limit(self, key: str, limit: Limit, pick: Any) -> None:
        old = self.ext.get(key)
        if math.isfinite(limit.value) and (old is None or pick(old, limit.value) != old):
            self.ext[key] = limit.value
            self.tags[key] = limit.reason.value

    def get(self, col: str) -> Any:
        if col in self.counts:
            return self.sums[col] / self.counts[col]
        if col.endswith("_reason"):
            return self.tags.get(col.removesuffix("_reason"))
        if col.endswith("_cell"):
            return self.tags.get(col.removesuffix("_cell"))
        value = self.ext.get(col)
        return int(value) if value is not None and col in ("alarm_level", "packs_online") else value


def _vector_row(t: float, pack: int, soc: float, s: PackSample, cell_soc: Any) -> tuple[Any, ...]:
    return (
        t, pack, soc if math.isfinite(soc) else None, s.current, s.voltage,
        pack_vector(s.cell_v), pack_vector(cell_soc), pack_vector(s.cell_t),
    )  # fmt: skip


def _health_row(t: float, pack: int, h: Any) -> tuple[Any, ...]:
    return (
        t, pack, h.soh, h.soh_capacity, h.soh_resistance, h.capacity_ah, h.r0_ohm, h.equivalent_full_cycles,
        h.calendar_days, json.dumps(list(h.dod_histogram)), pack_vector(h.cell_capacity_ah),
        pack_vector(h.cell_r0_ohm), pack_vector(h.cell_self_discharge_pct_day),
    )  # fmt: skip


class HistoryService:
    """Records every state and writes the rows from one thread; degrades (alarm, retry), never stops."""

    def __init__(self, gateway: Gateway) -> None:
        settings = gateway.settings
        cfg = settings.history
        self.settings = settings
        self.clock = gateway.clock
        self.pipeline: Pipeline = gateway.pipeline
        self.path = db_path(settings)
        self.offset = self.clock.stamp() - self.clock.now()
        self.retention = Retention(
            cfg.series_retention_days * _DAY,
            cfg.cells_retention_days * _DAY,
            cfg.events_retention_days * _DAY,
        )
        self.db = HistoryDB(self.path, max_size_mb=cfg.max_size_mb)
        self.recorder = HistoryRecorder(settings, self.offset, gateway.energy)
        self.backend = DbHistory(self)
        self.pending = Batch()  # taken from the recorder but not written yet
        self.writes = 0
        self.rows_written = 0
        self.write_errors = 0
        self.rows_dropped = 0
        self.write_s = 0.0  # wall seconds spent writing (thread), for the figures in docs/history.md
        self.degraded: str | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="bmsgw-history")
        self._next_prune = -math.inf
        self._restore(gateway.energy)
        gateway.on_state(self.recorder.see)

    async def run(self) -> None:
        """Flush every flush_period_s (gateway time), retrying with backoff after failures; cancel to stop."""
        loop = asyncio.get_running_loop()
        period = self.settings.history.flush_period_s / self.clock.speed
        backoff = RETRY_MIN_S
        try:
            while True:
                # shielded: a cancel must not withdraw a flush the writer has not started, nor its rows
                flush = loop.run_in_executor(self._executor, self._flush, self.recorder.take())
                error = await asyncio.shield(flush)
                self._alarm(error)  # on the loop thread: the pipeline reads service_alarms there
                if error is None:
                    backoff = RETRY_MIN_S
                    await asyncio.sleep(max(period, 0.05))
                else:
                    await asyncio.sleep(min(backoff / self.clock.speed, backoff))
                    backoff = min(backoff * 2, RETRY_MAX_S)
        finally:
            self.recorder.close()
            try:  # the last rows, waiting for it: queued behind a write still running in the thread
                self._executor.submit(self._flush, self.recorder.take()).result()
            finally:
                self._executor.submit(self.db.close).result()
                self._executor.shutdown(wait=True)

    def _flush(self, taken: Batch) -> str | None:
        """Write pending rows and `taken` (writer thread); None, or why it failed (rows kept, bounded)."""
        self.pending.extend(taken)
        now = self.clock.stamp()
        start = time.perf_counter()
        try:
            if self._next_prune == -math.inf:
                self.db.set_meta(self._meta())
            self._write_pending()
            if now >= self._next_prune:
                self._next_prune = now + PRUNE_PERIOD_S
                deleted = self.db.prune(now, self.retention)
                if deleted:
                    _log.info("history retention", deleted_rows=deleted)
        except (sqlite3.Error, OSError) as exc:
            self.write_errors += 1
            self.db.close()
            self.rows_dropped += self.pending.drop_oldest(MAX_PENDING_ROWS)
            return f"{type(exc).__name__}: {exc}"
        finally:
            self.write_s += time.perf_counter() - start
        return None

    def _alarm(self, error: str | None) -> None:
        """Raise or clear HISTORY_DEGRADED after a flush (event-loop thread)."""
        alarms = self.pipeline.service_alarms
        if error is None:
            if self.degraded is not None:
                _log.info("history database writable again", path=str(self.path))
                self.degraded = None
                alarms.pop(ALARM_KEY, None)
            return
        if self.degraded is None:
            _log.error("history database not writable; control continues, retrying", path=str(self.path),
                       error=error)  # fmt: skip
        self.degraded = error
        if ALARM_KEY not in alarms:
            alarms[ALARM_KEY] = Alarm(AlarmCode.HISTORY_DEGRADED, AlarmLevel.WARNING, self.clock.now(), None,
                                      error[:200])  # fmt: skip

    def _write_pending(self) -> None:
        if not len(self.pending) and not self.pending.counters:
            return
        try:
            self.db.write(self.pending)
        except sqlite3.Error as exc:
            if not is_full(exc):
                raise
            freed = self.db.prune_oldest()  # at the size cap: drop the oldest tenth, then try once more
            _log.warning("history database full; dropped its oldest rows", deleted_rows=freed)
            self.db.write(self.pending)
        self.writes += 1
        self.rows_written += len(self.pending)
        self.pending = Batch()

    def _restore(self, energy: EnergyCounters) -> None:
        """Continue the energy counters from the database (at construction, before the first state)."""
        try:
            system, packs = self._executor.submit(self.db.counters).result()
        except (sqlite3.Error, OSError) as exc:
            _log.warning("history database unreadable; energy counters start at 0", path=str(self.path),
                         error=str(exc))  # fmt: skip
            return
        finally:
            self._executor.submit(self.db.close).result()  # reopened by the first flush, in run()
        energy.restore(system, packs)
        if system is not None:
            _log.info("energy counters restored", charged_kwh=round(system.charged_wh / 1000, 3),
                      discharged_kwh=round(system.discharged_wh / 1000, 3))  # fmt: skip

    def _meta(self) -> dict[str, str]:
        s = self.settings
        from bmsgw.core.chemistry import profile

        return {
            "gateway": s.gateway.name,
            "chemistry": s.chemistry.value,
            "nominal_cell_v": str(profile(s.chemistry).nominal_v),
            "packs": json.dumps(
                [
                    {"id": p.id, "cells": p.cells, "sensors": p.sensors, "capacity_ah": p.capacity_ah}
                    for p in s.packs
                ]
            ),
            "series_period_s": str(s.history.series_period_s),
            "cells_period_s": str(s.history.cells_period_s),
        }


class DbHistory:
    """`HistoryBackend` over the database for the web API (the service records; `record` does nothing)."""

    def __init__(self, service: HistoryService) -> None:
        self._service = service
        self.resolution_s = service.settings.history.series_period_s
        self._ids = tuple(p.id for p in service.settings.packs)
        self._conn: sqlite3.Connection | None = None

    def record(self, t: float, state: GatewayState) -> None:
        """Nothing: the history service's own listener records every state."""

    def query(self, start: float | None, end: float | None, points: int | None = None) -> HistoryResult:
        """Series rows (written and pending) with start <= t <= end in gateway clock time."""
        off = self._service.offset
        lo = -math.inf if start is None else start + off
        hi = math.inf if end is None else end + off
        sys_rows: dict[float, tuple[Any, ...]] = {}
        pack_rows: dict[tuple[float, int], tuple[Any, ...]] = {}
        try:
            conn = self._connection()
            sys_rows = {r[0]: r for r in conn.execute(_SYS_QUERY, (lo, hi))}
            pack_rows = {(r[0], r[1]): r[2:] for r in conn.execute(_PACK_QUERY, (lo, hi))}
        except (sqlite3.Error, OSError):
            self._conn = None  # degraded: answer from the rows still in memory
        batch = Batch()
        batch.extend(self._service.pending)
        batch.extend(self._service.recorder.batch)
        sys_i = [0, *(2 + _SYSTEM_COLS.index(c) for c in _SYS_NAMES)]
        for r in batch.rows["system_series"]:
            if lo <= r[0] <= hi:
                sys_rows[r[0]] = tuple(r[i] for i in sys_i)
        pack_i = [3 + _PACK_COLS.index(c) for c in _PACK_NAMES]
        for r in batch.rows["pack_series"]:
            if lo <= r[0] <= hi:
                pack_rows[(r[0], r[1])] = tuple(r[i] for i in pack_i)
        times = sorted(sys_rows)
        width = len(SYSTEM_SERIES) + len(self._ids) * len(PACK_SERIES)
        rows = np.full((len(times), width), np.nan)
        for k, t in enumerate(times):
            rows[k, : len(SYSTEM_SERIES)] = [np.nan if v is None else v for v in sys_rows[t][1:]]
            for p in range(len(self._ids)):
                values = pack_rows.get((t, p))
                if values is not None:
                    j = len(SYSTEM_SERIES) + p * len(PACK_SERIES)
                    rows[k, j : j + len(PACK_SERIES)] = [np.nan if v is None else v for v in values]
        t_arr = np.array(times, dtype=np.float64) - off
        resolution = self.resolution_s
        if points is not None and len(t_arr) > points > 0:
            span = float(t_arr[-1] - t_arr[0]) + resolution
            resolution = math.ceil(span / points / resolution) * resolution
            t_arr, rows = merge_rows(t_arr, rows, resolution, len(self._ids))
        return result_of(resolution, t_arr, rows, self._ids)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            from bmsgw.telemetry.history_db import open_readonly

            self._conn = open_readonly(self._service.path)
        return self._conn


# Web series names → stored columns (same order as history_buffer.SYSTEM_SERIES / PACK_SERIES).
_SYS_NAMES = ("soc", "voltage", "current", "power", "temp_mean", "ccl", "dcl", "cell_v_min", "cell_v_max")
_PACK_NAMES = ("soc", "voltage", "current", "power", "cell_v_min", "cell_v_max", "temp_max")
_SYS_QUERY = f"SELECT t, {', '.join(_SYS_NAMES)} FROM system_series WHERE t >= ? AND t <= ? ORDER BY t"
_PACK_QUERY = f"SELECT t, pack, {', '.join(_PACK_NAMES)} FROM pack_series WHERE t >= ? AND t <= ? ORDER BY t"
