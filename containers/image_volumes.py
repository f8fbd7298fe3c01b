"""Image volumes (KEP-4639): an image's files mounted read-only into a container.

Each image a container mounts gets one overlayfs of its layers at
<container dir>/image-volumes/<image id hex>/, with lower dirs only (and an empty one at the
bottom: overlayfs wants two lower dirs when there is no upper), so the kernel itself refuses
every write. The container's bind mount (in the OCI spec, made by the runtime) takes that
directory, or the directory `image_sub_path` names in it, as its source. The overlays are
found again on disk, so removing a container, or undoing one a failure or a crash left
half-made, unmounts them without any other state.
"""
from __future__ import annotations

import dataclasses
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from pycri.common.errors import InvalidArgument, NotFound, PycriError
from pycri.containers.oci_config import Mount
from pycri.containers.rootfs import MAX_OPTIONS, unmount
from pycri.kernel.syscall import MS_NODEV, MS_NOSUID, MS_RDONLY, Syscall
from pycri.runtime.errors import RuntimeFailure
from pycri.runtime.rootfs.securejoin import MAX_SYMLINKS, secure_join

EMPTY = ".empty"


@dataclass(frozen=True)
class ImageVolume:
    """One image mount of a container: the spec's bind mount at `destination` (its source
    left "") gets the image's root, or its directory `sub_path`."""

    destination: str
    image_id: str
    layers: list[Path] = field(default_factory=list)  # bottom first
    sub_path: str = ""  # relative and normalised by the caller; "" is the image's root


class ImageVolumeError(PycriError):
    """An image volume could not be mounted (CRI calls it ImageVolumeMountFailed)."""


class ImageVolumeNotFound(ImageVolumeError, NotFound):
    pass


class ImageVolumeInvalid(ImageVolumeError, InvalidArgument):
    pass


def overlay_options(lowers_top_first: list[Path]) -> str:
    options = f"lowerdir={':'.join(str(p) for p in lowers_top_first)}"
    if len(options) > MAX_OPTIONS:
        raise ImageVolumeInvalid(f"too many layers for one overlay mount ({len(lowers_top_first)})")
    return options


def mount(syscall: Syscall, volumes: list[ImageVolume], directory: Path) -> dict[str, str]:
    """Mount each image once under `directory`; return destination -> the bind mount's source.
    What was mounted before a failure stays mounted for `unmount_all`."""
    empty = directory / EMPTY
    empty.mkdir(parents=True, exist_ok=True)
    roots: dict[str, Path] = {}
    sources: dict[str, str] = {}
    for volume in volumes:
        if volume.destination in sources:
            raise ImageVolumeInvalid(f"two image volumes at {volume.destination!r}")
        root = roots.get(volume.image_id)
        if root is None:
            root = directory / volume.image_id.rpartition(":")[2]
            root.mkdir(exist_ok=True)
            syscall.mount("overlay", str(root), "overlay", MS_RDONLY | MS_NOSUID | MS_NODEV,
                          overlay_options([*reversed(volume.layers), empty]))
            roots[volume.image_id] = root
        sources[volume.destination] = str(sub_directory(root, volume.sub_path, volume.image_id))
    return sources


def sub_directory(root: Path, sub_path: str, image: str) -> Path:
    """The directory `sub_path` names in the image mounted at `root`, every symlink on the way
    followed as if `root` were `/` (so none leads out of the image)."""
    if not sub_path:
        return root
    try:
        path = secure_join(str(root), sub_path)
    except RuntimeFailure as exc:  # more than MAX_SYMLINKS links
        raise ImageVolumeInvalid(f"sub path {sub_path!r} in image {image}: more than {MAX_SYMLINKS} "
                                 "symbolic links") from exc
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise ImageVolumeNotFound(f"sub path {sub_path!r} does not exist in image {image}") from None
    if not stat.S_ISDIR(mode):
        raise ImageVolumeInvalid(f"sub path {sub_path!r} in image {image} is not a directory")
    return Path(path)


def bind_sources(mounts: list[Mount], sources: dict[str, str]) -> list[Mount]:
    """The spec's mounts with the image volumes' sources filled in."""
    return [dataclasses.replace(m, source=sources[m.destination]) if m.source == "" and m.destination in sources
            else m for m in mounts]


def unmount_all(syscall: Syscall, directory: Path) -> None:
    """Unmount every image volume under `directory`; none mounted is fine."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in names:
        unmount(syscall, directory / name)
