"""The remote command protocol's pieces: the error stream's Status per version, exit codes,
terminal size messages."""
from __future__ import annotations

import json
import queue

from pycri.streaming.interface import TerminalSize
from pycri.streaming.remotecommand import (
    encode_status, normalise_exit_code, parse_sizes, pump_resizes, status_exit_code, status_internal_error,
    status_success,
)


class Chunks:
    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)

    def read(self, n: int = -1) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""


def test_success_is_what_client_go_marshals() -> None:
    assert encode_status(status_success(), 4) == b'{"metadata":{},"status":"Success"}'
    assert encode_status(status_success(), 2) == b""


def test_an_exit_code_has_the_shape_client_go_parses() -> None:
    status = json.loads(encode_status(status_exit_code(3, ["sh", "-c", "exit 3"]), 5))
    assert status == {
        "metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
        "message": "command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3",
        "details": {"causes": [{"reason": "ExitCode", "message": "3"}]},
    }
    assert encode_status(status_exit_code(3, ["x"]), 3).startswith(b"command terminated with non-zero exit code")


def test_an_internal_error() -> None:
    status = json.loads(encode_status(status_internal_error("boom"), 4))
    assert status["status"] == "Failure" and status["reason"] == "InternalError" and status["code"] == 500
    assert status["message"] == "Internal error occurred: boom"
    assert encode_status(status_internal_error("boom"), 1) == b"Internal error occurred: boom"


def test_exit_codes_fit_a_byte() -> None:
    assert [normalise_exit_code(c) for c in (0, 1, 255, -9, -15, 300)] == [0, 1, 255, 137, 143, 255]


def test_sizes_in_any_chunking() -> None:
    assert parse_sizes('{"Width":80,"Height":24}\n{"width":100, "height": 40}') == \
        ([TerminalSize(80, 24), TerminalSize(100, 40)], "", True)
    sizes, rest, ok = parse_sizes('{"Width":80,"Height":24}\n{"Wid')
    assert sizes == [TerminalSize(80, 24)] and rest == '{"Wid' and ok
    assert parse_sizes("[1,2]")[2] is False
    assert parse_sizes('{"Width":-1,"Height":2}')[2] is False
    assert parse_sizes('{"Width":65536,"Height":2}')[2] is False
    assert parse_sizes('{"Width":true,"Height":2}')[2] is False  # Go does not decode a bool as uint16
    assert parse_sizes('{"Width":80.0,"Height":2}')[2] is False
    assert parse_sizes('{"Height":7,"Other":"x"}') == ([TerminalSize(0, 7)], "", True)  # missing: 0, unknown: ignored


def test_the_resize_pump_ends_with_none() -> None:
    sizes: queue.Queue[TerminalSize | None] = queue.Queue()
    pump_resizes(Chunks(b'{"Width":80,', b'"Height":24}\n{"Width":1', b'2,"Height":3}'), sizes).join(5)
    assert [sizes.get_nowait() for _ in range(3)] == [TerminalSize(80, 24), TerminalSize(12, 3), None]
