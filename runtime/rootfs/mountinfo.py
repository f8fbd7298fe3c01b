"""/proc/self/mountinfo, parsed."""
from __future__ import annotations

from pycri.runtime.spec import Record


class MountInfo(Record):
    __slots__ = ("mount_id", "parent_id", "root", "mountpoint", "options", "optional", "fstype", "source",
                 "super_options")

    def __init__(self, mount_id: int, parent_id: int, root: str, mountpoint: str, options: str, optional: list[str],
                 fstype: str, source: str, super_options: str) -> None:
        self.mount_id = mount_id
        self.parent_id = parent_id
        self.root = root  # the path inside the filesystem that is mounted
        self.mountpoint = mountpoint
        self.options = options  # per-mount options
        self.optional = optional  # shared:N, master:N, ...
        self.fstype = fstype
        self.source = source
        self.super_options = super_options

    @property
    def shared(self) -> bool:
        return any(o.startswith("shared:") for o in self.optional)


def _unescape(field: str) -> str:
    # the kernel escapes space, tab, newline and backslash as \ooo
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) + 0 and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[MountInfo]:
    entries = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 10 or "-" not in fields:
            continue
        dash = fields.index("-", 6)
        entries.append(MountInfo(
            mount_id=int(fields[0]), parent_id=int(fields[1]), root=_unescape(fields[3]),
            mountpoint=_unescape(fields[4]), options=fields[5], optional=fields[6:dash],
            fstype=fields[dash + 1], source=_unescape(fields[dash + 2]),
            super_options=fields[dash + 3] if len(fields) > dash + 3 else "",
        ))
    return entries


def read_mountinfo(path: str = "/proc/self/mountinfo") -> list[MountInfo]:
    with open(path) as f:
        return parse_mountinfo(f.read())


def mount_containing(entries: list[MountInfo], path: str) -> MountInfo | None:
    """The mount `path` lives on (the last-mounted one with the longest mountpoint prefix)."""
    best: MountInfo | None = None
    for entry in entries:
        mp = entry.mountpoint
        if path == mp or path.startswith(mp.rstrip("/") + "/"):
            if best is None or len(mp) >= len(best.mountpoint):
                best = entry
    return best
