"""The Syscall protocol: the kernel calls pycri makes, as one narrow interface.

Code that sets up namespaces, mounts and containers takes a `Syscall`, so unit
tests can hand it the recording fake (kernel.fake) and end-to-end tests the real
one (kernel.linux).
"""
from __future__ import annotations

from typing import Protocol

# clone/unshare/setns flags
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080

# mount flags
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24

# umount2 flags
MNT_FORCE = 1
MNT_DETACH = 2
UMOUNT_NOFOLLOW = 8

NAMESPACE_FLAGS = {
    "mount": CLONE_NEWNS,
    "cgroup": CLONE_NEWCGROUP,
    "uts": CLONE_NEWUTS,
    "ipc": CLONE_NEWIPC,
    "user": CLONE_NEWUSER,
    "pid": CLONE_NEWPID,
    "network": CLONE_NEWNET,
    "time": CLONE_NEWTIME,
}
# the file under /proc/<pid>/ns/ for each OCI namespace type
NAMESPACE_FILES = {
    "mount": "mnt", "cgroup": "cgroup", "uts": "uts", "ipc": "ipc",
    "user": "user", "pid": "pid", "network": "net", "time": "time",
}


class Syscall(Protocol):
    def unshare(self, flags: int) -> None: ...

    def setns(self, fd: int, nstype: int) -> None: ...

    def mount(self, source: str, target: str, fstype: str, flags: int, data: str = "") -> None: ...

    def umount(self, target: str, flags: int = 0) -> None: ...

    def pivot_root(self, new_root: str, put_old: str) -> None: ...

    def sethostname(self, name: str) -> None: ...
