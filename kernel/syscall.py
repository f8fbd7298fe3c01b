"""The Syscall protocol: the kernel calls pycri makes, as one narrow interface.

Code that sets up namespaces, mounts and containers takes a `Syscall`, so unit
tests can hand it the recording fake (kernel.fake) and end-to-end tests the real
one (kernel.linux).
"""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol

    from pycri.kernel.mountinfo import MountInfo
else:
    # `typing` costs the per-container runtime's start-up; at run time the protocol is only
    # an annotation, so a plain base class does (type checkers see the Protocol)
    Protocol = object

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

# mount_setattr(2): struct mount_attr attr_set/attr_clr bits, and its AT_RECURSIVE flag
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR_IDMAP = 0x00100000
AT_RECURSIVE = 0x8000
# open_tree(2) flags: a detached copy of the mount (OPEN_TREE_CLOEXEC is O_CLOEXEC)
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = 0o2000000

# umount2 flags
MNT_FORCE = 1
MNT_DETACH = 2
UMOUNT_NOFOLLOW = 8

# openat2(2) resolve flags (struct open_how.resolve, Linux 5.6)
RESOLVE_NO_XDEV = 0x01  # never cross a mount point
RESOLVE_NO_MAGICLINKS = 0x02  # no /proc/<pid>/fd-style links
RESOLVE_NO_SYMLINKS = 0x04  # no symlink at all (a trailing one with O_PATH|O_NOFOLLOW is opened itself)
RESOLVE_BENEATH = 0x08  # fail (EXDEV) on anything leading out of dirfd: "..", an absolute path or link
RESOLVE_IN_ROOT = 0x10  # dirfd is the root: "/" and ".." stop at it, as chroot would

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


# prctl options
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_SET_NAME = 15
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_IS_SET = 1
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_LOWER = 3
PR_CAP_AMBIENT_CLEAR_ALL = 4

# libseccomp actions (seccomp.h) and argument comparisons (enum scmp_compare)
SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_ACT_KILL_THREAD = 0x00000000
SCMP_ACT_TRAP = 0x00030000
SCMP_ACT_ERRNO_BASE = 0x00050000
SCMP_ACT_TRACE_BASE = 0x7FF00000
SCMP_ACT_LOG = 0x7FFC0000
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_NE = 1
SCMP_CMP_LT = 2
SCMP_CMP_LE = 3
SCMP_CMP_EQ = 4
SCMP_CMP_GE = 5
SCMP_CMP_GT = 6
SCMP_CMP_MASKED_EQ = 7


def scmp_act_errno(errno: int) -> int:
    return SCMP_ACT_ERRNO_BASE | (errno & 0xFFFF)


def scmp_act_trace(msg: int) -> int:
    return SCMP_ACT_TRACE_BASE | (msg & 0xFFFF)


class _Value:
    """An immutable value with equality, hash and repr from its __slots__ (what a frozen
    dataclass gives, without importing dataclasses on the runtime's start-up path)."""

    __slots__: tuple[str, ...] = ()

    def _set(self, **values: object) -> None:
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def _fields(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r} of {type(self).__name__}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r} of {type(self).__name__}")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._fields() == other._fields()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"


class SeccompArg(_Value):
    """One argument comparison of a rule (struct scmp_arg_cmp)."""

    __slots__ = ("index", "op", "value", "value_two")
    index: int
    op: int  # SCMP_CMP_*
    value: int
    value_two: int

    def __init__(self, index: int, op: int, value: int, value_two: int = 0) -> None:
        self._set(index=index, op=op, value=value, value_two=value_two)


class SeccompRule(_Value):
    """Apply `action` to `syscall` (a name libseccomp resolves) when all `args` match."""

    __slots__ = ("syscall", "action", "args")
    syscall: str
    action: int
    args: tuple[SeccompArg, ...]

    def __init__(self, syscall: str, action: int, args: tuple[SeccompArg, ...] = ()) -> None:
        self._set(syscall=syscall, action=action, args=args)


class SeccompProgram(_Value):
    """A whole filter: what to load with libseccomp."""

    __slots__ = ("default_action", "architectures", "rules", "no_new_privs", "log")
    default_action: int
    architectures: tuple[str, ...]  # libseccomp arch names: "x86_64", "x86", "aarch64", ...
    rules: tuple[SeccompRule, ...]
    no_new_privs: bool  # let libseccomp set no_new_privs when loading (SCMP_FLTATR_CTL_NNP)
    log: bool  # SECCOMP_FILTER_FLAG_LOG (SCMP_FLTATR_CTL_LOG)

    def __init__(self, default_action: int, architectures: tuple[str, ...] = (), rules: tuple[SeccompRule, ...] = (),
                 no_new_privs: bool = False, log: bool = False) -> None:
        self._set(default_action=default_action, architectures=architectures, rules=rules,
                  no_new_privs=no_new_privs, log=log)


class CapSets(_Value):
    """A thread's capability sets, one bit per capability number."""

    __slots__ = ("effective", "permitted", "inheritable")
    effective: int
    permitted: int
    inheritable: int

    def __init__(self, effective: int = 0, permitted: int = 0, inheritable: int = 0) -> None:
        self._set(effective=effective, permitted=permitted, inheritable=inheritable)


class Syscall(Protocol):
    def unshare(self, flags: int) -> None: ...

    def setns(self, fd: int, nstype: int) -> None: ...

    def mount(self, source: str, target: str, fstype: str, flags: int, data: str = "") -> None: ...

    def umount(self, target: str, flags: int = 0) -> None: ...

    def mount_setattr(self, path: str, flags: int, attr_set: int, attr_clr: int = 0) -> None:
        """Change the attributes (MOUNT_ATTR_*) of the mount at `path`; with AT_RECURSIVE, of
        every mount below it too."""
        ...

    def open_tree(self, path: str, flags: int) -> int:
        """open_tree(2): a file descriptor for the mount at `path`; with OPEN_TREE_CLONE a
        detached copy of it (with AT_RECURSIVE, of the whole tree below it)."""
        ...

    def set_mount_idmap(self, tree_fd: int, userns_fd: int) -> None:
        """mount_setattr(2) MOUNT_ATTR_IDMAP on a detached mount (`tree_fd` from open_tree):
        its files' owners are mapped through the user namespace `userns_fd`."""
        ...

    def move_mount(self, tree_fd: int, target: str) -> None:
        """move_mount(2) the mount `tree_fd` (MOVE_MOUNT_F_EMPTY_PATH) onto `target`."""
        ...

    def pivot_root(self, new_root: str, put_old: str) -> None: ...

    def sethostname(self, name: str) -> None: ...

    def setdomainname(self, name: str) -> None: ...

    def chroot(self, path: str) -> None: ...

    def mknod(self, path: str, mode: int, device: int) -> None: ...

    def setgroups(self, gids: list[int]) -> None: ...

    def setresuid(self, ruid: int, euid: int, suid: int) -> None: ...

    def setresgid(self, rgid: int, egid: int, sgid: int) -> None: ...

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int: ...

    def capget(self) -> CapSets: ...

    def capset(self, caps: CapSets) -> None: ...

    def setrlimit(self, resource: int, soft: int, hard: int) -> None: ...

    def set_controlling_terminal(self, fd: int) -> None: ...

    def load_seccomp(self, program: SeccompProgram) -> None: ...

    def statmount(self, path: str) -> MountInfo:
        """The mount `path` is on (the topmost one), without reading the whole mount table:
        statx(2)'s unique mount id, then statmount(2) (Linux 6.8). Its ids, device, root,
        mount point, propagation, fs type and super options, as mountinfo would show them
        (per-mount options and source left empty). OSError (ENOSYS, EPERM under a seccomp
        filter, EOPNOTSUPP for a kernel that cannot tell all of it) where it cannot say:
        the caller reads the mount table instead."""
        ...

    def openat2(self, dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
        """openat2(2): open `path` relative to the directory `dirfd` with the O_* `flags` and
        the RESOLVE_* `resolve` restrictions; returns the new descriptor (O_CLOEXEC is the
        caller's to ask for)."""
        ...
