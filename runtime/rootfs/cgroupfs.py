"""The `cgroup` mount inside the container.

On a v1 (or hybrid) host: a tmpfs at the destination and, for every v1 hierarchy, a bind
mount of the container's own cgroup directory at <dest>/<hierarchy>, with the mount's
flags (read-only in the usual config), plus symlinks for co-mounted controllers
(cpu -> cpu,cpuacct). On a pure v2 host: cgroup2 itself (the container's cgroup as root when
it has a cgroup namespace), falling back to a bind mount of its cgroup directory.
"""
from __future__ import annotations

import errno
import os

from pycri.kernel.syscall import MS_BIND, MS_RDONLY, MS_REC, MS_REMOUNT, Syscall
from pycri.kernel.mountinfo import MOUNTINFO, MountInfo, parse_mountinfo
from pycri.kernel.proccgroup import own_cgroups
from pycri.runtime.rootfs.mountopts import MountOptions


def cgroup_mounts(mountinfo: str = MOUNTINFO) -> list[MountInfo]:
    """The v1 cgroup mounts of a mount table. Only their lines are parsed: a busy node's table
    has lines by the thousand (a rootfs, a /dev/shm and volumes per container), and parsing
    them all would cost more than the rest of the cgroup mount."""
    with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
        # the kernel escapes spaces in paths (\040): " - " is the separator before the fstype
        return parse_mountinfo("".join(line for line in f if " - cgroup " in line))


def hierarchy_mounts(kernel: Syscall, cgroup_root: str = "/sys/fs/cgroup") -> list[MountInfo] | None:
    """The v1 hierarchies mounted at <cgroup_root>/<name>, from one statmount per name
    (Linux 6.8+), in mount order (as the table lists them). The mount table is generated
    whole on every read (~3 ms at 570 mounts, ~0.4 s at 7,000); this costs ~0.05 ms a
    hierarchy. Not hierarchies: names that are no mount point (kind's empty directories for
    hierarchies the host has not mounted) or no v1 cgroup, and symlinks (cpu -> cpu,cpuacct).
    None when the kernel cannot say (no statmount, or no super options: before Linux 6.11):
    the caller reads the table (`cgroup_mounts`)."""
    root = cgroup_root.rstrip("/")
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return None
    found = []
    for name in names:
        path = f"{root}/{name}"
        try:
            entry = kernel.statmount(path)
        except FileNotFoundError:
            continue  # gone since the listing
        except OSError:
            return None
        if entry.fstype == "cgroup" and entry.mountpoint == path:
            if not _hierarchy_key(entry):  # no controllers: the kernel did not tell them
                return None
            found.append(entry)
    found.sort(key=lambda e: e.unique_id)
    return found


def _hierarchy_key(entry: MountInfo) -> str:
    """The /proc/self/cgroup controllers field of a v1 cgroup mount, from its super options."""
    names = [o for o in entry.super_options.split(",") if o not in ("rw", "ro") and not o.startswith("release_agent")
             and o not in ("xattr", "noprefix", "clone_children", "cpuset_v2_mode", "favordynmods")]
    return ",".join(names)


def is_unified(cgroup_root: str = "/sys/fs/cgroup") -> bool:
    """Whether the host is pure cgroup v2 (the cgroup mount is cgroup2 itself)."""
    return os.path.exists(os.path.join(cgroup_root, "cgroup.controllers"))


def mount_cgroups(kernel: Syscall, dest: str, opts: MountOptions, *, cgroup_root: str = "/sys/fs/cgroup",
                  mountinfo: str = MOUNTINFO, proc_cgroup: str = "/proc/self/cgroup") -> None:
    flags = opts.flags & ~(MS_BIND | MS_REC | MS_REMOUNT)
    if is_unified(cgroup_root):
        _mount_v2(kernel, dest, flags, cgroup_root)
        return
    mine = own_cgroups(proc_cgroup)
    kernel.mount("tmpfs", dest, "tmpfs", flags & ~MS_RDONLY, "mode=755")
    hierarchies = hierarchy_mounts(kernel, cgroup_root)
    for entry in hierarchies if hierarchies is not None else cgroup_mounts(mountinfo):
        # the hierarchies themselves, not cgroup mounts below them (kind's entrypoint bind-mounts
        # /sys/fs/cgroup/<hierarchy>/kubelet onto itself in a node)
        if entry.fstype != "cgroup" or os.path.dirname(entry.mountpoint) != cgroup_root.rstrip("/"):
            continue
        key = _hierarchy_key(entry)
        if key not in mine:
            continue
        name = os.path.basename(entry.mountpoint)
        inner = mine[key]
        if entry.root != "/" and inner.startswith(entry.root):
            inner = inner[len(entry.root):] or "/"
        source = entry.mountpoint + (inner if inner != "/" else "")
        target = os.path.join(dest, name)
        os.makedirs(target, 0o755, exist_ok=True)
        kernel.mount(source, target, "", MS_BIND | MS_REC)
        kernel.mount("", target, "", flags | MS_BIND | MS_REMOUNT)
        controllers = [c for c in key.split(",") if c and not c.startswith("name=")]
        if len(controllers) > 1:
            for controller in controllers:
                link = os.path.join(dest, controller)
                if controller != name and not os.path.lexists(link):
                    os.symlink(name, link)


def _mount_v2(kernel: Syscall, dest: str, flags: int, cgroup_root: str) -> None:
    try:
        kernel.mount("cgroup", dest, "cgroup2", flags)  # the source runc gives it (runc spec's `cgroup`)
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EBUSY):
            raise
        inner = own_cgroups().get("", "/")
        source = cgroup_root + (inner if inner != "/" else "")
        kernel.mount(source, dest, "", MS_BIND | MS_REC)
        kernel.mount("", dest, "", flags | MS_BIND | MS_REMOUNT)
