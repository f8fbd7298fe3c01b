"""The container's root filesystem, set up in its new mount namespace (like runc's
prepareRootfs/finalizeRootfs):

1. mount propagation of `/` (linux.rootfsPropagation, default rslave) so nothing leaks to
   the host; the rootfs's mount made private if it is still shared (only a non-recursive or
   shared propagation leaves it so) and the rootfs bound onto itself (pivot_root needs a mount
   point whose parent is not shared);
2. the spec's mounts in order (mounts), the cgroup mount (cgroupfs);
3. /dev: device nodes, symlinks, ptmx (devices) unless /dev is bind-mounted (never into
   another filesystem than /dev's: a volume at or under /dev stays untouched);
4. pivot_root or MS_MOVE + chroot (pivot);
then, after sysctls, `finalize`: read-only and masked paths (protect), a read-only /dev,
and a read-only `/` for root.readonly.
"""
from __future__ import annotations

import os

from pycri.kernel.syscall import MS_BIND, MS_PRIVATE, MS_RDONLY, MS_REC, MS_SHARED, MS_SLAVE, Syscall
from pycri.runtime.errors import RuntimeFailure
from pycri.runtime.rootfs import devices, pivot, protect
from pycri.runtime.rootfs.cgroupfs import mount_cgroups
from pycri.kernel.mountinfo import mount_containing, read_mountinfo
from pycri.runtime.rootfs.mountopts import parse_options, propagation_flags
from pycri.runtime.rootfs.mounts import mount_entry
from pycri.runtime.spec import Mount, Spec


def needs_dev_setup(mounts: list[Mount]) -> bool:
    """Devices are created unless /dev is bind-mounted from somewhere: the last mount at /dev
    is the one on top (a volume over the runtime's tmpfs), and nothing is written into it."""
    dev = [m for m in mounts if os.path.normpath(m.destination) in ("/dev", "//dev")]
    return not dev or not (dev[-1].type == "bind" or parse_options(dev[-1].options).is_bind)


def make_root_propagation(kernel: Syscall, propagation: str) -> int:
    """Sets linux.rootfsPropagation on `/`; returns the flags."""
    flags = propagation_flags(propagation) if propagation else MS_SLAVE | MS_REC
    kernel.mount("", "/", "", flags)
    return flags


def leaves_none_shared(flags: int) -> bool:
    """Whether a propagation change of `/` with `flags` left no mount below it shared: a
    recursive one to anything but shared (slave, private, unbindable all take a mount out of
    its peer group, mount(2))."""
    return bool(flags & MS_REC) and not flags & MS_SHARED


def make_parent_private(kernel: Syscall, rootfs: str) -> None:
    entry = mount_containing(read_mountinfo(), rootfs)
    if entry is not None and entry.shared:
        kernel.mount("", entry.mountpoint, "", MS_PRIVATE)


def prepare(kernel: Syscall, spec: Spec, *, no_pivot: bool = False) -> None:
    rootfs = spec.root_path
    try:
        flags = make_root_propagation(kernel, spec.linux.rootfs_propagation)
        if not leaves_none_shared(flags):  # (the default, rslave, does: the mount table, long on
            make_parent_private(kernel, rootfs)  # a busy node, need not be read)
        kernel.mount(rootfs, rootfs, "bind", MS_BIND | MS_REC)
    except OSError as e:
        raise RuntimeFailure(f"prepare rootfs {rootfs}: {e.strerror or e}") from None
    for mount in spec.mounts:
        mount_entry(kernel, rootfs, mount, cgroup_setup=mount_cgroups)
    if needs_dev_setup(spec.mounts):
        devices.create_devices(kernel, rootfs, spec.linux.devices)
        devices.setup_ptmx(rootfs)
        devices.create_symlinks(rootfs)
    if no_pivot:
        pivot.move_root(kernel, rootfs)
    else:
        pivot.pivot_root(kernel, rootfs)


def finalize(kernel: Syscall, spec: Spec) -> None:
    """After pivot_root and sysctls."""
    for path in spec.linux.readonly_paths:
        protect.readonly_path(kernel, path)
    for path in spec.linux.masked_paths:
        protect.mask_path(kernel, path)
    for m in spec.mounts:
        if m.destination.rstrip("/") == "/dev" and parse_options(m.options).flags & MS_RDONLY:
            protect.remount_readonly(kernel, "/dev")
    if spec.root_readonly:
        protect.remount_readonly(kernel, "/")
    os.umask(0o022)
