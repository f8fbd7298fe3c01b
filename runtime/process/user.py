"""process.user: groups, gid and uid (in that order: setgroups needs CAP_SETGID), and the
HOME the process gets from the container's /etc/passwd when its env has none."""
from __future__ import annotations

import os
import stat

from pycri.kernel import passwd as passwd_file
from pycri.kernel.syscall import Syscall
from pycri.runtime.errors import RuntimeFailure
from pycri.runtime.spec import User


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


MAX_PASSWD_BYTES = passwd_file.MAX_BYTES


def home_of(uid: int, passwd: str = "/etc/passwd") -> str:
    """The home directory of `uid` in the (container's) passwd file, "/" if it has none.

    The file is the container's: only a regular file is read (a FIFO would hang the runtime,
    /dev/zero would never end), and only its first MAX_PASSWD_BYTES."""
    try:
        fd = os.open(passwd, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError:
        return "/"
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return "/"
        data = os.read(fd, MAX_PASSWD_BYTES)
    except OSError:
        return "/"
    finally:
        os.close(fd)
    return passwd_file.home_of(passwd_file.parse_passwd(data.decode(errors="replace")), uid)
