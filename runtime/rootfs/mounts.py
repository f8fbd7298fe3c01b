"""The mounts of config.json, in order, inside the rootfs (before pivot_root)."""
from __future__ import annotations

import errno
import os
import stat

from pycri.kernel.syscall import AT_RECURSIVE, MS_BIND, MS_RDONLY, MS_REC, MS_REMOUNT, Syscall
from pycri.runtime.errors import RuntimeFailure
from pycri.runtime.rootfs.mountopts import MountOptions, parse_options
from pycri.runtime.rootfs.securejoin import check_within, secure_join
from pycri.runtime.spec import Mount

# flags a bind mount takes only through a remount
REMOUNT_FLAGS_MASK = ~(MS_BIND | MS_REC | MS_REMOUNT)


def make_target(dest: str, source_is_dir: bool) -> None:
    """Create the mount point: a directory, or an empty file for a file bind-mount."""
    if source_is_dir:
        os.makedirs(dest, 0o755, exist_ok=True)
        if not os.path.isdir(dest):
            raise RuntimeFailure(f"mount target {dest} exists and is not a directory")
        return
    os.makedirs(os.path.dirname(dest), 0o755, exist_ok=True)
    if os.path.isdir(dest):
        raise RuntimeFailure(f"mount target {dest} is a directory but the source is not")
    if not os.path.lexists(dest):
        os.close(os.open(dest, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o755))


def bind_mount(kernel: Syscall, source: str, dest: str, opts: MountOptions) -> None:
    kernel.mount(source, dest, "", MS_BIND | (opts.flags & MS_REC))
    extra = opts.flags & REMOUNT_FLAGS_MASK
    if extra:
        kernel.mount("", dest, "", extra | MS_BIND | MS_REMOUNT)


def apply_propagation(kernel: Syscall, dest: str, opts: MountOptions) -> None:
    for flag in opts.propagation:
        kernel.mount("", dest, "", flag)


def apply_recursive_attributes(kernel: Syscall, dest: str, opts: MountOptions) -> None:
    """"rro" and friends: after the mount is made (and remounted, and its propagation set),
    one mount_setattr(2) over the whole tree, as runc does."""
    if opts.rec_attr_set or opts.rec_attr_clr:
        kernel.mount_setattr(dest, AT_RECURSIVE, opts.rec_attr_set, opts.rec_attr_clr)


def _raise(mount: Mount, error: OSError) -> None:
    raise RuntimeFailure(
        f"error mounting {mount.source!r} to rootfs at {mount.destination!r}: {error.strerror or error}"
    ) from None


def mount_entry(kernel: Syscall, rootfs: str, mount: Mount, *, cgroup_setup=None) -> str:
    """Mount one entry; returns the host path of its destination."""
    opts = parse_options(mount.options)
    dest = secure_join(rootfs, mount.destination)
    try:
        if opts.is_bind or mount.type == "bind":
            try:
                st = os.stat(mount.source)
            except OSError as e:
                raise RuntimeFailure(f"error mounting {mount.source!r} to rootfs at {mount.destination!r}: "
                                     f"stat {mount.source}: {e.strerror}") from None
            make_target(dest, stat.S_ISDIR(st.st_mode))
            check_within(rootfs, dest)
            bind_mount(kernel, mount.source, dest, opts)
        elif mount.type == "cgroup":
            make_target(dest, True)
            check_within(rootfs, dest)
            if cgroup_setup is None:
                raise RuntimeFailure("cgroup mount requested but no cgroup set-up given")
            cgroup_setup(kernel, dest, opts)
        else:
            make_target(dest, True)
            check_within(rootfs, dest)
            flags = opts.flags
            if mount.destination == "/dev":
                flags &= ~MS_RDONLY  # devices are created first; /dev is made read-only at the end
            try:
                kernel.mount(mount.source or mount.type, dest, mount.type, flags, opts.data)
            except OSError as e:
                if e.errno == errno.EPERM and mount.type in ("sysfs", "mqueue"):
                    # not allowed here (a shared net/ipc namespace in a user namespace): bind the host's
                    host = "/sys" if mount.type == "sysfs" else "/dev/mqueue"
                    bind_mount(kernel, host, dest, MountOptions(flags=opts.flags | MS_BIND | MS_REC))
                else:
                    raise
        apply_propagation(kernel, dest, opts)
        apply_recursive_attributes(kernel, dest, opts)
    except OSError as e:
        _raise(mount, e)
    return dest
