"""/dev inside the container: device nodes (mknod, or a bind mount of the host's node when
mknod is not allowed), the standard symlinks, and /dev/ptmx."""
from __future__ import annotations

import errno
import os
import stat

from pycri.kernel.syscall import MS_BIND, Syscall
from pycri.runtime.errors import RuntimeFailure
from pycri.runtime.rootfs.securejoin import secure_join
from pycri.runtime.spec import Device

# every container gets these (runtime-spec config-linux.md "Default Devices")
DEFAULT_DEVICES = (
    Device("c", "/dev/null", 1, 3, 0o666, 0, 0),
    Device("c", "/dev/zero", 1, 5, 0o666, 0, 0),
    Device("c", "/dev/full", 1, 7, 0o666, 0, 0),
    Device("c", "/dev/random", 1, 8, 0o666, 0, 0),
    Device("c", "/dev/urandom", 1, 9, 0o666, 0, 0),
    Device("c", "/dev/tty", 5, 0, 0o666, 0, 0),
)
TYPE_BITS = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}


def all_devices(spec_devices: list[Device]) -> list[Device]:
    """The defaults, then the spec's (a spec entry for the same path replaces the default)."""
    paths = {d.path for d in spec_devices}
    return [d for d in DEFAULT_DEVICES if d.path not in paths] + list(spec_devices)


def create_device(kernel: Syscall, rootfs: str, device: Device, bind: bool = False) -> None:
    os.makedirs(secure_join(rootfs, os.path.dirname(device.path)), 0o755, exist_ok=True)
    dest = _in_dir(rootfs, device.path)
    check_own_dev(rootfs, dest, device.path)
    if bind:
        _bind_device(kernel, dest, device)
        return
    mode = TYPE_BITS[device.type] | (device.file_mode if device.file_mode is not None else 0o666) & 0o7777
    try:
        kernel.mknod(dest, mode, os.makedev(device.major, device.minor))
    except FileExistsError:
        return
    except OSError as e:
        if e.errno == errno.EPERM:
            _bind_device(kernel, dest, device)
            return
        raise RuntimeFailure(f"mknod {device.path}: {e.strerror}") from None
    os.chown(dest, device.uid or 0, device.gid or 0)


def check_own_dev(rootfs: str, dest: str, path: str) -> None:
    """Refuse to make a node (or link) outside the filesystem of the container's /dev: there, a
    bind mount (a volume at /dev or under it) would put it in a directory of the host."""
    try:
        here = os.stat(os.path.dirname(dest)).st_dev
        dev = os.stat(secure_join(rootfs, "/dev")).st_dev
    except OSError as e:
        raise RuntimeFailure(f"create {path}: {e.strerror or e}") from None
    if here != dev:
        raise RuntimeFailure(f"create {path}: its directory is another filesystem than the container's /dev "
                             "(a volume mounted there?): refusing to write a device node into it")


def _bind_device(kernel: Syscall, dest: str, device: Device) -> None:
    if not os.path.lexists(dest):
        os.close(os.open(dest, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o000))
    try:
        kernel.mount(device.path, dest, "bind", MS_BIND)
    except OSError as e:
        raise RuntimeFailure(f"bind mount device {device.path}: {e.strerror}") from None


def _in_dir(rootfs: str, path: str) -> str:
    """The host path of `path`, its directory resolved inside the rootfs, its last
    component not followed (it is about to be replaced or created)."""
    return os.path.join(secure_join(rootfs, os.path.dirname(path)), os.path.basename(path))


def create_devices(kernel: Syscall, rootfs: str, spec_devices: list[Device]) -> None:
    old = os.umask(0)
    try:
        for device in all_devices(spec_devices):
            create_device(kernel, rootfs, device)
    finally:
        os.umask(old)


def dev_symlinks(host_has_kcore: bool | None = None) -> list[tuple[str, str]]:
    """(target, link) pairs under /dev."""
    links = [("/proc/self/fd", "/dev/fd"), ("/proc/self/fd/0", "/dev/stdin"),
             ("/proc/self/fd/1", "/dev/stdout"), ("/proc/self/fd/2", "/dev/stderr")]
    if host_has_kcore is None:
        host_has_kcore = os.path.exists("/proc/kcore")
    if host_has_kcore:
        links.append(("/proc/kcore", "/dev/core"))
    return links


def create_symlinks(rootfs: str) -> None:
    for target, link in dev_symlinks():
        path = _in_dir(rootfs, link)
        check_own_dev(rootfs, path, link)
        try:
            os.symlink(target, path)
        except FileExistsError:
            pass


def setup_ptmx(rootfs: str) -> None:
    """/dev/ptmx -> pts/ptmx, so the container's devpts instance hands out its ptys."""
    path = _in_dir(rootfs, "/dev/ptmx")
    check_own_dev(rootfs, path, "/dev/ptmx")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    os.symlink("pts/ptmx", path)
