"""Offline SOC estimation of one logged cell with the gateway's own core (``bmsgw estimate``).

Input CSV: ``t_s,current_a,voltage_v[,temp_c][,soc_ref]`` (header required, extra columns ignored, ``.gz``
read transparently); time strictly increasing, current > 0 charging unless told otherwise. The log runs
through the same :class:`~bmsgw.core.Core` the gateway uses, as one pack of one cell. Output CSV:
``t_s,soc,soc_std,capacity_ah,r0_ohm,current_bias_a`` (SOC as a fraction).

Accuracy against ``soc_ref`` is reported overall and **after the first anchor**: the first OCV reset after
rest, full or empty calibration, or the first time the filter's own SOC σ falls below 2 % (its convergence
event), whichever comes first — before that the estimate is only as good as the initial guess.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import IO, Any

import numpy as np

from bmsgw.core import Core, CoreParams
from bmsgw.core.chemistry import ChemistryProfile, OcvTableError, profile, profile_from_csv
from bmsgw.model import F64, Chemistry, PackSample

__all__ = [
    "Accuracy",
    "CellLog",
    "EstimateError",
    "Estimation",
    "accuracy",
    "estimate",
    "read_log",
    "run_cli",
    "write_csv",
]

REQUIRED = ("t_s", "current_a", "voltage_v")
OUTPUT_COLUMNS = ("t_s", "soc", "soc_std", "capacity_ah", "r0_ohm", "current_bias_a")


class EstimateError(Exception):
    """The input log cannot be used; the message names the file, line and column."""


@dataclass(frozen=True, slots=True, eq=False)
class CellLog:
    """One logged cell: time (s), current (A, > 0 charging), voltage (V), optional temperature and SOC."""

    t: F64
    current: F64
    voltage: F64
    temp: F64 | None = None
    soc_ref: F64 | None = None


@dataclass(frozen=True, slots=True, eq=False)
class Estimation:
    """The core's estimates at every row of the log, plus its anchor events as (t, kind)."""

    t: F64
    soc: F64
    soc_std: F64
    capacity_ah: F64
    r0_ohm: F64
    current_bias_a: F64
    first_anchor_t: float
    anchors: tuple[tuple[float, str], ...] = field(default=())


@dataclass(frozen=True, slots=True)
class Accuracy:
    """SOC error against the reference (fractions): overall and from the first anchor on."""

    rmse: float
    max_abs: float
    rmse_after: float
    max_after: float
    first_anchor_t: float
    samples_after: int

    def as_dict(self) -> dict[str, float]:
        """Plain numbers (NaN where undefined), for JSON."""
        return {k: getattr(self, k) for k in self.__slots__}


def read_log(path: str | Path, *, discharge_positive: bool = False) -> CellLog:
    """Read and validate a cell log (see the module docstring); raises :class:`EstimateError`."""
    name = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise EstimateError(f"{name}: cannot read: {exc.strerror or exc}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise EstimateError(f"{name}: broken gzip file: {exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise EstimateError(f"{name}: not a UTF-8 text (CSV) file") from None
    rows = csv.reader(io.StringIO(text))
    header = next(rows, None)
    if not header:
        raise EstimateError(f"{name}: empty file (need a header {','.join(REQUIRED)}[,temp_c][,soc_ref])")
    cols = [c.strip().lower() for c in header]
    missing = [c for c in REQUIRED if c not in cols]
    if missing:
        raise EstimateError(
            f"{name}: missing column {', '.join(missing)} (header has {', '.join(cols)}; "
            f"need {','.join(REQUIRED)}[,temp_c][,soc_ref])"
        )
    wanted = [c for c in (*REQUIRED, "temp_c", "soc_ref") if c in cols]
    index = [cols.index(c) for c in wanted]
    values: list[list[float]] = [[] for _ in wanted]
    for line, row in enumerate(rows, start=2):
        if not row or not any(x.strip() for x in row):
            continue
        for k, (col, i) in enumerate(zip(wanted, index, strict=True)):
            try:
                x = float(row[i])
            except (IndexError, ValueError):
                cell = row[i] if i < len(row) else "(missing)"
                raise EstimateError(f"{name}: line {line}: {col} = {cell!r} is not a number") from None
            if not math.isfinite(x):
                raise EstimateError(f"{name}: line {line}: {col} = {x} is not finite")
            values[k].append(x)
        t = values[0]
        if len(t) > 1 and t[-1] <= t[-2]:
            raise EstimateError(
                f"{name}: line {line}: t_s = {t[-1]:g} does not increase (previous {t[-2]:g}); "
                "time must be strictly increasing"
            )
    if len(values[0]) < 2:
        raise EstimateError(f"{name}: need at least two data rows")
    arr = {c: np.array(v, dtype=np.float64) for c, v in zip(wanted, values, strict=True)}
    current = -arr["current_a"] if discharge_positive else arr["current_a"]
    return CellLog(arr["t_s"], current, arr["voltage_v"], arr.get("temp_c"), arr.get("soc_ref"))


def estimate(
    log: CellLog,
    chemistry: Chemistry,
    capacity_ah: float,
    *,
    ocv_profile: ChemistryProfile | None = None,
    initial_soc: float | None = None,
    kernel_module: ModuleType | None = None,
    **params: Any,
) -> Estimation:
    """Run the core over `log` as one pack of one cell; `params` override :class:`CoreParams` fields
    (`kernel_module`: see :class:`~bmsgw.core.Core`, benchmarks only)."""
    has_t = log.temp is not None
    peak = float(np.max(np.abs(log.current))) if log.current.size else 1.0
    kw: dict[str, Any] = {
        # protection is not the point here: limits wide enough that no alarm interferes
        "max_charge_current_a": max(peak, 1e-3),
        "max_discharge_current_a": max(peak, 1e-3),
        **params,
    }
    if ocv_profile is not None:
        kw["ocv_profile"] = ocv_profile
    core_params = CoreParams.defaults(chemistry, (1,), (1 if has_t else 0,), (capacity_ah,), **kw)
    core = Core(
        core_params, initial_soc=None if initial_soc is None else [initial_soc], kernel_module=kernel_module
    )
    n = log.t.size
    out = {k: np.empty(n) for k in OUTPUT_COLUMNS[1:]}
    anchors: list[tuple[float, str]] = []
    seen = 0
    first = math.nan
    for k, s in enumerate(_samples(log)):
        po = core.step(s.t, [s]).packs[0]
        out["soc"][k] = po.soc
        out["soc_std"][k] = po.soc_std
        out["capacity_ah"][k] = po.capacity_ah
        out["r0_ohm"][k] = po.r0_ohm
        out["current_bias_a"][k] = po.current_bias_a
        if po.anchors != seen:
            seen = po.anchors
            anchors.append((po.last_anchor_t, po.last_anchor))
        first = po.first_anchor_t
    return Estimation(
        log.t, out["soc"], out["soc_std"], out["capacity_ah"], out["r0_ohm"], out["current_bias_a"],
        first, tuple(anchors),
    )  # fmt: skip


def _samples(log: CellLog) -> Iterator[PackSample]:
    no_temp = np.empty(0)
    temps = log.temp.tolist() if log.temp is not None else [math.nan] * log.t.size
    for t, i, v, temp in zip(log.t.tolist(), log.current.tolist(), log.voltage.tolist(), temps, strict=True):
        cell_t = no_temp if math.isnan(temp) else np.array([temp])
        yield PackSample(0, t, np.array([v]), cell_t, i, v)


def accuracy(est: Estimation, soc_ref: F64) -> Accuracy:
    """RMSE and max |error| overall and from the first anchor on (NaN after it when there is none)."""
    err = est.soc - soc_ref
    after = err[est.t >= est.first_anchor_t] if not math.isnan(est.first_anchor_t) else err[:0]

    def rmse(e: F64) -> float:
        return float(np.sqrt(np.mean(e * e))) if e.size else math.nan

    def worst(e: F64) -> float:
        return float(np.max(np.abs(e))) if e.size else math.nan

    return Accuracy(rmse(err), worst(err), rmse(after), worst(after), est.first_anchor_t, int(after.size))


def write_csv(dest: IO[str], est: Estimation) -> None:
    """Write ``t_s,soc,soc_std,capacity_ah,r0_ohm,current_bias_a``, one row per input row."""
    w = csv.writer(dest, lineterminator="\n")
    w.writerow(OUTPUT_COLUMNS)
    cols: Sequence[F64] = (est.t, est.soc, est.soc_std, est.capacity_ah, est.r0_ohm, est.current_bias_a)
    for row in zip(*(c.tolist() for c in cols), strict=True):
        w.writerow((f"{row[0]:.3f}", *(f"{x:.6g}" for x in row[1:])))


def run_cli(args: argparse.Namespace) -> int:
    """``bmsgw estimate``: exit 0, or 2 with one line on stderr when the input or an option is unusable."""
    try:
        if not (math.isfinite(args.capacity_ah) and args.capacity_ah > 0):
            raise EstimateError(f"--capacity-ah = {args.capacity_ah}: must be > 0")
        if args.initial_soc is not None and not 0.0 <= args.initial_soc <= 1.0:
            raise EstimateError(f"--initial-soc = {args.initial_soc}: must be within 0..1 (a fraction)")
        chem = Chemistry(args.chemistry)
        prof = profile_from_csv(args.ocv, profile(chem)) if args.ocv is not None else None
        log = read_log(args.input, discharge_positive=args.current_sign == "discharge-positive")
        est = estimate(log, chem, args.capacity_ah, ocv_profile=prof, initial_soc=args.initial_soc)
    except (EstimateError, OcvTableError) as exc:
        print(f"bmsgw estimate: {exc}", file=sys.stderr)
        return 2
    if args.output is None:
        write_csv(sys.stdout, est)
        report = sys.stderr
    else:
        with open(args.output, "w", newline="") as f:
            write_csv(f, est)
        report = sys.stdout
    print(_summary(est, log), file=report)
    return 0


def _summary(est: Estimation, log: CellLog) -> str:
    lines = [
        f"rows {est.t.size}, {est.t[-1] - est.t[0]:.0f} s; final SOC {est.soc[-1] * 100:.2f} % "
        f"(σ {est.soc_std[-1] * 100:.2f} %), capacity {est.capacity_ah[-1]:.4g} Ah, "
        f"R0 {est.r0_ohm[-1] * 1e3:.3g} mΩ, current bias {est.current_bias_a[-1] * 1e3:+.3g} mA",
        "anchors: "
        + (", ".join(f"{kind} at {t:.0f} s" for t, kind in est.anchors) or "none")
        + (f"; first anchor at {est.first_anchor_t:.0f} s" if not math.isnan(est.first_anchor_t) else ""),
    ]
    if log.soc_ref is not None:
        acc = accuracy(est, log.soc_ref)
        lines.append(f"SOC error overall: RMSE {acc.rmse * 100:.2f} %, max {acc.max_abs * 100:.2f} %")
        if acc.samples_after:
            lines.append(
                f"SOC error after the first anchor: RMSE {acc.rmse_after * 100:.2f} %, "
                f"max {acc.max_after * 100:.2f} % ({acc.samples_after} rows)"
            )
        else:
            lines.append("SOC error after the first anchor: n/a (no anchor)")
    return "\n".join(lines)
