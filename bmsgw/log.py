"""structlog: JSON lines off a TTY, console on a TTY; python-can and pymodbus stdlib logs go through it."""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

__all__ = ["RateLimit", "configure", "get_logger"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure(fmt: Literal["auto", "json", "console"] = "auto", level: str = "info") -> None:
    """Configure structlog and the stdlib root logger to emit through the same renderer."""
    json_out = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json_out else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *([structlog.processors.dict_tracebacks] if json_out else []),
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])
    # python-can and pymodbus are chatty at INFO; keep their warnings, but a garbage flood from a Modbus
    # client (pymodbus logs every bad frame with a hex dump) must not fill the journal.
    for name in _LIBRARIES:
        logging.getLogger(name).setLevel(max(_LEVELS[level], logging.WARNING))
    handler.addFilter(RateLimit((*_LIBRARIES, *_PEER_DRIVEN)))


_LIBRARIES = ("can", "pymodbus")
# one record per request a client may send in a loop; asyncio warns on every write to a peer that left
_PEER_DRIVEN = ("bmsgw.outputs.modbus.clients", "asyncio")


class RateLimit(logging.Filter):
    """For loggers under `prefixes` (dotted names): at most `burst` records per `window_s` per prefix (by
    the records' own timestamps); the first record after a suppressed stretch says how many were dropped.
    Others pass."""

    def __init__(self, prefixes: tuple[str, ...], burst: int = 20, window_s: float = 60.0) -> None:
        super().__init__()
        self.prefixes = prefixes
        self.burst = burst
        self.window_s = window_s
        self.suppressed: dict[str, int] = {}
        self._window: dict[str, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """True to emit `record`."""
        top = next((p for p in self.prefixes if record.name == p or record.name.startswith(p + ".")), None)
        if top is None:
            return True
        start, count = self._window.get(top, (-1e300, 0))
        if record.created - start >= self.window_s:
            start, count = record.created, 0
        self._window[top] = (start, count + 1)
        if count + 1 > self.burst:
            self.suppressed[top] = self.suppressed.get(top, 0) + 1
            return False
        dropped = self.suppressed.pop(top, 0)
        if dropped and isinstance(record.msg, dict):  # a structlog event
            record.msg["suppressed"] = dropped
        elif dropped:
            record.msg = f"{record.msg} ({dropped} more {top} messages suppressed)"
        return True


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger bound to `name`."""
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
