"""Namespaces: join the ones given by path (setns), create the others (unshare).

All namespace files are opened before the first setns, because joining a mount namespace
changes what paths mean. The mount namespace is joined last. A new or joined PID namespace
applies to children only: the caller forks afterwards so the container process is PID 1.
"""
from __future__ import annotations

import os

from pycri.kernel.syscall import NAMESPACE_FILES, NAMESPACE_FLAGS, Syscall
from pycri.runtime.errors import RuntimeFailure

# the order namespaces are joined in: user first (it grants rights on the others), mount last
JOIN_ORDER = ("user", "ipc", "uts", "network", "pid", "cgroup", "time", "mount")


def _order(ns_type: str) -> int:
    return JOIN_ORDER.index(ns_type)


def open_paths(paths: dict[str, str]) -> list[tuple[str, int]]:
    """Open namespace files {type: path}; returns (type, fd) in join order."""
    opened: list[tuple[str, int]] = []
    try:
        for ns_type in sorted(paths, key=_order):
            path = paths[ns_type]
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                raise RuntimeFailure(f"open {ns_type} namespace {path}: {e.strerror}") from None
            opened.append((ns_type, fd))
    except BaseException:
        close(opened)
        raise
    return opened


def join(kernel: Syscall, opened: list[tuple[str, int]]) -> None:
    for ns_type, fd in opened:
        try:
            kernel.setns(fd, NAMESPACE_FLAGS[ns_type])
        except OSError as e:
            raise RuntimeFailure(f"join {ns_type} namespace: {e.strerror or e}") from None


def close(opened: list[tuple[str, int]]) -> None:
    for _, fd in opened:
        try:
            os.close(fd)
        except OSError:
            pass


def unshare_flags(ns_types: list[str]) -> int:
    flags = 0
    for ns_type in ns_types:
        flags |= NAMESPACE_FLAGS[ns_type]
    return flags


def create(kernel: Syscall, ns_types: list[str]) -> None:
    """unshare() the namespaces to create, all at once."""
    flags = unshare_flags(ns_types)
    if flags:
        try:
            kernel.unshare(flags)
        except OSError as e:
            raise RuntimeFailure(f"unshare namespaces {', '.join(ns_types)}: {e.strerror or e}") from None


def process_namespace_paths(pid: int, ns_types: list[str], proc: str = "/proc") -> dict[str, str]:
    """/proc/<pid>/ns/* of the given types, leaving out those this process already shares
    (joining your own user namespace is an error; joining the others is pointless)."""
    paths: dict[str, str] = {}
    for ns_type in ns_types:
        name = NAMESPACE_FILES[ns_type]
        target = f"{proc}/{pid}/ns/{name}"
        try:
            theirs = os.stat(target)
            ours = os.stat(f"{proc}/self/ns/{name}")
        except FileNotFoundError:
            continue
        if (theirs.st_dev, theirs.st_ino) != (ours.st_dev, ours.st_ino):
            paths[ns_type] = target
    return paths
