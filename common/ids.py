"""User and group ids as text (an image's User, /etc/passwd, /etc/group) and their valid range.

An id is 32 bits, and (uid_t)-1 = 4294967295 is no id: setresuid/setresgid take it as "leave
this one unchanged", so a container told to run as 4294967295 would stay root. Only ASCII
digits make a numeric id ("²" or "１" are names, as for containerd and runc); a number too
large for 32 bits is no id either.
"""
from __future__ import annotations

from pycri.common.errors import InvalidArgument

MAX_ID = 4294967294  # 2**32 - 2


def numeric(text: str) -> bool:
    """Whether `text` is written as a numeric id (ASCII digits only), whatever its value."""
    return bool(text) and text.isascii() and text.isdigit()


def parse_id(text: str) -> int | None:
    """The id `text` names if it is numeric and in 0..MAX_ID, else None."""
    if not numeric(text) or len(text.lstrip("0")) > len(str(MAX_ID)):
        return None
    value = int(text)
    return value if value <= MAX_ID else None


def check_id(value: int, what: str) -> int:
    """`value` if it is a valid id, else InvalidArgument naming `what` (e.g. "run_as_user")."""
    if not 0 <= value <= MAX_ID:
        raise InvalidArgument(f"{what} {value} is not a valid id (0..{MAX_ID})")
    return value


def id_of(text: str, what: str) -> int:
    """The numeric id `text` (which `numeric` accepted), or InvalidArgument if out of range."""
    value = parse_id(text)
    if value is None:
        raise InvalidArgument(f"{what} {text[:32]!r} is not a valid id (0..{MAX_ID})")
    return value
