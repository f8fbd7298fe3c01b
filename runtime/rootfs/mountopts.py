"""Mount options of config.json ("ro", "nosuid", "rbind", "rslave", "rro", "mode=755", ...) to
mount(2) flags, propagation changes, recursive mount attributes (mount_setattr(2) with
AT_RECURSIVE, as runc's "rro", "rnosuid", ...) and the filesystem data string."""
from __future__ import annotations

from pycri.kernel.syscall import (
    MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY,
    MS_BIND, MS_DIRSYNC, MS_MANDLOCK, MS_NOATIME, MS_NODEV, MS_NODIRATIME, MS_NOEXEC, MS_NOSUID,
    MS_NOSYMFOLLOW, MS_PRIVATE, MS_RDONLY, MS_REC, MS_RELATIME, MS_REMOUNT, MS_SHARED, MS_SLAVE,
    MS_STRICTATIME, MS_SYNCHRONOUS, MS_UNBINDABLE,
)
from pycri.runtime.spec import Record

# option -> (clear the flag?, flag)
FLAGS: dict[str, tuple[bool, int]] = {
    "async": (True, MS_SYNCHRONOUS), "sync": (False, MS_SYNCHRONOUS),
    "atime": (True, MS_NOATIME), "noatime": (False, MS_NOATIME),
    "defaults": (False, 0),
    "dev": (True, MS_NODEV), "nodev": (False, MS_NODEV),
    "diratime": (True, MS_NODIRATIME), "nodiratime": (False, MS_NODIRATIME),
    "dirsync": (False, MS_DIRSYNC),
    "exec": (True, MS_NOEXEC), "noexec": (False, MS_NOEXEC),
    "mand": (False, MS_MANDLOCK), "nomand": (True, MS_MANDLOCK),
    "relatime": (False, MS_RELATIME), "norelatime": (True, MS_RELATIME),
    "strictatime": (False, MS_STRICTATIME), "nostrictatime": (True, MS_STRICTATIME),
    "remount": (False, MS_REMOUNT),
    "ro": (False, MS_RDONLY), "rw": (True, MS_RDONLY),
    "suid": (True, MS_NOSUID), "nosuid": (False, MS_NOSUID),
    "symfollow": (True, MS_NOSYMFOLLOW), "nosymfollow": (False, MS_NOSYMFOLLOW),
    "bind": (False, MS_BIND), "rbind": (False, MS_BIND | MS_REC),
}
PROPAGATION: dict[str, int] = {
    "private": MS_PRIVATE, "rprivate": MS_PRIVATE | MS_REC,
    "shared": MS_SHARED, "rshared": MS_SHARED | MS_REC,
    "slave": MS_SLAVE, "rslave": MS_SLAVE | MS_REC,
    "unbindable": MS_UNBINDABLE, "runbindable": MS_UNBINDABLE | MS_REC,
}
# recursive options: option -> (clear the attribute?, MOUNT_ATTR_*), applied to the mount and
# every mount below it after the mount is made
RECURSIVE: dict[str, tuple[bool, int]] = {
    "rro": (False, MOUNT_ATTR_RDONLY), "rrw": (True, MOUNT_ATTR_RDONLY),
    "rnosuid": (False, MOUNT_ATTR_NOSUID), "rsuid": (True, MOUNT_ATTR_NOSUID),
    "rnodev": (False, MOUNT_ATTR_NODEV), "rdev": (True, MOUNT_ATTR_NODEV),
    "rnoexec": (False, MOUNT_ATTR_NOEXEC), "rexec": (True, MOUNT_ATTR_NOEXEC),
}
# options that tell the runtime something and are not passed to the kernel
EXTENSIONS = ("tmpcopyup", "idmap", "ridmap")


class MountOptions(Record):
    __slots__ = ("flags", "propagation", "data", "extensions", "rec_attr_set", "rec_attr_clr")

    def __init__(self, flags: int = 0, propagation: list[int] | None = None, data: str = "",
                 extensions: list[str] | None = None, rec_attr_set: int = 0, rec_attr_clr: int = 0) -> None:
        self.flags = flags
        self.propagation: list[int] = [] if propagation is None else propagation
        self.data = data
        self.extensions: list[str] = [] if extensions is None else extensions
        self.rec_attr_set = rec_attr_set  # MOUNT_ATTR_* bits to set recursively
        self.rec_attr_clr = rec_attr_clr  # and to clear

    @property
    def is_bind(self) -> bool:
        return bool(self.flags & MS_BIND)

    @property
    def recursive(self) -> bool:
        return bool(self.flags & MS_REC)


def parse_options(options: list[str]) -> MountOptions:
    result = MountOptions()
    data: list[str] = []
    for option in options:
        if option in FLAGS:
            clear, flag = FLAGS[option]
            if clear:
                result.flags &= ~flag
            else:
                result.flags |= flag
        elif option in PROPAGATION:
            result.propagation.append(PROPAGATION[option])
        elif option in RECURSIVE:
            _add_recursive(result, *RECURSIVE[option])
        elif option in EXTENSIONS:
            result.extensions.append(option)
        else:
            data.append(option)
    result.data = ",".join(data)
    return result


def _add_recursive(opts: MountOptions, clear: bool, attr: int) -> None:
    """The last of two opposite options wins, as with the plain flags."""
    if clear:
        opts.rec_attr_set &= ~attr
        opts.rec_attr_clr |= attr
    else:
        opts.rec_attr_clr &= ~attr
        opts.rec_attr_set |= attr


def propagation_flags(name: str) -> int:
    """linux.rootfsPropagation -> flags; unknown names raise KeyError."""
    return PROPAGATION[name]
