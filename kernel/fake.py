"""A recording fake of the Syscall protocol for unit tests: it records calls and changes nothing."""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from typing import Any

from pycri.kernel.mountinfo import MountInfo
from pycri.kernel.syscall import RESOLVE_BENEATH, RESOLVE_IN_ROOT, RESOLVE_NO_SYMLINKS, CapSets, SeccompProgram


@dataclass
class RecordingSyscall:
    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    # name of a call -> the OSError it should raise
    failures: dict[str, OSError] = field(default_factory=dict)
    # what capget returns (capset updates it): all capabilities, like root
    caps: CapSets = field(default_factory=lambda: CapSets((1 << 41) - 1, (1 << 41) - 1, 0))
    # path -> what statmount says of it; any other path: ENOSYS, as a kernel without statmount
    statmounts: dict[str, MountInfo] = field(default_factory=dict)

    def _record(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))
        if name in self.failures:
            raise self.failures[name]

    def unshare(self, flags: int) -> None:
        self._record("unshare", flags)

    def setns(self, fd: int, nstype: int) -> None:
        self._record("setns", fd, nstype)

    def mount(self, source: str, target: str, fstype: str, flags: int, data: str = "") -> None:
        self._record("mount", source, target, fstype, flags, data)

    def umount(self, target: str, flags: int = 0) -> None:
        self._record("umount", target, flags)

    def mount_setattr(self, path: str, flags: int, attr_set: int, attr_clr: int = 0) -> None:
        self._record("mount_setattr", path, flags, attr_set, attr_clr)

    def open_tree(self, path: str, flags: int) -> int:
        """A real descriptor (of /dev/null) the caller may close like a mount's."""
        self._record("open_tree", path, flags)
        return os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)

    def set_mount_idmap(self, tree_fd: int, userns_fd: int) -> None:
        self._record("set_mount_idmap", tree_fd, userns_fd)

    def move_mount(self, tree_fd: int, target: str) -> None:
        self._record("move_mount", tree_fd, target)

    def pivot_root(self, new_root: str, put_old: str) -> None:
        self._record("pivot_root", new_root, put_old)

    def sethostname(self, name: str) -> None:
        self._record("sethostname", name)

    def setdomainname(self, name: str) -> None:
        self._record("setdomainname", name)

    def chroot(self, path: str) -> None:
        self._record("chroot", path)

    def mknod(self, path: str, mode: int, device: int) -> None:
        self._record("mknod", path, mode, device)

    def setgroups(self, gids: list[int]) -> None:
        self._record("setgroups", list(gids))

    def setresuid(self, ruid: int, euid: int, suid: int) -> None:
        self._record("setresuid", ruid, euid, suid)

    def setresgid(self, rgid: int, egid: int, sgid: int) -> None:
        self._record("setresgid", rgid, egid, sgid)

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
        self._record("prctl", option, arg2, arg3, arg4, arg5)
        return 0

    def capget(self) -> CapSets:
        self._record("capget")
        return self.caps

    def capset(self, caps: CapSets) -> None:
        self._record("capset", caps)
        self.caps = caps

    def setrlimit(self, resource: int, soft: int, hard: int) -> None:
        self._record("setrlimit", resource, soft, hard)

    def set_controlling_terminal(self, fd: int) -> None:
        self._record("set_controlling_terminal", fd)

    def load_seccomp(self, program: SeccompProgram) -> None:
        self._record("load_seccomp", program)

    def statmount(self, path: str) -> MountInfo:
        self._record("statmount", path)
        if path in self.statmounts:
            return self.statmounts[path]
        raise OSError(errno.ENOSYS, f"statmount({path!r}): not in the fake's table")

    def openat2(self, dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
        """A real open, for the lookups pycri makes (RESOLVE_BENEATH with RESOLVE_NO_SYMLINKS:
        each component a plain name, none a symlink but a trailing one opened with
        O_PATH|O_NOFOLLOW); anything else fails as the kernel would (EXDEV, ELOOP)."""
        self._record("openat2", dirfd, path, flags, resolve, mode)
        if resolve & RESOLVE_IN_ROOT or not resolve & RESOLVE_BENEATH or not resolve & RESOLVE_NO_SYMLINKS:
            raise NotImplementedError("the fake openat2 knows RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS only")
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if path.startswith("/") or ".." in parts:
            raise OSError(errno.EXDEV, f"openat2({path!r}): leads out of its directory")
        fd = os.dup(dirfd)
        try:
            for part in parts[:-1]:
                next_fd = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                os.close(fd)
                fd = next_fd
            return os.open(parts[-1] if parts else ".", flags | os.O_NOFOLLOW, mode, dir_fd=fd)
        finally:
            os.close(fd)

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]
