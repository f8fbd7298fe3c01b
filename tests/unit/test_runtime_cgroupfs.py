"""The container's /sys/fs/cgroup on a v1 host (runtime/rootfs/cgroupfs.py), from a given
mount table and /proc/self/cgroup, through the recording fake kernel."""
from __future__ import annotations

from pathlib import Path

from pycri.kernel.fake import RecordingSyscall
from pycri.kernel.syscall import MS_BIND, MS_REC
from pycri.kernel.mountinfo import MountInfo, parse_mountinfo
from pycri.runtime.rootfs.cgroupfs import cgroup_mounts, hierarchy_mounts, mount_cgroups
from pycri.runtime.rootfs.mountopts import MountOptions

# a kind node's: the hierarchies, and kind's entrypoint's bind mount of <hierarchy>/kubelet onto itself
MOUNTINFO = """\
30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec - tmpfs tmpfs rw,mode=755
31 30 0:27 /docker/abc /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec - cgroup cgroup rw,cpu,cpuacct
32 30 0:28 /docker/abc /sys/fs/cgroup/memory rw,nosuid,nodev,noexec - cgroup cgroup rw,memory
33 31 0:27 /docker/abc/kubelet /sys/fs/cgroup/cpu,cpuacct/kubelet rw,nosuid,nodev,noexec - cgroup cgroup rw,cpu,cpuacct
"""
PROC_CGROUP = "4:cpu,cpuacct:/docker/abc/kubelet/pod1/ctr\n3:memory:/docker/abc/kubelet/pod1/ctr\n0::/\n"


def test_only_the_hierarchies_are_bound_not_cgroup_mounts_below_them(tmp_path: Path) -> None:
    (tmp_path / "mountinfo").write_text(MOUNTINFO)
    (tmp_path / "cgroup").write_text(PROC_CGROUP)
    (tmp_path / "root").mkdir()
    dest = tmp_path / "dest"
    kernel = RecordingSyscall()
    mount_cgroups(kernel, str(dest), MountOptions(), cgroup_root="/sys/fs/cgroup",
                  mountinfo=str(tmp_path / "mountinfo"), proc_cgroup=str(tmp_path / "cgroup"))
    binds = [(args[0], args[1]) for name, args in kernel.calls if name == "mount" and args[3] == MS_BIND | MS_REC]
    assert binds == [
        ("/sys/fs/cgroup/cpu,cpuacct/kubelet/pod1/ctr", f"{dest}/cpu,cpuacct"),
        ("/sys/fs/cgroup/memory/kubelet/pod1/ctr", f"{dest}/memory"),
    ]
    assert (dest / "cpu").is_symlink() and (dest / "cpuacct").is_symlink()


def test_cgroup_mounts_parses_only_the_cgroup_lines(tmp_path: Path) -> None:
    table = MOUNTINFO + (
        "40 25 0:30 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
        "41 25 0:31 / /tmp/a\\040-\\040cgroup\\040b rw - tmpfs tmpfs rw\n"  # " - cgroup " in a path, escaped
        "42 25 0:32 / /var/lib/x/merged rw - overlay overlay rw,lowerdir=/a:/b\n"
        "43 30 0:33 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n"
    )
    (tmp_path / "mountinfo").write_text(table)
    expected = [e for e in parse_mountinfo(table) if e.fstype == "cgroup"]
    found = cgroup_mounts(str(tmp_path / "mountinfo"))
    assert found == expected
    assert [e.mountpoint for e in found] == ["/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/memory",
                                             "/sys/fs/cgroup/cpu,cpuacct/kubelet", "/sys/fs/cgroup/pids"]


def _statmounts(cgroup_root: Path) -> dict[str, MountInfo]:
    """What statmount would say of each name under a kind node's /sys/fs/cgroup (MOUNTINFO):
    the hierarchies, a symlink and an empty directory (both on the tmpfs)."""
    tmpfs = parse_mountinfo(MOUNTINFO)[0]
    table = {str(cgroup_root / "cpu"): tmpfs, str(cgroup_root / "hugetlb"): tmpfs}
    for entry in parse_mountinfo(MOUNTINFO)[1:3]:
        name = entry.mountpoint.rsplit("/", 1)[1]
        table[str(cgroup_root / name)] = MountInfo(**{**{k: getattr(entry, k) for k in MountInfo.__slots__}, "mountpoint": str(cgroup_root / name)})
    return table


def test_hierarchies_come_from_statmount_without_the_mount_table(tmp_path: Path) -> None:
    root = tmp_path / "cgroup-root"
    for name in ("cpu,cpuacct", "memory", "hugetlb"):
        (root / name).mkdir(parents=True)
    (root / "cpu").symlink_to("cpu,cpuacct")
    kernel = RecordingSyscall(statmounts=_statmounts(root))
    found = hierarchy_mounts(kernel, str(root))
    assert [e.mountpoint for e in found] == [str(root / "cpu,cpuacct"), str(root / "memory")]
    assert [e.root for e in found] == ["/docker/abc", "/docker/abc"]
    assert sorted(args[0] for name, args in kernel.calls if name == "statmount") == sorted(
        str(root / n) for n in ("cpu", "cpu,cpuacct", "hugetlb", "memory"))


def test_without_statmount_the_mount_table_is_read_and_binds_are_the_same(tmp_path: Path) -> None:
    root = tmp_path / "cgroup-root"
    for name in ("cpu,cpuacct", "memory"):
        (root / name).mkdir(parents=True)
    (tmp_path / "mountinfo").write_text(MOUNTINFO.replace("/sys/fs/cgroup", str(root)))
    (tmp_path / "cgroup").write_text(PROC_CGROUP)
    binds = {}
    for how, kernel in (("statmount", RecordingSyscall(statmounts=_statmounts(root))),
                        ("mountinfo", RecordingSyscall())):
        assert (hierarchy_mounts(kernel, str(root)) is None) == (how == "mountinfo")
        dest = tmp_path / f"dest-{how}"
        mount_cgroups(kernel, str(dest), MountOptions(), cgroup_root=str(root), mountinfo=str(tmp_path / "mountinfo"),
                      proc_cgroup=str(tmp_path / "cgroup"))
        binds[how] = sorted((args[0], args[1].replace(str(dest), "DEST")) for name, args in kernel.calls
                            if name == "mount" and args[3] == MS_BIND | MS_REC)
    assert binds["statmount"] == binds["mountinfo"] == [
        (f"{root}/cpu,cpuacct/kubelet/pod1/ctr", "DEST/cpu,cpuacct"),
        (f"{root}/memory/kubelet/pod1/ctr", "DEST/memory"),
    ]


def test_a_hierarchy_without_controllers_sends_back_to_the_mount_table(tmp_path: Path) -> None:
    """A kernel before 6.11 gives no super options: the hierarchy's key would be v2's ""."""
    root = tmp_path / "cgroup-root"
    (root / "memory").mkdir(parents=True)
    entry = parse_mountinfo(MOUNTINFO)[2]
    entry.mountpoint, entry.super_options = str(root / "memory"), "rw"
    assert hierarchy_mounts(RecordingSyscall(statmounts={entry.mountpoint: entry}), str(root)) is None
