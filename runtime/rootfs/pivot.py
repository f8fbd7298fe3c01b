"""Making the rootfs the container's `/`: pivot_root, or MS_MOVE + chroot with --no-pivot.

pivot_root(".", ".") stacks the old root on top of the new one; it is then made a slave
(so its unmount does not propagate to the host) and lazily unmounted (pivot_root(2)).
"""
from __future__ import annotations

import os

from pycri.kernel.syscall import MNT_DETACH, MS_MOVE, MS_REC, MS_SLAVE, Syscall
from pycri.runtime.errors import RuntimeFailure


def pivot_root(kernel: Syscall, rootfs: str) -> None:
    old_root = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    new_root = os.open(rootfs, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fchdir(new_root)
        try:
            kernel.pivot_root(".", ".")
        except OSError as e:
            raise RuntimeFailure(f"pivot_root {rootfs}: {e.strerror or e}") from None
        os.fchdir(old_root)
        kernel.mount("", ".", "", MS_SLAVE | MS_REC)
        kernel.umount(".", MNT_DETACH)
        os.chdir("/")
    finally:
        os.close(old_root)
        os.close(new_root)


def move_root(kernel: Syscall, rootfs: str) -> None:
    """--no-pivot: for a rootfs on a ramdisk, where pivot_root is not possible."""
    os.chdir(rootfs)
    try:
        kernel.mount(rootfs, "/", "", MS_MOVE)
    except OSError as e:
        raise RuntimeFailure(f"move rootfs {rootfs} to /: {e.strerror or e}") from None
    kernel.chroot(".")
    os.chdir("/")
