"""structlog set-up: JSON lines for machines, a console renderer for people."""
from __future__ import annotations

import json
import logging
import sys
from typing import Any

import structlog


def _json_default(obj: Any) -> Any:
    """What JSONRenderer does with a value JSON has no type for: its __structlog__, or repr."""
    try:
        return obj.__structlog__()
    except AttributeError:
        return repr(obj)


_ENCODER = json.JSONEncoder(default=_json_default)


def _dumps(obj: Any, **_kw: Any) -> str:
    """json.dumps(obj, default=_json_default), with one encoder for every line (json.dumps
    makes one per call when given `default`: a CRI call's log line is on its reply's path)."""
    return _ENCODER.encode(obj)


def configure(level: str = "info", fmt: str = "json") -> None:
    renderer: structlog.typing.Processor
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_dumps)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
