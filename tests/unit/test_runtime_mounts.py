"""Mount options, secure path resolution, and the rootfs steps with the recording
kernel fake (runtime.rootfs)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from pycri.kernel.fake import RecordingSyscall
from pycri.kernel.syscall import (
    AT_RECURSIVE, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY,
    MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC, MS_RELATIME, MS_REMOUNT, MS_SLAVE,
    MS_STRICTATIME, OPEN_TREE_CLOEXEC, OPEN_TREE_CLONE,
)
from pycri.runtime.errors import RuntimeFailure
from pycri.runtime.rootfs import devices, leaves_none_shared, needs_dev_setup, protect
from pycri.runtime.rootfs.mountopts import parse_options, propagation_flags
from pycri.runtime.rootfs.mounts import mount_entry
from pycri.runtime.rootfs.securejoin import check_within, secure_join
from pycri.runtime.spec import Device, Mount


def test_parse_options_flags_propagation_and_data() -> None:
    opts = parse_options(["nosuid", "strictatime", "mode=755", "size=65536k", "rslave", "ro", "rw", "tmpcopyup"])
    assert opts.flags == MS_NOSUID | MS_STRICTATIME
    assert opts.propagation == [MS_SLAVE | MS_REC]
    assert opts.data == "mode=755,size=65536k"
    assert opts.extensions == ["tmpcopyup"]
    bind = parse_options(["rbind", "ro", "nodev", "noexec", "private"])
    assert bind.is_bind and bind.recursive
    assert bind.flags == MS_BIND | MS_REC | MS_RDONLY | MS_NODEV | MS_NOEXEC
    assert bind.propagation == [MS_PRIVATE]
    assert not parse_options(["bind"]).recursive
    assert parse_options(["relatime", "norelatime"]).flags == 0
    assert parse_options(["defaults"]).flags == 0


def test_parse_recursive_options() -> None:
    rro = parse_options(["rbind", "rro", "rprivate"])
    assert rro.flags == MS_BIND | MS_REC  # not MS_RDONLY: mount_setattr makes the whole tree read-only
    assert (rro.rec_attr_set, rro.rec_attr_clr) == (MOUNT_ATTR_RDONLY, 0)
    assert rro.data == "" and rro.propagation == [MS_PRIVATE | MS_REC]
    mixed = parse_options(["rro", "rnosuid", "rexec", "rrw"])  # the last of rro/rrw wins
    assert (mixed.rec_attr_set, mixed.rec_attr_clr) == (MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOEXEC)


def test_secure_join_keeps_symlinks_inside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    os.symlink("/etc", root / "abs")
    os.symlink("../../../../etc", root / "rel")
    os.symlink("/outside/dir", root / "out")
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    assert secure_join(str(root), "/abs/passwd") == f"{root}/etc/passwd"
    assert secure_join(str(root), "rel/passwd") == f"{root}/etc/passwd"
    assert secure_join(str(root), "/out/x") == f"{root}/outside/dir/x"
    assert secure_join(str(root), "/../../x") == f"{root}/x"
    assert secure_join(str(root), "/") == str(root)
    with pytest.raises(RuntimeFailure, match="too many levels"):
        secure_join(str(root), "/loop1")
    os.symlink(str(tmp_path), root / "escape")
    with pytest.raises(RuntimeFailure, match="outside the rootfs"):
        check_within(str(root), str(root / "escape"))


def test_bind_mount_creates_targets_and_remounts(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    src_dir, src_file = tmp_path / "d", tmp_path / "f"
    src_dir.mkdir()
    src_file.write_text("x")
    kernel = RecordingSyscall()
    mount_entry(kernel, str(rootfs), Mount("/mnt/dir", "bind", str(src_dir), ["rbind", "ro", "nosuid", "rprivate"]))
    mount_entry(kernel, str(rootfs), Mount("/etc/file", "none", str(src_file), ["bind"]))
    assert (rootfs / "mnt" / "dir").is_dir() and (rootfs / "etc" / "file").is_file()
    assert kernel.calls == [
        ("mount", (str(src_dir), f"{rootfs}/mnt/dir", "", MS_BIND | MS_REC, "")),
        ("mount", ("", f"{rootfs}/mnt/dir", "", MS_RDONLY | MS_NOSUID | MS_BIND | MS_REMOUNT, "")),
        ("mount", ("", f"{rootfs}/mnt/dir", "", MS_PRIVATE | MS_REC, "")),
        ("mount", (str(src_file), f"{rootfs}/etc/file", "", MS_BIND, "")),
    ]


def test_recursive_read_only_bind_mount(tmp_path: Path) -> None:
    """rro: the recursive bind, its propagation, then one mount_setattr(AT_RECURSIVE) over the tree."""
    rootfs, src = tmp_path / "rootfs", tmp_path / "src"
    rootfs.mkdir()
    src.mkdir()
    kernel = RecordingSyscall()
    mount_entry(kernel, str(rootfs), Mount("/mnt", "bind", str(src), ["rbind", "rro", "rprivate"]))
    assert kernel.calls == [
        ("mount", (str(src), f"{rootfs}/mnt", "", MS_BIND | MS_REC, "")),
        ("mount", ("", f"{rootfs}/mnt", "", MS_PRIVATE | MS_REC, "")),
        ("mount_setattr", (f"{rootfs}/mnt", AT_RECURSIVE, MOUNT_ATTR_RDONLY, 0)),
    ]
    old_kernel = RecordingSyscall(failures={"mount_setattr": OSError(38, "Function not implemented")})
    with pytest.raises(RuntimeFailure, match="to rootfs at '/mnt': Function not implemented"):
        mount_entry(old_kernel, str(rootfs), Mount("/mnt", "bind", str(src), ["rbind", "rro"]))


def test_filesystem_mounts_and_errors(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    kernel = RecordingSyscall()
    mount_entry(kernel, str(rootfs), Mount("/dev", "tmpfs", "tmpfs", ["nosuid", "mode=755", "ro"]))
    mount_entry(kernel, str(rootfs), Mount("/proc", "proc", "proc", []))
    assert kernel.calls == [("mount", ("tmpfs", f"{rootfs}/dev", "tmpfs", MS_NOSUID, "mode=755")),
                            ("mount", ("proc", f"{rootfs}/proc", "proc", 0, ""))]
    with pytest.raises(RuntimeFailure, match="/nonexistent"):
        mount_entry(kernel, str(rootfs), Mount("/x", "bind", "/nonexistent", ["bind"]))
    failing = RecordingSyscall(failures={"mount": PermissionError(1, "Operation not permitted")})
    with pytest.raises(RuntimeFailure, match="error mounting 'proc' to rootfs at '/proc': Operation not permitted"):
        mount_entry(failing, str(rootfs), Mount("/proc", "proc", "proc", []))


def test_needs_dev_setup() -> None:
    assert needs_dev_setup([Mount("/dev", "tmpfs", "tmpfs", [])])
    assert needs_dev_setup([])
    assert not needs_dev_setup([Mount("/dev", "bind", "/dev", ["rbind"])])
    # a volume over the runtime's tmpfs: the last mount at /dev is the one devices would land in
    assert not needs_dev_setup([Mount("/dev", "tmpfs", "tmpfs", []), Mount("/dev/pts", "devpts", "devpts", []),
                                Mount("/dev/", "bind", "/srv/volume", ["rbind", "rw"])])
    assert needs_dev_setup([Mount("/dev", "bind", "/dev", ["rbind"]), Mount("/dev", "tmpfs", "tmpfs", [])])


def test_devices_never_written_into_another_filesystem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bind mount under /dev (its own st_dev) gets no device node, link or ptmx."""
    rootfs = tmp_path / "rootfs"
    (rootfs / "dev" / "volume").mkdir(parents=True)
    real_stat = os.stat

    def stat(path: str, *args: object, **kwargs: object) -> os.stat_result:
        st = real_stat(path, *args, **kwargs)  # type: ignore[arg-type]
        if str(path).endswith("/volume"):
            return os.stat_result((st.st_mode, st.st_ino, st.st_dev + 1, *tuple(st)[3:]))
        return st

    monkeypatch.setattr(devices.os, "stat", stat)
    monkeypatch.setattr(devices.os, "chown", lambda p, u, g: None)
    kernel = RecordingSyscall()
    with pytest.raises(RuntimeFailure, match="another filesystem than the container's /dev"):
        devices.create_device(kernel, str(rootfs), Device("c", "/dev/volume/null", 1, 3, 0o666, 0, 0))
    assert kernel.calls == [] and os.listdir(rootfs / "dev" / "volume") == []
    devices.create_device(kernel, str(rootfs), Device("c", "/dev/null", 1, 3, 0o666, 0, 0))
    assert kernel.calls[0][0] == "mknod"


class _OpenTreeOf(RecordingSyscall):
    """open_tree hands out a descriptor of `target` (what /dev/null really is in the container)."""

    def __init__(self, target: Path) -> None:
        super().__init__()
        self.target = target

    def open_tree(self, path: str, flags: int) -> int:
        self._record("open_tree", path, flags)
        return os.open(self.target, os.O_RDONLY | os.O_CLOEXEC)


def test_masking_fails_closed(tmp_path: Path) -> None:
    """/dev/null that is not the null device (a regular file from a volume at /dev): no bind of
    it over a masked file, and the container does not start."""
    (tmp_path / "timer_list").write_text("secrets")
    (tmp_path / "null").write_text("")
    kernel = _OpenTreeOf(tmp_path / "null")
    with pytest.raises(RuntimeFailure, match="not the null device"):
        protect.mask_path(kernel, str(tmp_path / "timer_list"))
    assert [name for name, _ in kernel.calls] == ["open_tree"]
    missing = RecordingSyscall(failures={"open_tree": FileNotFoundError(2, "No such file or directory")})
    with pytest.raises(RuntimeFailure, match="no /dev/null"):
        protect.mask_path(missing, str(tmp_path / "timer_list"))
    refused = RecordingSyscall(failures={"move_mount": PermissionError(1, "Operation not permitted")})
    with pytest.raises(RuntimeFailure, match="mask path"):
        protect.mask_path(refused, str(tmp_path / "timer_list"))
    (tmp_path / "dir").mkdir()
    refused = RecordingSyscall(failures={"mount": FileNotFoundError(2, "No such file or directory")})
    with pytest.raises(RuntimeFailure, match="mask path"):
        protect.mask_path(refused, str(tmp_path / "dir"))


def test_devices_mknod_and_bind_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    chowns: list[tuple[str, int, int]] = []
    monkeypatch.setattr(devices.os, "chown", lambda p, u, g: chowns.append((p, u, g)))
    kernel = RecordingSyscall()
    devices.create_devices(kernel, str(rootfs), [Device("c", "/dev/fuse", 10, 229, 0o600, 5, 6)])
    nodes = [(args[0], args[1], os.major(args[2]), os.minor(args[2])) for name, args in kernel.calls]
    assert (f"{rootfs}/dev/null", 0o20666, 1, 3) in nodes
    assert (f"{rootfs}/dev/fuse", 0o20600, 10, 229) in nodes
    assert len(nodes) == 7 and (f"{rootfs}/dev/fuse", 5, 6) in chowns
    denied = RecordingSyscall(failures={"mknod": PermissionError(1, "Operation not permitted")})
    devices.create_device(denied, str(rootfs), devices.DEFAULT_DEVICES[0])
    assert denied.calls[-1] == ("mount", ("/dev/null", f"{rootfs}/dev/null", "bind", MS_BIND, ""))
    devices.setup_ptmx(str(rootfs))
    devices.create_symlinks(str(rootfs))
    assert os.readlink(rootfs / "dev" / "ptmx") == "pts/ptmx"
    assert os.readlink(rootfs / "dev" / "stderr") == "/proc/self/fd/2"
    devices.create_symlinks(str(rootfs))  # idempotent
    assert devices.dev_symlinks(host_has_kcore=True)[-1] == ("/proc/kcore", "/dev/core")


def test_masked_and_readonly_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("x")
    monkeypatch.setattr(protect, "preserved_flags", lambda path: MS_NOSUID)
    kernel = RecordingSyscall()
    protect.mask_path(kernel, str(tmp_path / "dir"))
    protect.mask_path(kernel, str(tmp_path / "file"))
    protect.mask_path(kernel, str(tmp_path / "missing"))
    protect.readonly_path(kernel, str(tmp_path / "dir"))
    protect.readonly_path(kernel, str(tmp_path / "missing"))
    moved = [args for name, args in kernel.calls if name == "move_mount"]
    assert len(moved) == 1 and moved[0][1] == str(tmp_path / "file")
    assert kernel.calls == [
        ("mount", ("tmpfs", str(tmp_path / "dir"), "tmpfs", MS_RDONLY, "")),
        # a copy of the /dev/null mount, checked to be the null device, is what covers a file
        ("open_tree", ("/dev/null", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC)),
        ("move_mount", moved[0]),
        ("mount", (str(tmp_path / "dir"), str(tmp_path / "dir"), "", MS_BIND | MS_REC, "")),
        ("mount", ("", str(tmp_path / "dir"), "", MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC | MS_NOSUID, "")),
    ]
    assert MS_RELATIME == 1 << 21  # the flag numbers the fake records are the kernel's


@pytest.mark.parametrize(("propagation", "none_shared"), [
    ("rslave", True), ("rprivate", True), ("runbindable", True),
    ("rshared", False), ("slave", False), ("private", False), ("shared", False), ("unbindable", False),
])
def test_which_root_propagations_leave_no_mount_shared(propagation: str, none_shared: bool) -> None:
    """After these the rootfs's mount cannot be shared, and the mount table is not read to
    check (tests/integration/test_runtime_create_order.py checks the kernel agrees)."""
    assert leaves_none_shared(propagation_flags(propagation)) is none_shared
