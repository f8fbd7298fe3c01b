"""The real kernel calls, through libc with ctypes. Errors raise OSError with errno and the call."""
from __future__ import annotations

import ctypes
import os

_libc = ctypes.CDLL(None, use_errno=True)
SYS_pivot_root = 155  # x86_64


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

    def pivot_root(self, new_root: str, put_old: str) -> None:
        _check(_libc.syscall(SYS_pivot_root, new_root.encode(), put_old.encode()),
               f"pivot_root({new_root!r}, {put_old!r})")

    def sethostname(self, name: str) -> None:
        raw = name.encode()
        _check(_libc.sethostname(raw, ctypes.c_size_t(len(raw))), f"sethostname({name!r})")
