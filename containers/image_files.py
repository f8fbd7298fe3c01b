"""Read a file of an image from its unpacked layers, as the container's merged rootfs shows it,
without ever leaving the image.

pycri reads a few files of an image on the host side (its /etc/passwd and /etc/group, before
the container exists). The image is hostile: its files may be symlinks (absolute or relative,
in one layer or across layers) meant to lead to host files, FIFOs that block a reader,
device nodes whose open has side effects, or huge files. So the path is resolved here one
component at a time over the layer directories, the way overlayfs merges them (the topmost
entry wins, a whiteout — a 0:0 character device, as `images.unpack` writes them — hides what
is below, an opaque directory hides the directories below it, a non-directory hides all
below it), and every symlink met is followed as if the image were `/` (an absolute target
starts again at the image's root, `..` stops there), as `RESOLVE_IN_ROOT` would.

Every lookup is an openat2(2) of one plain name in a layer directory with RESOLVE_BENEATH |
RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV, opening it O_PATH: the kernel
itself refuses anything that would leave that directory or follow a link, and nothing is
opened for reading until it is known to be a regular file, which is then read up to a limit.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from pycri.common.errors import InvalidArgument, NotFound
from pycri.kernel.syscall import (
    RESOLVE_BENEATH,
    RESOLVE_NO_MAGICLINKS,
    RESOLVE_NO_SYMLINKS,
    RESOLVE_NO_XDEV,
    Syscall,
)

# as the kernel's MAXSYMLINKS: more links than this on one path is a loop
MAX_SYMLINKS = 40
# path components looked up for one file, links' targets included: /etc/passwd takes 2; a
# bound on the work (and descriptors) a hostile path of links and ".." can cause
MAX_LOOKUPS = 1024
# the xattr images.unpack sets on a directory from a `.wh..wh..opq` marker (overlayfs reads it)
OPAQUE_XATTR = "trusted.overlay.opaque"
_LOOKUP = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV
_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class ImageFileInvalid(InvalidArgument):
    """The image has the file, but it cannot be used: not a regular file, too large, or a
    symlink loop on its path."""


def read_file(syscall: Syscall, layers_bottom_first: list[Path], path: str, limit: int) -> bytes | None:
    """The content of `path` (absolute or relative to the image's root) in the image made of
    `layers_bottom_first`, or None if the image has no such file. Raises ImageFileInvalid if
    it is not a regular file, has more than `limit` bytes or its path has a symlink loop."""
    with _Image(syscall, layers_bottom_first) as image:
        return image.read(path, limit)


class _Entry:
    """What a name in a merged directory is: a directory (its descriptors in each layer that
    contributes to it, topmost first) or a non-directory (its layer's directory and name)."""

    def __init__(self, dirs: list[int] | None = None, parent: int = -1, name: str = "", mode: int = 0) -> None:
        self.dirs = dirs
        self.parent = parent
        self.name = name
        self.mode = mode


class _Image:
    """The layers' root directories, and the merged directory a walk is in (its descriptors
    are closed as the walk leaves it, so a hostile path never piles them up)."""

    def __init__(self, syscall: Syscall, layers_bottom_first: list[Path]) -> None:
        self.syscall = syscall
        self.layers = list(reversed(layers_bottom_first))
        self.root: list[int] = []
        self.current: list[int] = self.root
        self.lookups = 0

    def __enter__(self) -> _Image:
        try:
            for layer in self.layers:  # pycri's own directories, trusted
                self.root.append(os.open(layer, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
        except FileNotFoundError:
            self.__exit__()
            raise NotFound("a layer of the image is gone (the image was removed meanwhile)") from None
        return self

    def __exit__(self, *exc: object) -> None:
        self._move(self.root)
        for fd in self.root:
            os.close(fd)

    def read(self, path: str, limit: int) -> bytes | None:
        entry = self._resolve(path)
        if entry is None:
            return None
        if entry.dirs is not None or not stat.S_ISREG(entry.mode):
            raise ImageFileInvalid(f"{path} in the image is not a regular file")
        fd = self.syscall.openat2(entry.parent, entry.name, _READ_FLAGS, _LOOKUP)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ImageFileInvalid(f"{path} in the image is not a regular file")
            if st.st_size > limit:
                raise ImageFileInvalid(f"{path} in the image has {st.st_size} bytes, more than the {limit} "
                                       "pycri reads")
            chunks = []
            left = limit + 1
            while left > 0 and (chunk := os.read(fd, min(left, 1 << 16))):
                chunks.append(chunk)
                left -= len(chunk)
        finally:
            os.close(fd)
        data = b"".join(chunks)
        if len(data) > limit:
            raise ImageFileInvalid(f"{path} in the image has more than the {limit} bytes pycri reads")
        return data

    def _move(self, directory: list[int]) -> None:
        """Make `directory` the current one, closing the one left (never the roots)."""
        if self.current is not self.root and self.current is not directory:
            for fd in self.current:
                os.close(fd)
        self.current = directory

    def _resolve(self, path: str) -> _Entry | None:
        """The entry `path` names, every symlink followed inside the image; None if absent. A
        non-directory's parent is among the current directory's descriptors."""
        pending = [p for p in path.split("/") if p not in ("", ".")]
        resolved: list[str] = []  # the current directory, as names free of symlinks
        self._move(self.root)
        links = 0
        while pending:
            part = pending.pop(0)
            if part == "..":
                if resolved:
                    resolved.pop()
                    self._move(self._directory(resolved))
                continue
            entry = self._lookup(self.current, part)
            if entry is None:
                return None
            if entry.dirs is not None:
                resolved.append(part)
                self._move(entry.dirs)
                continue
            if stat.S_ISLNK(entry.mode):
                links += 1
                if links > MAX_SYMLINKS:
                    raise ImageFileInvalid(f"{path} in the image: more than {MAX_SYMLINKS} symbolic links")
                target = os.readlink(entry.name, dir_fd=entry.parent)
                if not target:
                    return None  # the kernel finds nothing through an empty link
                if target.startswith("/"):
                    resolved = []
                    self._move(self.root)
                pending = [p for p in target.split("/") if p not in ("", ".")] + pending
                continue
            if pending:  # a file used as a directory
                return None
            return entry
        return _Entry(dirs=self.current)

    def _directory(self, names: list[str]) -> list[int]:
        """The descriptors of the merged directory at `names` (known to be one)."""
        current = self.root
        for name in names:
            entry = self._lookup(current, name)
            if current is not self.root:
                for fd in current:
                    os.close(fd)
            if entry is None or entry.dirs is None:  # cannot happen: the layers do not change
                raise ImageFileInvalid(f"/{'/'.join(names)} in the image is no longer a directory")
            current = entry.dirs
        return current

    def _lookup(self, directory: list[int], name: str) -> _Entry | None:
        """`name` in the merged directory whose layers' descriptors are `directory`; a
        directory's descriptors are the caller's to close."""
        self.lookups += 1
        if self.lookups > MAX_LOOKUPS:
            raise ImageFileInvalid(f"more than {MAX_LOOKUPS} path components to resolve")
        dirs: list[int] = []
        try:
            for parent in directory:
                try:
                    fd = self.syscall.openat2(parent, name, _PATH_FLAGS, _LOOKUP)
                except OSError as exc:
                    if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG):  # no such name
                        continue
                    raise
                st = os.fstat(fd)
                if not stat.S_ISDIR(st.st_mode):
                    os.close(fd)
                    if dirs or (stat.S_ISCHR(st.st_mode) and st.st_rdev == 0):
                        break  # hidden by a directory above, or a whiteout hiding what is below
                    return _Entry(parent=parent, name=name, mode=st.st_mode)
                dirs.append(fd)
                if self._opaque(fd):
                    break
        except BaseException:
            for fd in dirs:
                os.close(fd)
            raise
        return _Entry(dirs=dirs) if dirs else None

    def _opaque(self, fd: int) -> bool:
        readable = self.syscall.openat2(fd, ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, _LOOKUP)
        try:
            return os.getxattr(readable, OPAQUE_XATTR) == b"y"
        except OSError:  # ENODATA: not opaque; no xattrs on this filesystem: none can be
            return False
        finally:
            os.close(readable)
