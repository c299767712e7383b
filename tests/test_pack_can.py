"""Tests for the generic pack CAN protocol: dbc/pack.dbc, its generator, and bmsgw.bms.pack_can."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import cantools
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmsgw.bms import pack_can as pc
from bmsgw.bms.pack_can import (
    TRANSFER_SLOTS,
    BalanceTransferMsg,
    CellVoltagesMsg,
    ContactorRequest,
    GatewayCommandMsg,
    PackAssembler,
    PackCanError,
    PackInfoMsg,
    PackMessage,
    PackStatusMsg,
    TemperaturesMsg,
    decode,
    encode_cells,
    encode_command,
    encode_info,
    encode_status,
    encode_temps,
    encode_transfer,
)
from bmsgw.model import BmsFlags, Frame, Transfer

ROOT = Path(__file__).resolve().parents[1]
DBC_PATH = ROOT / "dbc" / "pack.dbc"
F = BmsFlags
STATUS_BITS = F.CHARGE_FET | F.DISCHARGE_FET | F.BALANCING | F.CONTACTOR_CLOSED | F.BMS_FAULT
ALARM_BITS = BmsFlags(0xFF00)
KINDS = {
    0: "PackStatus",
    1: "PackInfo",
    2: "CellVoltages",
    3: "Temperatures",
    8: "GatewayCommand",
    9: "GatewayBalanceTransfer",
}
FROM_GATEWAY = {"GatewayCommand", "GatewayBalanceTransfer"}
PACK_IDS = [0x400 + m * 0x10 + k for m in range(16) for k in KINDS]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_pack_dbc", ROOT / "dbc" / "make_pack_dbc.py")
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, mod)  # dataclasses look their module up while being built
    spec.loader.exec_module(mod)
    return mod


def _one(frame: Frame) -> PackMessage:
    msg = decode(frame.id, frame.data)
    assert msg is not None
    return msg


# --------------------------------------------------------------------------------------------------
# The DBC and its generator
# --------------------------------------------------------------------------------------------------


def test_committed_dbc_equals_generator_output() -> None:
    gen = _generator()
    assert DBC_PATH.read_text(encoding="ascii") == gen.render(), "run: python dbc/make_pack_dbc.py"
    assert gen.render() == gen.render()  # deterministic


def test_dbc_loads_in_cantools_with_all_messages() -> None:
    db = _load_dbc()
    assert db.buses[0].baudrate == 500_000
    assert sorted(m.frame_id for m in db.messages) == sorted(PACK_IDS)
    cycles = {
        "PackStatus": 100,
        "PackInfo": 1000,
        "CellVoltages": 200,
        "Temperatures": 500,
        "GatewayCommand": 1000,
        "GatewayBalanceTransfer": 1000,
    }
    for msg in db.messages:
        module, kind = divmod(msg.frame_id - 0x400, 0x10)
        assert msg.name == f"{KINDS[kind]}_M{module:02d}"
        assert msg.length == 8
        assert not msg.is_extended_frame
        assert msg.cycle_time == cycles[KINDS[kind]]
        assert msg.comment
        assert all(s.name.startswith("PACK_") and s.byte_order == "little_endian" for s in msg.signals)
        assert all(s.comment for s in msg.signals)
        assert msg.is_multiplexed() == (KINDS[kind] in {"CellVoltages", "Temperatures"})
        expected_sender = "GATEWAY" if KINDS[kind] in FROM_GATEWAY else f"PACK_{module:02d}"
        assert msg.senders == [expected_sender]
    cells = db.get_message_by_name("CellVoltages_M05")
    assert cells.signal_tree[0] == {
        "PACK_CellGroup": {g: [f"PACK_Cell{4 * g + k:02d}" for k in range(1, 5)] for g in range(8)}
    }
    temps = db.get_message_by_name("Temperatures_M05")
    assert temps.signal_tree[0] == {
        "PACK_TempGroup": {g: [f"PACK_Temp{3 * g + k:02d}" for k in range(1, 4)] for g in range(4)}
    }


def test_codec_constants_follow_the_dbc() -> None:
    assert (pc.MODULES, pc.MAX_CELLS, pc.MAX_TEMPS) == (16, 32, 12)


# --------------------------------------------------------------------------------------------------
# Golden bytes, written by hand from docs/pack-protocol.md (a silent layout change must fail here)
# --------------------------------------------------------------------------------------------------

GOLDEN: list[tuple[Frame, PackMessage]] = [
    # 0x400 module 0 PackStatus: 51.20 V = 5120 = 0x1400; -12.345 A = -12345 = 0xFFFFCFC7;
    # flags chg+dchg FET + contactor = 0x0B; alive 7.
    (
        Frame(0x400, bytes.fromhex("0014C7CFFFFF0B07")),
        PackStatusMsg(0, 51.20, -12.345, F.CHARGE_FET | F.DISCHARGE_FET | F.CONTACTOR_CLOSED, 7),
    ),
    # 0x411 module 1 PackInfo: 16 cells, 4 sensors, alarms cell UV (bit1) + short circuit (bit6) = 0x42,
    # SOC 87.5 % = 175 = 0xAF, SOH not available = 0xFF.
    (
        Frame(0x411, bytes.fromhex("100442AFFF000000")),
        PackInfoMsg(1, 16, 4, F.ALARM_CELL_UV | F.ALARM_SHORT_CIRCUIT, 0.875, None),
    ),
    # 0x422 module 2 CellVoltages group 3 (cells 13..16): 3300 mV = 0xCE4 @8, 3301 = 0xCE5 @22,
    # 2500 = 0x9C4 @36, 0x3FFF (not present) @50.
    (
        Frame(0x422, bytes.fromhex("03E44C39439CFCFF")),
        CellVoltagesMsg(2, 3, (3.300, 3.301, 2.500, None)),
    ),
    # 0x4F3 module 15 Temperatures group 1 (sensors 4..6): 25.0 = 0x00FA, -10.5 = -105 = 0xFF97,
    # absent 0x8000, reserved byte 7 = 0.
    (
        Frame(0x4F3, bytes.fromhex("01FA0097FF008000")),
        TemperaturesMsg(15, 1, (25.0, -10.5, None)),
    ),
    # 0x408 module 0 GatewayCommand: bleed cells 1 and 16 = 0x00008001; contactor open (2) in bits 32-33,
    # alive 9 in bits 36-39 -> byte 4 = 0x92.
    (
        Frame(0x408, bytes.fromhex("0180000092000000")),
        GatewayCommandMsg(0, 0x8001, ContactorRequest.OPEN, 9),
    ),
    # 0x459 module 5 GatewayBalanceTransfer: slot 1 cell 16 -> cell 3 at 2.00 A = 200 = 0x0C8 in bits
    # 16-27, alive 6 in bits 28-31 -> bytes 2-3 = C8 60; slot 2 cell 1 -> cell 32 at 40.95 A = 0xFFF.
    (
        Frame(0x459, bytes.fromhex("1003C8600120FF0F")),
        BalanceTransferMsg(5, (Transfer(15, 2, 2.0), Transfer(0, 31, 40.95)), 6),
    ),
    # 0x4F9 module 15: both slots unused (stop all transfers), alive 15.
    (Frame(0x4F9, bytes.fromhex("000000F000000000")), BalanceTransferMsg(15, (), 15)),
]


@pytest.mark.parametrize(("frame", "msg"), GOLDEN)
def test_golden_frame_decodes(frame: Frame, msg: PackMessage) -> None:
    assert decode(frame.id, frame.data) == msg


def test_golden_frames_encode() -> None:
    enc = [
        encode_status(0, 51.20, -12.345, F.CHARGE_FET | F.DISCHARGE_FET | F.CONTACTOR_CLOSED, 7),
        encode_info(1, 16, 4, F.ALARM_CELL_UV | F.ALARM_SHORT_CIRCUIT, 0.875, None),
        encode_cells(2, [3.3] * 12 + [3.300, 3.301, 2.500])[3],
        encode_temps(15, [0.0, 0.0, 0.0, 25.0, -10.5, None])[1],
        encode_command(0, 0x8001, ContactorRequest.OPEN, 9),
        encode_transfer(5, [Transfer(15, 2, 2.0), Transfer(0, 31, 40.95)], 6),
        encode_transfer(15, (), 15),
    ]
    assert enc == [frame for frame, _ in GOLDEN]


# --------------------------------------------------------------------------------------------------
# Round trips and edge values
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("voltage", "current"),
    [(0.0, 0.0), (655.35, 2147483.647), (48.0, -2147483.648), (51.2, -0.001), (51.2, 0.001), (52.1, -250.5)],
)
def test_status_round_trip(voltage: float, current: float) -> None:
    msg = _one(encode_status(4, voltage, current, F.BALANCING | F.BMS_FAULT, 15))
    assert isinstance(msg, PackStatusMsg)
    assert (msg.module, msg.flags, msg.alive) == (4, F.BALANCING | F.BMS_FAULT, 15)
    assert msg.voltage == pytest.approx(voltage)
    assert msg.current == pytest.approx(current)


def test_status_ignores_alarm_bits_and_wraps_alive() -> None:
    msg = _one(encode_status(0, 50.0, 1.0, F.CHARGE_FET | F.ALARM_CELL_OV, 18))
    assert isinstance(msg, PackStatusMsg)
    assert msg.flags is F.CHARGE_FET
    assert msg.alive == 2


def test_status_clamps_to_field() -> None:
    msg = _one(encode_status(0, 1000.0, -1e12, F.NONE, 0))
    assert isinstance(msg, PackStatusMsg)
    assert (msg.voltage, msg.current) == (655.35, -2147483.648)
    msg = _one(encode_status(0, -5.0, math.inf, F.NONE, 0))
    assert isinstance(msg, PackStatusMsg)
    assert (msg.voltage, msg.current) == (0.0, 2147483.647)


@pytest.mark.parametrize(("soc", "soh"), [(None, None), (0.0, 1.0), (1.0, 0.0), (0.5, 0.995), (0.0025, None)])
def test_info_round_trip(soc: float | None, soh: float | None) -> None:
    msg = _one(encode_info(9, 32, 12, ALARM_BITS, soc, soh))
    assert isinstance(msg, PackInfoMsg)
    assert (msg.module, msg.cell_count, msg.temp_count, msg.alarms) == (9, 32, 12, ALARM_BITS)
    for got, want in ((msg.soc_reported, soc), (msg.soh_reported, soh)):
        if want is None:
            assert got is None
        else:
            assert got == pytest.approx(want, abs=0.0025)


def test_info_ignores_status_bits_and_clamps_percent() -> None:
    msg = _one(encode_info(0, 8, 2, F.BMS_FAULT | F.ALARM_OVERTEMP, 1.7, -0.2))
    assert isinstance(msg, PackInfoMsg)
    assert msg.alarms is F.ALARM_OVERTEMP
    assert (msg.soc_reported, msg.soh_reported) == (1.0, 0.0)
    msg = _one(encode_info(0, 8, 2, F.NONE, math.nan, None))
    assert isinstance(msg, PackInfoMsg)
    assert msg.soc_reported is None


@pytest.mark.parametrize("raw", [201, 254])
def test_info_percent_above_100_reads_as_not_available(raw: int) -> None:
    msg = decode(0x401, bytes([16, 4, 0, raw, raw, 0, 0, 0]))
    assert isinstance(msg, PackInfoMsg)
    assert (msg.soc_reported, msg.soh_reported) == (None, None)


def test_cells_round_trip_with_absent_and_edges() -> None:
    cells: list[float | None] = [3.3, 0.0, 16.382, None, 2.5, math.nan, 3.4567]
    frames = encode_cells(7, cells)
    assert [f.id for f in frames] == [0x472, 0x472]
    msgs = [_one(f) for f in frames]
    assert msgs == [
        CellVoltagesMsg(7, 0, (3.3, 0.0, 16.382, None)),
        CellVoltagesMsg(7, 1, (2.5, None, 3.457, None)),  # rounded to 1 mV; last slot unused -> 0x3FFF
    ]
    assert frames[1].data[-2:] == b"\xfc\xff"  # the unused 4th cell is 0x3FFF


def test_cells_clamp_and_group_count() -> None:
    assert len(encode_cells(0, [3.3] * 16)) == 4
    assert len(encode_cells(0, [3.3] * 17)) == 5
    assert len(encode_cells(0, [3.3] * 32)) == 8
    assert encode_cells(0, []) == []
    (msg,) = [_one(f) for f in encode_cells(0, [-1.0, 20.0, 16.3824, math.inf])]
    assert isinstance(msg, CellVoltagesMsg)
    assert msg.voltages == (0.0, 16.382, 16.382, 16.382)  # never the 0x3FFF absent code


def test_temps_round_trip_with_absent_and_edges() -> None:
    temps: list[float | None] = [-40.0, 125.0, None, 3276.7, -3276.7, 25.04, 9999.0, -9999.0]
    msgs = [_one(f) for f in encode_temps(11, temps)]
    assert msgs == [
        TemperaturesMsg(11, 0, (-40.0, 125.0, None)),
        TemperaturesMsg(11, 1, (3276.7, -3276.7, 25.0)),
        TemperaturesMsg(11, 2, (3276.7, -3276.7, None)),  # clamped, never the 0x8000 absent code
    ]


@pytest.mark.parametrize("contactor", list(ContactorRequest))
def test_command_round_trip(contactor: ContactorRequest) -> None:
    msg = _one(encode_command(15, 0xFFFFFFFF, contactor, 15))
    assert msg == GatewayCommandMsg(15, 0xFFFFFFFF, contactor, 15)
    assert isinstance(msg, GatewayCommandMsg)
    assert msg.contactor is contactor


def test_command_masks_and_wraps() -> None:
    msg = _one(encode_command(0, (1 << 40) | 0b101, ContactorRequest.NONE, 16))
    assert msg == GatewayCommandMsg(0, 0b101, ContactorRequest.NONE, 0)


def test_encoders_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match="module"):
        encode_status(16, 50.0, 0.0, F.NONE, 0)
    with pytest.raises(ValueError, match="module"):
        encode_cells(-1, [3.3])
    with pytest.raises(ValueError, match="at most 32"):
        encode_cells(0, [3.3] * 33)
    with pytest.raises(ValueError, match="at most 12"):
        encode_temps(0, [20.0] * 13)
    with pytest.raises(ValueError, match="NaN"):
        encode_status(0, math.nan, 0.0, F.NONE, 0)
    with pytest.raises(ValueError):  # noqa: PT011 (the enum's own message)
        encode_command(0, 0, 3, 0)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# Decode: foreign ids and malformed frames
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame_id", [0x000, 0x351, 0x3FF, 0x404, 0x407, 0x40A, 0x40F, 0x4F4, 0x4FF, 0x500, -1, 1 << 29]
)
def test_foreign_ids_are_none(frame_id: int) -> None:
    assert decode(frame_id, bytes(8)) is None


def test_extended_frames_are_none() -> None:
    assert decode(0x400, bytes(8), extended=True) is None


@pytest.mark.parametrize("length", [0, 1, 7, 9, 64])
@pytest.mark.parametrize("frame_id", [0x400, 0x4A1, 0x402, 0x4F3, 0x408, 0x4C9])
def test_wrong_dlc_raises(frame_id: int, length: int) -> None:
    with pytest.raises(PackCanError, match="8 data bytes"):
        decode(frame_id, bytes(length))


@pytest.mark.parametrize(
    ("frame_id", "data"),
    [
        (0x402, bytes([8, 0, 0, 0, 0, 0, 0, 0])),
        (0x4E2, bytes([255, 0, 0, 0, 0, 0, 0, 0])),
        (0x403, bytes([4, 0, 0, 0, 0, 0, 0, 0])),
        (0x408, bytes([0, 0, 0, 0, 3, 0, 0, 0])),
        (0x409, bytes([1, 0, 0, 0, 0, 0, 0, 0])),  # transfer slot with a from-cell but no to-cell
        (0x409, bytes([0, 2, 0, 0, 0, 0, 0, 0])),  # ... a to-cell but no from-cell
        (0x409, bytes([33, 1, 0, 0, 0, 0, 0, 0])),  # cell 33
        (0x409, bytes([4, 4, 0, 0, 0, 0, 0, 0])),  # a cell to itself
        (0x419, bytes([1, 2, 0, 0, 2, 3, 0, 0])),  # cell 2 in both slots
    ],
)
def test_bad_multiplexer_or_enum_raises(frame_id: int, data: bytes) -> None:
    with pytest.raises(PackCanError):
        decode(frame_id, data)


def test_reserved_bits_are_ignored() -> None:
    base = _one(Frame(0x400, bytes.fromhex("0014C7CFFFFF0B07")))
    assert decode(0x400, bytes.fromhex("0014C7CFFFFFEBF7")) == base
    assert decode(0x411, bytes.fromhex("100442AFFFFFFFFF")) == _one(
        Frame(0x411, bytes.fromhex("100442AFFF000000"))
    )
    assert decode(0x4F3, bytes.fromhex("01FA0097FF0080FF")) == TemperaturesMsg(15, 1, (25.0, -10.5, None))


def test_pack_can_error_is_a_value_error() -> None:
    assert issubclass(PackCanError, ValueError)


# --------------------------------------------------------------------------------------------------
# Property tests
# --------------------------------------------------------------------------------------------------

any_id = st.one_of(st.sampled_from(PACK_IDS), st.integers(0, 0x7FF), st.integers(-(1 << 40), 1 << 40))


@given(frame_id=any_id, data=st.binary(min_size=0, max_size=8), extended=st.booleans())
@settings(max_examples=1000)
def test_random_frames_raise_only_pack_can_error(frame_id: int, data: bytes, extended: bool) -> None:
    with contextlib.suppress(PackCanError):
        decode(frame_id, data, extended=extended)


def _load_dbc() -> cantools.database.can.Database:
    db = cantools.database.load_file(str(DBC_PATH))
    assert isinstance(db, cantools.database.can.Database)
    return db


_REF_DB = _load_dbc()


def _reference_decode(frame_id: int, data: bytes) -> PackMessage | None:
    """Straightforward cantools decoder: the baseline the compiled fast path is checked against."""
    try:
        msg = _REF_DB.get_message_by_frame_id(frame_id)
    except KeyError:
        return None
    if len(data) != 8:
        raise PackCanError("dlc")
    try:
        d: Any = msg.decode(data, decode_choices=False)
    except cantools.database.DecodeError as exc:
        raise PackCanError(str(exc)) from exc
    module = (frame_id - 0x400) >> 4
    kind = KINDS[frame_id & 0xF]
    if kind == "PackStatus":
        names = ["PACK_ChgFetOn", "PACK_DchgFetOn", "PACK_Balancing", "PACK_ContactorClosed", "PACK_BmsFault"]
        flags = BmsFlags(sum(d[n] << i for i, n in enumerate(names)))
        return PackStatusMsg(module, d["PACK_Voltage"], d["PACK_Current"], flags, d["PACK_Alive"])
    if kind == "PackInfo":
        names = [
            "CellOV",
            "CellUV",
            "OverTemp",
            "UnderTemp",
            "ChargeOC",
            "DischargeOC",
            "ShortCircuit",
            "Internal",
        ]
        alarms = BmsFlags(sum(d[f"PACK_Alm{n}"] << (8 + i) for i, n in enumerate(names)))

        def pct(v: float) -> float | None:
            return None if v > 100 else v / 100

        soc, soh = pct(d["PACK_SocReported"]), pct(d["PACK_SohReported"])
        return PackInfoMsg(module, d["PACK_CellCount"], d["PACK_TempCount"], alarms, soc, soh)
    if kind == "CellVoltages":
        g = d["PACK_CellGroup"]
        cells = [d[f"PACK_Cell{4 * g + k:02d}"] for k in range(1, 5)]
        return CellVoltagesMsg(module, g, tuple(None if v == 16.383 else v for v in cells))
    if kind == "Temperatures":
        g = d["PACK_TempGroup"]
        temps = [d[f"PACK_Temp{3 * g + k:02d}"] for k in range(1, 4)]
        return TemperaturesMsg(module, g, tuple(None if v == -3276.8 else v for v in temps))
    if kind == "GatewayBalanceTransfer":
        transfers = []
        for k in (1, 2):
            a, b = d[f"PACK_XferFromCell{k}"], d[f"PACK_XferToCell{k}"]
            if (a, b) != (0, 0):
                transfers.append(Transfer(a - 1, b - 1, d[f"PACK_XferCurrent{k}"]))
        cells = [c for tr in transfers for c in (tr.source, tr.sink)]
        if len(set(cells)) != len(cells) or not all(0 <= c < 32 for c in cells):
            raise PackCanError("transfer cells")
        return BalanceTransferMsg(module, tuple(transfers), d["PACK_XferAlive"])
    if d["PACK_CmdContactor"] == 3:
        raise PackCanError("contactor")
    contactor = ContactorRequest(d["PACK_CmdContactor"])
    return GatewayCommandMsg(module, d["PACK_CmdBalanceMask"], contactor, d["PACK_CmdAlive"])


def _close(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if dataclasses.is_dataclass(a) and not isinstance(a, type) and type(a) is type(b):  # e.g. Transfer
        return all(_close(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    return a == b and type(a) is type(b)


@given(
    frame_id=st.sampled_from(PACK_IDS),
    data=st.one_of(
        st.binary(min_size=8, max_size=8),
        st.tuples(st.integers(0, 8), st.binary(min_size=7, max_size=7)).map(lambda t: bytes([t[0]]) + t[1]),
    ),
)
@settings(max_examples=2000)
def test_fast_path_matches_cantools(frame_id: int, data: bytes) -> None:
    try:
        want = _reference_decode(frame_id, data)
    except PackCanError:
        with pytest.raises(PackCanError):
            decode(frame_id, data)
        return
    got = decode(frame_id, data)
    assert type(got) is type(want)
    for field in type(want).__slots__:  # type: ignore[union-attr]
        assert _close(getattr(got, field), getattr(want, field)), (field, got, want)


module_st = st.integers(0, 15)
status_flags_st = st.builds(BmsFlags, st.integers(0, 0x1F))
alarm_flags_st = st.builds(lambda v: BmsFlags(v << 8), st.integers(0, 0xFF))


@given(
    module=module_st,
    voltage=st.floats(0, 655.35),
    current=st.floats(-2147483.648, 2147483.647),
    flags=status_flags_st,
    alive=st.integers(0, 15),
)
def test_status_values_round_trip(
    module: int, voltage: float, current: float, flags: BmsFlags, alive: int
) -> None:
    msg = _one(encode_status(module, voltage, current, flags, alive))
    assert isinstance(msg, PackStatusMsg)
    assert (msg.module, msg.flags, msg.alive) == (module, flags, alive)
    assert abs(msg.voltage - voltage) <= 0.005 + 1e-9
    assert abs(msg.current - current) <= 0.0005 + 1e-6


pct_st = st.one_of(st.none(), st.floats(0.0, 1.0))


@given(
    module=module_st,
    cells=st.integers(0, 32),
    temps=st.integers(0, 12),
    alarms=alarm_flags_st,
    soc=pct_st,
    soh=pct_st,
)
def test_info_values_round_trip(
    module: int, cells: int, temps: int, alarms: BmsFlags, soc: float | None, soh: float | None
) -> None:
    msg = _one(encode_info(module, cells, temps, alarms, soc, soh))
    assert isinstance(msg, PackInfoMsg)
    assert (msg.module, msg.cell_count, msg.temp_count, msg.alarms) == (module, cells, temps, alarms)
    for got, want in ((msg.soc_reported, soc), (msg.soh_reported, soh)):
        assert (got is None) == (want is None)
        if got is not None and want is not None:
            assert abs(got - want) <= 0.0025 + 1e-12


@given(module=module_st, cells=st.lists(st.one_of(st.none(), st.floats(0.0, 16.382)), max_size=32))
def test_cell_values_round_trip(module: int, cells: list[float | None]) -> None:
    got = [v for f in encode_cells(module, cells) for v in _cells_of(_one(f), module)]
    assert len(got) == 4 * math.ceil(len(cells) / 4)
    assert all(v is None for v in got[len(cells) :])
    for g, w in zip(got, cells, strict=False):
        assert (g is None) == (w is None)
        if g is not None and w is not None:
            assert abs(g - w) <= 0.0005 + 1e-9


def _cells_of(msg: PackMessage, module: int) -> tuple[float | None, ...]:
    assert isinstance(msg, CellVoltagesMsg)
    assert msg.module == module
    return msg.voltages


@given(module=module_st, temps=st.lists(st.one_of(st.none(), st.floats(-3276.7, 3276.7)), max_size=12))
def test_temp_values_round_trip(module: int, temps: list[float | None]) -> None:
    got: list[float | None] = []
    for i, f in enumerate(encode_temps(module, temps)):
        msg = _one(f)
        assert isinstance(msg, TemperaturesMsg)
        assert (msg.module, msg.group) == (module, i)
        got += msg.temps
    assert len(got) == 3 * math.ceil(len(temps) / 3)
    for g, w in zip(got, temps, strict=False):
        assert (g is None) == (w is None)
        if g is not None and w is not None:
            assert abs(g - w) <= 0.05 + 1e-9


@given(
    module=module_st,
    mask=st.integers(0, 0xFFFFFFFF),
    contactor=st.sampled_from(ContactorRequest),
    alive=st.integers(0, 15),
)
def test_command_values_round_trip(module: int, mask: int, contactor: ContactorRequest, alive: int) -> None:
    assert _one(encode_command(module, mask, contactor, alive)) == GatewayCommandMsg(
        module, mask, contactor, alive
    )


@given(
    module=module_st,
    cells=st.lists(st.integers(0, 31), min_size=0, max_size=4, unique=True).filter(lambda c: len(c) % 2 == 0),
    currents=st.lists(st.floats(0.0, 40.95), min_size=2, max_size=2),
    alive=st.integers(0, 100),
)
def test_transfer_values_round_trip(module: int, cells: list[int], currents: list[float], alive: int) -> None:
    sent = [Transfer(cells[i], cells[i + 1], currents[i // 2]) for i in range(0, len(cells), 2)]
    msg = _one(encode_transfer(module, sent, alive))
    assert isinstance(msg, BalanceTransferMsg)
    assert (msg.module, msg.alive) == (module, alive % 16)
    assert [(t.source, t.sink) for t in msg.transfers] == [(t.source, t.sink) for t in sent]
    for got, want in zip(msg.transfers, sent, strict=True):
        assert abs(got.current_a - want.current_a) <= 0.005 + 1e-9


@given(data=st.binary(min_size=8, max_size=8), module=module_st)
@settings(max_examples=1000)
def test_transfer_decoder_random_payloads(data: bytes, module: int) -> None:
    """Random payloads decode or raise PackCanError; what decodes is valid and re-encodes to itself."""
    try:
        msg = decode(0x409 + 0x10 * module, data)
    except PackCanError:
        return
    assert isinstance(msg, BalanceTransferMsg)
    assert len(msg.transfers) <= TRANSFER_SLOTS
    cells = [c for t in msg.transfers for c in (t.source, t.sink)]
    assert len(set(cells)) == len(cells)
    assert all(0 <= c < 32 for c in cells)
    assert all(0.0 <= t.current_a <= 40.95 for t in msg.transfers)
    assert _one(encode_transfer(module, msg.transfers, msg.alive)) == msg


def test_transfer_encoder_checks_and_clamps() -> None:
    with pytest.raises(ValueError, match="at most 2"):
        encode_transfer(0, [Transfer(0, 1, 1.0), Transfer(2, 3, 1.0), Transfer(4, 5, 1.0)], 0)
    with pytest.raises(ValueError, match="distinct"):
        encode_transfer(0, [Transfer(0, 1, 1.0), Transfer(1, 3, 1.0)], 0)
    with pytest.raises(ValueError, match="within"):
        encode_transfer(0, [Transfer(0, 32, 1.0)], 0)
    with pytest.raises(ValueError, match=">= 0"):
        encode_transfer(0, [Transfer(0, 1, -1.0)], 0)
    with pytest.raises(ValueError, match=">= 0"):
        encode_transfer(0, [Transfer(0, 1, math.nan)], 0)
    with pytest.raises(ValueError, match="module"):
        encode_transfer(16, [], 0)
    assert _one(encode_transfer(1, [Transfer(3, 4, 99.0)], 0)) == BalanceTransferMsg(
        1, (Transfer(3, 4, 40.95),), 0
    )
    assert TRANSFER_SLOTS == 2


# --------------------------------------------------------------------------------------------------
# PackAssembler
# --------------------------------------------------------------------------------------------------

CELLS6 = [3.301, 3.302, 3.303, 3.304, 3.305, 3.306]
TEMPS4 = [21.0, 22.5, -3.0, 24.0]


def _feed_all(asm: PackAssembler, frames: list[Frame], t: float) -> list[object]:
    return [asm.feed(_one(f), t) for f in frames]


def _data(asm: PackAssembler, module: int, t: float) -> None:
    assert _feed_all(asm, encode_cells(module, CELLS6) + encode_temps(module, TEMPS4), t) == [None] * 4


def test_assembler_emits_complete_sample() -> None:
    asm = PackAssembler(pack=3, module=2, cells=6, temps=4)
    _data(asm, 2, 10.0)
    sample = asm.feed(_one(encode_status(2, 19.83, -5.5, F.CHARGE_FET | F.DISCHARGE_FET, 4)), 10.1)
    assert sample is not None
    assert (sample.pack, sample.t, sample.voltage, sample.current) == (3, 10.1, 19.83, -5.5)
    assert sample.flags is F.CHARGE_FET | F.DISCHARGE_FET
    assert (sample.alive, sample.soc_reported) == (4, None)
    assert sample.cell_v.dtype == np.float64
    assert sample.cell_t.dtype == np.float64
    np.testing.assert_array_equal(sample.cell_v, CELLS6)
    np.testing.assert_array_equal(sample.cell_t, TEMPS4)
    assert not sample.cell_v.flags.writeable
    assert (asm.samples, asm.incomplete, asm.ignored) == (1, 0, 0)
    # Arrays are snapshots: later updates do not leak into an emitted sample.
    _feed_all(asm, encode_cells(2, [3.0] * 6), 10.2)
    np.testing.assert_array_equal(sample.cell_v, CELLS6)


def test_assembler_merges_fresh_info() -> None:
    asm = PackAssembler(pack=0, module=0, cells=6, temps=4)
    _data(asm, 0, 0.0)
    asm.feed(_one(encode_info(0, 6, 4, F.ALARM_CELL_OV | F.ALARM_CHARGE_OC, 0.42, 0.97)), 0.0)
    assert asm.info == PackInfoMsg(0, 6, 4, F.ALARM_CELL_OV | F.ALARM_CHARGE_OC, 0.42, 0.97)
    sample = asm.feed(_one(encode_status(0, 20.0, 1.0, F.BALANCING, 0)), 0.5)
    assert sample is not None
    assert sample.flags == F.BALANCING | F.ALARM_CELL_OV | F.ALARM_CHARGE_OC
    assert sample.soc_reported == pytest.approx(0.42)
    # Info older than 3 s is no longer merged.
    _data(asm, 0, 3.5)
    sample = asm.feed(_one(encode_status(0, 20.0, 1.0, F.BALANCING, 1)), 3.5)
    assert sample is not None
    assert sample.flags is F.BALANCING
    assert sample.soc_reported is None


def test_assembler_fresh_info_without_alarms_keeps_status_flags() -> None:
    asm = PackAssembler(pack=0, module=0, cells=6, temps=4)
    _data(asm, 0, 0.0)
    asm.feed(_one(encode_info(0, 6, 4, F.NONE, 0.5, None)), 0.0)
    sample = asm.feed(_one(encode_status(0, 20.0, 1.0, F.CHARGE_FET | F.BALANCING, 0)), 0.5)
    assert sample is not None
    assert sample.flags is F.CHARGE_FET | F.BALANCING
    assert type(sample.flags) is BmsFlags
    assert sample.soc_reported == 0.5


@pytest.mark.parametrize("stale_frame", [0, 1, 2, 3])  # cell group 0, 1, temp group 0, 1
def test_assembler_withholds_when_a_group_is_stale(stale_frame: int) -> None:
    asm = PackAssembler(pack=0, module=5, cells=6, temps=4, window_s=1.0)
    frames = encode_cells(5, CELLS6) + encode_temps(5, TEMPS4)
    _feed_all(asm, frames, 0.0)
    _feed_all(asm, [f for i, f in enumerate(frames) if i != stale_frame], 1.0)
    status = _one(encode_status(5, 20.0, 0.0, F.NONE, 0))
    assert asm.feed(status, 1.0) is not None  # group from t=0 is exactly window_s old: still fresh
    assert asm.feed(status, 1.01) is None
    assert (asm.samples, asm.incomplete) == (1, 1)
    assert (asm.stale_cells, asm.stale_temps) == ((1, 0) if stale_frame < 2 else (0, 1))
    _feed_all(asm, [frames[stale_frame]], 1.02)
    assert asm.feed(status, 1.03) is not None


def test_assembler_withholds_until_everything_seen() -> None:
    asm = PackAssembler(pack=0, module=1, cells=6, temps=4)
    status = _one(encode_status(1, 20.0, 0.0, F.NONE, 0))
    assert asm.feed(status, 0.0) is None
    _feed_all(asm, encode_cells(1, CELLS6), 0.1)
    assert asm.feed(status, 0.2) is None
    assert (asm.incomplete, asm.stale_cells, asm.stale_temps) == (2, 1, 2)
    _feed_all(asm, encode_temps(1, TEMPS4), 0.3)
    assert asm.feed(status, 0.4) is not None


def test_assembler_absent_configured_cell_withholds() -> None:
    asm = PackAssembler(pack=0, module=0, cells=6, temps=4)
    _data(asm, 0, 0.0)
    _feed_all(asm, encode_cells(0, [*CELLS6[:5], None]), 0.1)
    assert asm.feed(_one(encode_status(0, 20.0, 0.0, F.NONE, 0)), 0.2) is None
    assert asm.stale_cells == 1


def test_assembler_ignores_other_modules_and_commands() -> None:
    asm = PackAssembler(pack=0, module=3, cells=6, temps=4)
    _data(asm, 4, 0.0)  # 4 frames of module 4
    assert asm.feed(_one(encode_status(4, 20.0, 0.0, F.NONE, 0)), 0.1) is None
    assert asm.feed(_one(encode_command(3, 1, ContactorRequest.NONE, 0)), 0.1) is None
    assert asm.feed(_one(encode_transfer(3, [Transfer(0, 1, 1.0)], 0)), 0.1) is None
    assert (asm.ignored, asm.incomplete, asm.samples) == (7, 0, 0)
    _data(asm, 3, 0.2)
    # Groups beyond the configured cells/sensors are not used either.
    _feed_all(asm, encode_cells(3, [3.3] * 12) + encode_temps(3, [20.0] * 9), 0.2)
    assert asm.ignored == 7 + 2
    sample = asm.feed(_one(encode_status(3, 20.0, 0.0, F.NONE, 0)), 0.3)
    assert sample is not None
    assert len(sample.cell_v) == 6
    np.testing.assert_array_equal(sample.cell_t, [20.0] * 4)


def test_assembler_without_temperature_sensors() -> None:
    asm = PackAssembler(pack=1, module=0, cells=4, temps=0)
    _feed_all(asm, encode_cells(0, [3.2] * 4), 0.0)
    sample = asm.feed(_one(encode_status(0, 12.8, 0.0, F.NONE, 0)), 0.1)
    assert sample is not None
    assert sample.cell_t.shape == (0,)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"module": 16},
        {"module": -1},
        {"cells": 0},
        {"cells": 33},
        {"temps": -1},
        {"temps": 13},
        {"window_s": 0.0},
    ],
)
def test_assembler_rejects_bad_config(kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {"pack": 0, "module": 0, "cells": 16, "temps": 4} | kwargs
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        PackAssembler(**args)


def test_simulated_bus_stream() -> None:
    """Two modules interleaved at their DBC cycle times for 3 s: one sample per status once warmed up."""
    asms = [PackAssembler(pack=i, module=m, cells=16, temps=4) for i, m in enumerate((0, 7))]
    emitted = [0, 0]
    for step in range(300):  # 10 ms ticks
        t = step / 100
        for m in (0, 7):
            frames: list[Frame] = []
            if step % 20 == 0:
                frames += encode_cells(m, [3.3 + m / 1000] * 16)
            if step % 50 == 0:
                frames += encode_temps(m, [25.0] * 4)
            if step % 100 == 0:
                frames.append(encode_info(m, 16, 4, F.NONE, 0.5, 1.0))
            if step % 10 == 5:
                frames.append(encode_status(m, 52.8, 10.0, F.CHARGE_FET, step // 10))
            for f in frames:
                msg = _one(f)
                for i, asm in enumerate(asms):
                    sample = asm.feed(msg, t)
                    if sample is not None:
                        emitted[i] += 1
                        assert sample.pack == i
                        assert sample.soc_reported == 0.5
                        assert sample.alive == (step // 10) % 16
    assert emitted == [30, 30]
    assert all(a.incomplete == 0 for a in asms)


def test_encoders_accept_numpy_values() -> None:
    cells = np.array([3.3, np.nan, 3.31], dtype=np.float64)
    assert [_one(f) for f in encode_cells(1, cells)] == [CellVoltagesMsg(1, 0, (3.3, None, 3.31, None))]
    frame = encode_status(1, np.float64(50.0), float(np.float32(-1.5)), F.NONE, int(np.int64(20)))
    assert _one(frame) == PackStatusMsg(1, 50.0, -1.5, F.NONE, 4)


def test_encoded_frames_are_standard_8_byte_frames() -> None:
    frames = [
        encode_status(15, 50.0, 0.0, F.NONE, 0),
        encode_info(15, 16, 4, F.NONE, None, None),
        *encode_cells(15, [3.3] * 32),
        *encode_temps(15, [20.0] * 12),
        encode_command(15, 0, ContactorRequest.NONE, 0),
        encode_transfer(15, (), 0),
    ]
    assert all(len(f.data) == 8 and not f.extended and 0x4F0 <= f.id <= 0x4FF for f in frames)
    assert [f.id & 0xF for f in frames] == [0, 1] + [2] * 8 + [3] * 4 + [8, 9]
