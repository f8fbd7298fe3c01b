"""The cgroup manager interface (a plain base class: no typing import on the CLI's path),
container stats, and the file helpers the v1 and v2 managers share."""
from __future__ import annotations

import errno
import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cgroups.resources import Resources


class CgroupError(Exception):
    pass


class Stats:
    """What kubelet's stats need: cumulative CPU time, memory usage and working set, pids."""

    __slots__ = ("cpu_usage_ns", "memory_usage", "memory_working_set", "memory_limit", "pids_current", "pids_limit")

    def __init__(self, cpu_usage_ns: int = 0, memory_usage: int = 0, memory_working_set: int = 0,
                 memory_limit: int = 0, pids_current: int = 0, pids_limit: int = 0) -> None:
        self.cpu_usage_ns = cpu_usage_ns
        self.memory_usage = memory_usage
        self.memory_working_set = memory_working_set
        self.memory_limit = memory_limit  # 0: no limit
        self.pids_current = pids_current
        self.pids_limit = pids_limit  # 0: no limit

    def to_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class CgroupManager:
    """One container's cgroup, in every hierarchy it lives in."""

    version = 0

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

    def destroy(self, timeout: float = 5.0) -> None:
        """Remove the container's directories (the processes must be gone)."""
        raise NotImplementedError

    def exists(self) -> bool:
        return any(os.path.isdir(p) for p in self.paths().values())

    def to_state(self) -> dict[str, object]:
        raise NotImplementedError


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


def read_file(directory: str, name: str) -> str:
    with open(os.path.join(directory, name)) as f:
        return f.read().strip()


def read_int(directory: str, name: str, default: int = 0) -> int:
    try:
        text = read_file(directory, name)
    except OSError:
        return default
    if text == "max":
        return 0
    try:
        return int(text)
    except ValueError:
        return default


def read_keyed(directory: str, name: str) -> dict[str, int]:
    """A flat keyed file (memory.stat, cpu.stat): `key value` lines."""
    result: dict[str, int] = {}
    try:
        with open(os.path.join(directory, name)) as f:
            for line in f:
                key, _, value = line.partition(" ")
                try:
                    result[key] = int(value)
                except ValueError:
                    pass
    except OSError:
        pass
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
