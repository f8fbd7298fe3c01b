"""Where a container's cgroup is: linux.cgroupsPath against the caller's own cgroups."""
from __future__ import annotations

import posixpath

from pycri.kernel.proccgroup import PROC_SELF_CGROUP
from pycri.kernel.proccgroup import own_cgroups as read_own_cgroups


def own_cgroups(path: str = PROC_SELF_CGROUP) -> dict[str, str]:
    """The controllers field of each line ("cpu", "cpu,cpuacct", "name=systemd", "" for v2)
    -> this process's cgroup in that hierarchy; empty when the file cannot be read."""
    try:
        return read_own_cgroups(path)
    except OSError:
        return {}


def resolve_path(cgroups_path: str, container_id: str, own: str = "/") -> str:
    """The absolute cgroup path: absolute stays, relative (and empty -> the container id)
    is taken below `own`, the runtime's own cgroup in that hierarchy (as runc does)."""
    relative = cgroups_path or container_id
    if ".." in relative.split("/") or "\0" in relative:  # never normalised away: it could climb out of its parent
        raise ValueError(f"bad cgroup path {cgroups_path!r}")
    if relative.startswith("/"):
        result = posixpath.normpath(relative)
    else:
        result = posixpath.normpath(posixpath.join(own or "/", relative))
    if result.startswith("//"):
        result = "/" + result.lstrip("/")
    if result == "/" or ".." in result.split("/"):
        raise ValueError(f"bad cgroup path {cgroups_path!r}")
    return result
