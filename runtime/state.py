"""The state directory of a container, <root>/<id>/, and the status logic.

<root>/<id>/state.json holds what later commands need (init pid and its start time, bundle,
creation time, and the parts of the config that `exec`/`delete` use: namespaces, cgroup
paths, the process defaults, seccomp); <root>/<id>/exec.fifo exists from `create` until
`start`. Status, like runc's: `stopped` when the init process is gone, a zombie, or a
different process with the same pid (start time mismatch); otherwise `created` while the
exec fifo exists and `running` after.

ContainerState is a plain class rather than a dataclass: `state` is on conmon's and
kubelet's hot path and importing dataclasses (through inspect) would double its start-up.
"""
from __future__ import annotations

import os
import time

from pycri.runtime import jsonlite
from pycri.runtime.errors import ContainerNotExist, RuntimeFailure

DEFAULT_ROOT = "/run/pycri-runtime"
STATE_FILE = "state.json"
EXEC_FIFO = "exec.fifo"
OCI_VERSION = "1.2.0"

CREATED, RUNNING, STOPPED, PAUSED = "created", "running", "stopped", "paused"


def rfc3339_nano(ns: int) -> str:
    """Go's time.RFC3339Nano in UTC: trailing zeros of the fraction dropped."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    digits = f"{fraction:09d}".rstrip("0")
    return f"{text}.{digits}Z" if digits else f"{text}Z"


def validate_id(container_id: str) -> None:
    if not container_id or container_id in (".", "..") or "/" in container_id or "\0" in container_id:
        raise RuntimeFailure(f"invalid container id {container_id!r}")
    if len(container_id) > 1024:
        raise RuntimeFailure("container id too long")


class ProcStat:
    """What /proc/<pid>/stat tells: the state letter and the start time (clock ticks since boot)."""

    __slots__ = ("state", "start_time", "ppid")

    def __init__(self, state: str, start_time: int, ppid: int) -> None:
        self.state = state
        self.start_time = start_time
        self.ppid = ppid


def read_proc_stat(pid: int, proc: str = "/proc") -> ProcStat | None:
    try:
        with open(f"{proc}/{pid}/stat", "rb") as f:
            raw = f.read().decode(errors="replace")
    except OSError:
        return None
    # the command name may hold spaces and parentheses: the fields start after the last ')'
    fields = raw[raw.rfind(")") + 2:].split()
    if len(fields) < 20:
        return None
    return ProcStat(fields[0], int(fields[19]), int(fields[1]))


def process_alive(pid: int, start_time: int, proc: str = "/proc") -> bool:
    """The process exists, is not a zombie, and is the one we started (not a reused pid)."""
    if pid <= 0:
        return False
    stat = read_proc_stat(pid, proc)
    return stat is not None and stat.state not in ("Z", "X", "x") and stat.start_time == start_time


class ContainerState:
    """The contents of state.json."""

    __slots__ = ("id", "pid", "pid_start", "bundle", "rootfs", "created", "owner", "annotations",
                 "namespaces", "cgroup", "process", "seccomp", "hostname")

    def __init__(self, *, id: str, pid: int, pid_start: int, bundle: str, rootfs: str, created: str,
                 owner: str = "", annotations: dict[str, str] | None = None,
                 namespaces: list[str] | None = None, cgroup: dict[str, object] | None = None,
                 process: dict[str, object] | None = None, seccomp: dict[str, object] | None = None,
                 hostname: str = "") -> None:
        self.id = id
        self.pid = pid
        self.pid_start = pid_start
        self.bundle = bundle
        self.rootfs = rootfs
        self.created = created
        self.owner = owner
        self.annotations = annotations or {}
        self.namespaces = namespaces or []  # OCI namespace types the container has (new or joined)
        self.cgroup = cgroup or {}  # cgroups manager description (cgroups.manager_from_state)
        self.process = process or {}  # the config's process object: defaults for `exec`
        self.seccomp = seccomp  # linux.seccomp of the config: applied to exec'd processes too
        self.hostname = hostname

    def to_dict(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> ContainerState:
        known = {name: data[name] for name in cls.__slots__ if name in data}
        return cls(**known)  # type: ignore[arg-type]


class StateStore:
    """The runtime's --root directory: one subdirectory per container."""

    def __init__(self, root: str = DEFAULT_ROOT) -> None:
        self.root = os.path.abspath(root)

    def dir(self, container_id: str) -> str:
        validate_id(container_id)
        return os.path.join(self.root, container_id)

    def fifo(self, container_id: str) -> str:
        return os.path.join(self.dir(container_id), EXEC_FIFO)

    def make_dir(self, container_id: str) -> str:
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        path = self.dir(container_id)
        try:
            os.mkdir(path, 0o711)
        except FileExistsError:
            raise RuntimeFailure(f"container with id exists: {container_id}") from None
        os.chmod(path, 0o711)
        return path

    def make_fifo(self, container_id: str) -> str:
        path = self.fifo(container_id)
        os.mkfifo(path, 0o622)
        os.chmod(path, 0o622)  # writable by the container's user, whatever the umask
        return path

    def save(self, state: ContainerState) -> None:
        directory = self.dir(state.id)
        tmp = os.path.join(directory, f".{STATE_FILE}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(jsonlite.dumps(state.to_dict()))
        os.rename(tmp, os.path.join(directory, STATE_FILE))

    def load(self, container_id: str) -> ContainerState:
        try:
            with open(os.path.join(self.dir(container_id), STATE_FILE)) as f:
                data = jsonlite.loads(f.read())
            if not isinstance(data, dict):
                raise ValueError("not an object")
            return ContainerState.from_dict(data)
        except FileNotFoundError:
            raise ContainerNotExist(container_id) from None
        except ValueError as e:
            raise RuntimeFailure(f"container {container_id}: corrupt state: {e}") from None

    def exists(self, container_id: str) -> bool:
        return os.path.isdir(self.dir(container_id))

    def ids(self) -> list[str]:
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if os.path.isfile(os.path.join(self.root, n, STATE_FILE)))

    def remove(self, container_id: str) -> None:
        directory = self.dir(container_id)
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return
        for name in names:
            try:
                os.unlink(os.path.join(directory, name))
            except FileNotFoundError:
                pass
        try:
            os.rmdir(directory)
        except FileNotFoundError:
            pass

    def status(self, state: ContainerState, proc: str = "/proc") -> str:
        return container_status(state, fifo_exists=os.path.exists(self.fifo(state.id)), proc=proc)


def container_status(state: ContainerState, *, fifo_exists: bool, proc: str = "/proc") -> str:
    if not process_alive(state.pid, state.pid_start, proc):
        return STOPPED
    return CREATED if fifo_exists else RUNNING


def oci_state(state: ContainerState, status: str) -> dict[str, object]:
    """The JSON `state` prints (runc's shape: pid 0 once stopped, annotations only when set)."""
    result: dict[str, object] = {
        "ociVersion": OCI_VERSION,
        "id": state.id,
        "pid": state.pid if status != STOPPED else 0,
        "status": status,
        "bundle": state.bundle,
        "rootfs": state.rootfs,
        "created": state.created,
        "owner": state.owner,
    }
    if state.annotations:
        result["annotations"] = state.annotations
    return result


def write_pid_file(path: str, pid: int) -> None:
    """Atomically, like runc: readers never see a partial pid."""
    path = os.path.abspath(path)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
    with open(tmp, "w") as f:
        f.write(str(pid))
    os.rename(tmp, path)
