"""Pinned pod namespaces: network, IPC and UTS namespaces kept alive by bind mounts.

A pod sandbox needs namespaces that outlive any one container, without a long-running
"pause" process. `pin()` makes them in a short-lived forked child and bind-mounts the child's
/proc/<pid>/ns/{net,ipc,uts} onto files in the pod's directory (e.g. /run/pycri/ns/<id>/net);
the nsfs mount keeps each namespace alive after the child exits. The daemon's own namespaces
never change: only the child unshares.

The sequence (parent P, child C):
  1. P makes sure the root that holds the pod directories (the parent of the pod's directory)
     is a mount point with private propagation: bound onto itself once and made MS_PRIVATE,
     like `ip netns` does with /run/netns, so the nsfs mounts do not propagate to other mount
     namespaces (where they would keep the namespaces alive, and could not be unmounted).
  2. P creates the pod directory and one empty file per namespace.
  3. P forks C. C unshares the new namespaces, sets the hostname in the new UTS namespace,
     reports "ok" (or its error) on a status pipe, and waits on a second pipe.
  4. P bind-mounts /proc/<C>/ns/<kind> onto each file, then closes the second pipe; C exits
     and P reaps it.
Any failure undoes what was done: mounts are detached, files and the directory removed, the
child killed and reaped.

`unpin()` detaches the mounts (MNT_DETACH) and removes the files; the kernel frees a namespace
when nothing holds it any more. `enter_netns()` runs code of the calling thread inside a pinned
network namespace (CNI plugins get the path in CNI_NETNS and enter it themselves).
"""
from __future__ import annotations

import contextlib
import errno
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from common.errors import AlreadyExists, InvalidArgument, Unavailable
from kernel.syscall import (
    CLONE_NEWNET,
    MNT_DETACH,
    MS_BIND,
    MS_PRIVATE,
    MS_REC,
    NAMESPACE_FILES,
    NAMESPACE_FLAGS,
    Syscall,
)

log = structlog.get_logger("sandbox.namespaces")

# the namespace kinds a pod sandbox can pin (OCI names)
PINNABLE = ("network", "ipc", "uts")
MAX_HOSTNAME_BYTES = 64

_lock = threading.RLock()  # one pin child at a time: its fork copies no other pin's pipes


@dataclass(frozen=True)
class MountEntry:
    """One line of /proc/self/mountinfo, the fields pycri needs."""

    mount_point: str
    fstype: str
    source: str
    optional: tuple[str, ...]  # "shared:N", "master:N", "propagate_from:N", "unbindable"

    @property
    def private(self) -> bool:
        return not any(tag.startswith(("shared:", "master:")) for tag in self.optional)


def pin(
    kinds: Sequence[str],
    directory: Path,
    hostname: str | None = None,
    syscall: Syscall | None = None,
) -> dict[str, Path]:
    """Create new namespaces of `kinds` and pin them under `directory`; return kind -> file.

    `directory` is the pod's own directory (created here); its parent is made a private mount
    point if it is not one yet. `hostname` is set in the new UTS namespace ("uts" must be in
    `kinds` then).
    """
    kinds = _check_kinds(kinds, hostname)
    sys_ = syscall or _linux()
    if not kinds:
        return {}
    ensure_private_mount(directory.parent, sys_)
    with _lock:
        return _pin_locked(kinds, directory, hostname, sys_)


def unpin(directory: Path, syscall: Syscall | None = None) -> None:
    """Detach every pin in `directory` and remove the files and the directory; idempotent."""
    sys_ = syscall or _linux()
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return
    for name in names:
        _remove_pin(directory / name, sys_)
    with contextlib.suppress(FileNotFoundError):
        directory.rmdir()


def is_pinned(path: Path) -> bool:
    """True when `path` is a namespace file (an nsfs bind mount, or a /proc/<pid>/ns entry)."""
    try:
        return os.stat(path).st_dev == _nsfs_dev()
    except OSError:
        return False


def ensure_private_mount(root: Path, syscall: Syscall | None = None) -> None:
    """Make `root` a mount point with private propagation (bind it onto itself once)."""
    sys_ = syscall or _linux()
    root.mkdir(parents=True, exist_ok=True, mode=0o711)
    with _lock:
        entry = find_mount(root)
        if entry is not None and entry.private:
            return
        target = str(root.resolve())
        if entry is None:
            sys_.mount(target, target, "", MS_BIND | MS_REC)
            log.info("bound the namespace root onto itself", path=target)
        sys_.mount("", target, "", MS_PRIVATE | MS_REC)


@contextlib.contextmanager
def enter_netns(path: Path, syscall: Syscall | None = None) -> Iterator[None]:
    """Run the block with the calling thread inside the network namespace at `path`.

    Only this thread moves; it moves back on leaving the block. Child processes started in the
    block (subprocess) are born in the namespace.
    """
    sys_ = syscall or _linux()
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            sys_.setns(target, CLONE_NEWNET)
        finally:
            os.close(target)
        try:
            yield
        finally:
            try:
                sys_.setns(own, CLONE_NEWNET)
            except OSError as exc:  # practically impossible: the thread holds its namespace open
                log.critical("a thread could not return to its own network namespace", error=str(exc))
                raise RuntimeError(f"cannot return the thread to its own network namespace: {exc}") from exc
    finally:
        os.close(own)


def find_mount(path: Path, mountinfo: str | None = None) -> MountEntry | None:
    """The topmost mount at `path`, or None when `path` is not a mount point."""
    target = os.path.realpath(path)
    found = None
    for entry in parse_mountinfo(mountinfo if mountinfo is not None else _read_mountinfo()):
        if entry.mount_point == target:
            found = entry  # later lines are stacked on top of earlier ones
    return found


def parse_mountinfo(text: str) -> list[MountEntry]:
    entries = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if sep < 6 or len(fields) < sep + 3:
            continue
        entries.append(MountEntry(
            mount_point=_unescape(fields[4]), fstype=fields[sep + 1], source=_unescape(fields[sep + 2]),
            optional=tuple(fields[6:sep]),
        ))
    return entries


# -- the pin sequence ----------------------------------------------------------


def _pin_locked(kinds: list[str], directory: Path, hostname: str | None, sys_: Syscall) -> dict[str, Path]:
    created_dir = not directory.exists()
    directory.mkdir(mode=0o711, exist_ok=True)
    files: list[Path] = []
    mounted: list[Path] = []
    child: _Child | None = None
    try:
        for kind in kinds:
            files.append(_create_file(directory / NAMESPACE_FILES[kind]))
        flags = 0
        for kind in kinds:
            flags |= NAMESPACE_FLAGS[kind]
        child = _Child.start(flags, hostname, sys_)
        for kind, target in zip(kinds, files, strict=True):
            sys_.mount(f"/proc/{child.pid}/ns/{NAMESPACE_FILES[kind]}", str(target), "", MS_BIND)
            mounted.append(target)
        child.finish()
        log.info("pinned pod namespaces", directory=str(directory), kinds=kinds, hostname=hostname)
        return dict(zip(kinds, files, strict=True))
    except BaseException:
        if child is not None:
            child.kill()
        for target in mounted:
            _detach(target, sys_)
        for target in files:
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
        if created_dir:
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise


def _create_file(path: Path) -> Path:
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o444))
    except FileExistsError:
        raise AlreadyExists(f"a namespace is already pinned at {path}") from None
    return path


class _Child:
    """The short-lived child that owns the new namespaces until the parent has pinned them."""

    def __init__(self, pid: int, go_w: int) -> None:
        self.pid = pid
        self.go_w = go_w
        self.reaped = False

    @classmethod
    def start(cls, flags: int, hostname: str | None, sys_: Syscall) -> _Child:
        status_r, status_w = os.pipe2(os.O_CLOEXEC)
        go_r, go_w = os.pipe2(os.O_CLOEXEC)
        try:
            pid = os.fork()
        except BaseException:
            for fd in (status_r, status_w, go_r, go_w):
                os.close(fd)
            raise
        if pid == 0:  # the child: nothing here may return into the caller's code
            _child_main(flags, hostname, sys_, status_w, go_r)
        os.close(status_w)
        os.close(go_r)
        child = cls(pid, go_w)
        try:
            report = _read_all(status_r)
        except BaseException:
            child.kill()
            raise
        finally:
            os.close(status_r)
        if report != b"ok":
            child.kill()
            raise _child_error(report)
        return child

    def finish(self) -> None:
        """Let the child exit and reap it."""
        os.close(self.go_w)
        self.go_w = -1
        _, status = os.waitpid(self.pid, 0)
        self.reaped = True
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            raise Unavailable(f"the namespace holder child exited with status {code}")

    def kill(self) -> None:
        if self.go_w >= 0:
            os.close(self.go_w)
            self.go_w = -1
        if self.reaped:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        self.reaped = True


def _child_main(flags: int, hostname: str | None, sys_: Syscall, status_w: int, go_r: int) -> None:
    """Runs in the forked child: unshare, set the hostname, report, wait for the parent, exit."""
    code = 1
    try:
        _close_other_fds((status_w, go_r))
        child_setup(flags, hostname, sys_)
        os.write(status_w, b"ok")
        os.close(status_w)
        status_w = -1
        os.read(go_r, 1)  # returns at EOF: when the parent closes its end (or dies)
        code = 0
    except BaseException as exc:  # report anything to the parent, never unwind into its code
        with contextlib.suppress(BaseException):
            os.write(status_w, f"{getattr(exc, 'errno', None) or 0} {exc}".encode()[:4000])
    finally:
        os._exit(code)


def child_setup(flags: int, hostname: str | None, sys_: Syscall) -> None:
    """What the child does in its own namespaces: unshare them, then set the hostname."""
    sys_.unshare(flags)
    if hostname is not None:
        sys_.sethostname(hostname)


def _child_error(report: bytes) -> Exception:
    if not report:
        return Unavailable("the namespace holder child died before it made the namespaces")
    number, _, message = report.decode(errors="replace").partition(" ")
    code = int(number) if number.isdigit() else 0
    if code:
        return OSError(code, f"making the pod namespaces: {message}")
    return Unavailable(f"making the pod namespaces: {message}")


def _close_other_fds(keep: tuple[int, ...]) -> None:
    low = 3
    for fd in sorted(keep):
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, max(low + 1, os.sysconf("SC_OPEN_MAX")))


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks)


# -- removal -------------------------------------------------------------------


def _remove_pin(path: Path, sys_: Syscall) -> None:
    _detach(path, sys_)
    with contextlib.suppress(FileNotFoundError, IsADirectoryError):
        path.unlink()


def _detach(path: Path, sys_: Syscall) -> None:
    """Lazily unmount everything stacked on `path` (EINVAL: nothing is mounted there)."""
    for _ in range(16):
        try:
            sys_.umount(str(path), MNT_DETACH)
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ENOENT):
                return
            raise
        if not is_pinned(path) and find_mount(path) is None:
            return


# -- helpers -------------------------------------------------------------------


def _check_kinds(kinds: Sequence[str], hostname: str | None) -> list[str]:
    unknown = [k for k in kinds if k not in PINNABLE]
    if unknown:
        raise InvalidArgument(f"cannot pin namespace kinds {unknown}: only {list(PINNABLE)}")
    if len(set(kinds)) != len(kinds):
        raise InvalidArgument(f"namespace kinds repeat: {list(kinds)}")
    if hostname is not None:
        if "uts" not in kinds:
            raise InvalidArgument("a hostname needs a new UTS namespace (kind 'uts')")
        if not hostname or len(hostname.encode()) > MAX_HOSTNAME_BYTES or "\0" in hostname:
            raise InvalidArgument(f"invalid hostname {hostname!r}: 1 to {MAX_HOSTNAME_BYTES} bytes")
    return list(kinds)


_nsfs: list[int] = []


def _nsfs_dev() -> int:
    if not _nsfs:
        _nsfs.append(os.stat("/proc/self/ns/net").st_dev)
    return _nsfs[0]


def _read_mountinfo() -> str:
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        return f.read()


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _linux() -> Syscall:
    from kernel.linux import LinuxSyscall

    return LinuxSyscall()
