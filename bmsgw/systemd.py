"""sd_notify without libsystemd: readiness, status, reload/stop notices and a liveness-checked watchdog.

The protocol is one datagram of newline-separated ``KEY=VALUE`` fields to the AF_UNIX socket named by
``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace). Without ``$NOTIFY_SOCKET`` (not
under systemd, in Docker) every call is a no-op; a failed send is logged and never raised.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping

from bmsgw.log import get_logger

__all__ = [
    "notify",
    "ready",
    "reloading",
    "status",
    "stopping",
    "watchdog",
    "watchdog_interval",
    "watchdog_loop",
]

_log = get_logger(__name__)
_failing = False  # log a failing socket once, not on every ping


def notify(*fields: str, env: Mapping[str, str] | None = None) -> bool:
    """Send `fields` ("KEY=VALUE") as one message; False when there is no socket or the send failed."""
    addr = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if not addr or not fields:
        return False
    global _failing  # noqa: PLW0603 (one process-wide notify socket)
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(addr)
            sock.sendall("\n".join(fields).encode())
    except (OSError, ValueError) as exc:
        if not _failing:
            _log.warning("sd_notify failed", socket=addr.replace("\0", "@"), error=str(exc))
        _failing = True
        return False
    _failing = False
    return True


def ready(status_text: str | None = None) -> bool:
    """READY=1 (startup or reload finished), with an optional STATUS."""
    return notify("READY=1", *_status(status_text))


def reloading(status_text: str | None = None) -> bool:
    """RELOADING=1 with MONOTONIC_USEC (what Type=notify-reload, systemd >= 253, expects)."""
    return notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}", *_status(status_text))


def stopping(status_text: str | None = None) -> bool:
    """STOPPING=1: shutdown has begun."""
    return notify("STOPPING=1", *_status(status_text))


def status(text: str) -> bool:
    """STATUS=<one line> shown by `systemctl status`."""
    return notify(*_status(text))


def watchdog(status_text: str | None = None) -> bool:
    """WATCHDOG=1: the service is alive (see watchdog_loop for when that may be claimed)."""
    return notify("WATCHDOG=1", *_status(status_text))


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between pings (half of $WATCHDOG_USEC), or None when no watchdog is set for this process."""
    e = os.environ if env is None else env
    try:
        usec = int(e.get("WATCHDOG_USEC", ""))
        pid = int(e.get("WATCHDOG_PID", str(os.getpid())))
    except ValueError:
        return None
    if usec <= 0 or pid != os.getpid():
        return None
    return usec / 2e6


async def watchdog_loop(
    healthy: Callable[[], bool],
    status_line: Callable[[], str],
    *,
    interval: float | None,
    status_period_s: float = 5.0,
) -> None:
    """Until cancelled: every `interval` s send WATCHDOG=1 only if `healthy()`, and STATUS when it changed.

    `healthy()` is asked once per interval and must compare with its previous answer's situation (e.g.
    "the pipeline stepped since the last call"). Without a watchdog only STATUS is kept current.
    """
    period = interval if interval is not None else status_period_s
    last_status = ""
    was_healthy = True
    while True:
        await asyncio.sleep(period)
        fields = []
        if interval is not None:
            ok = healthy()
            if ok:
                fields.append("WATCHDOG=1")
            elif was_healthy:
                _log.error("liveness check failed: withholding the systemd watchdog ping")
            if ok and not was_healthy:
                _log.warning("liveness check passes again")
            was_healthy = ok
        text = _one_line(status_line())
        if text != last_status:
            fields.append(f"STATUS={text}")
            last_status = text
        if fields:
            notify(*fields)


def _status(text: str | None) -> list[str]:
    return [] if text is None else [f"STATUS={_one_line(text)}"]


def _one_line(text: str) -> str:
    return " ".join(text.split())
