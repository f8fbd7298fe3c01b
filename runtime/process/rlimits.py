"""process.rlimits: RLIMIT_* names to resource numbers, set with setrlimit."""
from __future__ import annotations

from pycri.kernel.syscall import Syscall
from pycri.runtime.errors import RuntimeFailure
from pycri.runtime.spec import Rlimit

RESOURCES = {
    "RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3, "RLIMIT_CORE": 4,
    "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7, "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9,
    "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11, "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13,
    "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
}
INFINITY = (1 << 64) - 1


def resource_number(name: str) -> int:
    try:
        return RESOURCES[name]
    except KeyError:
        raise RuntimeFailure(f"unknown rlimit type {name!r}") from None


def _value(raw: int) -> int:
    # the spec's uint64 max (and anything at or above 2^63) is RLIM_INFINITY; resource wants -1
    return -1 if raw < 0 or raw >= (1 << 63) else raw


def apply_rlimits(kernel: Syscall, rlimits: list[Rlimit]) -> None:
    for limit in rlimits:
        number = resource_number(limit.type)
        try:
            kernel.setrlimit(number, _value(limit.soft), _value(limit.hard))
        except (OSError, ValueError) as e:
            reason = getattr(e, "strerror", None) or e
            raise RuntimeFailure(f"error setting rlimit type {limit.type}: {reason}") from None
