"""linux.maskedPaths and linux.readonlyPaths, applied after pivot_root.

A masked directory gets a read-only tmpfs over it, a masked file /dev/null bound over it; a
read-only path is bind-mounted onto itself and remounted read-only, keeping its nosuid,
nodev and noexec. Paths that do not exist in the container are skipped.
"""
from __future__ import annotations

import errno
import os

from kernel.syscall import MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MS_REC, MS_REMOUNT, Syscall
from runtime.errors import RuntimeFailure

KEPT_FLAGS = MS_NOSUID | MS_NODEV | MS_NOEXEC  # statvfs f_flag bits equal the mount flags


def preserved_flags(path: str) -> int:
    return os.statvfs(path).f_flag & KEPT_FLAGS


def mask_path(kernel: Syscall, path: str) -> None:
    try:
        is_dir = os.path.isdir(path) and not os.path.islink(path)
        if not os.path.lexists(path):
            return
        if is_dir:
            kernel.mount("tmpfs", path, "tmpfs", MS_RDONLY, "")
        else:
            kernel.mount("/dev/null", path, "", MS_BIND)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return
        raise RuntimeFailure(f"mask path {path}: {e.strerror or e}") from None


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
