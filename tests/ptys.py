"""A real pty pair for serial tests: the gateway opens one end by path, the test talks on the other."""

from __future__ import annotations

import os
import termios
import tty
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class PtyPair:
    """`path` is what the code under test opens; `fd` is the peer end for the test (raw, non-blocking)."""

    fd: int
    path: str

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)

    def read_available(self) -> bytes:
        try:
            return os.read(self.fd, 65536)
        except BlockingIOError:
            return b""


@contextmanager
def pty_pair() -> Iterator[PtyPair]:
    """Open a raw pty pair; both ends closed on exit."""
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    attrs = termios.tcgetattr(slave)
    attrs[3] &= ~termios.ECHO
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    os.set_blocking(master, False)
    path = os.ttyname(slave)
    try:
        yield PtyPair(master, path)
    finally:
        os.close(master)
        os.close(slave)
