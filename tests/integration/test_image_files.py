"""containers.image_files against the kernel: the same layers mounted as a real read-only
overlayfs and read with openat2(RESOLVE_IN_ROOT) must give what image_files reads from the
layer directories (links across layers, whiteouts, opaque directories, ".." past the root)."""
from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycri.containers.image_files import ImageFileInvalid, read_file
from pycri.kernel.linux import LinuxSyscall
from pycri.kernel.syscall import MNT_DETACH, MS_RDONLY, RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="overlay mounts, whiteouts and opaque xattrs need root")

PATHS = [
    "etc/passwd", "/etc/group", "etc/shadow", "etc/hostname", "etc/gone", "etc/abs", "etc/rel", "etc/up",
    "d/f", "d/g", "d/h", "x/f", "x", "y/f", "link-dir/passwd", "etc/loop", "etc/fifo", "etc", "nope/x",
    "etc/passwd/x", "etc/dangling", "etc/empty-target", "../../etc/passwd",
]


@pytest.fixture
def layers(tmp_path: Path) -> list[Path]:
    base, middle, top = (tmp_path / n for n in ("base", "middle", "top"))
    for layer in (base, middle, top):
        (layer / "etc").mkdir(parents=True)
    (base / "etc/passwd").write_text("base passwd\n")
    (base / "etc/group").write_text("base group\n")
    (base / "etc/gone").write_text("hidden\n")
    (base / "srv").mkdir()
    (base / "srv/real").write_text("real\n")
    os.mknod(middle / "etc/gone", stat.S_IFCHR, 0)  # whiteout
    (middle / "etc/group").write_text("middle group\n")
    os.symlink("/srv/real", top / "etc/abs")
    os.symlink("../srv/real", top / "etc/rel")
    os.symlink("../../../../../srv/real", top / "etc/up")
    os.symlink("/etc/hostname", top / "etc/shadow")  # the host has it, the image does not
    os.symlink("etc", top / "link-dir")
    os.symlink("loop", top / "etc/loop")
    os.symlink("nothing", top / "etc/dangling")
    os.mkfifo(top / "etc/fifo")
    (base / "d").mkdir()
    (base / "d/f").write_text("base d/f\n")
    (base / "d/h").write_text("base d/h\n")
    (middle / "d").mkdir()
    os.setxattr(middle / "d", "trusted.overlay.opaque", b"y")
    (middle / "d/g").write_text("middle d/g\n")
    (top / "d").mkdir()
    (top / "d/h").write_text("top d/h\n")
    (base / "x").mkdir()
    (base / "x/f").write_text("base x/f\n")
    (middle / "x").write_text("middle x\n")  # a file over a directory
    (base / "y").write_text("base y\n")
    (middle / "y").mkdir()  # a directory over a file
    (middle / "y/f").write_text("middle y/f\n")
    return [base, middle, top]


@pytest.fixture
def merged(layers: list[Path], tmp_path: Path) -> Iterator[Path]:
    target = tmp_path / "merged"
    target.mkdir()
    syscall = LinuxSyscall()
    syscall.mount("overlay", str(target), "overlay", MS_RDONLY,
                  "lowerdir=" + ":".join(str(p) for p in reversed(layers)))
    try:
        yield target
    finally:
        syscall.umount(str(target), MNT_DETACH)


def kernel_read(root: Path, path: str) -> bytes | str | None:
    syscall = LinuxSyscall()
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            fd = syscall.openat2(root_fd, path, os.O_PATH | os.O_CLOEXEC, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return None
            if exc.errno == errno.ELOOP:
                return "invalid"
            raise
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return "invalid"
            with open(f"/proc/self/fd/{fd}", "rb") as f:
                return f.read()
        finally:
            os.close(fd)
    finally:
        os.close(root_fd)


def ours(layers: list[Path], path: str) -> bytes | str | None:
    try:
        return read_file(LinuxSyscall(), layers, path, 1 << 20)
    except ImageFileInvalid:
        return "invalid"


@pytest.mark.parametrize("path", PATHS)
def test_same_as_the_kernel_overlay(layers: list[Path], merged: Path, path: str) -> None:
    assert ours(layers, path) == kernel_read(merged, path)


def test_the_host_is_never_reached(layers: list[Path]) -> None:
    assert Path("/etc/hostname").exists()
    assert ours(layers, "etc/shadow") is None
