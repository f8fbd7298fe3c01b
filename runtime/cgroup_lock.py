"""Starting the kernel's wait for an RCU grace period early, while pycri-runtime starts.

The first write of a pid into a cgroup.procs file takes the kernel's global cgroup threadgroup
lock for writing, and that waits for an RCU grace period (~13 ms measured here) unless a
writer came within the last one. `create` and `exec` make that write once their child exists,
after the interpreter's start-up and their imports (~15 ms). `warm()`, called first, has a
thread write this process's own pid into the cgroup.procs of the cgroup it is already in (a
migration that moves nothing) at once: the grace period runs beside the imports, and the real
write, coming a few milliseconds later, finds the lock's fast path already given up and waits
only for what is left of it, if anything. Any failure is ignored: it only costs the wait.

Only `os`, the built-in `_thread` (no `threading`, to keep the start-up light) and
kernel.proccgroup's parse of /proc/self/cgroup (not the cgroups package: `create` forks its
first stage before it needs that).
"""
from __future__ import annotations

import _thread
import os

from pycri.kernel.proccgroup import own_cgroups

CGROUP_ROOT = "/sys/fs/cgroup"


def own_procs_file(proc_cgroup: str = "/proc/self/cgroup", root: str = CGROUP_ROOT) -> str | None:
    """The cgroup.procs of this process's own cgroup: in the unified hierarchy (cgroup v2, or
    a hybrid host's /sys/fs/cgroup/unified) if there is one, else in the first v1 hierarchy
    whose directory is there."""
    candidates = []
    try:
        own = own_cgroups(proc_cgroup)
    except OSError:
        return None
    for controllers, path in own.items():
        if not path.startswith("/") or ".." in path.split("/"):
            continue
        path = path.rstrip("/")
        if controllers == "":
            candidates[:0] = [f"{root}/unified{path}/cgroup.procs", f"{root}{path}/cgroup.procs"]
        elif "=" not in controllers:
            candidates.append(f"{root}/{controllers}{path}/cgroup.procs")
    return next((c for c in candidates if os.path.isfile(c)), None)


def _write_own_pid(path: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, str(os.getpid()).encode())
        finally:
            os.close(fd)
    except OSError:
        pass


_started: list[str | None] = []


def warm() -> str | None:
    """Start the no-op migration in a thread of its own, once per process (the launcher script
    calls this first thing for `create` and `exec`, the command line again); returns the file
    written (None: none)."""
    if _started:
        return _started[0]
    path = own_procs_file()
    _started.append(path)
    if path is not None:
        _thread.start_new_thread(_write_own_pid, (path,))
    return path
