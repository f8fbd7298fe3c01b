"""/proc/<pid>/cgroup: a process's cgroup in each hierarchy.

Light (no package of cgroups' to import): pycri-runtime reads it first thing, on the path
to forking a container's first stage (runtime/cgroup_lock.py), and again where the init
mounts its cgroups (runtime/rootfs/cgroupfs.py); the daemon's cgroups package reads it too
(cgroups/paths.py).
"""
from __future__ import annotations

PROC_SELF_CGROUP = "/proc/self/cgroup"


def own_cgroups(path: str = PROC_SELF_CGROUP) -> dict[str, str]:
    """The controllers field of each line ("cpu", "cpu,cpuacct", "name=systemd", "" for v2)
    -> the process's cgroup in that hierarchy. OSError when the file cannot be read."""
    result: dict[str, str] = {}
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split(":", 2)
            if len(parts) == 3:
                result[parts[1]] = parts[2]
    return result
