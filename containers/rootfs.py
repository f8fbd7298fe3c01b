"""A container's root filesystem: an overlayfs of the image's layers with a writable upper dir.

In a pod with a user namespace (KEP-127) the overlay cannot itself be idmapped (overlayfs
refuses MOUNT_ATTR_IDMAP), so, as containerd's snapshotters do, each lower dir is given to
overlayfs through an idmapped bind mount (a layer's root-owned files show as owned by the
host id of the container's root, which the container sees as 0), and the upper dir belongs
to that host id, so what the container writes is owned, on disk, by its mapped ids. The
temporary idmapped mounts are detached once the overlay holds its own references to them.
"""
from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

from pycri.kernel.syscall import AT_RECURSIVE, MNT_DETACH, OPEN_TREE_CLOEXEC, OPEN_TREE_CLONE, Syscall

# overlayfs takes its options in one page; past that, mount fails with EINVAL
MAX_OPTIONS = 4000


def overlay_options(lowers_top_first: list[Path], upper: Path, work: Path) -> str:
    options = f"lowerdir={':'.join(str(p) for p in lowers_top_first)},upperdir={upper},workdir={work}"
    if len(options) > MAX_OPTIONS:
        raise ValueError(f"too many layers for one overlay mount ({len(lowers_top_first)})")
    return options


class IdMap:
    """The pod's user namespace: its file (to idmap mounts with) and the host ids of the
    container's root."""

    def __init__(self, userns_path: str, root_uid: int, root_gid: int) -> None:
        self.userns_path = userns_path
        self.root_uid = root_uid
        self.root_gid = root_gid


def mount(syscall: Syscall, lowers_bottom_first: list[Path], directory: Path, idmap: IdMap | None = None) -> Path:
    """Mount the rootfs under `directory` (upper/, work/, merged/) and return merged/."""
    upper, work, merged = directory / "upper", directory / "work", directory / "merged"
    for path in (upper, work, merged):
        path.mkdir(parents=True, exist_ok=True)
    # no host user but root, and in a pod with a user namespace the pod's root (by its group),
    # reaches the rootfs from the host: its files keep their setuid bits (CVE-2021-41103)
    if idmap is not None:
        os.chown(directory, 0, idmap.root_gid)
    os.chmod(directory, 0o700 if idmap is None else 0o710)
    if not lowers_bottom_first:
        # an image without layers: overlayfs needs a lower dir, give it an empty one
        empty = directory / "empty"
        empty.mkdir(exist_ok=True)
        lowers_bottom_first = [empty]
    if idmap is None:
        syscall.mount("overlay", str(merged), "overlay", 0,
                      overlay_options(list(reversed(lowers_bottom_first)), upper, work))
        return merged
    os.chown(upper, idmap.root_uid, idmap.root_gid)
    with _idmapped(syscall, lowers_bottom_first, directory / "idmap", idmap.userns_path) as lowers:
        syscall.mount("overlay", str(merged), "overlay", 0, overlay_options(list(reversed(lowers)), upper, work))
    return merged


@contextlib.contextmanager
def _idmapped(syscall: Syscall, sources: list[Path], directory: Path, userns_path: str) -> Iterator[list[Path]]:
    """Idmapped bind mounts of `sources` at directory/<n> for the block; detached after it."""
    userns = os.open(userns_path, os.O_RDONLY | os.O_CLOEXEC)
    targets: list[Path] = []
    try:
        directory.mkdir(exist_ok=True)
        for n, source in enumerate(sources):
            target = directory / str(n)
            target.mkdir(exist_ok=True)
            tree = syscall.open_tree(str(source), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE)
            try:
                syscall.set_mount_idmap(tree, userns)
                syscall.move_mount(tree, str(target))
            finally:
                os.close(tree)
            targets.append(target)
        yield targets
    finally:
        os.close(userns)
        _detach_idmapped(syscall, directory)


def _detach_idmapped(syscall: Syscall, directory: Path) -> None:
    """Detach and remove directory/<n> (rmdir, never rm -r: a mount still there holds a layer)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in names:
        target = directory / name
        with contextlib.suppress(OSError):  # (not mounted: EINVAL)
            syscall.umount(str(target), MNT_DETACH)
        with contextlib.suppress(OSError):
            target.rmdir()
    with contextlib.suppress(OSError):
        directory.rmdir()


def unmount(syscall: Syscall, merged: Path) -> None:
    """Unmount the rootfs if it is mounted, and idmapped lower dirs a crash left mounted;
    a missing mount is fine. umount(2) itself says whether there is one (EINVAL: not a mount
    point, ENOENT: no such path): the mount table, which grows with every running
    container, is not read."""
    _detach_idmapped(syscall, merged.parent / "idmap")
    try:
        syscall.umount(str(merged), MNT_DETACH)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOENT):
            raise

