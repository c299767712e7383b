"""structlog: JSON lines off a TTY, console on a TTY; python-can and pymodbus stdlib logs go through it."""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

__all__ = ["configure", "get_logger"]

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
    # python-can and pymodbus are chatty at INFO; keep their warnings.
    for name in ("can", "pymodbus"):
        logging.getLogger(name).setLevel(max(_LEVELS[level], logging.WARNING))


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger bound to `name`."""
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
