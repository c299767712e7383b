"""Serial BMS source (kinds jk, jbd, daly, daly-modbus, seplos, pylontech-rs485): polls the packs on one
serial line into PackSamples.

One SerialBmsSource serves one port; packs of the same kind sharing it (RS485 bus) are told apart by
`address`. A small per-kind Driver knows the requests of one poll; the codecs in bmsgw/bms/ know the
bytes. I/O errors never leave run(): the port is closed and reopened with backoff (0.5 s -> 30 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bmsgw.bms import daly, daly_modbus, jbd, jk, pylontech, seplos
from bmsgw.bms.framing import BmsDecodeError, BmsReading, FrameBuffer, Framing
from bmsgw.clock import Clock
from bmsgw.config import Settings
from bmsgw.inverter.pylontech_rs485 import Command, Management, ModuleAlarms, ModuleValues
from bmsgw.log import get_logger
from bmsgw.model import PackSample
from bmsgw.sources import SERIAL_KINDS
from bmsgw.transport.serial import SerialError, open_serial

__all__ = [
    "DRIVERS",
    "Driver",
    "Link",
    "NoAnswerError",
    "ProbeError",
    "ProbeResult",
    "SerialBmsSource",
    "format_probe",
    "probe",
]

_log = get_logger(__name__)

T = TypeVar("T")

REQUEST_TIMEOUT_S = 1.0  # per request attempt (the longest answer, 32 JBD cells at 9600 baud, is ~80 ms)
ATTEMPTS = 3  # per request of a poll
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.5, 30.0
DEAD_POLL_MAX_S = 30.0  # a silent board on a shared line is polled at least this often


class NoAnswerError(Exception):
    """A request got no valid answer within its timeout, after every attempt."""


class ProbeError(Exception):
    """`bmsgw probe` could not read the BMS; the message says why and what to check."""


class Link:
    """One open serial line: send a request, collect the answer frames a codec function accepts."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        buf: FrameBuffer,
        *,
        timeout_s: float = REQUEST_TIMEOUT_S,
        attempts: int = ATTEMPTS,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.buf = buf
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.ignored = 0  # valid frames that answer something else (echo, other command/address)
        self.last_error = ""
        self.log: list[tuple[str, bytes]] = []  # ("tx" | "rx", frame) of the current poll

    async def ask(
        self, request: bytes, accept: Callable[[bytes], T | None], count: int = 1, attempts: int = 0
    ) -> list[T]:
        """Send `request` and return `count` accepted answers; `accept` returns None for frames that
        are valid but not the answer, raises BmsDecodeError for garbled ones. NoAnswerError on timeout."""
        loop = asyncio.get_running_loop()
        for _ in range(attempts or self.attempts):
            self._writer.write(request)
            await self._writer.drain()
            self.log.append(("tx", request))
            got: list[T] = []
            deadline = loop.time() + self.timeout_s
            while len(got) < count:
                frame = self.buf.next()
                if frame is None:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    try:
                        async with asyncio.timeout(left):
                            data = await self._reader.read(4096)
                    except TimeoutError:
                        break
                    if not data:
                        raise ConnectionResetError("serial port closed")
                    self.buf.feed(data)
                    self.buf.skip(request)  # echo of a half-duplex RS485 adapter
                    continue
                if frame == request:  # an echo behind other bytes
                    continue
                try:
                    value = accept(frame)
                except BmsDecodeError as exc:
                    self.buf.reject(frame)
                    self.last_error = str(exc)
                    continue
                if value is None:
                    self.ignored += 1
                    continue
                self.log.append(("rx", frame))
                got.append(value)
            if len(got) >= count:
                return got
            self.buf.clear()  # a partial frame must not swallow the next answer
        raise NoAnswerError(f"no valid answer to {request.hex(' ')}")


@dataclass
class Driver:
    """How one kind is polled: its framing and the requests of one poll (state lives per line)."""

    framing: Framing
    poll: Callable[[Link, int], Awaitable[BmsReading]]


def _answer_jk(frame: bytes) -> jk.JkStatus | None:
    return jk.decode_response(frame)


async def _poll_jk(link: Link, address: int) -> BmsReading:
    (status,) = await link.ask(jk.read_all_request(), _answer_jk)
    return jk.reading(status)


async def _poll_daly_modbus(link: Link, slave: int) -> BmsReading:
    def accept(frame: bytes) -> daly_modbus.DalyModbusStatus | None:
        regs = daly_modbus.decode_response(frame, slave)
        return None if regs is None else daly_modbus.decode_registers(regs)

    (status,) = await link.ask(daly_modbus.read_request(slave), accept)
    return daly_modbus.reading(status)


def _jbd_register(register: int) -> Callable[[bytes], bytes | None]:
    def accept(frame: bytes) -> bytes | None:
        answer = jbd.decode_response(frame)
        return answer[1] if answer is not None and answer[0] == register else None

    return accept


async def _poll_jbd(link: Link, address: int) -> BmsReading:
    (basic,) = await link.ask(jbd.request(jbd.REG_BASIC), _jbd_register(jbd.REG_BASIC))
    (cells,) = await link.ask(jbd.request(jbd.REG_CELLS), _jbd_register(jbd.REG_CELLS))
    return jbd.reading(jbd.decode_basic(basic), jbd.decode_cells(cells))


def _seplos_answer(address: int, decode: Callable[[bytes], T]) -> Callable[[bytes], T | None]:
    def accept(frame: bytes) -> T | None:
        info = seplos.decode_response(frame, address)
        return None if info is None else decode(info)

    return accept


async def _poll_seplos(link: Link, address: int) -> BmsReading:
    ask, answer = seplos.request, _seplos_answer
    (t,) = await link.ask(ask(seplos.CMD_TELEMETRY, address), answer(address, seplos.decode_telemetry))
    (a,) = await link.ask(ask(seplos.CMD_ALARMS, address), answer(address, seplos.decode_alarms))
    return seplos.reading(t, a)


class _Optional:
    """Requests some firmware never serves: one attempt per poll, skipped for good once GIVE_UP polls in a
    row went unanswered (so they do not stretch every poll) or once the BMS refused one (`refuse`)."""

    GIVE_UP = 3

    def __init__(self) -> None:
        self._misses: dict[object, int] = {}

    async def ask(
        self, key: object, link: Link, request: bytes, accept: Callable[[bytes], T | None]
    ) -> T | None:
        """The accepted answer to `request`; None when it went unanswered or `key` is given up."""
        if self.given_up(key):
            return None
        try:
            (answer,) = await link.ask(request, accept, 1, 1)
        except NoAnswerError:
            self._misses[key] = self._misses.get(key, 0) + 1
            return None
        self._misses[key] = 0
        return answer

    def refuse(self, key: object) -> None:
        """The BMS refused `key`'s request: never ask it again."""
        self._misses[key] = self.GIVE_UP

    def given_up(self, key: object) -> bool:
        """Whether `key`'s request is no longer asked."""
        return self._misses.get(key, 0) >= self.GIVE_UP


class _PylontechPoller:
    """0x42 analog and 0x44 alarms every poll, then 0x92 (the module's own limits), which older firmware
    refuses or ignores. A missed 0x92 keeps the module's last limits until it is given up, so they do not
    loosen for one lost answer."""

    def __init__(self) -> None:
        self._optional = _Optional()
        self._last: dict[int, Management] = {}

    async def poll(self, link: Link, address: int) -> BmsReading:
        def analog(frame: bytes) -> ModuleValues | None:
            return pylontech.decode_analog_answer(frame, address)

        def alarms(frame: bytes) -> ModuleAlarms | None:
            return pylontech.decode_alarm_answer(frame, address)

        def management(frame: bytes) -> Management | bool | None:
            try:
                return pylontech.decode_management_answer(frame, address)
            except pylontech.PylontechRefusedError:
                return False

        (v,) = await link.ask(pylontech.request(Command.ANALOG, address), analog)
        (a,) = await link.ask(pylontech.request(Command.ALARM, address), alarms)
        answer = await self._optional.ask(
            address, link, pylontech.request(Command.MANAGEMENT, address), management
        )
        if answer is False:
            self._optional.refuse(address)
        elif isinstance(answer, Management):
            self._last[address] = answer
        if self._optional.given_up(address):
            self._last.pop(address, None)
        return pylontech.reading(v, a, self._last.get(address))


def _daly_answer(cmd: int) -> Callable[[bytes], bytes | None]:
    def accept(frame: bytes) -> bytes | None:
        f = daly.decode_frame(frame)
        return f.data if f.command == cmd and f.address < 0x40 else None

    return accept


class _DalyPoller:
    """Daly needs several requests per poll; some firmware ignores 0x93/0x97/0x98 (optional requests)."""

    _OPTIONAL = (daly.CMD_MOSFET, daly.CMD_BALANCE, daly.CMD_FAILURES)

    def __init__(self) -> None:
        self._optional = _Optional()

    async def poll(self, link: Link, host: int) -> BmsReading:
        answers: dict[int, list[bytes]] = {}

        async def ask(cmd: int, count: int = 1) -> list[bytes]:
            return await link.ask(daly.request(host, cmd), _daly_answer(cmd), count)

        answers[daly.CMD_SOC] = await ask(daly.CMD_SOC)
        answers[daly.CMD_COUNTS] = counts = await ask(daly.CMD_COUNTS)
        cells, temps = counts[0][0], counts[0][1]
        for cmd in (daly.CMD_CELLS, daly.CMD_TEMPS):
            if frames := daly.frames_for(cmd, cells, temps):
                answers[cmd] = await ask(cmd, frames)
        for cmd in self._OPTIONAL:
            data = await self._optional.ask((host, cmd), link, daly.request(host, cmd), _daly_answer(cmd))
            if data is not None:
                answers[cmd] = [data]
        return daly.reading(daly.decode_status(answers))


DRIVERS: dict[str, Callable[[], Driver]] = {
    "jk": lambda: Driver(jk.FRAMING, _poll_jk),
    "jbd": lambda: Driver(jbd.FRAMING, _poll_jbd),
    "daly": lambda: Driver(daly.FRAMING, _DalyPoller().poll),
    "daly-modbus": lambda: Driver(daly_modbus.FRAMING, _poll_daly_modbus),
    "seplos": lambda: Driver(seplos.FRAMING, _poll_seplos),
    "pylontech-rs485": lambda: Driver(pylontech.FRAMING, _PylontechPoller().poll),
}
"""Kind -> a fresh Driver (one per line: drivers may keep per-line state)."""


class SerialBmsSource:
    """Polls the packs configured on one port every `poll_interval_s` and delivers PackSamples."""

    def __init__(
        self,
        settings: Settings,
        packs: list[int],
        clock: Clock,
        on_sample: Callable[[PackSample], None],
    ) -> None:
        cfgs = [settings.packs[i] for i in packs]
        self.kind = cfgs[0].source
        port = cfgs[0].port
        if port is None:
            raise ValueError(f"packs[{packs[0]}].port is required for source {self.kind!r}")
        self.port = port
        kind = SERIAL_KINDS[self.kind]
        self.baudrate = next((c.baudrate for c in cfgs if c.baudrate), kind.baudrate)
        self._packs = [
            (i, kind.resolve(c.address), c.poll_interval_s) for i, c in zip(packs, cfgs, strict=True)
        ]
        self._inverted = {i for i, c in zip(packs, cfgs, strict=True) if c.current_sign == "inverted"}
        self._clock = clock
        self._on_sample = on_sample
        self._driver = DRIVERS[self.kind]()
        self._buf = FrameBuffer(self._driver.framing)
        self._alive = dict.fromkeys(packs, 0)
        self._answering = dict.fromkeys(packs, True)
        self._misses = dict.fromkeys(packs, 0)  # polls in a row without an answer
        self._ever: set[int] = set()  # packs that answered at least once
        self.polls = 0
        self.samples = 0
        self.no_answer = 0  # polls that timed out
        self.bad_polls = 0  # polls whose frames were valid but did not add up
        self.reconnects = 0
        self.connected = False
        self.last_error = ""

    @property
    def rejected(self) -> int:
        """Garbled frames dropped (bad checksum, length or content) plus polls that did not add up."""
        return self._buf.rejected + self.bad_polls

    @property
    def garbage_bytes(self) -> int:
        """Bytes skipped on the line while looking for a frame start."""
        return self._buf.garbage

    async def run(self) -> None:
        """Poll until cancelled; reopen the port with backoff after I/O errors (USB unplug)."""
        backoff = BACKOFF_MIN_S
        while True:
            try:
                reader, writer = await open_serial(self.port, self.baudrate)
            except SerialError as exc:
                self._failed(str(exc), backoff)
            else:
                self.connected = True
                _log.info("serial BMS port open", kind=self.kind, port=self.port, baudrate=self.baudrate)
                link = Link(reader, writer, self._buf)
                before = self.samples
                try:
                    await self._poll_forever(link)
                except OSError as exc:  # pyserial's SerialException is an OSError
                    self._failed(f"serial port {self.port} failed: {exc}", backoff)
                finally:
                    self.connected = False
                    self._buf.clear()
                    writer.close()
                if self.samples > before:
                    backoff = BACKOFF_MIN_S
                self._driver = DRIVERS[self.kind]()
            self.reconnects += 1
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    def _failed(self, error: str, retry_in: float) -> None:
        if error != self.last_error:
            _log.error("serial BMS port unavailable", kind=self.kind, error=error, retry_in_s=retry_in)
        self.last_error = error

    async def _poll_forever(self, link: Link) -> None:
        """Packs on the line take turns, each at its own interval (the most overdue first)."""
        clock = self._clock
        due = {i: clock.now() for i, _, _ in self._packs}
        while True:
            i, address, interval = min(self._packs, key=lambda p: due[p[0]])
            wait = due[i] - clock.now()
            if wait > 0:
                await asyncio.sleep(wait / clock.speed)
            await self._poll(link, i, address)
            delay = interval
            if self._misses[i] and len(self._packs) > 1:
                # a silent board must not starve the others sharing the line: poll it less and less often
                delay = min(interval * 2 ** min(self._misses[i], 6), max(interval, DEAD_POLL_MAX_S))
            due[i] = max(due[i] + delay, clock.now())

    async def _poll(self, link: Link, pack: int, address: int) -> None:
        self.polls += 1
        link.log.clear()
        attempts = link.attempts
        if pack not in self._ever or not self._answering[pack]:
            link.attempts = 1  # retries are for a board that answers; a silent one would hold the line
        # the sample is as old as the poll: optional requests that time out after the measurements (Daly
        # 0x93-0x98, Pylontech 0x92) must not make data read before a link loss look fresh
        taken = self._clock.now()
        try:
            reading = await self._driver.poll(link, address)
        except NoAnswerError as exc:
            self._misses[pack] += 1
            self.no_answer += 1
            self.last_error = str(exc)
            if self._answering[pack]:
                _log.warning(
                    "serial BMS not answering", kind=self.kind, port=self.port, address=address,
                    garbled=self.rejected, last_error=link.last_error,
                )  # fmt: skip
            self._answering[pack] = False
            return
        except BmsDecodeError as exc:
            self.bad_polls += 1
            self.last_error = str(exc)
            return
        finally:
            link.attempts = attempts
        self._misses[pack] = 0
        self._ever.add(pack)
        if not self._answering[pack]:
            _log.info("serial BMS answering again", kind=self.kind, port=self.port, address=address)
        self._answering[pack] = True
        self._alive[pack] = (self._alive[pack] + 1) & 0xFFFF
        self.samples += 1
        if pack in self._inverted:
            reading = dataclasses.replace(reading, current=-reading.current)
        self._on_sample(reading.sample(pack, taken, self._alive[pack]))


# --- bmsgw probe ------------------------------------------------------------------------------------


@dataclass
class ProbeResult:
    """One reading of one BMS, with the frames exchanged."""

    kind: str
    port: str
    baudrate: int
    address: int
    reading: BmsReading
    frames: list[tuple[str, bytes]] = field(default_factory=list)

    def as_dict(self, frames: bool = False) -> dict[str, Any]:
        """JSON-ready view (frames in hex when asked)."""
        r = self.reading
        doc: dict[str, Any] = {
            "kind": self.kind,
            "port": self.port,
            "baudrate": self.baudrate,
            "address": self.address,
            "cells_v": list(r.cell_v),
            "cell_min": _extreme(r.cell_v, min),
            "cell_max": _extreme(r.cell_v, max),
            "temperatures_c": list(r.cell_t),
            "current_a": r.current,
            "voltage_v": r.voltage,
            "soc_reported": r.soc_reported,
            "flags": [f.name for f in type(r.flags) if f in r.flags and f.name],
            "extra": dict(r.extra),
        }
        if frames:
            doc["frames"] = [{"dir": d, "hex": f.hex(" ")} for d, f in self.frames]
        return doc


async def probe(
    kind: str, port: str, *, address: int = 0, baudrate: int | None = None, timeout_s: float = 2.0
) -> ProbeResult:
    """Read one BMS once; ProbeError says what went wrong and what to check."""
    rule = SERIAL_KINDS[kind]
    baud = baudrate or rule.baudrate
    address = rule.resolve(address)
    if rule.addresses and address not in rule.addresses:
        raise ProbeError(f"address {address:#x} is not a {kind} address; {rule.address_help}")
    if not rule.addresses and address:
        raise ProbeError(f"{kind} BMS have no bus address; leave --address out")
    try:
        reader, writer = await open_serial(port, baud)
    except SerialError as exc:
        raise ProbeError(str(exc)) from None
    driver = DRIVERS[kind]()
    link = Link(reader, writer, FrameBuffer(driver.framing), timeout_s=timeout_s, attempts=1)
    try:
        reading = await driver.poll(link, address)
    except NoAnswerError:
        n = link.buf.rejected
        garbled = f" ({n} garbled frame{'s' * (n != 1)}, last: {link.last_error})" if n else ""
        raise ProbeError(
            f"no answer from {kind} BMS on {port} at {baud} baud within {timeout_s:g} s{garbled}: "
            "check wiring A/B, baud rate, address"
        ) from None
    except BmsDecodeError as exc:
        raise ProbeError(f"{kind} BMS on {port} answered, but not consistently: {exc}") from None
    except OSError as exc:
        raise ProbeError(f"serial port {port} failed: {exc}") from None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return ProbeResult(kind, port, baud, address, reading, list(link.log))


def format_probe(result: ProbeResult, verbose: bool = False) -> str:
    """Human-readable probe report: cells with min/max marked, temperatures, current, flags."""
    r = result.reading
    lo, hi = _extreme(r.cell_v, min), _extreme(r.cell_v, max)
    addr = f", address 0x{result.address:02X}" if SERIAL_KINDS[result.kind].addresses else ""
    lines = [f"{result.kind} BMS on {result.port} ({result.baudrate} baud{addr})"]
    lines.append(f"cells ({len(r.cell_v)}):")
    for n, v in enumerate(r.cell_v, 1):
        mark = "".join(m for m, at in (("  min", lo), ("  max", hi)) if n == at["cell"])
        lines.append(f"  {n:2d}  {v:.3f} V{mark}")
    lines.append(
        f"  min {lo['v']:.3f} V (#{lo['cell']})  max {hi['v']:.3f} V (#{hi['cell']})  "
        f"delta {(hi['v'] - lo['v']) * 1000:.0f} mV"
    )
    temps = ", ".join(f"{t:.1f} °C" for t in r.cell_t) or "none"
    lines.append(f"temperatures ({len(r.cell_t)}): {temps}")
    direction = "charging" if r.current > 0 else "discharging" if r.current < 0 else "idle"
    lines.append(f"current       {r.current:+.2f} A ({direction})")
    lines.append(f"voltage       {r.voltage:.2f} V")
    soc = "n/a" if r.soc_reported is None else f"{r.soc_reported * 100:.1f} %"
    lines.append(f"SOC reported  {soc}")
    names = [f.name for f in type(r.flags) if f in r.flags and f.name]
    lines.append(f"flags         {' '.join(names) or 'none'}")
    if r.extra:
        lines.append("other         " + "  ".join(f"{k}={v}" for k, v in r.extra.items()))
    lines.append(
        f'config        source = "{result.kind}", cells = {len(r.cell_v)}, sensors = {len(r.cell_t)}'
    )
    if verbose:
        lines.append("frames:")
        lines += [f"  {'>>' if d == 'tx' else '<<'} {f.hex(' ')}" for d, f in result.frames]
    return "\n".join(lines)


def _extreme(values: tuple[float, ...], pick: Callable[..., float]) -> dict[str, Any]:
    if not values:
        return {"cell": 0, "v": math.nan}
    v = pick(values)
    return {"cell": values.index(v) + 1, "v": v}
