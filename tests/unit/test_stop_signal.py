"""The image's StopSignal as a signal number (containers.service.parse_stop_signal)."""
from __future__ import annotations

import signal

import pytest

from pycri.containers.service import parse_stop_signal


@pytest.mark.parametrize("text, expected", [
    ("", signal.SIGTERM), ("SIGTERM", signal.SIGTERM), ("term", signal.SIGTERM), ("15", signal.SIGTERM),
    ("SIGKILL", signal.SIGKILL), ("SIGQUIT", signal.SIGQUIT), (" SIGINT ", signal.SIGINT),
    ("SIGRTMIN+3", signal.SIGRTMIN + 3), ("RTMAX-1", signal.SIGRTMAX - 1),
])
def test_signals(text: str, expected: int) -> None:
    assert parse_stop_signal(text) == int(expected)


@pytest.mark.parametrize("text", ["0", "99", "65", "-1", "SIGFOO", "FOO", "SIGRTMIN+99", "SIG_DFL", "١٥", "9" * 400])
def test_not_signals(text: str) -> None:
    assert parse_stop_signal(text) is None
