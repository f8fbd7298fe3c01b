"""Who a container runs as: users and groups looked up in the image's /etc/passwd and /etc/group.

The files are read from the image's unpacked layers, topmost first, so nothing needs
to be mounted to resolve a user name.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.errors import InvalidArgument


@dataclass(frozen=True)
class User:
    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()
    home: str = "/"


@dataclass(frozen=True)
class _PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str


def find_file(layers_bottom_first: list[Path], relative: str) -> Path | None:
    """The file at `relative` as the merged rootfs would show it (whiteouts hide it)."""
    parent, _, name = relative.rpartition("/")
    for layer in reversed(layers_bottom_first):
        candidate = layer / relative
        if candidate.is_file():
            return candidate
        if (layer / parent / f".wh.{name}").exists():
            return None
    return None


def _passwd(layers: list[Path]) -> list[_PasswdEntry]:
    path = find_file(layers, "etc/passwd")
    entries = []
    for line in path.read_text(errors="replace").splitlines() if path else []:
        fields = line.split(":")
        if len(fields) >= 7 and fields[2].isdigit() and fields[3].isdigit():
            entries.append(_PasswdEntry(fields[0], int(fields[2]), int(fields[3]), fields[5] or "/"))
    return entries


def _groups(layers: list[Path]) -> list[tuple[str, int, list[str]]]:
    path = find_file(layers, "etc/group")
    groups = []
    for line in path.read_text(errors="replace").splitlines() if path else []:
        fields = line.split(":")
        if len(fields) >= 4 and fields[2].isdigit():
            groups.append((fields[0], int(fields[2]), [m for m in fields[3].split(",") if m]))
    return groups


def resolve(layers: list[Path], user: str = "", uid: int | None = None, group: int | None = None,
            supplemental: tuple[int, ...] = (), *, image_groups: bool = True) -> User:
    """Resolve the user a container runs as.

    `uid`/`group` (the security context) win over `user` (a name, `uid`, `name:group`
    or `uid:gid`, from the security context's username or the image's User). The
    primary gid comes from /etc/passwd when not given; the primary gid, the user's groups
    in /etc/group (unless `image_groups` is false: SupplementalGroupsPolicy Strict) and
    `supplemental` become the additional gids.
    """
    passwd = _passwd(layers)
    name_part, _, group_part = user.partition(":")
    entry: _PasswdEntry | None = None
    if uid is None:
        if not name_part:
            uid = 0
        elif name_part.isdigit():
            uid = int(name_part)
        else:
            entry = next((e for e in passwd if e.name == name_part), None)
            if entry is None:
                raise InvalidArgument(f"user {name_part!r} not found in the image's /etc/passwd")
            uid = entry.uid
    if entry is None:
        entry = next((e for e in passwd if e.uid == uid), None)
    groups = _groups(layers)
    gid = group
    if gid is None and group_part:
        if group_part.isdigit():
            gid = int(group_part)
        else:
            match = next((g for g in groups if g[0] == group_part), None)
            if match is None:
                raise InvalidArgument(f"group {group_part!r} not found in the image's /etc/group")
            gid = match[1]
    if gid is None:
        gid = entry.gid if entry else 0
    additional = [gid]
    if entry is not None and image_groups:
        additional += [g[1] for g in groups if entry.name in g[2]]
    additional += list(supplemental)
    return User(uid=uid, gid=gid, additional_gids=tuple(dict.fromkeys(additional)), home=entry.home if entry else "/")
