"""criserver/call_log.py: the "cri call" line written without structlog's chain is the line
structlog writes, byte for byte but the time stamp; any other set-up goes through structlog."""
from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from pycri.common import log
from pycri.criserver.call_log import CallLog

IDS = {"container_id": "c" * 64, "image": 'docker.io/library/büsy"box\\:1'}


@pytest.fixture
def stderr(monkeypatch: Any) -> Iterator[Any]:
    """Sets sys.stderr to a StringIO when called (in the test: pytest sets its own capture
    again once the test's fixtures are set up), which common.log.configure then writes to."""
    def patch() -> io.StringIO:
        out = io.StringIO()
        monkeypatch.setattr("sys.stderr", out)
        return out
    yield patch
    structlog.reset_defaults()


def lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


def without_time(line: str) -> tuple[str, str]:
    head, _, stamp = line.rpartition('"timestamp": "')
    return head, stamp


@pytest.mark.parametrize("messages", [None, 3])
def test_the_fast_line_is_structlogs_line(stderr: Any, messages: int | None) -> None:
    out = stderr()
    log.configure("info", "json")
    call_log = CallLog()
    assert call_log._printer is not None  # the fast path is taken under the daemon's set-up
    extra = {} if messages is None else {"messages": messages}
    call_log.ok("ImageStatus", 0.12, IDS, messages=messages)
    structlog.get_logger("cri").info("cri call", method="ImageStatus", duration_ms=0.12, code="OK", **extra, **IDS)
    fast, slow = lines(out)
    assert without_time(fast)[0] == without_time(slow)[0]
    assert list(json.loads(fast)) == list(json.loads(slow))  # the same keys, in the same order
    assert json.loads(fast)["image"] == IDS["image"]
    assert without_time(fast)[1].endswith('Z"}') and len(without_time(fast)[1]) == len(without_time(slow)[1])


def test_calls_are_not_logged_below_their_level(stderr: Any) -> None:
    out = stderr()
    log.configure("warning", "json")
    CallLog().ok("Version", 0.01, {})
    assert out.getvalue() == ""


def test_the_console_renderer_and_a_capture_get_the_line_through_structlog(stderr: Any) -> None:
    out = stderr()
    log.configure("info", "console")
    call_log = CallLog()
    assert call_log._printer is None
    call_log.ok("Version", 0.01, {"container_id": "c1"})
    assert "cri call" in out.getvalue() and "container_id" in out.getvalue()
    log.configure("info", "json")
    with structlog.testing.capture_logs() as captured:
        CallLog().ok("Version", 0.01, {"container_id": "c1"})
    assert captured == [{"event": "cri call", "method": "Version", "duration_ms": 0.01, "code": "OK",
                         "container_id": "c1", "log_level": "info"}]


def test_a_bound_context_variable_takes_structlogs_way(stderr: Any) -> None:
    out = stderr()
    log.configure("info", "json")
    call_log = CallLog()
    structlog.contextvars.bind_contextvars(request="r1")
    try:
        call_log.ok("Version", 0.01, {})
    finally:
        structlog.contextvars.clear_contextvars()
    assert json.loads(out.getvalue())["request"] == "r1"
