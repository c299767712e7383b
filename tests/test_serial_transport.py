"""Serial transport over a real pty pair and a socket:// URL."""

from __future__ import annotations

import asyncio

import pytest
from ptys import pty_pair

from bmsgw.transport.serial import SerialError, open_serial


async def test_bytes_both_ways_over_a_pty() -> None:
    with pty_pair() as peer:
        reader, writer = await open_serial(peer.path, 115200)
        try:
            writer.write(b"~20024642E00202FD33\r")
            await writer.drain()
            got = b""
            for _ in range(100):
                got += peer.read_available()
                if got.endswith(b"\r"):
                    break
                await asyncio.sleep(0.01)
            assert got == b"~20024642E00202FD33\r"
            peer.write(b"\xdd\x03\x00\x77")
            assert await asyncio.wait_for(reader.readexactly(4), 2) == b"\xdd\x03\x00\x77"
        finally:
            writer.close()


async def test_socket_url() -> None:
    async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(await r.readexactly(3))
        await w.drain()
        w.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        reader, writer = await open_serial(f"socket://127.0.0.1:{port}", 9600)
        writer.write(b"abc")
        assert await asyncio.wait_for(reader.readexactly(3), 2) == b"abc"
        writer.close()


async def test_missing_port_names_it() -> None:
    with pytest.raises(SerialError, match="/dev/ttyNOPE"):
        await open_serial("/dev/ttyNOPE", 9600)
