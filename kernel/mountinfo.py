"""/proc/<pid>/mountinfo, parsed: the one reader of the mount table for the daemon and the runtime.

Standard library only, and light (no dataclasses, no re): pycri-runtime loads it on every
create. A line is

    36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue
    (1)(2)(3)   (4)   (5)         (6)       (7...)   (-) (8)  (9)       (10)

and the kernel escapes space, tab, newline and backslash in paths as \\ooo.
"""
from __future__ import annotations

from pycri.kernel.record import Record

MOUNTINFO = "/proc/self/mountinfo"


class MountInfo(Record):
    """One line of mountinfo."""

    __slots__ = ("mount_id", "parent_id", "device", "root", "mountpoint", "options", "optional", "fstype",
                 "source", "super_options", "unique_id")

    def __init__(self, mount_id: int, parent_id: int, device: str, root: str, mountpoint: str, options: str,
                 optional: list[str], fstype: str, source: str, super_options: str, unique_id: int = 0) -> None:
        self.mount_id = mount_id
        self.parent_id = parent_id
        self.device = device  # "major:minor" of the filesystem (st_dev of its files)
        self.root = root  # the path inside the filesystem that is mounted
        self.mountpoint = mountpoint
        self.options = options  # per-mount options
        self.optional = optional  # shared:N, master:N, propagate_from:N, unbindable
        self.fstype = fstype
        self.source = source
        self.super_options = super_options
        # statmount's 64-bit id, never reused, so in mount order (0: from a mountinfo line)
        self.unique_id = unique_id

    @property
    def shared(self) -> bool:
        return any(o.startswith("shared:") for o in self.optional)

    @property
    def private(self) -> bool:
        """Neither shared nor a slave: mounts below it propagate nowhere, and nothing into it."""
        return not any(o.startswith(("shared:", "master:")) for o in self.optional)


def unescape(field: str) -> str:
    """A path field as the kernel wrote it (\\ooo octal escapes) back as the path."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[MountInfo]:
    """Every well-formed line of `text`, in order (later lines are mounted on top of earlier ones)."""
    entries = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 9 or "-" not in fields[6:]:
            continue
        dash = fields.index("-", 6)
        if len(fields) < dash + 3:
            continue
        entries.append(MountInfo(
            mount_id=int(fields[0]), parent_id=int(fields[1]), device=fields[2], root=unescape(fields[3]),
            mountpoint=unescape(fields[4]), options=fields[5], optional=fields[6:dash],
            fstype=fields[dash + 1], source=unescape(fields[dash + 2]),
            super_options=fields[dash + 3] if len(fields) > dash + 3 else "",
        ))
    return entries


def read_mountinfo(path: str = MOUNTINFO) -> list[MountInfo]:
    """The mount table of this process's mount namespace (or of `path`'s)."""
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return parse_mountinfo(f.read())


def mount_at(entries: list[MountInfo], path: str) -> MountInfo | None:
    """The topmost mount whose mount point is `path` (a resolved path), None if it is not one."""
    found = None
    for entry in entries:
        if entry.mountpoint == path:
            found = entry  # later lines are stacked on top of earlier ones
    return found


def mount_containing(entries: list[MountInfo], path: str) -> MountInfo | None:
    """The mount `path` lives on (the last-mounted one with the longest mountpoint prefix)."""
    best: MountInfo | None = None
    for entry in entries:
        mp = entry.mountpoint
        if path == mp or path.startswith(mp.rstrip("/") + "/"):
            if best is None or len(mp) >= len(best.mountpoint):
                best = entry
    return best
