"""`bmsgw history export`: rows of the history database between two times, as CSV or JSON.

Times on the command line are ISO-8601 (`2026-11-20T06:00`, `2026-11-20 06:00+01:00`; without an offset
the machine's local time), relative to now (`-24h` or `24h`, `-30m`, `-7d`, `-2w`, `-90s`, `now`; write
`--from=-24h` with the minus, or argparse takes it for an option), or epoch
seconds (`1763600000`). Output times are epoch seconds (`t`) plus ISO-8601 UTC (`time`).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import re
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from bmsgw.telemetry.history_db import TABLES, meta, open_readonly, rows_between, unpack_vector

__all__ = ["ExportError", "export", "parse_time", "read_rows", "run_cli"]

_RELATIVE = re.compile(r"^-?\s*(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 604_800.0}
_BLOBS = {"cell_v", "cell_soc", "cell_t", "cell_capacity_ah", "cell_r0_ohm", "cell_self_discharge_pct_day"}


class ExportError(Exception):
    """Bad command-line input or an unreadable database; the message says which and why."""


def parse_time(text: str, now: float, *, name: str = "time") -> float:
    """Epoch seconds of `text` (ISO-8601, -<n><s|m|h|d|w>, now, or epoch seconds); ExportError if not."""
    raw = text.strip()
    if raw.lower() == "now":
        return now
    if (m := _RELATIVE.match(raw.lower())) and math.isfinite(ago := float(m.group(1)) * _UNIT_S[m.group(2)]):
        return now - ago
    try:
        value = float(raw)
    except ValueError:
        pass
    else:
        if math.isfinite(value):
            return value
    try:
        return dt.datetime.fromisoformat(raw).timestamp()  # naive: local time
    except (ValueError, OverflowError, OSError):
        raise ExportError(
            f"{name} {text!r}: expected ISO-8601 (2026-11-20T06:00, optional +01:00), a relative time "
            "(-24h, -30m, -7d, -2w, -90s, now) or epoch seconds"
        ) from None


def read_rows(
    conn: sqlite3.Connection, tables: Sequence[str], start: float | None, end: float | None
) -> dict[str, list[dict[str, Any]]]:
    """Rows of each table between start and end, vectors decoded to lists, with an ISO `time` column."""
    out: dict[str, list[dict[str, Any]]] = {}
    for table in tables:
        rows = rows_between(conn, table, start, end)
        for row in rows:
            for key in _BLOBS.intersection(row):
                row[key] = unpack_vector(row[key])
            if row.get("dod_histogram"):
                row["dod_histogram"] = json.loads(row["dod_histogram"])
        out[table] = [{"time": _iso(r["t"]), **r} for r in rows]
    return out


def export(
    conn: sqlite3.Connection, tables: Sequence[str], start: float | None, end: float | None, fmt: str,
    out: TextIO,
) -> int:  # fmt: skip
    """Write the rows as CSV (exactly one table) or JSON (meta + every table); the number of rows."""
    data = read_rows(conn, tables, start, end)
    if fmt == "json":
        doc = {"meta": meta(conn), "from": start, "to": end, "tables": data}
        json.dump(_finite(doc), out, indent=1)
        out.write("\n")
    else:
        (table,) = tables
        writer = csv.writer(out, lineterminator="\n")
        cols = ("time", *TABLES[table])
        writer.writerow(cols)
        for row in data[table]:
            writer.writerow([_cell(row[c]) for c in cols])
    return sum(len(rows) for rows in data.values())


def run_cli(db: Path, start_text: str | None, end_text: str | None, fmt: str, table: str,
            output: Path | None) -> int:  # fmt: skip
    """The command: 0 on success, 2 on bad input (message on stderr)."""
    now = time.time()
    try:
        start = parse_time(start_text, now, name="--from") if start_text is not None else None
        end = parse_time(end_text, now, name="--to") if end_text is not None else None
        if start is not None and end is not None and end < start:
            raise ExportError(f"--to {end_text!r} is before --from {start_text!r}")
        tables = list(TABLES) if table == "all" else [table]
        if fmt == "csv" and len(tables) != 1:
            raise ExportError("--format csv holds one table: pick one with --table (or use --format json)")
        try:
            conn = open_readonly(db)
        except (OSError, sqlite3.Error) as exc:
            raise ExportError(str(exc)) from None
        try:
            buf = io.StringIO()
            n = export(conn, tables, start, end, fmt, buf)
        finally:
            conn.close()
    except ExportError as exc:
        print(f"bmsgw: {exc}", file=sys.stderr)
        return 2
    if output is None:
        sys.stdout.write(buf.getvalue())
    else:
        output.write_text(buf.getvalue())
        print(f"{n} rows written to {output}", file=sys.stderr)
    return 0


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, list):
        return json.dumps(value)
    return value


def _finite(obj: Any) -> Any:
    """NaN/inf → None, so the JSON is strict."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj
