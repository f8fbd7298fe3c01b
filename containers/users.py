"""Who a container runs as: users and groups looked up in the image's /etc/passwd and /etc/group.

The files are read from the image's unpacked layers (`containers.image_files`: every path
resolved inside the image, never on the host, and read up to `MAX_FILE_BYTES`), so nothing
needs to be mounted to resolve a user name. Every id, whether it comes from the image or from
the CRI request, must be in 0..`common.ids.MAX_ID`: (uid_t)-1 would leave the process root.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pycri.common.errors import InvalidArgument
from pycri.common.ids import check_id, id_of, numeric
from pycri.containers import image_files
from pycri.kernel import passwd as passwd_file
from pycri.kernel.syscall import Syscall

# /etc/passwd and /etc/group are read up to this many bytes (kernel.passwd says why); a larger
# file fails the create with a clear error.
MAX_FILE_BYTES = passwd_file.MAX_BYTES


@dataclass(frozen=True)
class User:
    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()
    home: str = "/"


def _text(syscall: Syscall, layers: list[Path], path: str) -> str:
    data = image_files.read_file(syscall, layers, path, MAX_FILE_BYTES)
    return data.decode(errors="replace") if data else ""


def resolve(layers: list[Path], user: str = "", uid: int | None = None, group: int | None = None,
            supplemental: tuple[int, ...] = (), *, image_groups: bool = True, syscall: Syscall | None = None) -> User:
    """Resolve the user a container runs as.

    `uid`/`group` (the security context) win over `user` (a name, `uid`, `name:group`
    or `uid:gid`, from the security context's username or the image's User). The
    primary gid comes from /etc/passwd when not given; the primary gid, the user's groups
    in /etc/group (unless `image_groups` is false: SupplementalGroupsPolicy Strict) and
    `supplemental` become the additional gids. An id out of range, in the request or in the
    image, is InvalidArgument.
    """
    if syscall is None:
        from pycri.kernel.linux import LinuxSyscall
        syscall = LinuxSyscall()
    if uid is not None:
        check_id(uid, "run_as_user")
    if group is not None:
        check_id(group, "run_as_group")
    for gid in supplemental:
        check_id(gid, "supplemental group")
    passwd = passwd_file.parse_passwd(_text(syscall, layers, "/etc/passwd"))
    name_part, _, group_part = user.partition(":")
    entry: passwd_file.PasswdEntry | None = None
    if uid is None:
        if not name_part:
            uid = 0
        elif numeric(name_part):
            uid = id_of(name_part, "user")
        else:
            entry = next((e for e in passwd if e.name == name_part), None)
            if entry is None:
                raise InvalidArgument(f"user {name_part[:64]!r} not found in the image's /etc/passwd")
            uid = check_id(entry.uid, f"the image's /etc/passwd: user {name_part[:64]!r} has uid")
    if entry is None:
        entry = next((e for e in passwd if e.uid == uid), None)
    groups = passwd_file.parse_group(_text(syscall, layers, "/etc/group"))
    gid = group
    if gid is None and group_part:
        if numeric(group_part):
            gid = id_of(group_part, "group")
        else:
            match = next((g for g in groups if g.name == group_part), None)
            if match is None:
                raise InvalidArgument(f"group {group_part[:64]!r} not found in the image's /etc/group")
            gid = check_id(match.gid, f"the image's /etc/group: group {group_part[:64]!r} has gid")
    if gid is None:
        gid = check_id(entry.gid, f"the image's /etc/passwd: user {entry.name[:64]!r} has gid") if entry else 0
    additional = [gid]
    if entry is not None and image_groups:
        additional += [check_id(g.gid, f"the image's /etc/group: group {g.name[:64]!r} has gid")
                       for g in groups if entry.name in g.members]
    additional += list(supplemental)
    return User(uid=uid, gid=gid, additional_gids=tuple(dict.fromkeys(additional)), home=entry.home if entry else "/")
