"""The real kernel calls, through libc with ctypes. Errors raise OSError with errno and the call."""
from __future__ import annotations

import ctypes
import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # without importing typing: this module is on the runtime's start-up path
    from pycri.kernel.mountinfo import MountInfo
    from pycri.kernel.syscall import CapSets, SeccompProgram

_libc = ctypes.CDLL(None, use_errno=True)
SYS_pivot_root = 155  # x86_64
SYS_mount_setattr = 442  # x86_64 (Linux 5.12)
SYS_open_tree = 428  # x86_64 (Linux 5.2)
SYS_move_mount = 429
SYS_openat2 = 437  # x86_64 (Linux 5.6)
SYS_statx = 332  # x86_64 (Linux 4.11)
SYS_statmount = 457  # x86_64 (Linux 6.8)
AT_EMPTY_PATH = 0x1000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
_MOUNT_ATTR_IDMAP = 0x00100000
AT_FDCWD = -100
_EINVAL = 22


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


class LinuxSyscall:
    def unshare(self, flags: int) -> None:
        _check(_libc.unshare(ctypes.c_int(flags)), f"unshare({flags:#x})")

    def setns(self, fd: int, nstype: int) -> None:
        _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), f"setns({fd}, {nstype:#x})")

    def mount(self, source: str, target: str, fstype: str, flags: int, data: str = "") -> None:
        _check(
            _libc.mount(
                source.encode() if source else None,
                target.encode(),
                fstype.encode() if fstype else None,
                ctypes.c_ulong(flags),
                data.encode() if data else None,
            ),
            f"mount({source!r}, {target!r}, {fstype!r}, {flags:#x}, {data!r})",
        )

    def umount(self, target: str, flags: int = 0) -> None:
        _check(_libc.umount2(target.encode(), ctypes.c_int(flags)), f"umount2({target!r}, {flags:#x})")

    def mount_setattr(self, path: str, flags: int, attr_set: int, attr_clr: int = 0) -> None:
        attr = _MountAttr(attr_set, attr_clr, 0, 0)
        _check(_libc.syscall(ctypes.c_long(SYS_mount_setattr), ctypes.c_long(AT_FDCWD), path.encode(),
                             ctypes.c_long(flags), ctypes.byref(attr), ctypes.c_long(ctypes.sizeof(attr))),
               f"mount_setattr({path!r}, {flags:#x}, set={attr_set:#x}, clr={attr_clr:#x})")

    def open_tree(self, path: str, flags: int) -> int:
        return _check(_libc.syscall(ctypes.c_long(SYS_open_tree), ctypes.c_long(AT_FDCWD), path.encode(),
                                    ctypes.c_uint(flags)), f"open_tree({path!r}, {flags:#x})")

    def set_mount_idmap(self, tree_fd: int, userns_fd: int) -> None:
        attr = _MountAttr(_MOUNT_ATTR_IDMAP, 0, 0, userns_fd)
        _check(_libc.syscall(ctypes.c_long(SYS_mount_setattr), ctypes.c_long(tree_fd), b"",
                             ctypes.c_long(AT_EMPTY_PATH), ctypes.byref(attr), ctypes.c_long(ctypes.sizeof(attr))),
               f"mount_setattr({tree_fd}, MOUNT_ATTR_IDMAP, userns={userns_fd})")

    def move_mount(self, tree_fd: int, target: str) -> None:
        _check(_libc.syscall(ctypes.c_long(SYS_move_mount), ctypes.c_long(tree_fd), b"", ctypes.c_long(AT_FDCWD),
                             target.encode(), ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH)),
               f"move_mount({tree_fd}, {target!r})")

    def pivot_root(self, new_root: str, put_old: str) -> None:
        _check(_libc.syscall(SYS_pivot_root, new_root.encode(), put_old.encode()),
               f"pivot_root({new_root!r}, {put_old!r})")

    def sethostname(self, name: str) -> None:
        raw = name.encode()
        _check(_libc.sethostname(raw, ctypes.c_size_t(len(raw))), f"sethostname({name!r})")

    def setdomainname(self, name: str) -> None:
        raw = name.encode()
        _check(_libc.setdomainname(raw, ctypes.c_size_t(len(raw))), f"setdomainname({name!r})")

    def chroot(self, path: str) -> None:
        os.chroot(path)

    def mknod(self, path: str, mode: int, device: int) -> None:
        os.mknod(path, mode, device)

    def setgroups(self, gids: list[int]) -> None:
        os.setgroups(gids)

    def setresuid(self, ruid: int, euid: int, suid: int) -> None:
        os.setresuid(ruid, euid, suid)

    def setresgid(self, rgid: int, egid: int, sgid: int) -> None:
        os.setresgid(rgid, egid, sgid)

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
        return _check(
            _libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3),
                        ctypes.c_ulong(arg4), ctypes.c_ulong(arg5)),
            f"prctl({option}, {arg2}, {arg3})",
        )

    def capget(self) -> CapSets:
        from pycri.kernel.syscall import CapSets

        header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
        data = (_CapData * 2)()
        _check(_libc.capget(ctypes.byref(header), data), "capget")
        return CapSets(
            effective=data[0].effective | (data[1].effective << 32),
            permitted=data[0].permitted | (data[1].permitted << 32),
            inheritable=data[0].inheritable | (data[1].inheritable << 32),
        )

    def capset(self, caps: CapSets) -> None:
        header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
        data = (_CapData * 2)()
        for i in (0, 1):
            shift = 32 * i
            data[i].effective = (caps.effective >> shift) & 0xFFFFFFFF
            data[i].permitted = (caps.permitted >> shift) & 0xFFFFFFFF
            data[i].inheritable = (caps.inheritable >> shift) & 0xFFFFFFFF
        _check(_libc.capset(ctypes.byref(header), data), f"capset({caps})")

    def setrlimit(self, resource: int, soft: int, hard: int) -> None:
        """Like resource.setrlimit (-1 is RLIM_INFINITY; the same ValueErrors), without loading
        one more extension module at start-up."""
        limit = _Rlimit(soft & _RLIM_MASK, hard & _RLIM_MASK)
        if _libc.setrlimit(ctypes.c_int(resource), ctypes.byref(limit)) < 0:
            err = ctypes.get_errno()
            if err == 22:  # EINVAL
                raise ValueError("current limit exceeds maximum limit")
            if err == 1:  # EPERM
                raise ValueError("not allowed to raise maximum limit")
            raise OSError(err, f"setrlimit({resource}, {soft}, {hard}): {os.strerror(err)}")

    def set_controlling_terminal(self, fd: int) -> None:
        _check(_libc.ioctl(ctypes.c_int(fd), ctypes.c_ulong(TIOCSCTTY), ctypes.c_int(0)), f"ioctl({fd}, TIOCSCTTY)")

    def load_seccomp(self, program: SeccompProgram) -> None:
        _load_seccomp(program)

    def statmount(self, path: str) -> MountInfo:
        stx = ctypes.create_string_buffer(_STATX_SIZE)
        _check(_libc.syscall(ctypes.c_long(SYS_statx), ctypes.c_long(AT_FDCWD), os.fsencode(path),
                             ctypes.c_long(_AT_SYMLINK_NOFOLLOW), ctypes.c_long(_STATX_MNT_ID_UNIQUE), stx),
               f"statx({path!r}, STATX_MNT_ID_UNIQUE)")
        raw = stx.raw
        if not _u32(raw, 0) & _STATX_MNT_ID_UNIQUE:  # stx_mask: a kernel before 6.8
            raise OSError(_EOPNOTSUPP, f"statx({path!r}): no unique mount id")
        # struct mnt_id_req (version 0): size, spare, mnt_id, param
        request = (ctypes.c_uint64 * 3)(_MNT_ID_REQ_SIZE_VER0, _u64(raw, _STX_MNT_ID), _STATMOUNT_WANTED)
        size = 4096
        while True:
            buf = ctypes.create_string_buffer(size)
            result = _libc.syscall(ctypes.c_long(SYS_statmount), request, buf, ctypes.c_size_t(size), ctypes.c_long(0))
            if result >= 0 or ctypes.get_errno() != _EOVERFLOW or size >= 1 << 20:
                break
            size *= 4
        _check(result, f"statmount({path!r})")
        return statmount_entry(buf.raw)

    def openat2(self, dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
        how = _OpenHow(flags, mode, resolve)
        return _check(_libc.syscall(ctypes.c_long(SYS_openat2), ctypes.c_long(dirfd), os.fsencode(path),
                                    ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how))),
                      f"openat2({dirfd}, {path!r}, {flags:#o}, resolve={resolve:#x})")


TIOCSCTTY = 0x540E
_EOPNOTSUPP = 95
_EOVERFLOW = 75
_AT_SYMLINK_NOFOLLOW = 0x100
_STATX_SIZE = 256
_STATX_MNT_ID_UNIQUE = 0x4000
_STX_MNT_ID = 0x90  # offset of stx_mnt_id in struct statx
_MNT_ID_REQ_SIZE_VER0 = 24
# statmount(2)'s param / mask bits: SB_BASIC, MNT_BASIC, MNT_ROOT, MNT_POINT, FS_TYPE, MNT_OPTS
_STATMOUNT_SB_BASIC, _STATMOUNT_MNT_BASIC, _STATMOUNT_MNT_ROOT = 0x1, 0x2, 0x8
_STATMOUNT_MNT_POINT, _STATMOUNT_FS_TYPE, _STATMOUNT_MNT_OPTS = 0x10, 0x20, 0x80
_STATMOUNT_WANTED = (_STATMOUNT_SB_BASIC | _STATMOUNT_MNT_BASIC | _STATMOUNT_MNT_ROOT | _STATMOUNT_MNT_POINT
                     | _STATMOUNT_FS_TYPE | _STATMOUNT_MNT_OPTS)
# MNT_OPTS is left out of the reply's mask for a filesystem without options, and by kernels
# before 6.11: the caller tells which (a v1 cgroup mount always has its controllers)
_STATMOUNT_REQUIRED = _STATMOUNT_WANTED & ~_STATMOUNT_MNT_OPTS
_STATMOUNT_STR = 512  # offset of str[] in struct statmount (after its spare words)
_SB_RDONLY = 0x1
_MS_SHARED = 1 << 20


def _u32(raw: bytes, offset: int) -> int:
    return int.from_bytes(raw[offset:offset + 4], "little")


def _u64(raw: bytes, offset: int) -> int:
    return int.from_bytes(raw[offset:offset + 8], "little")


def statmount_entry(raw: bytes) -> MountInfo:
    """A struct statmount (with the fields _STATMOUNT_WANTED asks for) as a mountinfo line
    would show them. EOPNOTSUPP when the kernel left out one of those it always gives; the
    super options are only ro/rw when it gave no MNT_OPTS."""
    from pycri.kernel.mountinfo import MountInfo

    mask = _u64(raw, 8)
    if mask & _STATMOUNT_REQUIRED != _STATMOUNT_REQUIRED:
        raise OSError(_EOPNOTSUPP, f"statmount: the kernel left out fields {_STATMOUNT_REQUIRED & ~mask:#x}")
    size = min(_u32(raw, 0), len(raw))

    def text(offset_field: int) -> str:
        start = _STATMOUNT_STR + _u32(raw, offset_field)
        end = raw.find(b"\0", start, size)
        return os.fsdecode(raw[start:end if end >= 0 else size])

    optional = []
    if _u64(raw, 72) & _MS_SHARED:  # mnt_propagation, mnt_peer_group
        optional.append(f"shared:{_u64(raw, 80)}")
    if _u64(raw, 88):  # mnt_master
        optional.append(f"master:{_u64(raw, 88)}")
    super_options = text(4) if mask & _STATMOUNT_MNT_OPTS else ""  # the fs's own, without ro/rw
    return MountInfo(
        mount_id=_u32(raw, 56), parent_id=_u32(raw, 60),  # the old (mountinfo's) ids
        device=f"{_u32(raw, 16)}:{_u32(raw, 20)}", root=text(104), mountpoint=text(108), options="",
        optional=optional, fstype=text(36), source="",
        super_options=("ro" if _u32(raw, 32) & _SB_RDONLY else "rw") + ("," + super_options if super_options else ""),
        unique_id=_u64(raw, 40),
    )
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def has_mount_setattr() -> bool:
    """Whether this kernel has mount_setattr(2) (and no filter denies it): a call with a
    zero-sized attribute fails with EINVAL there and with ENOSYS (or EPERM) elsewhere."""
    if _libc.syscall(ctypes.c_long(SYS_mount_setattr), ctypes.c_long(-1), None, ctypes.c_long(0), None,
                     ctypes.c_long(0)) == 0:
        return True
    return ctypes.get_errno() == _EINVAL


class _MountAttr(ctypes.Structure):  # struct mount_attr, MOUNT_ATTR_SIZE_VER0
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


class _OpenHow(ctypes.Structure):  # struct open_how, OPEN_HOW_SIZE_VER0
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_RLIM_MASK = (1 << 64) - 1  # rlim_t is 64 bits; -1 & mask is RLIM_INFINITY


class _Rlimit(ctypes.Structure):
    _fields_ = [("cur", ctypes.c_uint64), ("max", ctypes.c_uint64)]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


class _ScmpArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


# libseccomp filter attributes (enum scmp_filter_attr)
_SCMP_FLTATR_CTL_NNP = 3
_SCMP_FLTATR_CTL_LOG = 6
_NR_SCMP_ERROR = -1
_libseccomp: ctypes.CDLL | None = None


def preload_seccomp() -> None:
    """Load libseccomp now: a process about to pivot_root into a container cannot find it later."""
    _seccomp_library()


def _seccomp_library() -> ctypes.CDLL:
    global _libseccomp
    if _libseccomp is None:
        lib = ctypes.CDLL("libseccomp.so.2")
        lib.seccomp_init.restype = ctypes.c_void_p
        lib.seccomp_init.argtypes = [ctypes.c_uint32]
        lib.seccomp_release.argtypes = [ctypes.c_void_p]
        lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
        lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
        lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                               ctypes.POINTER(_ScmpArgCmp)]
        lib.seccomp_load.argtypes = [ctypes.c_void_p]
        _libseccomp = lib
    return _libseccomp


def _scmp_check(result: int, what: str) -> None:
    """libseccomp returns -errno on failure."""
    if result < 0:
        raise OSError(-result, f"{what}: {os.strerror(-result)}")


def _load_seccomp(program: SeccompProgram) -> None:
    lib = _seccomp_library()
    ctx = lib.seccomp_init(ctypes.c_uint32(program.default_action))
    if not ctx:
        raise OSError(22, f"seccomp_init({program.default_action:#x}) failed")
    try:
        _scmp_check(lib.seccomp_attr_set(ctx, _SCMP_FLTATR_CTL_NNP, 1 if program.no_new_privs else 0),
                    "seccomp_attr_set(CTL_NNP)")
        if program.log:
            _scmp_check(lib.seccomp_attr_set(ctx, _SCMP_FLTATR_CTL_LOG, 1), "seccomp_attr_set(CTL_LOG)")
        for name in program.architectures:
            token = lib.seccomp_arch_resolve_name(name.encode())
            if token == 0:
                raise OSError(22, f"seccomp: unknown architecture {name!r}")
            result = lib.seccomp_arch_add(ctx, token)
            if result != -17:  # EEXIST: the native architecture is always in the filter
                _scmp_check(result, f"seccomp_arch_add({name})")
        for rule in program.rules:
            number = lib.seccomp_syscall_resolve_name(rule.syscall.encode())
            if number == _NR_SCMP_ERROR:
                continue  # unknown on this kernel/arch: runtimes skip such names
            args = (_ScmpArgCmp * max(1, len(rule.args)))()
            for i, arg in enumerate(rule.args):
                args[i] = _ScmpArgCmp(arg.index, arg.op, arg.value, arg.value_two)
            _scmp_check(lib.seccomp_rule_add_array(ctx, rule.action, number, len(rule.args), args),
                        f"seccomp_rule_add({rule.syscall}, {rule.action:#x})")
        _scmp_check(lib.seccomp_load(ctx), "seccomp_load")
    finally:
        lib.seccomp_release(ctx)
