"""Tests for images.unpack: one layer tar stream into an overlayfs lower directory (runs as root)."""
from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from pycri.common.errors import DataLoss
from pycri.images.unpack import GuardedStream, UnpackLimits, unpack_layer

MTIME = 1_600_000_000
Entry = tuple[tarfile.TarInfo, bytes | None]


class NonSeekable(io.RawIOBase):
    """A read-only, non-seekable stream that counts the bytes handed out (like a hashing reader)."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        count = self._inner.readinto(buffer)
        self.consumed += count
        return count


def entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes | None = None, *, mode: int = 0o644,
          uid: int = 0, gid: int = 0, mtime: float = MTIME, linkname: str = "",
          xattrs: dict[str, str] | None = None, dev: tuple[int, int] = (0, 0)) -> Entry:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid, info.mtime, info.linkname = kind, mode, uid, gid, mtime, linkname
    info.devmajor, info.devminor = dev
    if xattrs:
        info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in xattrs.items()}
    if kind == tarfile.REGTYPE:
        data = data or b""
        info.size = len(data)
    return info, data


def layer_bytes(*entries: Entry) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def unpack(dest: Path, *entries: Entry) -> int:
    return unpack_layer(NonSeekable(layer_bytes(*entries)), dest)  # type: ignore[arg-type]


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    path = tmp_path / "dest"
    path.mkdir()
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    path = tmp_path / "outside"
    path.mkdir()
    return path


def test_regular_files_keep_content_mode_owner_and_mtime(dest: Path) -> None:
    written = unpack(dest,
                     entry("bin/su", data=b"x" * 3000, mode=0o4755, uid=1000, gid=2000, mtime=MTIME + 0.5),
                     entry("bin/sgid", data=b"hello", mode=0o2750, uid=7, gid=8),
                     entry("empty", mode=0o600))
    assert written == 3005
    st = os.lstat(dest / "bin/su")
    assert (dest / "bin/su").read_bytes() == b"x" * 3000
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o4755
    assert (st.st_uid, st.st_gid, st.st_mtime_ns) == (1000, 2000, (MTIME * 10**9) + 500_000_000)
    st = os.lstat(dest / "bin/sgid")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime) == (0o2750, 7, 8, MTIME)
    assert (dest / "empty").read_bytes() == b"" and stat.S_IMODE(os.lstat(dest / "empty").st_mode) == 0o600
    assert stat.S_IMODE(os.lstat(dest / "bin").st_mode) == 0o755  # implicit parent


def test_directories_keep_mode_owner_and_mtime_after_children(dest: Path) -> None:
    unpack(dest,
           entry("tmp", tarfile.DIRTYPE, mode=0o1777, uid=3, gid=4, mtime=MTIME),
           entry("tmp/sub", tarfile.DIRTYPE, mode=0o2700, mtime=MTIME + 10),
           entry("tmp/sub/file", data=b"late"),
           entry("tmp/other", data=b"late"))
    st = os.lstat(dest / "tmp")
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o1777
    assert (st.st_uid, st.st_gid, st.st_mtime) == (3, 4, MTIME)
    st = os.lstat(dest / "tmp/sub")
    assert (stat.S_IMODE(st.st_mode), st.st_mtime) == (0o2700, MTIME + 10)


def test_leading_slash_and_dot_prefixes_are_normalised(dest: Path) -> None:
    unpack(dest,
           entry("./", tarfile.DIRTYPE, mode=0o750, mtime=MTIME),
           entry("./a", data=b"a"),
           entry("/b", data=b"b"),
           entry("./c/./d", data=b"d"))
    assert sorted(os.listdir(dest)) == ["a", "b", "c"]
    assert (dest / "c/d").read_bytes() == b"d"
    st = os.lstat(dest)
    assert (stat.S_IMODE(st.st_mode), st.st_mtime) == (0o750, MTIME)


def test_symlinks_are_created_not_followed(dest: Path, outside: Path) -> None:
    target = outside / "target"
    target.write_bytes(b"keep")
    os.chmod(target, 0o600)
    before = os.lstat(target)
    unpack(dest,
           entry("abs", tarfile.SYMTYPE, linkname=str(target), uid=11, gid=12, mode=0o777,
                 xattrs={"user.onlink": "ignored"}),
           entry("rel", tarfile.SYMTYPE, linkname="../../nowhere"))
    st = os.lstat(dest / "abs")
    assert stat.S_ISLNK(st.st_mode) and os.readlink(dest / "abs") == str(target)
    assert (st.st_uid, st.st_gid, st.st_mtime) == (11, 12, MTIME)
    assert os.readlink(dest / "rel") == "../../nowhere"
    after = os.lstat(target)
    assert (after.st_mode, after.st_uid, after.st_gid, after.st_mtime_ns) == \
        (before.st_mode, before.st_uid, before.st_gid, before.st_mtime_ns)
    assert os.listxattr(target) == [] and target.read_bytes() == b"keep"


def test_hard_links_share_the_inode(dest: Path) -> None:
    written = unpack(dest,
                     entry("usr/bin/python3", data=b"py", mode=0o755),
                     entry("usr/bin/python", tarfile.LNKTYPE, linkname="./usr/bin/python3"),
                     entry("alias", tarfile.LNKTYPE, linkname="/usr/bin/python3"))
    assert written == 2
    inode = os.lstat(dest / "usr/bin/python3").st_ino
    assert os.lstat(dest / "usr/bin/python").st_ino == inode == os.lstat(dest / "alias").st_ino
    assert os.lstat(dest / "alias").st_nlink == 3


def test_fifo_and_device_nodes(dest: Path) -> None:
    unpack(dest,
           entry("run/fifo", tarfile.FIFOTYPE, mode=0o640, uid=5, gid=6),
           entry("dev/null", tarfile.CHRTYPE, mode=0o666, dev=(1, 3)),
           entry("dev/loop0", tarfile.BLKTYPE, mode=0o660, gid=6, dev=(7, 0)))
    st = os.lstat(dest / "run/fifo")
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640
    assert (st.st_uid, st.st_gid, st.st_mtime) == (5, 6, MTIME)
    st = os.lstat(dest / "dev/null")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3) and stat.S_IMODE(st.st_mode) == 0o666
    st = os.lstat(dest / "dev/loop0")
    assert stat.S_ISBLK(st.st_mode) and st.st_rdev == os.makedev(7, 0) and st.st_gid == 6


def test_extended_attributes_from_pax_headers(dest: Path) -> None:
    binary = b"\x01\x00\xff\xfe".decode("utf-8", "surrogateescape")
    unpack(dest,
           entry("ping", data=b"elf", mode=0o755, uid=1, xattrs={"user.plain": "v1", "user.bin": binary}),
           entry("d", tarfile.DIRTYPE, mode=0o755, xattrs={"trusted.note": "dir"}),
           entry("fifo", tarfile.FIFOTYPE, xattrs={"trusted.note": "fifo"}))
    assert os.getxattr(dest / "ping", "user.plain") == b"v1"
    assert os.getxattr(dest / "ping", "user.bin") == b"\x01\x00\xff\xfe"
    assert os.getxattr(dest / "d", "trusted.note") == b"dir"
    assert os.getxattr(dest / "fifo", "trusted.note", follow_symlinks=False) == b"fifo"


def test_whiteout_becomes_overlay_char_device(dest: Path) -> None:
    unpack(dest,
           entry("etc", tarfile.DIRTYPE, mode=0o755),
           entry("etc/.wh.passwd"),
           entry(".wh.root-file"),
           entry("deep/er/.wh.gone"))
    for path in ("etc/passwd", "root-file", "deep/er/gone"):
        st = os.lstat(dest / path)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0), path
    assert sorted(os.listdir(dest / "etc")) == ["passwd"]
    assert not any(name.startswith(".wh.") for _, dirs, files in os.walk(dest) for name in dirs + files)


def test_opaque_marker_sets_trusted_overlay_opaque(dest: Path) -> None:
    unpack(dest,
           entry("var", tarfile.DIRTYPE, mode=0o755),
           entry("var/.wh..wh..opq"),
           entry("var/kept", data=b"k"),
           entry("new/dir/.wh..wh..opq"),
           entry("var/.wh..wh.plnk"))
    assert os.getxattr(dest / "var", "trusted.overlay.opaque") == b"y"
    assert os.getxattr(dest / "new/dir", "trusted.overlay.opaque") == b"y"
    assert "trusted.overlay.opaque" not in os.listxattr(dest / "new")
    assert sorted(os.listdir(dest / "var")) == ["kept"]
    assert os.listdir(dest / "new/dir") == []


def test_later_entries_overwrite_earlier_ones(dest: Path, outside: Path) -> None:
    unpack(dest,
           entry("file", data=b"old"),
           entry("file", data=b"new", mode=0o600),
           entry("link", tarfile.SYMTYPE, linkname=str(outside / "victim")),
           entry("link", data=b"replaces the symlink"),
           entry("tree/sub/file", data=b"gone"),
           entry("tree", tarfile.SYMTYPE, linkname="elsewhere"),
           entry("keep", tarfile.DIRTYPE, mode=0o700),
           entry("keep/child", data=b"c"),
           entry("keep", tarfile.DIRTYPE, mode=0o755, uid=9),
           entry("was-file", data=b"f"),
           entry("was-file", tarfile.DIRTYPE, mode=0o711))
    assert (dest / "file").read_bytes() == b"new" and stat.S_IMODE(os.lstat(dest / "file").st_mode) == 0o600
    assert stat.S_ISREG(os.lstat(dest / "link").st_mode) and os.listdir(outside) == []
    assert os.readlink(dest / "tree") == "elsewhere"
    st = os.lstat(dest / "keep")
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o755, 9) and os.listdir(dest / "keep") == ["child"]
    st = os.lstat(dest / "was-file")
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o711


def test_whole_stream_is_consumed(dest: Path) -> None:
    data = layer_bytes(entry("a", data=b"a" * 100))
    stream = NonSeekable(data)
    unpack_layer(stream, dest)  # type: ignore[arg-type]
    assert stream.consumed == len(data)


@pytest.mark.parametrize("data", [b"", b"definitely not a tar archive" * 100], ids=["empty", "garbage"])
def test_invalid_tar_raises_data_loss(dest: Path, data: bytes) -> None:
    with pytest.raises(DataLoss):
        unpack_layer(NonSeekable(data), dest)  # type: ignore[arg-type]


def test_truncated_file_data_raises_data_loss(dest: Path) -> None:
    data = layer_bytes(entry("big", data=b"z" * 100_000))
    with pytest.raises(DataLoss):
        unpack_layer(NonSeekable(data[:50_000]), dest)  # type: ignore[arg-type]


def _escapes(outside: Path) -> dict[str, tuple[str, list[Entry]]]:
    """Escape id -> (the entry name the error must mention, the layer)."""
    out = str(outside)
    return {
        "dotdot": ("../evil", [entry("../evil", data=b"x")]),
        "nested-dotdot": ("a/../../evil", [entry("a", tarfile.DIRTYPE), entry("a/../../evil", data=b"x")]),
        "absolute-dotdot": ("/etc/../../evil", [entry("/etc/../../evil", data=b"x")]),
        "dotdot-dir": ("../evil", [entry("../evil", tarfile.DIRTYPE)]),
        "symlink-outside-then-file": ("link/evil", [
            entry("link", tarfile.SYMTYPE, linkname=out), entry("link/evil", data=b"x")]),
        "symlink-outside-then-nested-file": ("link/sub/file", [
            entry("link", tarfile.SYMTYPE, linkname=out), entry("link/sub/file", data=b"x")]),
        "symlink-outside-then-dir": ("link/sub", [
            entry("link", tarfile.SYMTYPE, linkname=out), entry("link/sub", tarfile.DIRTYPE)]),
        "symlink-inside-then-file": ("ld/evil", [
            entry("d", tarfile.DIRTYPE), entry("ld", tarfile.SYMTYPE, linkname="d"),
            entry("ld/evil", data=b"x")]),
        "hardlink-dotdot": ("hl", [entry("hl", tarfile.LNKTYPE, linkname="../../etc/passwd")]),
        "hardlink-absolute-not-in-layer": ("hl", [entry("hl", tarfile.LNKTYPE, linkname="/etc/passwd")]),
        "hardlink-missing": ("hl", [entry("hl", tarfile.LNKTYPE, linkname="missing")]),
        "hardlink-through-symlink": ("hl", [
            entry("d/f", data=b"x"), entry("ld", tarfile.SYMTYPE, linkname="d"),
            entry("hl", tarfile.LNKTYPE, linkname="ld/f")]),
        "hardlink-through-outside-symlink": ("hl", [
            entry("link", tarfile.SYMTYPE, linkname=out), entry("hl", tarfile.LNKTYPE, linkname="link/f")]),
        "hardlink-name-through-symlink": ("link/hl", [
            entry("f", data=b"x"), entry("link", tarfile.SYMTYPE, linkname=out),
            entry("link/hl", tarfile.LNKTYPE, linkname="f")]),
        "chardev-dotdot": ("../null", [entry("../null", tarfile.CHRTYPE, dev=(1, 3))]),
        "fifo-through-symlink": ("link/fifo", [
            entry("link", tarfile.SYMTYPE, linkname=out), entry("link/fifo", tarfile.FIFOTYPE)]),
        "whiteout-dotdot-dir": (".wh.../x", [entry(".wh.../x")]),
        "whiteout-of-dotdot": ("a/.wh...", [entry("a", tarfile.DIRTYPE), entry("a/.wh...")]),
        "whiteout-of-dot": ("a/.wh..", [entry("a", tarfile.DIRTYPE), entry("a/.wh..")]),
        "whiteout-through-symlink": ("link/.wh.x", [
            entry("link", tarfile.SYMTYPE, linkname=out), entry("link/.wh.x")]),
        "opaque-through-symlink": ("link/.wh..wh..opq", [
            entry("link", tarfile.SYMTYPE, linkname=out), entry("link/.wh..wh..opq")]),
        "whiteout-parent-dotdot": ("../.wh.x", [entry("../.wh.x")]),
    }


ESCAPE_IDS = sorted(_escapes(Path("/unused")))


@pytest.mark.parametrize("case", ESCAPE_IDS)
def test_escape_attempts_raise_data_loss_and_write_nothing_outside(
        tmp_path: Path, dest: Path, outside: Path, case: str) -> None:
    name, entries = _escapes(outside)[case]
    with pytest.raises(DataLoss) as caught:
        unpack(dest, *entries)
    assert repr(name) in str(caught.value)
    assert os.listdir(outside) == []
    assert xattrs_of(outside) == []
    assert sorted(os.listdir(tmp_path)) == ["dest", "outside"]
    assert not os.path.lexists("/evil") and not os.path.lexists("/etc/evil")


def xattrs_of(path: Path) -> list[str]:
    return [name for name in os.listxattr(path) if not name.startswith("security.")]


def _gzip_of_zeros(size: int) -> bytes:
    import gzip

    return gzip.compress(b"\0" * size, compresslevel=9)


def _guarded(compressed: bytes, limits: UnpackLimits) -> GuardedStream:
    import gzip

    source = io.BytesIO(compressed)
    return GuardedStream(gzip.GzipFile(fileobj=source), source.tell, limits, "layer L")


def test_guarded_stream_stops_at_the_size_limit() -> None:
    from pycri.common.errors import ResourceExhausted

    stream = _guarded(_gzip_of_zeros(8 << 20), UnpackLimits(max_bytes=3 << 20))
    with pytest.raises(ResourceExhausted, match="max_layer_unpacked_bytes"):
        while stream.read(1 << 20):
            pass
    assert stream.size <= (3 << 20) + (1 << 20)  # stopped within one read of the limit


def test_guarded_stream_stops_a_bomb_at_the_ratio() -> None:
    from pycri.common.errors import ResourceExhausted

    stream = _guarded(_gzip_of_zeros(16 << 20), UnpackLimits(max_ratio=4))  # ~16 KiB compressed
    with pytest.raises(ResourceExhausted, match="decompression bomb"):
        while stream.read(-1):  # read(-1) is bounded too
            pass
    assert stream.size <= (5 << 20)


def test_guarded_stream_lets_ordinary_layers_through() -> None:
    data = os.urandom(2 << 20)
    import gzip

    stream = _guarded(gzip.compress(data), UnpackLimits(max_bytes=4 << 20, max_ratio=2))
    out = b"".join(iter(lambda: stream.read(1 << 16), b""))
    assert out == data
    unlimited = _guarded(_gzip_of_zeros(8 << 20), UnpackLimits())
    assert len(b"".join(iter(lambda: unlimited.read(1 << 20), b""))) == 8 << 20
