"""Unpack one OCI/Docker image layer into a directory used as an overlayfs lower layer.

The layer is an uncompressed tar stream read strictly sequentially (the caller hashes the
bytes while we read them, so the stream is drained to its end). Every entry keeps its type,
numeric owner, mode (including setuid/setgid/sticky), mtime and `SCHILY.xattr.*` extended
attributes. OCI whiteouts become overlayfs whiteouts: `dir/.wh.NAME` turns into a 0:0
character device `dir/NAME`, and `dir/.wh..wh..opq` sets `trusted.overlay.opaque=y` on `dir`.

Nothing is ever written outside `dest`. Leading "/" and "./" are stripped, names with a ".."
component are refused, every parent of a target must be a real directory inside `dest`
(never a symlink, checked with lstat), hard link targets must already exist in this layer,
and no call follows a symlink. A violation raises DataLoss naming the offending entry.
"""
from __future__ import annotations

import errno
import os
import shutil
import stat
import tarfile
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pycri.common.errors import DataLoss, ResourceExhausted

CHUNK_SIZE = 1 << 20
WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
PAX_XATTR_PREFIX = "SCHILY.xattr."

_IGNORED_XATTR_ERRNOS = frozenset({errno.EOPNOTSUPP, errno.ENOTSUP, errno.EPERM})
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_T = typing.TypeVar("_T")


# The expansion ratio is measured against at least this many compressed bytes, so that small
# layers, which compress far better than their ratio on average, are never refused.
RATIO_FLOOR_BYTES = 1 << 20


@dataclass(frozen=True)
class UnpackLimits:
    """Decompression bomb limits of one layer; 0 means no limit."""

    max_bytes: int = 0  # bytes of the uncompressed tar stream
    max_ratio: int = 0  # uncompressed bytes per compressed byte (at least RATIO_FLOOR_BYTES compressed)


class GuardedStream:
    """The uncompressed stream of a layer, cut off with ResourceExhausted the moment it passes
    `limits`: a 2 MiB gzip that inflates to 2 GiB stops at the limit, not on a full disk."""

    def __init__(self, source: typing.Any, compressed_bytes: Callable[[], int], limits: UnpackLimits, what: str) -> None:
        self._source = source
        self._compressed_bytes = compressed_bytes
        self._limits = limits
        self._what = what
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._source.read(n if n is not None and 0 <= n <= CHUNK_SIZE else CHUNK_SIZE)
        self.size += len(data)
        self._check()
        return data

    def readable(self) -> bool:
        return True

    def _check(self) -> None:
        limits = self._limits
        if limits.max_bytes and self.size > limits.max_bytes:
            raise ResourceExhausted(
                f"{self._what} unpacks to more than {limits.max_bytes} bytes, the limit "
                "([registry] max_layer_unpacked_bytes)")
        if limits.max_ratio:
            compressed = max(self._compressed_bytes(), RATIO_FLOOR_BYTES)
            if self.size > limits.max_ratio * compressed:
                raise ResourceExhausted(
                    f"{self._what} unpacks to more than {limits.max_ratio} times its compressed size "
                    f"({self.size} bytes from {self._compressed_bytes()}), the limit "
                    "([registry] max_layer_expansion_ratio): a decompression bomb")


def unpack_layer(stream: typing.BinaryIO, dest: Path) -> int:
    """Unpack the uncompressed tar `stream` into the existing empty directory `dest`; return the number of bytes of regular file content written."""
    unpacker = _Unpacker(os.path.realpath(dest))
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                unpacker.add(tar, member)
    except tarfile.TarError as exc:
        raise DataLoss(f"layer is not a valid tar stream: {exc}") from exc
    unpacker.finish()
    while stream.read(CHUNK_SIZE):  # let the caller's digest see trailing padding too
        pass
    return unpacker.written


class _Unpacker:
    """Per-layer state: the root, the byte count and the directory mtimes to apply last."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.written = 0
        self.dir_times: dict[str, int] = {}

    def add(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        """Write one tar entry below the root."""
        parts = _clean(member.name, member.name)
        if not parts:
            if not member.isdir():
                raise DataLoss(f"layer entry {member.name!r} names the layer root but is not a directory")
            self._directory(member, self.root)
            return
        if parts[-1].startswith(WHITEOUT_PREFIX):
            self._whiteout(member.name, parts)
            return
        path = self._target(member.name, parts, create=True)
        if member.isreg():
            self._regular(tar, member, path)
        elif member.isdir():
            self._directory(member, path)
        elif member.issym():
            self._symlink(member, path)
        elif member.islnk():
            self._hardlink(member, parts, path)
        elif member.ischr() or member.isblk() or member.isfifo():
            self._special(member, path)
        else:
            raise DataLoss(f"layer entry {member.name!r} has unsupported tar type {member.type!r}")

    def finish(self) -> None:
        """Set directory mtimes, now that nothing is written into the directories any more."""
        for path, mtime in self.dir_times.items():
            os.utime(path, ns=(mtime, mtime), follow_symlinks=False)

    def _target(self, entry: str, parts: tuple[str, ...], create: bool) -> str:
        """Return the path for `parts`, after checking (or creating) each parent as a real directory."""
        path = self.root
        for part in parts[:-1]:
            path = f"{path}/{part}"
            try:
                mode = os.lstat(path).st_mode
            except FileNotFoundError:
                if not create:
                    raise DataLoss(f"layer entry {entry!r}: {'/'.join(parts)!r} does not exist in this layer") from None
                os.mkdir(path, 0o755)
                _chmod(path, 0o755)
                continue
            if stat.S_ISLNK(mode):
                raise DataLoss(f"layer entry {entry!r} goes through the symlink {path[len(self.root) + 1:]!r}")
            if not stat.S_ISDIR(mode):
                raise DataLoss(f"layer entry {entry!r}: {path[len(self.root) + 1:]!r} is not a directory")
        return f"{path}/{parts[-1]}"

    def _clear(self, path: str, keep_dir: bool = False) -> bool:
        """Remove whatever is at `path`; with keep_dir an existing directory stays (returns True)."""
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return False
        if not stat.S_ISDIR(mode):
            os.unlink(path)
            return False
        if keep_dir:
            return True
        shutil.rmtree(path)
        prefix = path + "/"
        for gone in [p for p in self.dir_times if p == path or p.startswith(prefix)]:
            del self.dir_times[gone]
        return False

    def _create(self, path: str, make: typing.Callable[[], _T]) -> _T:
        """Run `make` (an O_EXCL-style create); if something is already at `path`, remove it and retry."""
        try:
            return make()
        except FileExistsError:
            self._clear(path)
            return make()

    def _regular(self, tar: tarfile.TarFile, member: tarfile.TarInfo, path: str) -> None:
        source = tar.extractfile(member)
        assert source is not None  # isreg() members always have a data stream
        fd = self._create(path, lambda: os.open(path, _FILE_FLAGS, 0o600))
        try:
            self.written += _copy(source, fd)
            _apply_owner_mode_xattrs(fd, member)
            os.utime(fd, ns=_times(member))
        finally:
            os.close(fd)

    def _directory(self, member: tarfile.TarInfo, path: str) -> None:
        if path != self.root and not self._clear(path, keep_dir=True):
            os.mkdir(path, 0o700)
        fd = os.open(path, _DIR_FLAGS)
        try:
            _apply_owner_mode_xattrs(fd, member)
        finally:
            os.close(fd)
        self.dir_times[path] = _times(member)[1]

    def _symlink(self, member: tarfile.TarInfo, path: str) -> None:
        self._create(path, lambda: os.symlink(member.linkname, path))
        os.lchown(path, member.uid, member.gid)
        _set_xattrs(path, member)
        os.utime(path, ns=_times(member), follow_symlinks=False)

    def _hardlink(self, member: tarfile.TarInfo, parts: tuple[str, ...], path: str) -> None:
        target_parts = _clean(member.linkname, member.name)
        if not target_parts:
            raise DataLoss(f"layer entry {member.name!r} is a hard link to the layer root")
        target = self._target(member.name, target_parts, create=False)
        try:
            mode = os.lstat(target).st_mode
        except FileNotFoundError:
            raise DataLoss(f"layer entry {member.name!r} links to {member.linkname!r}, which is not in this layer") from None
        if stat.S_ISDIR(mode):
            raise DataLoss(f"layer entry {member.name!r} is a hard link to the directory {member.linkname!r}")
        if target_parts == parts:
            return
        self._create(path, lambda: os.link(target, path, follow_symlinks=False))

    def _special(self, member: tarfile.TarInfo, path: str) -> None:
        kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK if member.isblk() else stat.S_IFIFO
        self._create(path, lambda: os.mknod(path, kind | 0o600, os.makedev(member.devmajor, member.devminor)))
        os.lchown(path, member.uid, member.gid)
        _chmod(path, member.mode & 0o7777)
        _set_xattrs(path, member)
        os.utime(path, ns=_times(member), follow_symlinks=False)

    def _whiteout(self, entry: str, parts: tuple[str, ...]) -> None:
        name = parts[-1]
        if name == OPAQUE_MARKER:
            directory = os.path.dirname(self._target(entry, parts, create=True))
            os.setxattr(directory, OPAQUE_XATTR, b"y", follow_symlinks=False)
            return
        if name.startswith(WHITEOUT_META_PREFIX):
            return  # other AUFS metadata (.wh..wh.plnk, .wh..wh.aufs): meaningless for overlayfs
        hidden = name[len(WHITEOUT_PREFIX):]
        if hidden in ("", ".", ".."):
            raise DataLoss(f"layer entry {entry!r} is a whiteout of {hidden!r}, which escapes its directory")
        path = self._target(entry, parts[:-1] + (hidden,), create=True)
        self._create(path, lambda: os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0)))


def _clean(name: str, entry: str) -> tuple[str, ...]:
    """Split a tar name into components: "/a", "./a" and "a" all become ("a",); ".." is refused."""
    parts = tuple(p for p in name.split("/") if p and p != ".")
    if ".." in parts:
        raise DataLoss(f"layer entry {entry!r}: path {name!r} contains '..' and could escape the layer")
    if "\0" in name:
        raise DataLoss(f"layer entry {entry!r}: path {name!r} contains a NUL byte")
    if any(p.startswith(WHITEOUT_PREFIX) for p in parts[:-1]):
        raise DataLoss(f"layer entry {entry!r}: path {name!r} uses a whiteout name as a directory")
    return parts


def _copy(source: typing.IO[bytes], fd: int) -> int:
    """Copy `source` to `fd` in CHUNK_SIZE pieces; return the number of bytes copied."""
    total = 0
    while chunk := source.read(CHUNK_SIZE):
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view):]
        total += len(chunk)
    return total


def _apply_owner_mode_xattrs(fd: int, member: tarfile.TarInfo) -> None:
    """Chown, then chmod (chown clears setuid/setgid), then xattrs (chown clears security.capability)."""
    os.fchown(fd, member.uid, member.gid)
    os.fchmod(fd, member.mode & 0o7777)
    _set_xattrs(fd, member)


def _set_xattrs(target: int | str, member: tarfile.TarInfo) -> None:
    """Apply SCHILY.xattr.* PAX headers; an fd is used as is, a path is never followed."""
    for key, value in member.pax_headers.items():
        if not key.startswith(PAX_XATTR_PREFIX):
            continue
        name = key[len(PAX_XATTR_PREFIX):]
        data = value.encode("utf-8", "surrogateescape")
        try:
            os.setxattr(target, name, data, follow_symlinks=isinstance(target, int))
        except OSError as exc:
            if exc.errno not in _IGNORED_XATTR_ERRNOS:
                raise


def _chmod(path: str, mode: int) -> None:
    """chmod without following a final symlink (glibc emulates this for non-symlinks)."""
    try:
        os.chmod(path, mode, follow_symlinks=False)
    except NotImplementedError:  # old libc: `path` was just created by us and is not a symlink
        os.chmod(path, mode)


def _times(member: tarfile.TarInfo) -> tuple[int, int]:
    """(atime, mtime) in nanoseconds, both set to the entry's mtime."""
    mtime = round(member.mtime * 1_000_000_000)
    return mtime, mtime
