"""A real mosquitto broker on a free loopback port (optionally with passwords or TLS); a TCP proxy to cut."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class TlsFiles:
    """A throw-away CA and a server certificate for 127.0.0.1 signed by it."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def make(cls, folder: Path) -> TlsFiles:
        """Generate the CA and the server certificate with the openssl command line tool."""
        folder.mkdir(parents=True, exist_ok=True)
        ca, ca_key = folder / "ca.pem", folder / "ca.key"
        cert, key, csr = folder / "server.pem", folder / "server.key", folder / "server.csr"
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        _run(
            "openssl",
            "req",
            "-x509",
            *ec,
            "-keyout",
            ca_key,
            "-out",
            ca,
            "-days",
            "2",
            "-subj",
            "/CN=bmsgw test CA",
        )
        _run("openssl", "req", "-new", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
        ext = folder / "san.ext"
        ext.write_text("subjectAltName=IP:127.0.0.1\n")
        _run("openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
             "-out", cert, "-days", "2", "-extfile", ext)  # fmt: skip
        return cls(ca, cert, key)


class Mosquitto:
    """`mosquitto -c <conf>` on 127.0.0.1:<port>; anonymous unless `users` is given; no persistence."""

    def __init__(
        self, folder: Path, *, users: dict[str, str] | None = None, tls: TlsFiles | None = None
    ) -> None:
        if shutil.which("mosquitto") is None:
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto; see .ci/run)")
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.port = free_port()
        self.log = folder / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None
        lines = [f"listener {self.port} 127.0.0.1", "persistence false", "log_dest stderr", "log_type all"]
        if os.geteuid() == 0:
            lines.append("user root")  # otherwise it drops to user mosquitto and cannot read our files
        if users:
            pw = folder / "passwords"
            pw.write_text("")
            for user, password in users.items():
                _run("mosquitto_passwd", "-b", pw, user, password)
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines.append("allow_anonymous true")
        if tls:
            lines += [f"cafile {tls.ca}", f"certfile {tls.cert}", f"keyfile {tls.key}"]
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> None:
        """Start the broker and wait until it accepts connections."""
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(["mosquitto", "-c", str(self.conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self._proc.returncode}:\n{self.log.read_text()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(
            f"mosquitto did not listen on {self.port} within {timeout}s:\n{self.log.read_text()}"
        )

    def stop(self) -> None:
        """Terminate the broker (its clients see the connection drop) and wait for it to exit."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def restart(self) -> None:
        """Stop, then start again on the same port (retained messages are lost: no persistence)."""
        self.stop()
        self.start()


class Proxy:
    """A TCP forwarder to 127.0.0.1:`target`; `cut()` aborts every connection through it (no DISCONNECT)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen on a free port."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def cut(self) -> None:
        """Reset every open connection on both sides."""
        for w in self._writers:
            w.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        """Stop listening, cut everything and wait for the forwarding tasks to end."""
        if self._server is not None:
            self._server.close()
        self.cut()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            self._handlers.discard(task)
            return
        self.connections += 1
        self._writers += [writer, up_writer]
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True)
        self._handlers.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


def _run(*args: object) -> None:
    subprocess.run([str(a) for a in args], check=True, capture_output=True, timeout=30)
