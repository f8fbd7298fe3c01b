"""The cgroup manager interface (a plain base class: no typing import on the CLI's path),
container stats, and the file helpers the v1 and v2 managers share."""
from __future__ import annotations

import errno
import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from pycri.cgroups.resources import Resources


class CgroupError(Exception):
    pass


class _Fields:
    """A plain record of its __slots__, integers that default to 0 (no dataclasses on the runtime
    CLI's path)."""

    __slots__: tuple[str, ...] = ()

    def __init__(self, *values: int, **named: int) -> None:
        rest = self.__slots__[len(values):]
        if len(values) > len(self.__slots__) or not set(named) <= set(rest):
            raise TypeError(f"{type(self).__name__} has the fields {self.__slots__}")
        for name, value in zip(self.__slots__, values):
            setattr(self, name, value)
        for name in rest:
            setattr(self, name, named.get(name, 0))

    def to_dict(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__slots__}


class Stats(_Fields):
    """A cgroup's usage and limits: what kubelet's stats need (cumulative CPU time, memory usage
    and working set, pids) and what the CRI metrics report under cadvisor's names. Counters are
    cumulative; a limit of 0 means none. `io` holds one IoDevice a block device; `pressure` maps
    "cpu", "memory" and "io" to their pressure stall totals (some, full) in microseconds, where
    the kernel keeps them."""

    __slots__ = (
        "cpu_usage_ns", "memory_usage", "memory_working_set", "memory_limit", "pids_current", "pids_limit",
        "cpu_user_ns", "cpu_system_ns", "cpu_periods", "cpu_throttled_periods", "cpu_throttled_ns",
        "memory_max_usage", "memory_cache", "memory_rss", "memory_mapped_file", "memory_swap", "memory_kernel",
        "memory_failcnt", "pgfault", "pgmajfault", "hierarchy_pgfault", "hierarchy_pgmajfault", "oom_kills",
        "cpu_shares", "cpu_period", "cpu_quota", "memory_reservation", "memory_swap_limit",
        "io", "pressure",
    )

    def __init__(self, *, io: list[IoDevice] | None = None, pressure: dict[str, tuple[int, int]] | None = None,
                 **values: int) -> None:
        super().__init__(**values)
        self.io = io or []
        self.pressure = pressure or {}

    def to_dict(self) -> dict[str, object]:
        result = super().to_dict()
        result["io"] = [device.to_dict() for device in self.io]
        result["pressure"] = dict(self.pressure)
        return result


class IoDevice(_Fields):
    """Cumulative block I/O of a cgroup on one device."""

    __slots__ = ("major", "minor", "read_bytes", "write_bytes", "reads", "writes")


class ProcessStats(_Fields):
    """The processes of a cgroup and its descendants, and the files and sockets they hold open."""

    __slots__ = ("processes", "file_descriptors", "sockets")


class FileReader:
    """How a manager reads its files: each afresh (this one), or by descriptors kept open
    (cgroups.kept_files, `CgroupManager.keep_files`)."""

    def read(self, path: str) -> str:
        return read_text(path)

    def close(self) -> None:
        """Let go of what it holds (nothing here)."""


PLAIN = FileReader()


class CgroupManager:
    """One container's cgroup, in every hierarchy it lives in."""

    version = 0
    files: FileReader = PLAIN  # how usage() reads its files (keep_files: by kept descriptors)
    # the systemd unit holding this cgroup (cgroups.systemd: slice, prefix, name, unit); None
    # for a cgroupfs cgroup. Saved in to_state, restored by manager_from_state.
    systemd: dict[str, str] | None = None

    def paths(self) -> dict[str, str]:
        """hierarchy/controller name -> directory."""
        raise NotImplementedError

    def create(self) -> None:
        raise NotImplementedError

    def add(self, pid: int) -> None:
        raise NotImplementedError

    def apply(self, resources: Resources) -> list[str]:
        """Write the limits; returns warnings about what could not be applied."""
        raise NotImplementedError

    def pids(self) -> list[int]:
        raise NotImplementedError

    def stats(self) -> Stats:
        raise NotImplementedError

    def usage(self) -> Stats:
        """Only what CRI's ContainerStats and PodSandboxStats carry: CPU usage, and memory
        usage, working set, limit, anonymous memory and page faults, and the pids count (the rest stays 0). A
        handful of files instead of every stats file: kubelet asks for these about every
        container every few seconds. Managers without a cheaper read give all of stats()."""
        return self.stats()

    def procs_dir(self) -> str | None:
        """The directory whose cgroup.procs lists the container's processes."""
        raise NotImplementedError

    def keep_files(self) -> None:
        """Read usage()'s files by descriptors kept open from now on (cgroups.kept_files),
        until `close_files`: for a manager asked about its usage again and again."""
        if self.files is PLAIN:
            from pycri.cgroups.kept_files import KeptFiles

            self.files = KeptFiles()

    def close_files(self) -> None:
        """Close the descriptors `keep_files` kept; later reads open each file afresh."""
        files, self.files = self.files, PLAIN
        files.close()

    def pids(self) -> list[int]:
        directory = self.procs_dir()
        return read_pids(directory) if directory else []

    def process_stats(self, proc: str = "/proc") -> ProcessStats:
        """Processes in the cgroup and below it (as cadvisor counts them), with their open files."""
        directory = self.procs_dir()
        pids: list[int] = []
        if directory:
            for dirpath, _, _ in os.walk(directory):
                pids.extend(read_pids(dirpath))
        stats = ProcessStats(processes=len(pids))
        for pid in pids:
            fd_dir = os.path.join(proc, str(pid), "fd")
            try:
                names = os.listdir(fd_dir)
            except OSError:  # exited meanwhile
                continue
            for name in names:
                try:
                    target = os.readlink(os.path.join(fd_dir, name))
                except OSError:
                    continue
                stats.file_descriptors += 1
                if target.startswith("socket:"):
                    stats.sockets += 1
        return stats

    def destroy(self, timeout: float = 5.0) -> None:
        """Remove the container's directories (the processes must be gone)."""
        raise NotImplementedError

    def exists(self) -> bool:
        return any(os.path.isdir(p) for p in self.paths().values())

    def to_state(self) -> dict[str, object]:
        raise NotImplementedError

    def _unit_state(self, state: dict[str, object]) -> dict[str, object]:
        if self.systemd:
            state["systemd"] = dict(self.systemd)
        return state


def write_file(directory: str, name: str, value: str | int) -> None:
    path = os.path.join(directory, name)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    except OSError as e:
        raise CgroupError(f"open {path}: {e.strerror}") from None
    try:
        os.write(fd, str(value).encode())
    except OSError as e:
        raise CgroupError(f"write {value!r} to {path}: {e.strerror}") from None
    finally:
        os.close(fd)


READ_SIZE = 65536  # every cgroup file this reads is far smaller: one read(2) holds it


def read_text(path: str) -> str:
    """The file's text by os.open/os.read: half the cost of open() for these small files
    (no buffered reader, text wrapper or fstat), which stats read by the dozen per container."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return read_fd_text(fd, lambda fd, offset: os.read(fd, READ_SIZE))
    finally:
        os.close(fd)


def read_fd_text(fd: int, read_at: Callable[[int, int], bytes]) -> str:
    """The text of an open file, read by `read_at(fd, offset)` in READ_SIZE pieces until a short
    one (os.read from where the descriptor is; cgroups.kept_files preads from offset 0)."""
    chunks = [read_at(fd, 0)]
    while len(chunks[-1]) == READ_SIZE:  # (never for a cgroup file: just in case)
        chunks.append(read_at(fd, READ_SIZE * len(chunks)))
    return b"".join(chunks).decode(errors="replace")


def read_file(directory: str, name: str, files: FileReader = PLAIN) -> str:
    return files.read(os.path.join(directory, name)).strip()


def read_int(directory: str, name: str, default: int = 0, files: FileReader = PLAIN) -> int:
    try:
        text = read_file(directory, name, files)
    except OSError:
        return default
    if text == "max":
        return 0
    try:
        return int(text)
    except ValueError:
        return default


def read_keyed(directory: str, name: str, files: FileReader = PLAIN) -> dict[str, int]:
    """A flat keyed file (memory.stat, cpu.stat): `key value` lines."""
    result: dict[str, int] = {}
    try:
        text = files.read(os.path.join(directory, name))
    except OSError:
        return result
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        try:
            result[key] = int(value)
        except ValueError:
            pass
    return result


def read_pressure(directory: str) -> dict[str, tuple[int, int]]:
    """The pressure stall totals (some, full) in microseconds of cpu, memory and io, from
    <resource>.pressure files (`some avg10=0.00 avg60=0.00 avg300=0.00 total=123`)."""
    result: dict[str, tuple[int, int]] = {}
    for resource in ("cpu", "memory", "io"):
        totals = {"some": 0, "full": 0}
        try:
            with open(os.path.join(directory, f"{resource}.pressure")) as f:
                for line in f:
                    kind, _, rest = line.partition(" ")
                    for field in rest.split():
                        if field.startswith("total=") and kind in totals:
                            totals[kind] = int(field[len("total="):])
        except (OSError, ValueError):
            continue
        result[resource] = (totals["some"], totals["full"])
    return result


def read_pids(directory: str) -> list[int]:
    try:
        with open(os.path.join(directory, "cgroup.procs")) as f:
            return [int(line) for line in f if line.strip()]
    except OSError:
        return []


def make_dirs(path: str) -> list[str]:
    """mkdir -p; returns the directories it created, top first."""
    created: list[str] = []
    missing: list[str] = []
    current = path
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o755)
            created.append(directory)
        except FileExistsError:
            pass
        except OSError as e:
            raise CgroupError(f"mkdir {directory}: {e.strerror}") from None
    return created


def remove_dir(path: str, timeout: float) -> None:
    """rmdir a cgroup, retrying while it is busy (its last processes still exiting)."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() >= deadline:
                raise CgroupError(f"remove cgroup {path}: {e.strerror}") from None
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
