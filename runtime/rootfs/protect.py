"""linux.maskedPaths and linux.readonlyPaths, applied after pivot_root.

A masked directory gets a read-only tmpfs over it, a masked file /dev/null bound over it; a
read-only path is bind-mounted onto itself and remounted read-only, keeping its nosuid,
nodev and noexec. Paths that do not exist in the container are skipped.

Masking fails closed: what is bound over a masked file is a detached copy of the container's
/dev/null mount (open_tree) checked to be the null character device (1:3) before it is
attached, so a /dev whose `null` is something else (a volume at /dev, say) stops the container
instead of leaving /proc/kcore or /proc/timer_list readable; any other failure stops it too.
"""
from __future__ import annotations

import errno
import os
import stat

from pycri.kernel.syscall import (
    MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MS_REC, MS_REMOUNT, OPEN_TREE_CLOEXEC, OPEN_TREE_CLONE,
    Syscall,
)
from pycri.runtime.errors import RuntimeFailure

KEPT_FLAGS = MS_NOSUID | MS_NODEV | MS_NOEXEC  # statvfs f_flag bits equal the mount flags
NULL_DEVICE = os.makedev(1, 3)


def preserved_flags(path: str) -> int:
    return os.statvfs(path).f_flag & KEPT_FLAGS


def mask_path(kernel: Syscall, path: str) -> None:
    if not os.path.lexists(path):
        return
    if os.path.isdir(path) and not os.path.islink(path):
        try:
            kernel.mount("tmpfs", path, "tmpfs", MS_RDONLY, "")
        except OSError as e:
            raise RuntimeFailure(f"mask path {path}: {e.strerror or e}") from None
        return
    null = null_tree(kernel, path)
    try:
        kernel.move_mount(null, path)
    except OSError as e:
        raise RuntimeFailure(f"mask path {path}: {e.strerror or e}") from None
    finally:
        os.close(null)


def null_tree(kernel: Syscall, masking: str) -> int:
    """A detached copy of the mount of /dev/null, which must be the null device."""
    try:
        fd = kernel.open_tree("/dev/null", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC)
    except OSError as e:
        raise RuntimeFailure(f"mask path {masking}: no /dev/null to bind over it: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
    except OSError as e:
        os.close(fd)
        raise RuntimeFailure(f"mask path {masking}: stat /dev/null: {e.strerror or e}") from None
    if not stat.S_ISCHR(st.st_mode) or st.st_rdev != NULL_DEVICE:
        os.close(fd)
        raise RuntimeFailure(f"mask path {masking}: /dev/null in the container is not the null device "
                             "(a volume mounted at /dev?): refusing to start with the path unmasked")
    return fd


def readonly_path(kernel: Syscall, path: str) -> None:
    try:
        if not os.path.lexists(path):
            return
        kernel.mount(path, path, "", MS_BIND | MS_REC)
        kernel.mount("", path, "", MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC | preserved_flags(path))
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return
        raise RuntimeFailure(f"make {path} read-only: {e.strerror or e}") from None


def remount_readonly(kernel: Syscall, path: str) -> None:
    """Make an existing mount read-only (the rootfs with root.readonly, a read-only /dev)."""
    try:
        kernel.mount("", path, "", MS_BIND | MS_REMOUNT | MS_RDONLY | preserved_flags(path))
    except OSError as e:
        raise RuntimeFailure(f"remount {path} read-only: {e.strerror or e}") from None
