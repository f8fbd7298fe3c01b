"""A container's root filesystem: an overlayfs of the image's layers with a writable upper dir."""
from __future__ import annotations

import errno
import os
from pathlib import Path

from kernel.syscall import MNT_DETACH, Syscall

# overlayfs takes its options in one page; past that, mount fails with EINVAL
MAX_OPTIONS = 4000


def overlay_options(lowers_top_first: list[Path], upper: Path, work: Path) -> str:
    options = f"lowerdir={':'.join(str(p) for p in lowers_top_first)},upperdir={upper},workdir={work}"
    if len(options) > MAX_OPTIONS:
        raise ValueError(f"too many layers for one overlay mount ({len(lowers_top_first)})")
    return options


def mount(syscall: Syscall, lowers_bottom_first: list[Path], directory: Path) -> Path:
    """Mount the rootfs under `directory` (upper/, work/, merged/) and return merged/."""
    upper, work, merged = directory / "upper", directory / "work", directory / "merged"
    for path in (upper, work, merged):
        path.mkdir(parents=True, exist_ok=True)
    if not lowers_bottom_first:
        # an image without layers: overlayfs needs a lower dir, give it an empty one
        empty = directory / "empty"
        empty.mkdir(exist_ok=True)
        lowers_bottom_first = [empty]
    options = overlay_options(list(reversed(lowers_bottom_first)), upper, work)
    syscall.mount("overlay", str(merged), "overlay", 0, options)
    return merged


def unmount(syscall: Syscall, merged: Path) -> None:
    """Unmount the rootfs if it is mounted; a missing mount is fine."""
    if not is_mounted(merged):
        return
    try:
        syscall.umount(str(merged), MNT_DETACH)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOENT):
            raise


def is_mounted(path: Path) -> bool:
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as mountinfo:
        return any(line.split()[4] == target for line in mountinfo)
