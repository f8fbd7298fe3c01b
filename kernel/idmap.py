"""uid_map and gid_map of a new user namespace: their text, and writing them from outside.

Both the daemon (a pod's pinned user namespace) and pycri-runtime (a container's own) map a
child's namespace this way. Written by a process with CAP_SETGID in the parent namespace,
gid_map needs no "deny" in the child's setgroups file, so the namespace's processes keep
setgroups(2). Standard library only, and light: pycri-runtime loads it on every create.
"""
from __future__ import annotations

TYPE_CHECKING = False  # not `from typing import ...`: the runtime does not load typing
if TYPE_CHECKING:
    from collections.abc import Iterable


class IdMapError(Exception):
    """Writing one of the maps failed; `name` is "uid_map" or "gid_map", `text` what was written."""

    def __init__(self, name: str, text: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.text = text
        self.reason = reason


def id_map_text(mappings: Iterable[tuple[int, int, int]]) -> str:
    """The contents of a uid_map or gid_map file: one `container_id host_id length` line each."""
    return "".join(f"{container_id} {host_id} {length}\n" for container_id, host_id, length in mappings)


def write_id_maps(pid: int, uid_map: str, gid_map: str, proc: str = "/proc") -> None:
    """Write the uid_map, then the gid_map, of process `pid`'s user namespace (IdMapError on failure)."""
    for name, text in (("uid_map", uid_map), ("gid_map", gid_map)):
        try:
            with open(f"{proc}/{pid}/{name}", "w") as f:
                f.write(text)
        except OSError as e:
            raise IdMapError(name, text, str(e.strerror or e)) from None
