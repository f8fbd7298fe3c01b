"""Cgroup files kept open and read again with pread(2) at offset 0, instead of open, read and
close each time.

A cgroup file (kernfs, v1 and v2) makes its text afresh on every read from offset 0, so one
descriptor serves every later read. kubelet's stats ask about every container every 10 s, and
each answer reads four or five small files per container (`CgroupManager.usage`): kept open,
the reads of 110 containers' files took ~1.7 ms instead of ~6.6 (this 2-core VM, v1; the path
lookup and the open are most of a small file's cost). The container service keeps a running
container's files (containers/service.py `_cgroup`) and closes them when its exit is noticed and
when it is removed.

Descriptors are a shared budget (`KeptFiles.cap`, a fraction of the open-file limit): past it a
file is read as before. A read of a kept descriptor that fails (the cgroup was removed: ENODEV)
closes it and reads the path afresh, which raises what a plain read raises.
"""
from __future__ import annotations

import os
import resource
import threading

from pycri.cgroups.base import READ_SIZE, FileReader, read_fd_text, read_text


def default_cap() -> int:
    """An eighth of the soft open-file limit, at most 8192 (the monitors' pidfds may take half)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 8192 if soft == resource.RLIM_INFINITY else max(0, min(8192, soft // 8))


class KeptFiles(FileReader):
    """One cgroup's files read by descriptors kept open (a manager's `files`)."""

    cap = default_cap()  # descriptors all KeptFiles may hold together
    _open = 0  # how many they hold
    _budget = threading.Lock()

    def __init__(self) -> None:
        self._lock = threading.Lock()  # a close never runs beside a read of the same descriptor
        self._fds: dict[str, int] = {}
        self._closed = False

    def read(self, path: str) -> str:
        with self._lock:
            fd = self._fds.get(path)
            if fd is None:
                fd = self._keep(path)
            if fd is not None:
                try:
                    return _pread_text(fd)
                except OSError:  # the cgroup is gone (ENODEV): as a plain read says
                    self._drop(path)
        return read_text(path)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for path in list(self._fds):
                self._drop(path)

    def __len__(self) -> int:
        return len(self._fds)

    def _keep(self, path: str) -> int | None:
        """A new descriptor of `path`, kept; None when the budget is spent, this reader is
        closed, or the file cannot be opened (then the plain read says why)."""
        if self._closed:
            return None
        with KeptFiles._budget:
            if KeptFiles._open >= KeptFiles.cap:
                return None
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return None
            KeptFiles._open += 1
        self._fds[path] = fd
        return fd

    def _drop(self, path: str) -> None:
        fd = self._fds.pop(path)
        os.close(fd)
        with KeptFiles._budget:
            KeptFiles._open -= 1


def _pread_text(fd: int) -> str:
    return read_fd_text(fd, lambda fd, offset: os.pread(fd, READ_SIZE, offset))
