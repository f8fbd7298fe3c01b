"""kernel.mountinfo: the one parser of /proc/<pid>/mountinfo (the runtime's rootfs and cgroup
mounts, the pod namespace root, the container rootfs, the metrics' mount sources)."""
from __future__ import annotations

from pathlib import Path

from pycri.kernel.mountinfo import MountInfo, mount_at, mount_containing, parse_mountinfo, read_mountinfo

MOUNTINFO = """\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 0:40 / /proc rw,nosuid - proc proc rw
40 22 0:50 / /run/with\\040space rw shared:5 master:2 - tmpfs tmpfs rw
41 22 0:51 / /var/lib/x/rootfs rw - overlay overlay rw,lowerdir=/l
42 40 0:50 /pycri/ns /run/pycri/ns rw,nosuid - tmpfs tmpfs rw
43 42 0:4 net:[4026532179] /run/pycri/ns/pod\\040a/net rw - nsfs nsfs rw
44 40 0:50 /netns /run/netns rw master:5 - tmpfs tmpfs rw
45 22 0:52 / /var/lib/x/rootfs rw - tmpfs a\\134b rw
"""


def test_fields_of_a_line() -> None:
    entries = parse_mountinfo(MOUNTINFO)
    assert entries[0] == MountInfo(22, 1, "254:0", "/", "/", "rw,relatime", ["shared:1"], "ext4", "/dev/vda", "rw")
    assert entries[3].super_options == "rw,lowerdir=/l" and entries[3].device == "0:51"
    assert entries[4].root == "/pycri/ns" and entries[4].parent_id == 40
    assert "fstype='nsfs'" in repr(entries[5])


def test_escaped_paths_are_unescaped() -> None:
    entries = parse_mountinfo(MOUNTINFO)
    assert [e.mountpoint for e in entries] == ["/", "/proc", "/run/with space", "/var/lib/x/rootfs", "/run/pycri/ns",
                                               "/run/pycri/ns/pod a/net", "/run/netns", "/var/lib/x/rootfs"]
    assert entries[7].source == "a\\b"


def test_propagation() -> None:
    entries = parse_mountinfo(MOUNTINFO)
    assert [e.shared for e in entries] == [True, False, True, False, False, False, False, False]
    assert [e.private for e in entries] == [False, True, False, True, True, True, False, True]
    assert entries[2].optional == ["shared:5", "master:2"]


def test_malformed_lines_are_skipped() -> None:
    text = "garbage\n1 2 3 4 5 6 - x\n50 22 0:9 / /ok rw - tmpfs tmpfs\n\n"
    entries = parse_mountinfo(text)
    assert [(e.mountpoint, e.super_options) for e in entries] == [("/ok", "")]


def test_mount_at_is_the_topmost_mount_at_exactly_that_path() -> None:
    entries = parse_mountinfo(MOUNTINFO)
    assert mount_at(entries, "/var/lib/x/rootfs") is entries[7]
    assert mount_at(entries, "/run/pycri/ns") is entries[4]
    assert mount_at(entries, "/run/pycri") is None


def test_mount_containing_is_the_longest_prefix() -> None:
    entries = parse_mountinfo(MOUNTINFO)
    assert mount_containing(entries, "/var/lib/x/rootfs") is entries[7]
    assert mount_containing(entries, "/var/lib/x/rootfs/etc") is entries[7]
    assert mount_containing(entries, "/var/lib/y") is entries[0]
    assert mount_containing(entries, "/run/with space/f") is entries[2]
    assert mount_containing(entries, "/run/with") is entries[0]


def test_read_a_file(tmp_path: Path) -> None:
    path = tmp_path / "mountinfo"
    path.write_bytes(MOUNTINFO.encode() + b"46 22 0:53 / /bad\xff rw - tmpfs tmpfs rw\n")
    entries = read_mountinfo(str(path))
    assert len(entries) == 9 and entries[8].mountpoint == "/bad\udcff"
    assert mount_at(read_mountinfo(), "/") is not None  # this process's own table
