"""statmount(2)'s reply as a mountinfo line (kernel/linux.py statmount_entry), from a struct
statmount built here as the kernel lays it out."""
from __future__ import annotations

import errno

import pytest

from pycri.kernel.linux import _STATMOUNT_STR, _STATMOUNT_WANTED, statmount_entry
from pycri.kernel.mountinfo import MountInfo


def _statmount(*, mask: int = _STATMOUNT_WANTED, sb_flags: int = 0, propagation: int = 0, peer: int = 0,
               master: int = 0, strings: dict[str, str]) -> bytes:
    head = bytearray(_STATMOUNT_STR)
    text = bytearray()
    offsets = {}
    for name, value in strings.items():
        offsets[name] = len(text)
        text += value.encode() + b"\0"

    def put(offset: int, width: int, value: int) -> None:
        head[offset:offset + width] = value.to_bytes(width, "little")

    put(0, 4, len(head) + len(text))
    put(4, 4, offsets["opts"])
    put(8, 8, mask)
    put(16, 4, 0)
    put(20, 4, 29)
    put(32, 4, sb_flags)
    put(36, 4, offsets["fs_type"])
    put(40, 8, 1 << 32 | 5)
    put(56, 4, 32)
    put(60, 4, 31)
    put(72, 8, propagation)
    put(80, 8, peer)
    put(88, 8, master)
    put(104, 4, offsets["root"])
    put(108, 4, offsets["point"])
    return bytes(head + text) + b"\0" * 64


def test_a_cgroup_hierarchy_reads_as_its_mountinfo_line() -> None:
    raw = _statmount(strings={"opts": "cpu,cpuacct", "fs_type": "cgroup", "root": "/docker/abc",
                              "point": "/sys/fs/cgroup/cpu,cpuacct"}, master=7)
    assert statmount_entry(raw) == MountInfo(
        mount_id=32, parent_id=31, device="0:29", root="/docker/abc", mountpoint="/sys/fs/cgroup/cpu,cpuacct",
        options="", optional=["master:7"], fstype="cgroup", source="", super_options="rw,cpu,cpuacct",
        unique_id=1 << 32 | 5)


def test_read_only_superblock_shared_peer_group_and_no_options() -> None:
    raw = _statmount(strings={"opts": "", "fs_type": "tmpfs", "root": "/", "point": "/x"}, sb_flags=1,
                     propagation=1 << 20, peer=4)
    entry = statmount_entry(raw)
    assert (entry.super_options, entry.optional, entry.shared) == ("ro", ["shared:4"], True)


def test_no_mnt_opts_leaves_only_ro_or_rw() -> None:
    raw = _statmount(mask=_STATMOUNT_WANTED & ~0x80, strings={"opts": "cpu", "fs_type": "cgroup", "root": "/",
                                                               "point": "/sys/fs/cgroup/cpu"})
    assert statmount_entry(raw).super_options == "rw"


def test_a_kernel_that_leaves_a_field_out_is_not_trusted() -> None:
    raw = _statmount(mask=_STATMOUNT_WANTED & ~0x8, strings={"opts": "", "fs_type": "cgroup", "root": "/",
                                                               "point": "/sys/fs/cgroup/cpu"})
    with pytest.raises(OSError) as caught:
        statmount_entry(raw)
    assert caught.value.errno == errno.EOPNOTSUPP
