"""process.user: groups, gid and uid (in that order: setgroups needs CAP_SETGID), and the
HOME the process gets from the container's /etc/passwd when its env has none."""
from __future__ import annotations

from kernel.syscall import Syscall
from runtime.errors import RuntimeFailure
from runtime.spec import User


def switch_user(kernel: Syscall, user: User) -> None:
    try:
        kernel.setgroups(list(user.additional_gids))
    except OSError as e:
        raise RuntimeFailure(f"setgroups {user.additional_gids}: {e.strerror or e}") from None
    try:
        kernel.setresgid(user.gid, user.gid, user.gid)
        kernel.setresuid(user.uid, user.uid, user.uid)
    except OSError as e:
        raise RuntimeFailure(f"set user {user.uid}:{user.gid}: {e.strerror or e}") from None


def home_of(uid: int, passwd: str = "/etc/passwd") -> str:
    """The home directory of `uid` in the (container's) passwd file, "/" if it has none."""
    try:
        with open(passwd, errors="replace") as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) >= 6 and fields[2].isdigit() and int(fields[2]) == uid:
                    return fields[5] or "/"
    except OSError:
        pass
    return "/"
