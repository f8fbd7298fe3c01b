"""Starting, finding and stopping a pod's infra process for a shared PID namespace.

The infra process is PID 1 of the PID namespace a pod's containers share: the static pause
binary catatonit (`catatonit -P`), started by the launcher `sandbox/pause.py` (`python -IS`), which lives in
the pod's namespaces as a pause container does: it joins the pod's pinned network, IPC, UTS
(and user) namespaces, has a PID, mount and cgroup namespace of its own, and a root that holds
nothing (an empty read-only tmpfs; the host's root is detached). It runs as
uid/gid 65535 (the pause image's user) with no capability at all and no_new_privs: a container
that may ptrace it finds nothing of the host through /proc/1/root and no privilege to borrow.
In a pod with a user namespace, the PID namespace belongs to it (the containers, which join
it, may join this one too), and uid 65535 is the pod's (its root when 65535 is not mapped).

The pause binary runs from a sealed memfd (`sealed_pause`): one copy in memory for all the
pods of this daemon, whose pages every infra process shares (a copy in each pod's root cost
~0.7 MB of unshared memory a pod), and which nobody can write, root or not (F_SEAL_WRITE: a
container that may ptrace PID 1 cannot change the code of the other pods' PID 1 through
/proc/1/exe, the CVE-2019-5736 way). Where the kernel refuses executable memfds
(vm.memfd_noexec=2) the launcher copies the binary into the pod's root as before.

The launcher exits once the pause binary runs; the infra process is in its own session, so it
outlives a pycri restart, and is known by its host pid and start time (a reused pid is never
mistaken for it). Killing it ends every process of the namespace. Its environment names its pod,
so the undoing of a pod a crash left half-made finds one that was started but not recorded.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import structlog

from pycri.common.errors import Unavailable
from pycri.sandbox.pause import bootstrap
from pycri.sandbox.warm_launcher import LaunchError, WarmLauncher, WarmLauncherGone

log = structlog.get_logger("sandbox.infra")

PAUSE_BINARY = "catatonit"
MARKER = "PYCRI_SANDBOX"  # the infra process's environment: PYCRI_SANDBOX=<pod id> (sandbox/pause.py)
INFRA_ID = 65535  # the pause image's user and group
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
MFD_EXEC = 0x0010  # memfd_create(2), Linux 6.3: an executable memfd, said so (EINVAL before 6.3)
F_SEAL_EXEC = 0x0020  # fcntl(2), Linux 6.3: its mode bits stay as they are (EINVAL before 6.3)
SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL


@dataclass(frozen=True)
class Infra:
    pid: int  # the infra process, PID 1 of the pod's PID namespace
    start_time: int  # its start time in clock ticks since boot (field 22 of /proc/<pid>/stat)
    holder: int = 0  # records of older pycri versions: the unshare process that waited for it
    holder_start_time: int = 0

    @property
    def pid_namespace(self) -> str:
        return f"/proc/{self.pid}/ns/pid"

    def alive(self) -> bool:
        return _start_time(self.pid) == self.start_time

    def to_dict(self) -> dict[str, int]:
        return {"pid": self.pid, "start_time": self.start_time, "holder": self.holder,
                "holder_start_time": self.holder_start_time}

    @classmethod
    def from_dict(cls, data: dict[str, int]) -> "Infra":
        return cls(int(data["pid"]), int(data["start_time"]), int(data.get("holder", 0)),
                   int(data.get("holder_start_time", 0)))


def pause_binary() -> str:
    found = shutil.which(PAUSE_BINARY)
    if found is None:
        raise Unavailable(f"{PAUSE_BINARY} is not installed: a pod sharing its PID namespace needs it")
    return found


@dataclass(frozen=True)
class _Sealed:
    source: tuple[int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns of the binary copied
    fd: int


_sealed_lock = threading.Lock()
# every sealed copy made, the current one last; the earlier ones stay open (a launcher starting
# meanwhile may be passing one on): one per version of the binary this daemon has seen
_sealed: list[_Sealed] = []


def sealed_pause(path: str) -> int | None:
    """A memfd (close-on-exec) holding the pause binary at `path`, sealed against any write,
    resize or mode change, mode 0555: made at the first call, and again when the binary at
    `path` changes (an upgrade). None (logged) where the kernel makes none that may be
    executed: the launcher then copies the binary."""
    st = os.stat(path)
    source = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    with _sealed_lock:
        if _sealed and _sealed[-1].source == source:
            return _sealed[-1].fd
        try:
            fd = _seal(path)
        except OSError as exc:
            log.warning("no sealed memfd for the pause binary: each pod's infra gets a copy of its own",
                        path=path, error=str(exc))
            return None
        _sealed.append(_Sealed(source, fd))
        return fd


def _seal(path: str) -> int:
    flags = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
    try:
        fd = os.memfd_create(PAUSE_BINARY, flags | MFD_EXEC)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        fd = os.memfd_create(PAUSE_BINARY, flags)  # a kernel before 6.3: executable by default
    try:
        with open(path, "rb") as f:
            view = memoryview(f.read())
        while view:
            view = view[os.write(fd, view):]
        os.fchmod(fd, 0o555)
        with contextlib.suppress(OSError):  # (before 6.3: no such seal; the mode stays settable)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, F_SEAL_EXEC)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd


def infra_ids(id_maps: dict[str, list[dict[str, int]]] | None) -> tuple[int, int]:
    """uid and gid of the infra process inside its user namespace: 65535 where it is mapped
    (always, without a pod user namespace), else the namespace's root (which holds nothing)."""
    if id_maps is None:
        return INFRA_ID, INFRA_ID

    def pick(mappings: list[dict[str, int]]) -> int:
        mapped = any(m["container_id"] <= INFRA_ID < m["container_id"] + m["length"] for m in mappings)
        return INFRA_ID if mapped else 0

    return pick(id_maps["uids"]), pick(id_maps["gids"])


# the interpreter the launcher runs on: the real binary (a venv's python is a symlink to it;
# a shim script, as pyenv's, would cost its own start-up), and the folder that holds pycri's
# packages (sandbox/, kernel/), which the launcher's bootstrap makes the `pycri` package of
PYTHON = str(Path(sys.executable).resolve())
SRC_ROOT = str(Path(__file__).resolve().parent.parent)


def launcher_args(namespaces: dict[str, str], uid: int, gid: int, pause: str, sandbox_id: str = "",
                  pause_fd: int | None = None) -> list[str]:
    """The launcher's options and pause binary (sandbox/pause.py parse_args)."""
    args = ["--uid", str(uid), "--gid", str(gid), "--sandbox", sandbox_id]
    for kind in ("user", "network", "ipc", "uts"):
        if namespaces.get(kind):
            args += [f"--{kind}", str(namespaces[kind])]
    if pause_fd is not None:
        args += ["--pause-fd", str(pause_fd)]
    return [*args, pause]


def launcher_command(namespaces: dict[str, str], uid: int, gid: int, pause: str,
                     python: str = PYTHON, sandbox_id: str = "", pause_fd: int | None = None) -> list[str]:
    return [python, "-IS", "-c", bootstrap(SRC_ROOT), *launcher_args(namespaces, uid, gid, pause, sandbox_id, pause_fd)]


def start(namespaces: dict[str, str] | None = None, id_maps: dict[str, list[dict[str, int]]] | None = None,
          python: str = PYTHON, sandbox_id: str = "", warm: WarmLauncher | None = None) -> Infra:
    """Start the infra process of pod `sandbox_id` in the pod's pinned `namespaces` (kind -> path:
    user, network, ipc, uts; those missing stay the host's) with the pod's `id_maps` (IdMaps.to_dict()),
    by the `warm` launcher when there is one (a cold `python -IS` launcher when it is gone)."""
    uid, gid = infra_ids(id_maps)
    pause = pause_binary()
    pause_fd = sealed_pause(pause)
    pid = None
    if warm is not None:
        try:
            pid = warm.launch(launcher_args(namespaces or {}, uid, gid, pause, sandbox_id), pause_fd)
        except WarmLauncherGone as exc:
            log.warning("starting a pod's infra process without the warm launcher", pod_sandbox_id=sandbox_id,
                        error=str(exc))
        except LaunchError as exc:
            raise Unavailable(f"the pod's infra process did not start: {exc}") from None
    if pid is None:
        pid = _cold_start(launcher_command(namespaces or {}, uid, gid, pause, python, sandbox_id, pause_fd), pause_fd)
    start_time = _start_time(pid)
    if start_time is None or not _ns_differs(pid):
        stop_process(pid, start_time)
        raise Unavailable("the pod's infra process exited at once")
    return Infra(pid, start_time)


def _cold_start(command: list[str], pause_fd: int | None) -> int:
    """A launcher of its own (`python -IS`); the pid it printed."""
    try:
        done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=START_TIMEOUT, start_new_session=True, cwd="/",
                              pass_fds=() if pause_fd is None else (pause_fd,),
                              env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")})
    except subprocess.TimeoutExpired:
        raise Unavailable("the pod's infra process did not start in time") from None
    if done.returncode != 0 or not done.stdout.strip().isdigit():
        detail = done.stderr.strip().splitlines()[-1:] or [f"launcher exited with status {done.returncode}"]
        raise Unavailable(f"the pod's infra process did not start: {detail[0]}")
    return int(done.stdout.strip())


def stop(infra: Infra) -> None:
    """End the infra process, and with it every process of the pod's PID namespace."""
    stop_process(infra.pid, infra.start_time)
    if infra.holder:
        stop_process(infra.holder, infra.holder_start_time)


def stop_strays(sandbox_id: str, proc: str = "/proc") -> list[int]:
    """Kill the infra processes of pod `sandbox_id` that no record names (pycri died between
    starting one and recording it); returns their pids."""
    if not sandbox_id:
        return []
    wanted = f"{MARKER}={sandbox_id}\0".encode()
    found = []
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        try:
            with open(f"{proc}/{name}/environ", "rb") as f:
                environ = f.read(len(wanted) + 1)
        except OSError:
            continue
        if environ == wanted:
            found.append(int(name))
    for pid in found:
        stop_process(pid, _start_time(pid))
    return found


def stop_process(pid: int, start_time: int | None) -> None:
    """SIGKILL `pid` if it is still the process that started at `start_time` (pids are reused),
    wait for it to die, and reap it when it is pycri's child (adopted: pycri is a subreaper)."""
    if pid <= 0 or start_time is None:
        return
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        if _start_time(pid) != start_time:  # the pidfd now pins whatever has this pid
            return
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        select.select([pidfd], [], [], STOP_TIMEOUT)  # readable once the process has exited
        with contextlib.suppress(ChildProcessError):
            os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
    finally:
        os.close(pidfd)


def _start_time(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else int(fields[19])


def _ns_differs(pid: int) -> bool:
    """The process is in a PID namespace of its own."""
    try:
        return os.readlink(f"/proc/{pid}/ns/pid") != os.readlink("/proc/self/ns/pid")
    except OSError:
        return False
