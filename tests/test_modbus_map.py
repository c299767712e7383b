"""The bmsgw register map: layout, docs, values, and write validation (never loosens, never raises)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pytest
from fakes import lim
from hypothesis import given
from hypothesis import strategies as st
from modbus_support import comm_lost, run_pipeline, settings_for

from bmsgw.ems import Command, EmsCommands
from bmsgw.inverter import modbus_map, sunspec
from bmsgw.inverter.modbus_map import CONTROL, CONTROL_BASE, PACK, STATUS, Reg
from bmsgw.inverter.registers import ModbusError, encode
from bmsgw.model import AlarmCode, Reason
from bmsgw.outputs.modbus import decode_write

DOC = Path(__file__).parent.parent / "docs" / "modbus-map.md"


def value(block: list[int], layout: Sequence[Reg], name: str) -> float:
    """Decode one register of a block the way the doc says: raw · 10**exponent (signed where s16/s32)."""
    reg = next(r for r in layout if r.name == name)
    words = block[reg.offset : reg.offset + reg.size]
    raw = words[0] if reg.size == 1 else words[0] << 16 | words[1]
    bits = 16 * reg.size
    if reg.kind.startswith("s") and raw >= 1 << (bits - 1):
        raw -= 1 << bits
    return raw * 10.0**reg.exponent


@pytest.mark.parametrize("layout", [STATUS, PACK, CONTROL])
def test_blocks_are_contiguous(layout: Sequence[Reg]) -> None:
    end = 0
    for reg in layout:
        assert reg.offset == end, reg
        end += reg.size
    assert len({r.name for r in layout}) == len(layout)


def test_every_register_reason_and_alarm_is_documented() -> None:
    doc = DOC.read_text()
    blocks = [(modbus_map.STATUS_BASE, STATUS), (modbus_map.PACK_BASE, PACK), (CONTROL_BASE, CONTROL)]
    for base, layout in blocks:
        for reg in layout:
            row = rf"\|\s*{base + reg.offset}\s*\|\s*`{reg.name}`\s*\|\s*{reg.kind}\s*\|"
            assert re.search(row, doc), (
                f"docs/modbus-map.md lacks the row of {reg.name} at {base + reg.offset}"
            )
    for reason, code in modbus_map.REASON_CODES.items():
        assert re.search(rf"\|\s*{code}\s*\|\s*`{reason.value}`", doc), reason
    for alarm, bit in modbus_map.ALARM_BITS.items():
        assert re.search(rf"\|\s*{bit}\s*\|\s*`{alarm.value}`", doc), alarm


def test_codes_cover_every_reason_and_alarm_once() -> None:
    assert set(modbus_map.REASON_CODES) == set(Reason)
    assert sorted(modbus_map.REASON_CODES.values()) == list(range(len(Reason)))
    assert set(modbus_map.ALARM_BITS) == set(AlarmCode)
    assert sorted(modbus_map.ALARM_BITS.values()) == list(range(len(AlarmCode)))


def test_status_values() -> None:
    state = run_pipeline(settings_for(packs=2)).state
    block = modbus_map.encode_status(state, Command(), 0.0, writes=False)
    assert len(block) == sum(r.size for r in STATUS)
    assert value(block, STATUS, "map_version") == modbus_map.MAP_VERSION
    assert value(block, STATUS, "soc") == pytest.approx(state.soc * 100, abs=0.05)
    assert value(block, STATUS, "voltage") == pytest.approx(state.voltage, abs=0.005)
    assert value(block, STATUS, "current") == pytest.approx(20.0)
    assert value(block, STATUS, "power") == pytest.approx(state.voltage * 20.0, abs=0.5)
    assert value(block, STATUS, "ccl") == pytest.approx(100.0)
    assert value(block, STATUS, "dcl") == pytest.approx(160.0)
    assert value(block, STATUS, "ccl_reason") == modbus_map.REASON_CODES[Reason.CONFIG]
    assert value(block, STATUS, "cell_v_max") == pytest.approx(3.311)
    assert value(block, STATUS, "cell_v_max_at") == 2 << 8 | 5  # pack 2, cell 5
    assert value(block, STATUS, "packs_online") == 2
    flags = int(value(block, STATUS, "flags"))
    assert flags & 1 << modbus_map.F_CHARGE_ENABLE
    assert flags & 1 << modbus_map.F_USABLE
    assert not flags & 1 << modbus_map.F_WRITES


def test_status_fail_safe() -> None:
    state = comm_lost(run_pipeline(settings_for(packs=1)))
    block = modbus_map.encode_status(state, Command(), 0.0, writes=False)
    assert value(block, STATUS, "ccl") == 0
    assert value(block, STATUS, "dcl") == 0
    assert value(block, STATUS, "ccl_reason") == modbus_map.REASON_CODES[Reason.COMM_LOST]
    assert int(value(block, STATUS, "alarms")) & 1 << modbus_map.ALARM_BITS[AlarmCode.COMM_LOST]
    assert value(block, STATUS, "alarm_level") == 2
    assert not int(value(block, STATUS, "flags")) & 1 << modbus_map.F_USABLE


def test_pack_block() -> None:
    state = run_pipeline(settings_for(packs=2)).state
    view = state.packs[1]
    block = modbus_map.encode_pack(view, state, state.t + 2.0, 110.0)
    assert len(block) == modbus_map.PACK_STRIDE == sum(r.size for r in PACK)
    assert value(block, PACK, "status") == 0
    assert value(block, PACK, "cell_v_max") == pytest.approx(3.311)
    assert value(block, PACK, "cell_v_max_cell") == 5
    assert value(block, PACK, "cell_t_max") == pytest.approx(27.0)
    assert value(block, PACK, "age") == 2
    assert value(block, PACK, "capacity_ah") == 110
    assert value(block, PACK, "cells") == 16


def test_control_readback_round_trips() -> None:
    cmd = Command(reserve_soc=0.333, max_charge_a=12.3, max_discharge_a=None, force_charge=True, heartbeat=9)
    block = modbus_map.encode_control(cmd)
    assert block == [9, 333, 123, 0xFFFF, 1, 0]
    assert modbus_map.decode_write(CONTROL_BASE, block, Command()) == cmd


@pytest.mark.parametrize(
    ("address", "values", "error"),
    [
        (CONTROL_BASE + 1, [1001], ModbusError.ILLEGAL_VALUE),  # reserve above 100 %
        (CONTROL_BASE + 4, [2], ModbusError.ILLEGAL_VALUE),
        (CONTROL_BASE + 4, [1, 7], ModbusError.ILLEGAL_VALUE),  # the disconnect value spoils the write
        (CONTROL_BASE + 5, [1, 1], ModbusError.ILLEGAL_ADDRESS),  # runs past the block
        (2, [500], ModbusError.ILLEGAL_ADDRESS),  # SOC is a reading
        (modbus_map.PACK_BASE, [0], ModbusError.ILLEGAL_ADDRESS),
    ],
)
def test_bad_writes(address: int, values: list[int], error: ModbusError) -> None:
    assert decode_write(address, values, Command()) is error


WRITABLE = [CONTROL_BASE + r.offset for r in CONTROL] + [
    sunspec.BATTERY_ADDR + off for off in (9, 10, 19, 20, 50, 51)
]
addresses = st.one_of(
    st.sampled_from(WRITABLE),
    st.integers(0, 0xFFFF),
    st.integers(CONTROL_BASE - 2, CONTROL_BASE + 8),
    st.integers(sunspec.BASE, sunspec.BASE + 400),
)
writes = st.tuples(addresses, st.lists(st.integers(-5, 0x1_0005), min_size=0, max_size=8))


@given(st.lists(writes, max_size=30), st.floats(0.0, 1.0))
def test_random_writes_never_raise_and_never_loosen(seq: list[tuple[int, list[int]]], soc: float) -> None:
    """Any sequence of register writes: each is accepted or refused whole, and limits only ever tighten."""
    ems = EmsCommands()
    core = lim(ccl=50.0, dcl=80.0, force_2=True)
    for t, (address, values) in enumerate(seq):
        before = ems.command(float(t))
        result = decode_write(address, values, before)
        if isinstance(result, ModbusError):
            assert ems.command(float(t)) == before
        else:
            assert isinstance(result, Command)
            ems.write(result, float(t), 60.0)
        out = ems.apply(core, float(t), soc)
        assert out.ccl.value <= core.ccl.value
        assert out.dcl.value <= core.dcl.value
        assert out.charge_enable <= core.charge_enable
        assert out.discharge_enable <= core.discharge_enable
        assert (out.cvl, out.dvl) == (core.cvl, core.dvl)


def test_register_encoding_edges() -> None:
    assert encode(None, "u16") == [0xFFFF]
    assert encode(float("nan"), "s16") == [0x8000]
    assert encode(1e12, "u16") == [0xFFFE]  # clamped, never onto the marker
    assert encode(-1e12, "s16") == [0x8001]
    assert encode(-2.5, "s16") == [0xFFFD]  # half away from zero: -3
    assert encode(70000.0, "u32") == [1, 70000 - 65536]
    assert encode(float("inf"), "s32") == [0x7FFF, 0xFFFF]
    assert encode(0xFFFF_FFFF, "b32") == [0xFFFF, 0xFFFF]  # bitfields pass as they are
