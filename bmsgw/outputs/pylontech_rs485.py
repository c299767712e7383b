"""Pylontech RS485 output: a battery stack answering inverter requests on a serial line and/or over TCP.

Each configured pack is one module at ADR ``address + pack index``. Requests are cut out of the byte stream
by `FrameSplitter` (bytes outside frames are counted in `garbage`), answered by the pure codec from the
newest GatewayState (`answer`), and refused ones get the protocol's RTN code or, when not even the header
is readable, silence (`errors`). The serial port is reopened with backoff when it fails or vanishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from typing import Any

from bmsgw import __version__
from bmsgw.clock import Clock
from bmsgw.config import OutputConfig, Settings
from bmsgw.inverter.pylontech_rs485 import FrameSplitter, ModuleInfo, StackInfo, Thresholds, answer
from bmsgw.log import get_logger
from bmsgw.model import GatewayState
from bmsgw.pipeline import core_params
from bmsgw.transport.serial import SerialError, open_serial

__all__ = ["DEFAULT_BAUDRATE", "MAX_TCP_SESSIONS", "TCP_IDLE_S", "PylontechRs485Output", "stack_info"]

DEFAULT_BAUDRATE = 115200  # V3.3 §2.1; 9600 when DIP switch 1 is set on the master
MAX_TCP_SESSIONS = 16  # concurrent TCP clients; more are closed at once
TCP_IDLE_S = 300.0  # a TCP client silent this long (wall seconds) is closed; inverters poll every few s
_READ_SIZE = 4096
_BACKOFF_S = (0.5, 30.0)  # first retry, ceiling (doubling in between)

_log = get_logger(__name__)


def stack_info(settings: Settings, cfg: OutputConfig) -> StackInfo:
    """The stack the configuration describes: one module per pack, thresholds as the core applies them."""
    p = core_params(settings)
    thresholds = Thresholds(
        cell_v_high=p.cell_v_max_alarm,
        cell_v_low=p.cell_v_min_warn,
        cell_v_under=p.cell_v_min_alarm,
        charge_t_high=p.charge_temp_max_c,
        charge_t_low=p.charge_temp_min_c,
        discharge_t_high=p.discharge_temp_max_c,
        discharge_t_low=p.discharge_temp_min_c,
        charge_current=p.max_charge_current_a,
        discharge_current=p.max_discharge_current_a,
    )
    modules = tuple(ModuleInfo(pk.capacity_ah, pk.cells, pk.sensors, pk.id) for pk in settings.packs)
    major, minor, patch, *_ = [int(x) for x in re.findall(r"\d+", __version__)] + [0, 0, 0]
    return StackInfo(
        modules=modules,
        thresholds=thresholds,
        base_address=cfg.address,
        device_name=settings.gateway.name,
        manufacturer=cfg.manufacturer,
        version=(major, minor, patch),
        unknown_temperature_c=cfg.unknown_temperature_c,
    )


class PylontechRs485Output:
    """One configured Pylontech RS485 output; serves until cancelled, whatever the line delivers."""

    def __init__(
        self, settings: Settings, cfg: OutputConfig, clock: Clock, state: Callable[[], GatewayState]
    ) -> None:
        self.cfg = cfg
        self.stack = stack_info(settings, cfg)
        self._clock = clock
        self._state = state
        self.sent = 0  # responses written
        self.requests = 0  # candidate frames received
        self.errors = 0  # candidates refused (answered with an RTN error or dropped)
        self.garbage = 0  # bytes outside any frame, discarded
        self.serial_opens = 0  # successful serial (re)opens
        self.max_sessions = MAX_TCP_SESSIONS
        self.idle_s = TCP_IDLE_S
        self.refused = 0  # TCP connections refused: max_sessions already open
        self.idle_closed = 0  # TCP sessions closed after idle_s without a byte
        self.tcp_address: tuple[str, int] | None = None  # where the TCP listener is bound, once it is

    async def run(self) -> None:
        """Serve the serial port and/or the TCP listener until cancelled."""
        async with asyncio.TaskGroup() as tg:
            if self.cfg.port is not None:
                tg.create_task(self._serve_serial(self.cfg.port, self.cfg.baudrate or DEFAULT_BAUDRATE))
            if self.cfg.tcp_port is not None:
                tg.create_task(self._serve_tcp(self.cfg.host, self.cfg.tcp_port))

    def reply(self, raw: bytes) -> bytes | None:
        """Count one candidate frame and return the bytes to send back (None: stay silent)."""
        self.requests += 1
        try:
            result = answer(raw, self._state(), self.stack)
        except Exception:  # a bug in a payload builder must not take the line down
            self.errors += 1
            _log.exception("pylontech-rs485 answer failed", frame=raw[:64].decode("ascii", "replace"))
            return None
        if result.error is not None:
            self.errors += 1
            _log.debug("pylontech-rs485 request refused", error=str(result.error))
        return result.reply

    async def _session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, idle_s: float | None = None
    ) -> None:
        """Answer requests on one connection until EOF (or `idle_s` wall seconds without a byte); closes the
        writer."""
        splitter = FrameSplitter()
        try:
            while True:
                async with asyncio.timeout(idle_s):
                    data = await reader.read(_READ_SIZE)
                if not data:
                    break
                before = splitter.discarded
                for raw in splitter.feed(data):
                    out = self.reply(raw)
                    if out is not None:
                        writer.write(out)
                        self.sent += 1
                self.garbage += splitter.discarded - before
                await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _serve_serial(self, port: str, baudrate: int) -> None:
        backoff = _BACKOFF_S[0]
        while True:
            try:
                reader, writer = await open_serial(port, baudrate)
            except SerialError as exc:
                _log.warning("pylontech-rs485 serial port unavailable", port=port, error=str(exc))
            else:
                self.serial_opens += 1
                backoff = _BACKOFF_S[0]
                _log.info("pylontech-rs485 serving", port=port, baudrate=baudrate)
                try:
                    await self._session(reader, writer)
                    _log.warning("pylontech-rs485 serial port closed", port=port)
                except OSError as exc:  # pyserial's SerialException is an OSError
                    _log.warning("pylontech-rs485 serial port failed", port=port, error=str(exc))
            await asyncio.sleep(backoff / self._clock.speed)
            backoff = min(backoff * 2, _BACKOFF_S[1])

    async def _serve_tcp(self, host: str, port: int) -> None:
        sessions: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}

        async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            if len(sessions) >= self.max_sessions:  # an inverter needs one; a flood of idle sockets none
                self.refused += 1
                writer.close()
                return
            sessions[task] = writer
            try:
                await self._session(reader, writer, self.idle_s)
            except TimeoutError:  # (an OSError too: before it)
                self.idle_closed += 1
                _log.debug("pylontech-rs485 idle client closed", idle_s=self.idle_s)
            except OSError as exc:  # reset by peer
                _log.debug("pylontech-rs485 client dropped", error=str(exc))
            finally:
                sessions.pop(task, None)

        backoff = _BACKOFF_S[0]
        while True:
            try:
                server = await asyncio.start_server(client, host, port)
            except OSError as exc:  # address in use, unknown host
                _log.warning("pylontech-rs485 cannot listen", host=host, tcp_port=port, error=str(exc))
                await asyncio.sleep(backoff / self._clock.speed)
                backoff = min(backoff * 2, _BACKOFF_S[1])
                continue
            try:
                self.tcp_address = server.sockets[0].getsockname()[:2]
                _log.info("pylontech-rs485 listening", host=self.tcp_address[0], tcp_port=self.tcp_address[1])
                async with server:
                    await server.serve_forever()
            finally:
                # End open sessions by closing their sockets (their reads see EOF): cancelling a
                # start_server handler task makes Python 3.11's stream callback log a spurious error.
                for writer in list(sessions.values()):
                    writer.close()
                if sessions:
                    await asyncio.wait(list(sessions), timeout=2)
