"""The history database: SQLite in WAL mode under gateway.state_dir (schema and queries: docs/history.md).

`HistoryDB` owns one connection and is used from one thread (the history service's writer thread, or a
command such as `bmsgw history export`); `open_readonly` gives readers their own connection, which WAL
lets run beside the writer. Times are epoch seconds (the gateway clock's stamp); values are SI units.
Cell vectors are little-endian float32 BLOBs (`pack_vector`/`unpack_vector`).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bmsgw.telemetry.energy import EnergyTotals

__all__ = [
    "SCHEMA_VERSION",
    "TABLES",
    "Batch",
    "HistoryDB",
    "Retention",
    "is_full",
    "meta",
    "open_readonly",
    "pack_vector",
    "rows_between",
    "unpack_vector",
]

SCHEMA_VERSION = 1

TABLES: dict[str, tuple[str, ...]] = {
    # One row per series interval: means of SOC/V/I/P/T, extremes, the most restrictive limits and why.
    "system_series": (
        "t", "samples", "soc", "voltage", "current", "power", "temp_mean", "temp_min", "temp_max",
        "cell_v_min", "cell_v_max", "cvl", "cvl_reason", "ccl", "ccl_reason", "dcl", "dcl_reason",
        "dvl", "dvl_reason", "alarm_level", "packs_online",
    ),
    # One row per pack and interval while the pack was online; cell extremes with their 0-based cell.
    "pack_series": (
        "t", "pack", "samples", "soc", "soh", "voltage", "current", "power", "temp_min", "temp_max",
        "cell_v_min", "cell_v_min_cell", "cell_v_max", "cell_v_max_cell", "cell_v_spread_max",
        "cell_v_spread_rest",
    ),
    # Every cells_period_s per online pack: the whole cell vector at one instant.
    "cell_vectors": ("t", "pack", "soc", "current", "voltage", "cell_v", "cell_soc", "cell_t"),
    # Alarm transitions: kind raise / change (level) / clear.
    "events": ("t", "kind", "code", "level", "pack", "detail"),
    # Energy counter readings (pack -1 = system), cumulative since the counters began.
    "energy": ("t", "pack", "charged_wh", "discharged_wh", "charged_ah", "discharged_ah"),
    # PackView.health snapshots every health_period_s (nothing while the estimator has none).
    "health": (
        "t", "pack", "soh", "soh_capacity", "soh_resistance", "capacity_ah", "r0_ohm",
        "equivalent_full_cycles", "calendar_days", "dod_histogram", "cell_capacity_ah", "cell_r0_ohm",
        "cell_self_discharge_pct_day",
    ),
}  # fmt: skip
"""Columns of every exported table, in order."""

_KEYS = {
    "system_series": "PRIMARY KEY (t)",
    "pack_series": "PRIMARY KEY (t, pack)",
    "cell_vectors": "PRIMARY KEY (t, pack)",
    "events": "",
    "energy": "PRIMARY KEY (t, pack)",
    "health": "PRIMARY KEY (t, pack)",
}
_TEXT = {"cvl_reason", "ccl_reason", "dcl_reason", "dvl_reason", "kind", "code", "detail", "dod_histogram"}
_INT = {"samples", "pack", "cell_v_min_cell", "cell_v_max_cell", "alarm_level", "packs_online", "level"}
_BLOB = {"cell_v", "cell_soc", "cell_t", "cell_capacity_ah", "cell_r0_ohm", "cell_self_discharge_pct_day"}

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # The counters' newest values, one row per scope; never pruned (restored at start).
    "CREATE TABLE IF NOT EXISTS counters (pack INTEGER PRIMARY KEY, t REAL NOT NULL, charged_wh REAL, "
    "discharged_wh REAL, charged_ah REAL, discharged_ah REAL)",
    *(
        f"CREATE TABLE IF NOT EXISTS {name} ("
        + ", ".join(
            f"{c} {'TEXT' if c in _TEXT else 'INTEGER' if c in _INT else 'BLOB' if c in _BLOB else 'REAL'}"
            + (" NOT NULL" if c in ("t", "pack") and name != "events" else "")
            for c in cols
        )
        + (f", {_KEYS[name]}" if _KEYS[name] else "")
        + ")"
        for name, cols in TABLES.items()
    ),
    "CREATE INDEX IF NOT EXISTS events_t ON events (t)",
]

Row = tuple[Any, ...]


@dataclass
class Batch:
    """Rows waiting to be written, per table, plus the newest counter values (pack -1 = system)."""

    rows: dict[str, list[Row]] = field(default_factory=lambda: {name: [] for name in TABLES})
    counters: dict[int, tuple[float, EnergyTotals]] = field(default_factory=dict)

    def __len__(self) -> int:
        return sum(len(r) for r in self.rows.values())

    def extend(self, other: Batch) -> None:
        """Append `other`'s rows after these; its counters win."""
        for name, rows in other.rows.items():
            self.rows[name].extend(rows)
        self.counters.update(other.counters)

    def drop_oldest(self, keep: int) -> int:
        """Keep at most `keep` rows (the newest of each table, proportionally); the number dropped."""
        total = len(self)
        if total <= keep:
            return 0
        for name, rows in self.rows.items():
            n = len(rows) * keep // total
            self.rows[name] = rows[len(rows) - n :]
        return total - len(self)


@dataclass(frozen=True, slots=True)
class Retention:
    """How long rows are kept (s): series + energy, cell vectors, events + health."""

    series_s: float
    cells_s: float
    events_s: float


class HistoryDB:
    """One read-write connection to the history file; every method may raise sqlite3.Error or OSError."""

    def __init__(self, path: Path, *, max_size_mb: float | None = None) -> None:
        self.path = path
        self.max_size_mb = max_size_mb
        self._conn: sqlite3.Connection | None = None

    @property
    def conn(self) -> sqlite3.Connection:
        """The open connection (opened on first use: directory, WAL mode, schema, size cap)."""
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    def close(self) -> None:
        """Close the connection (checkpointing the WAL); safe to call twice."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()

    def write(self, batch: Batch) -> None:
        """Insert `batch` in one transaction (rows with an existing key replace it)."""
        conn = self.conn
        with conn:
            for name, rows in batch.rows.items():
                if rows:
                    cols = TABLES[name]
                    verb = "INSERT" if name == "events" else "INSERT OR REPLACE"
                    conn.executemany(
                        f"{verb} INTO {name} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", rows
                    )
            conn.executemany(
                "INSERT OR REPLACE INTO counters VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (pack, t, e.charged_wh, e.discharged_wh, e.charged_ah, e.discharged_ah)
                    for pack, (t, e) in batch.counters.items()
                ],
            )

    def prune(self, now: float, keep: Retention) -> int:
        """Delete rows older than their retention; the number of rows deleted."""
        cut_series, cut_cells, cut_events = now - keep.series_s, now - keep.cells_s, now - keep.events_s
        deleted = 0
        with self.conn as conn:
            for name, cut in (
                ("system_series", cut_series),
                ("pack_series", cut_series),
                ("energy", cut_series),
                ("cell_vectors", cut_cells),
                ("events", cut_events),
                ("health", cut_events),
            ):
                deleted += conn.execute(f"DELETE FROM {name} WHERE t < ?", (cut,)).rowcount
        return deleted

    def prune_oldest(self, fraction: float = 0.1) -> int:
        """Make room in a full database: delete the oldest `fraction` of the time span of the bulky tables."""
        conn = self.conn
        lo, hi = conn.execute("SELECT min(t), max(t) FROM pack_series").fetchone()
        vlo, vhi = conn.execute("SELECT min(t), max(t) FROM cell_vectors").fetchone()
        deleted = 0
        with conn:
            for names, a, b in (
                (("system_series", "pack_series", "energy"), lo, hi),
                (("cell_vectors",), vlo, vhi),
            ):
                if a is None:
                    continue
                cut = a + max(b - a, 1.0) * fraction
                for name in names:
                    deleted += conn.execute(f"DELETE FROM {name} WHERE t <= ?", (cut,)).rowcount
        return deleted

    def counters(self) -> tuple[EnergyTotals | None, dict[int, EnergyTotals]]:
        """The newest saved counter values: (system, per pack)."""
        rows = self.conn.execute(
            "SELECT pack, charged_wh, discharged_wh, charged_ah, discharged_ah FROM counters"
        )
        system: EnergyTotals | None = None
        packs: dict[int, EnergyTotals] = {}
        for pack, *values in rows:
            totals = EnergyTotals(*(float(v or 0.0) for v in values))
            if pack < 0:
                system = totals
            else:
                packs[int(pack)] = totals
        return system, packs

    def set_meta(self, items: dict[str, str]) -> None:
        """Store descriptive facts (gateway name, packs, chemistry) for exports and reports."""
        with self.conn as conn:
            conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list(items.items()))

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=5.0, check_same_thread=False, isolation_level=None)
        try:
            conn.isolation_level = "DEFERRED"  # `with conn:` transactions
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"cannot switch {self.path} to WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable up to the last checkpoint
            if self.max_size_mb is not None:
                page = conn.execute("PRAGMA page_size").fetchone()[0]
                conn.execute(f"PRAGMA max_page_count={max(int(self.max_size_mb * 1e6 / page), 16)}")
            with conn:
                for stmt in _SCHEMA:
                    conn.execute(stmt)
                conn.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                )
            version = int(conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])
            if version != SCHEMA_VERSION:
                raise sqlite3.DatabaseError(
                    f"{self.path}: schema version {version}, expected {SCHEMA_VERSION}"
                )
        except BaseException:
            conn.close()
            raise
        return conn


def open_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection (the file must exist); sqlite3.Error if it is not a history database."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no history database (is [history] enabled?)")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0, check_same_thread=False)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.Error:
        conn.close()
        raise sqlite3.DatabaseError(f"{path}: not a bmsgw history database") from None
    if row is None or int(row[0]) != SCHEMA_VERSION:
        conn.close()
        raise sqlite3.DatabaseError(f"{path}: unsupported history schema {row and row[0]}")
    return conn


def rows_between(
    conn: sqlite3.Connection, table: str, start: float | None, end: float | None
) -> list[dict[str, Any]]:
    """Rows of `table` with start <= t <= end (None: unbounded), oldest first, as column → value."""
    cols = TABLES[table]
    lo = -math.inf if start is None else start
    hi = math.inf if end is None else end
    order = "t, rowid" if table == "events" else "t, pack" if "pack" in cols else "t"
    cur = conn.execute(
        f"SELECT {', '.join(cols)} FROM {table} WHERE t >= ? AND t <= ? ORDER BY {order}", (lo, hi)
    )
    return [dict(zip(cols, row, strict=True)) for row in cur]


def meta(conn: sqlite3.Connection) -> dict[str, str]:
    """The meta table as a dict."""
    return {str(k): str(v) for k, v in conn.execute("SELECT key, value FROM meta")}


def is_full(exc: BaseException) -> bool:
    """True for SQLite's "database or disk is full" (size cap or file system)."""
    return isinstance(exc, sqlite3.Error) and getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL"


def pack_vector(values: Iterable[float] | None) -> bytes | None:
    """float32 little-endian BLOB of a vector (None stays None)."""
    if values is None:
        return None
    return np.asarray(values, dtype="<f4").tobytes()


def unpack_vector(blob: bytes | None) -> list[float] | None:
    """The vector stored by `pack_vector` (NaN → None)."""
    if blob is None:
        return None
    out: Sequence[float] = np.frombuffer(blob, dtype="<f4").astype(np.float64).tolist()
    return [None if math.isnan(x) else round(x, 6) for x in out]  # type: ignore[misc]
