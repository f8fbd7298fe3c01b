"""statmount (kernel/linux.py) against the mount table on this host: the v1 hierarchies the
container's cgroup mount binds (runtime/rootfs/cgroupfs.hierarchy_mounts) read the same
either way. Skipped where the kernel has no statmount (before Linux 6.8) or the host no v1."""
from __future__ import annotations

import os

import pytest

from pycri.kernel.linux import LinuxSyscall
from pycri.runtime.rootfs.cgroupfs import cgroup_mounts, hierarchy_mounts, is_unified

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def _fields(entry):
    return (entry.mount_id, entry.parent_id, entry.device, entry.root, entry.mountpoint, entry.optional,
            entry.fstype, entry.super_options)


def test_hierarchies_by_statmount_equal_those_of_the_mount_table() -> None:
    if is_unified():
        pytest.skip("a pure cgroup v2 host has no v1 hierarchies")
    found = hierarchy_mounts(LinuxSyscall())
    if found is None:
        pytest.skip("this kernel has no statmount")
    table = [e for e in cgroup_mounts() if os.path.dirname(e.mountpoint) == "/sys/fs/cgroup"]
    assert found, "no v1 hierarchy found by statmount"
    assert list(map(_fields, found)) == list(map(_fields, table))  # in the table's order too


def test_statmount_of_a_symlink_and_of_a_plain_directory_is_the_mount_they_are_on(tmp_path) -> None:
    kernel = LinuxSyscall()
    try:
        entry = kernel.statmount("/proc/self")  # a symlink on proc, not followed
    except OSError as e:
        pytest.skip(f"no statmount here: {e}")
    assert (entry.fstype, entry.mountpoint) == ("proc", "/proc")
    assert kernel.statmount(str(tmp_path)).mountpoint != str(tmp_path)
