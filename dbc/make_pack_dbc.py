"""Generate dbc/pack.dbc, the bmsgw generic pack CAN protocol (see docs/pack-protocol.md).

Usage: python dbc/make_pack_dbc.py [--check]   (--check: exit 1 if the committed file differs)
The output is deterministic; tests/test_pack_can.py asserts the committed DBC equals render().
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

OUT = Path(__file__).with_name("pack.dbc")
VERSION = "bmsgw-pack 1.1"
BAUDRATE = 500_000
BASE_ID = 0x400
MODULES = 16
GATEWAY = "GATEWAY"

MSG_STATUS = 0x0
MSG_INFO = 0x1
MSG_CELLS = 0x2
MSG_TEMPS = 0x3
MSG_COMMAND = 0x8
MSG_TRANSFER = 0x9

CELL_GROUPS = 8
CELLS_PER_GROUP = 4
TEMP_GROUPS = 4
TEMPS_PER_GROUP = 3
CELL_ABSENT = 0x3FFF
TEMP_ABSENT = -0x8000
PERCENT_NA = 0xFF
TRANSFER_SLOTS = 2
NO_TRANSFER = 0


@dataclass(frozen=True)
class Sig:
    """One DBC signal (always little-endian / Intel, byte order @1)."""

    name: str
    start: int
    length: int
    signed: bool = False
    factor: float = 1
    offset: float = 0
    minimum: float = 0
    maximum: float = 0
    unit: str = ""
    comment: str = ""
    mux: str = ""  # "" plain, "M" multiplexer, "m<n>" multiplexed by value n
    choices: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True)
class Msg:
    """One message kind (instantiated once per module)."""

    name: str
    offset: int
    cycle_ms: int
    from_gateway: bool
    comment: str
    signals: tuple[Sig, ...]


def _flag(name: str, bit: int, comment: str) -> Sig:
    return Sig(name, bit, 1, maximum=1, comment=comment)


def _cell_signals() -> tuple[Sig, ...]:
    sigs = [
        Sig(
            "PACK_CellGroup",
            0,
            8,
            maximum=CELL_GROUPS - 1,
            mux="M",
            comment="Multiplexer: cell group g carries cells 4g+1..4g+4 (g = 0..7).",
        )
    ]
    for g in range(CELL_GROUPS):
        for k in range(CELLS_PER_GROUP):
            n = g * CELLS_PER_GROUP + k + 1
            sigs.append(
                Sig(
                    f"PACK_Cell{n:02d}",
                    8 + 14 * k,
                    14,
                    factor=0.001,
                    maximum=16.382,
                    unit="V",
                    mux=f"m{g}",
                    comment=f"Cell {n} voltage, 1 mV/bit; 0x3FFF = cell not present.",
                    choices=((CELL_ABSENT, "NotPresent"),),
                )
            )
    return tuple(sigs)


def _temp_signals() -> tuple[Sig, ...]:
    sigs = [
        Sig(
            "PACK_TempGroup",
            0,
            8,
            maximum=TEMP_GROUPS - 1,
            mux="M",
            comment="Multiplexer: sensor group g carries sensors 3g+1..3g+3 (g = 0..3).",
        )
    ]
    for g in range(TEMP_GROUPS):
        for k in range(TEMPS_PER_GROUP):
            n = g * TEMPS_PER_GROUP + k + 1
            sigs.append(
                Sig(
                    f"PACK_Temp{n:02d}",
                    8 + 16 * k,
                    16,
                    signed=True,
                    factor=0.1,
                    minimum=-3276.7,
                    maximum=3276.7,
                    unit="degC",
                    mux=f"m{g}",
                    comment=f"Temperature sensor {n}, 0.1 degC/bit; 0x8000 = sensor absent.",
                    choices=((TEMP_ABSENT, "Absent"),),
                )
            )
    return tuple(sigs)


def _transfer_signals() -> tuple[Sig, ...]:
    """Slot k (1-based) at bit 32(k-1): from-cell u8, to-cell u8, current u12; alive in bits 28-31."""
    sigs: list[Sig] = []
    for k in range(1, TRANSFER_SLOTS + 1):
        base = 32 * (k - 1)
        none = ((NO_TRANSFER, "NoTransfer"),)
        sigs += [
            Sig(
                f"PACK_XferFromCell{k}",
                base,
                8,
                maximum=32,
                comment=f"Transfer slot {k}: source cell number 1..32 (gives charge); 0 = slot unused.",
                choices=none,
            ),
            Sig(
                f"PACK_XferToCell{k}",
                base + 8,
                8,
                maximum=32,
                comment=f"Transfer slot {k}: sink cell number 1..32 (receives charge); 0 = slot unused.",
                choices=none,
            ),
            Sig(
                f"PACK_XferCurrent{k}",
                base + 16,
                12,
                factor=0.01,
                maximum=40.95,
                unit="A",
                comment=f"Transfer slot {k}: current drawn from the source cell, 10 mA/bit, never negative "
                "(direction is from-cell to to-cell; the sink receives it less the converter loss).",
            ),
        ]
        if k == 1:
            sigs.append(
                Sig(
                    "PACK_XferAlive",
                    28,
                    4,
                    maximum=15,
                    comment="Rolling counter 0..15, +1 (mod 16) on every GatewayBalanceTransfer frame.",
                )
            )
    return tuple(sigs)


MESSAGES: tuple[Msg, ...] = (
    Msg(
        "PackStatus",
        MSG_STATUS,
        100,
        False,
        "Fast pack status. The gateway emits one pack sample per PackStatus frame. Bytes 6 bits 5-7 and "
        "byte 7 bits 4-7 are reserved (send 0, ignore on receive).",
        (
            Sig(
                "PACK_Voltage",
                0,
                16,
                factor=0.01,
                maximum=655.35,
                unit="V",
                comment="Pack terminal voltage, 10 mV/bit.",
            ),
            Sig(
                "PACK_Current",
                16,
                32,
                signed=True,
                factor=0.001,
                minimum=-2147483.648,
                maximum=2147483.647,
                unit="A",
                comment="Pack current, 1 mA/bit, two's complement; positive = charging.",
            ),
            _flag("PACK_ChgFetOn", 48, "1 = charge FET/path on."),
            _flag("PACK_DchgFetOn", 49, "1 = discharge FET/path on."),
            _flag("PACK_Balancing", 50, "1 = cell balancing active."),
            _flag("PACK_ContactorClosed", 51, "1 = main contactor/relay closed."),
            _flag("PACK_BmsFault", 52, "1 = BMS internal fault; the gateway treats the pack as faulted."),
            Sig(
                "PACK_Alive",
                56,
                4,
                maximum=15,
                comment="Rolling counter 0..15, +1 (mod 16) on every PackStatus frame. A counter that "
                "stops changing means a hung BMS.",
            ),
        ),
    ),
    Msg(
        "PackInfo",
        MSG_INFO,
        1000,
        False,
        "Slow pack information and BMS alarm bits. Bytes 5-7 are reserved (send 0, ignore on receive).",
        (
            Sig("PACK_CellCount", 0, 8, maximum=32, comment="Number of series cells reported (1..32)."),
            Sig("PACK_TempCount", 8, 8, maximum=12, comment="Number of temperature sensors (0..12)."),
            _flag("PACK_AlmCellOV", 16, "Alarm: cell overvoltage."),
            _flag("PACK_AlmCellUV", 17, "Alarm: cell undervoltage."),
            _flag("PACK_AlmOverTemp", 18, "Alarm: overtemperature."),
            _flag("PACK_AlmUnderTemp", 19, "Alarm: undertemperature."),
            _flag("PACK_AlmChargeOC", 20, "Alarm: charge overcurrent."),
            _flag("PACK_AlmDischargeOC", 21, "Alarm: discharge overcurrent."),
            _flag("PACK_AlmShortCircuit", 22, "Alarm: short circuit."),
            _flag("PACK_AlmInternal", 23, "Alarm: BMS internal error."),
            Sig(
                "PACK_SocReported",
                24,
                8,
                factor=0.5,
                maximum=100,
                unit="%",
                comment="SOC as estimated by the BMS, 0.5 %/bit (0..200 raw); 0xFF = not available.",
                choices=((PERCENT_NA, "NotAvailable"),),
            ),
            Sig(
                "PACK_SohReported",
                32,
                8,
                factor=0.5,
                maximum=100,
                unit="%",
                comment="SOH as estimated by the BMS, 0.5 %/bit (0..200 raw); 0xFF = not available.",
                choices=((PERCENT_NA, "NotAvailable"),),
            ),
        ),
    ),
    Msg(
        "CellVoltages",
        MSG_CELLS,
        200,
        False,
        "Cell voltages, multiplexed by PACK_CellGroup; every used group is sent every 200 ms. "
        "Cells beyond PACK_CellCount in the last group are 0x3FFF.",
        _cell_signals(),
    ),
    Msg(
        "Temperatures",
        MSG_TEMPS,
        500,
        False,
        "Temperatures, multiplexed by PACK_TempGroup; every used group is sent every 500 ms. "
        "Byte 7 is reserved (send 0, ignore on receive).",
        _temp_signals(),
    ),
    Msg(
        "GatewayCommand",
        MSG_COMMAND,
        1000,
        True,
        "Gateway to pack request, sent every 1000 ms while the gateway requests anything. A BMS that "
        "receives none for 3 s clears the balance mask; an open request stays latched until a close "
        "request. Bits 34-35 and bytes 5-7 are reserved (send 0, ignore on receive).",
        (
            Sig(
                "PACK_CmdBalanceMask",
                0,
                32,
                maximum=4294967295,
                comment="Bit n = 1 requests bleed balancing of cell n+1.",
            ),
            Sig(
                "PACK_CmdContactor",
                32,
                2,
                maximum=2,
                comment="Contactor request: 0 none, 1 close, 2 open, 3 reserved (invalid).",
                choices=((0, "NoRequest"), (1, "Close"), (2, "Open"), (3, "Reserved")),
            ),
            Sig(
                "PACK_CmdAlive",
                36,
                4,
                maximum=15,
                comment="Rolling counter 0..15, +1 (mod 16) on every GatewayCommand frame.",
            ),
        ),
    ),
    Msg(
        "GatewayBalanceTransfer",
        MSG_TRANSFER,
        1000,
        True,
        "Gateway to pack active-balancing request, sent every 1000 ms while the gateway runs active "
        "balancing: up to two simultaneous cell-to-cell charge transfers; a frame with both slots unused "
        "stops all transfers. A BMS that receives none (or an unchanged alive counter) for 3 s stops all "
        "transfers. A used slot with a to-cell of 0, a cell above 32 or the same cell twice makes the whole "
        "frame invalid (ignored). Bits 60-63 are reserved (send 0, ignore on receive).",
        _transfer_signals(),
    ),
)


def frame_id(module: int, msg: int) -> int:
    """11-bit CAN id of message `msg` for module `module`."""
    return BASE_ID + module * 0x10 + msg


def _num(x: float) -> str:
    return format(x, ".12g")


def _node(module: int) -> str:
    return f"PACK_{module:02d}"


def _quote(text: str) -> str:
    if '"' in text or "\\" in text:
        raise ValueError(f"DBC strings cannot hold quotes or backslashes: {text}")
    return f'"{text}"'


def render() -> str:
    """The complete pack.dbc text."""
    out: list[str] = [
        f"VERSION {_quote(VERSION)}",
        "",
        "",
        "NS_ :",
        "\tNS_DESC_",
        "\tCM_",
        "\tBA_DEF_",
        "\tBA_",
        "\tVAL_",
        "\tBA_DEF_DEF_",
        "\tSIG_VALTYPE_",
        "",
        "BS_:",
        "",
        "BU_: " + " ".join([GATEWAY, *(_node(m) for m in range(MODULES))]),
        "",
        "",
    ]
    comments: list[str] = [
        'CM_ "bmsgw generic pack CAN protocol: up to 16 battery modules on one 500 kbit/s bus, 11-bit ids, '
        "id = 0x400 + module*0x10 + msg, little-endian signals. Generated by dbc/make_pack_dbc.py; "
        'see docs/pack-protocol.md.";',
        f'CM_ BU_ {GATEWAY} "The bmsgw gateway: reads every module, sends GatewayCommand and '
        'GatewayBalanceTransfer.";',
    ]
    comments += [f'CM_ BU_ {_node(m)} "Battery module {m} BMS.";' for m in range(MODULES)]
    attrs: list[str] = []
    vals: list[str] = []
    for module in range(MODULES):
        for msg in MESSAGES:
            fid = frame_id(module, msg.offset)
            sender = GATEWAY if msg.from_gateway else _node(module)
            receiver = _node(module) if msg.from_gateway else GATEWAY
            out.append(f"BO_ {fid} {msg.name}_M{module:02d}: 8 {sender}")
            comments.append(f"CM_ BO_ {fid} {_quote(f'Module {module}: {msg.comment}')};")
            attrs.append(f'BA_ "GenMsgCycleTime" BO_ {fid} {msg.cycle_ms};')
            for s in msg.signals:
                mux = f" {s.mux}" if s.mux else ""
                sign = "-" if s.signed else "+"
                out.append(
                    f" SG_ {s.name}{mux} : {s.start}|{s.length}@1{sign} ({_num(s.factor)},{_num(s.offset)}) "
                    f"[{_num(s.minimum)}|{_num(s.maximum)}] {_quote(s.unit)} {receiver}"
                )
                if s.comment:
                    comments.append(f"CM_ SG_ {fid} {s.name} {_quote(s.comment)};")
                if s.choices:
                    body = " ".join(f"{v} {_quote(label)}" for v, label in s.choices)
                    vals.append(f"VAL_ {fid} {s.name} {body} ;")
            out.append("")
    out.append("")
    out += comments
    out += [
        'BA_DEF_ "BusType" STRING ;',
        'BA_DEF_ "DBName" STRING ;',
        f'BA_DEF_ "Baudrate" INT 0 {10 * 1024 * 1024};',
        'BA_DEF_ BO_ "GenMsgCycleTime" INT 0 65535;',
        'BA_DEF_DEF_ "BusType" "CAN";',
        'BA_DEF_DEF_ "DBName" "";',
        'BA_DEF_DEF_ "Baudrate" 500000;',
        'BA_DEF_DEF_ "GenMsgCycleTime" 0;',
        'BA_ "BusType" "CAN";',
        'BA_ "DBName" "pack";',
        f'BA_ "Baudrate" {BAUDRATE};',
    ]
    out += attrs
    out += vals
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    """Write (or with --check, verify) dbc/pack.dbc."""
    text = render()
    if "--check" in argv:
        same = OUT.exists() and OUT.read_text(encoding="ascii") == text
        print(f"{OUT}: {'up to date' if same else 'OUT OF DATE, run python dbc/make_pack_dbc.py'}")
        return 0 if same else 1
    OUT.write_text(text, encoding="ascii", newline="\n")
    print(f"wrote {OUT} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
