"""Signal names and numbers (Linux x86_64/arm64), and setting handlers, without importing
`signal`: its enums cost start-up, and `_signal`, the C module under it, takes the numbers."""
from __future__ import annotations

import _signal

from pycri.runtime.errors import RuntimeFailure

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType

NUMBERS = {
    "HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "IOT": 6, "BUS": 7, "FPE": 8,
    "KILL": 9, "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14, "TERM": 15,
    "STKFLT": 16, "CHLD": 17, "CONT": 18, "STOP": 19, "TSTP": 20, "TTIN": 21, "TTOU": 22,
    "URG": 23, "XCPU": 24, "XFSZ": 25, "VTALRM": 26, "PROF": 27, "WINCH": 28, "IO": 29,
    "POLL": 29, "PWR": 30, "SYS": 31,
}
SIGRTMIN, SIGRTMAX = 34, 64
SIGHUP, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGPIPE, SIGTERM, SIGCHLD, SIGXFSZ = 1, 2, 3, 10, 12, 13, 15, 17, 25


def set_handler(sig: int, handler: Callable[[int, FrameType | None], object]) -> None:
    """signal.signal(sig, handler)."""
    _signal.signal(sig, handler)


def set_default(sig: int) -> None:
    """signal.signal(sig, signal.SIG_DFL)."""
    _signal.signal(sig, _signal.SIG_DFL)


def parse_signal(text: str) -> int:
    """`KILL`, `SIGKILL`, `kill`, `9`, `RTMIN+3` -> signal number."""
    raw = text.strip()
    if raw.isdigit():
        number = int(raw)
        if 0 < number <= SIGRTMAX:
            return number
        raise RuntimeFailure(f"invalid signal number {raw}")
    name = raw.upper()
    if name.startswith("SIG"):
        name = name[3:]
    if name in NUMBERS:
        return NUMBERS[name]
    for base, number in (("RTMIN", SIGRTMIN), ("RTMAX", SIGRTMAX)):
        if name == base:
            return number
        if name.startswith(base + "+") or name.startswith(base + "-"):
            offset = name[len(base):]
            if offset[1:].isdigit():
                value = number + int(offset)
                if SIGRTMIN <= value <= SIGRTMAX:
                    return value
    raise RuntimeFailure(f"unknown signal {text!r}")
