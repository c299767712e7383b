"""Modbus servers (protocols "modbus-tcp", "modbus-rtu"): SunSpec at 40000 and the bmsgw map at 0.

Every request refreshes the registers from the newest GatewayState (pymodbus SimDevice `action`), so a
client always reads the present state, the fail-safe one included. Writes (EMS commands, bmsgw/ems.py)
are refused unless `writes = true`, and over TCP only clients listed in `allow` may write:

- writes off, or a client not allowed: exception 1 (ILLEGAL FUNCTION), whatever the address;
- a register that is not writable (readings, SunSpec points bmsgw does not take): exception 2;
- a value out of range: exception 3; in every error case nothing changes;
- an undefined address: exception 2 (pymodbus); coil/discrete functions: exception 1.

Requests for another unit id get exception 0x0B over TCP and no answer on RS485 (another device's turn).
Over TCP a client may pipeline: every request in a read is answered, in order. On RS485 a request is found
by function code, length and CRC wherever it sits in what was read (after another device's traffic, a
noise byte, or a frame cut short), and nothing is ever sent for another unit.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import ipaddress
import math
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Final

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ModbusIOException
from pymodbus.framer.rtu import FramerRTU
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.transaction import TransactionManager

from bmsgw import __version__
from bmsgw.clock import Clock
from bmsgw.config import OutputConfig, Settings
from bmsgw.core.chemistry import profile
from bmsgw.ems import Command, EmsCommands
from bmsgw.inverter import modbus_map, sunspec
from bmsgw.inverter.modbus_map import PackStats
from bmsgw.inverter.registers import ModbusError
from bmsgw.log import get_logger
from bmsgw.model import GatewayState

__all__ = ["DEFAULT_BAUDRATE", "DEFAULT_TCP_PORT", "ModbusOutput", "decode_write", "identity_for"]

DEFAULT_TCP_PORT: Final = 502
DEFAULT_BAUDRATE: Final = 19200

_MAX_BUFFER_BYTES: Final = 65536  # bytes a connection may hold unparsed (pymodbus: 264)

_log = get_logger(__name__)
_client_log = get_logger(f"{__name__}.clients")  # one record per request: rate-limited (bmsgw.log)

_READS: Final = frozenset({3, 4})  # read holding / input registers (one shared address space)
_WRITES: Final = frozenset({6, 16, 22, 23})  # write single / multiple, mask write, read-write multiple
_PEER: contextvars.ContextVar[str | None] = contextvars.ContextVar("bmsgw_modbus_peer", default=None)


def decode_write(address: int, values: Sequence[int], cmd: Command) -> Command | ModbusError:
    """A register write anywhere in the address space → the new command, or the exception to answer."""
    if address >= sunspec.BASE:
        return sunspec.decode_write(address, values, cmd)
    return modbus_map.decode_write(address, values, cmd)


def identity_for(settings: Settings, cfg: OutputConfig) -> sunspec.Identity:
    """The SunSpec identity of this gateway: serial = gateway name, ratings from the packs and limits."""
    packs = settings.packs
    nominal = profile(settings.chemistry).nominal_v
    cells = sorted({p.cells for p in packs})
    return sunspec.Identity(
        serial=settings.gateway.name,
        model=f"bmsgw {settings.chemistry.value.upper()} {len(packs)}x{'/'.join(map(str, cells))}S",
        version=__version__,
        unit_id=cfg.unit_id,
        pack_capacity_ah=tuple(p.capacity_ah for p in packs),
        pack_nominal_v=tuple(p.cells * nominal for p in packs),
        max_charge_a=settings.limits.max_charge_current_a * len(packs),
        max_discharge_a=settings.limits.max_discharge_current_a * len(packs),
        remote_control=cfg.writes,
    )


class ModbusOutput:
    """One Modbus server (TCP or RTU by `cfg.protocol`); serves until cancelled, reopens after failures."""

    def __init__(
        self,
        settings: Settings,
        cfg: OutputConfig,
        clock: Clock,
        state: Callable[[], GatewayState],
        *,
        ems: EmsCommands | None = None,
    ) -> None:
        """`ems`: the command store to write into (the Gateway hands over the pipeline's)."""
        self.cfg = cfg
        self.identity = identity_for(settings, cfg)
        self.serial = cfg.protocol == "modbus-rtu"
        self.ems = ems if ems is not None else (EmsCommands() if cfg.writes else None)
        self._clock = clock
        self._state = state
        self._allow = [ipaddress.ip_network(a, strict=False) for a in cfg.allow]
        self._capacity = tuple(p.capacity_ah for p in settings.packs)
        self._key: tuple[object, ...] = ()
        self._blocks: list[tuple[int, list[int]]] = []
        self.sent = 0  # responses, exceptions included
        self.requests = 0
        self.rejected_writes = 0
        self.accepted_writes = 0
        self.errors = 0  # failures to open the port / listen
        self.listening = False
        self.bound_port: int | None = None  # TCP port actually listened on (tcp_port 0 picks a free one)

    # --- register image ------------------------------------------------------------------------------

    def blocks(self, t: float) -> list[tuple[int, list[int]]]:
        """(start address, registers) of every block for the newest state at clock time t."""
        state = self._state()
        cmd = self.ems.command(t) if self.ems is not None else Command()
        remaining = math.ceil(self.ems.remaining(t)) if self.ems is not None else 0
        key = (state, cmd, remaining)
        if key != self._key:
            self._key, self._blocks = key, self._encode(state, cmd, remaining)
        return self._blocks

    def _encode(self, state: GatewayState, cmd: Command, remaining: float) -> list[tuple[int, list[int]]]:
        stats = [PackStats.of(v) for v in state.packs]
        out = [(modbus_map.STATUS_BASE, modbus_map.encode_status(state, cmd, remaining, self.cfg.writes))]
        for i, (view, st) in enumerate(zip(state.packs, stats, strict=True)):
            cap = self._capacity[i] if i < len(self._capacity) else math.nan
            block = modbus_map.encode_pack(view, state, state.t, cap, st)
            out.append((modbus_map.PACK_BASE + modbus_map.PACK_STRIDE * i, block))
        out.append((modbus_map.CONTROL_BASE, modbus_map.encode_control(cmd)))
        out.append((sunspec.BASE, sunspec.encode(state, self.identity, cmd, stats)))
        return out

    # --- requests -------------------------------------------------------------------------------------

    async def _action(
        self,
        fc: int,
        start: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus calls this on every register access: check writes, then refresh the registers."""
        if fc not in _READS and fc not in _WRITES:
            return ExcCodes.ILLEGAL_FUNCTION
        t = self._clock.now()
        if values is not None:
            problem = self._write(address, [int(v) for v in values], t)
            if problem is not None:
                self.rejected_writes += 1
                return ExcCodes(int(problem))
        for base, regs in self.blocks(t):
            registers[base - start : base - start + len(regs)] = regs
        return None

    def _write(self, address: int, values: list[int], t: float) -> ModbusError | None:
        """Accept a write into the EMS command, or say which exception refuses it (nothing changes then)."""
        peer = _PEER.get()
        if not self.cfg.writes or self.ems is None or not self._allowed(peer):
            _client_log.warning("modbus write refused", peer=peer, address=address, writes=self.cfg.writes)
            return ModbusError.ILLEGAL_FUNCTION
        before = self.ems.command(t)
        cmd = decode_write(address, values, before)
        if isinstance(cmd, ModbusError):
            _client_log.warning(
                "modbus write rejected", peer=peer, address=address, values=values, error=cmd.name
            )
            return cmd
        self.ems.write(cmd, t, self.cfg.control_timeout_s)
        self.accepted_writes += 1
        if dataclasses.replace(cmd, heartbeat=0) != dataclasses.replace(before, heartbeat=0):
            _log.info("ems command", peer=peer, command=dataclasses.asdict(cmd))
        return None

    def _allowed(self, peer: str | None) -> bool:
        if self.serial:
            return True  # on RS485 the bus is the trust boundary (`allow` applies to TCP only)
        if peer is None:
            return False
        try:
            ip = ipaddress.ip_address(peer.split("%", 1)[0])
        except ValueError:
            return False
        return any(ip in net for net in self._allow)

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if sending:
            self.sent += 1
        else:
            self.requests += 1
        return pdu

    # --- server ---------------------------------------------------------------------------------------

    def _device(self) -> SimDevice:
        blocks = self.blocks(self._clock.now())
        data = [SimData(base, values=regs, datatype=DataType.REGISTERS) for base, regs in blocks]
        return SimDevice(id=self.cfg.unit_id, simdata=data, action=self._action)

    def _server(self) -> _TcpServer | _SerialServer:
        device = self._device()
        server: _TcpServer | _SerialServer
        if self.serial:
            server = _SerialServer(
                device,
                port=self.cfg.port or "",
                baudrate=self.cfg.baudrate or DEFAULT_BAUDRATE,
                parity="N",
                bytesize=8,
                stopbits=1,
                trace_pdu=self._trace_pdu,
            )
        else:
            server = _TcpServer(device, address=(self.cfg.host, self._tcp_port), trace_pdu=self._trace_pdu)
        server.unit_id = self.cfg.unit_id
        return server

    @property
    def _tcp_port(self) -> int:
        return DEFAULT_TCP_PORT if self.cfg.tcp_port is None else self.cfg.tcp_port

    async def run(self) -> None:
        """Serve until cancelled; retry with backoff while the port cannot be opened."""
        backoff = 0.5
        where = self.cfg.port if self.serial else f"{self.cfg.host}:{self._tcp_port}"
        while True:
            server = self._server()
            try:
                await server.serve_forever(background=True)
                self.bound_port = _bound_port(server)
                self.listening = True
                if self.bound_port is not None:
                    where = f"{self.cfg.host}:{self.bound_port}"
                backoff = 0.5
                _log.info("modbus serving", protocol=self.cfg.protocol, at=where, unit_id=self.cfg.unit_id)
                await asyncio.get_running_loop().create_future()  # until cancelled
            except RuntimeError as exc:  # pymodbus: "Could not start listen" (port busy, no such device)
                self.errors += 1
                _log.error(
                    "modbus server cannot listen", protocol=self.cfg.protocol, at=where, error=str(exc)
                )
            finally:
                self.listening, self.bound_port = False, None
                await server.shutdown()  # type: ignore[no-untyped-call]
                task = getattr(server, "reconnect_task", None)  # a serial relisten pending
                if task is not None:
                    task.cancel()
            await asyncio.sleep(backoff / self._clock.speed)
            backoff = min(backoff * 2, 30.0)


def _bound_port(server: ModbusTcpServer | ModbusSerialServer) -> int | None:
    sockets = getattr(server.transport, "sockets", None) or ()
    return int(sockets[0].getsockname()[1]) if sockets else None


# pymodbus has no hook that knows the client or filters unit ids: a request handler of our own does both.
# pymodbus also takes one request per read and empties its receive buffer whenever it answers, so over TCP
# a second request sent before the first answer was dropped unanswered.
# Its RTU framer drops everything it read when a CRC fails and everything after the first frame, so on a
# shared line our request was lost whenever another device's bytes came in the same read.


class _RtuFramer(FramerRTU):
    """RTU framing for a server on a shared line: a frame (known function code, its length, a good CRC)
    is found wherever it starts — behind a frame still arriving, only one that ends the read; bytes before
    it are dropped, bytes after it kept for the next frame."""

    def decode(self, data: bytes) -> tuple[int, int, int, bytes]:
        """(bytes used, unit id, 0, PDU) for the first whole frame; (bytes to drop, 0, 0, b"") if none."""
        wait = None  # where a frame that may still complete starts
        for start in range(len(data) - self.MIN_SIZE + 1):
            at = data[start:]
            pdu_class = self.decoder.lookupPduClass(at)
            if pdu_class is None:
                continue
            size = pdu_class.calculateRtuFrameSize(at)
            if not size or size > len(at):
                wait = start if wait is None else wait
                continue
            # a long request's payload is not searched for frames
            if (wait is None or start + size == len(data)) and self.check_CRC(
                at[: size - 2], at[size - 2] << 8 | at[size - 1]
            ):
                return start + size, at[0], 0, at[1 : size - 2]
        return (wait if wait is not None else max(0, len(data) - self.MIN_SIZE + 1)), 0, 0, self.EMPTY


class _Handler(ServerRequestHandler):
    """Answers only our unit id, tells the action who is asking (for `allow`), and answers every request
    in a read, in order (pipelined over TCP; ours after other units' on RS485)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)  # type: ignore[no-untyped-call]
        # pymodbus discards a read outright once the buffer passes one frame's size (264): a client's
        # pipelined requests, or a busy line delivered by an adapter in one piece, would all be lost
        self.max_buffer_size = _MAX_BUFFER_BYTES
        self._requests: deque[tuple[ModbusPDU, Any, bool]] = deque()
        self._turn = asyncio.Lock()  # FIFO: answers leave in the order the requests came

    def callback_data(self, data: bytes, addr: tuple[str, int] | None = None) -> int:
        """Queue every complete request in `data`; the bytes used."""
        used = 0
        while True:
            # over TCP one MBAP frame at a time, so a frame pymodbus cannot decode costs only itself
            end = len(data) if self.server.bmsgw_serial else used + _mbap_size(data[used:])
            try:  # the parse alone: pymodbus's handler would answer an undecodable frame ahead of the queue
                n = int(TransactionManager.callback_data(self, data[used:end], addr))
            except ModbusIOException as exc:  # answered in its turn with ILLEGAL FUNCTION, as pymodbus does
                tcp_fc = data[used + 7] if not self.server.bmsgw_serial and end - used > 7 else 0
                fcode = exc.fcode if exc.fcode is not None else tcp_fc
                reply = ExceptionResponse(fcode, ExcCodes.ILLEGAL_FUNCTION, exc.dev_id, exc.transaction_id)
                self._queue(reply, addr, answer=False)
                n = end - used
            used += n
            if self.last_pdu is not None:
                self._queue(self.last_pdu, self.last_addr, answer=True)
            if not n and not self.server.bmsgw_serial and _bad_mbap(data[used:]):
                # pymodbus would wait forever on it; closing makes the client reconnect clean
                _client_log.warning("modbus tcp framing error; closing the connection", peer=self._peer())
                if self.transport is not None:
                    self.transport.close()
                return len(data)
            if not n or used >= len(data):
                return used

    def server_send(self, pdu: ModbusPDU | None, addr: Any) -> None:
        """Send `pdu`, except on RS485 for another unit (pymodbus answers a frame it cannot decode)."""
        if self.server.bmsgw_serial and pdu is not None and pdu.dev_id != self.server.unit_id:
            return
        super().server_send(pdu, addr)  # type: ignore[no-untyped-call]

    def send(self, data: bytes, addr: tuple[str, int] | None = None) -> None:
        """Write `data`; what was read after the request (the start of the next one) stays buffered."""
        kept = self.recv_buffer
        super().send(data, addr)
        self.recv_buffer = kept

    def _queue(self, pdu: ModbusPDU, addr: Any, *, answer: bool) -> None:
        """Handle `pdu` after those before it: a request to `answer`, else a reply to send as it is."""
        self._requests.append((pdu, addr, answer))
        self.loop.call_soon(self.handle_later)

    async def handle_request(self) -> None:
        async with self._turn:
            if not self._requests:
                return
            pdu, addr, answer = self._requests.popleft()
            if not answer:
                self.server_send(pdu, addr)
                return
            self.last_pdu, self.last_addr = pdu, addr
            await self._answer()

    def _peer(self) -> str | None:
        name = self.transport.get_extra_info("peername") if self.transport is not None else None
        return str(name[0]) if name else None

    async def _answer(self) -> None:
        pdu = self.last_pdu
        owner = self.server
        if pdu is None:
            return
        if pdu.dev_id != owner.unit_id:
            if not owner.bmsgw_serial:  # on RS485 another device answers (or nobody: a broadcast)
                reply = ExceptionResponse(pdu.function_code, ExcCodes.GATEWAY_NO_RESPONSE)
                reply.transaction_id, reply.dev_id = pdu.transaction_id, pdu.dev_id
                self.server_send(reply, self.last_addr)
            return
        token = _PEER.set(None if owner.bmsgw_serial else self._peer())
        try:
            await super().handle_request()  # type: ignore[no-untyped-call]
        finally:
            _PEER.reset(token)


def _mbap_size(data: bytes) -> int:
    """Bytes of the MBAP frame `data` starts with (all of `data` while its header is incomplete)."""
    return 6 + (data[4] << 8 | data[5]) if len(data) >= 6 else len(data)


def _bad_mbap(data: bytes) -> bool:
    """An MBAP header that no request can have: protocol id not 0, or a length outside 2..254."""
    if len(data) < 6:
        return False
    length = data[4] << 8 | data[5]
    return data[2:4] != b"\0\0" or not 2 <= length <= 254


class _OwnHandler:
    """Server mixin: connections get a _Handler, which reads `unit_id` and `bmsgw_serial` from here."""

    bmsgw_serial: bool
    unit_id: int = 1

    def callback_new_connection(self) -> _Handler:
        server: Any = self
        return _Handler(server, server.trace_packet, server.trace_pdu, server.trace_connect)


class _TcpServer(_OwnHandler, ModbusTcpServer):
    bmsgw_serial = False


class _SerialServer(_OwnHandler, ModbusSerialServer):
    bmsgw_serial = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.framer = _RtuFramer
