"""The log line of each CRI call that succeeded, written without structlog's processor chain.

Every CRI call is logged ("cri call": method, duration, code, ids). Through structlog that
line costs ~15 us (its processors: context variables, level, time stamp, exception info,
JSON); when structlog is set up as common.log.configure sets it up for JSON lines, with info
enabled, `CallLog` writes the same line itself (~4 us): the same keys in the same order, the
same values, to the same stream under structlog's lock for it. Under any other set-up (the
console renderer, another level, a test's capture, a context variable bound) the line goes
through structlog. Failed calls always do (criserver.errors).
"""
from __future__ import annotations

import datetime
import json
import logging
from contextvars import copy_context
from typing import Any

import structlog
from structlog.contextvars import STRUCTLOG_KEY_PREFIX

from pycri.common import log as common_log

EVENT = "cri call"
_TAIL = f'"event": "{EVENT}", "level": "info", "timestamp": "'
_UTC = datetime.timezone.utc
_quote = json.encoder.encode_basestring_ascii  # (what json.dumps does with a str, ensure_ascii being its default)


class CallLog:
    """Writes the "cri call" line of a call that succeeded."""

    def __init__(self, logger: Any = None) -> None:
        self.logger = logger if logger is not None else structlog.get_logger("cri")
        self._printer = json_printer(self.logger)

    def ok(self, method: str, duration_ms: float, ids: dict[str, str], messages: int | None = None) -> None:
        """The line of a call that succeeded: as log.info("cri call", method=, duration_ms=,
        code="OK", [messages=,] **ids) writes it."""
        printer = self._printer
        if printer is None or _bound_context():
            if messages is None:
                self.logger.info(EVENT, method=method, duration_ms=duration_ms, code="OK", **ids)
            else:
                self.logger.info(EVENT, method=method, duration_ms=duration_ms, code="OK", messages=messages, **ids)
            return
        parts = [f'{{"method": {_quote(method)}, "duration_ms": {duration_ms!r}, "code": "OK", ']
        if messages is not None:
            parts.append(f'"messages": {messages!r}, ')
        for key, value in ids.items():
            parts.append(f'{_quote(key)}: {_quote(value)}, ')
        now = datetime.datetime.now(tz=_UTC).isoformat().replace("+00:00", "Z")
        parts.append(f'{_TAIL}{now}"}}')
        printer.msg("".join(parts))


def json_printer(logger: Any) -> Any | None:
    """structlog's PrintLogger that `logger` writes to, when structlog is set up as
    common.log.configure sets it up for JSON lines and `logger` logs at info; else None."""
    config = structlog.get_config()
    processors = config["processors"]
    if len(processors) != 5:
        return None
    merge, level, stamper, exc_info, renderer = processors
    if not (merge is structlog.contextvars.merge_contextvars and level is structlog.processors.add_log_level
            and isinstance(stamper, structlog.processors.TimeStamper)
            and (stamper.fmt or "").lower() == "iso" and stamper.utc and stamper.key == "timestamp"
            and exc_info is structlog.processors.format_exc_info
            and isinstance(renderer, structlog.processors.JSONRenderer)
            and getattr(renderer, "_dumps", None) in (common_log._dumps, json.dumps)
            and set(getattr(renderer, "_dumps_kw", {"?": 0})) <= {"default"}):  # (str, int, float: no default needed)
        return None
    try:
        bound = logger.bind()
    except Exception:  # noqa: BLE001 - not a structlog logger: it logs as it does
        return None
    enabled = getattr(bound, "is_enabled_for", None)
    if enabled is None or not enabled(logging.INFO):
        return None
    printer = getattr(bound, "_logger", None)
    return printer if type(printer) is structlog.PrintLogger else None


def _bound_context() -> bool:
    """Whether a structlog context variable is bound (merge_contextvars would add it to the line)."""
    context = copy_context()
    return any(var.name.startswith(STRUCTLOG_KEY_PREFIX) and value is not Ellipsis for var, value in context.items())
