"""Pinned pod namespaces: network, IPC, UTS (and user) namespaces kept alive by bind mounts.

A pod sandbox needs namespaces that outlive any one container, without a long-running
"pause" process. `pin()` makes them in a thread of the daemon made for it, or, with a user
namespace, in a short-lived child process, and bind-mounts that thread's (child's) namespaces
(/proc/<pid>/task/<tid>/ns/{net,ipc,uts}, /proc/<child>/ns/...) onto files in the pod's
directory (e.g. /run/pycri/ns/<id>/net); the nsfs mount keeps each namespace alive after the
thread or child is gone. The daemon's other threads never change namespace.

The sequence:
  1. The root that holds the pod directories (the parent of the pod's directory) is made a
     mount point with private propagation: bound onto itself once and made MS_PRIVATE, like
     `ip netns` does with /run/netns, so the nsfs mounts do not propagate to other mount
     namespaces (where they would keep the namespaces alive, and could not be unmounted).
  2. The pod directory and one empty file per namespace are created.
  3. Without a user namespace: a new thread (T) unshares its network, IPC and UTS namespaces
     (namespaces are per task: unshare(2) moves only the calling thread, and these three
     kinds may be unshared in a multithreaded process), sets the hostname in its new UTS
     namespace, bind-mounts its /proc/<pid>/task/<T>/ns/<kind> onto each file (the mount
     namespace is the daemon's), and ends: nothing else ever runs in that thread. This takes
     ~1 ms, against ~10 ms for the exec of util-linux's unshare and a shell.
     With a user namespace (unshare(CLONE_NEWUSER) needs a single-threaded process): a child
     C (util-linux unshare running a tiny shell) is in the new namespaces, sets the hostname,
     says "ok" on its stdout and waits on its stdin; the parent writes C's uid_map and gid_map
     (C is made in the user namespace first, so it owns C's other new namespaces, as a pod's
     pause container does with containerd and CRI-O), bind-mounts /proc/<C>/ns/<kind> onto
     each file, then closes C's stdin; C exits and is reaped.
Any failure undoes what was done: mounts are detached, files and the directory removed, the
child killed and reaped (a thread's namespaces go with the thread).

`unpin()` detaches the mounts (MNT_DETACH) and removes the files; the kernel frees a namespace
when nothing holds it any more. `enter_netns()` runs code of the calling thread inside a pinned
network namespace (CNI plugins get the path in CNI_NETNS and enter it themselves).
"""
from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from pycri.common.background import InBackground
from pycri.common.errors import AlreadyExists, InvalidArgument, Unavailable
from pycri.kernel import idmap
from pycri.kernel.mountinfo import MountInfo, mount_at, parse_mountinfo, read_mountinfo
from pycri.kernel.syscall import (
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWUTS,
    MNT_DETACH,
    MS_BIND,
    MS_PRIVATE,
    MS_REC,
    NAMESPACE_FILES,
    Syscall,
)

log = structlog.get_logger("sandbox.namespaces")

# the namespace kinds a pod sandbox can pin (OCI names)
PINNABLE = ("network", "ipc", "uts", "user")
MAX_HOSTNAME_BYTES = 64

_lock = threading.RLock()  # one pin at a time


@dataclass(frozen=True)
class IdMapping:
    """One line of a uid_map or gid_map: `length` ids from `container_id` on are `host_id` on."""

    container_id: int
    host_id: int
    length: int


@dataclass(frozen=True)
class IdMaps:
    uids: tuple[IdMapping, ...]
    gids: tuple[IdMapping, ...]

    def to_dict(self) -> dict[str, list[dict[str, int]]]:
        return {"uids": [vars(m) for m in self.uids], "gids": [vars(m) for m in self.gids]}

    @classmethod
    def from_dict(cls, data: dict[str, list[dict[str, int]]]) -> IdMaps:
        return cls(tuple(IdMapping(**m) for m in data["uids"]), tuple(IdMapping(**m) for m in data["gids"]))


def write_id_maps(pid: int, id_maps: IdMaps, proc: str = "/proc") -> None:
    """Write the maps of a process's new user namespace (setgroups(2) stays allowed in it)."""
    try:
        idmap.write_id_maps(pid, _text(id_maps.uids), _text(id_maps.gids), proc)
    except idmap.IdMapError as exc:
        raise InvalidArgument(f"writing the pod's user namespace {exc.name} ({exc.text.strip()!r}): "
                              f"{exc.reason}") from None


def _text(mappings: tuple[IdMapping, ...]) -> str:
    return idmap.id_map_text((m.container_id, m.host_id, m.length) for m in mappings)


def pin(
    kinds: Sequence[str],
    directory: Path,
    hostname: str | None = None,
    syscall: Syscall | None = None,
    id_maps: IdMaps | None = None,
) -> dict[str, Path]:
    """Create new namespaces of `kinds` and pin them under `directory`; return kind -> file.

    `directory` is the pod's own directory (created here); its parent is made a private mount
    point if it is not one yet. `hostname` is set in the new UTS namespace ("uts" must be in
    `kinds` then). `id_maps` are the mappings of a new user namespace (exactly when "user"
    is in `kinds`).
    """
    kinds = _check_kinds(kinds, hostname)
    if ("user" in kinds) != (id_maps is not None):
        raise InvalidArgument("a user namespace is pinned with its id mappings, and only then")
    sys_ = syscall or _linux()
    if not kinds:
        return {}
    ensure_private_mount(directory.parent, syscall)
    with _lock:
        return _pin_locked(kinds, directory, hostname, sys_, id_maps)


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
    """Make `root` a mount point with private propagation (bind it onto itself once).

    On the real kernel (no `syscall` given) the host's mount table is read (~6 ms at 600
    mounts) only the first time for a `root`: pycri never unmounts the root, so a root once
    made private stays so."""
    sys_ = syscall or _linux()
    root.mkdir(parents=True, exist_ok=True, mode=0o711)
    with _lock:
        target = str(root.resolve())
        if syscall is None and target in _private_roots:
            return
        entry = find_mount(root)
        if entry is None or not entry.private:
            if entry is None:
                sys_.mount(target, target, "", MS_BIND | MS_REC)
                log.info("bound the namespace root onto itself", path=target)
            sys_.mount("", target, "", MS_PRIVATE | MS_REC)
        if syscall is None:
            _private_roots.add(target)


# the roots ensure_private_mount has found or made private on the real kernel (not through a
# Syscall given, as a test's fake, which makes nothing private), so that each pin does not read
# the mount table again
_private_roots: set[str] = set()


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


def find_mount(path: Path, mountinfo: str | None = None) -> MountInfo | None:
    """The topmost mount at `path`, or None when `path` is not a mount point."""
    entries = parse_mountinfo(mountinfo) if mountinfo is not None else read_mountinfo()
    return mount_at(entries, os.path.realpath(path))


# -- the pin sequence ----------------------------------------------------------


def _pin_locked(kinds: list[str], directory: Path, hostname: str | None, sys_: Syscall,
                id_maps: IdMaps | None = None) -> dict[str, Path]:
    created_dir = not directory.exists()
    directory.mkdir(mode=0o711, exist_ok=True)
    files: list[Path] = []
    mounted: list[Path] = []
    child: _Child | None = None
    try:
        for kind in kinds:
            files.append(_create_file(directory / NAMESPACE_FILES[kind]))
        if "user" not in kinds:
            error = InBackground(lambda: _pin_in_thread(kinds, files, hostname, sys_, mounted), "pod-namespaces").wait()
            if error is not None:
                raise error
        else:
            child = _Child.start(kinds, hostname)
            if id_maps is not None:
                write_id_maps(child.pid, id_maps)
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


# what a pin thread unshares for each kind (a user namespace takes the child instead)
THREAD_FLAGS = {"network": CLONE_NEWNET, "ipc": CLONE_NEWIPC, "uts": CLONE_NEWUTS}


def _pin_in_thread(kinds: Sequence[str], files: Sequence[Path], hostname: str | None, sys_: Syscall,
                   mounted: list[Path]) -> None:
    """The body of a thread made for one pin, which ends after it: new namespaces of `kinds`
    (network, IPC, UTS) for this thread alone, the hostname set in the new UTS namespace, and
    each namespace bound onto its file (`mounted` gets each file bound, for the undoing)."""
    flags = 0
    for kind in kinds:
        flags |= THREAD_FLAGS[kind]
    try:
        sys_.unshare(flags)
        if hostname is not None:
            sys_.sethostname(hostname)
    except OSError as exc:
        raise Unavailable(f"making the pod namespaces: {exc}") from None
    own = f"/proc/{os.getpid()}/task/{threading.get_native_id()}/ns"
    for kind, target in zip(kinds, files, strict=True):
        sys_.mount(f"{own}/{NAMESPACE_FILES[kind]}", str(target), "", MS_BIND)
        mounted.append(target)


def _create_file(path: Path) -> Path:
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o444))
    except FileExistsError:
        raise AlreadyExists(f"a namespace is already pinned at {path}") from None
    return path


# The holder of a pod with a user namespace: util-linux's unshare makes the namespaces and execs a shell that sets the
# hostname (a write to /proc/sys/kernel/hostname in the new UTS namespace), says "ok", and
# waits for its stdin to close. Spawning a program (fork+exec in one step) rather than
# forking the daemon keeps this safe in a process that runs gRPC threads.
UNSHARE = "unshare"
UNSHARE_FLAGS = {"network": "--net", "ipc": "--ipc", "uts": "--uts", "user": "--user"}
HOLDER_SCRIPT = (
    'if [ -n "$1" ]; then printf %s "$1" > /proc/sys/kernel/hostname || exit 1; fi; '
    "echo ok; read -r _ || true"
)
HOLDER_TIMEOUT = 30.0


class _Child:
    """The short-lived process that owns the new namespaces until the parent has pinned them."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.pid = process.pid

    @classmethod
    def start(cls, kinds: Sequence[str], hostname: str | None) -> _Child:
        args = [UNSHARE, *(UNSHARE_FLAGS[k] for k in kinds), "--", "/bin/sh", "-c", HOLDER_SCRIPT,
                "pycri-ns-holder", hostname or ""]
        try:
            process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as exc:
            raise Unavailable(f"making the pod namespaces: cannot run {UNSHARE}: {exc}") from None
        child = cls(process)
        assert process.stdout is not None
        ready = process.stdout.readline()
        if ready != b"ok\n":
            message = (process.stderr.read() if process.stderr else b"").decode(errors="replace").strip()
            child.kill()
            raise Unavailable(f"making the pod namespaces: {message or 'the namespace holder exited'}")
        return child

    def finish(self) -> None:
        """Let the holder exit and reap it."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        code = self.process.wait(timeout=HOLDER_TIMEOUT)
        self._close()
        if code != 0:
            raise Unavailable(f"the namespace holder exited with status {code}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._close()

    def _close(self) -> None:
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None and not stream.closed:
                stream.close()


# -- removal -------------------------------------------------------------------


def _remove_pin(path: Path, sys_: Syscall) -> None:
    _detach(path, sys_)
    with contextlib.suppress(FileNotFoundError, IsADirectoryError):
        path.unlink()


def _detach(path: Path, sys_: Syscall) -> None:
    """Lazily unmount every pin stacked on `path` (EINVAL: nothing is mounted there): again
    while what is left at `path` is still a namespace file (a stat, not a read of the mount
    table, which took ~6 ms a file at 600 host mounts)."""
    for _ in range(16):
        try:
            sys_.umount(str(path), MNT_DETACH)
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ENOENT):
                return
            raise
        if not is_pinned(path):
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


def _linux() -> Syscall:
    from pycri.kernel.linux import LinuxSyscall

    return LinuxSyscall()
