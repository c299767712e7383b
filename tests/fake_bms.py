"""Fake serial BMS (jk, jbd, daly, daly-modbus, seplos, pylontech-rs485) built from our own codecs run
in reverse, answering over a real pty."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from ptys import PtyPair

from bmsgw.bms import daly, daly_modbus, jbd, jk, pylontech, seplos
from bmsgw.bms.framing import BmsDecodeError, FrameBuffer, Framing
from bmsgw.inverter import pylontech_rs485 as pr

FRAMINGS = {
    "jk": jk.FRAMING,
    "jbd": jbd.FRAMING,
    "daly": daly.FRAMING,
    "daly-modbus": daly_modbus.FRAMING,
    "seplos": seplos.FRAMING,
    "pylontech-rs485": pylontech.FRAMING,
}
# Requests: the same frames, except Modbus (a function-3 request is 8 bytes without a byte count).
REQUEST_FRAMINGS = {**FRAMINGS, "daly-modbus": Framing(b"", 2, lambda h: 8 if h[1] == 3 else 0)}
FIXTURES = Path(__file__).parent / "fixtures" / "bms"


@dataclass
class BmsModel:
    """What the fake reports; tests change it while it runs. `alarm` is the vendor's raw alarm word
    (JK 0x8B warnings, JBD protection bits, Daly 0x98 bytes and Seplos alarm events 1-8 as little-endian
    ints, Pylontech 0x44 Status 1)."""

    cell_v: list[float] = field(default_factory=lambda: [3.30] * 16)
    temps: list[float] = field(default_factory=lambda: [25.0, 26.0])
    current: float = 10.0  # A, > 0 charging
    soc: float = 50.0  # %
    charge_fet: bool = True
    discharge_fet: bool = True
    alarm: int = 0
    jk_protocol: int = 1  # JK 0xC0 protocol version (current coding)
    daly_address: int = 0x40  # host address the fake Daly answers to
    modbus_slave: int = 0xD2  # slave id of the fake Daly Modbus BMS
    address: int = 0  # Seplos DIP address / Pylontech module address (0 = the kind's default)
    echo: bool = False  # the line echoes every request back (half-duplex RS485 adapter)
    silent: bool = False
    garbage: bytes = b""  # written before every answer
    corrupt: int = 0  # this many next answers get a flipped byte
    management: pr.Management | None = None  # Pylontech 0x92 answer (None: refused, like older firmware)

    @property
    def voltage(self) -> float:
        return round(sum(self.cell_v), 2)

    def answers(self, kind: str, request: bytes) -> list[bytes]:
        """The frames this BMS sends for one request ([] = it stays silent)."""
        if kind == "jk":
            if jk.decode_request(request) != jk.CMD_READ_ALL:
                return []
            status = jk.JkStatus(
                cell_v=tuple(self.cell_v), mos_temp=30.0, temps=(self.temps[0], self.temps[1]),
                voltage=self.voltage, current=self.current, soc=round(self.soc), cycles=7,
                warnings=self.alarm, status=self.charge_fet | self.discharge_fet << 1,
                protocol_version=self.jk_protocol,
            )  # fmt: skip
            return [jk.encode_response(status)]
        if kind == "jbd":
            reg = jbd.decode_request(request)
            if reg == jbd.REG_BASIC:
                info = jbd.JbdBasicInfo(
                    voltage=self.voltage, current=self.current, remaining_ah=50.0, nominal_ah=100.0,
                    cycles=7, production_date=0x2C50, balance=0, protection=self.alarm, version=0x80,
                    rsoc=round(self.soc), fet=self.charge_fet | self.discharge_fet << 1,
                    cell_count=len(self.cell_v), temps=tuple(self.temps),
                )  # fmt: skip
                return [jbd.encode_basic(info)]
            if reg == jbd.REG_CELLS:
                return [jbd.encode_cells(tuple(self.cell_v))]
            return [jbd.encode_response(reg, b"", status=0x80)]
        if kind == "daly-modbus":
            slave, start, count = daly_modbus.decode_request(request)
            if slave != self.modbus_slave:
                return []
            status = daly_modbus.DalyModbusStatus(
                cell_v=tuple(self.cell_v), temps=tuple(self.temps), voltage=self.voltage,
                current=self.current, soc=self.soc, state=1 if self.current > 0 else 2, remaining_ah=50.0,
                cycles=7, balancing=False, charge_fet=self.charge_fet, discharge_fet=self.discharge_fet,
                alarms=self.alarm,
            )  # fmt: skip
            regs = daly_modbus.encode_registers(status)[start : start + count]
            return [daly_modbus.encode_response(regs, slave)]
        if kind == "seplos":
            return self._seplos(request)
        if kind == "pylontech-rs485":
            return self._pylontech(request)
        frame = daly.decode_frame(request)
        if frame.address != self.daly_address:
            return []
        status = daly.DalyStatus(
            voltage=self.voltage, current=self.current, soc=self.soc, cell_v=tuple(self.cell_v),
            temps=tuple(self.temps), cycles=7,
            mosfet=(1 if self.current > 0 else 2, self.charge_fet, self.discharge_fet, 50.0),
            balance=0, failures=self.alarm.to_bytes(8, "little"),
        )  # fmt: skip
        return daly.encode_answers(status, frame.command)

    def _seplos(self, request: bytes) -> list[bytes]:
        command, address = seplos.decode_request(request)
        if address != self.address:
            return []
        if command == seplos.CMD_TELEMETRY:
            t = seplos.SeplosTelemetry(
                cell_v=tuple(self.cell_v), temps=(*self.temps, 24.0, 30.0), current=self.current,
                voltage=self.voltage, residual_ah=self.soc, capacity_ah=100.0, soc=self.soc / 100,
                rated_ah=100.0, cycles=7, soh=0.99, port_voltage=self.voltage,
            )  # fmt: skip
            return [seplos.encode_telemetry(t, address)]
        a = seplos.SeplosAlarms(
            cells=(0,) * len(self.cell_v), temps=(0,) * (len(self.temps) + 2), current=0, voltage=0,
            events=tuple(self.alarm >> 8 * i & 0xFF for i in range(8)),
            switches=self.discharge_fet | self.charge_fet << 1, system=1 if self.current < 0 else 2,
        )  # fmt: skip
        return [seplos.encode_alarms(a, address)]

    def _pylontech(self, request: bytes) -> list[bytes]:
        frame = pr.decode_frame(request)
        address = self.address or 2
        if frame.adr != address:
            return []
        if frame.cid2 == pr.Command.ANALOG:
            temps = (sum(self.temps) / len(self.temps), *self.temps)  # BMS board first
            values = pr.ModuleValues(
                tuple(self.cell_v), temps, self.current, self.voltage, self.soc, 100.0, cycles=7
            )
            info = pr.encode_analog(pr.ModuleRecords(0, address, (values,)))
        elif frame.cid2 == pr.Command.ALARM:
            switches = pr.Status2(self.charge_fet << 1 | self.discharge_fet << 2)
            alarms = pr.ModuleAlarms(
                (0,) * len(self.cell_v), (0,) * (len(self.temps) + 1), 0, 0, 0,
                pr.Status1(self.alarm & 0xFF), switches, pr.Status3(0), 0,
            )  # fmt: skip
            info = pr.encode_alarms(pr.ModuleRecords(0, address, (alarms,)))
        elif frame.cid2 == pr.Command.MANAGEMENT and self.management is not None:
            info = pr.encode_management(self.management, address)
        else:
            return [pr.encode_frame(pr.Rs485Frame(pr.VER, address, pr.CID1_BATTERY, pr.Rtn.CID2_INVALID))]
        return [pr.encode_frame(pr.Rs485Frame(pr.VER, address, pr.CID1_BATTERY, pr.Rtn.NORMAL, info))]


class FakeBms:
    """Answers the requests arriving on `pty` as `model` says; counts what it saw. More models make
    an RS485 bus of Daly boards, each answering its own `daly_address`."""

    def __init__(self, kind: str, pty: PtyPair, model: BmsModel, *more: BmsModel) -> None:
        self.kind = kind
        self.models = (model, *more)
        self.pty = pty
        self.requests = 0
        self.bad_requests = 0
        self._buf = FrameBuffer(REQUEST_FRAMINGS[kind])

    @property
    def model(self) -> BmsModel:
        return self.models[0]

    async def run(self) -> None:
        """Serve until cancelled (polls the pty every 2 ms)."""
        while True:
            data = self.pty.read_available()
            if not data:
                await asyncio.sleep(0.002)
                continue
            if any(m.echo for m in self.models):
                self.pty.write(data)
            self._buf.feed(data)
            while (frame := self._buf.next()) is not None:
                for model in self.models:
                    try:
                        answers = model.answers(self.kind, frame)
                    except (BmsDecodeError, pr.Rs485Error):
                        self.bad_requests += 1
                        break
                    self.requests += 1
                    if model.silent or not answers:
                        continue
                    out = model.garbage + b"".join(answers)
                    if model.corrupt:
                        model.corrupt -= 1
                        out = out[:-3] + bytes((out[-3] ^ 0x5A,)) + out[-2:]
                    self.pty.write(out)


def load_frames(vendor: str) -> dict[str, bytes]:
    """Golden frames of tests/fixtures/bms/<vendor>.txt (`label = hex`; provenance in SOURCES.md)."""
    out = {}
    for line in (FIXTURES / f"{vendor}.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            label, _, hexed = line.partition("=")
            out[label.strip()] = bytes.fromhex(hexed.replace(":", " "))
    return out


def load_ascii_frames(vendor: str) -> dict[str, bytes]:
    """Golden ASCII frames of tests/fixtures/bms/<vendor>.txt (`label = frame`, the CR re-added)."""
    out = {}
    for line in (FIXTURES / f"{vendor}.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            label, _, text = line.partition("=")
            out[label.strip()] = text.strip().encode("ascii") + b"\r"
    return out
