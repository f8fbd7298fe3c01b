"""/etc/passwd and /etc/group text, parsed: the one reader of an image's or a container's user
database, for the daemon (users and groups a container runs as, read inside the image) and
pycri-runtime (HOME of a process whose env has none, read in the container).

Only well-formed lines count, as for getpwent(3): seven fields in a passwd line and four in a
group line, ids written in ASCII digits (at most 20 of them: anything longer is no id, and
would only cost time to convert). A home that is empty or holds a NUL is "/". Whether an id
is in range is for the caller (`common.ids.check_id`). Standard library only, and light:
pycri-runtime loads it.
"""
from __future__ import annotations

from pycri.kernel.record import Record

# How much of either file is read. A line is some 30-100 bytes, so this is ten thousand
# accounts or more, far beyond the local accounts of any image (directory users are not in
# these files); it bounds what a hostile image makes pycri read and parse.
MAX_BYTES = 1 << 20
MAX_ID_DIGITS = 20


class PasswdEntry(Record):
    """One line of /etc/passwd."""

    __slots__ = ("name", "uid", "gid", "home")

    def __init__(self, name: str, uid: int, gid: int, home: str) -> None:
        self.name = name
        self.uid = uid
        self.gid = gid
        self.home = home


class GroupEntry(Record):
    """One line of /etc/group."""

    __slots__ = ("name", "gid", "members")

    def __init__(self, name: str, gid: int, members: list[str]) -> None:
        self.name = name
        self.gid = gid
        self.members = members


def _is_id(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= MAX_ID_DIGITS


def parse_passwd(text: str) -> list[PasswdEntry]:
    """The well-formed lines of a passwd file, in order."""
    entries = []
    for line in text.splitlines():
        f = line.split(":")
        if len(f) >= 7 and _is_id(f[2]) and _is_id(f[3]):
            entries.append(PasswdEntry(f[0], int(f[2]), int(f[3]), f[5] if f[5] and "\0" not in f[5] else "/"))
    return entries


def parse_group(text: str) -> list[GroupEntry]:
    """The well-formed lines of a group file, in order."""
    entries = []
    for line in text.splitlines():
        f = line.split(":")
        if len(f) >= 4 and _is_id(f[2]):
            entries.append(GroupEntry(f[0], int(f[2]), [m for m in f[3].split(",") if m]))
    return entries


def home_of(entries: list[PasswdEntry], uid: int) -> str:
    """The home directory of the first entry for `uid`, "/" if there is none."""
    return next((e.home for e in entries if e.uid == uid), "/")
