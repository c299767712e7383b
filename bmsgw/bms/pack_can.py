"""bmsgw generic pack CAN protocol (dbc/pack.dbc): frames <-> messages, and messages -> PackSample.

Pure: no asyncio, no logging, no clock (time is passed in). The layout lives only in dbc/pack.dbc
(written by dbc/make_pack_dbc.py, documented in docs/pack-protocol.md). Encoders go through cantools;
decode uses unpackers compiled at import from the cantools signal definitions (~4x faster than
`Message.decode`, checked against it in tests/test_pack_can.py).
"""

from __future__ import annotations

import enum
import importlib.resources
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, TypeAlias

import cantools
import numpy as np
from cantools.database.can import Database, Message, Signal

from bmsgw.model import F64, BmsFlags, Frame, PackSample, Transfer

__all__ = [
    "MAX_CELLS",
    "MAX_TEMPS",
    "MODULES",
    "TRANSFER_SLOTS",
    "BalanceTransferMsg",
    "CellVoltagesMsg",
    "ContactorRequest",
    "GatewayCommandMsg",
    "PackAssembler",
    "PackCanError",
    "PackInfoMsg",
    "PackMessage",
    "PackStatusMsg",
    "TemperaturesMsg",
    "decode",
    "encode_cells",
    "encode_command",
    "encode_info",
    "encode_status",
    "encode_temps",
    "encode_tick",
    "encode_transfer",
]

# ---------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------


class PackCanError(ValueError):
    """A pack.dbc frame whose payload cannot be decoded (bad DLC, bad multiplexer, invalid enum)."""


class ContactorRequest(enum.IntEnum):
    """GatewayCommand PACK_CmdContactor: what the gateway asks the module's contactor to do."""

    NONE = 0
    CLOSE = 1
    OPEN = 2


@dataclass(frozen=True, slots=True)
class PackStatusMsg:
    """PackStatus (0x4m0): pack voltage (V), current (A, > 0 charging), status flags, alive 0..15."""

    module: int
    voltage: float
    current: float
    flags: BmsFlags
    alive: int


@dataclass(frozen=True, slots=True)
class PackInfoMsg:
    """PackInfo (0x4m1): counts, alarm bits (BmsFlags.ALARM_*), BMS SOC/SOH as fractions or None."""

    module: int
    cell_count: int
    temp_count: int
    alarms: BmsFlags
    soc_reported: float | None
    soh_reported: float | None


@dataclass(frozen=True, slots=True)
class CellVoltagesMsg:
    """CellVoltages (0x4m2): group g carries cells 4g+1..4g+4 (V; None = not present)."""

    module: int
    group: int
    voltages: tuple[float | None, ...]


@dataclass(frozen=True, slots=True)
class TemperaturesMsg:
    """Temperatures (0x4m3): group g carries sensors 3g+1..3g+3 (°C; None = absent)."""

    module: int
    group: int
    temps: tuple[float | None, ...]


@dataclass(frozen=True, slots=True)
class GatewayCommandMsg:
    """GatewayCommand (0x4m8, gateway -> pack): balance mask (bit n = cell n+1), contactor, alive."""

    module: int
    balance_mask: int
    contactor: ContactorRequest
    alive: int


@dataclass(frozen=True, slots=True)
class BalanceTransferMsg:
    """GatewayBalanceTransfer (0x4m9, gateway -> pack): the active-balancing transfers (0-based cells,
    A drawn from the source), () = stop all; alive 0..15."""

    module: int
    transfers: tuple[Transfer, ...]
    alive: int


PackMessage: TypeAlias = (
    PackStatusMsg | PackInfoMsg | CellVoltagesMsg | TemperaturesMsg | GatewayCommandMsg | BalanceTransferMsg
)


def decode(frame_id: int, data: bytes, *, extended: bool = False) -> PackMessage | None:
    """Decode one frame; None if it is not a pack.dbc frame, PackCanError if it is one but malformed."""
    entry = None if extended else _DECODERS.get(frame_id)
    if entry is None:
        return None
    if len(data) != 8:
        raise PackCanError(f"0x{frame_id:03X}: expected 8 data bytes, got {len(data)}")
    return entry[1](entry[0], int.from_bytes(data, "little"))


def encode_status(module: int, voltage: float, current: float, flags: BmsFlags, alive: int) -> Frame:
    """PackStatus frame; alarm bits in `flags` are ignored, alive is taken mod 16."""
    msg, sig = _message("PackStatus", module)
    raw = {"PACK_Voltage": _to_raw(sig["PACK_Voltage"], voltage)}
    raw["PACK_Current"] = _to_raw(sig["PACK_Current"], current)
    raw.update(_flags_to_raw(_STATUS_FLAGS, flags))
    raw["PACK_Alive"] = _wrap(sig["PACK_Alive"], alive)
    return _encode(msg, raw)


def encode_info(
    module: int,
    cell_count: int,
    temp_count: int,
    alarms: BmsFlags,
    soc_reported: float | None,
    soh_reported: float | None,
) -> Frame:
    """PackInfo frame; non-alarm bits in `alarms` are ignored, None/NaN SOC or SOH = not available."""
    msg, sig = _message("PackInfo", module)
    raw = {"PACK_CellCount": _to_raw(sig["PACK_CellCount"], cell_count)}
    raw["PACK_TempCount"] = _to_raw(sig["PACK_TempCount"], temp_count)
    raw.update(_flags_to_raw(_ALARM_FLAGS, alarms))
    for name, frac in (("PACK_SocReported", soc_reported), ("PACK_SohReported", soh_reported)):
        raw[name] = _to_raw(sig[name], math.nan if frac is None else frac * 100.0, absent=True)
    return _encode(msg, raw)


def encode_cells(module: int, cell_v: Sequence[float | None] | F64) -> list[Frame]:
    """CellVoltages frames for all groups needed by len(cell_v) cells (V; None/NaN = not present)."""
    return _encode_groups("CellVoltages", module, cell_v)


def encode_temps(module: int, temps: Sequence[float | None] | F64) -> list[Frame]:
    """Temperatures frames for all groups needed by len(temps) sensors (°C; None/NaN = absent)."""
    return _encode_groups("Temperatures", module, temps)


def encode_command(module: int, balance_mask: int, contactor: ContactorRequest, alive: int) -> Frame:
    """GatewayCommand frame; balance_mask is cut to 32 bits, alive taken mod 16."""
    msg, sig = _message("GatewayCommand", module)
    raw = {
        "PACK_CmdBalanceMask": _wrap(sig["PACK_CmdBalanceMask"], balance_mask),
        "PACK_CmdContactor": int(ContactorRequest(contactor)),
        "PACK_CmdAlive": _wrap(sig["PACK_CmdAlive"], alive),
    }
    return _encode(msg, raw)


def encode_transfer(module: int, transfers: Sequence[Transfer], alive: int) -> Frame:
    """GatewayBalanceTransfer frame; () = the no-transfer frame. Current clamped to the DBC range, alive
    taken mod 16; ValueError for more than TRANSFER_SLOTS transfers, a cell out of 0..MAX_CELLS-1, a cell
    used twice, or a negative/NaN current."""
    msg, sig = _message("GatewayBalanceTransfer", module)
    if len(transfers) > len(_XFER_SLOTS):
        raise ValueError(f"at most {len(_XFER_SLOTS)} transfers, got {len(transfers)}")
    cells = [c for tr in transfers for c in (tr.source, tr.sink)]
    if len(set(cells)) != len(cells) or not all(0 <= c < MAX_CELLS for c in cells):
        raise ValueError(f"transfer cells must be distinct and within 0..{MAX_CELLS - 1}, got {cells}")
    raw = {name: 0 for slot in _XFER_SLOTS for name in slot}
    raw[_XFER_ALIVE] = _wrap(sig[_XFER_ALIVE], alive)
    for (src, dst, cur), tr in zip(_XFER_SLOTS, transfers, strict=False):
        if not tr.current_a >= 0.0:
            raise ValueError(f"transfer current must be >= 0 A, got {tr.current_a}")
        raw[src], raw[dst] = tr.source + 1, tr.sink + 1
        raw[cur] = _to_raw(sig[cur], tr.current_a)
    return _encode(msg, raw)


# Transmit schedule in 100 ms ticks (docs/pack-protocol.md): status every tick, cells every 2,
# temperatures every 5, info every 10.
TICK_S = 0.1
CELLS_EVERY = 2
TEMPS_EVERY = 5
INFO_EVERY = 10


def encode_tick(
    tick: int,
    module: int,
    cell_v: Sequence[float | None] | F64,
    cell_t: Sequence[float | None] | F64,
    current: float,
    voltage: float,
    flags: BmsFlags,
    alive: int,
    soc_reported: float | None = None,
) -> list[Frame]:
    """The frames a module sends in 100 ms tick number `tick` of its schedule (status last)."""
    frames: list[Frame] = []
    if tick % CELLS_EVERY == 0:
        frames += encode_cells(module, cell_v)
    if tick % TEMPS_EVERY == 0:
        frames += encode_temps(module, cell_t)
    if tick % INFO_EVERY == 0:
        frames.append(encode_info(module, len(cell_v), len(cell_t), flags, soc_reported, None))
    frames.append(encode_status(module, voltage, current, flags, alive))
    return frames


class PackAssembler:
    """Turns one module's messages into PackSamples: one per PackStatus when all data is fresh."""

    __slots__ = (
        "_cell_rx",
        "_cell_v",
        "_info",
        "_info_t",
        "_temp_rx",
        "_temp_v",
        "cells",
        "ignored",
        "incomplete",
        "module",
        "pack",
        "samples",
        "stale_cells",
        "stale_temps",
        "temps",
        "window_s",
    )

    def __init__(self, pack: int, module: int, cells: int, temps: int, window_s: float = 1.0) -> None:
        """Assemble module `module` (0..15) into samples for pack index `pack`."""
        if not 0 <= module < MODULES:
            raise ValueError(f"module must be 0..{MODULES - 1}, got {module}")
        if not 1 <= cells <= MAX_CELLS:
            raise ValueError(f"cells must be 1..{MAX_CELLS}, got {cells}")
        if not 0 <= temps <= MAX_TEMPS:
            raise ValueError(f"temps must be 0..{MAX_TEMPS}, got {temps}")
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        self.pack = pack
        self.module = module
        self.cells = cells
        self.temps = temps
        self.window_s = float(window_s)
        self.samples = 0  # PackSamples emitted
        self.incomplete = 0  # PackStatus frames that could not emit a sample, because ...
        self.stale_cells = 0  # ... a configured cell was missing, absent or older than window_s
        self.stale_temps = 0  # ... a configured sensor was missing, absent or older than window_s
        self.ignored = 0  # messages not used: other module, GatewayCommand, groups beyond config
        self._cell_v: list[float] = [0.0] * cells
        self._cell_rx: list[float] = [-math.inf] * cells
        self._temp_v: list[float] = [0.0] * temps
        self._temp_rx: list[float] = [-math.inf] * temps
        self._info: PackInfoMsg | None = None
        self._info_t = -math.inf

    @property
    def info(self) -> PackInfoMsg | None:
        """Newest PackInfo of this module (cell/sensor counts, SOH), or None."""
        return self._info

    def feed(self, msg: PackMessage, t: float) -> PackSample | None:
        """Take one message received at t (s); return a PackSample when `msg` is a complete status."""
        if msg.module != self.module:
            self.ignored += 1
            return None
        if isinstance(msg, CellVoltagesMsg):
            base = msg.group * _CELLS_PER_GROUP
            if base >= self.cells:
                self.ignored += 1
            else:
                _store(msg.voltages, base, self._cell_v, self._cell_rx, t)
            return None
        if isinstance(msg, PackStatusMsg):
            return self._status(msg, t)
        if isinstance(msg, TemperaturesMsg):
            base = msg.group * _TEMPS_PER_GROUP
            if base >= self.temps:
                self.ignored += 1
            else:
                _store(msg.temps, base, self._temp_v, self._temp_rx, t)
            return None
        if isinstance(msg, PackInfoMsg):
            self._info = msg
            self._info_t = t
            return None
        self.ignored += 1
        return None

    def _status(self, msg: PackStatusMsg, t: float) -> PackSample | None:
        oldest = t - self.window_s
        cells_ok = min(self._cell_rx) >= oldest
        temps_ok = not self._temp_rx or min(self._temp_rx) >= oldest
        if not (cells_ok and temps_ok):
            self.incomplete += 1
            self.stale_cells += not cells_ok
            self.stale_temps += not temps_ok
            return None
        flags = msg.flags
        soc = None
        info = self._info
        if info is not None and t - self._info_t <= _INFO_FRESH_S:
            if info.alarms:  # (IntFlag `|` is slow; most PackInfo frames carry no alarm)
                flags |= info.alarms
            soc = info.soc_reported
        cell_v = np.array(self._cell_v, dtype=np.float64)
        cell_v.setflags(write=False)
        cell_t = np.array(self._temp_v, dtype=np.float64)
        cell_t.setflags(write=False)
        self.samples += 1
        return PackSample(self.pack, t, cell_v, cell_t, msg.current, msg.voltage, flags, msg.alive, soc)


# ---------------------------------------------------------------------------------------------------
# Implementation: everything below is derived from dbc/pack.dbc at import.
# ---------------------------------------------------------------------------------------------------

_Decoder: TypeAlias = Callable[[int, int], PackMessage]  # (module, payload as little-endian int)
_XFER_ALIVE = "PACK_XferAlive"
_Groups: TypeAlias = tuple[str, list[list[str]]]  # multiplexer signal, value signals per group

# Semantic mapping (the codec's job): DBC flag signal -> BmsFlags bit.
_STATUS_FLAGS: dict[str, BmsFlags] = {
    "PACK_ChgFetOn": BmsFlags.CHARGE_FET,
    "PACK_DchgFetOn": BmsFlags.DISCHARGE_FET,
    "PACK_Balancing": BmsFlags.BALANCING,
    "PACK_ContactorClosed": BmsFlags.CONTACTOR_CLOSED,
    "PACK_BmsFault": BmsFlags.BMS_FAULT,
}
_ALARM_FLAGS: dict[str, BmsFlags] = {
    "PACK_AlmCellOV": BmsFlags.ALARM_CELL_OV,
    "PACK_AlmCellUV": BmsFlags.ALARM_CELL_UV,
    "PACK_AlmOverTemp": BmsFlags.ALARM_OVERTEMP,
    "PACK_AlmUnderTemp": BmsFlags.ALARM_UNDERTEMP,
    "PACK_AlmChargeOC": BmsFlags.ALARM_CHARGE_OC,
    "PACK_AlmDischargeOC": BmsFlags.ALARM_DISCHARGE_OC,
    "PACK_AlmShortCircuit": BmsFlags.ALARM_SHORT_CIRCUIT,
    "PACK_AlmInternal": BmsFlags.ALARM_INTERNAL,
}
_CONTACTOR: dict[int, ContactorRequest] = {int(c): c for c in ContactorRequest}


def _load_db() -> Database:
    text = importlib.resources.files("bmsgw").joinpath("dbc/pack.dbc").read_text(encoding="ascii")
    db = cantools.database.load_string(text, database_format="dbc")
    assert isinstance(db, Database)
    return db


class _Field(NamedTuple):
    """Bit-level view of one little-endian signal: ((raw >> shift) & mask), sign-extended, scaled."""

    shift: int
    mask: int
    sign: int  # sign bit for signed signals, else 0 (never set after masking)
    div: float  # physical = raw / div + offset
    offset: float
    absent: int | None  # masked raw value meaning "not present/available" (the DBC's single VAL_)


def _field(sig: Signal) -> _Field:
    if sig.byte_order != "little_endian" or sig.is_float:
        raise RuntimeError(f"pack.dbc: {sig.name} must be a little-endian integer signal")
    inv = 1.0 / sig.scale
    div = float(round(inv)) if abs(inv - round(inv)) < 1e-9 else inv
    mask = (1 << sig.length) - 1
    choices = list(sig.choices or ())
    absent = int(choices[0]) & mask if len(choices) == 1 else None
    sign = 1 << (sig.length - 1) if sig.is_signed else 0
    return _Field(sig.start, mask, sign, div, float(sig.offset), absent)


def _limits(sig: Signal) -> tuple[float, float]:
    if sig.minimum is None or sig.maximum is None:
        raise RuntimeError(f"pack.dbc: {sig.name} needs a [min|max] range")
    return float(sig.minimum), float(sig.maximum)


def _groups(msg: Message) -> _Groups:
    """Multiplexer name and, per group value 0..n-1, its value signals in bit order."""
    (node,) = [n for n in msg.signal_tree if isinstance(n, dict)]
    ((mux, tree),) = node.items()
    if sorted(tree) != list(range(len(tree))):
        raise RuntimeError(f"pack.dbc: {msg.name} groups must be 0..n-1")
    start = {s.name: s.start for s in msg.signals}
    return mux, [sorted(tree[g], key=start.__getitem__) for g in range(len(tree))]


def _flag_table(msg: Message, mapping: dict[str, BmsFlags]) -> tuple[int, int, tuple[BmsFlags, ...]]:
    """(shift, mask, table): table[(raw >> shift) & mask] is the BmsFlags carried by those bits."""
    sigs = {name: msg.get_signal_by_name(name) for name in mapping}
    if any(s.length != 1 for s in sigs.values()):
        raise RuntimeError(f"pack.dbc: {msg.name} flag signals must be 1 bit")
    lo = min(s.start for s in sigs.values())
    width = max(s.start for s in sigs.values()) - lo + 1
    table = []
    for value in range(1 << width):
        f = BmsFlags.NONE
        for name, flag in mapping.items():
            if value >> (sigs[name].start - lo) & 1:
                f |= flag
        table.append(f)
    return lo, (1 << width) - 1, tuple(table)


def _status_decoder(msg: Message) -> _Decoder:
    vs, vm, _, vd, vo, _ = _field(msg.get_signal_by_name("PACK_Voltage"))
    cs, cm, csign, cd, co, _ = _field(msg.get_signal_by_name("PACK_Current"))
    als, alm, *_ = _field(msg.get_signal_by_name("PACK_Alive"))
    fs, fm, ft = _flag_table(msg, _STATUS_FLAGS)
    cfull = csign << 1

    def dec(module: int, raw: int) -> PackMessage:
        cur = (raw >> cs) & cm
        if cur & csign:
            cur -= cfull
        return PackStatusMsg(
            module, ((raw >> vs) & vm) / vd + vo, cur / cd + co, ft[(raw >> fs) & fm], (raw >> als) & alm
        )

    return dec


def _pct(sig: Signal) -> Callable[[int], float | None]:
    """Percent signal -> fraction 0..1 via a lookup table; None for n/a or above the DBC maximum."""
    s, m, _, d, o, absent = _field(sig)
    top = round((_limits(sig)[1] - o) * d)
    table = tuple(None if r == absent or r > top else (r / d + o) / 100.0 for r in range(m + 1))
    return lambda raw: table[(raw >> s) & m]


def _info_decoder(msg: Message) -> _Decoder:
    ns, nm, *_ = _field(msg.get_signal_by_name("PACK_CellCount"))
    ts, tm, *_ = _field(msg.get_signal_by_name("PACK_TempCount"))
    fs, fm, ft = _flag_table(msg, _ALARM_FLAGS)
    soc = _pct(msg.get_signal_by_name("PACK_SocReported"))
    soh = _pct(msg.get_signal_by_name("PACK_SohReported"))

    def dec(module: int, raw: int) -> PackMessage:
        return PackInfoMsg(
            module, (raw >> ns) & nm, (raw >> ts) & tm, ft[(raw >> fs) & fm], soc(raw), soh(raw)
        )

    return dec


def _group_decoder(
    msg: Message, make: Callable[[int, int, tuple[float | None, ...]], PackMessage]
) -> _Decoder:
    mux, groups = _groups(msg)
    fields = [[_field(msg.get_signal_by_name(n)) for n in names] for names in groups]
    proto = fields[0][0]
    if any(f._replace(shift=0) != proto._replace(shift=0) for fs in fields for f in fs):
        raise RuntimeError(f"pack.dbc: {msg.name} multiplexed signals must share one encoding")
    shifts = {g: tuple(f.shift for f in fs) for g, fs in enumerate(fields)}
    gs, gm, *_ = _field(msg.get_signal_by_name(mux))
    _, m, sign, d, o, absent = proto
    full = sign << 1
    name = msg.name

    def dec(module: int, raw: int) -> PackMessage:
        g = (raw >> gs) & gm
        sh = shifts.get(g)
        if sh is None:
            raise PackCanError(f"{name}: group {g} out of range 0..{len(shifts) - 1}")
        vals: list[float | None] = []
        for s in sh:
            x = (raw >> s) & m
            if x == absent:
                vals.append(None)
            else:
                if x & sign:
                    x -= full
                vals.append(x / d + o)
        return make(module, g, tuple(vals))

    return dec


def _command_decoder(msg: Message) -> _Decoder:
    bs, bm, *_ = _field(msg.get_signal_by_name("PACK_CmdBalanceMask"))
    cs, cm, *_ = _field(msg.get_signal_by_name("PACK_CmdContactor"))
    als, alm, *_ = _field(msg.get_signal_by_name("PACK_CmdAlive"))
    name = msg.name

    def dec(module: int, raw: int) -> PackMessage:
        c = _CONTACTOR.get((raw >> cs) & cm)
        if c is None:
            raise PackCanError(f"{name}: reserved contactor request {(raw >> cs) & cm}")
        return GatewayCommandMsg(module, (raw >> bs) & bm, c, (raw >> als) & alm)

    return dec


def _transfer_decoder(msg: Message) -> _Decoder:
    slots = [tuple(_field(msg.get_signal_by_name(n)) for n in names) for names in _transfer_slots(msg)]
    als, alm, *_ = _field(msg.get_signal_by_name(_XFER_ALIVE))
    top = int(_limits(msg.get_signal_by_name(_transfer_slots(msg)[0][0]))[1])  # highest cell number
    name = msg.name

    def dec(module: int, raw: int) -> PackMessage:
        transfers: list[Transfer] = []
        used: set[int] = set()
        for src, dst, cur in slots:
            a, b = (raw >> src.shift) & src.mask, (raw >> dst.shift) & dst.mask
            if a == src.absent and b == dst.absent:
                continue
            if a == src.absent or b == dst.absent or a > top or b > top or a in used or b in used or a == b:
                raise PackCanError(f"{name}: invalid transfer cells {a} -> {b}")
            used |= {a, b}
            transfers.append(Transfer(a - 1, b - 1, ((raw >> cur.shift) & cur.mask) / cur.div + cur.offset))
        return BalanceTransferMsg(module, tuple(transfers), (raw >> als) & alm)

    return dec


def _transfer_slots(msg: Message) -> list[tuple[str, str, str]]:
    """(from-cell, to-cell, current) signal names per transfer slot, slot 1 first."""
    n = sum(1 for s in msg.signals if s.name.startswith("PACK_XferFromCell"))
    return [(f"PACK_XferFromCell{k}", f"PACK_XferToCell{k}", f"PACK_XferCurrent{k}") for k in range(1, n + 1)]


_BUILDERS: dict[str, Callable[[Message], _Decoder]] = {
    "PackStatus": _status_decoder,
    "PackInfo": _info_decoder,
    "CellVoltages": lambda m: _group_decoder(m, CellVoltagesMsg),
    "Temperatures": lambda m: _group_decoder(m, TemperaturesMsg),
    "GatewayCommand": _command_decoder,
    "GatewayBalanceTransfer": _transfer_decoder,
}


def _index(db: Database) -> tuple[dict[int, tuple[int, _Decoder]], dict[tuple[str, int], Message]]:
    """frame id -> (module, decoder), and (kind, module) -> Message; message names are <Kind>_M<nn>."""
    decoders: dict[int, tuple[int, _Decoder]] = {}
    by_kind: dict[tuple[str, int], Message] = {}
    for msg in db.messages:
        kind, _, mod = msg.name.rpartition("_M")
        if msg.is_extended_frame or msg.length != 8 or kind not in _BUILDERS:
            raise RuntimeError(f"pack.dbc: unexpected message {msg.name}")
        decoders[msg.frame_id] = (int(mod), _BUILDERS[kind](msg))
        by_kind[kind, int(mod)] = msg
    return decoders, by_kind


_DB = _load_db()
_DECODERS, _BY_KIND = _index(_DB)
_SIGNALS: dict[str, dict[str, Signal]] = {m.name: {s.name: s for s in m.signals} for m in _DB.messages}
_CELL_GROUPS = _groups(_BY_KIND["CellVoltages", 0])[1]
_TEMP_GROUPS = _groups(_BY_KIND["Temperatures", 0])[1]
_CELLS_PER_GROUP = len(_CELL_GROUPS[0])
_TEMPS_PER_GROUP = len(_TEMP_GROUPS[0])
_INFO_FRESH_S = 3 * (_BY_KIND["PackInfo", 0].cycle_time or 1000) / 1000.0  # three PackInfo periods

MODULES: int = 1 + max(mod for _, mod in _BY_KIND)
MAX_CELLS: int = _CELLS_PER_GROUP * len(_CELL_GROUPS)
MAX_TEMPS: int = _TEMPS_PER_GROUP * len(_TEMP_GROUPS)
_XFER_SLOTS = _transfer_slots(_BY_KIND["GatewayBalanceTransfer", 0])
TRANSFER_SLOTS: int = len(_XFER_SLOTS)


def _store(vals: tuple[float | None, ...], base: int, dst: list[float], rx: list[float], t: float) -> None:
    """Copy a group's values into dst[base:] (extra values dropped); absent entries are never fresh."""
    i = base
    n = len(dst)
    for v in vals:
        if i >= n:
            return
        if v is None:
            rx[i] = -math.inf
        else:
            dst[i] = v
            rx[i] = t
        i += 1


def _message(kind: str, module: int) -> tuple[Message, dict[str, Signal]]:
    msg = _BY_KIND.get((kind, module))
    if msg is None:
        raise ValueError(f"module must be 0..{MODULES - 1}, got {module}")
    return msg, _SIGNALS[msg.name]


def _to_raw(sig: Signal, value: float, *, absent: bool = False) -> int:
    """Physical -> raw, rounded and clamped to the DBC range; NaN -> the absent code if `absent`."""
    value = float(value)  # also accepts numpy scalars
    if math.isnan(value):
        if absent and sig.choices and len(sig.choices) == 1:
            return int(next(iter(sig.choices)))
        raise ValueError(f"{sig.name}: NaN cannot be encoded")
    scale, offset = float(sig.scale), float(sig.offset)
    lo_phys, hi_phys = _limits(sig)
    lo = round((lo_phys - offset) / scale)
    hi = round((hi_phys - offset) / scale)
    x = (value - offset) / scale
    return lo if x <= lo else hi if x >= hi else round(x)


def _wrap(sig: Signal, value: int) -> int:
    return int(value) & ((1 << sig.length) - 1)


def _flags_to_raw(mapping: dict[str, BmsFlags], flags: BmsFlags) -> dict[str, int]:
    return {name: int(bool(flags & flag)) for name, flag in mapping.items()}


def _encode(msg: Message, raw: dict[str, int]) -> Frame:
    return Frame(msg.frame_id, bytes(msg.encode(raw, scaling=False, strict=True)))


def _encode_groups(kind: str, module: int, values: Sequence[float | None] | F64) -> list[Frame]:
    """Frames for groups 0..ceil(len/per)-1; missing tail entries, None and NaN encode as absent."""
    msg, sig = _message(kind, module)
    mux, groups = _groups(msg)
    per = len(groups[0])
    if len(values) > per * len(groups):
        raise ValueError(f"{kind}: at most {per * len(groups)} values, got {len(values)}")
    frames = []
    for g in range(-(-len(values) // per)):
        raw = {mux: g}
        for k, name in enumerate(groups[g]):
            i = g * per + k
            v = values[i] if i < len(values) else None
            raw[name] = _to_raw(sig[name], math.nan if v is None else v, absent=True)
        frames.append(_encode(msg, raw))
    return frames
