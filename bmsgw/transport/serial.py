"""Serial ports (RS485/UART, or `socket://host:port` RS485-to-Ethernet bridges) as asyncio streams."""

from __future__ import annotations

import asyncio

import serial
import serial_asyncio

__all__ = ["SerialError", "open_serial"]


class SerialError(Exception):
    """The port cannot be opened (missing device, no permission, bad URL)."""


async def open_serial(
    port: str, baudrate: int, *, timeout_s: float = 2.0
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open `port` (device path or pyserial URL) 8N1 at `baudrate`; SerialError names the port on failure."""
    try:
        async with asyncio.timeout(timeout_s):
            streams: tuple[asyncio.StreamReader, asyncio.StreamWriter]
            streams = await serial_asyncio.open_serial_connection(url=port, baudrate=baudrate)
            return streams
    except (serial.SerialException, OSError, ValueError, TimeoutError) as exc:
        raise SerialError(f"cannot open serial port {port} at {baudrate} baud: {exc}") from exc
