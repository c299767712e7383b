"""Dry-run: a recorded pack-bus log through the same pipeline, with the log's timestamps as time."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import can

from bmsgw.config import OutputConfig, Settings
from bmsgw.inverter import CAN_CODECS, CodecOptions
from bmsgw.model import Alarm, CellRef, GatewayState, Reason
from bmsgw.outputs import state_for
from bmsgw.outputs.can import FrameLog
from bmsgw.pipeline import Pipeline
from bmsgw.sources.can import PackFrameDecoder

__all__ = [
    "AlarmEvent",
    "LimitChange",
    "ReplayError",
    "ReplaySummary",
    "Tracker",
    "play_to_bus",
    "read_log",
    "replay",
]

LOG_SUFFIXES = (".log", ".asc", ".blf")
_E = TypeVar("_E")  # a summary event (LimitChange or AlarmEvent)


class ReplayError(Exception):
    """The log cannot be replayed (unreadable, unknown format, empty)."""


@dataclass(frozen=True, slots=True)
class LimitChange:
    """A limit whose binding reason (or zero/non-zero state) changed at t."""

    t: float
    name: str
    old: float
    new: float
    reason: Reason


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """An alarm raised or cleared at t."""

    t: float
    raised: bool
    alarm: Alarm


@dataclass(slots=True)
class ReplaySummary:
    """What a replay read and what the gateway would have done.

    `keep`: at most this many limit changes and alarm events are kept (the first ones; the totals count
    all), so a simulation running for days holds bounded memory; None keeps all (a replay's --json).
    """

    frames_read: int = 0
    frames_decoded: int = 0
    frames_rejected: int = 0
    frames_ignored: int = 0
    samples: int = 0
    samples_rejected: int = 0
    frames_out: int = 0
    t_start: float = math.nan
    t_end: float = math.nan
    soc_start: float = math.nan
    soc_end: float = math.nan
    cell_v_min: tuple[float, CellRef, float] = (math.inf, CellRef(0, 0), math.nan)
    cell_v_max: tuple[float, CellRef, float] = (-math.inf, CellRef(0, 0), math.nan)
    limit_changes: list[LimitChange] = field(default_factory=list)
    alarm_events: list[AlarmEvent] = field(default_factory=list)
    pack_ids: tuple[str, ...] = ()
    keep: int | None = None
    limit_changes_total: int = 0
    alarm_events_total: int = 0
    alarms_raised: int = 0

    @property
    def duration(self) -> float:
        """Seconds between the first and the last frame."""
        return self.t_end - self.t_start

    def render(self, most: int = 40) -> str:
        """Human-readable report; at most `most` limit changes and alarm events are listed."""
        rel = self.t_start
        lines = [
            f"frames: {self.frames_read} read, {self.frames_decoded} decoded, "
            f"{self.frames_rejected} rejected, {self.frames_ignored} not pack frames",
            f"samples: {self.samples} complete, {self.samples_rejected} rejected as implausible/frozen",
            f"duration: {self.duration:.1f} s",
            f"SOC: {_pct(self.soc_start)} -> {_pct(self.soc_end)}",
        ]
        for label, (v, at, t) in (("min", self.cell_v_min), ("max", self.cell_v_max)):
            if math.isfinite(v):
                where = f"{self._pack(at.pack)} cell {at.cell + 1}"
                lines.append(f"cell {label}: {v:.3f} V at {where} (t=+{t - rel:.1f} s)")
        lines.append(f"inverter frames written: {self.frames_out}")
        more = "(--json lists all)" if self.keep is None else f"(the first {self.keep} are kept)"
        lines.append(f"limit changes ({self.limit_changes_total}):")
        for c in self.limit_changes[:most]:
            unit = "V" if c.name in ("CVL", "DVL") else "A"
            lines.append(
                f"  t=+{c.t - rel:8.1f} s  {c.name} {c.old:7.1f} -> {c.new:7.1f} {unit}  ({c.reason})"
            )
        if self.limit_changes_total > most:
            lines.append(f"  ... {self.limit_changes_total - most} more {more}")
        lines.append(f"alarms ({self.alarms_raised} raised):")
        for e in self.alarm_events[:most]:
            a = e.alarm
            where = f" {self._pack(a.pack)}" if a.pack is not None else ""
            verb = "raised " if e.raised else "cleared"
            detail = f": {a.detail}" if a.detail and e.raised else ""
            lines.append(f"  t=+{e.t - rel:8.1f} s  {verb} {a.level.name} {a.code}{where}{detail}")
        if self.alarm_events_total > most:
            lines.append(f"  ... {self.alarm_events_total - most} more {more}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready summary."""
        rel = self.t_start
        return {
            "frames": {"read": self.frames_read, "decoded": self.frames_decoded,
                       "rejected": self.frames_rejected, "ignored": self.frames_ignored,
                       "written": self.frames_out},
            "samples": self.samples,
            "samples_rejected": self.samples_rejected,
            "duration_s": self.duration,
            "soc_start": None if math.isnan(self.soc_start) else self.soc_start,
            "soc_end": None if math.isnan(self.soc_end) else self.soc_end,
            "cell_v_min": _extreme(self.cell_v_min, rel, self.pack_ids),
            "cell_v_max": _extreme(self.cell_v_max, rel, self.pack_ids),
            "limit_changes": [
                {"t": c.t - rel, "limit": c.name, "from": c.old, "to": c.new, "reason": c.reason.value}
                for c in self.limit_changes
            ],
            "alarms": [
                {"t": e.t - rel, "event": "raised" if e.raised else "cleared", "code": e.alarm.code.value,
                 "level": e.alarm.level.name, "pack": e.alarm.pack, "detail": e.alarm.detail}
                for e in self.alarm_events
            ],
        }  # fmt: skip

    def _pack(self, i: int) -> str:
        return self.pack_ids[i] if i < len(self.pack_ids) else f"pack {i}"


def read_log(path: Path) -> Iterator[can.Message]:
    """Messages of a candump .log, .asc or .blf file; ReplayError if it cannot be read."""
    if not path.is_file():
        raise ReplayError(f"{path}: no such file")
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes[-1:] == [".gz"]:
        suffixes.pop()
    if suffixes[-1:] not in ([s] for s in LOG_SUFFIXES):
        raise ReplayError(f"{path}: unknown log format; expected one of {', '.join(LOG_SUFFIXES)}")
    try:
        reader = can.LogReader(str(path))
    except Exception as exc:
        raise ReplayError(f"{path}: cannot open log: {exc}") from exc
    try:
        yield from reader
    except Exception as exc:
        raise ReplayError(f"{path}: unreadable log: {exc}") from exc
    finally:
        reader.stop()


def replay(
    path: Path, settings: Settings, out: Path | None = None, *, realtime: bool = False
) -> ReplaySummary:
    """Feed the log through the pipeline at log time; write inverter frames to `out` (candump)."""
    # Log times are epoch seconds (candump, BLF); relative ones (ASC) read as "wall clock not set".
    pipeline = Pipeline(settings, wall=float)
    decoder = PackFrameDecoder(settings)
    outputs = settings.outputs or [OutputConfig(protocol="pylontech-can", channel="inverter")]
    opts = [CodecOptions(o.manufacturer, unknown_temperature_c=o.unknown_temperature_c) for o in outputs]
    views = [state_for(o, lambda: pipeline.state) for o in outputs]
    codecs = [(CAN_CODECS[o.protocol], opt, o) for o, opt in zip(outputs, opts, strict=True)]
    logs = [FrameLog(out, o.channel) for o in outputs] if out else []
    summary = ReplaySummary(pack_ids=tuple(p.id for p in settings.packs))
    tracker = Tracker(summary)
    step_period = settings.gateway.step_period_s
    next_step = math.inf
    next_out = [math.inf] * len(codecs)
    wall0 = time.monotonic()

    def advance(until: float) -> None:
        nonlocal next_step
        while True:
            t = min(next_step, *next_out)
            if t > until:
                return
            if t == next_step:
                tracker.see(pipeline.step(t))
                next_step += step_period
            for k, (codec, opts, _) in enumerate(codecs):
                if next_out[k] == t:
                    frames = codec.encode(views[k](), opts)
                    summary.frames_out += len(frames)
                    for frame in frames:
                        if logs:
                            logs[k].write(frame, t)
                    next_out[k] += codec.period_s

    try:
        for msg in read_log(path):
            t = float(msg.timestamp)
            if summary.frames_read == 0:
                summary.t_start = t
                next_step = t
                next_out = [t] * len(codecs)
            elif t < summary.t_end:
                t = summary.t_end  # a log written out of order must not run time backwards
            summary.t_end = t
            summary.frames_read += 1
            if realtime:
                delay = (t - summary.t_start) - (time.monotonic() - wall0)
                if delay > 0:
                    time.sleep(delay)
            advance(t)
            if msg.is_error_frame or msg.is_remote_frame:
                decoder.ignored += 1
                decoder.frames += 1
                continue
            sample = decoder.feed(msg.arbitration_id, bytes(msg.data), t, msg.is_extended_id)
            if sample is not None:
                if pipeline.submit(sample):
                    tracker.see(pipeline.step(t))
                else:
                    summary.samples_rejected += 1
        if summary.frames_read == 0:
            raise ReplayError(f"{path}: the log holds no frames")
        advance(summary.t_end)
    finally:
        for log in logs:
            log.close()
    summary.frames_decoded = decoder.decoded
    summary.frames_rejected = decoder.rejected
    summary.frames_ignored = decoder.ignored
    summary.samples = pipeline.samples
    return summary


def play_to_bus(path: Path, interface: str, channel: str) -> int:
    """Send the log's frames onto a CAN bus with their original timing; returns the count sent."""
    sent = 0
    with can.Bus(interface=interface, channel=channel) as bus:
        for msg in can.MessageSync(read_log(path), timestamps=True):
            msg.channel = None
            bus.send(msg)
            sent += 1
    return sent


class Tracker:
    """Turns successive states into limit-change and alarm events."""

    def __init__(self, summary: ReplaySummary) -> None:
        self._s = summary
        self._limits: dict[str, tuple[float, Reason]] = {}
        self._alarms: dict[tuple[str, int | None], Alarm] = {}

    def see(self, state: GatewayState) -> None:
        s = self._s
        if state.usable:
            if math.isnan(s.soc_start):
                s.soc_start = state.soc
            s.soc_end = state.soc
            if state.cell_v_min < s.cell_v_min[0]:
                s.cell_v_min = (state.cell_v_min, state.cell_v_min_at, state.t)
            if state.cell_v_max > s.cell_v_max[0]:
                s.cell_v_max = (state.cell_v_max, state.cell_v_max_at, state.t)
        lim = state.limits
        for name, limit in (("CVL", lim.cvl), ("CCL", lim.ccl), ("DCL", lim.dcl), ("DVL", lim.dvl)):
            prev = self._limits.get(name)
            if prev is None or prev[1] != limit.reason or ((prev[0] == 0) != (limit.value == 0)):
                s.limit_changes_total += 1
                self._keep(
                    s.limit_changes,
                    LimitChange(state.t, name, prev[0] if prev else 0.0, limit.value, limit.reason),
                )
            self._limits[name] = (limit.value, limit.reason)
        now = {(a.code.value, a.pack): a for a in state.alarms}
        for key, alarm in now.items():
            old = self._alarms.get(key)
            if old is None or old.level is not alarm.level:
                s.alarms_raised += 1
                s.alarm_events_total += 1
                self._keep(s.alarm_events, AlarmEvent(state.t, True, alarm))
        for key, alarm in self._alarms.items():
            if key not in now:
                s.alarm_events_total += 1
                self._keep(s.alarm_events, AlarmEvent(state.t, False, alarm))
        self._alarms = now

    def _keep(self, events: list[_E], event: _E) -> None:
        """Append `event` while the summary has room (its `keep`)."""
        if self._s.keep is None or len(events) < self._s.keep:
            events.append(event)


def _extreme(x: tuple[float, CellRef, float], rel: float, ids: tuple[str, ...]) -> dict[str, object] | None:
    v, at, t = x
    if not math.isfinite(v):
        return None
    return {
        "v": v,
        "pack": ids[at.pack] if at.pack < len(ids) else at.pack,
        "cell": at.cell + 1,
        "t": t - rel,
    }


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x * 100:.1f} %"
